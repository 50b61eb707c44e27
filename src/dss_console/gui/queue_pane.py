"""This console's tickets, current and past, with the triage actions."""

from __future__ import annotations

import shutil

from PySide6.QtCore import QItemSelectionModel, QPoint, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QFont, QFontMetrics, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QMenu,
    QPushButton,
    QStyle,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from dss_console.core.presentation import GATE_ACTIONS, LOCAL_ACTIONS, Presentation
from dss_console.engine.events import JobSnapshot
from dss_console.engine.states import WAITING, JobState
from dss_console.gui.jobs_model import (
    DEFAULT_PRESENTATION,
    JobFilterProxy,
    JobTableModel,
    ProgressDelegate,
    state_words,
)

ACTIVE = {JobState.CLAIMED, JobState.BLOCKED, JobState.DOWNLOADING, JobState.RUNNING,
          JobState.UPLOADING}
# Retry run applies to these (a blocked job runs by itself once its command can start).
RETRYABLE = {JobState.FAILED, JobState.CANCELLED, JobState.INTERRUPTED}
# A blocked job waits for the operator (fix the command or fail it): it needs attention.
ATTENTION = {*RETRYABLE, JobState.BLOCKED, *WAITING}
# The jobs at a gate (approve, release or reject them): the filter's label counts them.
WAITING_FILTER = "Waiting for you"
STATE_FILTERS: list[tuple[str, set[JobState] | None]] = [
    ("All tickets", None),
    (WAITING_FILTER, set(WAITING)),
    ("In progress", ACTIVE),
    ("Waiting to run", {JobState.CLAIMED, JobState.BLOCKED, JobState.INTERRUPTED}),
    ("Running", {JobState.DOWNLOADING, JobState.RUNNING, JobState.UPLOADING}),
    ("Needs attention", ATTENTION),
    ("Succeeded", {JobState.SUCCEEDED}),
    # Cancelled tickets are failed on the server: the user sees a failure either way.
    ("Failed", {JobState.FAILED, JobState.CANCELLED}),
]

SERVICE_COLUMN_MAX = 280  # px; a longer name is elided (the full one is in its tooltip)

# What several selected tickets can get at once (one question, one reason for all).
BATCH_ACTIONS = ("retry", "fail", "cancel", *GATE_ACTIONS)
GATE_REPLACES = ("run", "retry")  # hidden while the gate's buttons show


def action_tooltip(name: str, job: JobSnapshot | None) -> str | None:
    """Why an engine action is off for this job, as the engine said, when the state alone
    does not tell; None keeps the action's usual tooltip."""
    if job is None or job.view is None:
        return None
    return job.view.unavailable.get(name) or None


def action_enabled(name: str, job: JobSnapshot | None, busy: bool = False,
                   program: str = "") -> bool:
    """Whether an action can be done for this job now: the engine's word for its own
    actions (not while a call for the job is in flight), the window's for its local ones."""
    if job is None:
        return False
    if name == "open_inputs":
        return job.inputs_ready and bool(program) and shutil.which(program) is not None
    if name in LOCAL_ACTIONS:
        return True
    if job.view is None:
        # An engine started by an older version sends no view: its actions stay off until
        # it restarts (the jobs still show and run).
        return False
    if name in ("run", "upload", "retry") and busy:
        return False
    return name not in job.view.unavailable


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
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._context_menu)
        self.context_menu: QMenu | None = None  # the last one shown (tests read it)

        self.state_filter = QComboBox()
        for label, _states in STATE_FILTERS:
            self.state_filter.addItem(label)
        self.text_filter = QLineEdit()
        self.text_filter.setClearButtonEnabled(True)
        filters = QHBoxLayout()
        filters.addWidget(self.state_filter)
        filters.addWidget(self.text_filter, 1)

        self.buttons: dict[str, QPushButton] = {}
        self.actions_: dict[str, QAction] = {}
        self._tooltips: dict[str, str] = {}
        self._programs: dict[str, str] = {}
        self._button_row = QHBoxLayout()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(filters)
        layout.addWidget(self.view, 1)
        layout.addLayout(self._button_row)

        self._busy: set[int] = set()
        self._fitted = False
        self.presentation = DEFAULT_PRESENTATION
        self._progress_delegate = ProgressDelegate(self.view)
        self._progress_column: int | None = None
        self._make_buttons()
        self._apply_words()
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
    def apply_presentation(self, presentation: Presentation) -> None:
        """The source's columns, words and actions (a node's runs: task, who asked,
        databases; no upload, no ITK-SNAP)."""
        if presentation == self.presentation:
            return
        self.presentation = presentation
        self.model.apply_presentation(presentation)
        self._make_buttons()
        self._apply_words()
        self._fitted = False
        self._update_actions()

    def _apply_words(self) -> None:
        p = self.presentation
        if self._progress_column is not None:
            self.view.setItemDelegateForColumn(self._progress_column, None)
        self._progress_column = self.model.column_of("progress")
        self.view.setItemDelegateForColumn(self._progress_column, self._progress_delegate)
        self.state_filter.setItemText(0, p.text("all_jobs") or STATE_FILTERS[0][0])
        self.text_filter.setPlaceholderText(p.text("job_filter"))

    def _make_buttons(self) -> None:
        """One button and one shortcut per action the source offers, in its order."""
        for name, button in self.buttons.items():
            self._button_row.removeWidget(button)
            button.deleteLater()
            self.removeAction(self.actions_[name])
            self.actions_[name].deleteLater()
        while self._button_row.count():  # the stretch
            self._button_row.takeAt(0)
        self.buttons.clear()
        self.actions_.clear()
        self._tooltips.clear()
        self._programs.clear()
        for spec in self.presentation.actions:
            name = spec.name
            button = QPushButton(spec.label)
            self._tooltips[name] = f"{spec.tip} ({spec.shortcut})"
            self._programs[name] = spec.program
            button.setToolTip(self._tooltips[name])
            button.clicked.connect(lambda _=False, n=name: self.request(n))
            action = QAction(spec.label, self)
            action.setShortcut(QKeySequence(spec.shortcut))
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            action.triggered.connect(lambda _=False, n=name: self.request(n))
            self.addAction(action)
            self.buttons[name] = button
            self.actions_[name] = action
            self._button_row.addWidget(button)
        self._button_row.addStretch(1)

    def set_jobs(self, jobs: list[JobSnapshot]) -> None:
        self.model.set_jobs(jobs)
        self._fit_columns()
        self._update_actions()
        self._count_waiting()

    def _count_waiting(self) -> None:
        """"Waiting for you (3)": the filter says how many decisions wait."""
        count = self.model.waiting_count()
        index = next(i for i, (label, _s) in enumerate(STATE_FILTERS)
                     if label == WAITING_FILTER)
        self.state_filter.setItemText(index, f"{WAITING_FILTER} ({count})" if count
                                      else WAITING_FILTER)

    def _fit_columns(self) -> None:
        # Not the last column (Runs on): it stretches to the view's spare width whatever its
        # contents, and measuring it would cost a first load of 10,000 jobs another
        # thousand rows' worth of size hints.
        for column, column_id in enumerate(self.model.column_ids()):
            if column_id != "runs_on":
                self.view.resizeColumnToContents(column)
        # Fitted to the rows of the moment, the State column would cut a later, longer
        # state ("claimed" now, "succee…" later): make room for every state word.
        needed = self._state_column_width()
        state = self.model.column_of("state")
        if self.view.columnWidth(state) < needed:
            self.view.setColumnWidth(state, needed)
        self._fitted = self.model.rowCount() > 0

    def _widen_service_column(self) -> None:
        """A ticket of a service with a longer name than those fitted: widen the column
        (never narrow it: the operator may have widened it), within reason."""
        service = self.model.column_of("service")
        needed = min(self.view.sizeHintForColumn(service), SERVICE_COLUMN_MAX)
        if self.view.columnWidth(service) < needed:
            self.view.setColumnWidth(service, needed)

    def _state_column_width(self) -> int:
        bold = QFont(self.view.font())
        bold.setBold(True)  # a blocked job's state is bold
        metrics = QFontMetrics(bold)
        text = max(metrics.horizontalAdvance(state_words(state)) for state in JobState)
        # The cell's own margins, as the view's size hint counts them.
        margin = 2 * (self.view.style().pixelMetric(QStyle.PixelMetric.PM_FocusFrameHMargin,
                                                     None, self.view) + 1)
        return max(text + margin + 8, self.view.horizontalHeader().sectionSizeHint(
            self.model.column_of("state")))

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
        self._count_waiting()

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
        return [job for job in selected if self._enabled(name, job)]

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
        # The gate's buttons (approve, reject, release) show in place of Run and Retry run
        # while the selected job waits for a decision: the row keeps its width.
        # With several rows selected: while any of them waits (one question for all).
        # Several rows: the gate's buttons while any waits, Run and Retry run unless all do.
        selected = self.selected_jobs() if self._batch(GATE_ACTIONS[0]) is not None else None
        if selected is None:
            deciding = replaced = job is not None and job.state.is_waiting
        else:
            deciding = any(j.state.is_waiting for j in selected)
            replaced = all(j.state.is_waiting for j in selected)
        for name, button in self.buttons.items():
            if name in GATE_ACTIONS:
                button.setVisible(deciding)
            elif name in GATE_REPLACES:
                button.setVisible(not replaced)
            batch = self._batch(name)
            if batch is None:
                enabled = action_enabled(name, job, busy, self._programs.get(name, ""))
                tip = action_tooltip(name, job) or self._tooltips[name]
            else:
                # Several rows: only what applies to many at once, to those it suits.
                enabled = name in BATCH_ACTIONS and bool(batch)
                tip = (f"{self._tooltips[name]}: {len(batch)} of the selected"
                       if name in BATCH_ACTIONS else "Select one row for this")
            button.setEnabled(enabled)
            self.actions_[name].setEnabled(enabled)
            button.setToolTip(tip)

    def menu_actions(self) -> list[QAction]:
        """The right-click menu's actions for the selection, in the buttons' order; while a
        job waits at a gate its decisions come first (Run and Retry run do not apply)."""
        shown = [name for name in self.actions_ if not self.buttons[name].isHidden()]
        shown.sort(key=lambda name: name not in GATE_ACTIONS)
        return [self.actions_[name] for name in shown]

    def _context_menu(self, pos: QPoint) -> None:
        if not self.view.indexAt(pos).isValid():
            return
        menu = QMenu(self)
        for action in self.menu_actions():
            menu.addAction(action)
        if self.context_menu is not None:
            self.context_menu.deleteLater()
        self.context_menu = menu
        menu.popup(self.view.viewport().mapToGlobal(pos))  # not exec(): no nested loop

    def request(self, name: str) -> None:
        batch = self._batch(name)
        if batch is not None:
            if name in BATCH_ACTIONS and batch:
                self.batchRequested.emit(name, batch)
            return
        job = self.current_job()
        if job is not None and self._enabled(name, job):
            self.actionRequested.emit(name, job)

    def _enabled(self, name: str, job: JobSnapshot) -> bool:
        return action_enabled(name, job, job.job_id in self._busy, self._programs.get(name, ""))
