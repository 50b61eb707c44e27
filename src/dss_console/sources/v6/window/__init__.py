"""The vantage6 node's parts of the window (gui.source_window.SourceWindow): the Settings
dialog's node tab, the run audit, the `--sandbox v6` server. Qt code: never imported by the
worker or the engine."""
