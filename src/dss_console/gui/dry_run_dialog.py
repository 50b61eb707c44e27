"""The dry run's window: run a service's command on a local workspace (gui/dry_run.py does
the work off the Qt thread) and show its progress, messages, output and verdict."""

from __future__ import annotations

import html
import shlex
import shutil
import threading
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

from dss_console.engine.protocol import (
    AttachReport,
    MessageReport,
    OutputReport,
    ProgressReport,
    ProgressTracker,
    ProtocolWarning,
)
from dss_console.engine.settings import ServiceCommand
from dss_console.gui.copyable import show_copyable
from dss_console.gui.dry_run import (
    DryRun,
    DryRunEvent,
    DryRunFinished,
    DryRunPrepared,
    DryRunSummary,
)

__all__ = ["STATE_FILE", "DryRunDialog"]

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
