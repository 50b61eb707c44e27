"""Desktop notifications (issue 20, part 5) received by a real daemon (dunst on Xvfb, on a
session bus of the test's own), sent by the real window about jobs of a real engine and DSS
server."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QMainWindow

import desktop_session as session_fixtures
import test_gui_console
from desktop_session import DesktopSession
from dss_console.engine import wire
from dss_console.engine.events import EngineStatus
from dss_console.engine.states import JobState
from dss_console.gui.desktop_notify import Notifier, waiting_title
from test_gui_console import WAIT_MS, Console

desktop_session = session_fixtures.desktop_session
event_loop_qt = test_gui_console.event_loop_qt
make_console = test_gui_console.make_console

REASON = "The image is a knee"


def fail_one(console: Console, reason: str = REASON) -> int:
    """Claim a ticket and fail it with the Fail button and a message; returns its job id."""
    job_id = console.claim()
    console.window.ask_text = lambda title, label: reason  # type: ignore[method-assign]
    console.window.queue_pane.buttons["fail"].click()
    console.wait_state(job_id, JobState.FAILED)
    return job_id


def ticket_and_service(console: Console, job_id: int) -> tuple[int, str]:
    job = console.window.engine.job(job_id)
    return job.ticket_id, job.service_name


def sent(qtbot, console: Console) -> None:
    """Wait until the window's notifications are out (sent off the Qt thread)."""
    qtbot.waitUntil(lambda: not console.window.notifier.busy(), timeout=WAIT_MS)


def test_engine_status_carries_the_waiting_count_over_the_channel() -> None:
    status = EngineStatus(auto=True, busy=(1,), connection="online", claims_in_flight=0,
                          idle_poll_completed=True, waiting=3)
    assert wire.from_wire(wire.to_wire(status)).waiting == 3
    older = wire.to_wire(status)
    del older["waiting"]  # an engine from before the gate
    assert wire.from_wire(older).waiting == 0


def test_failed_jobs_make_one_bubble_the_daemon_receives_and_updates(
        make_console, qtbot, desktop_session: DesktopSession) -> None:
    console = make_console("success", notify=("failed",))
    console.login()
    first = fail_one(console)
    ticket, service = ticket_and_service(console, first)
    sent(qtbot, console)
    got = desktop_session.received()
    assert [(n.appname, n.summary, n.body) for n in got] == [
        ("DSS Console", f"Ticket {ticket} failed", f"{service}: {REASON}")]

    second = fail_one(console, "Wrong modality\n(second line not shown)")
    ticket2 = console.window.engine.job(second).ticket_id
    sent(qtbot, console)
    got = desktop_session.received()
    # The same notification, updated in place (replaces_id), now counting both.
    assert {n.id for n in got} == {got[0].id}, got
    assert (got[-1].summary, got[-1].body) == (
        "2 tickets failed", f"Latest: ticket {ticket2} of {service}: Wrong modality")


def test_kinds_not_opted_in_send_nothing(make_console, qtbot,
                                          desktop_session: DesktopSession) -> None:
    console = make_console("success", notify=("succeeded",))
    console.login()
    fail_one(console)
    sent(qtbot, console)
    job_id = console.claim()
    console.window.queue_pane.buttons["run"].click()
    console.wait_state(job_id, JobState.SUCCEEDED)
    sent(qtbot, console)
    ticket, service = ticket_and_service(console, job_id)
    # Only the success: the failure was not opted into.
    assert [(n.summary, n.body) for n in desktop_session.received()] == [
        (f"Ticket {ticket} succeeded", service)]


def test_no_session_bus_says_it_in_the_status_bar(make_console, qtbot,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    console = make_console("success", notify=("failed", "succeeded"))
    console.login()
    job_id = fail_one(console)
    ticket, service = ticket_and_service(console, job_id)
    bar = console.window.statusBar()
    qtbot.waitUntil(lambda: bar.currentMessage() == (
        f"Ticket {ticket} failed: {service}: {REASON}"), timeout=WAIT_MS)


def test_waiting_decisions_are_in_the_title_and_one_bubble(
        qtbot, event_loop_qt, desktop_session: DesktopSession) -> None:
    window = QMainWindow()
    qtbot.addWidget(window)
    window.setWindowTitle(waiting_title(0))
    notifier = Notifier(window)
    notifier.waiting_changed(1, ("decision",))
    assert window.windowTitle() == "DSS Console — 1 decision waits"
    qtbot.waitUntil(lambda: not notifier.busy(), timeout=WAIT_MS)
    notifier.waiting_changed(3, ("decision",))
    assert window.windowTitle() == "DSS Console — 3 decisions wait"
    qtbot.waitUntil(lambda: not notifier.busy(), timeout=WAIT_MS)
    notifier.waiting_changed(2, ("decision",))  # one decided: no new notification
    qtbot.waitUntil(lambda: not notifier.busy(), timeout=WAIT_MS)
    got = desktop_session.received()
    assert len({n.id for n in got}) == 1, got
    assert got[-1].summary == "3 decisions wait"
    notifier.waiting_changed(0, ("decision",))
    assert window.windowTitle() == "DSS Console"
