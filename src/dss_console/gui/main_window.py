"""The console's main window: login and services on the left, the ticket queue and the
selected ticket's detail on the right, connection and scheduler state in the status bar.

It turns engine events into views and operator actions into engine calls; every call that
touches the network, the disk or a process runs off the Qt thread (`run_blocking`). The window
composes its parts and keeps the dialogs (tests answer them here): the engine process in
engine_session.py, the jobs pane's actions in job_actions.py, the settings file in
settings_controller.py, the banner and status bar in status_bar.py, the services' refresh in
services_refresh.py, the selected job's calls and inputs in selected_job.py, the ledger and the
source's views in side_windows.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from dss_console import paths, plugins
from dss_console.core.interfaces import TRANSIENT
from dss_console.core.presentation import ApprovalView, Presentation
from dss_console.credentials import SessionStore
from dss_console.engine.engine import EngineError
from dss_console.engine.events import JobSnapshot
from dss_console.engine.remote import EngineCallError, EngineGoneError, RemoteEngine
from dss_console.engine.settings import Settings
from dss_console.engine.states import JobState
from dss_console.gui import tasks
from dss_console.gui.audit_view import LedgerDialog
from dss_console.gui.bridge import EngineBridge
from dss_console.gui.copyable import show_copyable
from dss_console.gui.desktop_notify import Notifier
from dss_console.gui.detail_pane import DetailPane
from dss_console.gui.engine_session import (
    QUIT_CANCEL,
    QUIT_DETACH,
    QUIT_DRAIN,
    QUIT_RESUME,
    EngineSession,
    QuitChoiceBox,
)
from dss_console.gui.gate_actions import AlwaysAnswer, AlwaysDialog, GateController
from dss_console.gui.job_actions import JobActions
from dss_console.gui.login_pane import LoginPane
from dss_console.gui.pause_banner import PauseBanner
from dss_console.gui.presentations import family_presentation, presentation_for
from dss_console.gui.queue_pane import QueuePane
from dss_console.gui.reason_dialog import ReasonDialog
from dss_console.gui.selected_job import SelectedJobLoader
from dss_console.gui.services_pane import ServicesPane
from dss_console.gui.services_refresh import ServicesRefresh
from dss_console.gui.settings_controller import SettingsController
from dss_console.gui.side_windows import SideWindows
from dss_console.gui.source_window import SourceViewWindow
from dss_console.gui.status_bar import Banner, BannerAction, StatusLine
from dss_console.gui.tasks import run_blocking, spawn

if TYPE_CHECKING:
    from dss_console.gui.settings_dialog import SettingsDialog

DEFAULT_SOURCE = next(iter(plugins.SOURCES))


class MainWindow(QMainWindow):
    engineStarted = Signal(object)  # RemoteEngine
    engineStopped = Signal()
    finished = Signal()  # closed for real, after the engine stopped

    def __init__(self, settings: Settings, settings_file: Path | None, store: SessionStore, *,
                 data_dir: Path | None = None, window_state_file: Path | None = None,
                 remember_layout: bool = True, sandbox: bool = False):
        super().__init__()
        self.setWindowTitle("DSS Console")
        self.settings = settings
        self.settings_file = settings_file  # None: do not persist (sandbox)
        # A sandbox's server and files go with the window: its jobs cannot keep running.
        self.sandbox = sandbox
        self.settings_control = SettingsController(self)
        self.settings_dialog: SettingsDialog | None = None  # the last one opened
        self.data_dir = data_dir or paths.data_dir()
        # The credential the source's login returned (its plug-in knows what is inside).
        self.logged_in: object | None = None
        self.session = EngineSession(self)
        self.job_actions = JobActions(self)
        self._remember_layout = remember_layout
        self._window_state = QSettings(
            str(window_state_file or paths.config_dir() / "window.ini"),
            QSettings.Format.IniFormat)

        self.bridge = EngineBridge(self)
        servers = list(dict.fromkeys([*(settings.servers or []),
                                      *([settings.server] if settings.server else []),
                                      *store.known_servers()]))
        self.login_pane = LoginPane(store, servers, self.settings_control.verify)
        if store.last_server():
            self.login_pane.server_box.setCurrentText(store.last_server() or "")
        remembered = self._window_state.value("login/source")
        if remember_layout and remembered in plugins.SOURCES:
            # The source the console logged in to last time: its next start does again.
            self.login_pane.set_source_kind(str(remembered))
        self.services_pane = ServicesPane()
        self.services_pane.set_logged_in(False)
        self.queue_pane = QueuePane()
        self.detail_pane = DetailPane()
        self.gate = GateController(self)
        self.pause_banner = PauseBanner()
        self.messages = Banner()
        self.banner, self.banner_action = self.messages.label, self.messages.action_button
        self.settings_button = QPushButton("Settings…")
        # Every source's ledger (gui/audit_view.py), whatever views the source adds.
        self.audit_button = QPushButton("Audit…")
        self.audit_button.setToolTip("Every step of every job, from the engine's tamper-"
                                     "evident ledger, with its verdict")

        left = QWidget()
        left_layout = QVBoxLayout(left)
        server_box = QGroupBox("Server")
        QVBoxLayout(server_box).addWidget(self.login_pane)
        services_box = self.services_box = QGroupBox("Services")
        QVBoxLayout(services_box).addWidget(self.services_pane)
        left_layout.addWidget(server_box, 0)
        left_layout.addWidget(services_box, 1)
        # Preferred, not Maximum: a Maximum box keeps its size hint, which ignores how tall
        # a wrapped login error gets, and clips it. The services box takes the extra room.
        server_box.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        left_buttons = QHBoxLayout()
        left_buttons.addWidget(self.settings_button)
        left_buttons.addWidget(self.audit_button)
        self.rules_button = QPushButton("Approval rules…")
        self.rules_button.setToolTip("What is approved or released by itself, who added it; "
                                     "revoke a rule")
        self.rules_button.clicked.connect(self.gate.open_rules)
        left_buttons.addWidget(self.rules_button)
        left_buttons.addStretch(1)
        left_layout.addLayout(left_buttons, 0)
        # The ledger, and the source's own views (gui.source_window.SourceView), one button
        # each, for the source whose words the window speaks (use_presentation).
        self.side_windows = SideWindows(self, self, left_buttons)

        queue_box = self.queue_box = QGroupBox("Tickets")
        QVBoxLayout(queue_box).addWidget(self.queue_pane)
        self.right_splitter = QSplitter(Qt.Orientation.Vertical)
        self.right_splitter.addWidget(queue_box)
        self.right_splitter.addWidget(self.detail_pane)
        self.right_splitter.setStretchFactor(1, 1)
        self.main_splitter = QSplitter(Qt.Orientation.Horizontal)
        self.main_splitter.addWidget(left)
        self.main_splitter.addWidget(self.right_splitter)
        self.main_splitter.setStretchFactor(1, 1)

        central = QWidget()
        layout = QVBoxLayout(central)
        layout.addLayout(self.messages.row)
        layout.addWidget(self.pause_banner)
        layout.addWidget(self.main_splitter, 1)
        self.setCentralWidget(central)

        self.status_line = StatusLine(self.statusBar(), self.queue_pane, self.pause_banner)
        line = self.status_line
        self.connection_label, self.auto_label = line.connection_label, line.auto_label
        self.jobs_label, self.poll_label = line.jobs_label, line.poll_label
        self.notifier = Notifier(self)
        quit_action = QAction("Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        self.addAction(quit_action)
        self.resize(1280, 820)
        if remember_layout:
            self._restore_window_state()
        else:
            self.main_splitter.setSizes([500, 780])
            self.right_splitter.setSizes([380, 440])

        self._status_timer = QTimer(self)
        self._status_timer.setInterval(1000)
        self._status_timer.timeout.connect(self.update_status)
        self._status_timer.start()
        self.services_refresh = ServicesRefresh(self, self)
        self.selected_job = SelectedJobLoader(self, self)
        tasks.set_error_handler(lambda text: self.show_banner(
            f"Something went wrong in the console: {text}"))

        self.login_pane.loggedIn.connect(self.session.logged_in)
        # The window speaks the picked source's words before the login, too.
        self.login_pane.source_box.currentIndexChanged.connect(
            lambda _index: self.logged_in is None and self.use_login_choice())
        self.login_pane.logoutRequested.connect(self.session.logout_requested)
        self.login_pane.serversChanged.connect(self.settings_control.servers_changed)
        self.services_pane.claimRequested.connect(self._claim_requested)
        self.services_pane.resumeRequested.connect(self._resume_requested)
        self.pause_banner.resumeRequested.connect(self._resume_requested)
        self.services_pane.servicesShown.connect(self.pause_banner.set_services)
        self.services_pane.servicesShown.connect(lambda _views: self.update_status())
        self.services_pane.autoModeToggled.connect(self.settings_control.auto_mode_toggled)
        self.services_pane.serviceAutoToggled.connect(
            self.settings_control.service_auto_toggled)
        self.services_pane.editCommandRequested.connect(self.open_settings)
        self.services_pane.refreshRequested.connect(lambda: spawn(self.refresh_services()))
        self.settings_button.clicked.connect(lambda: self.open_settings(None))
        self.audit_button.clicked.connect(self.side_windows.open_ledger)
        self.queue_pane.currentJobChanged.connect(self._job_selected)
        self.queue_pane.actionRequested.connect(self.job_actions.requested)
        self.queue_pane.batchRequested.connect(self.job_actions.batch_requested)
        self.detail_pane.editCommandRequested.connect(self.open_settings)
        self.bridge.jobsChanged.connect(self._jobs_changed)
        self.bridge.outputArrived.connect(self.detail_pane.append_output)
        self.bridge.messageArrived.connect(self.detail_pane.append_message)
        self.bridge.callsChanged.connect(self.selected_job.calls_changed)
        self.bridge.connectionChanged.connect(self.connection_changed)
        self.bridge.statusChanged.connect(self.update_status)
        self.bridge.servicesChanged.connect(self._services_changed)
        self.bridge.pollCompleted.connect(self._poll_completed)
        self.bridge.notice.connect(self._notice)
        self.bridge.rulesEdited.connect(self.gate.rules_edited)
        if self.login_pane.family_members() != [DEFAULT_SOURCE]:  # the panes start in its words
            self.use_login_choice()

    # -- messages ---------------------------------------------------------------------------
    def show_banner(self, text: str, level: str = "error", action: BannerAction | None = None,
                    cause: str | None = None) -> None:
        """One message above the panes (see Banner.show)."""
        self.messages.show(text, level, action, cause)

    def clear_banner(self, cause: str | None = None) -> None:
        """Hide the banner; with `cause`, only a banner shown for that cause."""
        self.messages.clear(cause)

    def _notice(self, level: str, text: str) -> None:
        if level == "error":
            # A failed poll ends when the server answers again (connection_changed).
            self.show_banner(text, level, cause="connection"
                             if text.startswith("polling for tickets failed") else None)
        else:
            self.statusBar().showMessage(text, 10_000)

    # -- dialogs (methods, so tests can answer them) ----------------------------------------
    def ask_confirm(self, title: str, text: str) -> bool:
        answer = QMessageBox.question(self, title, text,
                                      QMessageBox.StandardButton.Yes
                                      | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def ask_text(self, title: str, label: str) -> str | None:
        """A reason (OK stays off until one is typed); None when cancelled."""
        dialog = ReasonDialog(title, label, self)
        try:
            return dialog.reason() if dialog.exec() else None
        finally:
            dialog.deleteLater()

    def ask_always(self, view: ApprovalView, presentation: Presentation
                   ) -> AlwaysAnswer | None:
        """Approve always…: the rule's scope and end; None when cancelled."""
        dialog = AlwaysDialog(view, presentation, self)
        try:
            return dialog.answer() if dialog.exec() else None
        finally:
            dialog.deleteLater()

    def save_settings(self) -> None:
        self.settings_control.save()

    def ask_open_file(self, title: str, start: str, pattern: str) -> str | None:
        name, _ = QFileDialog.getOpenFileName(self, title, start, pattern)
        return name or None

    def ask_copy_path(self, title: str, text: str, path: str) -> None:
        """Show a path the desktop could not open, selectable, with a Copy button (not
        modal-blocking: the dialog is opened, not exec'd)."""
        self.path_dialog = show_copyable(self, title, text, path)

    def ask_broken_settings(self, path: Path, problem: str) -> str | None:
        """REPLACE_FILE, FIX_FILE or None (keep the changes for this session only)."""
        from dss_console.gui.broken_settings import BrokenSettingsDialog

        dialog = BrokenSettingsDialog(path, problem, self)
        dialog.exec()
        return dialog.choice

    def ask_quit_choice(self, running: int, *, allow_detach: bool = False) -> str | None:
        box = self.quit_choice_box(running, allow_detach=allow_detach)
        box.exec()
        return box.choice()

    def quit_choice_box(self, running: int, *, allow_detach: bool = False) -> QuitChoiceBox:
        """The question asked at quit (or log-out) while jobs run."""
        words = self.queue_pane.presentation
        box = QuitChoiceBox(self)
        box.setWindowTitle(words.text("quit_title"))
        box.setText(words.text("quit_running", count=running))
        stop = words.text("quit_stop")
        first = ("Keep them running without a window (open the console again to see them), "
                 "or let them finish and then stop. ") if allow_detach else \
            "Let them finish and then stop. "
        box.setInformativeText(first + stop)
        if allow_detach:
            box.add_choice("Keep running in the background", QUIT_DETACH)
        box.add_choice("Finish, then stop", QUIT_DRAIN)
        box.setDefaultButton(box.add_choice("Stop, run again at the next start", QUIT_RESUME))
        box.add_choice(words.text("quit_fail"), QUIT_CANCEL,
                       QMessageBox.ButtonRole.DestructiveRole)
        box.addButton("Cancel", QMessageBox.ButtonRole.RejectRole)
        return box

    # -- settings (settings_controller.py) --------------------------------------------------
    def open_settings(self, service_hash: str | None = None) -> None:
        self.settings_control.open_dialog(service_hash)

    def apply_settings(self, settings: Settings) -> None:
        """Use and save settings the operator changed (Settings… → OK)."""
        self.settings_control.apply(settings)

    def settings_file_broken(self, path: Path, problem: str) -> None:
        """The settings file exists but does not load (see SettingsController.file_broken)."""
        self.settings_control.file_broken(path, problem)

    def reload_settings(self) -> None:
        self.settings_control.reload()

    @property
    def view_buttons(self) -> dict[str, QPushButton]:
        """The source's view buttons by name (side_windows.py)."""
        return self.side_windows.view_buttons

    @property
    def view_windows(self) -> dict[str, SourceViewWindow]:
        return self.side_windows.view_windows

    @property
    def ledger_view(self) -> LedgerDialog | None:
        return self.side_windows.ledger_view

    def open_ledger(self) -> LedgerDialog:
        """The engine's ledger in its own window (Audit…)."""
        return self.side_windows.open_ledger()

    def close_views(self) -> None:
        """Close the source's views and the ledger (they show the jobs of the engine being
        let go)."""
        self.side_windows.close_all()

    async def show_services(self, engine: RemoteEngine) -> None:
        await self.services_refresh.show_services(engine)

    def _services_changed(self) -> None:
        if self.engine is not None:
            spawn(self.show_services(self.engine))

    # -- the engine (engine_session.py) -----------------------------------------------------
    @property
    def engine(self) -> RemoteEngine | None:
        """The engine process this window is attached to (it may have started it)."""
        return self.session.engine

    @property
    def source_kind(self) -> str:
        """The name of the source logged in to (plugins.SOURCES), else the default one."""
        if self.logged_in is None:
            return DEFAULT_SOURCE
        return plugins.source_of(self.logged_in).name

    def use_source_kind(self, kind: str) -> None:
        """The window in the words of the source logged in to, until its engine says its
        own; the next start shows its login form first."""
        self.use_presentation(presentation_for(kind))
        self._remember_source(kind)

    def use_login_choice(self) -> None:
        """The window in the words of the login form's choice before a login. A family's
        member is known only once its server answers (the login), so meanwhile the window
        shows only what all its members show alike (presentations.family_presentation)."""
        self.use_presentation(family_presentation(self.login_pane.family_members()))
        self._remember_source(self.login_pane.source_kind())

    def _remember_source(self, kind: str) -> None:
        if self._remember_layout:
            self._window_state.setValue("login/source", kind)

    def use_presentation(self, presentation: Presentation) -> None:
        """The window in its source's words, columns and actions."""
        words = presentation.word_fields()
        self.services_box.setTitle(words["Services"])
        self.queue_box.setTitle(words["Jobs"])
        self.side_windows.use_views(presentation.source)
        self.services_pane.apply_presentation(presentation)
        self.queue_pane.apply_presentation(presentation)
        self.detail_pane.apply_presentation(presentation)

    async def refresh_services(self) -> None:
        await self.services_refresh.refresh_services()

    async def refresh_histories(self) -> None:
        await self.services_refresh.refresh_histories()

    def start_refreshing(self) -> None:
        self.services_refresh.start()

    def stop_refreshing(self) -> None:
        self.services_refresh.stop()

    # -- engine events ----------------------------------------------------------------------
    def _jobs_changed(self, jobs: list[JobSnapshot]) -> None:
        before = self.detail_pane.job
        self.queue_pane.update_jobs(jobs)
        self.side_windows.update_jobs(jobs)
        if self.engine is not None:
            self.queue_pane.set_busy(self.engine.busy_job_ids())
        for job in jobs:
            self.detail_pane.update_job(job)
            if job.state.is_terminal or job.state in (JobState.CLAIMED, JobState.BLOCKED):
                self.services_refresh.soon()  # counts; a blocked service shows as paused
            if job.state.is_terminal:
                self.notifier.job_ended(job, self.settings.notify,
                                        self.queue_pane.presentation.words)
        after = self.detail_pane.job
        if after is not None and before is not None and after.job_id == before.job_id \
                and after.state is not before.state:
            self.gate.job_shown(after, front=after.state.is_waiting)
        self.selected_job.job_changed(before, after)

    def connection_changed(self, state: str, detail: str) -> None:
        """The one place the connection state changes (the engine's events, which include
        the services refresh; login; logout): the status bar shows only this, so its parts
        agree.

        States: none, connecting, online, offline (retrying), waiting (a call is slow),
        logged_out (the server ended the session), stopped; others are shown as named.
        """
        if state == "online":
            self.clear_banner("connection")
        if state == "logged_out" and self.engine is not None:
            # The form for a new token; the engine keeps its jobs and queued calls.
            self.login_pane.session_ended(detail)
        self.status_line.show_connection(
            state, detail, "" if self.logged_in is None
            else plugins.source_of(self.logged_in).server(self.logged_in))
        self.update_status()

    def _poll_completed(self, ready: dict, next_poll_in: float) -> None:
        self.services_pane.set_ready(ready)
        self.status_line.poll_completed(next_poll_in)
        self.update_status()

    def update_status(self) -> None:
        self.status_line.update(self.engine, self.settings.concurrency)
        self.notifier.waiting_changed(
            self.engine.waiting_count() if self.engine is not None else 0, self.settings.notify)

    # -- selection --------------------------------------------------------------------------
    def _job_selected(self, job: JobSnapshot | None) -> None:
        self.detail_pane.show_job(job)
        self.gate.job_shown(job)
        self.selected_job.job_selected(job)

    # -- operator actions -------------------------------------------------------------------
    def _resume_requested(self, service_hashes: list[str]) -> None:
        engine = self.engine
        if engine is not None:
            spawn(self._resume(engine, service_hashes))

    async def _resume(self, engine: RemoteEngine, service_hashes: list[str]) -> None:
        # resume_service may start blocked jobs (their threads): not on the Qt thread.
        for service_hash in service_hashes:
            await run_blocking(engine.resume_service, service_hash)
        await self.show_services(engine)

    def _claim_requested(self, service_hashes: list[str]) -> None:
        # Disabled here, synchronously: a second click queued behind the first must find the
        # button off before the claim's task even starts.
        if not self.services_pane.claim_button.isEnabled():
            return
        self.services_pane.claim_button.setEnabled(False)
        spawn(self.claim_next(service_hashes))

    async def claim_next(self, service_hashes: list[str], *, run: bool = False
                         ) -> JobSnapshot | None:
        engine = self.engine
        button = self.services_pane.claim_button
        button.setEnabled(False)  # one claim at a time: a double click must not claim two
        button.setText("Claiming…")
        try:
            if engine is None:
                return None
            job = await run_blocking(engine.claim_next, service_hashes, run=run)
        except (EngineError, EngineCallError, EngineGoneError) as exc:
            # The engine process talks to the server: its errors arrive as EngineCallError.
            network = isinstance(exc, EngineCallError) and exc.kind == TRANSIENT
            self.show_banner(str(exc), cause="connection" if network else "claim")
            return None
        finally:
            button.setText("Claim next")
            button.setEnabled(bool(self.services_pane.selected_hashes()))
        self.clear_banner("claim")
        if job is None:
            self.statusBar().showMessage(self.queue_pane.presentation.text("no_work"), 10_000)
            return None
        self.queue_pane.update_jobs([job])
        self.queue_pane.select_job(job.job_id)
        return job

    # -- quitting (engine_session.py) -------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:
        if self.session.closed:
            self._save_window_state()
            event.accept()
            return
        event.ignore()
        self.session.quit_requested()

    def quit_for_signal(self, *, keep_running_jobs: bool) -> None:
        """Quit because the process was asked to (SIGTERM, Ctrl-C): nobody can answer a
        dialog. Running jobs go on in the engine (`keep_running_jobs`), or are stopped now."""
        self.session.quit_for_signal(keep_running_jobs=keep_running_jobs)

    def shut_down_views(self) -> None:
        """The window's last act before it closes for real: nothing of it runs on."""
        self.bridge.stop()
        self.queue_pane.stop()
        self.detail_pane.log.shutdown()  # its file thread must not outlive the window
        self._status_timer.stop()
        self.stop_refreshing()
        self.selected_job.stop()
        tasks.set_error_handler(None)

    def _save_window_state(self) -> None:
        if not self._remember_layout:
            return
        state = self._window_state
        state.setValue("geometry", self.saveGeometry())
        state.setValue("main_splitter", self.main_splitter.saveState())
        state.setValue("right_splitter", self.right_splitter.saveState())
        state.sync()

    def _restore_window_state(self) -> None:
        state = self._window_state
        geometry = state.value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        for key, splitter in (("main_splitter", self.main_splitter),
                              ("right_splitter", self.right_splitter)):
            value = state.value(key)
            if value is not None:
                splitter.restoreState(value)
        if geometry is None:
            self.main_splitter.setSizes([500, 780])
            self.right_splitter.setSizes([380, 440])

    @property
    def closed(self) -> bool:
        return self.session.closed

    def job_state(self, job_id: int) -> JobState | None:  # for tests and the self-test
        engine = self.engine
        return engine.job(job_id).state if engine is not None else None
