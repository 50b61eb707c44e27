"""Operator actions in the console window (issue 8): shortcuts, Fail…/Upload result… on
failed tickets, a blocked job, Open work dir without a file manager, Finish-then-quit.

Real widgets against the real server and engine, as in test_gui_console.py (whose console
fixture this reuses)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication

import test_gui_console
from dss_console.engine.settings import ServiceCommand, load_settings
from dss_console.engine.states import JobState
from dss_console.gui.main_window import QUIT_DRAIN
from settings_helpers import services_of
from test_gui_console import WAIT_MS, Console

from test_engine import command

# The console fixtures of test_gui_console.py, shared here.
event_loop_qt = test_gui_console.event_loop_qt
make_console = test_gui_console.make_console

MISSING_PROGRAM = "dss-console-gui-test-no-such-program"


def press_ctrl_n(console: Console) -> None:
    window = console.window
    window.activateWindow()
    console.qtbot.waitUntil(window.isActiveWindow, timeout=5000)
    table = window.services_pane.table
    console.qtbot.keyPress(table, Qt.Key.Key_Control)
    console.qtbot.keyClick(table, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    # Let go of Ctrl, as a person does (QTest would keep it held for the whole app).
    console.qtbot.keyRelease(table, Qt.Key.Key_Control)


def test_ctrl_n_claims_every_time_not_only_once(make_console, qtbot) -> None:
    console = make_console()
    for _ in range(2):
        console.sandbox.add_ticket(console.service)
    console.login()
    window = console.window
    pane = window.services_pane
    pane.select_service(console.service)
    press_ctrl_n(console)
    qtbot.waitUntil(lambda: len(window.engine.jobs()) == 1, timeout=WAIT_MS)
    # The button said "Claiming…" meanwhile: its text changed twice.
    qtbot.waitUntil(lambda: pane.claim_button.text() == "Claim next"
                    and pane.claim_button.isEnabled(), timeout=WAIT_MS)
    press_ctrl_n(console)
    qtbot.waitUntil(lambda: len(window.engine.jobs()) == 2, timeout=WAIT_MS)
    assert "Ctrl+N" in pane.claim_button.toolTip()


def test_fail_needs_a_message_and_a_failed_ticket_is_not_failed_twice(
        make_console, qtbot, tmp_path: Path) -> None:
    console = make_console()
    console.login()
    window = console.window
    job_id = console.claim()
    window.ask_text = lambda title, label: "   "  # type: ignore[method-assign]
    window.queue_pane.buttons["fail"].click()
    assert window.banner.isVisible()
    assert "message for its user is required" in window.banner.text()
    assert window.engine.job(job_id).state is JobState.CLAIMED

    window.ask_text = lambda title, label: "The image is a knee"  # type: ignore
    window.queue_pane.buttons["fail"].click()
    console.wait_state(job_id, JobState.FAILED)
    qtbot.waitUntil(lambda: not window.queue_pane.buttons["fail"].isEnabled(),
                    timeout=WAIT_MS)
    assert not window.queue_pane.buttons["cancel"].isEnabled()
    assert not window.queue_pane.actions_["fail"].isEnabled()  # nor by its shortcut

    # Upload result… turns the failure into a success: the confirmation says what the user
    # already saw and will see.
    result = tmp_path / "picked.itksnap"
    asked: list[str] = []
    window.ask_open_file = lambda *args: str(result)  # type: ignore[method-assign]
    window.ask_confirm = lambda title, text: asked.append(text) and False  # type: ignore
    assert window.queue_pane.buttons["upload"].isEnabled()
    window.queue_pane.buttons["upload"].click()
    assert len(asked) == 1
    assert "already failed" in asked[0] and "The image is a knee" in asked[0]
    assert "earlier failure followed by the success" in asked[0]
    assert window.engine.job(job_id).state is JobState.FAILED  # answered No


def test_open_work_dir_without_a_file_manager_shows_the_path(
        make_console, qtbot, monkeypatch: pytest.MonkeyPatch) -> None:
    console = make_console()
    console.login()
    window = console.window
    job_id = console.claim()
    monkeypatch.setattr("dss_console.gui.job_actions.QDesktopServices.openUrl",
                        lambda url: False)
    window.queue_pane.buttons["workdir"].click()
    shown = window.path_dialog  # opened, not exec'd: nothing blocks
    assert shown.isVisible() and shown.value() == window.engine.job(job_id).workdir
    shown.copy_button.click()
    assert QGuiApplication.clipboard().text() == window.engine.job(job_id).workdir
    shown.reject()


def test_a_blocked_job_says_what_to_do_and_can_be_failed(make_console, qtbot) -> None:
    console = make_console()
    window = console.window
    services_of(window.settings)[console.service] = ServiceCommand(
        key=console.service, command=f"{MISSING_PROGRAM} {{workspace}} {{result}}")
    console.login()
    job_id = console.claim()
    window.queue_pane.buttons["run"].click()
    console.wait_state(job_id, JobState.BLOCKED)
    detail = window.detail_pane
    qtbot.waitUntil(lambda: detail.blocked_banner.isVisible(), timeout=WAIT_MS)
    text = detail.blocked_text.text()
    assert "Blocked: the service's command cannot start" in text
    assert MISSING_PROGRAM in text and "Settings" in text and "Fail" in text
    buttons = window.queue_pane.buttons
    assert not buttons["run"].isEnabled() and not buttons["retry"].isEnabled()
    assert buttons["fail"].isEnabled() and buttons["cancel"].isEnabled()
    row = window.queue_pane.model.row_of(job_id)
    state = window.queue_pane.model.index(row, 2)
    assert state.data() == "blocked" and state.data(Qt.ItemDataRole.FontRole).bold()
    window.queue_pane.state_filter.setCurrentText("Needs attention")
    assert window.queue_pane.proxy.rowCount() == 1

    # Its button opens Settings on this service's command.
    detail.blocked_edit.click()
    dialog = window.settings_dialog
    assert dialog.isVisible()
    editor = dialog.current_editor()
    assert editor is not None and editor.githash == console.service
    dialog.reject()

    window.ask_text = lambda title, label: "We cannot run this service today"  # type: ignore
    buttons["fail"].click()
    console.wait_state(job_id, JobState.FAILED)
    qtbot.waitUntil(lambda: not detail.blocked_banner.isVisible(), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: console.server_status(job_id) == "failed", timeout=WAIT_MS)


def test_retry_run_says_why_it_cannot_rescue_a_deleted_ticket(make_console, qtbot) -> None:
    console = make_console()
    console.login()
    window = console.window
    job_id = console.claim()
    window.ask_text = lambda title, label: "not today"  # type: ignore[method-assign]
    window.queue_pane.buttons["fail"].click()
    console.wait_state(job_id, JobState.FAILED)
    qtbot.waitUntil(lambda: console.server_status(job_id) == "failed", timeout=WAIT_MS)
    console.sandbox.admin.delete_ticket(window.engine.job(job_id).ticket_id)
    retry = window.queue_pane.buttons["retry"]
    assert retry.isEnabled()  # the console cannot know yet
    window.ask_confirm = lambda title, text: True  # type: ignore[method-assign]
    retry.click()
    # The engine learns it from the server and says so; the button follows.
    qtbot.waitUntil(lambda: not retry.isEnabled(), timeout=WAIT_MS)
    assert retry.toolTip() == "Retry run is not possible: the ticket was deleted on the server"
    assert "Retry run is not possible" in window.detail_pane.header.text()


def test_finish_then_quit_claims_nothing_more(make_console, qtbot) -> None:
    console = make_console("sleep", "300")
    console.login()
    window = console.window
    job_id = console.claim_and_run()
    waiting = console.sandbox.add_ticket(console.service)  # would be claimed next
    engine = window.engine
    pane = window.services_pane
    pane.select_service(console.service)
    assert pane.claim_button.isEnabled()
    window.ask_quit_choice = lambda running, **_: QUIT_DRAIN  # type: ignore[method-assign]
    window.close()
    assert not window.closed  # waiting for the job
    assert not pane.isEnabled() and not pane.claim_button.isEnabled()
    assert "Quitting" in pane.summary.text()
    # The job ends (the operator stops it from elsewhere): the window then closes.
    engine.cancel_job(job_id)
    qtbot.waitUntil(lambda: window.closed, timeout=WAIT_MS)
    assert console.sandbox.admin.ticket_status(waiting) == "ready"  # nothing claimed meanwhile



def test_the_services_table_fits_a_1280_px_window(make_console, qtbot) -> None:
    console = make_console()
    console.login()
    window = console.window
    window.resize(1280, 820)
    window.main_splitter.setSizes([560, 720])  # the default layout
    table = window.services_pane.table
    row = window.services_pane.all_hashes().index(console.service)
    # The 24 h figures arrive after the services: wait for them, they are the widest.
    qtbot.waitUntil(lambda: any("/" in table.item(row, column).text()
                                for column in range(table.columnCount())), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: table.horizontalScrollBar().maximum() == 0, timeout=5000)
    assert window.minimumSizeHint().width() <= 1280  # nothing forces the window wider
    tip = table.item(row, 0).toolTip()
    assert console.service in tip and "Average time from claim to success" in tip
    assert "Last heard from a provider" in tip


def test_a_paused_service_is_marked_with_why(qtbot) -> None:
    from dss_console.engine.engine import ServiceView
    from dss_console.gui.services_pane import COMMAND_COLUMN, ServicesPane

    pane = ServicesPane()
    qtbot.addWidget(pane)
    command = ServiceCommand(key="a" * 40, command="seg {workspace}")
    pane.set_services([ServiceView(name="Seg", service_hash="a" * 40, version="1.0",
                                   command=command, auto=True, running=0,
                                   paused="the command cannot start: command not found: seg")])
    item = pane.table.item(0, COMMAND_COLUMN)
    assert item.text() == "paused" and "command not found: seg" in item.toolTip()
    pane.set_services([ServiceView(name="Seg", service_hash="a" * 40, version="1.0",
                                   command=command, auto=True, running=0)])
    assert pane.table.item(0, COMMAND_COLUMN).text() == "yes"


def test_a_service_paused_by_failures_is_resumed_by_the_operator(make_console, qtbot) -> None:
    console = make_console("fail")
    window = console.window
    window.settings.pause_after_failures = 1  # the breaker trips at the first failure
    first = console.sandbox.add_ticket(console.service)
    console.login()
    pane = window.services_pane
    pane.select_service(console.service)
    window.services_pane.auto_button.click()
    qtbot.waitUntil(lambda: console.sandbox.admin.ticket_status(first) == "failed",
                    timeout=WAIT_MS)
    qtbot.waitUntil(lambda: console.service in pane.paused(), timeout=WAIT_MS)
    row = pane.all_hashes().index(console.service)
    assert pane.table.item(row, 4).text() == "paused"
    assert pane.resume_button.isVisible() and pane.resume_button.isEnabled()
    second = console.sandbox.add_ticket(console.service)
    # Polls go on, but a paused service claims nothing.
    qtbot.waitUntil(window.engine.idle_poll_completed, timeout=WAIT_MS)
    assert console.sandbox.admin.ticket_status(second) == "ready"
    pane.resume_button.click()
    # Claiming goes on: the next ticket is claimed (and fails, pausing it again).
    qtbot.waitUntil(lambda: console.sandbox.admin.ticket_status(second) != "ready",
                    timeout=WAIT_MS)
    window.services_pane.auto_button.click()


def test_a_paused_service_has_a_banner_until_a_retried_ticket_succeeds(
        make_console, qtbot) -> None:
    """The failures that pause a service used to leave no banner, and the status bar said
    "Checking for tickets…" while nothing could be claimed."""
    console = make_console("fail")
    window = console.window
    window.settings.pause_after_failures = 1
    first = console.sandbox.add_ticket(console.service)
    console.login()
    pane, banner = window.services_pane, window.pause_banner
    assert not banner.isVisible()
    pane.auto_button.click()
    qtbot.waitUntil(lambda: console.sandbox.admin.ticket_status(first) == "failed",
                    timeout=WAIT_MS)
    qtbot.waitUntil(banner.isVisible, timeout=WAIT_MS)
    name = window.engine.jobs()[0].service_name
    assert banner.text.text().startswith(f"Paused: {name}: 1 ticket failed in a row")
    qtbot.waitUntil(lambda: window.poll_label.text() == f"Paused: {name}", timeout=WAIT_MS)
    # Claim next claims nothing for it either, and says why.
    second = console.sandbox.add_ticket(console.service)
    pane.select_service(console.service)
    pane.claim_button.click()
    qtbot.waitUntil(lambda: "is paused" in window.banner.text(), timeout=WAIT_MS)
    assert console.sandbox.admin.ticket_status(second) == "ready"
    # Fixed, and the failed ticket retried by hand: its success ends the pause by itself.
    settings = window.settings
    services_of(settings)[console.service] = ServiceCommand(key=console.service,
                                                        command=command("success"))
    window.apply_settings(settings)
    qtbot.waitUntil(lambda: " success {workspace}" in window.engine.settings_toml(),
                    timeout=WAIT_MS)
    job_id = window.engine.jobs()[0].job_id
    window.queue_pane.select_job(job_id)
    window.ask_confirm = lambda title, text: True  # type: ignore[method-assign]
    qtbot.waitUntil(window.queue_pane.buttons["retry"].isEnabled, timeout=WAIT_MS)
    window.queue_pane.buttons["retry"].click()
    console.wait_state(job_id, JobState.SUCCEEDED)
    qtbot.waitUntil(lambda: not banner.isVisible(), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not window.poll_label.text().startswith("Paused"),
                    timeout=WAIT_MS)
    assert console.service not in pane.paused()
    pane.auto_button.click()


def test_auto_mode_is_one_story_and_survives_a_restart(make_console, qtbot) -> None:
    """The per-service boxes say which services Auto mode claims, greyed while it is off;
    Auto mode itself comes back as the operator left it, and works the queue then."""
    console = make_console()
    console.login()
    window = console.window
    pane = window.services_pane
    row = pane.all_hashes().index(console.service)
    box = pane.table.cellWidget(row, 1)
    assert box.isChecked() and not box.isEnabled() and "off" in box.toolTip()
    pane.auto_button.click()
    assert box.isEnabled()
    qtbot.waitUntil(lambda: window.engine.auto, timeout=WAIT_MS)
    assert load_settings(console.settings_file).auto is True
    console.close()
    # Work queued while no window runs: the restarted Auto mode claims and runs it.
    tickets = [console.sandbox.add_ticket(console.service) for _ in range(2)]
    # A new window on the same settings file (what a restart reads).
    again = Console(qtbot, console.sandbox, console.settings_file.parent / "again",
                    console.service, "success")
    again.window.settings = load_settings(console.settings_file)
    again.window.settings_file = console.settings_file
    again.login()
    qtbot.waitUntil(again.window.services_pane.auto_button.isChecked, timeout=WAIT_MS)
    assert again.window.engine.auto
    qtbot.waitUntil(lambda: all(console.sandbox.admin.ticket_status(t) == "success"
                                for t in tickets), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: again.window.queue_pane.model.rowCount() == 2, timeout=WAIT_MS)
    assert again.window.auto_label.text() == "Auto mode on"
    again.window.services_pane.auto_button.click()
    assert load_settings(console.settings_file).auto is False
    again.close()


def test_the_window_is_offered_approve_reject_release_by_state(make_console, qtbot) -> None:
    """The gate's buttons show while the selected job waits (in place of Run and Retry run,
    so the row keeps its width), enabled by the engine's word for its state."""
    console = make_console()
    window = console.window
    services_of(window.settings)[console.service] = ServiceCommand(
        key=console.service, command=command("success"), approve="release")
    console.login()
    buttons = window.queue_pane.buttons
    assert not buttons["approve"].isVisible() and not buttons["release"].isVisible()
    job_id = console.claim()
    buttons["run"].click()  # the operator's Run: its approval; the result is held
    console.wait_state(job_id, JobState.AWAITING_RELEASE)
    qtbot.waitUntil(lambda: buttons["release"].isVisible() and buttons["release"].isEnabled(),
                    timeout=WAIT_MS)
    assert buttons["reject"].isEnabled() and not buttons["approve"].isEnabled()
    assert not buttons["run"].isVisible() and not buttons["retry"].isVisible()
    assert console.server_status(job_id) == "claimed"
    window.ask_confirm = lambda title, text: True  # type: ignore[method-assign]
    buttons["release"].click()
    console.wait_state(job_id, JobState.SUCCEEDED)
    qtbot.waitUntil(lambda: console.server_status(job_id) == "success", timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not buttons["release"].isVisible(), timeout=WAIT_MS)
    assert buttons["run"].isVisible()
