"""The detail pane's gate tab: what a job waiting for the operator's decision is, and the
decision's buttons.

Before its run: the facts its source gives (who asked, what image, method and arguments,
which databases; values marked local-only are for this operator's eyes and never leave the
machine), with the workspace inspector's layers and Open in ITK-SNAP where the inputs are
a workspace. Before its result leaves: the files that would be sent (name, size, SHA-256), a
readable preview of a JSON or table output, the held log messages. The view is fetched off
the Qt thread (gui/gate_actions.py); this module only shows it.
"""

from __future__ import annotations

import html
import shutil
import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from dss_console.core.presentation import ApprovalView, Fact, Presentation, Preview

WARNING_COLOUR = "#c62828"
LOCAL_ONLY_TIP = "Shown on this machine only: never sent, logged or written to the ledger"


def format_size(size: int) -> str:
    """1234567 -> '1.2 MB', 512 -> '512 B'."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def waited_words(since: float | None, now: float, deadline: float | None = None) -> str:
    """'waiting since 14:03 (12 min)', with ', fails at 16:03 without a decision' when a
    timeout applies; '' when not known."""
    if since is None:
        return ""
    minutes = max(0, int(now - since) // 60)
    span = ("under a minute" if minutes < 1 else f"{minutes} min" if minutes < 120
            else f"{minutes // 60} h {minutes % 60} min")
    text = f"waiting since {time.strftime('%H:%M', time.localtime(since))} ({span})"
    if deadline is not None:
        same_day = time.localtime(deadline)[:3] == time.localtime(now)[:3]
        when = time.strftime("%H:%M" if same_day else "%Y-%m-%d %H:%M",
                             time.localtime(deadline))
        text += f", fails at {when} without a decision"
    return text


def fit_height(tree: QTreeWidget, most: int = 12) -> None:
    """A short list takes the height of its rows (the rest of the tab stays for the preview
    below it); a long one scrolls past ``most`` rows."""
    rows = max(1, min(tree.topLevelItemCount(), most))
    row = tree.sizeHintForRow(0) if tree.topLevelItemCount() else tree.fontMetrics().height()
    tree.setMaximumHeight(tree.header().sizeHint().height() + rows * max(row, 1)
                          + 2 * tree.frameWidth() + 4)


class ApprovalPane(QWidget):
    """One waiting job's facts or preview, and Approve / Approve always… / Reject… /
    Release. Emits what the operator asked for; the window's actions do it."""

    decisionRequested = Signal(str)  # "approve" | "reject" | "release" (the core actions)
    alwaysRequested = Signal()       # Approve always…: a rule, then approve
    openRequested = Signal(str)      # "open_inputs" | "open_result": in the viewer
    rulesRequested = Signal()        # the rules list

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view: ApprovalView | None = None
        self.presentation: Presentation | None = None
        self.heading = QLabel()
        self.heading.setWordWrap(True)
        self.heading.setTextFormat(Qt.TextFormat.RichText)
        self.heading.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.warning = QLabel()
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet(f"color: {WARNING_COLOUR}; font-weight: bold")
        self.warning.setVisible(False)

        self.facts = QTreeWidget()
        self.facts.setHeaderLabels(["", "Value"])
        self.facts.setRootIsDecorated(False)
        self.facts.setAlternatingRowColors(True)
        self.facts.setWordWrap(True)
        # The workspace inspector's layers (roles, tags, files), as the inputs tab has them:
        # the detail pane copies them here (DetailPane.set_inputs).
        self.inputs_note = QLabel()
        self.inputs_note.setWordWrap(True)
        self.inputs = QTreeWidget()
        self.inputs.setRootIsDecorated(False)
        self.inputs.setAlternatingRowColors(True)
        self.files = QTreeWidget()
        self.files.setHeaderLabels(["Would leave", "Kind", "Size", "SHA-256"])
        self.files.setRootIsDecorated(False)
        self.files.setAlternatingRowColors(True)
        self.preview_text = QPlainTextEdit()
        self.preview_text.setReadOnly(True)
        self.preview_text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.preview_table = QTableWidget()
        self.preview_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.preview_table.verticalHeader().setVisible(False)
        self.preview_table.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents)
        self.messages = QTreeWidget()
        self.messages.setHeaderLabels(["Messages that would be sent"])
        self.messages.setRootIsDecorated(False)
        # The lists take their rows' height; the preview (text, table) the rest.
        self.content = QWidget()
        content = QVBoxLayout(self.content)
        content.setContentsMargins(0, 0, 0, 0)
        content.addWidget(self.facts)
        content.addWidget(self.inputs_note)
        content.addWidget(self.inputs)
        content.addWidget(self.files)
        content.addWidget(self.messages)
        content.addWidget(self.preview_text, 1)
        content.addWidget(self.preview_table, 1)
        content.addStretch(0)

        self.approve_button = QPushButton("Approve")
        self.always_button = QPushButton("Approve always…")
        self.always_button.setToolTip("Approve this one and keep a rule that approves this "
                                      "requester's work for this service from now on "
                                      "(optionally until a date); revocable in Rules…")
        self.release_button = QPushButton("Release")
        self.reject_button = QPushButton("Reject…")
        self.open_button = QPushButton("Open in ITK-SNAP")
        self.open_result_button = QPushButton("Open result")
        self.rules_button = QPushButton("Rules…")
        self.rules_button.setToolTip("The approval rules: who and what is approved by itself")
        self.approve_button.clicked.connect(lambda: self.decisionRequested.emit("approve"))
        self.release_button.clicked.connect(lambda: self.decisionRequested.emit("release"))
        self.reject_button.clicked.connect(lambda: self.decisionRequested.emit("reject"))
        self.always_button.clicked.connect(self.alwaysRequested.emit)
        self.open_button.clicked.connect(lambda: self.openRequested.emit("open_inputs"))
        self.open_result_button.clicked.connect(lambda: self.openRequested.emit("open_result"))
        self.rules_button.clicked.connect(self.rulesRequested.emit)
        buttons = QHBoxLayout()
        for button in (self.approve_button, self.always_button, self.release_button,
                       self.reject_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        for button in (self.open_button, self.open_result_button, self.rules_button):
            buttons.addWidget(button)

        layout = QVBoxLayout(self)
        layout.addWidget(self.heading)
        layout.addWidget(self.warning)
        layout.addWidget(self.content, 1)
        layout.addLayout(buttons)
        self.show_loading()

    # -- what is shown ------------------------------------------------------------------------
    def show_loading(self, text: str = "") -> None:
        """Before the engine answered (or when it could not): words, no buttons."""
        self.view = None
        self.heading.setText(html.escape(text))
        self.warning.setVisible(False)
        self.messages.setVisible(False)
        for widget in (self.facts, self.files, self.preview_text, self.preview_table,
                       self.inputs, self.inputs_note):
            widget.setVisible(False)
        for button in self._decision_buttons():
            button.setVisible(False)
        for button in (self.open_button, self.open_result_button):
            button.setVisible(False)

    def show_view(self, view: ApprovalView, presentation: Presentation,
                  now: float | None = None) -> None:
        self.view = view
        self.presentation = presentation
        before_run = view.gate == "run"
        fields = presentation.word_fields()
        # Before the run the facts say who asked (with the rest); the review says it here.
        requester = (f"<br>{html.escape(presentation.text('requester_label') or 'Requested by')}"
                     f": <b>{html.escape(view.requester.words())}</b>"
                     if view.requester is not None and not before_run else "")
        what = ("waits for your approval before it runs" if before_run
                else "ran; its result waits for your review before it leaves")
        waited = waited_words(view.waiting_since, now or time.time(), view.deadline)
        self.heading.setText(
            f"<b>{html.escape(fields['Job'])} {view.ticket_id}</b> · "
            f"{html.escape(view.service)} {what}."
            + (f"<br><span style='color:gray'>{html.escape(waited.capitalize())}</span>"
               if waited else "") + requester)
        self.approve_button.setVisible(before_run)
        self.always_button.setVisible(before_run)
        self.release_button.setVisible(not before_run)
        self.reject_button.setVisible(True)
        workspace = presentation.inputs_view == "workspace"
        viewer = presentation.action("open_inputs")
        self.inputs_note.setVisible(before_run and workspace)
        self.inputs.setVisible(before_run and workspace)
        self.open_button.setVisible(before_run and viewer is not None)
        self.open_result_button.setVisible(not before_run and viewer is not None)
        # As the jobs pane's button: off when its program is not installed here.
        installed = viewer is not None and bool(viewer.program) \
            and shutil.which(viewer.program) is not None
        self.open_button.setEnabled(installed)
        self.open_result_button.setEnabled(installed)
        if viewer is not None:
            tip = "" if installed else f" ({viewer.program or 'its program'} is not on PATH)"
            self.open_button.setToolTip(viewer.tip + tip)
            self.open_result_button.setToolTip("Open the result that would leave" + tip)
            self.open_button.setText(viewer.label)
            self.open_result_button.setText(viewer.label.replace("Open", "Open result", 1)
                                             if viewer.label.startswith("Open")
                                             else "Open result")
        self.facts.setVisible(before_run)
        self._show_facts(view.facts if before_run else ())
        self._show_preview(None if before_run else (view.preview or Preview()))

    def show_inputs(self, note: str, tree: QTreeWidget) -> None:
        """The input workspace's layers as ``tree`` (the inputs tab) shows them."""
        self.inputs_note.setText(note)
        self.inputs.clear()
        header = tree.headerItem()
        self.inputs.setHeaderLabels([header.text(c) for c in range(tree.columnCount())])
        for row in range(tree.topLevelItemCount()):
            self.inputs.addTopLevelItem(tree.topLevelItem(row).clone())
        for column in range(max(0, tree.columnCount() - 1)):
            self.inputs.resizeColumnToContents(column)
        fit_height(self.inputs)

    def _decision_buttons(self) -> tuple[QPushButton, ...]:
        return (self.approve_button, self.always_button, self.release_button,
                self.reject_button)

    def _show_facts(self, facts: tuple[Fact, ...]) -> None:
        self.facts.clear()
        warnings = [f"{fact.label}: {fact.warning}" for fact in facts if fact.warning]
        for fact in facts:
            value = fact.value + ("  (shown here only)" if fact.local_only else "")
            row = QTreeWidgetItem([fact.label, value])
            row.setToolTip(1, fact.value if not fact.local_only
                           else f"{fact.value}\n\n{LOCAL_ONLY_TIP}")
            if fact.warning:
                row.setForeground(0, QBrush(QColor(WARNING_COLOUR)))
                row.setForeground(1, QBrush(QColor(WARNING_COLOUR)))
                row.setToolTip(0, fact.warning)
            self.facts.addTopLevelItem(row)
        self.facts.resizeColumnToContents(0)
        self.facts.setColumnWidth(0, self.facts.columnWidth(0) + 16)
        fit_height(self.facts)
        self.warning.setText("⚠ " + "; ".join(warnings))
        self.warning.setVisible(bool(warnings))
        if not facts:
            self.facts.addTopLevelItem(QTreeWidgetItem(["", "The source gives no facts."]))

    def _show_preview(self, preview: Preview | None) -> None:
        self.files.clear()
        self.files.setVisible(preview is not None)
        self.preview_text.setVisible(preview is not None and bool(preview.text))
        self.preview_table.setVisible(preview is not None and bool(preview.rows))
        self.messages.setVisible(preview is not None and bool(preview.messages))
        if preview is None:
            return
        total = 0
        for file in preview.files:
            total += file.size
            row = QTreeWidgetItem([file.name, file.role, format_size(file.size),
                                   file.sha256[:16]])
            row.setToolTip(0, file.name)
            row.setToolTip(3, file.sha256)
            row.setTextAlignment(2, Qt.AlignmentFlag.AlignRight)
            self.files.addTopLevelItem(row)
        if not preview.files:
            self.files.addTopLevelItem(QTreeWidgetItem(["No file would leave", "", "", ""]))
        count = len(preview.files)
        self.files.setHeaderLabels([f"Would leave ({count} file{'s' if count != 1 else ''}, "
                                    f"{format_size(total)})", "Kind", "Size", "SHA-256"])
        for column in range(1, 4):
            self.files.resizeColumnToContents(column)
        self.files.setColumnWidth(0, max(self.files.columnWidth(0), 320))
        fit_height(self.files)
        self.preview_text.setPlainText(preview.text)
        self._show_rows(preview.rows)
        self.messages.clear()
        for message in preview.messages:
            item = QTreeWidgetItem([message])
            item.setToolTip(0, message)
            self.messages.addTopLevelItem(item)
        fit_height(self.messages, most=6)

    def _show_rows(self, rows: tuple[tuple[str, ...], ...]) -> None:
        self.preview_table.clear()
        if not rows:
            self.preview_table.setRowCount(0)
            self.preview_table.setColumnCount(0)
            return
        header, *body = rows
        self.preview_table.setColumnCount(len(header))
        self.preview_table.setHorizontalHeaderLabels(list(header))
        self.preview_table.setRowCount(len(body))
        for r, row in enumerate(body):
            for c, cell in enumerate(row):
                self.preview_table.setItem(r, c, QTableWidgetItem(cell))
