"""One ticket in detail: live output, what was sent to the server, the input workspace."""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Collection
from pathlib import Path

from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QPalette
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from dss_console.core.presentation import Presentation
from dss_console.engine.events import JobSnapshot
from dss_console.engine.journal import OutboxItem
from dss_console.engine.states import JobState
from dss_console.gui.approval_pane import ApprovalPane
from dss_console.gui.jobs_model import (
    DEFAULT_PRESENTATION,
    cluster_clock_ticking,
    cluster_times,
    state_words,
)
from dss_console.gui.logview import LogView
from dss_console.gui.presentations import job_summary
from dss_console.workspace import Workspace

STATE_WORDS = {
    "pending": "waiting to be sent",
    "delivered": "delivered",
    "superseded": "replaced by a newer value",
    "skipped": "not needed",
    "dropped": "dropped",
    "failed": "refused by the server",
}
STATE_COLOURS = {"pending": "#b26a00", "failed": "#c62828", "dropped": "#c62828"}


def format_span(seconds: float) -> str:
    """A duration in words for a sentence: '14 s', '2 min 3 s', '1 h 5 min', '2 d 3 h'."""
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def cluster_clock_text(job: JobSnapshot, now: float | None = None) -> str:
    """'pending 2 min 3 s', 'pending 2 min 3 s, running 14 s' (or 'ran' once ended, 'did
    not run' for a job that ended in the queue); '' before the job is submitted."""
    pending, running = cluster_times(job, now)
    if pending is None:
        return ""
    text = f"pending {format_span(pending)}"
    if running is not None:
        verb = "running" if cluster_clock_ticking(job) else "ran"
        text += f", {verb} {format_span(running)}"
    elif job.state.is_terminal:
        text += ", did not run"
    return text


def cluster_summary_html(job: JobSnapshot) -> str:
    """'Runs on SLURM job 1234 · PENDING (Resources)', '… · RUNNING on node7': what the
    executor says in full, what runs the command in bold."""
    execution = job.execution
    text = job.executor if execution is None else execution.summary or execution.label
    what, sep, rest = text.partition(" · ")
    return f"Runs on <b>{html.escape(what)}</b>" + (f" · {html.escape(rest)}" if sep else "")


def job_log_file(job: JobSnapshot) -> Path | None:
    """This attempt's output log, where the engine said it keeps it."""
    return Path(job.view.log_file) if job.view is not None and job.view.log_file else None


BLOCKED_STYLE = ("QFrame#blockedBanner { background: #fff1e5; border: 1px solid #bc4c00; "
                 "border-radius: 4px; } QFrame#blockedBanner QLabel { color: #5c2400; }")
BLOCKED_STYLE_DARK = ("QFrame#blockedBanner { background: #3d1f00; border: 1px solid #ffa657;"
                      " border-radius: 4px; } QFrame#blockedBanner QLabel { color: #ffdcc2; }")


class DetailPane(QWidget):
    # The blocked banner's "Edit the command…": open Settings on this service (hash).
    editCommandRequested = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.job: JobSnapshot | None = None
        self.presentation = DEFAULT_PRESENTATION
        self.header = QLabel(self.presentation.text("select_job"))
        self.header.setWordWrap(True)
        self.header.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # A blocked job waits for the operator, not for the server: say so where they look,
        # with what to do, not only as a state word in the table.
        self.blocked_banner = QFrame()
        self.blocked_banner.setObjectName("blockedBanner")
        self.blocked_text = QLabel()
        self.blocked_text.setWordWrap(True)
        self.blocked_text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.blocked_edit = QPushButton("Edit the command…")
        self.blocked_edit.setToolTip("Open Settings on this service's command")
        self.blocked_edit.clicked.connect(self._edit_clicked)
        banner_layout = QHBoxLayout(self.blocked_banner)
        banner_layout.addWidget(self.blocked_text, 1)
        banner_layout.addWidget(self.blocked_edit, 0, Qt.AlignmentFlag.AlignTop)
        self.blocked_banner.setVisible(False)
        # Where a cluster job stands: its id (selectable, for scontrol/sacct), its state in
        # SLURM's words and its node; the clock beside it ticks, in a label of its own so the
        # ticking does not clear a selection of the job id.
        self.cluster_label = QLabel()
        self.cluster_label.setTextFormat(Qt.TextFormat.RichText)
        self.cluster_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.cluster_clock = QLabel()
        self.cluster_clock.setToolTip("Time in the cluster's queue, then on its node")
        # A long reason from SLURM ("ReqNodeNotAvail, UnavailableNodes:gpu[01-12]") must not
        # set the pane's minimum width: it is cut at the edge, and its tooltip has it all.
        for label in (self.cluster_label, self.cluster_clock):
            label.setMinimumWidth(1)
        self.cluster_row = QWidget()
        cluster_layout = QHBoxLayout(self.cluster_row)
        cluster_layout.setContentsMargins(0, 0, 0, 0)
        cluster_layout.setSpacing(0)  # the clock's text starts with its own " · "
        cluster_layout.addWidget(self.cluster_label)
        cluster_layout.addWidget(self.cluster_clock)
        cluster_layout.addStretch(1)
        self.cluster_row.setVisible(False)
        self.cluster_timer = QTimer(self)
        self.cluster_timer.setInterval(1000)
        self.cluster_timer.timeout.connect(self._tick_cluster_clock)
        # What "now" is for the clock; a test sets its own.
        self.clock: Callable[[], float] = time.time
        self.log = LogView()
        self.calls = QTreeWidget()
        self.calls.setHeaderLabels(["Queued", "Call", "Delivery", "Note"])
        self.calls.setRootIsDecorated(False)
        self.calls.setAlternatingRowColors(True)
        self.inputs = QTreeWidget()
        self.inputs.setHeaderLabels(["Layer", "Role", "Nickname", "Tags", "File"])
        self.inputs.setRootIsDecorated(False)
        self.inputs_note = QLabel()
        self.inputs_note.setWordWrap(True)
        inputs_page = QWidget()
        inputs_layout = QVBoxLayout(inputs_page)
        inputs_layout.addWidget(self.inputs_note)
        inputs_layout.addWidget(self.inputs, 1)

        # A job waiting at the operator's gate: what it is and the decision's buttons
        # (filled by gui/gate_actions.py); the tab shows only while a job waits.
        self.approval = ApprovalPane()

        self.tabs = QTabWidget()
        self.tabs.addTab(self.log, "Output")
        self.tabs.addTab(self.calls, "Sent to server")
        self.tabs.addTab(inputs_page, self.presentation.text("inputs_tab"))
        self.inputs_tab = self.tabs.indexOf(inputs_page)
        self.gate_tab = self.tabs.addTab(self.approval, "Approval")
        self.tabs.setTabVisible(self.gate_tab, False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.header)
        layout.addWidget(self.cluster_row)
        layout.addWidget(self.blocked_banner)
        layout.addWidget(self.tabs, 1)
        self._style_banner()

    # -- the selected job -------------------------------------------------------------------
    def show_job(self, job: JobSnapshot | None) -> None:
        previous = self.job
        self.job = job
        self.set_header(job)
        if job is None:
            self.log.clear()
            self.log.set_log_file(None)
            self.calls.clear()
            self.inputs.clear()
            self.inputs_note.setText("")
            return
        if previous is None or previous.job_id != job.job_id or previous.attempt != job.attempt:
            self.log.clear()
            path = job_log_file(job)
            self.log.set_log_file(path)
            if path is not None:
                # Read (or found missing) on the log view's worker thread: the Qt thread
                # never waits on the disk, a slow network mount included.
                self.log.load_tail(path, missing_ok=True)

    def show_gate_tab(self, shown: bool, *, front: bool = False) -> None:
        """The gate tab, titled for the selected job's gate; ``front``: make it current (the
        job started waiting while selected)."""
        job = self.job
        if shown and job is not None:
            key, default = (("approval_tab", "Approval") if job.state is
                            JobState.AWAITING_APPROVAL else ("release_tab", "Review result"))
            self.tabs.setTabText(self.gate_tab, self.presentation.text(key) or default)
        self.tabs.setTabVisible(self.gate_tab, shown)
        if shown and front:
            self.tabs.setCurrentIndex(self.gate_tab)

    def set_header(self, job: JobSnapshot | None) -> None:
        self._show_blocked(job)
        self._show_cluster(job)
        if job is None:
            self.header.setText(self.presentation.text("select_job"))
            return
        noun = self.presentation.word_fields()["Job"]
        parts = [f"<b>{noun} {job.ticket_id}</b> · "
                 f"{html.escape(job.service_name or job.service_hash[:10])}"
                 f" · {state_words(job.state)} · {job.progress * 100:.0f}%"]
        limits = job.view.limits if job.view is not None else ""
        if limits:  # how its command is (or was) contained, in its executor's words
            parts.append(f"<br>Limits: {html.escape(limits)}")
        if job.reason and job.state is not JobState.BLOCKED:  # the banner says it
            parts.append(f"<br>{html.escape(job.reason)}")
        if job.owed:
            parts.append(f"<br>{job.owed} server call(s) waiting to be delivered")
        if job.not_retryable and job.state.is_terminal:
            parts.append(f"<br>Retry run is not possible: {html.escape(job.not_retryable)}")
        self.header.setText("".join(parts))

    def _show_blocked(self, job: JobSnapshot | None) -> None:
        blocked = job is not None and job.state is JobState.BLOCKED
        if blocked:
            assert job is not None
            reason = job.reason or ""
            for prefix in ("the command cannot start: ", "the command could not start: "):
                if reason.startswith(prefix):  # the banner's first words say it already
                    reason = reason[len(prefix):]
            detail = f" ({html.escape(reason)})" if reason else ""
            self.blocked_text.setText(
                "<b>Blocked: the service's command cannot start</b>"
                f"{detail}.<br>Nothing was sent to the user; the ticket stays claimed. Fix the "
                "service's command in Settings… (or the program it names); the ticket runs as "
                "soon as its command can start. Or Fail… it with a message for the user.")
        self.blocked_banner.setVisible(blocked)

    def _show_cluster(self, job: JobSnapshot | None) -> None:
        on_cluster = job is not None and job.execution is not None and job.execution.queued
        self.cluster_row.setVisible(on_cluster)
        if not on_cluster:
            self.cluster_timer.stop()
            return
        assert job is not None
        # QLabel ignores an unchanged text: a selection of the job id survives updates.
        summary = cluster_summary_html(job)
        self.cluster_label.setText(summary)
        self.cluster_label.setToolTip(summary)
        self._tick_cluster_clock()
        if cluster_clock_ticking(job):
            if not self.cluster_timer.isActive():
                self.cluster_timer.start()
        else:
            self.cluster_timer.stop()

    def _tick_cluster_clock(self) -> None:
        job = self.job
        text = "" if job is None else cluster_clock_text(job, self.clock())
        self.cluster_clock.setText(f" · {text}" if text else "")

    def _edit_clicked(self) -> None:
        if self.job is not None:
            self.editCommandRequested.emit(self.job.service_hash)

    def _style_banner(self) -> None:
        dark = self.palette().color(QPalette.ColorRole.Base).lightness() < 128
        self.blocked_banner.setStyleSheet(BLOCKED_STYLE_DARK if dark else BLOCKED_STYLE)

    def changeEvent(self, event: QEvent) -> None:
        if event.type() == QEvent.Type.PaletteChange:
            self._style_banner()
        super().changeEvent(event)

    def update_job(self, job: JobSnapshot) -> None:
        if self.job is not None and job.job_id == self.job.job_id:
            if job.attempt != self.job.attempt:
                self.show_job(job)
            else:
                self.job = job
                self.set_header(job)

    def append_output(self, job_id: int, lines: list[tuple[str, str]], skipped: int) -> None:
        if self.job is None or job_id != self.job.job_id:
            return
        if skipped:
            self.log.mark_partial()  # a find that fails may still match in the full log
            self.log.append_note("info", f"{skipped} lines not shown live (the view could not "
                                         "keep up); all are in the full log")
        self.log.append_lines(lines)

    def append_message(self, job_id: int, level: str, text: str, local: bool) -> None:
        if self.job is None or job_id != self.job.job_id:
            return
        self.log.append_note(level, text if not local else f"(console) {text}")

    def set_calls(self, job_id: int, items: list[OutboxItem]) -> None:
        if self.job is None or job_id != self.job.job_id:
            return
        self.calls.clear()
        for item in items:
            row = QTreeWidgetItem([time.strftime("%H:%M:%S", time.localtime(item.created_at)),
                                   item.summary, STATE_WORDS.get(item.state, item.state),
                                   item.last_error or ""])
            colour = STATE_COLOURS.get(item.state)
            if colour:
                row.setForeground(2, QBrush(QColor(colour)))
            if item.last_error:
                row.setToolTip(3, item.last_error)
            self.calls.addTopLevelItem(row)
        for column in range(3):
            self.calls.resizeColumnToContents(column)

    def apply_presentation(self, presentation: Presentation) -> None:
        """The source's words; inputs that are not a workspace (a vantage6 run's input is
        one blob) show as the engine's summary instead of a workspace's layers."""
        self.presentation = presentation
        summary = presentation.inputs_view == "summary"
        self.tabs.setTabText(self.inputs_tab, presentation.text("inputs_tab"))
        self.inputs.setVisible(not summary)
        self.inputs_note.setTextFormat(Qt.TextFormat.RichText)
        self.inputs_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.inputs_note.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        if self.job is None:
            self.header.setText(presentation.text("select_job"))

    def set_run_summary(self, job: JobSnapshot) -> None:
        """What the run is, and its input's method and argument names (never their values;
        the engine keeps only names, sizes and a hash)."""
        if self.job is None or job.job_id != self.job.job_id:
            return
        self.inputs.clear()
        self.inputs_note.setText(run_summary_html(job))

    def set_inputs(self, job_id: int, workspace: Workspace | None, required: tuple[str, ...],
                   problem: str | None = None, missing_files: Collection[Path] = ()) -> None:
        """``missing_files``: the workspace's layer files found missing (looked up off the Qt
        thread, where the workspace was read)."""
        if self.job is None or job_id != self.job.job_id:
            return
        self.inputs.clear()
        if workspace is None:
            self.inputs_note.setText(problem or "The inputs have not been downloaded yet.")
            self.approval.show_inputs(self.inputs_note.text(), self.inputs)
            return
        present = {tag for layer in workspace.layers for tag in layer.tags}
        missing = [tag for tag in required if tag not in present]
        if not required:
            note = "The service declares no required tags."
        elif missing:
            note = ("<span style='color:#c62828'>Missing required tag(s): "
                    f"{', '.join(missing)}</span>")
        else:
            note = f"All required tags present: {', '.join(required)}."
        self.inputs_note.setText(f"{workspace.path.name}: {len(workspace.layers)} layer(s). "
                                 f"{note}")
        for layer in workspace.layers:
            row = QTreeWidgetItem([str(layer.index), layer.role, layer.nickname,
                                   ", ".join(layer.tags), str(layer.path)])
            if layer.path in missing_files:
                row.setForeground(4, QBrush(QColor("#c62828")))
                row.setToolTip(4, "file not found")
            self.inputs.addTopLevelItem(row)
        for column in range(4):
            self.inputs.resizeColumnToContents(column)
        self.approval.show_inputs(self.inputs_note.text(), self.inputs)


def run_summary_html(job: JobSnapshot) -> str:
    """The engine's summary of a job's inputs (a vantage6 run's task, requester, databases,
    method and argument names), as a table."""
    rows = job_summary(job)
    if rows is None:
        return ""
    cells = "".join(f"<tr><td style='padding-right:12px'><b>{html.escape(k)}</b></td>"
                    f"<td>{html.escape(v)}</td></tr>" for k, v in rows.fields)
    note = f"<p style='color:gray'>{html.escape(rows.note)}</p>" if rows.note else ""
    return f"<table>{cells}</table>{note}"

