"""The Settings dialog's vantage6 tab: the node's ``[v6.algorithms]`` (the allowlist: which
images run here, and how) and ``[v6.databases]`` (what the labels researchers ask for mean).

The rows are read through the settings file's own parser (:func:`parse_v6_settings`), so
what the tab calls wrong is exactly what the file would refuse. Environment variables (often
passwords) and an image's send_output_tail are not shown: they are kept as the file has
them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from dss_console.engine.settings import Settings, format_duration
from dss_console.sources.v6.settings import (
    DATABASE_TYPES,
    V6Settings,
    V6SettingsError,
    new_algorithm_policy,
    parse_v6_settings,
)

__all__ = ["ALGORITHM_COLUMNS", "DATABASE_COLUMNS", "V6Tab"]

# (heading, key in the file); the image is the table's key, subtasks a check box.
ALGORITHM_COLUMNS: tuple[tuple[str, str], ...] = (
    ("Image", "image"), ("Python", "python"), ("Package", "package"), ("Command", "command"),
    ("Timeout", "timeout"), ("Max jobs", "max_jobs"), ("Nice", "nice"),
    ("Working dir", "cwd"), ("Subtasks", "subtasks"),
)
DATABASE_COLUMNS: tuple[tuple[str, str], ...] = (("Label", "label"), ("URI", "uri"),
                                                 ("Type", "type"))
_INTEGER_KEYS = ("max_jobs", "nice")
_SUBTASKS = len(ALGORITHM_COLUMNS) - 1
_TYPE = 2

_ALGORITHMS_HELP = (
    "Only the images listed here run on this node (exactly as researchers post them). Give "
    "either Python + Package (the official wrapper with that interpreter and algorithm "
    "package) or a Command (placeholders {run} {task} {image} {workdir} {input} {output} "
    "{token} {tmp}). Timeouts as 6h, 90m or seconds.")
_DATABASES_HELP = ("The labels researchers select, and the data each stands for on this node "
                   "(as the official node's databases). Environment variables (passwords) of "
                   "images and databases stay as the settings file has them: edit them there.")


def _table(columns: tuple[tuple[str, str], ...], name: str) -> QTableWidget:
    table = QTableWidget(0, len(columns))
    table.setHorizontalHeaderLabels([heading for heading, _key in columns])
    table.verticalHeader().hide()
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setAccessibleName(name)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    table.setWordWrap(False)  # one line a row; a long command is elided, in full when edited
    return table


def _text(table: QTableWidget, row: int, column: int) -> str:
    item = table.item(row, column)
    return item.text().strip() if item is not None else ""


class V6Tab(QWidget):
    """Edit a copy of the node's algorithms and databases; read :meth:`v6_settings` (the
    Settings dialog reads it as a gui.source_window.SourceSettingsTab)."""

    changed = Signal()
    title = "&vantage6 node"
    area = "vantage6 node"

    def __init__(self, v6: V6Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._original = v6

        self.algorithms = _table(ALGORITHM_COLUMNS, "Algorithms")
        self.algorithms.horizontalHeader().setSectionResizeMode(
            3, QHeaderView.ResizeMode.Stretch)  # the command takes the spare width
        self.add_algorithm_button = QPushButton("Add &image")
        self.add_algorithm_button.clicked.connect(lambda: self.add_algorithm(""))
        self.remove_algorithm_button = QPushButton("Remove image")
        self.remove_algorithm_button.clicked.connect(
            lambda: self._remove_rows(self.algorithms))
        self.databases = _table(DATABASE_COLUMNS, "Databases")
        self.databases.horizontalHeader().setSectionResizeMode(
            1, QHeaderView.ResizeMode.Stretch)  # the URI
        self.add_database_button = QPushButton("Add &database")
        self.add_database_button.clicked.connect(lambda: self.add_database("", "", "csv"))
        self.remove_database_button = QPushButton("Remove database")
        self.remove_database_button.clicked.connect(lambda: self._remove_rows(self.databases))

        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #b00000;")
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.message.hide()

        layout = QVBoxLayout(self)
        for title, help_text, table, buttons in (
            ("Algorithms this node runs ([v6.algorithms])", _ALGORITHMS_HELP, self.algorithms,
             (self.add_algorithm_button, self.remove_algorithm_button)),
            ("Databases ([v6.databases])", _DATABASES_HELP, self.databases,
             (self.add_database_button, self.remove_database_button)),
        ):
            box = QGroupBox(title)
            box_layout = QVBoxLayout(box)
            help_label = QLabel(help_text)
            help_label.setWordWrap(True)
            help_label.setTextFormat(Qt.TextFormat.PlainText)
            box_layout.addWidget(help_label)
            box_layout.addWidget(table, 1)
            row = QHBoxLayout()
            for button in buttons:
                row.addWidget(button)
            row.addStretch(1)
            box_layout.addLayout(row)
            layout.addWidget(box, 1)
        layout.addWidget(self.message)

        for image, algorithm in v6.algorithms.items():
            self.add_algorithm(image, {
                "python": algorithm.python, "package": algorithm.package,
                "command": algorithm.command, "cwd": algorithm.cwd,
                "timeout": (format_duration(algorithm.timeout)
                            if algorithm.timeout is not None else None),
                "max_jobs": algorithm.max_jobs, "nice": algorithm.nice,
                "subtasks": algorithm.subtasks}, select=False)
        for label, database in v6.databases.items():
            self.add_database(label, database.uri, database.type, select=False)
        self.algorithms.resizeColumnsToContents()
        self.databases.resizeColumnsToContents()
        # Image names are registry paths ("harbor2.vantage6.ai/demo/average") and the image
        # is how the operator finds a row: an empty table's width showed "v6-d…".
        for table, width in ((self.algorithms, 240), (self.databases, 140)):
            table.setColumnWidth(0, max(table.columnWidth(0), width))
        for table in (self.algorithms, self.databases):
            table.itemChanged.connect(self._item_changed)

    # -- rows -------------------------------------------------------------------------------
    def add_algorithm(self, image: str, values: dict[str, Any] | None = None, *,
                      select: bool = True) -> int:
        values = values or {}
        table = self.algorithms
        table.blockSignals(True)
        row = table.rowCount()
        table.insertRow(row)
        for column, (_heading, key) in enumerate(ALGORITHM_COLUMNS):
            if column == _SUBTASKS:
                item = QTableWidgetItem()
                item.setToolTip("The algorithm may create subtasks: it gets the node's "
                                "local proxy to the server")
                item.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled
                              | Qt.ItemFlag.ItemIsSelectable)
                item.setCheckState(Qt.CheckState.Checked if values.get("subtasks")
                                   else Qt.CheckState.Unchecked)
            else:
                value = image if key == "image" else values.get(key)
                item = QTableWidgetItem("" if value is None else str(value))
                item.setToolTip(item.text())
            table.setItem(row, column, item)
        table.blockSignals(False)
        if select:
            table.setCurrentCell(row, 0 if not image else 1)
            table.editItem(table.currentItem())
            self.changed.emit()
        return row

    def add_database(self, label: str, uri: str, kind: str, *, select: bool = True) -> int:
        table = self.databases
        table.blockSignals(True)
        row = table.rowCount()
        table.insertRow(row)
        for column, text in ((0, label), (1, uri)):
            item = QTableWidgetItem(text)
            item.setToolTip(text)
            table.setItem(row, column, item)
        table.setItem(row, _TYPE, QTableWidgetItem(""))
        combo = QComboBox()
        combo.addItems(DATABASE_TYPES)
        combo.setCurrentIndex(max(0, combo.findText(kind)))
        combo.currentIndexChanged.connect(lambda _index: self.changed.emit())
        table.setCellWidget(row, _TYPE, combo)
        table.blockSignals(False)
        if select:
            table.setCurrentCell(row, 0)
            table.editItem(table.currentItem())
            self.changed.emit()
        return row

    def _item_changed(self, item: QTableWidgetItem) -> None:
        table = item.tableWidget()
        table.blockSignals(True)  # a tooltip is a change of the item too
        item.setToolTip(item.text())  # a long command or URI is elided in its cell
        table.blockSignals(False)
        self.changed.emit()

    def _remove_rows(self, table: QTableWidget) -> None:
        rows = sorted({index.row() for index in table.selectedIndexes()}
                      or ({table.currentRow()} - {-1}), reverse=True)
        for row in rows:
            table.removeRow(row)
        if rows:
            self.changed.emit()

    # -- as the Settings dialog's source tab (gui.source_window.SourceSettingsTab) -----------
    def widget(self) -> QWidget:
        return self

    def on_changed(self, slot: Callable[[], None]) -> None:
        self.changed.connect(slot)

    def write(self, settings: Settings) -> Settings:
        return dataclasses.replace(settings, plugins={**settings.plugins,
                                                      "v6": self.v6_settings()})

    def select(self, key: str) -> None:
        self.select_image(key)  # a node's service key is its image

    def select_image(self, image: str) -> None:
        """Show an image's row; an image not listed yet gets a new row to fill in."""
        for row in range(self.algorithms.rowCount()):
            if _text(self.algorithms, row, 0) == image:
                self.algorithms.setCurrentCell(row, 1)
                return
        self.add_algorithm(image)

    # -- reading the rows -------------------------------------------------------------------
    def _raw(self) -> dict[str, Any]:
        """The rows as the settings file's [v6] table; ValueError for what the parser
        cannot be given (a missing key, a key twice, a number that is not one)."""
        algorithms: dict[str, Any] = {}
        for row in range(self.algorithms.rowCount()):
            image = _text(self.algorithms, row, 0)
            if not image:
                raise ValueError(f"algorithm row {row + 1}: the image is empty")
            if image in algorithms:
                raise ValueError(f"{image} is listed twice")
            entry: dict[str, Any] = {}
            for column, (heading, key) in enumerate(ALGORITHM_COLUMNS[1:_SUBTASKS], 1):
                text = _text(self.algorithms, row, column)
                if not text:
                    continue
                if key in _INTEGER_KEYS:
                    try:
                        entry[key] = int(text)
                    except ValueError:
                        raise ValueError(f"{image}: {heading} must be a whole number, "
                                         f"not {text!r}") from None
                else:
                    entry[key] = text
            subtasks = self.algorithms.item(row, _SUBTASKS)
            if subtasks is not None and subtasks.checkState() == Qt.CheckState.Checked:
                entry["subtasks"] = True
            earlier = self._original.algorithms.get(image)
            # Isolation and limits have no column yet: kept as the file says; a new image
            # is written with its kind's default (a sandbox without network), to be seen.
            entry.update(earlier.policy if earlier is not None else new_algorithm_policy())
            if earlier is not None and earlier.env:
                entry["env"] = dict(earlier.env)
            if earlier is not None and earlier.send_output_tail is not None:
                entry["send_output_tail"] = earlier.send_output_tail  # not shown: kept
            algorithms[image] = entry
        databases: dict[str, Any] = {}
        for row in range(self.databases.rowCount()):
            label = _text(self.databases, row, 0)
            if not label:
                raise ValueError(f"database row {row + 1}: the label is empty")
            if label in databases:
                raise ValueError(f"the database label {label} is listed twice")
            combo = self.databases.cellWidget(row, _TYPE)
            kind = combo.currentText() if isinstance(combo, QComboBox) else ""
            entry = {"uri": _text(self.databases, row, 1), "type": kind}
            if not entry["uri"]:
                raise ValueError(f"database {label}: the URI is empty")
            earlier_db = self._original.databases.get(label)
            if earlier_db is not None and earlier_db.env:
                entry["env"] = dict(earlier_db.env)
            databases[label] = entry
        return {"algorithms": algorithms, "databases": databases}

    def v6_settings(self) -> V6Settings:
        """The node's settings with the tables as edited; ValueError says what is wrong."""
        try:
            parsed = parse_v6_settings(self._raw())
        except V6SettingsError as exc:
            raise ValueError(str(exc)) from None
        # What each image inherits from the file's [defaults] (not a table of this tab).
        algorithms = {image: dataclasses.replace(
            algorithm, inherited=dict(earlier.inherited)) if (
                earlier := self._original.algorithms.get(image)) is not None else algorithm
            for image, algorithm in parsed.algorithms.items()}
        return dataclasses.replace(self._original, algorithms=algorithms,
                                   databases=parsed.databases)

    def problems(self) -> list[str]:
        try:
            self.v6_settings()
        except ValueError as exc:
            self.message.setText(str(exc))
            self.message.show()
            return [str(exc)]
        self.message.hide()
        return []
