"""The provider's services: ready tickets, 24 h statistics, command configured, auto mode."""

from __future__ import annotations

from PySide6.QtCore import QItemSelectionModel, Qt, Signal
from PySide6.QtGui import QAction, QBrush, QColor, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from dss_console.core.history import ServiceHistory
from dss_console.core.presentation import Presentation, ServiceFigures
from dss_console.engine.engine import ServiceView
from dss_console.gui.history_chart import NO_SELECTION, HistoryChart
from dss_console.gui.jobs_model import DEFAULT_PRESENTATION

# Fits the left pane of a 1280 px window without scrolling: what a provider checks at a
# glance. When the server last heard from a provider and the average ticket time are in the
# Service cell's tooltip (as are the hash and the 24 h counts in words). Titles and tips are
# the source's (its Presentation's service_columns, by these ids).
COLUMN_IDS = ("name", "auto", "ready", "day", "command")
SERVICE_COLUMN = 0
AUTO_COLUMN = COLUMN_IDS.index("auto")
READY_COLUMN = COLUMN_IDS.index("ready")
DAY_COLUMN = COLUMN_IDS.index("day")
COMMAND_COLUMN = COLUMN_IDS.index("command")
HASH_ROLE = Qt.ItemDataRole.UserRole + 1
PAUSED_COLOUR = "#bc4c00"


def isolation_line(words: str) -> str:
    """A tooltip's line on how a service's command is contained ("" when not known)."""
    return f"Isolation: {words}" if words else ""


class ServicesPane(QWidget):
    claimRequested = Signal(list)  # service hashes
    editCommandRequested = Signal(str)  # service hash
    serviceAutoToggled = Signal(str, bool)
    autoModeToggled = Signal(bool)
    refreshRequested = Signal()
    resumeRequested = Signal(list)  # hashes of paused services the operator resumes
    servicesShown = Signal(list)  # the ServiceViews just shown ([] logged out)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.table = QTableWidget(0, len(COLUMN_IDS))
        self.table.setHorizontalHeaderLabels(list(COLUMN_IDS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        for column in range(len(COLUMN_IDS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        # The name takes the width left over (elided when very narrow), so the table never
        # needs a horizontal scroll bar for its numbers.
        header.setSectionResizeMode(SERVICE_COLUMN, QHeaderView.ResizeMode.Stretch)
        header.setStretchLastSection(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self._names: dict[str, str] = {}  # hash -> "name version"
        self._figures: dict[str, ServiceFigures] = {}
        # hash -> how its command is contained, in its executor's words (the engine's)
        self._isolation: dict[str, str] = {}
        self._plain_names: dict[str, str] = {}  # hash -> the service's name (no version)
        # The ledger's figures per service (issue 20, part 7), shown for the selected one.
        self._histories: dict[str, ServiceHistory] = {}
        self.history_chart = HistoryChart()

        self.claim_button = QPushButton("Claim next")
        # A QAction, not the button's own shortcut: QAbstractButton.setText() (the button
        # reads "Claiming…" while a claim is on its way) replaces a button's shortcut.
        self.claim_action = QAction("Claim next", self)
        self.claim_action.setShortcut(QKeySequence("Ctrl+N"))
        self.claim_action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self.claim_action.triggered.connect(self._claim_shortcut)
        self.addAction(self.claim_action)
        self.auto_button = QPushButton("Auto mode")
        self.auto_button.setCheckable(True)
        self.auto_button.setToolTip("Keep up to the configured number of jobs running, claiming "
                                    "tickets of services with Auto checked; stays as you leave "
                                    "it, also after a restart")
        self._auto_mode = False
        self.edit_button = QPushButton("Edit command…")
        self.refresh_button = QPushButton("Refresh")
        # Shown only while a service is paused: a paused service claims nothing by itself
        # until its command starts again or the operator says so.
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Resume auto claiming for the selected paused service(s)")
        self.resume_button.setVisible(False)
        self._paused: dict[str, str] = {}  # hash -> why
        self.presentation = DEFAULT_PRESENTATION
        self.summary = QLabel("Not logged in.")

        buttons = QHBoxLayout()
        for button in (self.claim_button, self.auto_button, self.edit_button,
                       self.refresh_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table, 3)
        layout.addLayout(buttons)
        # Resume beside the summary, not in the button row: the row's width is the least
        # width of the window's left side (the window must fit 1280 px).
        self.summary.setWordWrap(True)
        summary_row = QHBoxLayout()
        summary_row.addWidget(self.summary, 1)
        summary_row.addWidget(self.resume_button)
        layout.addLayout(summary_row)
        # The space under the table: the selected service's history, with a share of the
        # height (a few services leave the table mostly empty; many still get most of it).
        layout.addWidget(self.history_chart, 2)

        self.claim_button.clicked.connect(self._claim_clicked)
        self.edit_button.clicked.connect(self._edit_clicked)
        self.refresh_button.clicked.connect(self.refreshRequested)
        self.resume_button.clicked.connect(self._resume_clicked)
        self.auto_button.toggled.connect(self.autoModeToggled)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.itemSelectionChanged.connect(self._show_selected_history)
        self._update_buttons()
        self._show_selected_history()
        self.apply_presentation(self.presentation)

    # -- content ----------------------------------------------------------------------------
    def apply_presentation(self, presentation: Presentation) -> None:
        """Headers, tips and buttons in the source's words ("image" and "run" for a
        vantage6 node, "service" and "ticket" for DSS)."""
        self.presentation = presentation
        specs = {column.id: column for column in presentation.service_columns}
        for position, column_id in enumerate(COLUMN_IDS):
            spec = specs.get(column_id)
            item = self.table.horizontalHeaderItem(position)
            if item is None:
                item = QTableWidgetItem()
                self.table.setHorizontalHeaderItem(position, item)
            item.setText(spec.title if spec else column_id)
            item.setToolTip(spec.tip if spec else "")
        self.claim_button.setToolTip(presentation.text("claim_tip"))
        self.edit_button.setToolTip(presentation.text("commands_note"))

    def set_services(self, services: list[ServiceView]) -> None:
        selected = set(self.selected_hashes())
        rows = {self._hash_at(r): r for r in range(self.table.rowCount())}
        if set(rows) != {s.service_hash for s in services}:
            self.table.setRowCount(0)
            rows = {}
            self._paused.clear()
        added = False
        for view in services:
            row = rows.get(view.service_hash)
            if row is None:
                added = True
                row = self.table.rowCount()
                self.table.insertRow(row)
                for column in range(len(COLUMN_IDS)):
                    item = QTableWidgetItem("—")
                    item.setData(HASH_ROLE, view.service_hash)
                    self.table.setItem(row, column, item)
                checkbox = QCheckBox()
                checkbox.toggled.connect(
                    lambda on, h=view.service_hash: self.serviceAutoToggled.emit(h, on))
                self.table.setCellWidget(row, AUTO_COLUMN, checkbox)
            # A vantage6 image's "version" says how it runs (wrapper, command, no command).
            label = self.presentation.text("service_label", name=view.name,
                                           version=view.version) if view.version else ""
            self._names[view.service_hash] = label or view.name
            self._isolation[view.service_hash] = view.isolation
            self._plain_names[view.service_hash] = view.name
            self.table.item(row, SERVICE_COLUMN).setText(self._names[view.service_hash])
            self._update_tooltip(row, view.service_hash)
            command = view.command.command if view.command else None
            command_item = self.table.item(row, COMMAND_COLUMN)
            if view.paused:
                self._paused[view.service_hash] = view.paused
                command_item.setText("paused")
                command_item.setForeground(QBrush(QColor(PAUSED_COLOUR)))
                command_item.setToolTip(f"Auto claiming is paused: {view.paused}")
            else:
                self._paused.pop(view.service_hash, None)
                command_item.setText("yes" if command else "no")
                command_item.setData(Qt.ItemDataRole.ForegroundRole, None)
                command_item.setToolTip(
                    "\n".join(line for line in (command, isolation_line(view.isolation))
                              if line) if command else
                    "No command configured: tickets can be claimed and handled by hand")
            checkbox = self.table.cellWidget(row, AUTO_COLUMN)
            checkbox.blockSignals(True)
            checkbox.setChecked(view.auto)
            checkbox.blockSignals(False)
            self._style_auto_box(checkbox, command is not None)
            if view.service_hash in selected:
                self._select_row(row, clear=False)
        if added and not selected and self.table.rowCount() == 1:
            # The only service is what Claim next means: not greyed out waiting for a click
            # (when it is listed; a later refresh leaves the operator's selection alone).
            self._select_row(0, clear=True)
        self._update_buttons()
        self._show_selected_history()
        self.servicesShown.emit(list(services))

    def set_auto_mode(self, on: bool) -> None:
        """Show the console's Auto mode: the switch, and the per-service boxes as what they
        mean (which services Auto mode claims), greyed while it is off."""
        self._auto_mode = on
        self.auto_button.blockSignals(True)
        self.auto_button.setChecked(on)
        self.auto_button.blockSignals(False)
        for row in range(self.table.rowCount()):
            checkbox = self.table.cellWidget(row, AUTO_COLUMN)
            if checkbox is not None:
                has_command = self.table.item(row, COMMAND_COLUMN).text() != "no"
                self._style_auto_box(checkbox, has_command)

    def _style_auto_box(self, checkbox: QWidget, has_command: bool) -> None:
        checkbox.setEnabled(has_command and self._auto_mode)
        if not has_command:
            tip = "No command configured: nothing to run automatically"
        elif self._auto_mode:
            tip = "Auto mode claims this service's tickets when ticked"
        else:
            tip = "Auto mode is off: nothing is claimed automatically (switch it on first)"
        checkbox.setToolTip(tip)

    def set_ready(self, ready: dict[str, int]) -> None:
        for row in range(self.table.rowCount()):
            count = ready.get(self._hash_at(row))
            if count is not None:
                self.table.item(row, READY_COLUMN).setText(str(count))

    def set_figures(self, figures: dict[str, ServiceFigures]) -> None:
        """Each listed service's figures as the engine gave them (a service it left out
        keeps what it showed)."""
        self._figures.update(figures)
        for row in range(self.table.rowCount()):
            key = self._hash_at(row)
            found = figures.get(key)
            if found is None:
                continue
            if found.ready is not None:
                self.table.item(row, READY_COLUMN).setText(str(found.ready))
            day = self.table.item(row, DAY_COLUMN)
            day.setText(f"{found.done} / {found.failed}")
            day.setToolTip(self.presentation.text("day_tip", done=found.done,
                                                  failed=found.failed))
            self._update_tooltip(row, key)

    def show_histories(self, histories: dict[str, ServiceHistory]) -> None:
        """The ledger's figures per service, keyed by service name as the engine's
        ``ledger_stats`` gives them (the ledger's records name a job's service; two versions
        of one DSS service share a history); the chart shows the selected service's."""
        self._histories = dict(histories)
        self._show_selected_history()

    def history_of(self, service_hash: str) -> ServiceHistory | None:
        name = self._plain_names.get(service_hash)
        return self._histories.get(name) if name is not None else None

    def _show_selected_history(self) -> None:
        selected = self.selected_hashes()
        if len(selected) == 1:
            self.history_chart.set_history(self.history_of(selected[0]))
        else:
            self.history_chart.set_history(None, NO_SELECTION)

    def _update_tooltip(self, row: int, service_hash: str) -> None:
        figures = self._figures.get(service_hash)
        lines = [self._names.get(service_hash, ""), f"Hash {service_hash}",
                 isolation_line(self._isolation.get(service_hash, "")),
                 *(figures.lines if figures is not None else ())]
        self.table.item(row, SERVICE_COLUMN).setToolTip("\n".join(line for line in lines if line))

    def set_logged_in(self, logged_in: bool) -> None:
        if not logged_in:
            self.table.setRowCount(0)
            self._names.clear()
            self._figures.clear()
            self._isolation.clear()
            self._plain_names.clear()
            self._histories.clear()
            self._paused.clear()
            self._update_buttons()
            self._show_selected_history()
            self.summary.setText("Not logged in.")
            self.servicesShown.emit([])
        self.setEnabled(logged_in)

    # -- selection --------------------------------------------------------------------------
    def _hash_at(self, row: int) -> str:
        item = self.table.item(row, 0)
        return item.data(HASH_ROLE) if item else ""

    def selected_hashes(self) -> list[str]:
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        return [self._hash_at(row) for row in rows]

    def all_hashes(self) -> list[str]:
        return [self._hash_at(row) for row in range(self.table.rowCount())]

    def select_service(self, service_hash: str) -> None:
        for row in range(self.table.rowCount()):
            if self._hash_at(row) == service_hash:
                self._select_row(row, clear=True)

    def _select_row(self, row: int, clear: bool) -> None:
        # Not QTableView.selectRow(): it follows the keyboard modifiers held at the time, so
        # a refresh that lands while Ctrl is down (Ctrl+N) would toggle the row off.
        flags = QItemSelectionModel.SelectionFlag.Rows | (
            QItemSelectionModel.SelectionFlag.ClearAndSelect if clear
            else QItemSelectionModel.SelectionFlag.Select)
        self.table.selectionModel().select(self.table.model().index(row, 0), flags)

    def _update_buttons(self) -> None:
        has_selection = bool(self.selected_hashes())
        self.claim_button.setEnabled(has_selection)
        self.edit_button.setEnabled(len(self.selected_hashes()) == 1)
        self.resume_button.setVisible(bool(self._paused))
        self.resume_button.setEnabled(any(h in self._paused for h in self.selected_hashes()))

    def paused(self) -> dict[str, str]:
        """Paused services (hash -> why), as last shown."""
        return dict(self._paused)

    def _resume_clicked(self) -> None:
        hashes = [h for h in self.selected_hashes() if h in self._paused]
        if hashes:
            self.resumeRequested.emit(hashes)

    def _claim_shortcut(self) -> None:
        # The same rule as a click: nothing while the button is off (a claim in flight,
        # nothing selected, logged out or quitting).
        if self.claim_button.isEnabled():
            self._claim_clicked()

    def _claim_clicked(self) -> None:
        hashes = self.selected_hashes()
        if hashes:
            self.claimRequested.emit(hashes)

    def _edit_clicked(self) -> None:
        hashes = self.selected_hashes()
        if len(hashes) == 1:
            self.editCommandRequested.emit(hashes[0])
