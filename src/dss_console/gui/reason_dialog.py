"""The words a user or researcher reads when the operator fails or cancels their work."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

__all__ = ["ReasonDialog"]


class ReasonDialog(QDialog):
    """A multi-line reason; OK stays disabled until something other than spaces is typed,
    so an empty reason is never accepted and then complained about."""

    def __init__(self, title: str, label: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.label = QLabel(label)
        self.label.setWordWrap(True)
        self.edit = QPlainTextEdit()
        self.edit.setTabChangesFocus(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                        | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.hint = QLabel("A reason is required: the person who asked reads it.")
        layout = QVBoxLayout(self)
        layout.addWidget(self.label)
        layout.addWidget(self.edit, 1)
        layout.addWidget(self.hint)
        layout.addWidget(self.buttons)
        self.edit.textChanged.connect(self._update)
        self.setMinimumWidth(460)
        self._update()

    @property
    def ok_button(self) -> QPushButton:
        return self.buttons.button(QDialogButtonBox.StandardButton.Ok)

    def reason(self) -> str:
        return self.edit.toPlainText().strip()

    def _update(self) -> None:
        self.ok_button.setEnabled(bool(self.reason()))
        self.hint.setVisible(not self.reason())

    def accept(self) -> None:
        if self.reason():  # Enter or a shortcut must not get past the disabled button
            super().accept()
