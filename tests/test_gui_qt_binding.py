"""Guards against a broken Qt binding: PySide6 6.12.0's abi3 build on Python < 3.12 loses a
reference to None on every Qt call returning nothing, which aborts the console ("deallocating
None") after a minute of live log output."""

from __future__ import annotations

import sys

from PySide6.QtGui import QTextCursor, QTextDocument
from PySide6.QtWidgets import QLabel


def test_qt_calls_keep_none_alive(qtbot) -> None:
    label = QLabel()
    qtbot.addWidget(label)
    cursor = QTextCursor(QTextDocument())
    calls = [lambda: label.setText("x"), lambda: cursor.insertText("a"),
             lambda: label.setObjectName("y")]
    for call in calls:
        call()
    before = sys.getrefcount(None)
    for _ in range(2000):
        for call in calls:
            call()
    # A correct binding leaves None's count unchanged (a few refs of jitter allowed).
    assert sys.getrefcount(None) - before > -100
