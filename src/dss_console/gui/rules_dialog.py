"""Approval rules (issue 20 §3): what the engine approves or releases by itself, listed
with who added it, each revocable; a new rule for a service from here too. Every call goes
to the engine off the Qt thread; the window saves the rules the engine then publishes
(gate_actions.GateController.rules_edited)."""

from __future__ import annotations

import datetime as dt

from PySide6.QtCore import QDate, Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDateEdit,
    QDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from dss_console.engine.engine import EngineError
from dss_console.engine.gate import RULE_GATES, ApprovalRule
from dss_console.engine.remote import EngineCallError, EngineGoneError, RemoteEngine
from dss_console.gui.tasks import run_blocking, spawn

ENGINE_ERRORS = (EngineError, EngineCallError, EngineGoneError)
ENDED_COLOUR = "#6e7781"
COLUMNS = ("Service", "Requester", "Gate", "Until", "Added by", "Added", "Rule")


class RulesDialog(QDialog):
    """Non-modal: opened with show(), so nothing waits in a nested event loop."""

    def __init__(self, engine: RemoteEngine, services: list[str],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Approval rules")
        self.resize(860, 320)
        self._engine = engine
        self.rules: list[ApprovalRule] = []
        intro = QLabel("What is approved (run) or released by itself. Each decision a rule "
                       "makes names it in the ledger; a revoked rule decides nothing more.")
        intro.setWordWrap(True)
        self.table = QTreeWidget()
        self.table.setHeaderLabels(list(COLUMNS))
        self.table.setRootIsDecorated(False)
        self.table.setAlternatingRowColors(True)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.revoke_button = QPushButton("Revoke")
        self.revoke_button.setEnabled(False)
        self.revoke_button.clicked.connect(self._revoke_clicked)
        self.message = QLabel()
        self.message.setWordWrap(True)

        self.service_box = QComboBox()
        self.service_box.setEditable(True)
        self.service_box.addItems(services)
        self.service_box.setToolTip("The service's name or hash (a vantage6 image)")
        self.requester_edit = QLineEdit()
        self.requester_edit.setPlaceholderText("requester key (empty: anyone)")
        self.gate_box = QComboBox()
        self.gate_box.addItems(list(RULE_GATES))
        self.limited = QCheckBox("until")
        self.until = QDateEdit(QDate.currentDate().addMonths(3))
        self.until.setDisplayFormat("yyyy-MM-dd")
        self.until.setCalendarPopup(True)
        self.until.setEnabled(False)
        self.limited.toggled.connect(self.until.setEnabled)
        self.add_button = QPushButton("Add rule")
        self.add_button.clicked.connect(self._add_clicked)
        adding = QHBoxLayout()
        for widget in (self.service_box, self.requester_edit, self.gate_box, self.limited,
                       self.until, self.add_button):
            adding.addWidget(widget)
        adding.setStretch(0, 2)
        adding.setStretch(1, 2)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        bottom = QHBoxLayout()
        bottom.addWidget(self.revoke_button)
        bottom.addWidget(self.message, 1)
        bottom.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.table, 1)
        layout.addLayout(bottom)
        layout.addWidget(QLabel("New rule:"))
        layout.addLayout(adding)
        self.loaded = False  # True once the first list arrived (tests wait on it)
        spawn(self.reload())

    async def reload(self) -> None:
        try:
            rules = await run_blocking(self._engine.approval_rules)
        except ENGINE_ERRORS as exc:
            self.message.setText(f"Could not read the rules: {exc}")
            return
        self.show_rules(rules)
        self.loaded = True

    def show_rules(self, rules: list[ApprovalRule], today: dt.date | None = None) -> None:
        self.rules = list(rules)
        fill_rules(self.table, self.rules, today or dt.date.today())
        self._selection_changed()

    def selected_rule(self) -> str | None:
        items = self.table.selectedItems()
        value = items[0].data(0, Qt.ItemDataRole.UserRole) if items else None
        return str(value) if value else None

    def _selection_changed(self) -> None:
        self.revoke_button.setEnabled(self.selected_rule() is not None)

    def _revoke_clicked(self) -> None:
        rule_id = self.selected_rule()
        if rule_id is not None:
            spawn(self.revoke(rule_id))

    async def revoke(self, rule_id: str) -> bool:
        try:
            await run_blocking(self._engine.revoke_rule, rule_id)
        except ENGINE_ERRORS as exc:
            self.message.setText(f"Not revoked: {exc}")
            return False
        self.message.setText(f"Revoked {rule_id}.")
        await self.reload()
        return True

    def _add_clicked(self) -> None:
        spawn(self.add())

    async def add(self) -> bool:
        until = self.until.date().toString("yyyy-MM-dd") if self.limited.isChecked() else ""
        try:
            made = await run_blocking(self._engine.add_rule, self.service_box.currentText()
                                      .strip(), self.requester_edit.text().strip(),
                                      self.gate_box.currentText(), until)
        except ENGINE_ERRORS as exc:
            self.message.setText(f"No rule added: {exc}")
            return False
        self.message.setText(f"Added {made.rule_id}.")
        await self.reload()
        return True


def added_words(added: str) -> str:
    """A rule's UTC ISO time of adding as local 'YYYY-MM-DD HH:MM' ('' when not known)."""
    if not added:
        return ""
    try:
        when = dt.datetime.fromisoformat(added.replace("Z", "+00:00"))
    except ValueError:
        return added
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone().strftime("%Y-%m-%d %H:%M")


def fill_rules(table: QTreeWidget, rules: list[ApprovalRule], today: dt.date) -> None:
    """One row per rule (its id in the first cell's data); a rule past its last day greyed
    and said "(ended)": it stays listed until revoked, so the ledger's names resolve."""
    table.clear()
    for rule in rules:
        ended = not rule.valid_on(today)
        row = QTreeWidgetItem([rule.service, rule.requester or "anyone", rule.gate,
                               (rule.until or "always") + (" (ended)" if ended else ""),
                               rule.added_by, added_words(rule.added), rule.rule_id])
        row.setData(0, Qt.ItemDataRole.UserRole, rule.rule_id)
        row.setToolTip(0, rule.describe())
        if ended:
            for column in range(len(COLUMNS)):
                row.setForeground(column, QBrush(QColor(ENDED_COLOUR)))
        table.addTopLevelItem(row)
    for column in range(len(COLUMNS)):
        table.resizeColumnToContents(column)
    if not rules:
        table.addTopLevelItem(QTreeWidgetItem(["No rules: every gated job waits for you."]))
