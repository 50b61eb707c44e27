"""A settings file that does not load: the question asked when the operator's changes
cannot be saved to it, and replacing it while keeping a copy of it."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from dss_console.engine.settings import Settings, SettingsError, save_settings
from dss_console.gui.service_editor import _PROBLEM_STYLE

__all__ = ["FIX_FILE", "REPLACE_FILE", "BrokenSettingsDialog", "replace_settings_file"]

REPLACE_FILE, FIX_FILE = "replace", "fix"


def replace_settings_file(settings: Settings, path: Path, now: float | None = None
                          ) -> Path | None:
    """Save `settings` to `path`, first copying the file there now to
    `<name>.broken-<YYYYmmdd-HHMMSS>` beside it (never over an earlier copy). Returns the
    copy's path, or None when there was no file. Blocking (disk): call it off the Qt thread.
    """
    backup = None
    if path.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        for n in range(1, 1000):
            candidate = path.with_name(f"{path.name}.broken-{stamp}"
                                       + (f"-{n}" if n > 1 else ""))
            try:
                # "x": an earlier copy (a second replace within the same second) stays.
                with open(path, "rb") as source, open(candidate, "xb") as target:
                    shutil.copyfileobj(source, target)
            except FileExistsError:
                continue
            shutil.copymode(path, candidate)
            backup = candidate
            break
        else:
            raise SettingsError(f"{path}: too many backup copies named {path.name}.broken-*")
    save_settings(settings, path)
    return backup


class BrokenSettingsDialog(QDialog):
    """Asked after Settings… → OK while the settings file does not load: replace the file
    (keeping a copy of it) or fix it first. Either way the changes apply to this session.
    After it closes, :attr:`choice` is REPLACE_FILE, FIX_FILE or None (keep them unsaved)."""

    def __init__(self, path: Path, problem: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.choice: str | None = None
        self.setWindowTitle("Settings not saved")
        headline = QLabel("<b>The settings file does not load, so your changes were not "
                          "saved.</b> They apply to this session only.")
        headline.setWordWrap(True)
        self.problem_label = QLabel(problem)
        self.problem_label.setWordWrap(True)
        self.problem_label.setTextFormat(Qt.TextFormat.PlainText)  # quotes the file
        self.problem_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.problem_label.setStyleSheet(_PROBLEM_STYLE)
        self.path_edit = QLineEdit(str(path))
        self.path_edit.setReadOnly(True)
        explain = QLabel(
            f"Replace the file with these settings? The file as it is now is kept beside it as "
            f"{path.name}.broken-<date>-<time>. Or fix it first in an editor, then press "
            "“Reload settings file” in the window.")
        explain.setWordWrap(True)
        explain.setTextFormat(Qt.TextFormat.PlainText)
        self.replace_button = QPushButton("&Replace the file")
        self.fix_button = QPushButton("&Open the file to fix it")
        self.keep_button = QPushButton("&Keep for this session")
        buttons = QDialogButtonBox()
        buttons.addButton(self.replace_button, QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton(self.fix_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.keep_button, QDialogButtonBox.ButtonRole.RejectRole)
        # Enter keeps the changes in memory: the choice that changes nothing on disk.
        for button in (self.replace_button, self.fix_button):
            button.setAutoDefault(False)
        self.keep_button.setDefault(True)
        self.replace_button.clicked.connect(lambda: self._choose(REPLACE_FILE))
        self.fix_button.clicked.connect(lambda: self._choose(FIX_FILE))
        self.keep_button.clicked.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addWidget(headline)
        layout.addWidget(self.problem_label)
        form = QFormLayout()
        form.addRow("File", self.path_edit)
        layout.addLayout(form)
        layout.addWidget(explain)
        layout.addWidget(buttons)
        self.setMinimumWidth(560)

    def _choose(self, choice: str) -> None:
        self.choice = choice
        self.accept()
