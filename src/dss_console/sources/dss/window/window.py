"""The DSS source's gui.source_window.SourceWindow (registered in
dss_console.plugins.SOURCE_WINDOWS). Its services' commands are edited in the Settings
dialog's service editor (Presentation feature "service_editor"), so it adds no tab."""

from __future__ import annotations

from collections.abc import Sequence

from dss_console.engine.settings import Settings
from dss_console.gui.source_window import (
    SourceSandbox,
    SourceSettingsTab,
    SourceView,
    SourceWindow,
)

__all__ = ["WINDOW", "DssWindow"]


class DssWindow:
    def settings_tab(self, settings: Settings) -> SourceSettingsTab | None:
        return None

    def sandbox(self) -> SourceSandbox | None:
        from dss_console.sources.dss.window.sandbox import DssWindowSandbox

        return DssWindowSandbox()

    def views(self) -> Sequence[SourceView]:
        return ()


WINDOW: SourceWindow = DssWindow()
