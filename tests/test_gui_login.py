"""The login pane in the console window: Cancel and "still waiting" for a server that does not
answer, a session ended elsewhere, whole error messages, Get token without a browser; and the
status bar's connection state. Real widgets against the real server (and a hostile one)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from PySide6.QtGui import QDesktopServices, QGuiApplication

import test_gui_console
from dss_console.credentials import SessionStore
from dss_console.engine.events import ConnectionChanged, PollCompleted
from dss_console.engine.states import JobState
from dss_console.gui import tasks
from dss_console.gui.login_pane import LoginPane
from dss_console.gui.main_window import QUIT_CANCEL
from dss_console.gui.tasks import spawn
from test_gui_console import WAIT_MS

from hostile_server import HostileServer, Reply
from waiting import end_session

# The console window's fixtures, shared with test_gui_console.py.
event_loop_qt = test_gui_console.event_loop_qt
make_console = test_gui_console.make_console

LATE_SESSION = "1a7e" * 10


def held_login(release: threading.Event, email: str = "late@example.org"):
    """A /api/login that answers only when `release` is set (a server that never answers,
    until the test lets it), then with a real-looking success."""

    def reply() -> Reply:
        release.wait(60)
        return Reply(200, json.dumps({"result": {"email": email}}).encode(),
                     {"Content-Type": "application/json", "Connection": "close",
                      "Set-Cookie": f"webpy_session_id={LATE_SESSION}; Path=/"})

    return reply


def test_login_to_a_server_that_never_answers_can_be_cancelled(make_console, qtbot) -> None:
    console = make_console()
    window = console.window
    pane = window.login_pane
    pane.still_waiting_after = 0.3  # "a few seconds" in the product
    release = threading.Event()
    with HostileServer() as hostile:
        hostile.routes["POST /api/login"] = held_login(release)
        try:
            pane.server_box.setCurrentText(hostile.url)
            pane.token_edit.setText("f" * 48)
            pane.login_button.click()
            qtbot.waitUntil(lambda: any(r[:2] == ("POST", "/api/login")
                                        for r in hostile.requests), timeout=WAIT_MS)
            assert pane.cancel_button.isVisible() and pane.cancel_button.isEnabled()
            assert not pane.login_button.isEnabled() and not pane.token_edit.isEnabled()
            qtbot.waitUntil(lambda: f"Still waiting for {hostile.url}" in pane.message.text(),
                            timeout=WAIT_MS)

            pane.cancel_button.click()
            # The form is back at once, not when the call ends.
            assert pane.login_button.isEnabled() and pane.token_edit.isEnabled()
            assert pane.server_box.isEnabled() and not pane.cancel_button.isVisible()
            assert pane.message.text().startswith(f"Stopped waiting for {hostile.url}")
            assert "token may have been used" in pane.message.text()
        finally:
            release.set()  # the server answers after all: a valid session
        # The late session is ended on the server and never used.
        qtbot.waitUntil(lambda: ("GET", "/logout") in [r[:2] for r in hostile.requests],
                        timeout=WAIT_MS)
        assert hostile.requests[-1][2].get("Cookie") == f"webpy_session_id={LATE_SESSION}"
    qtbot.waitUntil(lambda: window.login_pane.store.load(hostile.url) is None, timeout=WAIT_MS)
    assert pane.current is None and window.engine is None and window.logged_in is None
    assert pane.login_page.isVisible() and not pane.who_page.isVisible()
    assert window.connection_label.text() == "Not logged in"
    assert not pane._waiting_timer.isActive()


def test_resume_can_be_cancelled_and_keeps_the_stored_session(qtbot, event_loop_qt,
                                                              tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "store", use_keyring=False)
    pane = LoginPane(store, [], lambda: True)
    qtbot.addWidget(pane)
    pane.show()
    release = threading.Event()
    with HostileServer() as hostile:
        hostile.routes["GET /api/login"] = held_login(release)
        store.save(hostile.url, "5e55" * 10, "me@example.org")
        task = spawn(pane.resume(hostile.url))
        qtbot.waitUntil(lambda: bool(hostile.requests), timeout=WAIT_MS)
        assert pane.cancel_button.isVisible()
        pane.cancel_button.click()
        qtbot.waitUntil(task.done, timeout=WAIT_MS)
        assert task.result() is False
        release.set()
        assert pane.current is None and pane.import_button.isEnabled()
    assert store.load(hostile.url) is not None  # the user's stored session is not ours to end


def test_session_ended_elsewhere_shows_the_form_and_a_new_token_carries_on(
        make_console, qtbot) -> None:
    console = make_console("success")
    console.login()
    window = console.window
    pane = window.login_pane
    engine = window.engine
    job_id = console.claim()
    # The window's own calls (statistics) must not be in flight while the session ends:
    # the server saves a session back at the end of a request that spans its logout.
    window.services_refresh.stop()
    qtbot.waitUntil(lambda: not tasks.pending_tasks(), timeout=WAIT_MS)
    # Logged out elsewhere (what `dss-console logout` does with the same session).
    end_session(console.sandbox.url, window.logged_in.client.session_id)
    window.queue_pane.buttons["run"].click()  # its reports now meet a dead session

    qtbot.waitUntil(lambda: window.connection_label.text() == "Session expired",
                    timeout=WAIT_MS)
    assert pane.login_page.isVisible() and pane.token_edit.isEnabled()
    assert pane.login_button.isEnabled() and pane.server_text() == console.sandbox.url
    assert "Session expired" in pane.who_label.text() and pane.logout_button.isEnabled()
    assert "ended this session" in pane.message.text()
    assert window.statusBar().currentMessage() == ""  # no second, cut-off version of it
    assert window.engine is engine  # the jobs are still there

    pane.token_edit.setText(console.sandbox.fresh_token())
    pane.login_button.click()
    qtbot.waitUntil(lambda: window.connection_label.text().startswith("Online"),
                    timeout=WAIT_MS)
    assert not pane.login_page.isVisible() and "Logged in" in pane.who_label.text()
    assert window.engine is engine  # the same engine, with the new session
    # What the job reported while the session was gone is delivered, and it finishes.
    console.wait_state(job_id, JobState.SUCCEEDED)
    qtbot.waitUntil(lambda: console.server_status(job_id) == "success", timeout=WAIT_MS)


def test_login_errors_are_shown_whole(make_console, qtbot) -> None:
    console = make_console()
    window = console.window
    pane = window.login_pane
    page = ("<html><body><h1>Internal Server Error</h1><p>" + "The proxy in front of this "
            "address could not reach its upstream application server. " * 6
            + "</p></body></html>").encode()
    with HostileServer() as hostile:
        hostile.routes["POST /api/login"] = Reply(500, page, {"Content-Type": "text/html",
                                                              # no thread left waiting
                                                              "Connection": "close"})
        pane.server_box.setCurrentText(hostile.url)
        pane.token_edit.setText("f" * 48)
        pane.login_button.click()
        qtbot.waitUntil(lambda: "HTTP 500" in pane.message.text(), timeout=WAIT_MS)

    def shown_whole() -> bool:
        label = pane.message
        return label.height() >= label.heightForWidth(label.width())

    qtbot.waitUntil(shown_whole, timeout=5000)
    assert "<h1>" not in pane.message.text()
    # Longer still (a page's text, a long path): wrapped, whole, and in the tooltip.
    long = "Could not log in: " + "the server said something rather long. " * 12
    pane.say_error(long)
    qtbot.waitUntil(shown_whole, timeout=5000)
    assert pane.message.text() == long.strip() or pane.message.text() == long
    assert pane.message.toolTip() == pane.message.text()


def test_get_token_without_a_browser_shows_the_address(qtbot, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl",
                        lambda url: opened.append(url.toString()) or False)
    pane = LoginPane(SessionStore(tmp_path / "store", use_keyring=False), [], lambda: True)
    qtbot.addWidget(pane)
    pane.show()
    pane.server_box.setCurrentText("https://dss.example.org/")
    pane.get_token_button.click()
    assert opened == ["https://dss.example.org/token"]
    dialog = pane.url_dialog
    assert dialog is not None and dialog.isVisible()
    assert dialog.value_edit.text() == "https://dss.example.org/token"
    assert dialog.value_edit.isReadOnly()
    dialog.copy_button.click()
    assert QGuiApplication.clipboard().text() == "https://dss.example.org/token"
    dialog.close()


def test_status_bar_shows_one_connection_state(make_console, qtbot) -> None:
    console = make_console()
    window = console.window
    window.settings.poll_interval = 30.0  # a countdown long enough to read
    console.login()
    window.services_pane.auto_button.click()
    events = window.engine.events
    server = console.sandbox.url

    def bar() -> tuple[str, str, str]:
        return (window.connection_label.text(), window.poll_label.text(),
                window.statusBar().currentMessage())

    qtbot.waitUntil(lambda: bar()[1].startswith("Next poll in"), timeout=WAIT_MS)
    events.publish(ConnectionChanged(state="offline",
                                     detail="unreachable (connection refused)"))
    qtbot.waitUntil(lambda: bar()[0] == "Offline, retrying", timeout=WAIT_MS)
    assert bar() == ("Offline, retrying", "", "")  # no countdown, no contradicting message
    assert "connection refused" in window.connection_label.toolTip()

    events.publish(ConnectionChanged(state="waiting", detail="no reply for 15 s"))
    qtbot.waitUntil(lambda: bar()[0] == "No reply for 15 s", timeout=WAIT_MS)
    assert bar()[1:] == ("", "")

    events.publish(ConnectionChanged(state="online"))
    qtbot.waitUntil(lambda: bar()[0] == f"Online: {server}", timeout=WAIT_MS)
    assert bar()[1].startswith("Next poll in") and bar()[2] == ""
    # A poll due now is on its way: say so, not "Next poll in 0 s" for as long as it takes.
    # Published again at each check: the real engine's own PollCompleted (a poll it was
    # woken for, late under load) may land after the test's and set a new countdown.
    def checking() -> bool:
        shown = bar()[1] == "Checking for tickets…"
        if not shown:
            events.publish(PollCompleted(ready={}, next_poll_in=0.0))
        return shown

    qtbot.waitUntil(checking, timeout=WAIT_MS)
    window.services_pane.auto_button.click()


def test_itksnap_session_logs_in_and_logging_out_only_forgets_it(
        make_console, qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """'Use ITK-SNAP's session' logs in with the cookie itksnap-wt keeps in ~/.alfabis;
    logging out forgets it here but leaves it working for ITK-SNAP."""
    import hashlib

    from dss_console.dss import DssClient
    from dss_console.dss.transport import SESSION_COOKIE

    console = make_console("success")
    pane = console.window.login_pane
    url = console.sandbox.url
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    pane.server_box.setCurrentText(url)
    pane.import_button.click()
    qtbot.waitUntil(lambda: "no saved session" in pane.message.text(), timeout=WAIT_MS)
    assert pane.current is None

    with DssClient(url) as itksnap:
        itksnap.login(console.sandbox.fresh_token())
        session_id = itksnap.session_id
        jar = tmp_path / "home" / ".alfabis" / f"cookie_{hashlib.md5(url.encode()).hexdigest()}.jar"
        jar.parent.mkdir(parents=True)
        host = url.split("//", 1)[1].split(":", 1)[0]
        jar.write_text(f"#HttpOnly_{host}\tFALSE\t/\tFALSE\t0\t{SESSION_COOKIE}\t{session_id}\n")
        pane.import_button.click()
        qtbot.waitUntil(lambda: console.window.engine is not None, timeout=WAIT_MS)
        assert pane.current is not None and "Logged in to" in pane.who_label.text()

        console.window.ask_quit_choice = lambda running, **_: QUIT_CANCEL
        pane.logout_button.click()
        qtbot.waitUntil(lambda: pane.current is None and console.window.engine is None,
                        timeout=WAIT_MS)
        assert pane.message.text() == f"Logged out of {url}."
        assert pane.store.load(url) is None
        assert itksnap.whoami()  # ITK-SNAP's session still works on the server
