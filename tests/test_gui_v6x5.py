"""The console window as a vantage6 5.x node: the real HQ 5.0.3 behind the identity stand-in
(the session's `v6x5_sandbox`), the real 4.15.2 server (`v6_sandbox`) for the family's other
member, the official 5.0.3 client as the researcher, the window's own engine process, real
widgets offscreen.

The login pane lists the vantage6 family once; Log in asks the server which version it runs
(off the Qt thread) and only a 5.x server gets the auth server, realm and node name fields.
Each test configures an image of its own (the 5.x demo algorithm package under a unique
name), so runs other modules left pending for the same node are never the ones taken here.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt, QTimer

from dss_console import cli, plugins
from dss_console.credentials import SessionStore
from dss_console.engine.states import JobState
from dss_console.gui import tasks
from dss_console.gui.main_window import QUIT_CANCEL, MainWindow
from dss_console.gui.source_window import SandboxOptions
from dss_console.sources.v6.sandbox import V6Sandbox
from dss_console.sources.v6.settings import parse_v6_settings
from dss_console.sources.v6x5 import login as v6x5_login
from dss_console.sources.v6x5.demo_researcher import DEMO_PACKAGE, demo_root
from dss_console.sources.v6x5.sandbox import HqSandbox
from dss_console.sources.v6x5.window.sandbox import V6x5WindowSandbox
from settings_helpers import settings_with
from test_gui_console import WAIT_MS, child_pids, event_loop_qt  # noqa: F401 (fixture)

from v6_fixtures import SERVER_TEST_TIMEOUT, wait_for
from v6x5_fixtures import HqResearcher

pytestmark = pytest.mark.timeout(SERVER_TEST_TIMEOUT)

AUTH_FIELDS = ("auth_url", "realm", "node")
# The Qt thread's longest pause allowed while logging in (a blocking HTTP call or a process
# start on it would show as one; generous for a loaded machine).
LONGEST_PAUSE = 1.0


class QtPulse:
    """Ticks on the Qt thread every 20 ms and keeps the longest gap between ticks, and
    whether the auth fields were ever visible at a tick."""

    def __init__(self, window: MainWindow) -> None:
        self.window = window
        self.longest = 0.0
        self.auth_fields_seen = False
        self._last = time.monotonic()
        self.timer = QTimer()
        self.timer.setInterval(20)
        self.timer.timeout.connect(self._tick)

    def start(self) -> None:
        self._last = time.monotonic()
        self.longest = 0.0
        self.auth_fields_seen = False
        self.timer.start()

    def _tick(self) -> None:
        now = time.monotonic()
        self.longest = max(self.longest, now - self._last)
        self._last = now
        edits = self.window.login_pane._extra_edits
        if any(name in edits and edits[name].isVisible() for name in AUTH_FIELDS):
            self.auth_fields_seen = True

    def stop(self) -> None:
        self.timer.stop()


class FamilyConsole:
    """A console window whose settings run the 5.x demo algorithm under its own image."""

    def __init__(self, qtbot: Any, hq: HqSandbox, tmp_path: Path) -> None:
        self.qtbot = qtbot
        self.hq = hq
        self.image = f"gui-v6x5-{uuid.uuid4().hex[:8]}"
        assert hq.python is not None
        v6 = parse_v6_settings({
            "algorithms": {self.image: {"python": str(hq.python), "package": DEMO_PACKAGE,
                                        "env": {"PYTHONPATH": str(demo_root())}}}})
        settings = settings_with(instance=f"gui-v6x5-{uuid.uuid4().hex[:6]}",
                                 workroot=tmp_path / "work", poll_interval=0.5, concurrency=2,
                                 v6=v6)
        self.window = MainWindow(settings, tmp_path / "settings.toml",
                                 SessionStore(tmp_path / "store", use_keyring=False),
                                 data_dir=tmp_path / "data",
                                 window_state_file=tmp_path / "window.ini")
        self.window.show()
        self.pulse = QtPulse(self.window)

    @property
    def pane(self) -> Any:
        return self.window.login_pane

    def visible_auth_fields(self) -> list[str]:
        edits = self.pane._extra_edits
        return [name for name in AUTH_FIELDS if name in edits and edits[name].isVisible()]

    def fill(self, server: str, api_key: str) -> None:
        pane = self.pane
        pane.source_box.setCurrentIndex(pane.source_box.findData("v6"))
        pane.server_box.setCurrentText(server)
        pane.token_edit.setText(api_key)

    def login_5x(self) -> None:
        """Through the widgets, as an operator: the family's form, Log in, the 5.x fields it
        then asks for, Log in again."""
        node = self.hq.node("station-demo")
        self.fill(self.hq.url, node.api_key)
        self.pane.login_button.click()
        self.qtbot.waitUntil(lambda: self.visible_auth_fields() == list(AUTH_FIELDS),
                             timeout=WAIT_MS)
        self.qtbot.waitUntil(lambda: not self.pane.busy, timeout=WAIT_MS)
        self.pane._extra_edits["auth_url"].setText(self.hq.auth_url)
        self.pane._extra_edits["node"].setText(node.name)
        self.pane.login_button.click()
        self.qtbot.waitUntil(lambda: self.window.engine is not None, timeout=WAIT_MS)
        self.qtbot.waitUntil(lambda: self.image in self.window.services_pane.all_hashes(),
                             timeout=WAIT_MS)

    def cell(self, job_id: int, column_id: str) -> str:
        model = self.window.queue_pane.model
        return model.index(model.row_of(job_id), model.column_of(column_id)).data()

    def close(self) -> None:
        self.pulse.stop()
        self.window.ask_quit_choice = lambda running, **_: QUIT_CANCEL  # type: ignore
        self.window.close()
        self.qtbot.waitUntil(lambda: self.window.closed, timeout=WAIT_MS)


@pytest.fixture
def family_console(qtbot: Any, event_loop_qt: Any, v6x5_sandbox: HqSandbox,  # noqa: F811
                   tmp_path: Path) -> Iterator[FamilyConsole]:
    before = set(child_pids(set()))  # HQ, the stand-in and the researchers are not ours
    threads_before = set(threading.enumerate())
    console = FamilyConsole(qtbot, v6x5_sandbox, tmp_path)
    yield console
    if not console.window.closed:
        console.close()
    active = [t for t in console.window.findChildren(QTimer) if t.isActive()]
    assert not active, f"timers left running: {active}"
    qtbot.waitUntil(lambda: not tasks.pending_tasks(), timeout=15_000)
    tasks.shutdown_executor(wait=True)
    qtbot.waitUntil(lambda: not set(child_pids(before)), timeout=15_000)
    assert not [t for t in set(threading.enumerate()) - threads_before
                if t.is_alive() and not t.daemon]


@pytest.fixture
def call_threads(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The threads the real probe and the real 5.x login ran on (each still does its real
    work: these only note where)."""
    seen: dict[str, list[str]] = {"probe": [], "login": []}
    family_member, login_hq_node = plugins.family_member, v6x5_login.login_hq_node

    def probe(*args: Any, **kwargs: Any) -> object:
        seen["probe"].append(threading.current_thread().name)
        return family_member(*args, **kwargs)

    def login(*args: Any, **kwargs: Any) -> object:
        seen["login"].append(threading.current_thread().name)
        return login_hq_node(*args, **kwargs)

    monkeypatch.setattr(plugins, "family_member", probe)
    monkeypatch.setattr(v6x5_login, "login_hq_node", login)
    return seen


def test_the_login_pane_asks_for_the_auth_fields_only_for_a_5x_server(
        family_console: FamilyConsole, v6_sandbox: V6Sandbox, qtbot: Any,
        call_threads: dict[str, list[str]]) -> None:
    console, pane = family_console, family_console.pane
    box = pane.source_box
    # One vantage6 entry in the chooser, showing the first member's (4.x) form.
    titles = [box.itemText(i) for i in range(box.count())]
    assert sum("vantage6" in title for title in titles) == 1
    console.fill(v6_sandbox.url, "not-a-key")
    assert pane.source_kind() == "v6" and console.visible_auth_fields() == []

    # A 4.x server (the real 4.15.2): asked, answered 4.x, the key refused in its words; the
    # auth fields never appeared, not even for a moment.
    console.pulse.start()
    pane.login_button.click()
    qtbot.waitUntil(lambda: "did not accept this API key" in pane.message.text(),
                    timeout=WAIT_MS)
    assert not console.pulse.auth_fields_seen
    assert console.visible_auth_fields() == [] and pane.source_kind() == "v6"
    assert console.window.engine is None
    assert "not-a-key" not in pane.message.text()

    # A 5.x server: the same form, Log in; the server answers 5.x, the form becomes the 5.x
    # one with the server and key kept, and it asks for what it lacks before logging in.
    node = console.hq.node("station-demo")
    console.fill(console.hq.url, node.api_key)
    pane.login_button.click()
    qtbot.waitUntil(lambda: console.visible_auth_fields() == list(AUTH_FIELDS),
                    timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not pane.busy, timeout=WAIT_MS)
    assert pane.source_kind() == "v6x5"
    said = pane.message.text()
    assert "Auth server, Realm and Node name" in said, said
    assert pane.server_text() == console.hq.url and pane.token_edit.text() == node.api_key
    assert pane._extra_edits["realm"].placeholderText() == "vantage6"
    assert console.window.engine is None and call_threads["login"] == []
    assert pane._form.labelForField(pane._extra_edits["auth_url"]).text() == "Auth server"

    # Filled in (the realm left to its default): logged in as the 5.x node.
    pane._extra_edits["auth_url"].setText(console.hq.auth_url)
    pane._extra_edits["node"].setText(node.name)
    pane.login_button.click()
    qtbot.waitUntil(lambda: console.window.engine is not None, timeout=WAIT_MS)
    console.pulse.stop()
    assert console.window.source_kind == "v6x5"
    who = pane.who_label.text()
    assert "station-demo" in who and "5.x" in who and "realm vantage6" in who
    # The key never stays in a widget; the probe and the login ran off the Qt thread, and
    # the Qt thread never paused long enough to show a blocking call.
    assert pane.token_edit.text() == ""
    main = threading.main_thread().name
    assert len(call_threads["probe"]) == 3 and main not in call_threads["probe"]
    assert call_threads["login"] and main not in call_threads["login"]
    assert console.pulse.longest < LONGEST_PAUSE, console.pulse.longest
    # The engine process runs the 5.x member (`--source v6x5`) and got the keys on its
    # stdin, never on its command line.
    argvs = []
    for pid in child_pids(set()):
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argvs.append(handle.read().split(b"\0"))
    assert all(node.api_key.encode() not in b" ".join(argv) for argv in argvs)
    assert any(argv[i:i + 2] == [b"--source", b"v6x5"] for argv in argvs
               for i in range(len(argv))), argvs


def test_the_window_as_a_5x_node_runs_a_demo_task_in_the_nodes_words(
        family_console: FamilyConsole, v6x5_researchers: dict[str, HqResearcher],
        qtbot: Any) -> None:
    console, window = family_console, family_console.window
    console.pulse.start()
    console.login_5x()
    assert window.services_box.title() == "Algorithms" and window.queue_box.title() == "Runs"
    model = window.queue_pane.model
    assert model.headerData(model.column_of("action"), Qt.Orientation.Horizontal) == "Action"
    assert model.headerData(model.column_of("service"), Qt.Orientation.Horizontal) == "Image"

    researcher = v6x5_researchers["demo"]
    task_id = researcher.create_task(console.image, "column_mean",
                                     [console.hq.org_id("station")], column="age")
    before = {job.job_id for job in window.engine.jobs()}
    window.services_pane.select_service(console.image)
    qtbot.waitUntil(lambda: console.image in window.services_pane.selected_hashes(),
                    timeout=WAIT_MS)
    window.services_pane.claim_button.click()
    qtbot.waitUntil(lambda: len(window.engine.jobs()) > len(before), timeout=WAIT_MS)
    (job,) = [j for j in window.engine.jobs() if j.job_id not in before]
    qtbot.waitUntil(lambda: window.engine.job(job.job_id).inputs_ready, timeout=WAIT_MS)
    assert window.queue_pane.select_job(job.job_id)
    qtbot.waitUntil(window.queue_pane.buttons["run"].isEnabled, timeout=WAIT_MS)
    window.queue_pane.buttons["run"].click()
    qtbot.waitUntil(lambda: window.engine.job(job.job_id).state == JobState.SUCCEEDED,
                    timeout=WAIT_MS)
    qtbot.waitUntil(lambda: model.job(job.job_id).state == JobState.SUCCEEDED,
                    timeout=WAIT_MS)
    console.pulse.stop()

    # HQ has it completed, and the researcher reads the demo's result.
    wait_for(lambda: researcher.call("runs", task_id=task_id)[0]["status"] == "completed",
             60, "the run to be completed on HQ")
    (result,) = researcher.call("results", task_id=task_id)
    assert result["count"] == 40 and result["mean"] == pytest.approx(result["sum"] / 40)
    # In the node's words: its run, task, image and action.
    assert console.cell(job.job_id, "action") == "federated compute"
    assert console.cell(job.job_id, "service") == console.image
    assert console.cell(job.job_id, "task").startswith(f"{task_id} · ")
    detail = window.detail_pane
    qtbot.waitUntil(lambda: "column_mean: 40 values" in detail.log.text_edit.toPlainText(),
                    timeout=WAIT_MS)
    assert console.pulse.longest < LONGEST_PAUSE, console.pulse.longest


def test_the_next_start_logs_the_5x_node_in_again(
        family_console: FamilyConsole, tmp_path: Path, qtbot: Any) -> None:
    """Logged in as a 5.x node, closed, opened again: the family's resume finds the 5.x
    node's stored login (the 4.x member passes it on) and logs it in without asking; Log out
    forgets it."""
    first = family_console
    first.login_5x()
    first.close()
    again = FamilyConsole(qtbot, first.hq, tmp_path)
    try:
        pane = again.pane
        tasks.spawn(pane.resume(""))
        qtbot.waitUntil(lambda: again.window.engine is not None, timeout=WAIT_MS)
        assert again.window.source_kind == "v6x5" and pane.source_kind() == "v6x5"
        assert "station-demo" in pane.who_label.text() and "5.x" in pane.who_label.text()
        again.window.ask_quit_choice = lambda running, **_: QUIT_CANCEL  # type: ignore
        pane.logout_button.click()
        qtbot.waitUntil(lambda: pane.current is None and again.window.engine is None,
                        timeout=WAIT_MS)
        assert "forgotten" in pane.message.text()
        assert pane.login_store(plugins.source_plugin("v6x5")).load_node() is None
    finally:
        again.close()


def test_the_5x_sandbox_and_its_self_test_in_the_window(
        family_console: FamilyConsole, qtbot: Any) -> None:
    """`--sandbox v6x5`'s steps on the session's HQ (not another one): the window logged in
    through the family's probe, the demo algorithm configured, a demo task posted by the
    official client; the self-test claims, approves, runs and releases it to `completed`
    on HQ and finds the demo's result there."""
    window = family_console.window
    sandbox = V6x5WindowSandbox(family_console.hq)
    steps: list[str] = []

    async def start_and_test() -> None:
        try:
            await sandbox.start(window, SandboxOptions(work=1, pace=0.0))
            steps.append("started")
            await sandbox.self_test(window)
            steps.append("passed")
        except Exception as exc:
            steps.append(f"failed: {exc}")

    family_console.pulse.start()
    tasks.spawn(start_and_test())
    try:
        qtbot.waitUntil(lambda: bool(steps) and steps[-1] != "started", timeout=180_000)
    finally:
        sandbox.stop()  # the researcher; the session's HQ keeps running
    family_console.pulse.stop()
    assert steps == ["started", "passed"], steps
    assert window.source_kind == "v6x5"
    assert "vantage6 5.x sandbox running" in window.banner.text()
    assert family_console.hq.hq is not None and family_console.hq.hq.running
    assert family_console.pulse.longest < LONGEST_PAUSE, family_console.pulse.longest


@pytest.fixture
def gui_options(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """What `dss-console [flags]` would open the window with (the window is not opened)."""
    from dss_console.gui import app

    seen: list[object] = []
    monkeypatch.setattr(app, "run", lambda options: seen.append(options) or 0)
    return seen


@pytest.mark.parametrize(("argv", "kind"), [
    (["--sandbox", "v6", "--sandbox-version", "5"], "v6x5"),
    (["--sandbox", "v6", "--sandbox-version", "4"], "v6"),
    (["--sandbox", "v6x5"], "v6x5"),
    (["--sandbox", "v6", "--sandbox-version", "5", "--self-test"], "v6x5"),
])
def test_the_sandbox_flag_picks_the_family_member_by_version(
        gui_options: list[object], argv: list[str], kind: str) -> None:
    assert cli.main(argv) == 0
    (options,) = gui_options
    assert options.sandbox_source == kind  # type: ignore[attr-defined]


@pytest.mark.parametrize(("argv", "said"), [
    (["--sandbox", "dss", "--sandbox-version", "5"], "--sandbox dss has no version 5"),
    (["--sandbox", "v6", "--sandbox-version", "3"], "has no version 3 (it has 4, 5)"),
    (["--sandbox-version", "5"], "--sandbox-version needs --sandbox"),
])
def test_a_sandbox_version_without_a_member_is_a_usage_error(
        gui_options: list[object], argv: list[str], said: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert said in capsys.readouterr().err
    assert gui_options == []
