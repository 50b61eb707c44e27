"""The live output log of one job.

The view holds only the tail of a job's output (``max_blocks`` lines): the whole output is
on disk (the runner's log file), so "Save full log…" copies that file and ``load_tail``
reads its end. Both run on a small private thread pool (log_disk.py); the Qt thread never
touches the disk. Output arrives in batches of up to a few thousand lines at up to 30 Hz, so a batch
is inserted with a handful of cursor edits in one edit block, never one edit per line.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontDatabase,
    QGuiApplication,
    QKeyEvent,
    QKeySequence,
    QPalette,
    QShortcut,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
)
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from dss_console.gui import log_disk
from dss_console.gui.log_disk import NOTE_PREFIX
from dss_console.gui.log_lines import line_severities, sanitize

__all__ = ["LogView"]

DEFAULT_MAX_BLOCKS = 20_000
FIND_MIN_CHARS = 16  # the find box's least width, in average characters

_NOTE_LEVELS = ("info", "warning", "error")
# Stream names that are also format keys; notes travel as stream "note:<level>".
_FORMAT_KEYS = frozenset({"stdout", "stderr", *(f"note:{level}" for level in _NOTE_LEVELS)})

# -- widgets ------------------------------------------------------------------------------


class _FindField(QLineEdit):
    """Enter finds the next match, Shift+Enter the previous one, Escape goes back to the log
    (QLineEdit's own returnPressed does not tell Shift apart)."""

    nextRequested = Signal()
    previousRequested = Signal()
    escaped = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            if event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
                self.previousRequested.emit()
            else:
                self.nextRequested.emit()
            event.accept()
            return
        if event.key() == Qt.Key.Key_Escape:
            self.escaped.emit()
            event.accept()
            return
        super().keyPressEvent(event)


@dataclass(frozen=True)
class _Loading:
    request: int
    pending: deque[tuple[str, str]]  # live lines and notes that arrived meanwhile
    missing_ok: bool = False  # a missing file is no output yet


class LogView(QWidget):
    """Read-only, bounded, following log of one job's output, with find, copy and save.

    Feed it with ``append_lines`` (batches of (stream, text)) and ``append_note``; point
    ``set_log_file`` at the job's on-disk log so "Save full log…" can copy all of it; call
    ``load_tail`` to show the end of a log from disk (a finished job, or a running one
    before its live lines).
    """

    followChanged = Signal(bool)
    saved = Signal(str)  # the path written
    saveFailed = Signal(str)  # why, in words
    tailLoaded = Signal(int)  # lines shown from the file
    tailFailed = Signal(str)  # why, in words

    def __init__(self, parent: QWidget | None = None, max_blocks: int = DEFAULT_MAX_BLOCKS
                 ) -> None:
        super().__init__(parent)
        if max_blocks < 2:
            raise ValueError("max_blocks must be at least 2")
        self._max_blocks = max_blocks
        self._following = True
        self._scroll_guard = 0  # > 0 while we move the view ourselves
        self._log_file: Path | None = None
        self._suggested_name: str | None = None
        self._loading: _Loading | None = None
        self._saving: int | None = None
        # The view lacks some of the output: a tail of a longer file, old lines dropped
        # for max_blocks, or lines not shown live. A find that fails may then still match.
        self._partial = False
        # The end of a loaded tail, per kind of item: live items that repeat it are dropped.
        self._seams: dict[str, log_disk.Seam] = {}
        self._formats: dict[str, QTextCharFormat] = {}
        # QTextDocument.isEmpty() cannot tell "no lines" from "one empty line".
        self._empty = True

        self._background = log_disk.Background()
        self._background.relay.finished.connect(self._on_background_done)
        # Not a method of self: it must run while the C++ widget is being destroyed.
        self.destroyed.connect(self._background.close)

        self._text = QPlainTextEdit(self)
        self._text.setObjectName("logText")
        self._text.setReadOnly(True)
        self._text.setUndoRedoEnabled(False)
        self._text.setMaximumBlockCount(max_blocks)
        self._text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self._text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self._text.setPlaceholderText("No output yet.")
        self._text.setAccessibleName("Job output")
        self._text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse
                                           | Qt.TextInteractionFlag.TextSelectableByKeyboard)
        self._vbar = self._text.verticalScrollBar()
        self._vbar.valueChanged.connect(self._on_scrolled)
        self._vbar.rangeChanged.connect(self._on_range_changed)

        self._find_status = QLabel(self)
        self._find_status.setObjectName("findStatus")
        self._find_status.setWordWrap(True)
        self._find_status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._search_file_button = QPushButton("Search the full log", self)
        self._search_file_button.setToolTip("Search the job's whole log file on disk, beyond "
                                            "the lines this view holds")
        self._search_file_button.clicked.connect(self.search_full_log)
        self._searching: int | None = None
        self._find_field = _FindField(self)
        self._find_field.setObjectName("findField")
        # A search box a few characters wide is useless: keep room for a word or two, and
        # let the status of a search go on a line of its own (below) instead of the bar.
        self._find_field.setMinimumWidth(self._find_field.fontMetrics().averageCharWidth()
                                         * FIND_MIN_CHARS + 24)
        self._find_field.setSizePolicy(QSizePolicy.Policy.Expanding,
                                       QSizePolicy.Policy.Fixed)
        self._find_field.setPlaceholderText("Find in log")
        self._find_field.setAccessibleName("Find in log")
        self._find_field.setClearButtonEnabled(True)
        self._find_field.nextRequested.connect(self.find_next)
        self._find_field.previousRequested.connect(self.find_previous)
        self._find_field.escaped.connect(self._text.setFocus)
        self._find_field.textEdited.connect(lambda _text: self._set_find_status(""))

        self._previous_button = QPushButton("Previous", self)
        self._previous_button.setToolTip("Find the previous match (Shift+Enter, Shift+F3)")
        self._previous_button.clicked.connect(self.find_previous)
        self._next_button = QPushButton("Next", self)
        self._next_button.setToolTip("Find the next match (Enter, F3)")
        self._next_button.clicked.connect(self.find_next)

        self._wrap_button = QPushButton("Wrap", self)
        self._wrap_button.setCheckable(True)
        self._wrap_button.setToolTip("Wrap long lines")
        self._wrap_button.toggled.connect(self.set_wrap)
        self._follow_button = QPushButton("Follow", self)
        self._follow_button.setCheckable(True)
        self._follow_button.setChecked(True)
        self._follow_button.setToolTip("Keep showing the newest output. Scrolling up pauses "
                                       "it; scrolling back to the bottom resumes it.")
        self._follow_button.toggled.connect(self.set_following)
        self._copy_button = QPushButton("Copy", self)
        self._copy_button.setToolTip("Copy the selection, or the whole view when nothing "
                                     "is selected")
        self._copy_button.clicked.connect(self.copy)
        self._save_button = QPushButton("Save full log…", self)
        self._save_button.clicked.connect(self._on_save_clicked)
        self._status = QLabel(self)
        self._status.setObjectName("logStatus")
        self._status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._update_save_button()

        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addWidget(self._find_field, 2)
        bar.addWidget(self._previous_button)
        bar.addWidget(self._next_button)
        bar.addStretch(1)
        bar.addWidget(self._wrap_button)
        bar.addWidget(self._follow_button)
        bar.addWidget(self._copy_button)
        bar.addWidget(self._save_button)
        self._find_row = QWidget(self)
        find_row = QHBoxLayout(self._find_row)
        find_row.setContentsMargins(0, 0, 0, 0)
        find_row.addWidget(self._find_status, 1)
        find_row.addWidget(self._search_file_button, 0, Qt.AlignmentFlag.AlignTop)
        self._find_row.setVisible(False)
        self._search_file_button.setVisible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self._find_row)
        layout.addWidget(self._text, 1)
        layout.addWidget(self._status)

        context = Qt.ShortcutContext.WidgetWithChildrenShortcut
        find = QShortcut(self)
        find.setKeys(QKeySequence.StandardKey.Find)
        find.setContext(context)
        find.activated.connect(self.focus_find)
        for standard, extra, slot in (
                (QKeySequence.StandardKey.FindNext, "F3", self.find_next),
                (QKeySequence.StandardKey.FindPrevious, "Shift+F3", self.find_previous)):
            keys = QKeySequence.keyBindings(standard)
            if QKeySequence(extra) not in keys:
                keys.append(QKeySequence(extra))
            shortcut = QShortcut(self)
            shortcut.setKeys(keys)
            shortcut.setContext(context)
            shortcut.activated.connect(slot)

        self._build_formats()

    # -- public API -------------------------------------------------------------------------
    @property
    def max_blocks(self) -> int:
        return self._max_blocks

    @property
    def following(self) -> bool:
        return self._following

    @following.setter
    def following(self, on: bool) -> None:
        self.set_following(on)

    @property
    def line_count(self) -> int:
        """Lines (blocks) the view holds now: at most ``max_blocks``."""
        return self._line_count()

    @property
    def text_edit(self) -> QPlainTextEdit:
        """The underlying read-only editor (e.g. to add actions to its context menu)."""
        return self._text

    @property
    def log_file(self) -> Path | None:
        return self._log_file

    @property
    def status_text(self) -> str:
        return self._status.text()

    @property
    def find_status_text(self) -> str:
        return self._find_status.text()

    @property
    def partial(self) -> bool:
        """The view holds only part of the job's output (see ``search_full_log``)."""
        return self._partial

    @property
    def searching(self) -> bool:
        return self._searching is not None

    def mark_partial(self) -> None:
        """Lines of this job's output were left out of the view (not shown live)."""
        self._partial = True

    def search_full_log(self) -> None:
        """Look for the find text in the whole log file, on a worker thread; the answer
        replaces the find status."""
        needle = self._find_field.text()
        if not needle or self._log_file is None or self._searching is not None:
            return
        self._searching = self._background.submit(log_disk.search_file, self._log_file, needle)
        if self._searching is None:
            return
        self._search_file_button.setEnabled(False)
        self._set_find_status(f"Searching the full log for “{needle}”…", offer_search=True)

    def set_following(self, on: bool) -> None:
        """Follow the newest output (jumps to the bottom) or stay where the view is."""
        on = bool(on)
        if on:
            self._scroll_to_bottom()
        self._set_following(on)

    def set_wrap(self, on: bool) -> None:
        mode = (QPlainTextEdit.LineWrapMode.WidgetWidth if on
                else QPlainTextEdit.LineWrapMode.NoWrap)
        self._text.setLineWrapMode(mode)
        if self._wrap_button.isChecked() != bool(on):
            self._wrap_button.setChecked(bool(on))

    def append_lines(self, lines: Sequence[tuple[str, str]]) -> None:
        """Append a batch of the command's output: (stream, text) pairs, stream "stdout" or
        "stderr". One document edit per batch; cost grows with the batch, not the log."""
        if not lines:
            return
        if self._loading is not None:
            self._loading.pending.extend(lines)
            return
        if self._seams:
            lines = self._unseen(lines)
            if not lines:
                return
        self._insert(lines)

    def append_note(self, level: str, text: str) -> None:
        """A message from the engine or the command's ``@dss info|warning|error`` (level),
        shown apart from the command's own output."""
        level = level if level in _NOTE_LEVELS else "info"
        parts = text.splitlines() or [""]
        items = [(f"note:{level}", NOTE_PREFIX + parts[0])]
        items += [(f"note:{level}", "  " + part) for part in parts[1:]]
        if self._loading is not None:
            self._loading.pending.extend(items)
            return
        if self._seams:
            items = self._unseen(items)
            if not items:
                return
        self._insert(items)

    def clear(self) -> None:
        """Empty the view (a new job is shown); a tail still loading is abandoned."""
        if self._loading is not None:
            self._background.cancel(self._loading.request)
            self._loading = None
        self._text.setPlaceholderText("No output yet.")
        self._scroll_guard += 1
        try:
            self._text.clear()
            self._empty = True
        finally:
            self._scroll_guard -= 1
        self._partial = False
        self._seams = {}
        if self._searching is not None:
            self._background.cancel(self._searching)
            self._searching = None
        self._set_find_status("")
        self.set_following(True)

    def set_log_file(self, path: Path | None, suggested_name: str | None = None) -> None:
        """The file holding the job's whole output (the view holds only its tail);
        ``suggested_name`` is offered in the save dialog (default: the file's name)."""
        self._log_file = Path(path) if path is not None else None
        self._suggested_name = suggested_name
        self._update_save_button()

    def load_tail(self, path: Path, max_lines: int | None = None,
                  missing_ok: bool = False) -> None:
        """Show the last ``max_lines`` (default: ``max_blocks``) lines of ``path``, read on a
        worker thread. Lines and notes appended meanwhile are shown after them. With
        ``missing_ok`` a file that does not exist is no output yet, not an error (a job that
        has printed nothing has no log file)."""
        limit = self._max_blocks if max_lines is None else max(1, min(max_lines,
                                                                      self._max_blocks))
        self.clear()
        self._text.setPlaceholderText("Loading the log…")
        request = self._background.submit(log_disk.read_tail, Path(path), limit)
        if request is None:  # shut down: the window is closing
            self._text.setPlaceholderText("No output yet.")
            return
        self._loading = _Loading(request, deque(maxlen=self._max_blocks), missing_ok)

    @property
    def loading(self) -> bool:
        return self._loading is not None

    @property
    def saving(self) -> bool:
        return self._saving is not None

    def find_next(self) -> bool:
        return self._find(backward=False)

    def find_previous(self) -> bool:
        return self._find(backward=True)

    def focus_find(self) -> None:
        self._find_field.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self._find_field.selectAll()

    def copy(self) -> None:
        """Copy the selection, or everything the view holds when nothing is selected."""
        cursor = self._text.textCursor()
        if cursor.hasSelection():
            self._text.copy()
            self._status.setText("Copied the selection.")
            return
        text = self._text.toPlainText()
        QGuiApplication.clipboard().setText(text)
        count = self._line_count()
        self._status.setText(f"Copied {count} line{'s' if count != 1 else ''}.")

    def save_full_log(self, target: Path) -> None:
        """Copy the whole log file to ``target`` on a worker thread; ends with ``saved`` or
        ``saveFailed``."""
        if self._saving is not None:
            self._report_save_failure("A save is already in progress.")
            return
        if self._log_file is None:
            self._report_save_failure("This job has no log file.")
            return
        self._saving = self._background.submit(log_disk.copy_file, self._log_file,
                                               Path(target))
        if self._saving is None:
            self._report_save_failure("The log view is closed.")
            return
        self._status.setText(f"Saving the log to {target}…")
        self._update_save_button()

    def shutdown(self) -> None:
        """Stop and join the file work now (also done when the widget is destroyed)."""
        self._background.close()
        self._loading = None
        self._saving = None
        self._searching = None
        self._update_save_button()

    # -- overridable for tests -----------------------------------------------------------
    def _ask_save_path(self) -> Path | None:
        name = self._suggested_name or (self._log_file.name if self._log_file else "output.log")
        chosen, _filter = QFileDialog.getSaveFileName(
            self, "Save full log", str(Path.home() / name),
            "Log files (*.log *.txt);;All files (*)")
        return Path(chosen) if chosen else None

    # -- inserting ------------------------------------------------------------------------
    def _insert(self, items: Sequence[tuple[str, str]]) -> None:
        if len(items) > self._max_blocks:
            items = items[-self._max_blocks:]
        runs = self._runs(items)
        document = self._text.document()
        self._scroll_guard += 1
        try:
            old_value = self._vbar.value()
            cursor = QTextCursor(document)
            cursor.beginEditBlock()
            removed = self._make_room(cursor, document, len(items))
            cursor.movePosition(QTextCursor.MoveOperation.End)
            for key, texts in runs:
                chunk = sanitize("\n".join(texts))
                cursor.insertText(chunk if self._empty else "\n" + chunk, self._formats[key])
                self._empty = False
            cursor.endEditBlock()
            if self._following:
                self._scroll_to_bottom()
            elif removed:
                # Lines dropped off the top would slide the text under a reader who
                # scrolled up; keep the lines they are reading in place.
                self._vbar.setValue(max(0, old_value - removed))
        finally:
            self._scroll_guard -= 1

    def _make_room(self, cursor: QTextCursor, document: QTextDocument, incoming: int) -> int:
        """Remove the oldest blocks so that ``incoming`` more fit in max_blocks, in one
        edit: QTextDocument's own limit removes them one at a time, ~6x slower on a full
        log. (setMaximumBlockCount stays as the backstop.)"""
        existing = self._line_count()
        excess = existing + incoming - self._max_blocks
        if excess <= 0:
            return 0
        self._partial = True
        cursor.movePosition(QTextCursor.MoveOperation.Start)
        if excess >= existing:
            cursor.movePosition(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
            cursor.removeSelectedText()
            self._empty = True
            return existing
        cursor.setPosition(document.findBlockByNumber(excess).position(),
                           QTextCursor.MoveMode.KeepAnchor)
        cursor.removeSelectedText()
        return excess

    @staticmethod
    def _runs(items: Sequence[tuple[str, str]]) -> list[tuple[str, list[str]]]:
        """Consecutive lines sharing a format, so each run is one insertText. Written for
        the common flood (one stream, nothing flagged): no per-line Python there."""
        streams = list(map(itemgetter(0), items))
        texts = list(map(itemgetter(1), items))
        severities = line_severities(texts)
        first = streams[0]
        if not severities and streams.count(first) == len(streams):
            return [(first if first in _FORMAT_KEYS else "stdout", texts)]
        keys = [stream if stream in _FORMAT_KEYS else "stdout" for stream in streams]
        for index, severity in severities.items():
            if not keys[index].startswith("note:"):
                keys[index] = severity
        cuts = [index for index in range(1, len(keys)) if keys[index] != keys[index - 1]]
        bounds = [0, *cuts, len(keys)]
        return [(keys[a], texts[a:b]) for a, b in itertools.pairwise(bounds)]

    def _build_formats(self) -> None:
        """Colours picked for the current palette, so they stay readable on a dark theme.
        Lines already shown keep theirs."""
        dark = self.palette().color(QPalette.ColorRole.Base).lightness() < 128
        colours = {  # (light palette, dark palette)
            "stderr": ("#8250df", "#d2a8ff"),
            "error": ("#c62828", "#ff7b72"),
            "warning": ("#9a6700", "#e3b341"),
            "note:info": ("#0b61c4", "#79c0ff"),
            "note:warning": ("#9a6700", "#e3b341"),
            "note:error": ("#c62828", "#ff7b72"),
        }
        formats = {"stdout": QTextCharFormat()}
        for key, (light, on_dark) in colours.items():
            fmt = QTextCharFormat()
            fmt.setForeground(QColor(on_dark if dark else light))
            if key.startswith("note:"):
                fmt.setFontItalic(True)
            if key in ("error", "note:error"):
                fmt.setFontWeight(QFont.Weight.Bold)
            formats[key] = fmt
        self._formats = formats

    def changeEvent(self, event: QEvent) -> None:
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.StyleChange):
            self._build_formats()
        super().changeEvent(event)

    def _line_count(self) -> int:
        return 0 if self._empty else self._text.document().blockCount()

    # -- following ------------------------------------------------------------------------
    def _scroll_to_bottom(self) -> None:
        self._scroll_guard += 1
        try:
            self._vbar.setValue(self._vbar.maximum())
        finally:
            self._scroll_guard -= 1

    def _set_following(self, on: bool) -> None:
        if self._follow_button.isChecked() != on:
            self._follow_button.blockSignals(True)
            self._follow_button.setChecked(on)
            self._follow_button.blockSignals(False)
        if on != self._following:
            self._following = on
            self.followChanged.emit(on)

    def _on_scrolled(self, value: int) -> None:
        if self._scroll_guard:
            return
        # The reader moved the view: at the bottom means "keep following", anywhere else
        # means "let me read".
        self._set_following(value >= self._vbar.maximum())

    def _on_range_changed(self, _minimum: int, _maximum: int) -> None:
        # A resize or a wrap toggle changes the range without new output.
        if self._following and not self._scroll_guard:
            self._scroll_to_bottom()

    # -- find -------------------------------------------------------------------------------
    def _find(self, backward: bool) -> bool:
        needle = self._find_field.text()
        if not needle:
            self._set_find_status("Type text to find.")
            return False
        flags = QTextDocument.FindFlag.FindBackward if backward else QTextDocument.FindFlag(0)
        self._scroll_guard += 1
        try:
            self._set_following(False)  # the reader wants to look at the match
            found = self._text.find(needle, flags)
            wrapped = False
            if not found:
                before = self._text.textCursor()
                cursor = QTextCursor(before)
                cursor.movePosition(QTextCursor.MoveOperation.End if backward
                                    else QTextCursor.MoveOperation.Start)
                self._text.setTextCursor(cursor)
                found = self._text.find(needle, flags)
                wrapped = found
                if not found:
                    self._text.setTextCursor(before)
        finally:
            self._scroll_guard -= 1
        if not found:
            self._not_found(needle)
        elif wrapped:
            self._set_find_status("Wrapped to the " + ("end." if backward else "top."))
        else:
            self._set_find_status("")
        return found

    def _not_found(self, needle: str) -> None:
        if self._log_file is None:
            self._set_find_status(f"“{needle}” not found")
        elif self._partial:
            self._set_find_status(
                f"“{needle}” is not in the part of the log shown here (the view keeps the "
                f"last {self._max_blocks} lines); it may be earlier in the full log.",
                offer_search=True)
        else:
            # @dss lines are shown as what they meant, so the file may still hold it.
            self._set_find_status(f"“{needle}” not found in the view.", offer_search=True)

    def _set_find_status(self, text: str, offer_search: bool = False) -> None:
        self._find_status.setText(text)
        self._find_status.setToolTip("")
        self._search_file_button.setVisible(offer_search)
        self._search_file_button.setEnabled(offer_search and self._searching is None)
        self._find_row.setVisible(bool(text))

    def _show_matches(self, matches: log_disk.Matches) -> None:
        needle = matches.needle
        if not matches.count:
            self._set_find_status(f"“{needle}” is not in the full log either.")
            return
        number, text = matches.first[0]
        plural = "s" if matches.count != 1 else ""
        self._set_find_status(
            f"“{needle}” is in {matches.count} line{plural} of the full log, first at line "
            f"{number}: {text}")
        listed = "\n".join(f"{n}: {t}" for n, t in matches.first)
        more = matches.count - len(matches.first)
        self._find_status.setToolTip(listed + (f"\n… and {more} more" if more > 0 else "")
                                     + "\n(“Save full log…” saves all of it to read.)")

    # -- save -------------------------------------------------------------------------------
    def _on_save_clicked(self) -> None:
        if self._log_file is None:
            return
        target = self._ask_save_path()
        if target is not None:
            self.save_full_log(target)

    def _update_save_button(self) -> None:
        if self._saving is not None:
            tip = "Saving…"
        elif self._log_file is not None:
            tip = f"Save the job's whole output (the view keeps its last {self._max_blocks} lines)"
        else:
            tip = "This job has no log file yet"
        self._save_button.setEnabled(self._log_file is not None and self._saving is None)
        self._save_button.setToolTip(tip)

    def _report_save_failure(self, message: str) -> None:
        self._status.setText(f"The log was not saved: {message}")
        self.saveFailed.emit(message)

    # -- results from the pool ------------------------------------------------------------
    def _on_background_done(self, request: int, outcome: tuple[bool, Any]) -> None:
        self._background.forget(request)
        ok, result = outcome
        if self._searching == request:
            self._searching = None
            if ok:
                self._show_matches(result)
            else:
                self._set_find_status("The full log cannot be searched: "
                                      f"{log_disk.describe(result)}")
        elif self._saving == request:
            self._saving = None
            self._update_save_button()
            if ok:
                self._status.setText(f"Saved the full log to {result}.")
                self.saved.emit(str(result))
            else:
                self._report_save_failure(log_disk.describe(result))
        elif self._loading is not None and self._loading.request == request:
            loading, self._loading = self._loading, None
            self._text.setPlaceholderText("No output yet.")
            if ok:
                self._show_tail(result, list(loading.pending))
            elif loading.missing_ok and isinstance(result, FileNotFoundError):
                if loading.pending:
                    self._insert(list(loading.pending))
            else:
                message = log_disk.describe(result)
                self._insert([("note:error", f"{NOTE_PREFIX}Cannot read the log: {message}"),
                              *loading.pending])
                self.tailFailed.emit(message)
        # Anything else was superseded (clear, a newer load_tail): dropped.

    def _unseen(self, items: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """``items`` without those that repeat the loaded tail (see log_disk.Seam)."""
        kept = []
        for stream, text in items:
            kind = log_disk.item_kind(stream, text)
            seam = self._seams.get(kind) if kind is not None else None
            if seam is not None and seam.take(text):
                continue
            kept.append((stream, text))
        self._seams = {kind: seam for kind, seam in self._seams.items() if not seam.done}
        return kept

    def _show_tail(self, tail: log_disk.Tail, pending: list[tuple[str, str]]) -> None:
        lines = tail.lines
        items: list[tuple[str, str]] = []
        if tail.truncated:
            lines = lines[-(self._max_blocks - 1):]
            items.append(("note:info", f"{NOTE_PREFIX}Earlier output is not shown; "
                                       "“Save full log…” saves all of it."))
        from_disk = log_disk.render_lines(lines)
        items.extend(from_disk)
        self._seams.update(log_disk.seams_of(from_disk))
        items.extend(self._unseen(pending))
        self._insert(items)
        if tail.truncated:
            self._partial = True
        self.set_following(True)
        self.tailLoaded.emit(len(lines))
