"""The window's loose ends (issue 17, minor and polish): Settings OK leaves the file as the
operator wrote it, Reload keeps the switch and the footer with the file, reasons are
required before OK, banners end with their cause, several rows at once, the only service
selected, a retried job's clock, and the quit question's count and choices.

Real widgets against the real server and engine, with test_gui_console.py's console fixture."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from PySide6.QtCore import QItemSelectionModel, QTimer

import test_gui_console
from dss_console.engine.engine import ServiceView
from dss_console.engine.events import ConnectionChanged, EngineNotice
from dss_console.engine.settings import ServiceCommand, load_settings, settings_to_toml
from dss_console.engine.states import JobState
from dss_console.gui.main_window import QUIT_CANCEL
from dss_console.gui.reason_dialog import ReasonDialog
from dss_console.gui.services_pane import ServicesPane
from test_gui_console import WAIT_MS, Console

event_loop_qt = test_gui_console.event_loop_qt
make_console = test_gui_console.make_console


def commented_file(console: Console, extra: str = "") -> bytes:
    """The console's settings as an operator would keep them: comments, "30m"."""
    text = ("# kept by hand: do not let a program rewrite this\n"
            'pause_window = "30m"   # half an hour\n' + extra
            + settings_to_toml(console.window.settings))
    console.settings_file.write_text(text)
    return text.encode()


def reload(console: Console) -> None:
    window = console.window
    window.banner.clear()
    window.reload_settings()
    console.qtbot.waitUntil(lambda: "reloaded" in window.banner.text(), timeout=WAIT_MS)


def press_ok_in_settings(console: Console) -> None:
    window = console.window
    window.settings_button.click()
    dialog = window.settings_dialog
    dialog.ok_button.click()
    console.qtbot.waitUntil(lambda: not dialog.isVisible(), timeout=WAIT_MS)


def test_settings_ok_leaves_the_operators_file_alone(make_console, qtbot) -> None:
    console = make_console()
    window = console.window
    original = commented_file(console)
    reload(console)
    assert window.settings.pause_window == 1800.0
    os.utime(console.settings_file, ns=(10**9, 10**9))
    press_ok_in_settings(console)  # nothing changed
    assert console.settings_file.read_bytes() == original
    assert console.settings_file.stat().st_mtime_ns == 10**9

    window.settings_button.click()
    dialog = window.settings_dialog
    dialog.concurrency_spin.setValue(5)
    dialog.ok_button.click()
    qtbot.waitUntil(lambda: load_settings(console.settings_file).concurrency == 5,
                    timeout=WAIT_MS)
    text = console.settings_file.read_text()
    assert text.replace("concurrency = 5", "concurrency = 2") == original.decode()


def test_reload_brings_auto_mode_and_the_footer_in_step_with_the_file(
        make_console, qtbot) -> None:
    console = make_console()
    console.login()
    window = console.window
    assert not window.engine.auto and window.auto_label.text() == "Auto mode off"
    commented_file(console, "auto = true\n")
    text = console.settings_file.read_text().replace("concurrency = 2", "concurrency = 6")
    console.settings_file.write_text(text)
    reload(console)
    assert window.services_pane.auto_button.isChecked()
    qtbot.waitUntil(lambda: window.engine.auto, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.auto_label.text() == "Auto mode on", timeout=WAIT_MS)
    assert window.jobs_label.text().endswith("/6")
    window.services_pane.auto_button.click()  # off again; the file says so
    qtbot.waitUntil(lambda: not window.engine.auto, timeout=WAIT_MS)
    assert load_settings(console.settings_file).auto is False


def test_a_reason_is_required_before_ok(qtbot) -> None:
    dialog = ReasonDialog("Fail ticket", "Why?")
    qtbot.addWidget(dialog)
    assert not dialog.ok_button.isEnabled()
    dialog.edit.setPlainText("  \n ")
    assert not dialog.ok_button.isEnabled()
    dialog.accept()  # Enter, with the button off
    assert dialog.result() == 0 and dialog.isHidden()
    dialog.edit.setPlainText(" The image is a knee \n")
    assert dialog.ok_button.isEnabled()
    assert dialog.reason() == "The image is a knee"


def test_fail_asks_with_the_reason_dialog_and_its_complaint_ends(make_console, qtbot) -> None:
    console = make_console()
    console.login()
    window = console.window
    job_id = console.claim()
    # An empty reason from elsewhere (a script answering ask_text) still complains...
    window.ask_text = lambda title, label: "   "  # type: ignore[method-assign]
    window.queue_pane.buttons["fail"].click()
    assert window.banner.isVisible() and "is required" in window.banner.text()
    del window.ask_text  # the real dialog from here on
    seen: list[bool] = []

    def answer() -> None:
        dialog = window.findChild(ReasonDialog)
        seen.append(dialog.ok_button.isEnabled())
        dialog.edit.setPlainText("The image is a knee")
        seen.append(dialog.ok_button.isEnabled())
        dialog.ok_button.click()

    QTimer.singleShot(0, answer)
    window.queue_pane.buttons["fail"].click()
    assert seen == [False, True]
    console.wait_state(job_id, JobState.FAILED)
    assert window.engine.job(job_id).reason == "The image is a knee"
    # ... and the complaint is gone once the ticket failed.
    qtbot.waitUntil(lambda: not window.banner.isVisible(), timeout=WAIT_MS)


def test_an_unreachable_banner_ends_when_the_server_answers(make_console, qtbot) -> None:
    console = make_console()
    console.login()
    window = console.window
    events = window.engine.events
    events.publish(EngineNotice(level="error", text="polling for tickets failed: Could not "
                                "list tickets: 127.0.0.1 is unreachable (connection refused)"))
    qtbot.waitUntil(lambda: "unreachable" in window.banner.text()
                    and window.banner.isVisible(), timeout=WAIT_MS)
    events.publish(ConnectionChanged(state="offline", detail="connection refused"))
    qtbot.waitUntil(lambda: window.connection_label.text() == "Offline, retrying",
                    timeout=WAIT_MS)
    assert window.banner.isVisible()
    events.publish(ConnectionChanged(state="online"))
    qtbot.waitUntil(lambda: not window.banner.isVisible(), timeout=WAIT_MS)
    # A banner of another cause stays when the connection comes back.
    window.show_banner("Could not save the settings: disk full")
    events.publish(ConnectionChanged(state="offline", detail="x"))
    events.publish(ConnectionChanged(state="online"))
    qtbot.waitUntil(lambda: window.connection_label.text().startswith("Online"),
                    timeout=WAIT_MS)
    assert window.banner.isVisible() and "disk full" in window.banner.text()


def select_rows(console: Console, job_ids: list[int]) -> None:
    pane = console.window.queue_pane
    selection = pane.view.selectionModel()
    selection.clearSelection()
    for job_id in job_ids:
        index = pane.proxy.mapFromSource(pane.model.index(pane.model.row_of(job_id), 0))
        selection.select(index, QItemSelectionModel.SelectionFlag.Select
                         | QItemSelectionModel.SelectionFlag.Rows)


def test_fail_and_retry_several_selected_tickets_at_once(make_console, qtbot) -> None:
    console = make_console()
    console.login()
    window = console.window
    first, second = console.claim(), console.claim()
    buttons = window.queue_pane.buttons
    select_rows(console, [first, second])
    assert buttons["fail"].isEnabled() and buttons["cancel"].isEnabled()
    assert not buttons["run"].isEnabled() and not buttons["upload"].isEnabled()
    asked: list[str] = []
    window.ask_text = lambda title, label: asked.append(label) or "Scanner broke"  # type: ignore
    buttons["fail"].click()
    assert len(asked) == 1 and "2 tickets" in asked[0]  # one reason for all
    for job_id in (first, second):
        console.wait_state(job_id, JobState.FAILED)
        assert window.engine.job(job_id).reason == "Scanner broke"

    select_rows(console, [first, second])
    qtbot.waitUntil(buttons["retry"].isEnabled, timeout=WAIT_MS)
    confirmed: list[str] = []
    window.ask_confirm = lambda title, text: confirmed.append(text) or True  # type: ignore
    buttons["retry"].click()
    assert len(confirmed) == 1 and "2 tickets" in confirmed[0]
    for job_id in (first, second):
        console.wait_state(job_id, JobState.SUCCEEDED)


def test_the_only_service_is_selected_so_claim_next_is_ready(qtbot) -> None:
    pane = ServicesPane()
    qtbot.addWidget(pane)
    pane.set_logged_in(True)
    view = ServiceView(name="Seg", service_hash="a" * 40, version="1.0",
                       command=ServiceCommand(key="Seg", command="seg {workspace}"), auto=True,
                       running=0)
    pane.set_services([view])
    assert pane.selected_hashes() == ["a" * 40] and pane.claim_button.isEnabled()
    pane.table.clearSelection()  # the operator's choice stands at the next refresh
    pane.set_services([view])
    assert pane.selected_hashes() == [] and not pane.claim_button.isEnabled()
    two = [view, dataclasses.replace(view, name="Other", service_hash="b" * 40)]
    pane.set_services(two)
    assert pane.selected_hashes() == []  # of two, none is the obvious one


def test_a_retried_job_has_a_running_clock(make_console, qtbot) -> None:
    console = make_console("sleep", "300")
    console.login()
    window = console.window
    job_id = console.claim_and_run()
    window.ask_confirm = lambda title, text: True  # type: ignore[method-assign]
    window.queue_pane.buttons["cancel"].click()
    console.wait_state(job_id, JobState.CANCELLED)
    assert window.engine.job(job_id).finished_at is not None
    window.queue_pane.select_job(job_id)
    qtbot.waitUntil(window.queue_pane.buttons["retry"].isEnabled, timeout=WAIT_MS)
    window.queue_pane.buttons["retry"].click()
    console.wait_state(job_id, JobState.RUNNING)
    assert window.engine.job(job_id).finished_at is None  # the last attempt's end is gone
    model = window.queue_pane.model
    cell = lambda: model.index(model.row_of(job_id), model.column_of("run_time")).data()  # noqa: E731
    qtbot.waitUntil(lambda: cell() not in ("0 s", "—", None), timeout=WAIT_MS)


def test_the_quit_question_counts_what_the_engine_runs_now(make_console, qtbot) -> None:
    console = make_console()
    console.login()
    window = console.window
    job_id = console.claim()
    window.queue_pane.buttons["run"].click()
    console.wait_state(job_id, JobState.SUCCEEDED)
    # The table a moment behind the engine: it still shows the job running.
    stale = dataclasses.replace(window.engine.job(job_id), state=JobState.RUNNING,
                                finished_at=None)
    window.queue_pane.model.update_jobs([stale])
    asked: list[int] = []
    window.ask_quit_choice = lambda running, **_: asked.append(running) or QUIT_CANCEL  # type: ignore
    window.close()
    qtbot.waitUntil(lambda: window.closed, timeout=WAIT_MS)
    assert asked == []  # nothing runs: nothing to ask


def test_a_sandbox_console_does_not_offer_to_keep_running(make_console, qtbot) -> None:
    console = make_console("sleep", "300")
    window = console.window
    window.sandbox = True  # as gui/app.py makes it for --sandbox
    console.login()
    console.claim_and_run()
    offered: list[dict] = []
    window.ask_quit_choice = (  # type: ignore[method-assign]
        lambda running, **options: offered.append({"running": running, **options})
        or QUIT_CANCEL)
    window.close()
    qtbot.waitUntil(lambda: window.closed, timeout=WAIT_MS)
    assert offered == [{"running": 1, "allow_detach": False}]


def test_a_server_address_is_never_broken_across_lines_in_a_label(qapp: Any) -> None:
    """The login line wraps, but not inside the server's address (it broke after "http://")."""
    from PySide6.QtGui import QTextDocument

    from dss_console.core.presentation import unbroken_html

    url = "https://v6.example.org:5443/hq"

    def lines(text: str) -> list[str]:
        document = QTextDocument()
        document.setHtml(f"Node <b>station-demo</b> of <b>station</b> on <b>{text}</b> "
                         "(vantage6 5.x, realm vantage6)")
        document.setTextWidth(300)
        document.size()  # lays the text out
        block = document.begin()
        layout = block.layout()
        return [block.text()[layout.lineAt(i).textStart():][:layout.lineAt(i).textLength()]
                .replace("\u2060", "").replace("\u00a0", " ")
                for i in range(layout.lineCount())]

    plain = lines(url)
    assert not any(url in line for line in plain), plain  # it does break without the joiners
    joined = lines(unbroken_html(url))
    assert len(joined) > 1 and any(url in line for line in joined), joined
