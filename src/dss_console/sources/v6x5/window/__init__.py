"""The vantage6 5.x node's parts of the window (Qt: imported by the window only)."""
