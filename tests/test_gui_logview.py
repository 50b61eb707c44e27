"""LogView: the live log of one job, driven as a real widget on the offscreen platform."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6.QtWidgets")

import shiboken6
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QApplication, QLabel, QLineEdit, QPushButton

from dss_console.gui.logview import LogView


def make_view(qtbot: Any, max_blocks: int = 20_000, show: bool = True) -> LogView:
    view = LogView(max_blocks=max_blocks)
    qtbot.addWidget(view)
    if show:
        view.resize(700, 300)
        view.show()
        qtbot.waitExposed(view)
    return view


def lines_of(view: LogView) -> list[str]:
    return view.text_edit.toPlainText().split("\n") if view.line_count else []


def block_format(view: LogView, number: int) -> QTextCharFormat:
    """The character format of a block's first character."""
    block = view.text_edit.document().findBlockByNumber(number)
    cursor = QTextCursor(block)
    cursor.movePosition(QTextCursor.MoveOperation.NextCharacter)
    return cursor.charFormat()


def button(view: LogView, text: str) -> QPushButton:
    found = [b for b in view.findChildren(QPushButton) if b.text() == text]
    assert len(found) == 1, text
    return found[0]


def find_field(view: LogView) -> QLineEdit:
    field = view.findChild(QLineEdit, "findField")
    assert field is not None
    return field


def numbered(count: int, start: int = 0, stream: str = "stdout") -> list[tuple[str, str]]:
    return [(stream, f"line {n}") for n in range(start, start + count)]


# -- appending --------------------------------------------------------------------------


def test_a_big_batch_is_fast_and_the_view_stays_bounded(qtbot: Any) -> None:
    view = make_view(qtbot, max_blocks=5000)
    batch = [("stderr" if n % 3 == 0 else "stdout", f"line {n} of a command that floods")
             for n in range(10_000)]

    started = time.perf_counter()
    view.append_lines(batch)
    elapsed = time.perf_counter() - started

    assert elapsed < 1.0  # a sanity bound: about 20 ms here
    assert view.line_count == 5000
    text = lines_of(view)
    assert text[0] == "line 5000 of a command that floods"
    assert text[-1] == "line 9999 of a command that floods"

    for start in range(10_000, 20_000, 2000):
        view.append_lines(numbered(2000, start))
    assert view.line_count == 5000
    assert view.text_edit.document().blockCount() == 5000
    assert lines_of(view)[-1] == "line 19999"
    assert lines_of(view)[0] == "line 15000"


def test_stderr_errors_warnings_and_notes_look_different(qtbot: Any) -> None:
    view = make_view(qtbot)
    view.append_lines([
        ("stdout", "plain output"),
        ("stderr", "something on stderr"),
        ("stdout", "Traceback (most recent call last):"),
        ("stdout", "ValueError: bad input"),
        ("stdout", "WARNING: disk almost full"),
        ("stdout", '@dss error "registration failed"'),
        ("stdout", '@dss warning "low contrast"'),
        ("stdout", "build finished: 0 errors"),
    ])
    view.append_note("error", "the server refused the upload")

    def colour(number: int) -> str:
        fmt = block_format(view, number)
        return fmt.foreground().color().name() if fmt.hasProperty(
            QTextCharFormat.Property.ForegroundBrush) else "default"

    plain, stderr, traceback, value_error, warning, dss_error, dss_warning, zero, note = (
        colour(n) for n in range(9))
    assert plain == "default" and zero == "default"  # "0 errors" is not an error line
    assert len({plain, stderr, traceback, warning}) == 4
    assert value_error == traceback == dss_error == note
    assert dss_warning == warning
    assert lines_of(view)[8] == "▸ the server refused the upload"
    assert block_format(view, 8).fontItalic()
    assert not block_format(view, 0).fontItalic()


def test_control_characters_do_not_break_lines(qtbot: Any) -> None:
    view = make_view(qtbot)
    view.append_lines([
        ("stdout", "nul\x00byte"),
        ("stdout", "10%\r20%\r30%"),  # a progress bar redrawn in place
        ("stdout", "\x1b[31mred\x1b[0m text"),
        ("stdout", "crlf\r"),
        ("stdout", "para\u2029graph"),
        ("stdout", ""),
        ("stderr", "last"),
    ])
    assert lines_of(view) == ["nul\ufffdbyte", "30%", "red text", "crlf", "para graph", "",
                              "last"]
    assert view.line_count == 7
    view.append_note("info", "two\nlines")
    assert lines_of(view)[-2:] == ["▸ two", "  lines"]


def test_clear_empties_the_view(qtbot: Any) -> None:
    view = make_view(qtbot)
    view.append_lines(numbered(10))
    view.clear()
    assert view.line_count == 0 and view.text_edit.toPlainText() == ""
    view.append_lines([("stdout", "")])  # one empty line is a line
    view.append_lines([("stdout", "after")])
    assert lines_of(view) == ["", "after"]


# -- following ----------------------------------------------------------------------------


def test_following_pauses_when_scrolled_up_and_resumes_at_the_bottom(qtbot: Any) -> None:
    view = make_view(qtbot)
    bar = view.text_edit.verticalScrollBar()
    follow = button(view, "Follow")
    view.append_lines(numbered(500))
    assert view.following and follow.isChecked()
    assert bar.value() == bar.maximum() > 0

    with qtbot.waitSignal(view.followChanged) as blocker:
        bar.setValue(10)
    assert blocker.args == [False]
    assert not view.following and not follow.isChecked()

    view.append_lines(numbered(100, 500))
    assert bar.value() == 10 < bar.maximum()  # the reader is left in peace

    with qtbot.waitSignal(view.followChanged) as blocker:
        bar.setValue(bar.maximum())
    assert blocker.args == [True] and follow.isChecked()
    view.append_lines(numbered(100, 600))
    assert bar.value() == bar.maximum()


def test_follow_button_pauses_and_jumps_to_the_bottom(qtbot: Any) -> None:
    view = make_view(qtbot)
    bar = view.text_edit.verticalScrollBar()
    follow = button(view, "Follow")
    view.append_lines(numbered(500))

    with qtbot.waitSignal(view.followChanged) as blocker:
        qtbot.mouseClick(follow, Qt.MouseButton.LeftButton)
    assert blocker.args == [False] and not view.following
    view.append_lines(numbered(100, 500))
    assert bar.value() < bar.maximum()

    with qtbot.waitSignal(view.followChanged) as blocker:
        qtbot.mouseClick(follow, Qt.MouseButton.LeftButton)
    assert blocker.args == [True] and view.following
    assert bar.value() == bar.maximum()

    view.following = False
    assert not follow.isChecked()


def test_a_paused_reader_keeps_their_line_when_old_lines_are_dropped(qtbot: Any) -> None:
    view = make_view(qtbot, max_blocks=1000)
    view.append_lines(numbered(1000))
    view.text_edit.verticalScrollBar().setValue(100)
    assert view.text_edit.firstVisibleBlock().text() == "line 100"

    view.append_lines(numbered(50, 1000))  # drops lines 0..49 off the top
    assert view.line_count == 1000
    assert view.text_edit.firstVisibleBlock().text() == "line 100"
    assert not view.following


# -- find ---------------------------------------------------------------------------------


def _search_log(view: LogView) -> None:
    items = numbered(300)
    for number in (20, 150, 280):
        items[number] = ("stdout", f"line {number} has the Needle")
    view.append_lines(items)


def test_find_next_previous_wraps_and_says_not_found(qtbot: Any) -> None:
    view = make_view(qtbot)
    _search_log(view)
    field = find_field(view)
    status = view.findChild(QLabel, "findStatus")
    assert status is not None

    def match_line() -> str:
        cursor = view.text_edit.textCursor()
        assert cursor.selectedText().lower() == "needle"
        return cursor.block().text()

    field.setText("needle")  # case-insensitive
    assert view.find_next()
    assert match_line() == "line 20 has the Needle"
    assert not view.following  # searching moves the view: following pauses

    qtbot.mouseClick(button(view, "Next"), Qt.MouseButton.LeftButton)
    assert match_line() == "line 150 has the Needle"
    view.find_next()
    assert match_line() == "line 280 has the Needle"
    assert view.find_next()  # past the last: wraps to the top
    assert match_line() == "line 20 has the Needle"
    assert "Wrapped" in status.text()

    qtbot.mouseClick(button(view, "Previous"), Qt.MouseButton.LeftButton)  # wraps to the end
    assert match_line() == "line 280 has the Needle"
    view.find_previous()
    assert match_line() == "line 150 has the Needle"

    field.setText("haystack")
    assert not view.find_next()
    assert status.text() == "“haystack” not found"
    assert view.text_edit.textCursor().block().text() == "line 150 has the Needle"


def test_find_keys(qtbot: Any) -> None:
    view = make_view(qtbot)
    _search_log(view)
    field = find_field(view)
    view.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is view)
    view.text_edit.setFocus()
    qtbot.waitUntil(view.text_edit.hasFocus)

    qtbot.keyClick(view.text_edit, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(field.hasFocus)
    qtbot.keyClicks(field, "needle")
    qtbot.keyClick(field, Qt.Key.Key_Return)
    assert view.text_edit.textCursor().block().text() == "line 20 has the Needle"
    qtbot.keyClick(field, Qt.Key.Key_Return)
    assert view.text_edit.textCursor().block().text() == "line 150 has the Needle"
    qtbot.keyClick(field, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    assert view.text_edit.textCursor().block().text() == "line 20 has the Needle"

    qtbot.keyClick(field, Qt.Key.Key_Escape)
    qtbot.waitUntil(view.text_edit.hasFocus)
    qtbot.keyClick(view.text_edit, Qt.Key.Key_F3)
    assert view.text_edit.textCursor().block().text() == "line 150 has the Needle"
    qtbot.keyClick(view.text_edit, Qt.Key.Key_F3, Qt.KeyboardModifier.ShiftModifier)
    assert view.text_edit.textCursor().block().text() == "line 20 has the Needle"


# -- copy and save -----------------------------------------------------------------------


def test_copy_takes_the_selection_or_everything(qtbot: Any) -> None:
    view = make_view(qtbot)
    view.append_lines(numbered(5))
    clipboard = QGuiApplication.clipboard()

    qtbot.mouseClick(button(view, "Copy"), Qt.MouseButton.LeftButton)
    assert clipboard.text() == "\n".join(f"line {n}" for n in range(5))

    cursor = QTextCursor(view.text_edit.document().findBlockByNumber(1))
    cursor.movePosition(QTextCursor.MoveOperation.EndOfBlock, QTextCursor.MoveMode.KeepAnchor)
    view.text_edit.setTextCursor(cursor)
    view.copy()
    assert clipboard.text() == "line 1"


def test_save_copies_the_whole_file_off_the_qt_thread(qtbot: Any, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    view = make_view(qtbot, max_blocks=100)
    source = tmp_path / "output.log"
    content = b"".join(b"line %d\n" % n for n in range(50_000)) + b"\x00\xff\xfe binary\n"
    source.write_bytes(content)
    save = button(view, "Save full log…")
    assert not save.isEnabled()  # no log file yet

    view.set_log_file(source)
    assert save.isEnabled()
    target = tmp_path / "chosen" / "saved.log"
    target.parent.mkdir()
    threads: list[str] = []
    real_copy = __import__("dss_console.gui.log_disk", fromlist=["copy_file"]).copy_file

    def spy_copy(*args: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real_copy(*args)

    monkeypatch.setattr("dss_console.gui.log_disk.copy_file", spy_copy)
    monkeypatch.setattr(view, "_ask_save_path", lambda: target)
    with qtbot.waitSignal(view.saved, timeout=10_000) as blocker:
        qtbot.mouseClick(save, Qt.MouseButton.LeftButton)
    assert blocker.args == [str(target)]
    assert target.read_bytes() == content
    assert threads and threads[0] != threading.main_thread().name
    assert "Saved" in view.status_text
    assert sorted(p.name for p in target.parent.iterdir()) == ["saved.log"]  # no leftovers


def test_save_failure_is_reported_in_words(qtbot: Any, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    view = make_view(qtbot)
    source = tmp_path / "output.log"
    source.write_text("hello\n")
    view.set_log_file(source)
    target = tmp_path / "missing-dir" / "saved.log"
    monkeypatch.setattr(view, "_ask_save_path", lambda: target)
    with qtbot.waitSignal(view.saveFailed, timeout=10_000) as blocker:
        qtbot.mouseClick(button(view, "Save full log…"), Qt.MouseButton.LeftButton)
    assert str(target) in blocker.args[0]
    assert "not saved" in view.status_text
    assert button(view, "Save full log…").isEnabled()

    # Cancelling the dialog does nothing.
    monkeypatch.setattr(view, "_ask_save_path", lambda: None)
    qtbot.mouseClick(button(view, "Save full log…"), Qt.MouseButton.LeftButton)
    assert not view.saving


# -- loading a tail from disk -------------------------------------------------------------


def test_load_tail_shows_only_the_end_of_a_big_file(qtbot: Any, tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    with open(log, "w") as file:
        for n in range(200_000):
            file.write(f"line {n} of a long finished job\n")
    view = make_view(qtbot, max_blocks=1000)
    view.append_lines(numbered(3))  # replaced by the tail

    with qtbot.waitSignal(view.tailLoaded, timeout=20_000) as blocker:
        view.load_tail(log)
        # The call returns at once; the file is read on a worker thread.
        assert view.loading and view.line_count == 0
    assert blocker.args == [999]  # plus the note that earlier output is not shown
    shown = lines_of(view)
    assert len(shown) == 1000
    assert shown[0].startswith("▸ Earlier output")
    assert shown[1] == "line 199001 of a long finished job"
    assert shown[-1] == "line 199999 of a long finished job"
    assert view.following
    bar = view.text_edit.verticalScrollBar()
    assert bar.value() == bar.maximum()


def test_load_tail_of_a_short_file_with_binary_bytes(qtbot: Any, tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    log.write_bytes(b"first\r\nnul\x00here\n\xff\xfe invalid utf-8\nprogress 10%\r50%\nlast")
    view = make_view(qtbot)
    with qtbot.waitSignal(view.tailLoaded, timeout=10_000) as blocker:
        view.load_tail(log, max_lines=100)
    assert blocker.args == [5]
    assert lines_of(view) == ["first", "nul\ufffdhere", "\ufffd\ufffd invalid utf-8", "50%",
                              "last"]


def test_live_lines_during_a_load_follow_the_tail_once(qtbot: Any, tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    # The runner writes each line to disk before publishing it, so lines that arrive while
    # the tail is read may be in both. @dss lines are in the file, never in the live stream.
    # An @dss message is on disk too (as the raw line), and published after it is written.
    log.write_text("".join(f"line {n}\n" for n in range(100)) + "@dss progress 0.5\n"
                   + '@dss info "Affine done"\n')
    view = make_view(qtbot)
    with qtbot.waitSignal(view.tailLoaded, timeout=10_000):
        view.load_tail(log)
        view.append_lines([("stdout", "line 98"), ("stdout", "line 99")])
        view.append_note("info", "Affine done")
        view.append_lines([("stdout", "line 100")])
    shown = lines_of(view)
    # Progress is not shown (as live), the message once, as the live view shows it.
    assert shown[-3:] == ["line 99", "▸ Affine done", "line 100"]
    assert shown.count("line 98") == 1 and shown.count("▸ Affine done") == 1
    assert len(shown) == 102


def test_live_items_lagging_behind_a_loaded_tail_are_shown_once(qtbot: Any,
                                                                 tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    log.write_text("".join(f"line {n}\n@dss info \"step {n}\"\n" for n in range(10)))
    view = make_view(qtbot)
    with qtbot.waitSignal(view.tailLoaded, timeout=10_000):
        view.load_tail(log)
    # The live stream reaches the view a batch behind the file: after the load is done.
    view.append_note("info", "step 8")
    view.append_lines([("stdout", "line 8"), ("stdout", "line 9"), ("stdout", "line 10")])
    view.append_note("info", "step 9")
    view.append_note("warning", "(console) attachment queued")  # never on disk
    view.append_note("info", "step 10")
    view.append_lines([("stdout", "line 9")])  # new: the same text again, later
    shown = lines_of(view)
    assert shown.count("▸ step 8") == 1 and shown.count("▸ step 9") == 1
    assert shown.count("line 8") == 1
    assert shown[-5:] == ["▸ step 9", "line 10", "▸ (console) attachment queued",
                          "▸ step 10", "line 9"]


def test_load_tail_of_a_missing_file_says_so(qtbot: Any, tmp_path: Path) -> None:
    view = make_view(qtbot)
    with qtbot.waitSignal(view.tailFailed, timeout=10_000) as blocker:
        view.load_tail(tmp_path / "nope.log")
    assert "nope.log" in blocker.args[0]
    assert lines_of(view)[0].startswith("▸ Cannot read the log")


def test_a_newer_load_supersedes_an_older_one(qtbot: Any, tmp_path: Path) -> None:
    first = tmp_path / "first.log"
    first.write_text("from the first job\n")
    second = tmp_path / "second.log"
    second.write_text("from the second job\n")
    view = make_view(qtbot)
    with qtbot.waitSignal(view.tailLoaded, timeout=10_000):
        view.load_tail(first)
        view.load_tail(second)
    qtbot.waitUntil(lambda: not view.loading)
    assert lines_of(view) == ["from the second job"]


# -- shutdown -------------------------------------------------------------------------------


def test_no_thread_outlives_the_view(qtbot: Any, tmp_path: Path) -> None:
    # By identity, not by count: a thread of an earlier test may end during this one.
    baseline = set(threading.enumerate())
    log = tmp_path / "output.log"
    with open(log, "w") as file:
        for n in range(100_000):
            file.write(f"line {n}\n")
    view = LogView(max_blocks=500)
    view.set_log_file(log)
    with qtbot.waitSignal(view.tailLoaded, timeout=20_000):
        view.load_tail(log)
    with qtbot.waitSignal(view.saved, timeout=20_000):
        view.save_full_log(tmp_path / "copy.log")
    assert [t for t in threading.enumerate() if t.name.startswith("logview")]  # idle workers

    # Destroyed in the middle of more work: cancelled and joined, nothing delivered.
    view.load_tail(log)
    view.save_full_log(tmp_path / "copy2.log")
    view.deleteLater()
    qtbot.waitUntil(lambda: not shiboken6.isValid(view), timeout=20_000)
    assert not [t for t in set(threading.enumerate()) - baseline if t.is_alive()]
    assert not [t for t in threading.enumerate() if t.name.startswith("logview")]


def test_shutdown_joins_the_workers(qtbot: Any, tmp_path: Path) -> None:
    baseline = set(threading.enumerate())

    def new_threads() -> list[threading.Thread]:
        return [t for t in set(threading.enumerate()) - baseline if t.is_alive()]

    log = tmp_path / "output.log"
    log.write_text("a\nb\n")
    view = make_view(qtbot)
    with qtbot.waitSignal(view.tailLoaded, timeout=10_000):
        view.load_tail(log)
    view.shutdown()
    assert not new_threads()

    # A late call (the window is closing) neither raises nor starts a thread.
    view.load_tail(log)
    assert not view.loading
    with qtbot.waitSignal(view.saveFailed):
        view.set_log_file(log)
        view.save_full_log(tmp_path / "late.log")
    assert not new_threads()


def test_a_reloaded_log_shows_dss_lines_as_the_live_view_does(qtbot: Any,
                                                               tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    log.write_text("starting\n"
                   "@dss progress 0.25\n"
                   '@dss info "Affine registration done"\n'
                   "@dss progress 0 1 0.5\n"
                   "@dss warning low contrast\n"
                   '@dss attach "QC report" sub/qc.txt text/plain\n'
                   '@dss error "input rejected"\n'
                   "@dss frobnicate 3\n"
                   "@dssnot a marker\n"
                   "done\n")
    view = make_view(qtbot)
    with qtbot.waitSignal(view.tailLoaded, timeout=10_000):
        view.load_tail(log)
    assert lines_of(view) == [
        "starting",
        "▸ Affine registration done",
        "▸ low contrast",
        "▸ (console) attachment: QC report (qc.txt)",
        "▸ input rejected",
        "▸ (console) @dss line not understood: @dss frobnicate 3",
        "@dssnot a marker",
        "done",
    ]
    # Notes look like notes: the same formats as live ones.
    live = make_view(qtbot)
    live.append_note("info", "x")
    live.append_note("warning", "x")
    live.append_note("error", "x")
    for line, live_line in ((1, 0), (2, 1), (4, 2)):
        shown, expected = block_format(view, line), block_format(live, live_line)
        assert shown.foreground().color() == expected.foreground().color()
        assert shown.fontItalic() and shown.fontWeight() == expected.fontWeight()
    assert block_format(view, 0).foreground().color() == \
        block_format(view, 7).foreground().color()  # plain output stays plain


def test_find_beyond_the_shown_tail_offers_the_full_log(qtbot: Any, tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    lines = [f"line {n}" for n in range(500)]
    lines[10] = "line 10 has the Needle"
    lines[30] = "needle again at 30"
    log.write_text("".join(f"{line}\n" for line in lines))
    view = make_view(qtbot, max_blocks=100)
    view.set_log_file(log)
    with qtbot.waitSignal(view.tailLoaded, timeout=10_000):
        view.load_tail(log)
    field = find_field(view)
    field.setText("needle")
    assert not view.find_next()
    assert "not in the part of the log shown here" in view.find_status_text
    assert view.partial
    assert "not found" not in view.find_status_text
    search = button(view, "Search the full log")
    assert search.isVisible() and search.isEnabled()
    qtbot.mouseClick(search, Qt.MouseButton.LeftButton)
    # Read on a worker thread: the click returns at once.
    qtbot.waitUntil(lambda: "2 lines of the full log" in view.find_status_text, timeout=10_000)
    assert "first at line 11: line 10 has the Needle" in view.find_status_text
    assert "31: needle again at 30" in view.findChild(QLabel, "findStatus").toolTip()

    field.setText("haystack")
    assert not view.find_next()
    qtbot.mouseClick(search, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "not in the full log either" in view.find_status_text,
                    timeout=10_000)

    # Old lines dropped from a live view make it partial too.
    live = make_view(qtbot, max_blocks=50)
    live.set_log_file(log)
    live.append_lines(numbered(40))
    assert not live.partial
    live.append_lines(numbered(40, 40))
    assert live.partial
    view.clear()
    assert not view.partial


def test_the_find_box_keeps_a_usable_width_when_narrow(qtbot: Any) -> None:
    view = make_view(qtbot)
    view.resize(120, 300)  # far narrower than the bar: every widget at its least width
    qtbot.waitUntil(lambda: view.width() < 700, timeout=5000)
    field = find_field(view)
    assert field.width() >= field.fontMetrics().averageCharWidth() * 12  # a word or two
    # A long find status goes on its own line and does not widen the view.
    before = view.minimumSizeHint().width()
    field.setText("a needle nowhere in this log, with a long text " * 3)
    view.find_next()
    assert view.minimumSizeHint().width() <= before


def test_load_tail_of_a_log_not_written_yet_is_no_output(qtbot: Any, tmp_path: Path) -> None:
    # A job that has printed nothing has no log file yet: the detail pane asks for its tail
    # without looking first (the Qt thread does not stat), and nothing is an error.
    view = make_view(qtbot)
    view.load_tail(tmp_path / "output-1.log", missing_ok=True)
    view.append_lines([("stdout", "first line")])
    qtbot.waitUntil(lambda: not view.loading, timeout=10_000)
    assert lines_of(view) == ["first line"]
    quiet = make_view(qtbot)
    quiet.load_tail(tmp_path / "output-2.log", missing_ok=True)
    qtbot.waitUntil(lambda: not quiet.loading, timeout=10_000)
    assert lines_of(quiet) == []
