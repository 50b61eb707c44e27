"""The operator's gate in the window as a vantage6 node (issue 20): a run held at both
gates shows who asked (user and organization), the method and the argument values (marked
as shown here only), then the output that would leave, readable; Approve and Release from
the gate tab complete it for the researcher. Real vantage6-server 4.15.2, the official
client as the researcher, the window's own engine process (test_gui_v6's fixture)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import test_gui_v6
from dss_console.engine.states import JobState
from settings_helpers import v6_of
from test_gui_console import WAIT_MS, event_loop_qt  # noqa: F401 (fixture)
from test_gui_v6 import NodeConsole

from v6_fixtures import SERVER_TEST_TIMEOUT, Researcher

pytestmark = pytest.mark.timeout(SERVER_TEST_TIMEOUT)
node_console = test_gui_v6.node_console


def facts_of(console: NodeConsole) -> dict[str, str]:
    tree = console.window.detail_pane.approval.facts
    return {tree.topLevelItem(i).text(0): tree.topLevelItem(i).text(1)
            for i in range(tree.topLevelItemCount())}


def test_a_run_held_at_both_gates_is_approved_then_released_from_the_gate_tab(
        node_console: NodeConsole, researchers: dict[str, Researcher], qtbot: Any) -> None:
    console, window = node_console, node_console.window
    algorithms = v6_of(window.settings).algorithms
    algorithms[console.image] = dataclasses.replace(algorithms[console.image], approve="both")
    window.settings.auto = True
    console.login()
    researcher = researchers["demo"]
    task_id = console.create_task(researcher, "summarise", "gui-gate",
                                  column="zebra_column_value")

    def waiting(state: JobState) -> int | None:
        return next((j.job_id for j in window.engine.jobs() if j.state is state), None)

    qtbot.waitUntil(lambda: waiting(JobState.AWAITING_APPROVAL) is not None, timeout=WAIT_MS)
    job_id = waiting(JobState.AWAITING_APPROVAL)
    assert job_id is not None
    console.wait_state(job_id, JobState.AWAITING_APPROVAL)
    assert window.queue_pane.select_job(job_id)
    detail, pane = window.detail_pane, window.detail_pane.approval
    qtbot.waitUntil(lambda: pane.view is not None and pane.view.gate == "run",
                    timeout=WAIT_MS)
    assert detail.tabs.currentIndex() == detail.gate_tab
    assert pane.view is not None and pane.view.requester is not None
    facts = facts_of(console)
    values = " | ".join(facts.values())
    assert "research" in facts["Requested by"]  # the requester's organization, by name
    assert "summarise" in values
    assert any("zebra_column_value" in v and "(shown here only)" in v
               for v in facts.values()), facts  # a value, for this operator only
    # A node's inputs are no workspace: no inspector, no ITK-SNAP.
    assert not pane.inputs.isVisible() and not pane.open_button.isVisible()
    assert (researcher.call("runs", task_id=task_id)[0]["status"]) != "completed"

    window.ask_confirm = lambda title, text: True  # type: ignore[method-assign]
    pane.approve_button.click()
    console.wait_state(job_id, JobState.AWAITING_RELEASE)
    # The tab turns into the review of what would leave, in front.
    qtbot.waitUntil(lambda: pane.view is not None and pane.view.gate == "release",
                    timeout=WAIT_MS)
    assert detail.tabs.currentIndex() == detail.gate_tab
    files = [pane.files.topLevelItem(i).text(0) for i in range(pane.files.topLevelItemCount())]
    assert "output" in files
    assert '"ok"' in pane.preview_text.toPlainText() and "column" in \
        pane.preview_text.toPlainText()
    assert pane.release_button.isVisible() and not pane.approve_button.isVisible()
    assert "research" in pane.heading.text()  # for whom it would leave

    pane.release_button.click()
    console.wait_state(job_id, JobState.SUCCEEDED)
    assert researcher.call("wait_task", task_id=task_id, timeout=60) == "completed"
    assert researcher.call("results", task_id=task_id) == [{"ok": ["column"]}]
    qtbot.waitUntil(lambda: not detail.tabs.isTabVisible(detail.gate_tab), timeout=WAIT_MS)
