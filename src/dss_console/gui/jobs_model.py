"""The jobs table: one row per job, keyed by job id, updated in place.

Engine snapshots arrive in batches (the bridge drains its queue at up to 30 Hz); a batch
updates the rows it names with one ``dataChanged`` each and appends new jobs with one
insert, never a model reset, so the view keeps its selection, scroll position and sort.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QBrush, QColor, QFont, QGuiApplication, QPainter, QPalette
from PySide6.QtWidgets import (
    QApplication,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionProgressBar,
    QStyleOptionViewItem,
)

from dss_console.core.presentation import ColumnSpec, Presentation
from dss_console.engine.events import JobSnapshot
from dss_console.engine.states import JobState
from dss_console.gui.presentations import default_presentation, job_cells
from dss_console.timefmt import format_claimed, format_elapsed

__all__ = [
    "JobFilterProxy",
    "JobTableModel",
    "ProgressDelegate",
    "cluster_clock_ticking",
    "cluster_times",
    "format_claimed",
    "format_elapsed",
    "format_runs_on",
    "state_words",
]

_Index = QModelIndex | QPersistentModelIndex
_USER = int(Qt.ItemDataRole.UserRole)


# Before the engine says what it serves: the login form's source gives the words.
DEFAULT_PRESENTATION = default_presentation()

# Lifecycle order, so sorting by state groups live jobs before finished ones.
_STATE_ORDER = {state: rank for rank, state in enumerate((
    JobState.AWAITING_APPROVAL, JobState.AWAITING_RELEASE,
    JobState.CLAIMED, JobState.BLOCKED, JobState.DOWNLOADING, JobState.RUNNING,
    JobState.UPLOADING,
    JobState.INTERRUPTED, JobState.FAILED, JobState.CANCELLED, JobState.SUCCEEDED))}

# (light palette, dark palette): mid-tones would be hard to read on one of the two.
_STATE_COLOURS: dict[JobState, tuple[str, str]] = {
    JobState.DOWNLOADING: ("#0b61c4", "#79c0ff"),
    JobState.RUNNING: ("#0b61c4", "#79c0ff"),
    JobState.UPLOADING: ("#0a6e62", "#56d4bc"),
    JobState.SUCCEEDED: ("#1a7f37", "#56d364"),
    JobState.FAILED: ("#c62828", "#ff7b72"),
    JobState.CANCELLED: ("#6e7781", "#8b949e"),
    JobState.INTERRUPTED: ("#9a6700", "#e3b341"),
    # Orange and bold (see data()): the operator has to fix something before it can go on.
    JobState.BLOCKED: ("#bc4c00", "#ffa657"),
    # Purple and bold: a decision of the operator's is wanted (approve, release or reject).
    JobState.AWAITING_APPROVAL: ("#8250df", "#d2a8ff"),
    JobState.AWAITING_RELEASE: ("#8250df", "#d2a8ff"),
}
# The state column's words where the state's own name is not one ("awaiting_approval").
_STATE_WORDS: dict[JobState, str] = {
    JobState.AWAITING_APPROVAL: "awaiting approval",
    JobState.AWAITING_RELEASE: "awaiting release",
}


def state_words(state: JobState) -> str:
    """A state as the window shows it: "running", "awaiting approval"."""
    return _STATE_WORDS.get(state, state.value)


# A cluster job still waiting for the scheduler (or for its controller): the Runs on cell in
# the interrupted state's amber, so a queue that does not move stands out.
_WAITING_COLOURS = _STATE_COLOURS[JobState.INTERRUPTED]
# States that want the operator's attention in the State column: shown bold.
_BOLD_STATES = frozenset({JobState.BLOCKED, JobState.AWAITING_APPROVAL,
                          JobState.AWAITING_RELEASE})

# The fields each core column shows, to narrow a row's dataChanged to the columns that moved;
# a source's own columns (cells) follow its details.
_COLUMN_FIELDS: dict[str, tuple[str, ...]] = {
    "work": ("ticket_id",),
    "service": ("service_name", "service_hash"),
    "state": ("state",),
    "progress": ("progress", "state"),
    "claimed": ("claimed_at",),
    "run_time": ("started_at", "finished_at", "state", "updated_at", "run_started_at"),
    "instance": ("instance",),
    "runs_on": ("executor", "execution"),
}
_CELL_FIELDS = ("details",)
# Shown in every cell's tooltip: a change there touches the whole row.
_ROW_FIELDS = ("reason", "owed", "attempt", "not_retryable")


def _ticking(job: JobSnapshot) -> bool:
    """Its run time grows by itself: started and not finished (a blocked job's command is
    not running: it could not start)."""
    if _queued(job) and job.run_started_at is None:
        return False  # in a queue (a cluster's): its run time is "—" until it leaves it
    return (job.started_at is not None and job.finished_at is None
            and not job.state.is_terminal
            and job.state not in (JobState.INTERRUPTED, JobState.BLOCKED))


def _elapsed(job: JobSnapshot) -> float | None:
    if _queued(job) and job.started_at is not None:
        # Waiting in the queue is not running: count from when it left it (a node started it).
        return cluster_times(job)[1]
    if job.started_at is None:
        return None
    if job.finished_at is None and not _ticking(job):
        # Ended (or interrupted by a crash) without a recorded end: the last update is the
        # best end we know; JobSnapshot.elapsed would keep counting forever.
        return max(0.0, job.updated_at - job.started_at)
    return job.elapsed


def _queued(job: JobSnapshot) -> bool:
    """Its executor queues commands (a cluster): its run time counts from leaving the queue."""
    return job.execution is not None and job.execution.queued


def cluster_times(job: JobSnapshot, now: float | None = None
                  ) -> tuple[float | None, float | None]:
    """(seconds pending in the cluster's queue, seconds running on a node) of a cluster job,
    so far; None for a phase it has not reached. A job whose engine lost track of it
    (interrupted, blocked) or that ended without a recorded end stops at its last update,
    so its clocks do not count on forever."""
    execution = job.execution
    if execution is None or execution.queued_at is None:
        return None, None
    queued_at, running_at = execution.queued_at, execution.running_at
    if job.finished_at is not None:
        end = job.finished_at
    elif cluster_clock_ticking(job):
        end = time.time() if now is None else now
    else:
        end = job.updated_at
    pending_end = running_at if running_at is not None else end
    pending = max(0.0, min(pending_end, end) - queued_at)
    running = None if running_at is None else max(0.0, end - running_at)
    return pending, running


def cluster_clock_ticking(job: JobSnapshot) -> bool:
    """A cluster job's pending or running clock grows by itself."""
    return (job.execution is not None and job.execution.queued_at is not None
            and job.finished_at is None
            and not job.state.is_terminal
            and job.state not in (JobState.INTERRUPTED, JobState.BLOCKED))


def _cluster_waiting(job: JobSnapshot) -> bool:
    """A live job its executor has not run yet: pending in a cluster's queue, or not
    submitted yet."""
    execution = job.execution
    return (execution is not None and execution.waiting and execution.running_at is None
            and not job.state.is_terminal)


def format_runs_on(job: JobSnapshot) -> str:
    """Where a job's command runs, short, as its executor says: 'local',
    'SLURM 1234 · PENDING (Resources)', 'SLURM 1234 · RUNNING on node7'."""
    execution = job.execution
    if execution is None or not execution.label:
        return job.executor or "local"
    return execution.label


def _is_dark() -> bool:
    return QGuiApplication.palette().color(QPalette.ColorRole.Base).lightness() < 128


def header_for_role(title: str, tip: str, role: int) -> str | None:
    """A column header's text or its tooltip, as Qt asks for them (None for other roles)."""
    if role == Qt.ItemDataRole.DisplayRole:
        return title
    if role == Qt.ItemDataRole.ToolTipRole:
        return tip
    return None


class JobTableModel(QAbstractTableModel):
    """Jobs by id, in the columns the source's Presentation lists. ``JobRole`` gives a row's
    JobSnapshot; ``SortRole`` the real value behind a cell (ticket number, state rank,
    progress 0..1, epoch seconds...), used for sorting and by ProgressDelegate."""

    JobRole = _USER + 1
    SortRole = _USER + 2
    JobIdRole = _USER + 3

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[JobSnapshot] = []
        self._index: dict[int, int] = {}  # job id -> row
        self._waiting: set[int] = set()  # job ids at a gate
        self.presentation = DEFAULT_PRESENTATION
        self._columns: tuple[ColumnSpec, ...] = DEFAULT_PRESENTATION.job_columns

    def apply_presentation(self, presentation: Presentation) -> None:
        """Columns and headers in the words of the source the engine serves."""
        if presentation == self.presentation:
            return
        self.beginResetModel()
        self.presentation = presentation
        self._columns = presentation.job_columns
        self.endResetModel()

    def column_of(self, column_id: str) -> int:
        """The position of a column by its id ("work", "state", "task"...); KeyError when the
        source does not show it."""
        for position, column in enumerate(self._columns):
            if column.id == column_id:
                return position
        raise KeyError(column_id)

    def column_ids(self) -> tuple[str, ...]:
        return tuple(column.id for column in self._columns)

    # -- reading ----------------------------------------------------------------------------
    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._columns)

    def job_at(self, row: int) -> JobSnapshot:
        return self._rows[row]

    def row_of(self, job_id: int) -> int | None:
        return self._index.get(job_id)

    def job(self, job_id: int) -> JobSnapshot | None:
        row = self._index.get(job_id)
        return None if row is None else self._rows[row]

    def jobs(self) -> list[JobSnapshot]:
        return list(self._rows)

    def waiting_count(self) -> int:
        """Jobs shown that wait at a gate for the operator's decision (kept as rows change,
        so a count per update costs nothing with ten thousand rows)."""
        return len(self._waiting)

    def _note_waiting(self, job: JobSnapshot) -> None:
        if job.state.is_waiting:
            self._waiting.add(job.job_id)
        else:
            self._waiting.discard(job.job_id)

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(self._columns):
            return None
        column = self._columns[section]
        return header_for_role(column.title, column.tip, role)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows) \
                or not 0 <= index.column() < len(self._columns):
            return None
        job = self._rows[index.row()]
        column = self._columns[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(job, column)
        if role == self.SortRole:
            return self._sort_value(job, column)
        if role == self.JobRole:
            return job
        if role == self.JobIdRole:
            return job.job_id
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(job, column.id)
        if role == Qt.ItemDataRole.ForegroundRole and column.id == "state":
            colours = _STATE_COLOURS.get(job.state)
            return None if colours is None else QBrush(QColor(colours[_is_dark()]))
        if role == Qt.ItemDataRole.ForegroundRole and column.id == "runs_on":
            return QBrush(QColor(_WAITING_COLOURS[_is_dark()])) if _cluster_waiting(job) \
                else None
        if role == Qt.ItemDataRole.FontRole and column.id == "state" \
                and job.state in _BOLD_STATES:
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.TextAlignmentRole and column.id in ("work", "run_time"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    @staticmethod
    def _display(job: JobSnapshot, column: ColumnSpec) -> str:
        key = column.id
        if key == "work":
            return str(job.ticket_id)
        if key == "service":
            return job.service_name or job.service_hash[:8]
        if key == "state":
            # A run this node refused by its allowlist ended "not allowed" on the server.
            if job.state is JobState.FAILED and job.details.get("outcome") == "not_allowed":
                return "not allowed"
            return state_words(job.state)
        if key == "progress":
            return f"{round(max(0.0, min(1.0, job.progress)) * 100)}%"
        if key == "claimed":
            return format_claimed(job.claimed_at)
        if key == "run_time":
            return format_elapsed(_elapsed(job))
        if key == "runs_on":
            return format_runs_on(job)
        if key == "instance":
            return job.instance
        return str(job_cells(job).get(key, ""))

    @staticmethod
    def _sort_value(job: JobSnapshot, column: ColumnSpec) -> Any:
        # One type per column (Qt compares the variants): unknown times sort first.
        key = column.id
        if key == "work":
            return job.ticket_id
        if key == "service":
            return (job.service_name or job.service_hash).casefold()
        if key == "state":
            return _STATE_ORDER.get(job.state, len(_STATE_ORDER))
        if key == "progress":
            return float(max(0.0, min(1.0, job.progress)))
        if key == "claimed":
            return float(job.claimed_at) if job.claimed_at is not None else -1.0
        if key == "run_time":
            elapsed = _elapsed(job)
            return -1.0 if elapsed is None else float(elapsed)
        if key == "runs_on":
            # Local jobs first, then queued (cluster) jobs by their number (not as text:
            # "999" > "1000").
            if not _queued(job):
                return f"0 {job.executor}"
            number = (job.execution.ref if job.execution is not None else None) or ""
            return f"1 {number.zfill(20) if number.isdigit() else number}"
        if key == "instance":
            return job.instance.casefold()
        value = job_cells(job).get(column.sort_cell or key, "")
        return value.casefold() if isinstance(value, str) else value

    @staticmethod
    def _tooltip(job: JobSnapshot, column_id: str) -> str | None:
        lines = []
        if column_id == "service" and job.service_hash:
            lines.append(f"Service hash {job.service_hash}")
        if column_id == "runs_on" and job.execution is not None and job.execution.lines:
            lines.extend(_cluster_lines(job))
        if column_id == "runs_on" and job.view is not None and job.view.limits:
            lines.append(f"Limits: {job.view.limits}")
        if job.reason:
            lines.append(job.reason)
        if job.attempt > 1:
            lines.append(f"Attempt {job.attempt}")
        if job.owed > 0:
            lines.append(f"{job.owed} server call{'s' if job.owed != 1 else ''} owed")
        if job.not_retryable:
            lines.append(f"Retry run is not possible: {job.not_retryable}")
        return "\n".join(lines) or None

    # -- writing ----------------------------------------------------------------------------
    def set_jobs(self, snapshots: Iterable[JobSnapshot]) -> None:
        """Replace every row (the initial load): one reset."""
        latest = {job.job_id: job for job in snapshots}
        self.beginResetModel()
        self._rows = list(latest.values())
        self._index = {job_id: row for row, job_id in enumerate(latest)}
        self._waiting = {job.job_id for job in self._rows if job.state.is_waiting}
        self.endResetModel()

    def update_jobs(self, snapshots: Iterable[JobSnapshot]) -> None:
        """Update known jobs in place and append new ones, in one batch."""
        latest: dict[int, JobSnapshot] = {}
        for job in snapshots:
            latest[job.job_id] = job  # several snapshots of one job per batch: last wins
        added: list[JobSnapshot] = []
        for job_id, job in latest.items():
            row = self._index.get(job_id)
            if row is None:
                added.append(job)
                continue
            old = self._rows[row]
            # Two engine threads may publish one job (its own, the outbox's): a snapshot
            # read before the last change must not undo it.
            if old == job or job.updated_at < old.updated_at:
                continue
            self._rows[row] = job
            self._note_waiting(job)
            first, last = self._changed_columns(old, job)
            self.dataChanged.emit(self.index(row, first), self.index(row, last))
        if added:
            start = len(self._rows)
            self.beginInsertRows(QModelIndex(), start, start + len(added) - 1)
            for offset, job in enumerate(added):
                self._index[job.job_id] = start + offset
                self._note_waiting(job)
            self._rows.extend(added)
            self.endInsertRows()

    def remove_job(self, job_id: int) -> bool:
        row = self._index.get(job_id)
        if row is None:
            return False
        self.beginRemoveRows(QModelIndex(), row, row)
        del self._rows[row]
        del self._index[job_id]
        self._waiting.discard(job_id)
        for later in range(row, len(self._rows)):
            self._index[self._rows[later].job_id] = later
        self.endRemoveRows()
        return True

    def tick(self) -> None:
        """Once a second: repaint the Elapsed cells of running jobs, one signal per run of
        adjacent rows; finished rows are not touched."""
        rows = [row for row, job in enumerate(self._rows) if _ticking(job)]
        if not rows or "run_time" not in self.column_ids():
            return
        column = self.column_of("run_time")
        roles = [int(Qt.ItemDataRole.DisplayRole), self.SortRole]
        # Group consecutive row numbers: row - position is constant within a run.
        for _key, run in itertools.groupby(enumerate(rows), lambda pair: pair[1] - pair[0]):
            block = [row for _position, row in run]
            self.dataChanged.emit(self.index(block[0], column), self.index(block[-1], column),
                                  roles)

    def _changed_columns(self, old: JobSnapshot, new: JobSnapshot) -> tuple[int, int]:
        last_column = len(self._columns) - 1
        if any(getattr(old, name) != getattr(new, name) for name in _ROW_FIELDS):
            return 0, last_column
        changed = [position for position, column in enumerate(self._columns)
                   if any(getattr(old, name) != getattr(new, name)
                          for name in _COLUMN_FIELDS.get(column.id, _CELL_FIELDS))]
        if not changed:
            # Nothing shown moved (e.g. the work dir): JobRole still did.
            return 0, last_column
        return min(changed), max(changed)


def _cluster_lines(job: JobSnapshot) -> list[str]:
    """Where the command runs in full, as its executor says, with its time in the queue and
    running, for the Runs on column's tooltip."""
    lines = list(job.execution.lines) if job.execution is not None else []
    pending, running = cluster_times(job)
    if pending is not None:
        times = f"Pending {format_elapsed(pending)}"
        if running is not None:
            times += f", running {format_elapsed(running)}"
        lines.append(times)
    return lines


def _execution_words(job: JobSnapshot) -> tuple[str, ...]:
    execution = job.execution
    return () if execution is None else (execution.label, *execution.lines)


class JobFilterProxy(QSortFilterProxyModel):
    """Filter jobs by state and by text; sorts by JobTableModel.SortRole and re-sorts and
    re-filters as rows change."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setSortRole(JobTableModel.SortRole)
        self.setDynamicSortFilter(True)
        self._states: frozenset[JobState] | None = None
        self._words: tuple[str, ...] = ()

    @property
    def states(self) -> frozenset[JobState] | None:
        return self._states

    @property
    def text(self) -> str:
        return " ".join(self._words)

    def set_states(self, states: Iterable[JobState] | None) -> None:
        """Show only jobs in these states; None shows all."""
        wanted = None if states is None else frozenset(states)
        if wanted != self._states:
            self._change_filter(lambda: setattr(self, "_states", wanted))

    def set_text(self, text: str) -> None:
        """Show only jobs matching every word of ``text`` (case-insensitive) in their ticket
        number, SLURM job id, service, instance, reason, state or where they run."""
        words = tuple(text.casefold().split())
        if words != self._words:
            self._change_filter(lambda: setattr(self, "_words", words))

    def job_at(self, proxy_row: int) -> JobSnapshot:
        """The job shown at a row of this proxy."""
        return self.index(proxy_row, 0).data(JobTableModel.JobRole)

    def filterAcceptsRow(self, source_row: int, source_parent: _Index) -> bool:
        model = self.sourceModel()
        if isinstance(model, JobTableModel):
            job = model.job_at(source_row)
        else:
            job = model.index(source_row, 0, source_parent).data(JobTableModel.JobRole)
        if job is None:
            return True
        if self._states is not None and job.state not in self._states:
            return False
        if self._words:
            cells = job_cells(job)
            haystack = " ".join((job.service_name, job.service_hash, job.instance,
                                 job.reason or "", state_words(job.state), job.executor,
                                 *_execution_words(job),
                                 *(str(v) for v in cells.values()))).casefold()
            # A number is a ticket id, a SLURM job id or a number the source shows (a
            # vantage6 task id): "12" must not match every hash that contains "12".
            numbers = (str(job.ticket_id), job.execution.ref if job.execution else None,
                       *(str(v) for v in cells.values() if isinstance(v, int)))
            return all(word in numbers if word.isdigit()
                       else word in haystack for word in self._words)
        return True

    def _change_filter(self, change: Callable[[], None]) -> None:
        if hasattr(QSortFilterProxyModel, "Direction"):  # Qt >= 6.10
            self.beginFilterChange()
            change()
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            change()
            self.invalidateRowsFilter()


class ProgressDelegate(QStyledItemDelegate):
    """Paints a 0..1 value (the model's SortRole) as the style's progress bar, with the
    cell's display text ('45%') on it."""

    def __init__(self, parent: QObject | None = None,
                 value_role: int = JobTableModel.SortRole) -> None:
        super().__init__(parent)
        self._value_role = value_role

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: _Index) -> None:
        value = index.data(self._value_role)
        if not isinstance(value, (int, float)):
            super().paint(painter, option, index)
            return
        widget = option.widget
        style = widget.style() if widget is not None else QApplication.style()
        # The cell's own background and selection first, without its text.
        cell = QStyleOptionViewItem(option)
        self.initStyleOption(cell, index)
        cell.text = ""
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, cell, painter, widget)

        bar = QStyleOptionProgressBar()
        bar.rect = option.rect.adjusted(2, 2, -2, -2)
        bar.direction = option.direction
        bar.palette = option.palette
        bar.fontMetrics = option.fontMetrics
        bar.state = (option.state | QStyle.StateFlag.State_Horizontal) \
            & ~QStyle.StateFlag.State_Selected
        bar.minimum = 0
        bar.maximum = 1000
        bar.progress = round(max(0.0, min(1.0, float(value))) * 1000)
        bar.text = str(index.data(Qt.ItemDataRole.DisplayRole) or "")
        bar.textVisible = True
        bar.textAlignment = Qt.AlignmentFlag.AlignCenter
        style.drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter, widget)
