"""Test a service's command on a local workspace, with no server: the offline dry run.

A dry run gives the command the layout of a real ticket, so a service developer sees what
a ticket would see before any user submits one::

    <tmp>/dss-dry-run-XXXX/             (0700)  {workdir}
        input/ticket_00000000.itksnap           {workspace}: a copy of the chosen workspace
        input/layer_000_<md5>.nii.gz ...         copies of its layer files (ITK-SNAP's names)
        result.itksnap                          {result}
        .dss/                                   hook, events file, output.log

The first part of this module has no Qt in it (:func:`prepare_dry_run`,
:func:`summarize_run`, :class:`DryRun`); :class:`DryRunDialog` is its window.
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
import queue
import re
import shlex
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QSettings, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import (
    QAction,
    QColor,
    QDesktopServices,
    QFontDatabase,
    QKeySequence,
)
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from dss_console import plugins
from dss_console.core.command import CommandSpec, CommandStartError, JobPaths
from dss_console.core.executor import (
    ExecutorDetails,
    JobRef,
    RunCallbacks,
    RunHandle,
    RunOutcome,
    RunRequest,
    StartError,
)
from dss_console.engine.protocol import (
    AttachReport,
    MessageReport,
    OutputReport,
    ProgressReport,
    ProgressTracker,
    ProtocolWarning,
    Report,
)
from dss_console.engine.settings import ServiceCommand
from dss_console.engine.workdirs import ENGINE_DIR, make_private_dir
from dss_console.gui.copyable import show_copyable
from dss_console.workspace import Workspace, WorkspaceError, export_result_workspace

__all__ = [
    "DRY_RUN_TICKET_ID",
    "UNKNOWN_SERVICE_HASH",
    "DryRun",
    "DryRunDialog",
    "DryRunError",
    "DryRunFinished",
    "DryRunPrepared",
    "DryRunSummary",
    "prepare_dry_run",
    "summarize_run",
]

log = logging.getLogger(__name__)

DRY_RUN_TICKET_ID = 0  # no server numbers a ticket 0, so it cannot be mistaken for one
UNKNOWN_SERVICE_HASH = "0" * 40
RESULT_NAME = "result.itksnap"  # as the engine's jobs name it
_HASH_RE = re.compile(r"[0-9a-fA-F]{40}")


# == Qt-free part ===========================================================================


class DryRunError(Exception):
    """The dry run could not be set up (unreadable workspace, missing layer, full disk)."""


class DryRunCommandError(DryRunError):
    """The work dir is ready but the command cannot be built for it (a bad template): it
    could not start, as on a real ticket."""

    def __init__(self, message: str, paths: JobPaths) -> None:
        super().__init__(message)
        self.paths = paths


def _layers_text(workspace: Workspace) -> str:
    names = [layer.nickname or layer.role or f"layer {layer.index}" for layer in workspace.layers]
    count = len(names)
    return f"{count} layer{'s' if count != 1 else ''} ({', '.join(names)})"


def prepare_dry_run(workspace: Path, service_command: ServiceCommand, service_name: str,
                    root: Path | None = None, *,
                    service_hash: str | None = None) -> tuple[CommandSpec, JobPaths]:
    """Make a fresh private work dir under ``root`` (default: the system's temp dir) that
    looks like a real ticket's, and return how to run ``service_command`` in it (built by
    the source's own builder, so exactly what a ticket with these paths would run).

    The workspace and its layers are copied (never linked: a command may write to its
    inputs) under the names ITK-SNAP gives a ticket's files, with the registry kept whole
    (tags, nicknames, roles) and SaveLocation pointing at the copies. Raises DryRunError in
    words; nothing is left behind then, except for DryRunCommandError (the work dir is
    kept: the command cannot be built for it).
    """
    try:
        source = Workspace.load(workspace)
    except (WorkspaceError, OSError) as exc:
        raise DryRunError(f"cannot read the workspace: {exc}") from None
    if service_hash is None:
        key = service_command.key
        service_hash = key.lower() if _HASH_RE.fullmatch(key) else UNKNOWN_SERVICE_HASH
    try:
        workdir = Path(tempfile.mkdtemp(prefix="dss-dry-run-", dir=root))  # mode 0700
    except OSError as exc:
        where = root if root is not None else tempfile.gettempdir()
        raise DryRunError(f"cannot create a work dir in {where}: {exc.strerror or exc}") \
            from None
    try:
        input_dir = make_private_dir(workdir / "input")
        # The same renaming ITK-SNAP applies when it submits a ticket; without copy_layers
        # it only hashes, and we copy below.
        exported = export_result_workspace(source, input_dir, DRY_RUN_TICKET_ID)
        for name, layer_file in exported.uploads[:-1]:
            shutil.copyfile(layer_file, input_dir / name)
        ticket_workspace = input_dir / f"ticket_{DRY_RUN_TICKET_ID:08d}.itksnap"
        os.replace(exported.workspace_file, ticket_workspace)
    except WorkspaceError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        raise DryRunError(str(exc)) from None
    except OSError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        where = f" ({exc.filename})" if exc.filename else ""
        raise DryRunError(f"cannot copy the workspace: {exc.strerror or exc}{where}") from None
    paths = JobPaths(ticket_id=DRY_RUN_TICKET_ID, service_name=service_name,
                     service_hash=service_hash, workdir=workdir, input_dir=input_dir,
                     workspace=ticket_workspace, result=workdir / RESULT_NAME,
                     engine_dir=workdir / ENGINE_DIR)
    try:
        return plugins.dry_run_command(service_command, paths), paths
    except CommandStartError as exc:
        raise DryRunCommandError(str(exc), paths) from None


@dataclass(frozen=True)
class DryRunSummary:
    """How a dry run ended, in words, and what a real ticket would have come to."""

    would_succeed: bool
    verdict: str  # "On a real ticket: ..." in one sentence
    details: tuple[str, ...]  # how it ended, the result, the last error, where things are
    result_layers: int | None = None  # layers of a readable result workspace
    workdir: Path | None = None
    log_path: Path | None = None
    started: bool = True  # False: the command never ran (not prepared, could not start)

    @property
    def text(self) -> str:
        return "\n".join((*self.details, self.verdict))


def _ended_text(outcome: RunOutcome) -> str:
    took = f"after {outcome.duration:.1f} s"
    if outcome.stop_reason:
        return f"The command was stopped ({outcome.stop_reason}) {took}."
    if outcome.exit_code is not None:
        return f"The command exited with code {outcome.exit_code} {took}."
    try:
        name = f" ({signal.Signals(outcome.signal).name})" if outcome.signal else ""
    except ValueError:
        name = ""
    return f"The command was killed by signal {outcome.signal}{name} {took}."


def _check_result(result: Path) -> tuple[str, int | None, str | None]:
    """(what the result is, its layer count if usable, why it cannot be uploaded)."""
    if not result.is_file():
        return (f"No result workspace (nothing at {result}).", None,
                f"the command finished without a result workspace (expected {result.name})")
    try:
        workspace = Workspace.load(result)
    except (WorkspaceError, OSError) as exc:
        return (f"The result workspace cannot be read: {exc}", None,
                f"the result workspace cannot be read: {exc}")
    missing = [layer for layer in workspace.layers if not layer.path.is_file()]
    if missing:
        first = missing[0]
        problem = (f"layer {first.index} ({first.nickname or first.role}) file {first.path} "
                   "does not exist")
        return (f"Result workspace written, but {problem}.", None,
                f"the result workspace cannot be exported: {problem}")
    return (f"Result workspace written: {_layers_text(workspace)}.", len(workspace.layers), None)


def summarize_run(outcome: RunOutcome, paths: JobPaths,
                  stopped_by_user: bool = False) -> DryRunSummary:
    """Words for a finished run; the verdict follows the engine's rules for a real ticket
    (exit 0 with a usable result succeeds; anything else fails with the engine's reason)."""
    details = [_ended_text(outcome)]
    result_text, layers, result_problem = _check_result(paths.result)
    details.append(result_text)
    if outcome.last_error:
        details.append(f"Last @dss error: {outcome.last_error}")
    details.append(f"Work dir: {paths.workdir}")
    details.append(f"Full log: {outcome.log_path}")
    reason: str | None
    if stopped_by_user:
        verdict = "Stopped by you: no verdict."
        reason = None
    elif outcome.stop_reason:
        reason = f"the command {outcome.stop_reason}"
    elif outcome.exit_code == 0:
        reason = result_problem
    elif outcome.exit_code is not None:
        reason = outcome.last_error or f"command exited with code {outcome.exit_code}"
    else:
        reason = outcome.last_error or f"command was killed by signal {outcome.signal}"
    if not stopped_by_user:
        if reason is None:
            verdict = ("On a real ticket: success; the result workspace would be uploaded "
                       f"({layers} layer{'s' if layers != 1 else ''}).")
        else:
            verdict = f"On a real ticket: failed with “{reason}”."
    return DryRunSummary(would_succeed=not stopped_by_user and reason is None, verdict=verdict,
                         details=tuple(details), result_layers=layers, workdir=paths.workdir,
                         log_path=outcome.log_path)


@dataclass(frozen=True)
class DryRunPrepared:
    """The work dir is ready and the command is about to start."""

    paths: JobPaths
    argv: tuple[str, ...]  # the command as it runs (placeholders filled in)
    input_description: str  # e.g. "1 layer (T1)"


@dataclass(frozen=True)
class DryRunFinished:
    """The last event of a run: nothing more will come."""

    summary: DryRunSummary


DryRunEvent = DryRunPrepared | DryRunFinished | Report


class DryRun:
    """One dry run on a background thread: prepare the work dir, run the command, wait,
    summarize. Everything it has to say (DryRunPrepared, the command's reports, then one
    DryRunFinished) is queued for :meth:`take`, which any one thread may call without
    ever blocking; :attr:`alive` turns false once the thread has ended.
    """

    def __init__(self, workspace: Path, service_command: ServiceCommand, service_name: str,
                 *, service_hash: str | None = None, root: Path | None = None,
                 grace_period: float = 3.0) -> None:
        self._workspace = Path(workspace)
        self._command = service_command
        self._name = service_name
        self._hash = service_hash
        self._root = root
        self._grace = grace_period
        self._events: queue.SimpleQueue[DryRunEvent] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._handle: RunHandle | None = None
        self._pid: int | None = None
        self._stop_reason: str | None = None
        self._thread = threading.Thread(target=self._main, name="dss-dry-run", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def pid(self) -> int | None:
        """The command's pid once it has started."""
        with self._lock:
            return self._pid

    @property
    def stopping(self) -> bool:
        with self._lock:
            return self._stop_reason is not None

    def stop(self, reason: str) -> None:
        """Stop the command (TERM to its process group, KILL after the grace period), or
        keep it from starting. Returns at once; the run still ends with DryRunFinished."""
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason
            handle = self._handle
        if handle is not None:
            handle.stop(reason)  # before it started: _run stops it once it has

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def take(self, limit: int = 10_000) -> list[DryRunEvent]:
        """Up to ``limit`` queued events, oldest first; never waits."""
        events: list[DryRunEvent] = []
        with contextlib.suppress(queue.Empty):
            while len(events) < limit:
                events.append(self._events.get_nowait())
        return events

    def _not_run(self, verdict: str, paths: JobPaths | None) -> DryRunFinished:
        details = [f"Work dir: {paths.workdir}"] if paths is not None else []
        return DryRunFinished(DryRunSummary(
            would_succeed=False, verdict=verdict, details=tuple(details),
            workdir=paths.workdir if paths is not None else None, started=False))

    def _on_details(self, details: ExecutorDetails) -> None:
        pid = details.data.get("pid")
        if isinstance(pid, int):  # kept once it ended, as the window last saw it
            with self._lock:
                self._pid = pid

    def _main(self) -> None:
        finished: DryRunFinished | None = None
        try:
            finished = self._run()
        except Exception as exc:  # a bug must end the run in words, not hang the window
            log.exception("dry run failed")
            finished = self._not_run(f"The dry run failed: {exc!r}", None)
            with self._lock:
                handle = self._handle
            if handle is not None:
                handle.stop("the dry run failed")
                handle.wait()
        finally:
            self._events.put(finished or self._not_run("The dry run failed.", None))

    def _run(self) -> DryRunFinished:
        if self.stopping:
            return self._not_run("Stopped before it started.", None)
        try:
            spec, paths = prepare_dry_run(self._workspace, self._command, self._name,
                                          self._root, service_hash=self._hash)
        except DryRunCommandError as exc:
            return self._not_run(f"The command could not start: {exc}.", exc.paths)
        except DryRunError as exc:
            return self._not_run(f"The dry run could not be prepared: {exc}", None)
        assert paths.workspace is not None  # prepare_dry_run always makes one
        try:
            described = _layers_text(Workspace.load(paths.workspace))
        except (WorkspaceError, OSError) as exc:
            return self._not_run(f"The copied workspace cannot be read: {exc}", paths)
        self._events.put(DryRunPrepared(paths=paths, argv=tuple(spec.argv),
                                        input_description=described))
        with self._lock:
            stop = self._stop_reason
        if stop is not None:  # while the workspace was being copied
            return self._not_run(f"Stopped before the command started ({stop}).", paths)
        # A dry run is a local process whatever the service's executor (its dialog says so).
        executor = plugins.executor_class("local")()
        request = RunRequest(spec=spec, paths=paths, job=JobRef("dry-run", 0, 0),
                             log_name="output.log", grace_period=self._grace)
        callbacks = RunCallbacks(on_report=self._events.put, on_details=self._on_details,
                                 on_note=lambda level, text: log.info("dry run: %s", text))
        try:
            handle = executor.start(request, callbacks)
        except StartError as exc:
            return self._not_run(f"The command could not start: {exc}.", paths)
        with self._lock:
            self._handle = handle
            stop = self._stop_reason
        if stop is not None:  # asked while it was starting
            handle.stop(stop)
        outcome = handle.wait()
        assert outcome is not None
        return DryRunFinished(summarize_run(outcome, paths, stopped_by_user=self.stopping))


# == the window =============================================================================

_DRAIN_MS = 33  # ~30 Hz: as often as a person can see, and no more
_MAX_EVENTS_PER_TICK = 20_000
_MAX_OUTPUT_BLOCKS = 5000
_GRACE_PERIOD = 3.0
_LEVEL_COLORS = {"warning": QColor(160, 100, 0), "error": QColor(190, 0, 0)}
# Where the dialog remembers the workspace last chosen per service (across openings and
# restarts); None: dry-run.ini in the console's config dir. Tests point it elsewhere.
STATE_FILE: Path | None = None


def _state() -> QSettings:
    from dss_console import paths

    path = STATE_FILE if STATE_FILE is not None else paths.config_dir() / "dry-run.ini"
    return QSettings(str(path), QSettings.Format.IniFormat)


def _remove_dirs(workdirs: list[Path]) -> None:
    for workdir in workdirs:
        shutil.rmtree(workdir, ignore_errors=True)


class DryRunDialog(QDialog):
    """Runs a service's command on a local workspace with no server and shows everything
    it reports: progress, messages, attachments, output and the outcome in words.

    Closing while the command runs stops it first (TERM, KILL after a few seconds); the
    window closes when the command and every thread of the run are gone.
    """

    run_finished = Signal(object)  # DryRunSummary, when a run has ended

    def __init__(self, service_command: ServiceCommand, service_name: str,
                 workspace: Path | None = None, parent: QWidget | None = None, *,
                 service_hash: str | None = None, work_root: Path | None = None,
                 grace_period: float = _GRACE_PERIOD) -> None:
        super().__init__(parent)
        self._command = service_command
        self._service_name = service_name
        self._service_hash = service_hash
        self._work_root = work_root
        self._grace = grace_period
        if workspace is None:
            workspace = self._remembered_workspace()
        self._workspace = Path(workspace) if workspace is not None else None
        self._run: DryRun | None = None
        # Every work dir this dialog's runs made: copies of the user's images, removed
        # when the dialog closes (on a thread of its own: the Qt thread never waits on disk).
        self._made: list[Path] = []
        self._cleanup: threading.Thread | None = None
        self._finished = False  # the current run's DryRunFinished has arrived
        self._closing = False
        self._tracker = ProgressTracker()
        self._workdir: Path | None = None
        self.summary: DryRunSummary | None = None

        self.setWindowTitle(f"Test the command of {service_name} on a local workspace")
        self.setMinimumSize(760, 560)
        fixed = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)

        command_label = QLabel(f"Command of <b>{html.escape(service_name)}</b>:")
        self.command_view = QLabel(service_command.command)
        self.command_view.setFont(fixed)
        self.command_view.setWordWrap(True)
        self.command_view.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.workspace_label = QLabel()
        self.workspace_label.setWordWrap(True)
        self.choose_button = QPushButton("&Choose workspace…")
        self.choose_button.clicked.connect(self._choose_workspace)
        workspace_row = QHBoxLayout()
        workspace_row.addWidget(self.workspace_label, 1)
        workspace_row.addWidget(self.choose_button)

        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)

        self.messages = QListWidget()
        self.messages.setAccessibleName("Messages and attachments")
        self.output = QPlainTextEdit()
        self.output.setReadOnly(True)
        self.output.setFont(fixed)
        self.output.setMaximumBlockCount(_MAX_OUTPUT_BLOCKS)
        self.output.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.output.setAccessibleName("Command output")
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(_titled("Messages and attachments", self.messages))
        splitter.addWidget(_titled("Output (the whole of it is in the log file)", self.output))
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 3)

        self.outcome_label = QLabel()
        self.outcome_label.setWordWrap(True)
        self.outcome_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.run_button = QPushButton("&Run")
        self.run_button.clicked.connect(self.start_run)
        self.stop_button = QPushButton("&Stop")
        self.stop_button.clicked.connect(lambda: self.stop("stopped by you"))
        self.open_workdir_button = QPushButton("&Open work dir")
        self.open_workdir_button.clicked.connect(self._open_workdir)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.reject)
        # A QAction rather than the button's shortcut, as everywhere in the console (a
        # button's setText() drops its shortcut).
        close_action = QAction("Close", self)
        close_action.setShortcut(QKeySequence.StandardKey.Close)
        close_action.triggered.connect(self.reject)
        self.addAction(close_action)
        buttons = QHBoxLayout()
        for button in (self.run_button, self.stop_button, self.open_workdir_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.close_button)

        layout = QVBoxLayout(self)
        layout.addWidget(command_label)
        layout.addWidget(self.command_view)
        layout.addLayout(workspace_row)
        layout.addWidget(self.status_label)
        layout.addWidget(self.progress_bar)
        layout.addWidget(splitter, 1)
        layout.addWidget(self.outcome_label)
        layout.addLayout(buttons)

        self._timer = QTimer(self)
        self._timer.setInterval(_DRAIN_MS)
        self._timer.timeout.connect(self._drain)
        self._show_workspace()
        self._update_buttons()
        self.run_button.setDefault(True)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self._stop_before_quit)

    # -- public API -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True from Run until the run has ended and its threads are gone."""
        return self._run is not None and not (self._finished and not self._run.alive)

    @property
    def workspace(self) -> Path | None:
        return self._workspace

    @property
    def workdir(self) -> Path | None:
        """The current (or last) run's work dir."""
        return self._workdir

    @property
    def pid(self) -> int | None:
        """The running command's pid (for tests and diagnostics)."""
        return self._run.pid if self._run is not None else None

    @property
    def cleaning_up(self) -> bool:
        """True while the work dirs of closed-over runs are being removed."""
        return self._cleanup is not None and self._cleanup.is_alive()

    def set_workspace(self, workspace: Path) -> None:
        self._workspace = Path(workspace)
        self._show_workspace()
        self._update_buttons()

    def _state_key(self) -> str:
        service = self._service_hash or self._command.key or self._service_name
        return f"workspace/{service}"

    def _remembered_workspace(self) -> Path | None:
        value = _state().value(self._state_key())
        # Only a path: whether the file still exists shows when it runs (no disk access
        # on the Qt thread to check it here).
        return Path(value) if isinstance(value, str) and value else None

    def _remember_workspace(self) -> None:
        if self._workspace is not None:
            state = _state()
            state.setValue(self._state_key(), str(self._workspace))
            state.sync()

    def choose_workspace_path(self) -> Path | None:
        """Ask for an .itksnap file; tests replace this method."""
        start = str(self._workspace.parent) if self._workspace else ""
        name, _ = QFileDialog.getOpenFileName(
            self, "Choose an ITK-SNAP workspace", start,
            "ITK-SNAP workspaces (*.itksnap);;All files (*)")
        return Path(name) if name else None

    def start_run(self) -> None:
        """Run the command on a fresh copy of the workspace."""
        if self.running or self._workspace is None:
            return
        self._reset_views()
        self._run = DryRun(self._workspace, self._command, self._service_name,
                           service_hash=self._service_hash, root=self._work_root,
                           grace_period=self._grace)
        self._finished = False
        self._remember_workspace()
        self.status_label.setText("Copying the workspace into a fresh work dir…")
        self._run.start()
        self._timer.start()
        self._update_buttons()

    def stop(self, reason: str = "stopped by you") -> None:
        """Stop the running command; the outcome arrives as usual."""
        if self.running and self._run is not None and not self._run.stopping:
            self._run.stop(reason)
            self.status_label.setText("Stopping the command…")
            self._update_buttons()

    def reject(self) -> None:  # Close button, Escape and the window's close box
        if self.running:
            # Close once the command and its threads are gone; _drain finishes the job.
            self._closing = True
            self.stop("the dry-run window was closed")
            return
        self._timer.stop()
        self._remove_workdirs()
        super().reject()

    def _remove_workdirs(self) -> None:
        made, self._made = self._made, []
        if made:
            self._cleanup = threading.Thread(target=_remove_dirs, args=(made,),
                                             name="dry-run-cleanup", daemon=True)
            self._cleanup.start()

    def _stop_before_quit(self) -> None:
        # The command runs in a session of its own: left alone, it would outlive the console.
        # Blocking is fine here, the event loop is ending anyway.
        if self._run is not None and self._run.alive:
            self._run.stop("the console quit")
            self._run.join(self._grace + 5)
        made, self._made = self._made, []
        _remove_dirs(made)

    # -- running ----------------------------------------------------------------------------
    def _reset_views(self) -> None:
        self._tracker = ProgressTracker()
        self.progress_bar.setValue(0)
        self.messages.clear()
        self.output.clear()
        self.outcome_label.clear()
        self.summary = None
        self._workdir = None

    def _drain(self) -> None:
        run = self._run
        if run is None:
            self._timer.stop()
            return
        lines: list[str] = []
        for event in run.take(_MAX_EVENTS_PER_TICK):
            if isinstance(event, OutputReport):
                lines.extend(text for _stream, text in event.lines)
                if event.skipped:
                    lines.append(f"[… {event.skipped} lines not shown here; all are in the "
                                 "log file]")
            else:
                if lines:
                    self._append_output(lines)
                    lines = []
                self._handle(event)
        if lines:
            self._append_output(lines)
        if self._finished and not run.alive:
            self._timer.stop()
            self._update_buttons()
            if self.summary is not None:
                self.run_finished.emit(self.summary)
            if self._closing:
                self._closing = False
                self._remove_workdirs()
                super().reject()

    def _append_output(self, lines: list[str]) -> None:
        if len(lines) > _MAX_OUTPUT_BLOCKS:
            # Only the last blocks would survive the block limit anyway.
            dropped = len(lines) - _MAX_OUTPUT_BLOCKS
            lines = [f"[… {dropped} lines not shown here; all are in the log file]",
                     *lines[-_MAX_OUTPUT_BLOCKS + 1:]]
        self.output.appendPlainText("\n".join(lines))

    def _add_message(self, text: str, level: str = "info") -> None:
        item = QListWidgetItem(text)
        color = _LEVEL_COLORS.get(level)
        if color is not None:
            item.setForeground(color)
        self.messages.addItem(item)
        self.messages.scrollToBottom()

    def _handle(self, event: DryRunEvent) -> None:
        if isinstance(event, ProgressReport):
            self.progress_bar.setValue(round(self._tracker.update(event) * 100))
        elif isinstance(event, MessageReport):
            self._add_message(f"{event.level}: {event.text}", event.level)
        elif isinstance(event, AttachReport):
            mime = f", {event.mime_type}" if event.mime_type else ""
            self._add_message(f"attachment: {event.description} ({event.path.name}{mime})")
        elif isinstance(event, ProtocolWarning):
            self._add_message(f"note: {event.text}", "warning")
        elif isinstance(event, DryRunPrepared):
            self._workdir = event.paths.workdir
            self._made.append(event.paths.workdir)
            self.status_label.setText(
                f"Running on a copy of the workspace: {event.input_description}, in "
                f"{event.paths.workdir}")
            self.output.appendPlainText("$ " + shlex.join(event.argv))
            self._update_buttons()
        elif isinstance(event, DryRunFinished):
            self._finished = True
            self.summary = event.summary
            if event.summary.workdir is not None:
                self._workdir = event.summary.workdir
                if self._workdir not in self._made:
                    self._made.append(self._workdir)
            if event.summary.started:
                self.status_label.setText("Finished.")
            else:
                self.status_label.setText("The command did not start; see below.")
            text = event.summary.text
            if event.summary.workdir is not None:
                text += "\nThe work dir is removed when this window closes."
            self.outcome_label.setText(text)
            if event.summary.would_succeed:
                # As the engine does on success; also, a hook report read late may have
                # overwritten a later stdout one (each channel is in order, not the two).
                self.progress_bar.setValue(100)
            color = "#1a7f1a" if event.summary.would_succeed else "#b00000"
            self.outcome_label.setStyleSheet(f"color: {color};")

    # -- the rest ---------------------------------------------------------------------------
    def _choose_workspace(self) -> None:
        chosen = self.choose_workspace_path()
        if chosen is not None:
            self.set_workspace(chosen)
            self._remember_workspace()

    def _open_workdir(self) -> None:
        if self._workdir is None:
            return
        # False when there is no file manager: then show the path, to copy.
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(self._workdir))):
            self.show_path(str(self._workdir))

    def show_path(self, path: str) -> None:
        """Show a work dir no file manager could open, to select and copy (opened, not
        exec'd: no nested event loop)."""
        self.path_dialog = show_copyable(
            self, "Open work dir", "No file manager could open the work dir. Its path (removed "
            "when this window closes):", path)

    def _show_workspace(self) -> None:
        if self._workspace is None:
            self.workspace_label.setText("No workspace yet: choose an ITK-SNAP workspace "
                                         "(.itksnap) to run the command on.")
        else:
            self.workspace_label.setText(f"Workspace: {self._workspace}")

    def _update_buttons(self) -> None:
        running = self.running
        stopping = running and self._run is not None and self._run.stopping
        self.run_button.setEnabled(not running and self._workspace is not None)
        self.choose_button.setEnabled(not running)
        self.stop_button.setEnabled(running and not stopping)
        self.open_workdir_button.setEnabled(self._workdir is not None)


def _titled(title: str, widget: QWidget) -> QWidget:
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    label = QLabel(title)
    label.setBuddy(widget)
    layout.addWidget(label)
    layout.addWidget(widget)
    return box
