"""This console's tickets, current and past, with the triage actions."""

from __future__ import annotations

import shutil

from PySide6.QtCore import QItemSelectionModel, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QFont, QFontMetrics, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QPushButton,
    QStyle,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from dss_console.engine.events import JobSnapshot
from dss_console.engine.states import JobState
from dss_console.gui.jobs_model import (
    V6_COLUMNS,
    Column,
    JobFilterProxy,
    JobTableModel,
    ProgressDelegate,
)
from dss_console.v6.audit import is_v6_job

ACTIVE = {JobState.CLAIMED, JobState.BLOCKED, JobState.DOWNLOADING, JobState.RUNNING,
          JobState.UPLOADING}
# Retry run applies to these (a blocked job runs by itself once its command can start).
RETRYABLE = {JobState.FAILED, JobState.CANCELLED, JobState.INTERRUPTED}
# A blocked job waits for the operator (fix the command or fail it): it needs attention.
ATTENTION = {*RETRYABLE, JobState.BLOCKED}
STATE_FILTERS: list[tuple[str, set[JobState] | None]] = [
    ("All tickets", None),
    ("In progress", ACTIVE),
    ("Waiting to run", {JobState.CLAIMED, JobState.BLOCKED, JobState.INTERRUPTED}),
    ("Running", {JobState.DOWNLOADING, JobState.RUNNING, JobState.UPLOADING}),
    ("Needs attention", ATTENTION),
    ("Succeeded", {JobState.SUCCEEDED}),
    # Cancelled tickets are failed on the server: the user sees a failure either way.
    ("Failed", {JobState.FAILED, JobState.CANCELLED}),
]

SERVICE_COLUMN_MAX = 280  # px; a longer name is elided (the full one is in its tooltip)

# action name, button text, shortcut, tooltip
ACTIONS = [
    ("run", "Run", "Ctrl+R", "Run the service command on this ticket"),
    ("cancel", "Cancel", "Ctrl+K", "Stop the command and fail the ticket as cancelled"),
    ("fail", "Fail…", "Ctrl+Shift+F", "Fail the ticket with a message for the user"),
    ("upload", "Upload result…", "Ctrl+U", "Upload a result workspace from disk and mark the "
                                           "ticket a success"),
    ("retry", "Retry run", "Ctrl+Shift+R", "Run the command again from a clean work dir"),
    ("workdir", "Open work dir", "Ctrl+O", "Open the ticket's work dir"),
    ("itksnap", "Open in ITK-SNAP", "Ctrl+I", "Open the input workspace in ITK-SNAP"),
    ("copy", "Copy id", "Ctrl+Shift+C", "Copy the ticket id"),
]


# A vantage6 node's words for what differs (see set_source_kind).
V6_TOOLTIPS = {
    "run": "Run the image's command on this run",
    "cancel": "Stop the command and fail the run with your reason (vantage6 has no "
              "cancelled state: the researcher sees a failed run)",
    "fail": "Fail the run with a reason the researcher reads in its log",
    "retry": "Run the command again from a clean work dir (only while the run is still open "
             "on the server)",
    "workdir": "Open the run's work dir",
    "copy": "Copy the run id",
}
# What several selected tickets can get at once (one question, one reason for all).
BATCH_ACTIONS = ("retry", "fail", "cancel")
V6_HIDDEN_ACTIONS = ("upload", "itksnap")  # a run's result goes with its end; no workspace
NOT_AGAIN = ("Retry run is not possible: the run ended on the server, and a finished "
             "vantage6 run cannot run again")


def v6_retry_possible(job: JobSnapshot) -> bool:
    """Only a run still open on the server can run again: interrupted here, or failed
    here with its end not yet delivered."""
    return job.state is JobState.INTERRUPTED or job.owed > 0


def action_tooltip(name: str, job: JobSnapshot | None) -> str | None:
    """A tooltip that says why an action is off for this job, when the state alone does not
    tell; None keeps the action's usual tooltip."""
    if job is None:
        return None
    if name == "retry" and job.not_retryable and job.state in RETRYABLE:
        return f"Retry run is not possible: {job.not_retryable}"
    if name == "retry" and job.state in RETRYABLE and is_v6_job(job) \
            and not v6_retry_possible(job):
        return NOT_AGAIN
    if name == "run" and job.state is JobState.BLOCKED:
        return ("The command cannot start; the ticket runs by itself as soon as it can "
                "(fix the service's command in Settings…), or Fail… it")
    return None


def action_enabled(name: str, job: JobSnapshot | None, busy: bool = False) -> bool:
    """Whether an action makes sense for a job in its current state."""
    if job is None:
        return False
    state = job.state
    if name == "run":
        return state in (JobState.CLAIMED, JobState.INTERRUPTED) and not busy
    if name in ("cancel", "fail"):
        # A failed or cancelled ticket is already failed on the server: failing it again
        # would only add a second failure to the user's log.
        return not state.is_terminal
    if name in V6_HIDDEN_ACTIONS and is_v6_job(job):
        return False
    if name == "upload":
        return state not in (JobState.SUCCEEDED, JobState.UPLOADING) and not busy
    if name == "retry":
        return state in RETRYABLE and not busy and not job.not_retryable \
            and (not is_v6_job(job) or v6_retry_possible(job))
    if name == "itksnap":
        return job.inputs_ready and shutil.which("itksnap") is not None
    return True


class QueuePane(QWidget):
    currentJobChanged = Signal(object)  # JobSnapshot | None
    actionRequested = Signal(str, object)  # action name, JobSnapshot
    batchRequested = Signal(str, list)  # action name (BATCH_ACTIONS), [JobSnapshot, ...]

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = JobTableModel(self)
        self.proxy = JobFilterProxy(self)
        self.proxy.setSourceModel(self.model)
        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setItemDelegateForColumn(3, ProgressDelegate(self.view))
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(0, Qt.SortOrder.DescendingOrder)
        self.view.verticalHeader().setVisible(False)
        self.view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.view.horizontalHeader().setStretchLastSection(True)
        self.view.setAlternatingRowColors(True)
        # One line per ticket: a long cell ("SLURM 18339 · RUNNING on gpu-node07") is elided
        # in a narrow window (its tooltip has it all) instead of doubling its row's height.
        self.view.setWordWrap(False)

        self.state_filter = QComboBox()
        for label, _states in STATE_FILTERS:
            self.state_filter.addItem(label)
        self.text_filter = QLineEdit()
        self.text_filter.setPlaceholderText(
            "Filter: ticket, service, instance, reason, SLURM job or node")
        self.text_filter.setClearButtonEnabled(True)
        filters = QHBoxLayout()
        filters.addWidget(self.state_filter)
        filters.addWidget(self.text_filter, 1)

        self.buttons: dict[str, QPushButton] = {}
        self.actions_: dict[str, QAction] = {}
        self._tooltips: dict[str, str] = {}
        buttons = QHBoxLayout()
        for name, text, shortcut, tip in ACTIONS:
            button = QPushButton(text)
            self._tooltips[name] = f"{tip} ({shortcut})"
            button.setToolTip(self._tooltips[name])
            button.clicked.connect(lambda _=False, n=name: self.request(n))
            action = QAction(text, self)
            action.setShortcut(QKeySequence(shortcut))
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            action.triggered.connect(lambda _=False, n=name: self.request(n))
            self.addAction(action)
            self.buttons[name] = button
            self.actions_[name] = action
            buttons.addWidget(button)
        buttons.addStretch(1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(filters)
        layout.addWidget(self.view, 1)
        layout.addLayout(buttons)

        self._busy: set[int] = set()
        self._fitted = False
        for column in V6_COLUMNS:  # until a vantage6 node logs in
            self.view.setColumnHidden(column, True)
        self.state_filter.currentIndexChanged.connect(self._state_filter_changed)
        self.text_filter.textChanged.connect(self.proxy.set_text)
        self.view.selectionModel().currentRowChanged.connect(lambda *_: self._current_changed())
        self.view.selectionModel().selectionChanged.connect(lambda *_: self._update_actions())
        self._elapsed_timer = QTimer(self)
        self._elapsed_timer.setInterval(1000)
        self._elapsed_timer.timeout.connect(self.model.tick)
        self._elapsed_timer.start()
        self._update_actions()

    # -- content ----------------------------------------------------------------------------
    def set_source_kind(self, kind: str) -> None:
        """A vantage6 node's runs (task, who asked, databases; no upload, no ITK-SNAP) or a
        DSS server's tickets."""
        v6 = kind == "v6"
        self.model.set_source_kind(kind)
        for column in V6_COLUMNS:
            self.view.setColumnHidden(column, not v6)
        # One worker per node: the instance says nothing there, and the room is the task's.
        self.view.setColumnHidden(Column.INSTANCE, v6)
        for name in V6_HIDDEN_ACTIONS:
            self.buttons[name].setVisible(not v6)
        for name, _text, shortcut, tip in ACTIONS:
            self._tooltips[name] = f"{V6_TOOLTIPS.get(name, tip) if v6 else tip} ({shortcut})"
        self.state_filter.setItemText(0, "All runs" if v6 else STATE_FILTERS[0][0])
        self.text_filter.setPlaceholderText(
            "Filter: run, task, image, organization, database, reason" if v6 else
            "Filter: ticket, service, instance, reason, SLURM job or node")
        self._fitted = False
        self._update_actions()

    def set_jobs(self, jobs: list[JobSnapshot]) -> None:
        self.model.set_jobs(jobs)
        self._fit_columns()
        self._update_actions()

    def _fit_columns(self) -> None:
        # Not the last column (Runs on): it stretches to the view's spare width whatever its
        # contents, and measuring it would cost a first load of 10,000 jobs another
        # thousand rows' worth of size hints.
        for column in Column:
            if column is not Column.RUNS_ON:
                self.view.resizeColumnToContents(column)
        # Fitted to the rows of the moment, the State column would cut a later, longer
        # state ("claimed" now, "succee…" later): make room for every state word.
        needed = self._state_column_width()
        if self.view.columnWidth(Column.STATE) < needed:
            self.view.setColumnWidth(Column.STATE, needed)
        self._fitted = self.model.rowCount() > 0

    def _widen_service_column(self) -> None:
        """A ticket of a service with a longer name than those fitted: widen the column
        (never narrow it: the operator may have widened it), within reason."""
        needed = min(self.view.sizeHintForColumn(Column.SERVICE), SERVICE_COLUMN_MAX)
        if self.view.columnWidth(Column.SERVICE) < needed:
            self.view.setColumnWidth(Column.SERVICE, needed)

    def _state_column_width(self) -> int:
        bold = QFont(self.view.font())
        bold.setBold(True)  # a blocked job's state is bold
        metrics = QFontMetrics(bold)
        text = max(metrics.horizontalAdvance(state.value) for state in JobState)
        # The cell's own margins, as the view's size hint counts them.
        margin = 2 * (self.view.style().pixelMetric(QStyle.PixelMetric.PM_FocusFrameHMargin,
                                                     None, self.view) + 1)
        return max(text + margin + 8, self.view.horizontalHeader().sectionSizeHint(
            Column.STATE))

    def update_jobs(self, jobs: list[JobSnapshot]) -> None:
        current = self.current_job()
        rows = self.model.rowCount()
        self.model.update_jobs(jobs)
        if not self._fitted:  # once, when the first tickets arrive; then the user's widths
            self._fit_columns()
        elif self.model.rowCount() > rows:
            self._widen_service_column()
        if current is not None and any(j.job_id == current.job_id for j in jobs):
            self._current_changed()
        else:
            self._update_actions()

    def set_busy(self, job_ids: set[int]) -> None:
        """Jobs with a live execution (Run/Retry/Upload are refused for them)."""
        self._busy = set(job_ids)
        self._update_actions()

    def stop(self) -> None:
        self._elapsed_timer.stop()

    # -- selection --------------------------------------------------------------------------
    def current_job(self) -> JobSnapshot | None:
        index = self.view.selectionModel().currentIndex()
        if not index.isValid():
            return None
        source = self.proxy.mapToSource(index)
        return self.model.job_at(source.row())

    def selected_jobs(self) -> list[JobSnapshot]:
        """The selected rows' jobs, in the table's order."""
        rows = sorted(self.view.selectionModel().selectedRows(), key=lambda i: i.row())
        jobs = (self.model.job_at(self.proxy.mapToSource(index).row()) for index in rows)
        return [job for job in jobs if job is not None]

    def _batch(self, name: str) -> list[JobSnapshot] | None:
        """With several rows selected: the selected jobs `name` applies to (None with one)."""
        selected = self.selected_jobs()
        if len(selected) < 2:
            return None
        return [job for job in selected
                if action_enabled(name, job, job.job_id in self._busy)]

    def select_job(self, job_id: int) -> bool:
        row = self.model.row_of(job_id)
        if row is None:
            return False
        index = self.proxy.mapFromSource(self.model.index(row, 0))
        if not index.isValid():
            self.state_filter.setCurrentIndex(0)
            self.text_filter.clear()
            index = self.proxy.mapFromSource(self.model.index(row, 0))
        self.view.selectionModel().setCurrentIndex(
            index, QItemSelectionModel.SelectionFlag.ClearAndSelect
            | QItemSelectionModel.SelectionFlag.Rows)
        self.view.scrollTo(index)
        return True

    def _current_changed(self) -> None:
        self._update_actions()
        self.currentJobChanged.emit(self.current_job())

    def _state_filter_changed(self, index: int) -> None:
        self.proxy.set_states(STATE_FILTERS[index][1])

    def _update_actions(self) -> None:
        job = self.current_job()
        busy = job is not None and job.job_id in self._busy
        for name, button in self.buttons.items():
            batch = self._batch(name)
            if batch is None:
                enabled = action_enabled(name, job, busy)
                tip = action_tooltip(name, job) or self._tooltips[name]
            else:
                # Several rows: only what applies to many at once, to those it suits.
                enabled = name in BATCH_ACTIONS and bool(batch)
                tip = (f"{self._tooltips[name]}: {len(batch)} of the selected"
                       if name in BATCH_ACTIONS else "Select one row for this")
            button.setEnabled(enabled)
            self.actions_[name].setEnabled(enabled)
            button.setToolTip(tip)

    def request(self, name: str) -> None:
        batch = self._batch(name)
        if batch is not None:
            if name in BATCH_ACTIONS and batch:
                self.batchRequested.emit(name, batch)
            return
        job = self.current_job()
        if job is not None and action_enabled(name, job, job.job_id in self._busy):
            self.actionRequested.emit(name, job)
