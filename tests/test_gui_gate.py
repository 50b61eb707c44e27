"""The operator's gate in the window (issue 20): the detail pane's gate tab for a job
waiting for approval or release, its Approve / Approve always… / Reject… / Release, the
"Waiting for you (N)" filter, the context menu, and the rules list.

Real widgets against the real engine process and the real DSS server, as in
test_gui_console.py (whose console fixture this reuses); what the user reads is read back
from the server."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QTreeWidget

import test_gui_console
from dss_console.engine.settings import ServiceCommand, load_settings
from dss_console.engine.states import JobState
from dss_console.gui.gate_actions import AlwaysAnswer, result_workspace
from dss_console.gui.queue_pane import STATE_FILTERS, WAITING_FILTER
from settings_helpers import services_of
from test_gui_console import WAIT_MS, Console

from test_engine import command

event_loop_qt = test_gui_console.event_loop_qt
make_console = test_gui_console.make_console

WAITING_INDEX = next(i for i, (label, _s) in enumerate(STATE_FILTERS) if label == WAITING_FILTER)


def gated(make_console: Any, approve: str) -> Console:
    """A console in Auto mode whose service's jobs pass the gate(s) ``approve`` names."""
    console: Console = make_console(auto=True)
    services_of(console.window.settings)[console.service] = ServiceCommand(
        key=console.service, command=command("success"), approve=approve)
    console.login()
    return console


def next_waiting(console: Console, state: JobState, seen: set[int] = frozenset()) -> int:
    """Queue a ticket; Auto mode claims it and it comes to ``state``; select it."""
    console.sandbox.add_ticket(console.service)
    window = console.window

    def found() -> int | None:
        return next((j.job_id for j in window.engine.jobs()
                     if j.state is state and j.job_id not in seen), None)

    console.qtbot.waitUntil(lambda: found() is not None, timeout=WAIT_MS)
    job_id = found()
    assert job_id is not None
    console.qtbot.waitUntil(lambda: window.queue_pane.model.job(job_id) is not None,
                            timeout=WAIT_MS)  # the view has its row
    console.wait_state(job_id, state)
    assert window.queue_pane.select_job(job_id)
    return job_id


def gate_shown(console: Console, gate: str) -> None:
    detail = console.window.detail_pane
    console.qtbot.waitUntil(
        lambda: detail.tabs.isTabVisible(detail.gate_tab)
        and detail.approval.view is not None and detail.approval.view.gate == gate,
        timeout=WAIT_MS)
    assert detail.tabs.currentIndex() == detail.gate_tab  # in front: a decision waits


def server_messages(console: Console, job_id: int) -> list[str]:
    ticket = console.window.engine.job(job_id).ticket_id
    return [str(e["message"]) for e in console.sandbox.admin.ticket_detail(ticket)["log"]]


def test_approve_from_the_gate_tab_runs_the_ticket(make_console, qtbot) -> None:
    console = gated(make_console, "run")
    window = console.window
    job_id = next_waiting(console, JobState.AWAITING_APPROVAL)
    gate_shown(console, "run")
    pane = window.detail_pane.approval
    facts = {pane.facts.topLevelItem(i).text(0): pane.facts.topLevelItem(i).text(1)
             for i in range(pane.facts.topLevelItemCount())}
    assert facts["Ticket"] == str(window.engine.job(job_id).ticket_id)
    assert "files" in facts["Input files"]
    assert pane.approve_button.isVisible() and pane.always_button.isVisible()
    assert not pane.release_button.isVisible()
    assert pane.open_button.isVisible()
    # The workspace inspector's layers, beside the facts: what the command would get.
    qtbot.waitUntil(lambda: pane.inputs.topLevelItemCount() >= 1, timeout=WAIT_MS)
    assert pane.inputs.isVisible() and "layer(s)" in pane.inputs_note.text()
    assert pane.inputs.topLevelItem(0).text(1) == \
        window.detail_pane.inputs.topLevelItem(0).text(1)  # a layer's role
    # The queue says a decision waits, in words, in its filter and its right-click menu.
    queue = window.queue_pane
    assert queue.model.data(queue.model.index(queue.model.row_of(job_id),
                                              queue.model.column_of("state"))) \
        == "awaiting approval"
    qtbot.waitUntil(lambda: queue.state_filter.itemText(WAITING_INDEX)
                    == f"{WAITING_FILTER} (1)", timeout=WAIT_MS)
    queue.state_filter.setCurrentIndex(WAITING_INDEX)
    assert [queue.proxy.job_at(r).job_id for r in range(queue.proxy.rowCount())] == [job_id]
    menu = [a.text() for a in queue.menu_actions() if a.isEnabled()]
    assert menu[:2] == ["Approve", "Reject…"] and "Run" not in menu
    assert server_messages(console, job_id)  # the user reads that it waits
    assert console.server_status(job_id) == "claimed"

    asked: list[str] = []
    window.ask_confirm = lambda title, text: asked.append(text) or True  # type: ignore
    pane.approve_button.click()
    console.wait_state(job_id, JobState.SUCCEEDED)
    assert asked and str(window.engine.job(job_id).ticket_id) in asked[0]
    qtbot.waitUntil(lambda: console.server_status(job_id) == "success", timeout=WAIT_MS)
    decided = window.engine.job(job_id).decision["run"]
    assert (decided["verdict"], decided["via"]) == ("approve", "window")
    detail = window.detail_pane
    qtbot.waitUntil(lambda: not detail.tabs.isTabVisible(detail.gate_tab), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: queue.state_filter.itemText(WAITING_INDEX) == WAITING_FILTER,
                    timeout=WAIT_MS)


def test_reject_needs_a_message_and_the_user_reads_it(make_console, qtbot) -> None:
    console = gated(make_console, "run")
    window = console.window
    job_id = next_waiting(console, JobState.AWAITING_APPROVAL)
    gate_shown(console, "run")
    pane = window.detail_pane.approval
    window.ask_text = lambda title, label: "  "  # type: ignore[method-assign]
    pane.reject_button.click()
    assert "message for its" in window.banner.text()
    assert window.engine.job(job_id).state is JobState.AWAITING_APPROVAL

    window.ask_text = lambda title, label: "The scan is a knee, not a brain"  # type: ignore
    pane.reject_button.click()
    console.wait_state(job_id, JobState.FAILED)
    qtbot.waitUntil(lambda: console.server_status(job_id) == "failed", timeout=WAIT_MS)
    assert any("The scan is a knee, not a brain" in m for m in server_messages(console, job_id))
    assert window.engine.job(job_id).decision["run"]["verdict"] == "reject"


def test_release_from_the_gate_tab_uploads_the_previewed_result(make_console, qtbot) -> None:
    console = gated(make_console, "release")
    window = console.window
    job_id = next_waiting(console, JobState.AWAITING_RELEASE)
    gate_shown(console, "release")
    pane = window.detail_pane.approval
    assert pane.release_button.isVisible() and pane.reject_button.isVisible()
    assert not pane.approve_button.isVisible() and not pane.always_button.isVisible()
    rows = [pane.files.topLevelItem(i) for i in range(pane.files.topLevelItemCount())]
    files = [row.text(0) for row in rows if row.text(1) != "attachment"]
    assert any(row.text(1) == "attachment" for row in rows)  # the command's QC report
    ticket = window.engine.job(job_id).ticket_id
    assert f"ticket_{ticket:08d}_results.itksnap" in files  # what would leave, by name
    assert "files" in pane.files.headerItem().text(0)
    assert console.server_status(job_id) == "claimed"
    assert console.sandbox.admin.result_files(ticket) == []  # nothing left yet
    # Open result finds, in the work dir, the workspace that would leave (for the viewer).
    found = result_workspace(window.engine.job(job_id), files)
    assert found is not None and found.name == f"ticket_{ticket:08d}_results.itksnap"

    window.ask_confirm = lambda title, text: True  # type: ignore[method-assign]
    pane.release_button.click()
    console.wait_state(job_id, JobState.SUCCEEDED)
    qtbot.waitUntil(lambda: console.server_status(job_id) == "success", timeout=WAIT_MS)
    assert sorted(console.sandbox.admin.result_files(ticket)) == sorted(files)


def test_approve_always_makes_a_rule_that_decides_the_next_ticket_until_revoked(
        make_console, qtbot) -> None:
    console = gated(make_console, "run")
    window = console.window
    first = next_waiting(console, JobState.AWAITING_APPROVAL)
    gate_shown(console, "run")
    window.ask_always = lambda view, presentation: AlwaysAnswer(False, "")  # type: ignore
    window.detail_pane.approval.always_button.click()
    console.wait_state(first, JobState.SUCCEEDED)
    qtbot.waitUntil(lambda: len(window.settings.approval_rules) == 1, timeout=WAIT_MS)
    (rule,) = window.settings.approval_rules
    assert rule.service == window.engine.job(first).service_name and rule.gate == "run"
    assert [r.rule_id for r in load_settings(console.settings_file).approval_rules] \
        == [rule.rule_id]  # kept in the settings file

    # The next ticket is approved by the rule: it never waits.
    console.sandbox.add_ticket(console.service)
    qtbot.waitUntil(lambda: any(j.job_id != first and j.state is JobState.SUCCEEDED
                                for j in window.engine.jobs()), timeout=WAIT_MS)
    second = next(j for j in window.engine.jobs() if j.job_id != first)
    assert second.decision["run"]["via"] == "rule"
    assert second.decision["run"]["rule"] == rule.rule_id

    # The rules list shows it with who added it; Revoke takes it away.
    window.rules_button.click()
    dialog = window.gate.rules_dialog
    assert dialog is not None
    qtbot.waitUntil(lambda: dialog.loaded, timeout=WAIT_MS)
    row = dialog.table.topLevelItem(0)
    assert row.data(0, Qt.ItemDataRole.UserRole) == rule.rule_id
    assert row.text(1) == "anyone" and row.text(4) == rule.added_by != ""
    dialog.table.setCurrentItem(row)
    assert dialog.revoke_button.isEnabled()
    dialog.revoke_button.click()
    qtbot.waitUntil(lambda: dialog.rules == [] and window.settings.approval_rules == [],
                    timeout=WAIT_MS)
    assert load_settings(console.settings_file).approval_rules == []
    third = next_waiting(console, JobState.AWAITING_APPROVAL, {first, second.job_id})
    assert window.engine.job(third).state is JobState.AWAITING_APPROVAL

    # A rule added in the dialog is listed and kept.
    dialog.service_box.setCurrentText(console.service)
    dialog.add_button.click()
    qtbot.waitUntil(lambda: len(dialog.rules) == 1, timeout=WAIT_MS)
    assert dialog.rules[0].service == console.service
    assert [r.service for r in window.settings.approval_rules] == [console.service]
    dialog.close()


def test_several_waiting_tickets_are_approved_with_one_question(make_console, qtbot) -> None:
    console = gated(make_console, "run")
    window = console.window
    first = next_waiting(console, JobState.AWAITING_APPROVAL)
    second = next_waiting(console, JobState.AWAITING_APPROVAL, {first})
    queue = window.queue_pane
    queue.view.selectAll()
    assert {j.job_id for j in queue.selected_jobs()} == {first, second}
    buttons = queue.buttons
    assert buttons["approve"].isVisible() and buttons["approve"].isEnabled()
    assert not buttons["run"].isVisible()  # all selected wait: Run does not apply
    asked: list[str] = []
    window.ask_confirm = lambda title, text: asked.append(text) or True  # type: ignore
    buttons["approve"].click()
    assert len(asked) == 1 and "2 tickets" in asked[0]
    console.wait_state(first, JobState.SUCCEEDED)
    console.wait_state(second, JobState.SUCCEEDED)


def test_the_review_shows_a_table_preview_and_the_dialogs_answer_in_the_rules_terms(
        qtbot) -> None:
    """Widgets alone (what the engine sends is built here): a table output's rows, sizes
    in words, an ended rule greyed, and what Approve always… answers."""
    import datetime as dt

    from dss_console.core.presentation import (
        ApprovalView,
        Fact,
        Preview,
        PreviewFile,
        Requester,
    )
    from dss_console.engine.gate import ApprovalRule
    from dss_console.gui.approval_pane import ApprovalPane, format_size, waited_words
    from dss_console.gui.gate_actions import AlwaysDialog
    from dss_console.gui.presentations import default_presentation
    from dss_console.gui.rules_dialog import COLUMNS, ENDED_COLOUR, fill_rules

    presentation = default_presentation()
    pane = ApprovalPane()
    qtbot.addWidget(pane)
    pane.show()
    preview = Preview(files=(PreviewFile("output", 2_500_000, "ab" * 32, "result"),),
                      text='[{"age": 61, "n": 3}]',
                      rows=(("age", "n"), ("61", "3"), ("70", "5")),
                      messages=("info: done",))
    view = ApprovalView(job_id=1, ticket_id=9, service="avg", gate="release",
                        waiting_since=None, requester=Requester("user:7@org:3", "alice", "uni"),
                        preview=preview)
    pane.show_view(view, presentation)
    assert pane.preview_table.rowCount() == 2 and pane.preview_table.columnCount() == 2
    assert pane.preview_table.item(1, 1).text() == "5"
    assert pane.files.topLevelItem(0).text(2) == format_size(2_500_000) == "2.5 MB"
    assert "1 file, 2.5 MB" in pane.files.headerItem().text(0)
    assert pane.messages.topLevelItem(0).text(0) == "info: done"
    assert "alice @ uni" in pane.heading.text() and not pane.facts.isVisible()
    since = dt.datetime(2026, 12, 7, 9, 0).timestamp()
    words = waited_words(since, since + 3 * 3600 + 60, since + 48 * 3600)
    assert words == "waiting since 09:00 (3 h 1 min), fails at 2026-12-09 09:00 without a " \
        "decision"
    assert waited_words(since, since + 30, since + 3600).endswith(
        "(under a minute), fails at 10:00 without a decision")

    before = ApprovalView(job_id=2, ticket_id=10, service="avg", gate="run",
                          waiting_since=None, requester=Requester("user:7@org:3", "alice"),
                          facts=(Fact("Database x", "no such label", warning="not on this "
                                      "node"), Fact("Argument k", "42", local_only=True)))
    pane.show_view(before, presentation)
    assert pane.warning.isVisible() and "not on this node" in pane.warning.text()
    assert pane.facts.topLevelItem(1).text(1) == "42  (shown here only)"

    dialog = AlwaysDialog(before, presentation)
    qtbot.addWidget(dialog)
    assert dialog.answer().until == "" and not dialog.answer().any_requester
    dialog.any_requester.setChecked(True)
    dialog.limited.setChecked(True)
    answer = dialog.answer()
    assert answer.any_requester and dt.date.fromisoformat(answer.until) > dt.date.today()

    table = QTreeWidget()
    qtbot.addWidget(table)
    table.setHeaderLabels(list(COLUMNS))
    fill_rules(table, [ApprovalRule("avg", "user:7@org:3", "both", "2026-01-31", "r1", "jdoe",
                                    "2026-01-02T10:00:00Z"),
                       ApprovalRule("seg", id="r2")], dt.date(2026, 3, 1))
    ended, always = table.topLevelItem(0), table.topLevelItem(1)
    assert ended.text(3) == "2026-01-31 (ended)"
    assert ended.foreground(0).color().name() == ENDED_COLOUR
    assert ended.text(4) == "jdoe" and ended.text(5).startswith("2026-01-0")
    assert (always.text(1), always.text(3)) == ("anyone", "always")
    assert always.data(0, Qt.ItemDataRole.UserRole) == "r2"
