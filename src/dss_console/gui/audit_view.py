"""The audit of every source: the engine's ledger, newest record first, page by page, under a
banner with ``audit verify``'s verdict (issue 20, part 6).

Fed by the main window from the engine's channel ops ``ledger_page`` and ``ledger_verify``
(never reading the files itself: the engine may run elsewhere for this user). Shows only what
the ledger holds: no argument value, path or file name is in it.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from dss_console.engine.ledger import parse_utc
from dss_console.engine.ledger_export import export_row, write_csv
from dss_console.engine.ledger_verify import Verdict
from dss_console.gui.tasks import run_blocking, spawn

COLUMNS = ("#", "Time", "Step", "Job", "Service", "Requester", "Decided by", "Outcome",
           "Run time", "SHA-256", "Reason")
PAGE = 200


def _cells(record: dict[str, Any]) -> list[str]:
    row = export_row(record)
    at = record.get("at")
    try:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(parse_utc(str(at))))
    except ValueError:
        when = str(at)
    job = "" if row["job_id"] is None else str(row["job_id"])
    if job and (row["attempt"] or 1) > 1:
        job += f" (try {row['attempt']})"
    decided = " · ".join(str(part) for part in (row["decided_by"], row["via"], row["rule"])
                         if part)
    run_s = row["run_s"]
    return [str(row["seq"]), when, str(row["kind"] or ""), job, str(row["service"] or ""),
            str(row["requester"] or ""), decided,
            "" if row["outcome"] is None else str(row["outcome"]),
            "" if run_s is None else f"{float(run_s):.1f} s",
            str(row["sha256"] or "")[:12], str(row["reason"] or "")]


class LedgerDialog(QDialog):
    """Non-modal. ``show_page`` replaces the records, ``add_older`` appends an older page,
    ``show_verdict`` sets the banner; ``older_wanted(before_seq)`` and ``verify_wanted`` ask
    the window for more."""

    older_wanted = Signal(int)
    verify_wanted = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Audit")
        self.setModal(False)
        self.resize(1100, 520)
        self.records: list[dict[str, Any]] = []
        self.verdict: Verdict | None = None
        self.banner = QLabel("Checking the ledger…", self)
        self.banner.setWordWrap(True)
        self.banner.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        self.older_button = QPushButton("Load older", self)
        self.older_button.clicked.connect(self._ask_older)
        self.verify_button = QPushButton("Verify again", self)
        self.verify_button.setToolTip("Check the chain of records again (audit verify)")
        self.verify_button.clicked.connect(self.verify_wanted.emit)
        self.export_button = QPushButton("Export CSV…", self)
        self.export_button.setToolTip("Save the records shown as CSV (as `dss-console audit "
                                      "export --csv`)")
        self.export_button.clicked.connect(self.export_csv)
        self.status = QLabel(self)
        buttons = QHBoxLayout()
        buttons.addWidget(self.older_button)
        buttons.addWidget(self.verify_button)
        buttons.addStretch(1)
        buttons.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.banner)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.status)

    def widget(self) -> QWidget:
        return self

    # -- feeding ------------------------------------------------------------------------
    def show_page(self, records: Sequence[dict[str, Any]], *, source: str = "") -> None:
        if source:
            self.setWindowTitle(f"Audit — {source}")
        self.records = []
        self.table.setRowCount(0)
        self.add_older(records)
        self.table.resizeColumnsToContents()

    def add_older(self, records: Sequence[dict[str, Any]]) -> None:
        for record in records:
            row = self.table.rowCount()
            self.table.insertRow(row)
            for column, text in enumerate(_cells(record)):
                item = QTableWidgetItem(text)
                if column in (0, 3, 8):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight
                                          | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, column, item)
        self.records.extend(records)
        oldest = self._oldest()
        self.older_button.setEnabled(oldest is not None and oldest > 1
                                     and len(records) > 0)
        self._update_status()

    def show_verdict(self, verdict: Verdict) -> None:
        self.verdict = verdict
        color = "#1b5e20" if verdict.ok else "#b71c1c"
        words = ("Ledger verified: " if verdict.ok else "The ledger was tampered with: ") + \
            verdict.text()
        self.banner.setText(words)
        self.banner.setStyleSheet(f"QLabel {{ color: {color}; font-weight: bold; }}")

    def show_problem(self, text: str) -> None:
        self.banner.setText(text)
        self.banner.setStyleSheet("QLabel { color: #b71c1c; }")

    # -- export -------------------------------------------------------------------------
    def export_csv(self) -> Path | None:
        """Ask where, then write the shown records there off the Qt thread (the folder may be
        a slow network share); the status line says when it is written, or why not."""
        target = self._ask_save_path()
        if target is None:
            return None
        buffer = io.StringIO(newline="")
        write_csv(self.records, buffer)
        self.status.setText(f"{self._count()} — exporting to {target}…")
        spawn(self._write_export(target, buffer.getvalue()))
        return target

    async def _write_export(self, target: Path, text: str) -> None:
        try:
            await run_blocking(_write_text, target, text)
        except OSError as exc:
            QMessageBox.warning(self, "Export CSV", f"Cannot write {target}:\n"
                                                    f"{exc.strerror or exc}")
            self.status.setText(f"{self._count()} — not exported")
            return
        self.status.setText(f"{self._count()} — exported to {target}")

    def _ask_save_path(self) -> Path | None:  # overridable for tests
        name = time.strftime("ledger-%Y-%m-%d.csv")
        chosen, _filter = QFileDialog.getSaveFileName(
            self, "Export the ledger as CSV", str(Path.home() / name),
            "CSV files (*.csv);;All files (*)")
        return Path(chosen) if chosen else None

    # -- internals ------------------------------------------------------------------------
    def _oldest(self) -> int | None:
        seqs = [r.get("seq") for r in self.records if isinstance(r.get("seq"), int)]
        return min(int(s) for s in seqs if s is not None) if seqs else None

    def _ask_older(self) -> None:
        oldest = self._oldest()
        if oldest is not None:
            self.older_button.setEnabled(False)
            self.older_wanted.emit(oldest)

    def _count(self) -> str:
        count = len(self.records)
        return f"{count} record{'s' if count != 1 else ''} shown"

    def _update_status(self) -> None:
        self.status.setText(self._count())


def _write_text(target: Path, text: str) -> None:
    with open(target, "w", encoding="utf-8", newline="") as stream:
        stream.write(text)
