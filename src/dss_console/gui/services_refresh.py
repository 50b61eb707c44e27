"""The services pane kept current while an engine runs: the services and their counts every
STATS_REFRESH_MS (and soon after a burst of claims and finishes), their history charts from
the engine's ledger every HISTORY_REFRESH_MS. Every engine call runs off the Qt thread."""

from __future__ import annotations

import contextlib
from typing import Protocol

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QStatusBar

from dss_console.core.interfaces import LOGGED_OUT, TRANSIENT
from dss_console.engine.engine import EngineError, ServiceView
from dss_console.engine.remote import EngineCallError, EngineGoneError, RemoteEngine
from dss_console.gui.services_pane import ServicesPane
from dss_console.gui.tasks import run_blocking, spawn

STATS_REFRESH_MS = 15_000
HISTORY_REFRESH_MS = 5 * 60_000  # the chart's hourly bars: a few minutes late is fine
SOON_MS = 1500  # coalesce a burst of claims and finishes


class ServicesRefreshHost(Protocol):
    services_pane: ServicesPane
    logged_in: object | None

    @property
    def engine(self) -> RemoteEngine | None: ...

    def connection_changed(self, state: str, detail: str) -> None: ...

    def statusBar(self) -> QStatusBar: ...


class ServicesRefresh:
    def __init__(self, host: ServicesRefreshHost, parent: QObject) -> None:
        self._host = host
        self.stats_timer = QTimer(parent)
        self.stats_timer.setInterval(STATS_REFRESH_MS)
        self.stats_timer.timeout.connect(lambda: spawn(self.refresh_services()))
        self.stats_soon = QTimer(parent)
        self.stats_soon.setSingleShot(True)
        self.stats_soon.setInterval(SOON_MS)
        self.stats_soon.timeout.connect(lambda: spawn(self.refresh_services()))
        self.stats_soon.timeout.connect(lambda: spawn(self.refresh_histories()))
        self.history_timer = QTimer(parent)
        self.history_timer.setInterval(HISTORY_REFRESH_MS)
        self.history_timer.timeout.connect(lambda: spawn(self.refresh_histories()))

    def start(self) -> None:
        """The services' counts now and every STATS_REFRESH_MS, their histories now and every
        HISTORY_REFRESH_MS, while an engine runs."""
        self.stats_timer.start()
        self.history_timer.start()
        spawn(self.refresh_services())
        spawn(self.refresh_histories())

    def stop(self) -> None:
        self.stats_timer.stop()
        self.stats_soon.stop()
        self.history_timer.stop()

    def soon(self) -> None:
        """Counts and charts again shortly (a job was claimed, blocked or ended)."""
        self.stats_soon.start()

    async def refresh_services(self) -> None:
        host = self._host
        engine = host.engine
        if engine is None or host.logged_in is None:
            return
        try:
            views = await run_blocking(engine.refresh_services)
        except EngineGoneError:
            return  # the session's engine-lost handler says so
        except EngineCallError as exc:
            # The engine's own connection state follows the outcome of its calls; this one
            # only says what the status bar should show meanwhile.
            if exc.kind == LOGGED_OUT:
                host.connection_changed("logged_out", str(exc))
            elif exc.kind == TRANSIENT:
                host.connection_changed("offline", str(exc))
            return
        host.services_pane.set_services(views)
        with contextlib.suppress(EngineGoneError, EngineCallError):
            host.services_pane.set_figures(await run_blocking(engine.service_figures))
        self._show_summary(views)

    async def refresh_histories(self) -> None:
        """The services' history charts from the engine's ledger (read off the Qt thread).
        An engine that cannot say (an older worker, one gone) leaves the charts empty and
        says so quietly: a chart is not worth a dialog."""
        host = self._host
        engine = host.engine
        if engine is None or host.logged_in is None:
            return
        try:
            histories = await run_blocking(engine.ledger_stats)
        except (EngineGoneError, EngineCallError, EngineError) as exc:
            if engine is host.engine:
                if isinstance(exc, EngineCallError) and exc.kind == "protocol":
                    why = ("this engine is older than the window (it reads the history "
                           "once restarted with this version)")
                else:
                    why = f"the engine could not read its ledger ({exc})"
                host.statusBar().showMessage(f"No service history: {why}", 10_000)
            return
        if engine is host.engine:
            host.services_pane.show_histories(histories)

    async def show_services(self, engine: RemoteEngine) -> None:
        """The services ``engine`` holds (no server call), if it is still the window's."""
        try:
            views = await run_blocking(engine.services)
        except (EngineGoneError, EngineCallError):
            return
        if self._host.engine is engine:
            self._host.services_pane.set_services(views)

    def _show_summary(self, views: list[ServiceView]) -> None:
        pane = self._host.services_pane
        pane.summary.setText(pane.presentation.text(
            "services_summary", count=len(views), commands=sum(1 for v in views if v.command)))
