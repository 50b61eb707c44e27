"""The windows beside the main one: every source's Audit… (the engine's ledger,
gui/audit_view.py) and the views a source adds (gui/source_window.SourceView), one button
each under the services, filled from the engine off the Qt thread."""

from __future__ import annotations

from typing import Protocol

from PySide6.QtWidgets import QHBoxLayout, QPushButton, QWidget

from dss_console import plugins
from dss_console.engine.events import JobSnapshot
from dss_console.engine.remote import EngineCallError, EngineGoneError, RemoteEngine
from dss_console.gui.audit_view import PAGE as LEDGER_PAGE
from dss_console.gui.audit_view import LedgerDialog
from dss_console.gui.source_window import SourceView, SourceViewWindow
from dss_console.gui.status_bar import BannerAction
from dss_console.gui.tasks import run_blocking, spawn


class SideWindowsHost(Protocol):
    """What of the main window the side windows use: their parent, the engine, the banner."""

    @property
    def engine(self) -> RemoteEngine | None: ...

    def show_banner(self, text: str, level: str = "error", action: BannerAction | None = None,
                    cause: str | None = None) -> None: ...


class SideWindows:
    """The ledger window and the source's view buttons (in ``buttons``, before its stretch)
    and their windows, all parented to ``parent``."""

    def __init__(self, host: SideWindowsHost, parent: QWidget, buttons: QHBoxLayout) -> None:
        self._host = host
        self._parent = parent
        self._buttons = buttons
        self.ledger_view: LedgerDialog | None = None
        self.view_buttons: dict[str, QPushButton] = {}
        self.view_windows: dict[str, SourceViewWindow] = {}
        self._views_of: str | None = None

    # -- the source's views -----------------------------------------------------------------
    def use_views(self, source: str) -> None:
        """The view buttons of ``source`` (none of another source's stay)."""
        if source == self._views_of:
            return
        self._views_of = source
        for name, button in self.view_buttons.items():
            self._buttons.removeWidget(button)
            button.deleteLater()
            window = self.view_windows.pop(name, None)
            if window is not None:
                window.widget().close()
                window.widget().deleteLater()
        self.view_buttons = {}
        # A source this console does not know (an engine newer than the window) adds none.
        known = source in plugins.SOURCE_WINDOWS
        for view in plugins.source_window(source).views() if known else ():
            button = QPushButton(view.label)
            button.setToolTip(view.tip)
            button.clicked.connect(lambda _checked=False, v=view: self.open_view(v))
            # After the window's own buttons, before the stretch.
            self._buttons.insertWidget(self._buttons.count() - 1, button)
            self.view_buttons[view.name] = button

    def open_view(self, view: SourceView) -> None:
        """One of the source's views (the vantage6 run audit), in its own window, filled
        with the jobs the engine holds."""
        window = self.view_windows.get(view.name)
        if window is None:
            window = self.view_windows[view.name] = view.create(self._parent)
        spawn(self._fill_view(view, window))
        widget = window.widget()
        widget.show()
        widget.raise_()
        # Keys (Escape closes it) go to the view, not to the window behind it: without a
        # window manager that activates new windows (Xvfb) nobody else does.
        widget.activateWindow()

    def update_jobs(self, jobs: list[JobSnapshot]) -> None:
        """Jobs that changed, to the views shown."""
        for view_window in self.view_windows.values():
            if view_window.widget().isVisible():
                view_window.update_jobs(jobs)

    async def _fill_view(self, view: SourceView, window: SourceViewWindow) -> None:
        engine = self._host.engine
        if engine is None:
            return
        try:
            jobs = await run_blocking(engine.jobs)
        except (EngineGoneError, EngineCallError) as exc:
            title = view.label.rstrip("…").lower()
            self._host.show_banner(f"The {title} could not be loaded: {exc}")
            return
        window.set_jobs(jobs)

    # -- the ledger -------------------------------------------------------------------------
    def open_ledger(self) -> LedgerDialog:
        """The engine's ledger in its own window: the newest records and the verdict."""
        view = self.ledger_view
        if view is None:
            view = self.ledger_view = LedgerDialog(self._parent)
            view.older_wanted.connect(lambda before: spawn(self._ledger_older(before)))
            view.verify_wanted.connect(lambda: spawn(self._ledger_verdict()))
        spawn(self._fill_ledger())
        view.show()
        view.raise_()
        view.activateWindow()
        return view

    async def _fill_ledger(self) -> None:
        engine, view = self._host.engine, self.ledger_view
        if engine is None or view is None:
            return
        try:
            records = await run_blocking(engine.ledger_page, None, LEDGER_PAGE)
        except (EngineGoneError, EngineCallError) as exc:
            view.show_problem(f"The ledger could not be read: {exc}")
            return
        view.show_page(records)
        await self._ledger_verdict()

    async def _ledger_older(self, before: int) -> None:
        engine, view = self._host.engine, self.ledger_view
        if engine is None or view is None:
            return
        try:
            view.add_older(await run_blocking(engine.ledger_page, before, LEDGER_PAGE))
        except (EngineGoneError, EngineCallError) as exc:
            view.show_problem(f"The ledger could not be read: {exc}")

    async def _ledger_verdict(self) -> None:
        engine, view = self._host.engine, self.ledger_view
        if engine is None or view is None:
            return
        try:
            view.show_verdict(await run_blocking(engine.ledger_verify))
        except (EngineGoneError, EngineCallError) as exc:
            view.show_problem(f"The ledger could not be verified: {exc}")

    def close_all(self) -> None:
        """Close the source's views and the ledger (they show the jobs of the engine being
        let go)."""
        for window in self.view_windows.values():
            window.widget().close()
        if self.ledger_view is not None:
            self.ledger_view.close()
