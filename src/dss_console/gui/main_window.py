"""The console's main window: login and services on the left, the ticket queue and the
selected ticket's detail on the right, connection and scheduler state in the status bar.

It turns engine events into views and operator actions into engine calls; every call that
touches the network, the disk or a process runs off the Qt thread (`run_blocking`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QAbstractButton,
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

from dss_console import paths
from dss_console.connection import LoggedIn
from dss_console.core.interfaces import LOGGED_OUT, TRANSIENT
from dss_console.core.presentation import Presentation
from dss_console.credentials import SessionStore
from dss_console.dss import DssError, ServerUnreachableError
from dss_console.engine.engine import EngineError
from dss_console.engine.events import JobSnapshot
from dss_console.engine.remote import (
    EngineCallError,
    EngineGoneError,
    RemoteEngine,
    find_engine,
)
from dss_console.engine.settings import (
    Settings,
    SettingsError,
    load_settings,
    save_settings,
    settings_path,
    settings_to_toml,
)
from dss_console.engine.spawn import (
    EngineStartError,
    engine_log_path,
    start_engine_process,
    wait_for_engine,
)
from dss_console.engine.states import JobState
from dss_console.gui import tasks
from dss_console.gui.bridge import EngineBridge
from dss_console.gui.copyable import show_copyable
from dss_console.gui.detail_pane import DetailPane
from dss_console.gui.login_pane import V6, LoginPane, server_of
from dss_console.gui.pause_banner import PauseBanner
from dss_console.gui.presentations import presentation_for
from dss_console.gui.queue_pane import QueuePane
from dss_console.gui.reason_dialog import ReasonDialog
from dss_console.gui.services_pane import ServicesPane
from dss_console.gui.status_bar import Banner, BannerAction, Notifier, StatusLine
from dss_console.gui.tasks import run_blocking, spawn
from dss_console.sources.v6.audit import is_v6_job
from dss_console.sources.v6.login import NodeLogin
from dss_console.workspace import Workspace, WorkspaceError

STATS_REFRESH_MS = 15_000
QUIT_STATUS_TIMEOUT = 3.0  # s; the engine's own count for the quit question, else the table's


# What the operator chose when jobs run: let them finish, then stop the engine; stop them now
# and run them again at the next start (the tickets stay claimed); stop them now and fail
# their tickets ("provider shut down"); or keep the engine running without a window.
QUIT_DRAIN, QUIT_RESUME, QUIT_CANCEL, QUIT_DETACH = "drain", "resume", "cancel", "detach"
# What the engine does with the jobs it stops, per choice.
_RUNNING_AT_STOP = {QUIT_RESUME: "resume", QUIT_CANCEL: "fail"}
ENGINE_STOP_WAIT = 60.0  # seconds for an engine to deliver what is owed and exit


def _stop_engine_process(engine: RemoteEngine, process: subprocess.Popen[bytes] | None,
                         drain: bool, running: str | None = None) -> None:
    """Ask an engine this console started to stop, and wait until it has (a worker started
    by someone else is only let go: it is not this window's to stop)."""
    try:
        if engine.info.get("kind") == "console":
            with contextlib.suppress(EngineGoneError, EngineCallError):
                engine.shutdown(drain=drain, running=running)
            wait = None if drain else ENGINE_STOP_WAIT  # finishing jobs takes what it takes
            if process is not None:
                try:
                    process.wait(wait)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            else:  # no process handle: the channel closing is the sign
                engine.wait_lost(wait)
    finally:
        engine.close()


class QuitChoiceBox(QMessageBox):
    """A question whose buttons each stand for a choice; Cancel (or Escape) answers None."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.choices: dict[str, QAbstractButton] = {}

    def add_choice(self, label: str, choice: str,
                   role: QMessageBox.ButtonRole = QMessageBox.ButtonRole.AcceptRole
                   ) -> QPushButton:
        button = self.addButton(label, role)
        self.choices[choice] = button
        return button

    def choice(self) -> str | None:
        clicked = self.clickedButton()
        return next((c for c, b in self.choices.items() if b is clicked), None)


def engine_key(logged_in: LoggedIn | NodeLogin) -> str:
    """What the engine for this login serves under: the DSS server, or the vantage6 node
    (one engine per node)."""
    return logged_in.source_key if isinstance(logged_in, NodeLogin) else \
        logged_in.client.server


def day_counts(jobs: list[JobSnapshot], now: float | None = None
               ) -> dict[str, tuple[int, int]]:
    """Succeeded / failed (or cancelled) per service in the last 24 h, from the jobs here."""
    since = (time.time() if now is None else now) - 24 * 3600
    counts: dict[str, tuple[int, int]] = {}
    for job in jobs:
        if job.finished_at is None or job.finished_at < since:
            continue
        done, failed = counts.get(job.service_hash, (0, 0))
        if job.state is JobState.SUCCEEDED:
            done += 1
        elif job.state in (JobState.FAILED, JobState.CANCELLED):
            failed += 1
        counts[job.service_hash] = (done, failed)
    return counts


class MainWindow(QMainWindow):
    engineStarted = Signal(object)  # RemoteEngine
    engineStopped = Signal()
    engineLost = Signal(object, str)  # RemoteEngine, why (from the channel's thread)
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
        # Why settings_file did not load; while set, the file is never written without asking.
        self._settings_problem: str | None = None
        self._replacing_settings = False
        self.store = store
        self.data_dir = data_dir or paths.data_dir()
        # The engine process this window is attached to (it may have started it).
        self.engine: RemoteEngine | None = None
        self._engine_process: subprocess.Popen[bytes] | None = None
        self.logged_in: LoggedIn | NodeLogin | None = None
        self._quitting = False
        self._preset_quit_choice: str | None = None  # quit_for_signal: no dialog
        self._closed_for_real = False
        self._required_tags: dict[str, tuple[str, ...]] = {}
        self._tags_failed_at: dict[str, float] = {}
        self._remember_layout = remember_layout
        self._starting: asyncio.Task | None = None
        # Input-workspace loads overlap (a selection, then the download finishing): each
        # has a number, and only the newest may fill the pane.
        self._inputs_loads = 0
        self._window_state = QSettings(
            str(window_state_file or paths.config_dir() / "window.ini"),
            QSettings.Format.IniFormat)

        self.bridge = EngineBridge(self)
        servers = list(dict.fromkeys([*(settings.servers or []),
                                      *([settings.server] if settings.server else []),
                                      *store.known_servers()]))
        self.login_pane = LoginPane(store, servers, self._verify)
        if store.last_server():
            self.login_pane.server_box.setCurrentText(store.last_server() or "")
        if remember_layout and self._window_state.value("login/source") == V6:
            # The console logged a vantage6 node in last time: its next start does again.
            self.login_pane.set_source_kind(V6)
        self.services_pane = ServicesPane()
        self.services_pane.set_logged_in(False)
        self.queue_pane = QueuePane()
        self.detail_pane = DetailPane()
        self.pause_banner = PauseBanner()
        self.messages = Banner()
        self.banner, self.banner_action = self.messages.label, self.messages.action_button
        self.settings_button = QPushButton("Settings…")

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
        self.audit_button = QPushButton("Run audit…")
        self.audit_button.setToolTip("Every run this node executed: who asked for it, which "
                                     "image, the input's hash, the outcome")
        self.audit_button.setVisible(False)
        left_buttons = QHBoxLayout()
        left_buttons.addWidget(self.settings_button)
        left_buttons.addWidget(self.audit_button)
        left_buttons.addStretch(1)
        left_layout.addLayout(left_buttons, 0)

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
        self._status_timer.timeout.connect(self._update_status)
        self._status_timer.start()
        self._stats_timer = QTimer(self)
        self._stats_timer.setInterval(STATS_REFRESH_MS)
        self._stats_timer.timeout.connect(lambda: spawn(self.refresh_services()))
        self._stats_soon = QTimer(self)
        self._stats_soon.setSingleShot(True)
        self._stats_soon.setInterval(1500)  # coalesce a burst of claims and finishes
        self._stats_soon.timeout.connect(lambda: spawn(self.refresh_services()))
        self._calls_soon = QTimer(self)
        self._calls_soon.setSingleShot(True)
        self._calls_soon.setInterval(300)  # a busy job changes its calls many times a second
        self._calls_soon.timeout.connect(self._reload_calls)
        tasks.set_error_handler(lambda text: self.show_banner(
            f"Something went wrong in the console: {text}"))

        self.login_pane.loggedIn.connect(self._logged_in)
        # The window speaks the picked source's words before the login, too.
        self.login_pane.source_box.currentIndexChanged.connect(
            lambda _index: self.logged_in is None
            and self._use_source_kind(self.login_pane.source_kind()))
        self.login_pane.logoutRequested.connect(self._logout_requested)
        self.login_pane.serversChanged.connect(self._servers_changed)
        self.services_pane.claimRequested.connect(self._claim_requested)
        self.services_pane.resumeRequested.connect(self._resume_requested)
        self.pause_banner.resumeRequested.connect(self._resume_requested)
        self.services_pane.servicesShown.connect(self.pause_banner.set_services)
        self.services_pane.servicesShown.connect(lambda _views: self._update_status())
        self.services_pane.autoModeToggled.connect(self._auto_mode_toggled)
        self.services_pane.serviceAutoToggled.connect(self._service_auto_toggled)
        self.services_pane.editCommandRequested.connect(self.open_settings)
        self.services_pane.refreshRequested.connect(lambda: spawn(self.refresh_services()))
        self.settings_button.clicked.connect(lambda: self.open_settings(None))
        self.audit_button.clicked.connect(self.open_audit)
        self.audit_dialog: Any = None
        self.queue_pane.currentJobChanged.connect(self._job_selected)
        self.queue_pane.actionRequested.connect(self._action_requested)
        self.queue_pane.batchRequested.connect(self._batch_requested)
        self.detail_pane.editCommandRequested.connect(self.open_settings)
        self.bridge.jobsChanged.connect(self._jobs_changed)
        self.bridge.outputArrived.connect(self.detail_pane.append_output)
        self.bridge.messageArrived.connect(self.detail_pane.append_message)
        self.bridge.callsChanged.connect(self._calls_changed)
        self.bridge.connectionChanged.connect(self._connection_changed)
        self.bridge.statusChanged.connect(self._update_status)
        self.bridge.servicesChanged.connect(self._services_changed)
        self.engineLost.connect(self._engine_lost)
        self.bridge.pollCompleted.connect(self._poll_completed)
        self.bridge.notice.connect(self._notice)
        if self.login_pane.source_kind() == V6:
            self._use_source_kind(V6)

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
            # A failed poll ends when the server answers again (_connection_changed).
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

    def ask_open_file(self, title: str, start: str, pattern: str) -> str | None:
        name, _ = QFileDialog.getOpenFileName(self, title, start, pattern)
        return name or None

    def ask_copy_path(self, title: str, text: str, path: str) -> None:
        """Show a path the desktop could not open, selectable, with a Copy button (not
        modal-blocking: the dialog is opened, not exec'd)."""
        self.path_dialog = show_copyable(self, title, text, path)

    def ask_quit_choice(self, running: int, *, allow_detach: bool = False) -> str | None:
        box = self.quit_choice_box(running, allow_detach=allow_detach)
        box.exec()
        return box.choice()

    def quit_choice_box(self, running: int, *, allow_detach: bool = False) -> QuitChoiceBox:
        """The question asked at quit (or log-out) while jobs run."""
        node = self.source_kind == V6
        box = QuitChoiceBox(self)
        box.setWindowTitle("Runs are in flight" if node else "Jobs are running")
        box.setText(f"{running} {'run(s)' if node else 'job(s)'} still running or uploading.")
        if node:
            stop = ("Stop them now and run them again when the node starts (the runs stay open "
                    "on the server), or stop them and fail the runs (the researchers are told "
                    "\"the node shut down\")?")
        else:
            stop = ("Stop them now and run them again when the console starts (the tickets "
                    "stay claimed; the users are told the provider is restarting), or stop "
                    "them and fail their tickets (the users are told \"provider shut down\")?")
        first = ("Keep them running without a window (open the console again to see them), "
                 "or let them finish and then stop. ") if allow_detach else \
            "Let them finish and then stop. "
        box.setInformativeText(first + stop)
        if allow_detach:
            box.add_choice("Keep running in the background", QUIT_DETACH)
        box.add_choice("Finish, then stop", QUIT_DRAIN)
        box.setDefaultButton(box.add_choice("Stop, run again at the next start", QUIT_RESUME))
        box.add_choice("Stop and fail the runs" if node else "Stop and fail them", QUIT_CANCEL,
                       QMessageBox.ButtonRole.DestructiveRole)
        box.addButton("Cancel", QMessageBox.ButtonRole.RejectRole)
        return box

    # -- settings ---------------------------------------------------------------------------
    def _verify(self) -> bool | str:
        return self.settings.ca_bundle or True

    def _servers_changed(self, servers: list[str]) -> None:
        self.settings.servers = list(servers)
        self._save_settings()

    def _save_settings(self) -> None:
        if self.settings_file is None or self._settings_problem is not None:
            # A file that does not load is never overwritten behind the user's back:
            # apply_settings asks (replace it, keeping a backup, or fix it first).
            return
        try:
            save_settings(self.settings, self.settings_file)
        except (SettingsError, OSError) as exc:
            self.show_banner(f"Could not save the settings: {exc}")

    def open_audit(self) -> None:
        """Every run this node executed (the journal's record), in its own window."""
        from dss_console.gui.audit_view import AuditDialog

        if self.audit_dialog is None:
            self.audit_dialog = AuditDialog(self)
        spawn(self._fill_audit(self.audit_dialog))
        self.audit_dialog.show()
        self.audit_dialog.raise_()
        # Keys (Escape closes it) go to the dialog, not to the window behind it: without a
        # window manager that activates new windows (Xvfb) nobody else does.
        self.audit_dialog.activateWindow()

    async def _fill_audit(self, dialog: Any) -> None:
        engine = self.engine
        if engine is None:
            return
        try:
            jobs = await run_blocking(engine.jobs)
        except (EngineGoneError, EngineCallError) as exc:
            self.show_banner(f"The run audit could not be loaded: {exc}")
            return
        dialog.set_jobs(jobs)

    def open_settings(self, service_hash: str | None = None) -> None:
        from dss_console.gui.settings_dialog import SettingsDialog

        node = isinstance(self.logged_in, NodeLogin)
        services = []
        if self.engine is not None and not isinstance(self.logged_in, NodeLogin):
            # A node's images are not DSS services: their commands are [v6.algorithms].
            services = [(s.name, s.service_hash) for s in self.engine.known_services()]
        dialog = SettingsDialog(self.settings, services, self,
                                file_problem=self._settings_problem,
                                engine_note=self._foreign_engine_note(), v6=node,
                                settings_file=str(self.settings_file) if self.settings_file
                                else f"{settings_path(None)} (created at OK)")
        if service_hash and node:
            dialog.select_image(service_hash)  # an image's "hash" is its name
        elif service_hash:
            dialog.select_service(service_hash)

        def finished(result: int) -> None:
            if result:
                self.apply_settings(dialog.result_settings())
            dialog.deleteLater()

        # open(), not exec(): a nested event loop inside the qasync loop is fragile.
        dialog.finished.connect(finished)
        dialog.open()
        self.settings_dialog = dialog

    def _foreign_engine_note(self) -> str | None:
        """Words for the Settings dialog when the attached engine is a headless worker,
        which keeps reading its own settings file whatever is changed here."""
        engine = self.engine
        if engine is None or engine.info.get("kind") == "console":
            return None
        info = engine.info
        pid = f" (process {info['pid']})" if info.get("pid") else ""
        source = str(info.get("settings_file") or "")
        if source and self.settings_file is not None and Path(source) == self.settings_file:
            return (f"This window is attached to a headless worker{pid} started outside the "
                    f"console. It reads the same settings file ({source}) and reloads it when "
                    "it changes, so what is saved here reaches it, except what its command "
                    "line sets (--command, --concurrency, …).")
        return (f"This window is attached to a headless worker{pid} started outside the "
                f"console. It runs with the settings in {source or 'its own settings file'} "
                "and the options it was started with; what is saved here is this console's "
                "own settings and does not reach that worker. Edit its file to change what it "
                "runs (it reloads the file when it changes).")

    def apply_settings(self, settings: Settings) -> None:
        """Use and save settings the operator changed (Settings… → OK)."""
        self._use_settings(settings)
        if self._settings_problem is not None and self.settings_file is not None:
            self._settings_not_saved(self.settings_file, self._settings_problem)
        else:
            self._save_settings()

    def _use_settings(self, settings: Settings) -> None:
        self.settings = settings
        engine = self.engine
        if engine is not None:
            spawn(self._push_settings(engine))
        self.login_pane.set_servers(list(dict.fromkeys(
            [*settings.servers, *([settings.server] if settings.server else [])])),
            self.login_pane.server_text())

    # -- a settings file that does not load ---------------------------------------------------
    def settings_file_broken(self, path: Path, problem: str) -> None:
        """The settings file exists but does not load: the window runs on defaults and keeps
        the path, to offer replacing the file (with a backup) when the settings change."""
        self.settings_file = path
        self._settings_problem = problem
        self._broken_settings_banner(f"{problem}.")

    def _broken_settings_banner(self, lead: str) -> None:
        self.show_banner(f"{lead} The console uses default settings, and changes apply to this "
                         "session only until the file is fixed (then Reload it) or replaced "
                         "(Settings… → OK offers that). The file was not changed.", "error",
                         ("Reload settings file", self.reload_settings))

    def ask_broken_settings(self, path: Path, problem: str) -> str | None:
        """REPLACE_FILE, FIX_FILE or None (keep the changes for this session only)."""
        from dss_console.gui.broken_settings import BrokenSettingsDialog

        dialog = BrokenSettingsDialog(path, problem, self)
        dialog.exec()
        return dialog.choice

    def _settings_not_saved(self, path: Path, problem: str) -> None:
        from dss_console.gui.broken_settings import FIX_FILE, REPLACE_FILE

        choice = self.ask_broken_settings(path, problem)
        if choice == REPLACE_FILE:
            spawn(self._replace_settings_file())
        elif choice == FIX_FILE:
            self._broken_settings_banner(f"Your changes were not saved: {path} does not load. "
                                         "Fix it, then Reload it (the file's settings then "
                                         "replace this session's changes).")
            self._open_settings_file(path)
        else:
            self._broken_settings_banner(f"Your changes were not saved: {path} does not load.")

    def _open_settings_file(self, path: Path) -> None:
        # False when no program opens it (no desktop): show the path to edit it another way.
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))):
            self.path_dialog = show_copyable(
                self, "Settings file", "No program could open the settings file here. Edit "
                "it with any text editor, then press Reload settings file:", str(path))

    async def _replace_settings_file(self) -> None:
        from dss_console.gui.broken_settings import replace_settings_file

        path = self.settings_file
        if path is None or self._replacing_settings:
            return
        self._replacing_settings = True
        try:
            # A copy: the operator may change settings while the file is written.
            backup = await run_blocking(replace_settings_file, copy.deepcopy(self.settings),
                                        path)
        except (SettingsError, OSError) as exc:
            self._broken_settings_banner(f"Could not replace {path}: {exc}.")
            return
        finally:
            self._replacing_settings = False
        self._settings_problem = None
        kept = f"; the file that did not load is kept as {backup}" if backup else ""
        self.show_banner(f"Saved the settings to {path}{kept}.", "info")

    def reload_settings(self) -> None:
        spawn(self._reload_settings())

    async def _reload_settings(self) -> None:
        path = self.settings_file
        if path is None:
            return
        try:
            settings = await run_blocking(load_settings, path)
        except SettingsError as exc:
            self._settings_problem = str(exc)
            self._broken_settings_banner(f"Still does not load: {exc}.")
            return
        self._settings_problem = None
        # Used as read, not written back: the file keeps the user's own layout and comments.
        self._use_settings(settings)
        engine = self.engine
        if engine is not None and engine.info.get("kind") == "console":
            # The file's Auto mode too, as at a start: the switch, the engine and the footer
            # agree with the file just read.
            self.services_pane.set_auto_mode(settings.auto)
            if settings.auto != engine.auto:
                await self._set_auto(engine, settings.auto)
        self._update_status()
        self.show_banner(f"Settings reloaded from {path}.", "info")

    async def _show_services(self, engine: RemoteEngine) -> None:
        try:
            views = await run_blocking(engine.services)
        except (EngineGoneError, EngineCallError):
            return
        if self.engine is engine:
            self.services_pane.set_services(views)

    def _services_changed(self) -> None:
        if self.engine is not None:
            spawn(self._show_services(self.engine))

    async def _push_settings(self, engine: RemoteEngine) -> None:
        """The engine runs what the window's settings say (an engine this console started;
        a headless worker keeps its own settings file)."""
        if engine.info.get("kind") != "console":
            return
        try:
            await run_blocking(engine.update_settings, settings_to_toml(self.settings))
        except (EngineGoneError, EngineCallError) as exc:
            self.show_banner(f"The engine did not take the new settings: {exc}")
            return
        await self._show_services(engine)

    # -- engine lifecycle -------------------------------------------------------------------
    @property
    def source_kind(self) -> str:
        """"v6" while a vantage6 node is logged in, else "dss"."""
        return V6 if isinstance(self.logged_in, NodeLogin) else "dss"

    def _use_source_kind(self, kind: str) -> None:
        """The window in the words of the login form's source, until an engine says its own."""
        self.use_presentation(presentation_for(kind))
        if self._remember_layout:
            self._window_state.setValue("login/source", kind)

    def use_presentation(self, presentation: Presentation) -> None:
        """The window in its source's words, columns and actions."""
        words = presentation.word_fields()
        self.services_box.setTitle(words["Services"])
        self.queue_box.setTitle(words["Jobs"])
        self.audit_button.setVisible("audit" in presentation.features)
        self.services_pane.apply_presentation(presentation)
        self.queue_pane.apply_presentation(presentation)
        self.detail_pane.apply_presentation(presentation)

    def _logged_in(self, result: LoggedIn | NodeLogin) -> None:
        engine = self.engine
        if isinstance(result, NodeLogin) or isinstance(self.logged_in, NodeLogin):
            # A node's key does not expire (no session to hand over): a login is a new
            # engine, after the one of another node or server stopped.
            if engine is not None or (self._starting is not None
                                      and not self._starting.done()):
                self._starting = spawn(self._restart_engine(result, self._starting))
            else:
                self._starting = spawn(self.start_engine(result))
            if self.login_pane.v6_store.fallback_note:
                self.show_banner(self.login_pane.v6_store.fallback_note.replace(
                    "note: ", "Note: ") + ".", "warning")
            return
        if engine is not None and result is self.logged_in:
            # A new session for the one that expired (same server and account): the engine
            # carries on with it, so running jobs go on and their queued calls go out now.
            spawn(self._hand_over_session(engine, result))
        elif engine is not None or (self._starting is not None and not self._starting.done()):
            # Another account after an expired session: its engine stops first (its jobs
            # cannot report with this session).
            self._starting = spawn(self._restart_engine(result, self._starting))
        else:
            self._starting = spawn(self.start_engine(result))
        if self.store.fallback_note:
            self.show_banner(self.store.fallback_note.replace("note: ", "Note: ") + ".",
                             "warning")

    async def _hand_over_session(self, engine: RemoteEngine, logged_in: LoggedIn) -> None:
        session_id = logged_in.client.transport.session_id
        if engine.info.get("kind") == "console" and session_id:
            try:
                await run_blocking(engine.use_session, session_id)
            except (EngineGoneError, EngineCallError) as exc:
                self.show_banner(f"The engine did not take the new session: {exc}")
                return
        self.statusBar().showMessage("Logged in again: queued calls are being delivered.",
                                     10_000)
        spawn(self.refresh_services())

    async def _restart_engine(self, logged_in: LoggedIn | NodeLogin,
                              starting: asyncio.Task | None) -> bool:
        if starting is not None and not starting.done():
            await starting
        old = self.logged_in
        await self.stop_engine(drain=False)
        if isinstance(old, LoggedIn) and old is not logged_in:
            await run_blocking(old.client.close)
        return await self.start_engine(logged_in)

    async def start_engine(self, logged_in: LoggedIn | NodeLogin) -> bool:
        if self._quitting:
            return False
        self.logged_in = logged_in
        self._use_source_kind(self.source_kind)
        if isinstance(logged_in, LoggedIn):
            self.settings.server = logged_in.client.server
            self._save_settings()
        self._connection_changed("connecting", "")
        self.statusBar().showMessage("Starting the engine…")
        try:
            engine, process = await run_blocking(self._attach_engine, logged_in)
        except (DssError, ValueError, OSError, EngineStartError, EngineGoneError,
                EngineCallError) as exc:
            self.statusBar().clearMessage()
            self.show_banner(f"Logged in, but the console cannot work with this server: {exc}")
            self._connection_changed("stopped", str(exc))
            return False
        self.statusBar().clearMessage()
        if self._quitting:  # the window closed while the engine was starting
            await run_blocking(_stop_engine_process, engine, process, False)
            return False
        self.engine, self._engine_process = engine, process
        presentation = engine.info.get("presentation")
        if isinstance(presentation, Presentation):  # an engine older than this window: none
            self.use_presentation(presentation)
        self.bridge.attach(engine.events)
        # Qt signal from the channel's thread: delivered on the Qt thread.
        engine.on_lost(lambda why, lost=engine: self.engineLost.emit(lost, why))
        self._update_status()
        try:
            views, jobs = await run_blocking(lambda: (engine.services(),
                                                      engine.jobs(limit=1000)))
        except (EngineGoneError, EngineCallError):
            return False  # _engine_lost says what happened
        if self.engine is not engine:
            return False
        self.services_pane.set_logged_in(True)
        self.services_pane.set_services(views)
        # Auto mode as the operator left it (the settings file keeps it); a headless worker
        # this window attached to keeps its own.
        if engine.info.get("kind") == "console" and self.settings.auto != engine.auto:
            await run_blocking(engine.set_auto, self.settings.auto)
        self.services_pane.set_auto_mode(engine.auto)
        self.queue_pane.setEnabled(True)
        self.queue_pane.set_jobs(jobs)
        # Unless the engine said otherwise meanwhile:
        if self.status_line.connection[0] == "connecting":
            self._connection_changed("online", "")
        self._stats_timer.start()
        spawn(self.refresh_services())
        self.engineStarted.emit(engine)
        return True

    def _attach_engine(self, logged_in: LoggedIn | NodeLogin
                       ) -> tuple[RemoteEngine, subprocess.Popen[bytes] | None]:
        """The engine for this server (or vantage6 node) and instance: the one already
        running (a headless worker, or the engine an earlier window left running), else a
        new engine process. Blocks: run it off the Qt thread."""
        key = engine_key(logged_in)
        instance = self.settings.instance
        if isinstance(logged_in, NodeLogin):
            # The node's keys go to the engine on its stdin, never on its command line.
            # With them the settings: the engine's first poll must know the images this
            # node runs, or it refuses their runs "not allowed" before the settings arrive.
            secret = json.dumps({"api_key": logged_in.api_key, "private_key": (
                logged_in.private_key_pem or b"").decode("ascii"),
                "settings": settings_to_toml(self.settings)})
            session_id, node = "", logged_in.identity.name
        else:
            secret = session_id = logged_in.client.transport.session_id or ""
            node = None
        found = find_engine(self.data_dir, key, instance)
        process = None
        if found is None:
            config = self.settings_file if self._settings_problem is None else None
            process = start_engine_process(
                server=server_of(logged_in), session_id=secret, instance=instance,
                data_dir=self.data_dir, workroot=Path(self.settings.workroot), config=config,
                provider=self.settings.provider, ca_bundle=self.settings.ca_bundle,
                v6_node=node, engine_key=key)
            found = wait_for_engine(process, self.data_dir, key, instance)
        engine = RemoteEngine(found)
        try:
            if engine.info.get("kind") == "console":
                engine.update_settings(settings_to_toml(self.settings))
                if process is None and session_id:
                    engine.use_session(session_id)  # this window's login is the newest
            engine.services()
        except BaseException:
            engine.close()
            raise
        return engine, process

    def _engine_lost(self, engine: RemoteEngine, why: str) -> None:
        """The engine process went away without this window asking (it crashed, was
        killed, or stopped for its own reasons)."""
        if engine is not self.engine:
            return  # one this window stopped or let go
        process, self._engine_process = self._engine_process, None
        self.engine = None
        code = process.poll() if process is not None else None
        self._stats_timer.stop()
        self._stats_soon.stop()
        self.bridge.drain()
        self.bridge.detach()
        engine.close()
        self.queue_pane.setEnabled(False)
        self.services_pane.set_logged_in(False)
        key = engine_key(self.logged_in) if self.logged_in else ""
        log = engine_log_path(self.data_dir, key, self.settings.instance)
        ended = f" (exit code {code})" if code is not None else ""
        self._connection_changed("stopped", f"the engine stopped{ended}")
        action = None
        if self.logged_in is not None and not self._quitting:
            logged_in = self.logged_in
            action = ("Restart the engine", lambda: self._restart_after_loss(logged_in))
        detail = "" if why == "the engine stopped" else f" ({why})"  # EOF says nothing new
        self.show_banner(f"The engine process stopped unexpectedly{ended}{detail}. No job is "
                         "lost: restarting it recovers every ticket from the journal (a job "
                         f"that was running runs again). Its log: {log}", "error", action)

    def _restart_after_loss(self, logged_in: LoggedIn) -> None:
        self.clear_banner()
        self._starting = spawn(self.start_engine(logged_in))

    async def stop_engine(self, *, drain: bool = False, detach: bool = False,
                          running: str | None = None) -> None:
        """Stop this window's engine (or only let go of it, with `detach`: its jobs go on
        without a window); `running`: "resume" or "fail" the jobs it stops (None: as the
        settings say)."""
        engine, process = self.engine, self._engine_process
        self._stats_timer.stop()
        self._stats_soon.stop()
        if self.audit_dialog is not None:
            self.audit_dialog.close()  # its runs are this engine's node's
        if engine is None:
            return
        self.engine, self._engine_process = None, None
        self.queue_pane.setEnabled(False)
        if detach:
            await run_blocking(engine.close)
        else:
            self.statusBar().showMessage("Stopping the engine and delivering what is owed…")
            await run_blocking(_stop_engine_process, engine, process, drain, running)
        self.statusBar().clearMessage()
        self.bridge.drain()
        self.bridge.detach()
        self.services_pane.set_logged_in(False)
        self.queue_pane.set_jobs([])
        self.detail_pane.show_job(None)
        self._connection_changed("none", "")
        self.engineStopped.emit()

    def _running_count(self, *, now: bool = False) -> int:
        """Jobs fetching, running or uploading: what the engine last said, and what the
        table shows (either may be a moment ahead of the other); `now` asks the engine
        itself (a question about quitting must not count a job that already ended)."""
        engine = self.engine
        if engine is None:
            return 0
        if now:
            with contextlib.suppress(EngineGoneError, EngineCallError):
                return len(engine.status(timeout=QUIT_STATUS_TIMEOUT).busy)
        shown = {job.job_id for job in self.queue_pane.model.jobs()
                 if job.state in (JobState.DOWNLOADING, JobState.RUNNING, JobState.UPLOADING)}
        return len(shown | engine.busy_job_ids())

    def _logout_requested(self) -> None:
        choice = None
        running = self._running_count()
        if running:
            choice = self.ask_quit_choice(running)
            if choice is None:
                return
        spawn(self._logout(choice == QUIT_DRAIN, _RUNNING_AT_STOP.get(choice or "")))

    async def _logout(self, drain: bool, running: str | None = None) -> None:
        # The engine first, while the session still works: its last calls (a "provider shut
        # down" failure, say) must reach the server before the session ends.
        self.login_pane.setEnabled(False)
        try:
            if self._starting is not None and not self._starting.done():
                await self._starting
            await self.stop_engine(drain=drain, running=running)
            await self.login_pane.logout()
        finally:
            self.login_pane.setEnabled(True)
        self.logged_in = None

    async def refresh_services(self) -> None:
        engine = self.engine
        if engine is None or self.logged_in is None:
            return
        try:
            views = await run_blocking(engine.refresh_services)
        except EngineGoneError:
            return  # _engine_lost says so
        except EngineCallError as exc:
            # The engine's own connection state follows the outcome of its calls; this one
            # only says what the status bar should show meanwhile.
            if exc.kind == LOGGED_OUT:
                self._connection_changed("logged_out", str(exc))
            elif exc.kind == TRANSIENT:
                self._connection_changed("offline", str(exc))
            return
        self.services_pane.set_services(views)
        if isinstance(self.logged_in, NodeLogin):
            self.services_pane.set_local_day_counts(day_counts(self.queue_pane.model.jobs()))
            with contextlib.suppress(EngineGoneError, EngineCallError):
                self.services_pane.set_ready(await run_blocking(engine.ready_counts))
            self.services_pane.summary.setText(
                f"{len(views)} image(s); {sum(1 for v in views if v.command)} with a command "
                "([v6.algorithms] in the settings file).")
            return
        client = self.logged_in.client
        for view in views:
            try:
                stats = await run_blocking(client.services.stats, view.service_hash)
            except DssError:
                continue
            self.services_pane.set_stats(view.service_hash, stats)
        self.services_pane.summary.setText(
            f"{len(views)} service(s); {sum(1 for v in views if v.command)} with a command.")

    # -- engine events ----------------------------------------------------------------------
    def _jobs_changed(self, jobs: list[JobSnapshot]) -> None:
        before = self.detail_pane.job
        self.queue_pane.update_jobs(jobs)
        if self.audit_dialog is not None and self.audit_dialog.isVisible():
            self.audit_dialog.update_jobs(jobs)
        if isinstance(self.logged_in, NodeLogin) and any(j.state.is_terminal for j in jobs):
            self.services_pane.set_local_day_counts(day_counts(self.queue_pane.model.jobs()))
        if self.engine is not None:
            self.queue_pane.set_busy(self.engine.busy_job_ids())
        for job in jobs:
            self.detail_pane.update_job(job)
            if job.state.is_terminal or job.state in (JobState.CLAIMED, JobState.BLOCKED):
                self._stats_soon.start()  # counts, and a blocked service shows as paused
            if job.state.is_terminal and self.settings.notify:
                self.notifier.job_ended(job)
        after = self.detail_pane.job
        # Reload the inputs only when they changed (downloaded, or a fresh attempt), not on
        # every progress update.
        if (after is not None and before is not None and after.job_id == before.job_id
                and (after.inputs_ready, after.attempt) != (before.inputs_ready, before.attempt)):
            spawn(self._load_inputs(after))

    def _calls_changed(self, job_id: int) -> None:
        job = self.detail_pane.job
        if job is not None and job.job_id == job_id and not self._calls_soon.isActive():
            self._calls_soon.start()

    def _reload_calls(self) -> None:
        if self.detail_pane.job is not None:
            spawn(self._load_calls(self.detail_pane.job.job_id))

    def _connection_changed(self, state: str, detail: str) -> None:
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
        self.status_line.show_connection(state, detail, server_of(self.logged_in))
        self._update_status()

    def _poll_completed(self, ready: dict, next_poll_in: float) -> None:
        self.services_pane.set_ready(ready)
        self.status_line.poll_completed(next_poll_in)
        self._update_status()

    def _update_status(self) -> None:
        self.status_line.update(self.engine, self.settings.concurrency)

    # -- selection --------------------------------------------------------------------------
    def _job_selected(self, job: JobSnapshot | None) -> None:
        self.detail_pane.show_job(job)
        if self.engine is not None:
            # Live output only for the job shown: the others' output stays on disk.
            spawn(self._watch(self.engine, [job.job_id] if job is not None else []))
        if job is not None:
            spawn(self._load_calls(job.job_id))
            spawn(self._load_inputs(job))

    async def _watch(self, engine: RemoteEngine, job_ids: list[int]) -> None:
        with contextlib.suppress(EngineGoneError, EngineCallError):
            await run_blocking(engine.watch, job_ids)

    async def _load_calls(self, job_id: int) -> None:
        engine = self.engine
        if engine is None:
            return
        try:
            items = await run_blocking(engine.outbox_items, job_id)
        except (EngineGoneError, EngineCallError):
            return
        self.detail_pane.set_calls(job_id, items)

    async def _load_inputs(self, job: JobSnapshot) -> None:
        engine = self.engine
        if engine is None:
            return
        self._inputs_loads = generation = self._inputs_loads + 1
        if is_v6_job(job):  # what the engine learnt at fetch time: no file to read here
            self.detail_pane.set_run_summary(job)
            return
        required = self._required_tags.get(job.service_hash)
        failed_at = self._tags_failed_at.get(job.service_hash, -1e9)
        if required is None and isinstance(self.logged_in, LoggedIn) \
                and time.monotonic() - failed_at > 60:
            try:
                detail = await run_blocking(self.logged_in.client.services.detail,
                                            job.service_hash)
                required = self._required_tags[job.service_hash] = detail.required_tags
            except DssError:
                self._tags_failed_at[job.service_hash] = time.monotonic()
                required = ()
        if generation != self._inputs_loads:
            return
        if not job.inputs_ready:
            self.detail_pane.set_inputs(job.job_id, None, required or ())
            return
        from dss_console.engine.workdirs import find_input_workspace

        def load() -> Workspace | None:
            found = find_input_workspace(Path(job.workdir) / "input", job.ticket_id)
            return Workspace.load(found) if found else None

        try:
            workspace = await run_blocking(load)
        except WorkspaceError as exc:
            if generation == self._inputs_loads:
                self.detail_pane.set_inputs(job.job_id, None, required or (),
                                            f"Unreadable: {exc}")
            return
        if generation == self._inputs_loads:
            self.detail_pane.set_inputs(job.job_id, workspace, required or ())

    # -- operator actions -------------------------------------------------------------------
    def _auto_mode_toggled(self, on: bool) -> None:
        if self.engine is not None:
            spawn(self._set_auto(self.engine, on))
        self.services_pane.set_auto_mode(on)
        if self.settings.auto != on:
            self.settings.auto = on  # kept for the next start
            self._save_settings()
        self._update_status()

    async def _set_auto(self, engine: RemoteEngine, on: bool) -> None:
        try:
            await run_blocking(engine.set_auto, on)
        except (EngineGoneError, EngineCallError) as exc:
            self.show_banner(f"Auto mode could not be switched: {exc}")
        self._update_status()

    def _service_auto_toggled(self, service_hash: str, on: bool) -> None:
        engine = self.engine
        names = {s.service_hash: s.name for s in engine.known_services()} if engine else {}
        command = self.settings.command_for(names.get(service_hash, ""), service_hash)
        if command is None:
            return
        command.auto = on  # part of the settings: saved, and what the Settings dialog shows
        self._save_settings()
        if engine is not None:
            spawn(self._push_settings(engine))

    def _resume_requested(self, service_hashes: list[str]) -> None:
        engine = self.engine
        if engine is not None:
            spawn(self._resume(engine, service_hashes))

    async def _resume(self, engine: RemoteEngine, service_hashes: list[str]) -> None:
        # resume_service may start blocked jobs (their threads): not on the Qt thread.
        for service_hash in service_hashes:
            await run_blocking(engine.resume_service, service_hash)
        await self._show_services(engine)

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
        except (DssError, EngineError, EngineCallError, EngineGoneError) as exc:
            network = isinstance(exc, ServerUnreachableError) or (
                isinstance(exc, EngineCallError) and exc.kind == TRANSIENT)
            self.show_banner(str(exc), cause="connection" if network else "claim")
            return None
        finally:
            button.setText("Claim next")
            button.setEnabled(bool(self.services_pane.selected_hashes()))
        self.clear_banner("claim")
        if job is None:
            self.statusBar().showMessage("No ticket is ready for the selected services.",
                                         10_000)
            return None
        self.queue_pane.update_jobs([job])
        self.queue_pane.select_job(job.job_id)
        return job

    def _action_requested(self, name: str, job: JobSnapshot) -> None:
        # Dialogs run here, in a plain slot; the work after them is scheduled as a task.
        if is_v6_job(job) and name in ("cancel", "fail", "retry", "copy"):
            self._v6_action(name, job)
        elif name == "cancel":
            if self.ask_confirm("Cancel ticket", f"Stop ticket {job.ticket_id} and fail it on "
                                "the server as cancelled by the provider?"):
                spawn(self.perform("cancel", job))
        elif name == "fail":
            message = self.ask_text("Fail ticket", f"Message for the user of ticket "
                                    f"{job.ticket_id} (why it failed):")
            if message is None:  # the operator cancelled the dialog
                return
            if not message.strip():
                self.show_banner(f"Ticket {job.ticket_id} was not failed: a message for its "
                                 "user is required (they read it on their ticket).", "warning",
                                 cause=f"job:{job.job_id}")
                return
            spawn(self.perform("fail", job, message.strip()))
        elif name == "upload":
            start = str(Path(job.workdir))
            picked = self.ask_open_file(f"Result workspace for ticket {job.ticket_id}", start,
                                        "ITK-SNAP workspace (*.itksnap)")
            question = (f"Upload {picked} as the result of ticket {job.ticket_id} and mark it a "
                        "success?")
            if job.state in (JobState.FAILED, JobState.CANCELLED):
                # The server lets the claimant turn its own failure into a success; the
                # user's log keeps the failure, so the operator should know they see both.
                earlier = f" (“{job.reason}”)" if job.reason else ""
                question = (f"Ticket {job.ticket_id} was already {job.state.value} by this "
                            f"console{earlier}, and its user has seen that failure. Upload "
                            f"{picked} as its result and mark it a success? The user will then "
                            "see the earlier failure followed by the success.")
            if picked and self.ask_confirm("Upload result", question):
                spawn(self.perform("upload", job, picked))
        elif name == "retry":
            if self.ask_confirm("Retry run", f"Run ticket {job.ticket_id} again? Its work dir "
                                "is emptied first (the logs of earlier runs are kept)."):
                spawn(self.perform("retry", job))
        elif name == "workdir":
            # False when there is no file manager (a bare server, a minimal desktop).
            if not QDesktopServices.openUrl(QUrl.fromLocalFile(job.workdir)):
                self.ask_copy_path("Open work dir", f"No file manager could open the work dir "
                                   f"of ticket {job.ticket_id}. Its path:", job.workdir)
        elif name == "open_inputs":
            self._open_in_itksnap(job)
        elif name == "copy":
            QGuiApplication.clipboard().setText(str(job.ticket_id))
            self.statusBar().showMessage(f"Copied {job.ticket_id}", 3000)
        else:
            spawn(self.perform(name, job))

    def _batch_requested(self, name: str, jobs: list[JobSnapshot]) -> None:
        """Retry, Fail… or Cancel for several selected rows: one question, one reason."""
        v6 = any(is_v6_job(job) for job in jobs)
        noun = f"{len(jobs)} {'run' if v6 else 'ticket'}{'s' if len(jobs) > 1 else ''}"
        ids = ", ".join(str(job.ticket_id) for job in jobs[:12])
        ids += ", …" if len(jobs) > 12 else ""
        reason = None
        if name == "retry":
            if not self.ask_confirm("Retry runs", f"Run {noun} again ({ids})? Their work dirs "
                                    "are emptied first (the logs of earlier runs are kept)."):
                return
        elif name == "cancel" and not v6:
            if not self.ask_confirm("Cancel tickets", f"Stop {noun} ({ids}) and fail them on "
                                    "the server as cancelled by the provider?"):
                return
        else:
            reason = self.ask_text(f"{'Cancel' if name == 'cancel' else 'Fail'} "
                                   f"{'runs' if v6 else 'tickets'}",
                                   f"Why {noun} ({ids}) failed, for the "
                                   f"{'researchers' if v6 else 'users'} (one reason for all):")
            if reason is None or not reason.strip():
                return
            reason = reason.strip()
        for job in jobs:
            spawn(self.perform(name, job, reason))

    def _v6_action(self, name: str, job: JobSnapshot) -> None:
        """A vantage6 run: no cancelled state on the server, so Cancel and Fail both fail the
        run with the operator's reason; a finished run never runs again."""
        run = f"run {job.ticket_id}"
        if name in ("cancel", "fail"):
            stop = " Its command is stopped first." if name == "cancel" else ""
            reason = self.ask_text(
                "Cancel run" if name == "cancel" else "Fail run",
                f"Why {run} is failed (the researcher reads this in the run's log; vantage6 "
                f"has no cancelled state).{stop}")
            if reason is None:
                return
            if not reason.strip():
                self.show_banner(f"The {run} was not failed: a reason for the researcher is "
                                 "required.", "warning", cause=f"job:{job.job_id}")
                return
            spawn(self.perform(name, job, reason.strip()))
        elif name == "retry":
            if self.ask_confirm("Retry run", f"Run {run} again? It is still open on the "
                                "server; its work dir is emptied first (the logs of earlier "
                                "attempts are kept)."):
                spawn(self.perform("retry", job))
        elif name == "copy":
            QGuiApplication.clipboard().setText(str(job.ticket_id))
            self.statusBar().showMessage(f"Copied run id {job.ticket_id}", 3000)

    async def perform(self, name: str, job: JobSnapshot, argument: str | None = None) -> bool:
        """Run an engine operation for a job; failures are shown in words."""
        engine = self.engine
        if engine is None:
            return False
        calls = {
            "run": lambda: engine.run_job(job.job_id),
            "retry": lambda: engine.retry_job(job.job_id),
            "cancel": lambda: engine.cancel_job(job.job_id, argument),
            "fail": lambda: engine.fail_job(job.job_id, argument or ""),
            "upload": lambda: engine.upload_result(job.job_id, argument or ""),
        }
        try:
            await run_blocking(calls[name])
        except (EngineError, DssError, EngineCallError, EngineGoneError) as exc:
            noun = "Run" if is_v6_job(job) else "Ticket"
            self.show_banner(f"{noun} {job.ticket_id}: {exc}", cause=f"job:{job.job_id}")
            return False
        self.clear_banner(f"job:{job.job_id}")  # an earlier complaint about it is over
        self.queue_pane.set_busy(engine.busy_job_ids())
        return True

    def _open_in_itksnap(self, job: JobSnapshot) -> None:
        spawn(self._launch_itksnap(job))

    async def _launch_itksnap(self, job: JobSnapshot) -> None:
        from dss_console.engine.workdirs import find_input_workspace

        def launch() -> str | None:
            workspace = find_input_workspace(Path(job.workdir) / "input", job.ticket_id)
            program = shutil.which("itksnap")
            if workspace is None or program is None:
                return None
            subprocess.Popen([program, "-w", str(workspace)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
            return str(workspace)

        try:
            opened = await run_blocking(launch)
        except OSError as exc:
            self.show_banner(f"Could not start ITK-SNAP: {exc}")
            return
        if opened is None:
            self.show_banner(f"Ticket {job.ticket_id}: no downloaded workspace, or itksnap is "
                             "not on PATH.")

    # -- quitting ---------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:
        if self._closed_for_real:
            self._save_window_state()
            event.accept()
            return
        event.ignore()
        if self._quitting:
            return
        engine = self.engine
        running = self._running_count(now=True)
        drain = detach = False
        stop_as = None
        if engine is not None and engine.info.get("kind") != "console":
            detach = True  # a headless worker goes on as it did before this window came
        elif running:
            choice = self._preset_quit_choice or self.ask_quit_choice(
                running, allow_detach=not self.sandbox)
            if choice is None:
                return
            drain = choice == QUIT_DRAIN
            detach = choice == QUIT_DETACH
            stop_as = _RUNNING_AT_STOP.get(choice)
        self._quitting = True
        if drain:
            # Nothing new while waiting: no claims (the button, Ctrl+N, auto mode), and the
            # services are shown off so the wait is visible.
            self.services_pane.setEnabled(False)
            self.services_pane.summary.setText("Quitting: no new tickets are claimed.")
            self.show_banner(f"Waiting for {running} job(s) to finish before quitting…",
                             "warning")
        spawn(self._quit(drain, detach, stop_as))

    def quit_for_signal(self, *, keep_running_jobs: bool) -> None:
        """Quit because the process was asked to (SIGTERM, Ctrl-C): nobody can answer a
        dialog. Running jobs go on in the engine (`keep_running_jobs`), or are stopped now."""
        self._preset_quit_choice = QUIT_DETACH if keep_running_jobs else QUIT_CANCEL
        self.close()

    async def _quit(self, drain: bool, detach: bool = False,
                    running: str | None = None) -> None:
        if self._starting is not None and not self._starting.done():
            await self._starting  # it sees _quitting and stops what it started
        engine = self.engine
        if engine is not None:
            if not detach:
                with contextlib.suppress(EngineGoneError, EngineCallError):
                    await run_blocking(engine.stop_claiming)
            await self.stop_engine(drain=drain, detach=detach, running=running)
        self.bridge.stop()
        self.queue_pane.stop()
        self.detail_pane.log.shutdown()  # its file thread must not outlive the window
        self._status_timer.stop()
        self._stats_timer.stop()
        self._stats_soon.stop()
        self._calls_soon.stop()
        tasks.set_error_handler(None)
        if isinstance(self.logged_in, LoggedIn):
            self.logged_in.client.close()
        self._closed_for_real = True
        self.close()
        self.finished.emit()

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
        return self._closed_for_real

    def job_state(self, job_id: int) -> JobState | None:  # for tests and the self-test
        engine = self.engine
        return engine.job(job_id).state if engine is not None else None
