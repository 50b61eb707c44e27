"""The DSS source's parts of the window (gui.source_window.SourceWindow): the `--sandbox`
server. Qt code: never imported by the worker or the engine."""
