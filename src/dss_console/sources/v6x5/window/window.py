"""The vantage6 5.x node's gui.source_window.SourceWindow (registered in
dss_console.plugins.SOURCE_WINDOWS): no settings tab of its own (the 4.x node's ``[v6]`` tab
is the family's one table), the 4.x node's run audit (5.x runs keep the ``#node-`` key
mark), and its sandbox: HQ 5.0.3 behind the Keycloak-compatible stand-in (``--sandbox v6x5``,
or ``--sandbox v6 --sandbox-version 5``)."""

from __future__ import annotations

from collections.abc import Sequence

from dss_console.engine.settings import Settings
from dss_console.gui.source_window import (
    SourceSandbox,
    SourceSettingsTab,
    SourceView,
    SourceWindow,
)
from dss_console.sources.v6.window.window import WINDOW as V6_WINDOW

__all__ = ["WINDOW", "V6x5Window"]


class V6x5Window:
    def settings_tab(self, settings: Settings) -> SourceSettingsTab | None:
        return None

    def sandbox(self) -> SourceSandbox | None:
        from dss_console.sources.v6x5.window.sandbox import V6x5WindowSandbox

        return V6x5WindowSandbox()

    def views(self) -> Sequence[SourceView]:
        return V6_WINDOW.views()


WINDOW: SourceWindow = V6x5Window()
