"""A banner above the panes while a service is paused: which, why, and Resume.

A pause is a state, not a message: the banner follows the services as last shown and goes
when the pause ends (Resume, a fixed command that starts, a retried ticket that succeeds),
however it ended. It is not the window's message banner, so neither hides the other.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QWidget

from dss_console.engine.engine import ServiceView
from dss_console.gui.detail_pane import BLOCKED_STYLE, BLOCKED_STYLE_DARK


class PauseBanner(QFrame):
    resumeRequested = Signal(list)  # hashes of the paused services

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("pauseBanner")
        self.text = QLabel()
        self.text.setWordWrap(True)
        # Plain text: a reason quotes a command's or the cluster's words, never markup.
        self.text.setTextFormat(Qt.TextFormat.PlainText)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Lift the pause: auto claiming goes on and blocked "
                                      "tickets try their command again")
        self.resume_button.clicked.connect(
            lambda: self.resumeRequested.emit(list(self._paused)))
        layout = QHBoxLayout(self)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.resume_button, 0, Qt.AlignmentFlag.AlignTop)
        self._paused: dict[str, tuple[str, str]] = {}  # hash -> (name, why)
        self._claimable: set[str] = set()
        self._style()
        self.setVisible(False)

    def set_services(self, views: Sequence[ServiceView]) -> None:
        self._paused = {v.service_hash: (v.name, v.paused) for v in views if v.paused}
        self._claimable = {v.service_hash for v in views if v.command and v.auto}
        self.text.setText("\n".join(f"Paused: {name}: {why}"
                                    for name, why in self._paused.values()))
        self.setVisible(bool(self._paused))

    def status_text(self) -> str | None:
        """For the status bar when nothing can be claimed because every service Auto mode
        would claim for is paused (else the poll countdown says what happens)."""
        if not self._claimable or not self._claimable <= set(self._paused):
            return None
        names = [self._paused[h][0] for h in self._claimable]
        return f"Paused: {names[0]}" if len(names) == 1 else f"{len(names)} services paused"

    def _style(self) -> None:
        dark = self.palette().color(QPalette.ColorRole.Base).lightness() < 128
        style = (BLOCKED_STYLE_DARK if dark else BLOCKED_STYLE).replace("blockedBanner",
                                                                        "pauseBanner")
        if style != self.styleSheet():  # setting it changes the palette: once, not forever
            self.setStyleSheet(style)

    def changeEvent(self, event: QEvent) -> None:
        if event.type() == QEvent.Type.PaletteChange:
            self._style()
        super().changeEvent(event)
