"""The vantage6 audit: every run this node ran, who asked for it, with which input, and how
it ended (a non-modal window fed with the jobs the console already holds).

The records are built from job snapshots in memory (dss_console.sources.v6.audit); the only disk
work on the Qt thread is writing an exported CSV file, small by nature.
"""

from __future__ import annotations

import enum
import itertools
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QTimer,
)
from PySide6.QtGui import QHideEvent, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from dss_console.engine.events import JobSnapshot
from dss_console.gui.jobs_model import header_for_role
from dss_console.sources.v6.audit import (
    AuditRecord,
    audit_records,
    format_input,
    format_requester,
    records_to_csv,
)
from dss_console.timefmt import format_claimed, format_elapsed

__all__ = ["AuditColumn", "AuditDialog", "AuditFilterProxy", "AuditTableModel"]

_Index = QModelIndex | QPersistentModelIndex
_USER = int(Qt.ItemDataRole.UserRole)
Key = tuple[str, int]  # (source, run id): a run id is unique on its server


class AuditColumn(enum.IntEnum):
    RUN = 0
    TASK = 1
    REQUESTER = 2
    IMAGE = 3
    DATABASES = 4
    INPUT = 5
    OUTCOME = 6
    STARTED = 7
    DURATION = 8
    REASON = 9


_HEADERS = {
    AuditColumn.RUN: ("Run", "The run's id on the vantage6 server"),
    AuditColumn.TASK: ("Task", "The task the run belongs to: its id and name"),
    AuditColumn.REQUESTER: ("Requested by", "The organization and the user who created the "
                                            "task"),
    AuditColumn.IMAGE: ("Image", "The algorithm image the task asked for"),
    AuditColumn.DATABASES: ("Databases", "The databases (labels) the task asked for"),
    AuditColumn.INPUT: ("Input", "The method called and the names of its arguments (never "
                                 "their values), and the SHA-256 of the input as received "
                                 "(the full digest in the cell's tooltip)"),
    AuditColumn.OUTCOME: ("Outcome", "How the run ended (completed, failed, not allowed, "
                                     "interrupted) or where it stands"),
    AuditColumn.STARTED: ("Started", "When the command started (local time)"),
    AuditColumn.DURATION: ("Duration", "How long the command ran"),
    AuditColumn.REASON: ("Reason", "Why the run ended as it did (the words the researcher "
                                   "got, or the local reason)"),
}

SHA_SHOWN = 12  # hex digits of the input's SHA-256 in the table


def _task(record: AuditRecord) -> str:
    if record.task_id is None:
        return record.task_name or "—"
    return f"{record.task_id} {record.task_name}" if record.task_name else str(record.task_id)


def _input(record: AuditRecord) -> str:
    text = format_input(record)
    if record.input_sha256:
        text += f" · {record.input_sha256[:SHA_SHOWN]}…"
    return text


def _one_line(text: str) -> str:
    return " ".join(text.split()) if any(ch in text for ch in "\n\r\t") else text


class AuditTableModel(QAbstractTableModel):
    """Audit records keyed by (source, run id), updated in place. ``RecordRole`` gives a
    row's AuditRecord, ``SortRole`` the value behind a cell (one type per column)."""

    RecordRole = _USER + 1
    SortRole = _USER + 2
    KeyRole = _USER + 3

    def __init__(self, parent: QObject | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(parent)
        self._rows: list[AuditRecord] = []
        self._index: dict[Key, int] = {}
        self._clock = clock

    # -- reading ----------------------------------------------------------------------------
    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(AuditColumn)

    def record_at(self, row: int) -> AuditRecord:
        return self._rows[row]

    def row_of(self, key: Key) -> int | None:
        return self._index.get(key)

    def records(self) -> list[AuditRecord]:
        return list(self._rows)

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(AuditColumn):
            return None
        title, tip = _HEADERS[AuditColumn(section)]
        return header_for_role(title, tip, role)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        record = self._rows[index.row()]
        column = AuditColumn(index.column())
        if role == Qt.ItemDataRole.DisplayRole:
            return _one_line(self.display(record, column))
        if role == self.SortRole:
            return self._sort_value(record, column)
        if role == self.RecordRole:
            return record
        if role == self.KeyRole:
            return record.key
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(record, column)
        if role == Qt.ItemDataRole.TextAlignmentRole and column in (AuditColumn.RUN,
                                                                    AuditColumn.DURATION):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def display(self, record: AuditRecord, column: AuditColumn) -> str:
        if column is AuditColumn.RUN:
            return str(record.run_id)
        if column is AuditColumn.TASK:
            return _task(record)
        if column is AuditColumn.REQUESTER:
            return format_requester(record)
        if column is AuditColumn.IMAGE:
            return record.image
        if column is AuditColumn.DATABASES:
            return ", ".join(record.databases) or "—"
        if column is AuditColumn.INPUT:
            return _input(record)
        if column is AuditColumn.OUTCOME:
            return record.outcome
        if column is AuditColumn.STARTED:
            return format_claimed(record.started_at) or "—"
        if column is AuditColumn.REASON:
            return record.reason or ""
        return format_elapsed(record.duration_at(self._clock()))

    def _sort_value(self, record: AuditRecord, column: AuditColumn) -> Any:
        if column is AuditColumn.RUN:
            return record.run_id
        if column is AuditColumn.STARTED:
            # Not started yet: by when it was claimed, so the newest stay together.
            return float(record.started_at or record.claimed_at or 0.0)
        if column is AuditColumn.DURATION:
            duration = record.duration_at(self._clock())
            return -1.0 if duration is None else float(duration)
        if column is AuditColumn.TASK and record.task_id is not None:
            return f"{record.task_id:020d}"  # by number, not as text ("9" < "10")
        return self.display(record, column).casefold()

    @staticmethod
    def _tooltip(record: AuditRecord, column: AuditColumn) -> str | None:
        if column is AuditColumn.RUN:
            lines = [f"Run {record.run_id} on {record.server}"
                     + (f", node {record.node_id}" if record.node_id is not None else "")]
            ids = [f"{name} {value}" for name, value in (
                ("task", record.task_id), ("job", record.job_id),
                ("parent task", record.parent_id),
                ("collaboration", record.collaboration_id)) if value is not None]
            if ids:
                lines.append(", ".join(ids).capitalize())
            lines.append(f"Local job {record.local_job} ({record.instance}), "
                         f"attempt {record.attempt}")
            return "\n".join(lines)
        if column is AuditColumn.REQUESTER:
            lines = []
            if record.init_org or record.init_org_id is not None:
                lines.append(f"Organization {record.init_org or '(name unknown)'}"
                             + (f" (id {record.init_org_id})"
                                if record.init_org_id is not None else ""))
            if record.init_user or record.init_user_id is not None:
                lines.append(f"User {record.init_user or '(name unknown)'}"
                             + (f" (id {record.init_user_id})"
                                if record.init_user_id is not None else ""))
            return "\n".join(lines) or None
        if column is AuditColumn.INPUT:
            lines = []
            if record.input_sha256:
                lines.append(f"SHA-256 {record.input_sha256}")
            if record.input_format == "JSON":
                lines.append(f"Method: {record.input_method or '(none)'}")
                if record.input_kwargs:
                    lines.append(f"Keyword arguments: {', '.join(record.input_kwargs)}")
                if record.input_args:
                    lines.append(f"Positional arguments: {record.input_args}")
            elif record.input_format:
                lines.append(f"Input: {record.input_format}")
            if record.input_bytes is not None:
                lines.append(f"{record.input_bytes} bytes")
            return "\n".join(lines) or "The input was not fetched"
        if column is AuditColumn.OUTCOME:
            lines = [record.outcome_text]
            if record.state != record.outcome:
                lines.append(f"Job state: {record.state}")
            if record.exit_code is not None:
                lines.append(f"Exit code {record.exit_code}")
            return "\n".join(lines)
        if column is AuditColumn.STARTED:
            claimed = format_claimed(record.claimed_at)
            return f"Claimed {claimed}" if claimed else None
        if column is AuditColumn.TASK:
            return _task(record)
        if column is AuditColumn.IMAGE:
            return record.image or None
        if column is AuditColumn.DATABASES:
            return ", ".join(record.databases) or None
        if column is AuditColumn.REASON:
            return record.reason or None
        return None

    # -- writing ----------------------------------------------------------------------------
    def set_records(self, records: Iterable[AuditRecord]) -> None:
        """Replace every row: one reset."""
        latest: dict[Key, AuditRecord] = {}
        for record in records:
            known = latest.get(record.key)
            if known is None or _newer(record, known):
                latest[record.key] = record
        self.beginResetModel()
        self._rows = list(latest.values())
        self._index = {key: row for row, key in enumerate(latest)}
        self.endResetModel()

    def update_records(self, records: Iterable[AuditRecord]) -> None:
        """Update known runs in place (a stale record never undoes a newer one) and append
        new ones with one insert."""
        added: dict[Key, AuditRecord] = {}
        for record in records:
            row = self._index.get(record.key)
            if row is None:
                known = added.get(record.key)
                if known is None or _newer(record, known):
                    added[record.key] = record
                continue
            old = self._rows[row]
            if old == record or not _newer(record, old):
                continue
            self._rows[row] = record
            self.dataChanged.emit(self.index(row, 0), self.index(row, len(AuditColumn) - 1))
        if added:
            start = len(self._rows)
            self.beginInsertRows(QModelIndex(), start, start + len(added) - 1)
            for offset, key in enumerate(added):
                self._index[key] = start + offset
            self._rows.extend(added.values())
            self.endInsertRows()

    def tick(self) -> None:
        """Repaint the Duration cells of runs under way, one signal per block of rows."""
        rows = [row for row, record in enumerate(self._rows)
                if record.live and record.started_at is not None]
        column = int(AuditColumn.DURATION)
        roles = [int(Qt.ItemDataRole.DisplayRole), self.SortRole]
        for _key, run in itertools.groupby(enumerate(rows), lambda pair: pair[1] - pair[0]):
            block = [row for _position, row in run]
            self.dataChanged.emit(self.index(block[0], column), self.index(block[-1], column),
                                  roles)


def _newer(record: AuditRecord, than: AuditRecord) -> bool:
    return (record.local_job, record.updated_at) >= (than.local_job, than.updated_at)


class AuditFilterProxy(QSortFilterProxyModel):
    """Rows matching every word of the filter text (case-insensitive) in any cell, the full
    input digest, the reason or the job state; a number is a run, task or job id."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setSortRole(AuditTableModel.SortRole)
        self.setDynamicSortFilter(True)
        self._words: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return " ".join(self._words)

    def set_text(self, text: str) -> None:
        words = tuple(text.casefold().split())
        if words == self._words:
            return
        if hasattr(QSortFilterProxyModel, "Direction"):  # Qt >= 6.10
            self.beginFilterChange()
            self._words = words
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self._words = words
            self.invalidateRowsFilter()

    def record_at(self, proxy_row: int) -> AuditRecord:
        record: AuditRecord = self.index(proxy_row, 0).data(AuditTableModel.RecordRole)
        return record

    def records(self) -> list[AuditRecord]:
        """The records shown, in the order shown."""
        return [self.record_at(row) for row in range(self.rowCount())]

    def filterAcceptsRow(self, source_row: int, source_parent: _Index) -> bool:
        if not self._words:
            return True
        model = self.sourceModel()
        if not isinstance(model, AuditTableModel):
            return True
        record = model.record_at(source_row)
        haystack = " ".join((
            *(model.display(record, column) for column in AuditColumn),
            record.input_sha256 or "", record.reason or "", record.state,
            record.init_org or "", record.init_user or "", record.server)).casefold()
        ids = {str(value) for value in (record.run_id, record.task_id, record.job_id)
               if value is not None}
        return all(word in ids if word.isdigit() else word in haystack
                   for word in self._words)


class AuditDialog(QDialog):
    """Non-modal: open with ``show()``; feed with ``set_jobs`` once and ``update_jobs`` with
    every batch of changed jobs (jobs that are not vantage6 runs are ignored)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("vantage6 audit")
        self.setModal(False)
        self.resize(1100, 480)
        self.model = AuditTableModel(self)
        self.proxy = AuditFilterProxy(self)
        self.proxy.setSourceModel(self.model)

        self.filter_edit = QLineEdit(self)
        self.filter_edit.setPlaceholderText("Filter: task, organization, user, image, "
                                            "database, method, outcome, run id…")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.textChanged.connect(self.proxy.set_text)
        self.export_button = QPushButton("Export CSV…", self)
        self.export_button.setToolTip("Save the runs shown (filtered, in this order) as CSV "
                                      "with every field; times in UTC")
        self.export_button.clicked.connect(self.export_csv)

        self.table = QTableView(self)
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(int(AuditColumn.STARTED), Qt.SortOrder.DescendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(int(AuditColumn.INPUT), QHeaderView.ResizeMode.Stretch)
        self.status = QLabel(self)

        top = QHBoxLayout()
        top.addWidget(self.filter_edit, 1)
        top.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)

        self.model.modelReset.connect(self._update_status)
        self.model.rowsInserted.connect(self._update_status)
        self.proxy.rowsInserted.connect(self._update_status)
        self.proxy.rowsRemoved.connect(self._update_status)
        self.proxy.modelReset.connect(self._update_status)
        self.proxy.layoutChanged.connect(self._update_status)
        self._note = ""
        self._timer = QTimer(self)
        self._timer.setInterval(1000)
        self._timer.timeout.connect(self._tick)
        self._update_status()

    # -- feeding ----------------------------------------------------------------------------
    def widget(self) -> QWidget:  # as a gui.source_window.SourceViewWindow
        return self

    def set_jobs(self, jobs: Iterable[JobSnapshot]) -> None:
        """Show these jobs' runs (replacing any shown)."""
        self.model.set_records(audit_records(jobs))
        self.table.resizeColumnsToContents()

    def update_jobs(self, jobs: Iterable[JobSnapshot]) -> None:
        """Jobs that changed or are new, e.g. one batch of JobChanged events."""
        records = audit_records(jobs)
        if records:
            self.model.update_records(records)

    # -- export -----------------------------------------------------------------------------
    def export_csv(self) -> Path | None:
        """Ask where, then write the runs shown; the path written, or None."""
        target = self._ask_save_path()
        if target is None:
            return None
        records = self.proxy.records()
        try:
            with open(target, "w", encoding="utf-8", newline="") as stream:
                records_to_csv(records, stream)
        except OSError as exc:
            QMessageBox.warning(self, "Export CSV", f"Cannot write {target}:\n"
                                                    f"{exc.strerror or exc}")
            return None
        noun = "run" if len(records) == 1 else "runs"
        self._note = f"Exported {len(records)} {noun} to {target}"
        self._update_status()
        return target

    # overridable for tests
    def _ask_save_path(self) -> Path | None:
        name = time.strftime("v6-audit-%Y-%m-%d.csv")
        chosen, _filter = QFileDialog.getSaveFileName(
            self, "Export audit as CSV", str(Path.home() / name),
            "CSV files (*.csv);;All files (*)")
        return Path(chosen) if chosen else None

    # -- internals ------------------------------------------------------------------------
    def showEvent(self, event: QShowEvent) -> None:
        # Ticks only while shown: a closed dialog costs nothing, and leaves no timer behind
        # when the window quits.
        self._timer.start()
        super().showEvent(event)

    def hideEvent(self, event: QHideEvent) -> None:
        self._timer.stop()
        super().hideEvent(event)

    def _tick(self) -> None:
        if self.isVisible():
            self.model.tick()

    def _update_status(self, *_args: Any) -> None:
        total, shown = self.model.rowCount(), self.proxy.rowCount()
        text = f"{total} run{'s' if total != 1 else ''}"
        if shown != total:
            text += f", {shown} shown"
        if self._note:
            text += f" — {self._note}"
        self.status.setText(text)
