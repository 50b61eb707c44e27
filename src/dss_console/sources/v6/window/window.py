"""The vantage6 node's gui.source_window.SourceWindow (registered in
dss_console.plugins.SOURCE_WINDOWS)."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtWidgets import QWidget

from dss_console.engine.settings import Settings
from dss_console.gui.source_window import (
    SourceSandbox,
    SourceSettingsTab,
    SourceView,
    SourceViewWindow,
    SourceWindow,
)
from dss_console.sources.v6.settings import v6_settings

__all__ = ["WINDOW", "V6Window"]


def _audit(parent: QWidget) -> SourceViewWindow:
    from dss_console.sources.v6.window.audit_view import AuditDialog

    return AuditDialog(parent)


class V6Window:
    def settings_tab(self, settings: Settings) -> SourceSettingsTab | None:
        from dss_console.sources.v6.window.settings_tab import V6Tab

        return V6Tab(v6_settings(settings))

    def sandbox(self) -> SourceSandbox | None:
        from dss_console.sources.v6.window.sandbox import V6WindowSandbox

        return V6WindowSandbox()

    def views(self) -> Sequence[SourceView]:
        return (SourceView("audit", "Run audit…", "Every run this node executed: who asked "
                           "for it, which image, the input's hash, the outcome", _audit),)


WINDOW: SourceWindow = V6Window()
