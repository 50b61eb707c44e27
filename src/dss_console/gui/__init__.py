"""The console window (PySide6 on a qasync event loop). Only `dss-console` with no verb, or
`--sandbox`, imports this package: headless verbs never load Qt."""
