"""A small dialog showing a URL or path the user can select and copy.

For when the desktop cannot open it (no browser, no file manager): the action must not fail
silently, and the user needs the text to open it another way.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)


class CopyableTextDialog(QDialog):
    """`text` explains, `value` (a URL or path) is shown selectable with a Copy button."""

    def __init__(self, title: str, text: str, value: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.setMinimumWidth(460)  # the explanation in a few lines, not a narrow column
        self.label = QLabel(text)
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        self.value_edit = QLineEdit(value)
        self.value_edit.setReadOnly(True)
        self.value_edit.setCursorPosition(0)
        self.value_edit.setMinimumWidth(min(720, 12 + self.fontMetrics().horizontalAdvance(value)))
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy to the clipboard")
        self.copy_button.clicked.connect(self.copy)
        self.copied_label = QLabel("")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        row = QHBoxLayout()
        row.addWidget(self.value_edit, 1)
        row.addWidget(self.copy_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.label)
        layout.addLayout(row)
        layout.addWidget(self.copied_label)
        layout.addWidget(buttons)
        self.value_edit.selectAll()
        self.value_edit.setFocus()

    def value(self) -> str:
        return self.value_edit.text()

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.value())
        self.copied_label.setText("Copied.")


def show_copyable(parent: QWidget | None, title: str, text: str,
                  value: str) -> CopyableTextDialog:
    """Show the dialog without blocking (open(), not exec(): no nested event loop inside
    the qasync loop, and tests are never stuck on it)."""
    dialog = CopyableTextDialog(title, text, value, parent)
    dialog.open()
    return dialog
