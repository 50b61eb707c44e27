"""The console window as a vantage6 node: the real vantage6-server 4.15.2, the official
`vantage6-client` as the researcher, the window's own engine process, real widgets.

Each test configures an image of its own (a plain local command), so runs other modules
left pending for the same node are never the ones these tests take.
"""

from __future__ import annotations

import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt, QTimer

from dss_console import plugins
from dss_console.core.history import Bar
from dss_console.credentials import SessionStore
from dss_console.engine.settings import load_settings, parse_settings
from dss_console.engine.states import JobState
from dss_console.gui import tasks
from dss_console.gui.main_window import QUIT_CANCEL, MainWindow
from dss_console.gui.services_pane import DAY_COLUMN
from dss_console.sources.v6.sandbox import V6Sandbox
from dss_console.sources.v6.settings import parse_v6_settings
from settings_helpers import settings_with, v6_of
from test_gui_console import WAIT_MS, child_pids, event_loop_qt  # noqa: F401 (fixture)

from v6_fixtures import (
    SERVER_TEST_TIMEOUT,
    Researcher,
    wait_for,
)

pytestmark = pytest.mark.timeout(SERVER_TEST_TIMEOUT)

# The algorithm: the decrypted input is JSON {"method", "kwargs"}; "sleep" never ends by
# itself, anything else writes the sum of its kwargs' lengths.
ALGORITHM = textwrap.dedent('''
    import json, sys, time
    task = json.load(open(sys.argv[1]))
    print("method", task["method"], flush=True)
    if task["method"] == "sleep":
        time.sleep(600)
    json.dump({"ok": sorted(task.get("kwargs", {}))}, open(sys.argv[2], "w"))
''')


class NodeConsole:
    """A console window for the plain collaboration's node, on its own image."""

    def __init__(self, qtbot: Any, sandbox: V6Sandbox, tmp_path: Path) -> None:
        self.qtbot = qtbot
        self.sandbox = sandbox
        self.image = f"gui-test-{uuid.uuid4().hex[:8]}"
        script = tmp_path / "algorithm.py"
        script.write_text(ALGORITHM)
        v6 = parse_v6_settings({
            "algorithms": {self.image: {"command": f"{sys.executable} {script} {{input}} "
                                                  "{output}"}},
            "databases": {"default": {"uri": str(tmp_path / "data.csv"), "type": "csv"}}})
        settings = settings_with(instance=f"gui-v6-{uuid.uuid4().hex[:6]}",
                            workroot=tmp_path / "work", poll_interval=0.5, concurrency=2, v6=v6)
        self.window = MainWindow(settings, tmp_path / "settings.toml",
                                 SessionStore(tmp_path / "store", use_keyring=False),
                                 data_dir=tmp_path / "data",
                                 window_state_file=tmp_path / "window.ini")
        self.window.show()

    def fill_login(self, node: str, api_key: str | None = None, key_file: str = "") -> None:
        pane = self.window.login_pane
        pane.source_box.setCurrentIndex(pane.source_box.findData("v6"))
        pane.server_box.setCurrentText(self.sandbox.url)
        pane.token_edit.setText(api_key if api_key is not None
                                else self.sandbox.node(node).api_key)
        pane.key_file_edit.setText(key_file)
        pane.login_button.click()

    def login(self) -> None:
        self.fill_login("station-demo")
        self.qtbot.waitUntil(lambda: self.window.engine is not None, timeout=WAIT_MS)
        self.qtbot.waitUntil(lambda: self.image in self.window.services_pane.all_hashes(),
                             timeout=WAIT_MS)

    def create_task(self, researcher: Researcher, method: str, name: str,
                    **kwargs: Any) -> int:
        task = researcher.call("create_task", image=self.image, method=method, kwargs=kwargs,
                               organizations=[self.sandbox.org_id("station")],
                               databases=[{"label": "default"}], name=name)
        return int(task["id"])

    def claim_and_run(self) -> int:
        window = self.window
        before = {j.job_id for j in window.engine.jobs()}
        window.services_pane.select_service(self.image)
        window.services_pane.claim_button.click()
        self.qtbot.waitUntil(lambda: len(window.engine.jobs()) > len(before), timeout=WAIT_MS)
        (job,) = [j for j in window.engine.jobs() if j.job_id not in before]
        self.qtbot.waitUntil(lambda: window.engine.job(job.job_id).inputs_ready,
                             timeout=WAIT_MS)
        assert window.queue_pane.select_job(job.job_id)
        self.qtbot.waitUntil(window.queue_pane.buttons["run"].isEnabled, timeout=WAIT_MS)
        window.queue_pane.buttons["run"].click()
        return job.job_id

    def wait_state(self, job_id: int, *states: JobState) -> None:
        self.qtbot.waitUntil(lambda: self.window.engine.job(job_id).state in states,
                             timeout=WAIT_MS)
        self.qtbot.waitUntil(lambda: self.window.queue_pane.model.job(job_id).state in states,
                             timeout=WAIT_MS)

    def cell(self, job_id: int, column_id: str) -> str:
        model = self.window.queue_pane.model
        return model.index(model.row_of(job_id), model.column_of(column_id)).data()

    def close(self) -> None:
        self.window.ask_quit_choice = lambda running, **_: QUIT_CANCEL  # type: ignore
        self.window.close()
        self.qtbot.waitUntil(lambda: self.window.closed, timeout=WAIT_MS)


@pytest.fixture
def node_console(qtbot: Any, event_loop_qt: Any, v6_sandbox: V6Sandbox,  # noqa: F811
                 tmp_path: Path) -> Iterator[NodeConsole]:
    before = set(child_pids(set()))  # the vantage6 server and researchers are not ours
    threads_before = set(threading.enumerate())
    console = NodeConsole(qtbot, v6_sandbox, tmp_path)
    yield console
    if not console.window.closed:
        console.close()
    active = [t for t in console.window.findChildren(QTimer) if t.isActive()]
    assert not active, f"timers left running: {active}"
    qtbot.waitUntil(lambda: not tasks.pending_tasks(), timeout=15_000)
    tasks.shutdown_executor(wait=True)
    # The engine process the window started is gone with the window.
    qtbot.waitUntil(lambda: not set(child_pids(before)), timeout=15_000)
    assert not [t for t in set(threading.enumerate()) - threads_before
                if t.is_alive() and not t.daemon]


def test_a_run_from_login_to_the_audit_in_the_nodes_words(
        node_console: NodeConsole, researchers: dict[str, Researcher], qtbot: Any) -> None:
    console, window = node_console, node_console.window
    console.login()
    assert window.source_kind == "v6"
    assert window.services_box.title() == "Algorithms" and window.queue_box.title() == "Runs"
    assert "station-demo" in window.login_pane.who_label.text()
    model = window.queue_pane.model
    assert model.headerData(model.column_of("work"), Qt.Orientation.Horizontal) == "Run"
    assert model.headerData(model.column_of("service"), Qt.Orientation.Horizontal) == "Image"
    assert not window.queue_pane.view.isColumnHidden(model.column_of("requested_by"))
    assert window.view_buttons["audit"].isVisible()
    # The node's words offer no upload: results leave with the run's end, never by hand.
    assert "upload" not in window.queue_pane.buttons
    assert set(window.queue_pane.buttons) >= {"run", "cancel", "fail", "retry"}
    # An algorithm entry without isolation keys runs as before (issue 19), and says so.
    services = window.services_pane
    image_row = services.all_hashes().index(console.image)
    assert "Isolation: no isolation" in services.table.item(image_row, 0).toolTip()

    researcher = researchers["demo"]
    task_id = console.create_task(researcher, "summarise", "gui-summary",
                                  column="zebra_column", secret_cutoff="quux_cutoff_value")
    job_id = console.claim_and_run()
    console.wait_state(job_id, JobState.SUCCEEDED)
    assert researcher.call("wait_task", task_id=task_id, timeout=60) == "completed"
    assert researcher.call("results", task_id=task_id) == [{"ok": ["column",
                                                                   "secret_cutoff"]}]

    assert console.cell(job_id, "task") == f"{task_id} · gui-summary"
    assert console.cell(job_id, "requested_by").startswith("research / ")
    assert console.cell(job_id, "databases") == "default"
    assert console.cell(job_id, "service") == console.image

    # The node keeps no figures of its own: the algorithm's 24 h count is the ledger's, the
    # same its history chart shows (refreshed after the run's end).
    services.select_service(console.image)
    chart = services.history_chart
    qtbot.waitUntil(lambda: chart.history() is not None
                    and chart.history().hours[-1] == Bar(1, 0), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: services.table.item(image_row, DAY_COLUMN).text() == "1 / 0",
                    timeout=WAIT_MS)

    # The detail pane: the live output, the calls sent, the input's summary, never values.
    detail = window.detail_pane
    qtbot.waitUntil(lambda: "method summarise" in detail.log.text_edit.toPlainText(),
                    timeout=WAIT_MS)
    assert "Limits: no isolation" in detail.header.text()
    assert detail.tabs.tabText(detail.inputs_tab) == "Run"
    summary = detail.inputs_note.text()
    assert "summarise" in summary and "column, secret_cutoff" in summary
    assert "zebra_column" not in summary and "quux_cutoff_value" not in summary
    qtbot.waitUntil(lambda: any("end" in detail.calls.topLevelItem(i).text(1)
                                for i in range(detail.calls.topLevelItemCount())),
                    timeout=WAIT_MS)
    # A finished run cannot run again: Retry is off and says why.
    assert not window.queue_pane.buttons["run"].isEnabled()

    window.view_buttons["audit"].click()
    dialog = window.view_windows["audit"]
    qtbot.waitUntil(lambda: dialog is not None and dialog.model.rowCount() >= 1,
                    timeout=WAIT_MS)
    texts = [dialog.model.index(0, c).data() for c in range(dialog.model.columnCount())]
    joined = " | ".join(str(t) for t in texts)
    assert str(task_id) in joined and console.image in joined and "research" in joined
    dialog.close()

    # Quitting asks about runs and the node: they stay open on the server (the default) or
    # fail in the node's words; no tickets, no provider.
    box = window.quit_choice_box(2, allow_detach=True)
    try:
        labels = [b.text() for b in box.buttons()]
        assert box.defaultButton().text() == "Stop, run again at the next start"
        assert "Stop and fail the runs" in labels
        said = f"{box.windowTitle()} {box.text()} {box.informativeText()}"
        assert "run(s)" in said and "the node starts" in said
        assert "the node shut down" in said
        for word in ("ticket", "provider", "job(s)"):
            assert word not in said, word
    finally:
        box.deleteLater()


def test_cancel_fails_the_run_with_the_operators_reason(
        node_console: NodeConsole, researchers: dict[str, Researcher], qtbot: Any) -> None:
    console, window = node_console, node_console.window
    console.login()
    researcher = researchers["demo"]
    task_id = console.create_task(researcher, "sleep", "gui-sleep")
    job_id = console.claim_and_run()
    console.wait_state(job_id, JobState.RUNNING)
    wait_for(lambda: researcher.call("runs", task_id=task_id)[0]["status"] == "active", 30,
             "the run to be active on the server")
    asked: list[str] = []

    def reason(title: str, label: str) -> str:
        asked.append(label)
        return "wrong cohort selected"

    window.ask_text = reason  # type: ignore[method-assign]
    assert window.queue_pane.select_job(job_id)
    window.queue_pane.buttons["cancel"].click()
    console.wait_state(job_id, JobState.CANCELLED)
    assert "vantage6 has no cancelled state" in asked[0]
    assert researcher.call("wait_task", task_id=task_id, timeout=60) == "failed"
    (run,) = researcher.call("runs", task_id=task_id)
    assert "wrong cohort selected" in run["log"]
    assert "cancelled by the node operator" in run["log"]
    # Finished on the server: no retry, and the button says why.
    qtbot.waitUntil(lambda: window.queue_pane.model.job(job_id).owed == 0, timeout=WAIT_MS)
    assert not window.queue_pane.buttons["retry"].isEnabled()
    assert "cannot run again" in window.queue_pane.buttons["retry"].toolTip()


def test_a_refused_key_and_a_missing_private_key_are_said_in_words(
        node_console: NodeConsole, qtbot: Any) -> None:
    console, window = node_console, node_console.window
    message = window.login_pane.message
    console.fill_login("station-demo", api_key="not-a-key")
    qtbot.waitUntil(lambda: "did not accept this API key" in message.text(), timeout=WAIT_MS)
    assert "not-a-key" not in message.text()
    assert window.engine is None
    console.fill_login("station-demo-enc")
    qtbot.waitUntil(lambda: "private key" in message.text(), timeout=WAIT_MS)
    assert "encrypted" in message.text()
    assert window.engine is None and window.login_pane.current is None
    # Not logged in, the window already speaks the picked source's words.
    assert window.queue_box.title() == "Runs"
    assert not window.login_pane.remove_server_button.isVisible()
    pane = window.login_pane
    pane.source_box.setCurrentIndex(pane.source_box.findData("dss"))
    assert window.queue_box.title() == "Tickets" and window.services_box.title() == "Services"
    assert pane.get_token_button.isVisible()


def test_an_encrypted_collaborations_run_with_the_private_key_file(
        node_console: NodeConsole, researchers: dict[str, Researcher],
        v6_sandbox: V6Sandbox, qtbot: Any) -> None:
    """The key file chosen in the window reaches the engine (on its stdin): the input is
    decrypted there and the result encrypted for the researcher's organization."""
    console, window = node_console, node_console.window
    console.fill_login("station-demo-enc", key_file=str(v6_sandbox.key_file("station")))
    qtbot.waitUntil(lambda: window.engine is not None, timeout=WAIT_MS)
    assert "(encrypted)" in window.login_pane.who_label.text()
    qtbot.waitUntil(lambda: console.image in window.services_pane.all_hashes(),
                    timeout=WAIT_MS)
    researcher = researchers["demo-enc"]
    task_id = console.create_task(researcher, "summarise", "gui-encrypted", alpha=1)
    job_id = console.claim_and_run()
    console.wait_state(job_id, JobState.SUCCEEDED)
    assert researcher.call("wait_task", task_id=task_id, timeout=60) == "completed"
    assert researcher.call("results", task_id=task_id) == [{"ok": ["alpha"]}]
    # The engine's command line and the window's widgets never carry the keys.
    node = v6_sandbox.node("station-demo-enc")
    assert node.api_key not in window.login_pane.token_edit.text()
    for pid in child_pids(set()):
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            assert node.api_key.encode() not in handle.read()


def test_the_next_start_logs_the_node_in_again(
        node_console: NodeConsole, v6_sandbox: V6Sandbox, tmp_path: Path, qtbot: Any) -> None:
    """Logged in as a node, closed, opened again: the window picks the node (its keys in
    the store) without asking for the key again; logging out forgets them."""
    first = node_console
    first.login()
    first.close()
    again = NodeConsole(qtbot, v6_sandbox, tmp_path)
    try:
        pane = again.window.login_pane
        assert pane.source_kind() == "v6"
        tasks.spawn(pane.resume(""))
        qtbot.waitUntil(lambda: again.window.engine is not None, timeout=WAIT_MS)
        assert again.window.source_kind == "v6"
        assert "station-demo" in pane.who_label.text()
        again.window.ask_quit_choice = lambda running, **_: QUIT_CANCEL  # type: ignore
        pane.logout_button.click()
        qtbot.waitUntil(lambda: pane.current is None and again.window.engine is None,
                        timeout=WAIT_MS)
        assert "forgotten" in pane.message.text()
        assert pane.login_store(plugins.source_plugin("v6")).load_node() is None
    finally:
        again.close()


def test_with_auto_mode_off_an_unconfigured_image_is_still_not_allowed(
        node_console: NodeConsole, researchers: dict[str, Researcher],
        v6_sandbox: V6Sandbox) -> None:
    """The allowlist holds whatever the operator does: with Auto mode off the console's
    engine claims nothing by itself, but answers a run of an image this node does not run."""
    console, window = node_console, node_console.window
    console.login()
    assert not window.engine.auto
    researcher = researchers["demo"]
    task = researcher.call("create_task", image=f"unknown-{uuid.uuid4().hex[:8]}",
                           method="anything", kwargs={},
                           organizations=[v6_sandbox.org_id("station")],
                           databases=[{"label": "default"}], name="gui-unknown")
    assert researcher.call("wait_task", task_id=task["id"], timeout=60) == "not allowed"
    # ... and its own image's run waits for the operator.
    task_id = console.create_task(researcher, "summarise", "gui-waits")
    console.window.services_pane.select_service(console.image)
    wait_for(lambda: researcher.call("runs", task_id=task_id)[0]["status"] == "pending", 5,
             "the run to be pending")
    assert not [j for j in window.engine.jobs() if j.details.get("task_id") == task_id]


def test_the_settings_dialog_edits_the_nodes_algorithms_and_databases(
        node_console: NodeConsole, qtbot: Any) -> None:
    console, window = node_console, node_console.window
    console.login()
    window.services_pane.select_service(console.image)
    window.services_pane.edit_button.click()  # "Edit command…" on an image
    dialog = window.settings_dialog
    assert dialog.isVisible() and dialog.source_tab is not None
    assert dialog.tabs.currentWidget() is dialog.source_tab
    tab = dialog.source_tab
    assert tab.algorithms.item(tab.algorithms.currentRow(), 0).text() == console.image
    assert dialog.service_list.count() == 0  # the node's images are not DSS services
    tab.add_database("extra", "/data/extra.csv", "csv")
    assert dialog.ok_button.isEnabled()
    dialog.ok_button.click()
    qtbot.waitUntil(lambda: console.window.settings_file.exists()
                    and "extra" in v6_of(load_settings(window.settings_file)).databases,
                    timeout=WAIT_MS)
    # ... and the engine runs with it.
    qtbot.waitUntil(lambda: "extra" in v6_of(parse_settings(window.engine.settings_toml(),
                                                            Path("e"))).databases,
                    timeout=WAIT_MS)
