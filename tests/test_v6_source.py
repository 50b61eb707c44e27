"""V6Source end to end against the real vantage6-server 4.15.2, the official researcher client
(vantage6-client) and the official algorithm wrapper running the demo algorithm as a local
child process with our environment builder — in a plain and an encrypted collaboration.

``MiniNode`` is just enough engine to drive the source (claim, fetch, run, finish); the
engine integration is the lead's next step.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from dss_console.core.interfaces import (
    Connection,
    NewWork,
    Outcome,
    OutcomeKind,
    RemoteState,
    WorkGone,
)
from dss_console.engine.redact import SHARED_SUFFIX
from dss_console.sources.v6.client import (
    V6Error,
    V6NodeClient,
    V6NotLoggedInError,
    V6UnreachableError,
    classify_v6_error,
)
from dss_console.sources.v6.sandbox import DEMO_IMAGE, V6Sandbox
from dss_console.sources.v6.settings import parse_v6_settings
from dss_console.sources.v6.source import V6KeyError, V6Source

from v6_fixtures import (
    SERVER_TEST_TIMEOUT,
    Researcher,
    wait_for,
)

pytestmark = pytest.mark.timeout(SERVER_TEST_TIMEOUT)

NODES = {"demo": "station-demo", "demo-enc": "station-demo-enc"}
DEMO_AGE_MEAN = 50.025  # resources/v6_demo/demo.csv


class MiniNode:
    """Claims and runs every configured run until stopped (threads; no journal)."""

    def __init__(self, source: V6Source, workroot: Path) -> None:
        self.source = source
        self.workroot = workroot
        self.images = list(source.settings.algorithms)
        self.outcomes: dict[int, Outcome] = {}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.paused = threading.Event()  # a test drives the source by hand meanwhile
        self.errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []
        self._loop = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> MiniNode:
        self._loop.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._loop.join(30)
        for proc in list(self.procs.values()):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        for t in self._threads:
            t.join(30)

    def _serve(self) -> None:
        while not self._stop.is_set():
            claimed = None
            if not self.paused.is_set():
                try:
                    self.source.refuse_unconfigured()
                    claimed = self.source.claim(self.images)
                except V6Error as exc:  # the outage test takes the server away for a while
                    assert classify_v6_error(exc) == "transient", exc
            if claimed is None:
                # Polling is the backstop; the socket's NewWork sets _wake earlier.
                self._wake.wait(0.2)
                self._wake.clear()
                continue
            t = threading.Thread(target=self._execute, args=(claimed.ticket_id,), daemon=True)
            self._threads.append(t)
            t.start()

    def _execute(self, run_id: int) -> None:
        try:
            self._execute_run(run_id)
        except BaseException as exc:
            self.errors.append(exc)
            raise

    def _execute_run(self, run_id: int) -> None:
        workdir = self.workroot / f"run_{run_id:08d}"
        self.source.fetch_inputs(run_id, workdir)
        argv, env = self.source.command(run_id, workdir)
        # Named as a copy for the server: the source sends no other file (the engine would
        # have redacted it; the demo's output here holds only test paths).
        output = workdir / f"output{SHARED_SUFFIX}"
        with open(output, "wb") as out:
            proc = subprocess.Popen(argv, env=env, cwd=workdir, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            self.procs[run_id] = proc
            self.source.mark_active(run_id)
            code = proc.wait(150)
        if self.source.remote_state(run_id) is not RemoteState.OURS:
            self.outcomes[run_id] = Outcome(OutcomeKind.FAILED, reason="gone")
            return
        kind = OutcomeKind.COMPLETED if code == 0 else OutcomeKind.CRASHED
        outcome = Outcome(kind, result=workdir / "output", output=output,
                          reason="" if code == 0 else f"command exited with code {code}")
        self.source.set_finished(run_id, outcome)
        self.outcomes[run_id] = outcome


@pytest.fixture(scope="module")
def nodes(v6_sandbox: V6Sandbox, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[dict[str, MiniNode]]:
    settings = parse_v6_settings(v6_sandbox.demo_settings())
    made: dict[str, MiniNode] = {}
    try:
        for collab, node_name in NODES.items():
            node = v6_sandbox.node(node_name)
            pem = v6_sandbox.key_file("station").read_bytes() if node.encrypted else None
            source = V6Source.connect(v6_sandbox.url, node.api_key, settings,
                                      private_key_pem=pem)
            mini = MiniNode(source, tmp_path_factory.mktemp(f"work-{collab}"))
            source.watch(lambda event, mini=mini: _on_event(mini, event))
            made[collab] = mini.start()
        yield made
    finally:
        for mini in made.values():
            mini.stop()
            mini.source.close()


_events: list[object] = []


def _on_event(mini: MiniNode, event: object) -> None:
    _events.append(event)
    if isinstance(event, NewWork):
        mini.wake()
    if isinstance(event, WorkGone):
        for run_id in event.ticket_ids:
            proc = mini.procs.get(run_id)
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()


def _run_task(researcher: Researcher, station: int, method: str, **kwargs: object) -> int:
    task_id = researcher.create_task(DEMO_IMAGE, method, [station], **kwargs)
    status = researcher.call("wait_task", task_id=task_id, timeout=90)
    assert status in ("completed", "crashed", "failed", "not allowed"), status
    return task_id


@pytest.mark.parametrize("collab", ["demo", "demo-enc"])
def test_column_mean_reaches_the_researcher(
        collab: str, nodes: dict[str, MiniNode], researchers: dict[str, Researcher],
        v6_sandbox: V6Sandbox) -> None:
    researcher = researchers[collab]
    task_id = _run_task(researcher, v6_sandbox.org_id("station"), "column_mean", column="age")
    runs = researcher.call("runs", task_id=task_id)
    assert [r["status"] for r in runs] == ["completed"]
    results = researcher.call("results", task_id=task_id)
    assert results == [{"sum": pytest.approx(DEMO_AGE_MEAN * 40), "count": 40}]


@pytest.mark.parametrize("collab", ["demo", "demo-enc"])
def test_central_mean_with_subtasks(
        collab: str, nodes: dict[str, MiniNode], researchers: dict[str, Researcher],
        v6_sandbox: V6Sandbox) -> None:
    researcher = researchers[collab]
    task_id = _run_task(researcher, v6_sandbox.org_id("station"), "central_mean",
                        column="age")
    runs = researcher.call("runs", task_id=task_id)
    assert [r["status"] for r in runs] == ["completed"], runs
    results = researcher.call("results", task_id=task_id)
    assert results == [{"mean": pytest.approx(DEMO_AGE_MEAN), "count": 40,
                        "organizations": 1}]


def test_algorithm_error_is_crashed_with_its_message(
        nodes: dict[str, MiniNode], researchers: dict[str, Researcher],
        v6_sandbox: V6Sandbox) -> None:
    researcher = researchers["demo"]
    task_id = _run_task(researcher, v6_sandbox.org_id("station"), "fail",
                        message="no such column: bmi")
    (run,) = researcher.call("runs", task_id=task_id)
    assert run["status"] == "crashed"
    assert "no such column: bmi" in run["log"]
    assert "command exited with code" in run["log"]


def test_unconfigured_image_is_not_allowed(
        nodes: dict[str, MiniNode], researchers: dict[str, Researcher],
        v6_sandbox: V6Sandbox) -> None:
    researcher = researchers["demo"]
    task_id = researcher.create_task("harbor2.example/unknown:1", "anything",
                                     [v6_sandbox.org_id("station")])
    assert researcher.call("wait_task", task_id=task_id, timeout=60) == "not allowed"
    (run,) = researcher.call("runs", task_id=task_id)
    assert "not configured on this node" in run["log"]


def test_kill_reaches_the_node_and_the_next_task_runs(
        nodes: dict[str, MiniNode], researchers: dict[str, Researcher],
        v6_sandbox: V6Sandbox) -> None:
    mini = nodes["demo"]
    researcher = researchers["demo"]
    assert wait_for(lambda: mini.source.events and mini.source.events.connected, 30,
                    "the socket to connect")
    task_id = researcher.create_task(DEMO_IMAGE, "wait", [v6_sandbox.org_id("station")],
                                     seconds=120)
    (run_id,) = [r["id"] for r in researcher.call("runs", task_id=task_id)]
    wait_for(lambda: run_id in mini.procs, 30, "the local process to start")
    wait_for(lambda: researcher.call("runs", task_id=task_id)[0]["status"] == "active", 30,
             "the run to be active on the server")
    researcher.call("kill", task_id=task_id)
    # The socket's kill_containers stops the process at once (polling would, within 5 s).
    wait_for(lambda: mini.procs[run_id].poll() is not None, 10, "the process to be stopped")
    assert any(isinstance(e, WorkGone) and run_id in e.ticket_ids for e in _events)
    assert mini.source.remote_state(run_id) is RemoteState.GONE
    assert researcher.call("wait_task", task_id=task_id, timeout=10) == "killed by user"
    # The node goes on with the next task.
    task_id = _run_task(researcher, v6_sandbox.org_id("station"), "column_mean", column="age")
    assert researcher.call("runs", task_id=task_id)[0]["status"] == "completed"


def test_login_refusals_and_classification(v6_sandbox: V6Sandbox) -> None:
    settings = parse_v6_settings(v6_sandbox.demo_settings())
    with pytest.raises(V6NotLoggedInError) as info:
        V6Source.connect(v6_sandbox.url, "00000000-0000-0000-0000-000000000000", settings)
    assert classify_v6_error(info.value) == "logged_out"
    with pytest.raises(V6NotLoggedInError, match="not a vantage6 node API key"):
        V6Source.connect(v6_sandbox.url, "not-a-uuid", settings)
    node = v6_sandbox.node("station-demo-enc")
    with pytest.raises(V6KeyError, match="encrypted"):
        V6Source.connect(v6_sandbox.url, node.api_key, settings)


def test_whoami_and_the_proxy_refuses_foreign_tokens(v6_sandbox: V6Sandbox,
                                                     nodes: dict[str, MiniNode]) -> None:
    source = nodes["demo-enc"].source
    who = source.identity
    assert (who.name, who.collaboration_name, who.encrypted) == (
        "station-demo-enc", "demo-enc", True)
    assert who.organization_id == v6_sandbox.org_id("station")
    port = source._ensure_proxy()
    reply = requests.get(f"http://127.0.0.1:{port}/organization/1",
                         headers={"Authorization": "Bearer forged"}, timeout=10)
    assert reply.status_code == 401
    with V6NodeClient(v6_sandbox.url) as client:
        client.login(v6_sandbox.node("station-demo").api_key)
        assert client.whoami().encrypted is False
        # Presence: the socket made the node "online" and shared its configuration.
        node = client.get(f"/node/{who.node_id}")
        assert node["status"] == "online"
        config = node.get("config") or []
        assert {"key": "allowed_algorithms", "value": DEMO_IMAGE} in [
            {"key": c.get("key"), "value": c.get("value")} for c in config], config


def _run_by_hand(source: V6Source, run_id: int, workdir: Path) -> Outcome:
    source.fetch_inputs(run_id, workdir)
    argv, env = source.command(run_id, workdir)
    source.mark_active(run_id)
    output = workdir / "output.log"
    with open(output, "wb") as out:
        code = subprocess.run(argv, env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                              timeout=120).returncode
    assert code == 0, output.read_text()
    return Outcome(OutcomeKind.COMPLETED, result=workdir / "output", output=output)


@pytest.fixture
def paused_demo_node(nodes: dict[str, MiniNode]) -> Iterator[MiniNode]:
    mini = nodes["demo"]
    mini.paused.set()
    yield mini
    mini.paused.clear()
    mini.wake()


def test_restart_mid_run_runs_it_once_and_work_queued_while_down_runs(
        paused_demo_node: MiniNode, researchers: dict[str, Researcher],
        v6_sandbox: V6Sandbox, tmp_path: Path) -> None:
    researcher = researchers["demo"]
    station = v6_sandbox.org_id("station")
    settings = paused_demo_node.source.settings
    node = v6_sandbox.node("station-demo")
    first = researcher.create_task(DEMO_IMAGE, "column_mean", [station], column="age")
    crashed = V6Source.connect(v6_sandbox.url, node.api_key, settings)
    claimed = crashed.claim([DEMO_IMAGE])
    assert claimed is not None
    run_id = claimed.ticket_id
    crashed.fetch_inputs(run_id, tmp_path / "first-life")
    crashed.mark_active(run_id)
    crashed.close()  # the worker dies here: the run stays open ("active") on the server
    # Work posted while no worker runs.
    second = researcher.create_task(DEMO_IMAGE, "column_mean", [station], column="weight")

    restarted = V6Source.connect(v6_sandbox.url, node.api_key, settings)
    try:
        # From the journal: not finished locally, and the server says it is still ours.
        assert restarted.remote_state(run_id) is RemoteState.OURS
        restarted.set_finished(run_id, _run_by_hand(restarted, run_id, tmp_path / "again"))
        again = restarted.claim([DEMO_IMAGE])
        assert again is not None and again.ticket_id != run_id
        restarted.set_finished(again.ticket_id,
                               _run_by_hand(restarted, again.ticket_id, tmp_path / "queued"))
    finally:
        restarted.close()
    for task_id, count in ((first, 40), (second, 40)):
        assert researcher.call("wait_task", task_id=task_id, timeout=30) == "completed"
        runs = researcher.call("runs", task_id=task_id)
        assert [r["status"] for r in runs] == ["completed"]
        assert researcher.call("results", task_id=task_id)[0]["count"] == count


def test_server_outage_while_a_run_finishes(
        paused_demo_node: MiniNode, researchers: dict[str, Researcher],
        v6_sandbox: V6Sandbox, tmp_path: Path) -> None:
    """Last in the module: it takes the session's server away and brings it back on the
    same port (same database and JWT secret: tokens stay valid)."""
    source = paused_demo_node.source
    researcher = researchers["demo"]
    task_id = researcher.create_task(DEMO_IMAGE, "column_mean", [v6_sandbox.org_id("station")],
                                     column="age")
    claimed = source.claim([DEMO_IMAGE])
    assert claimed is not None
    outcome = _run_by_hand(source, claimed.ticket_id, tmp_path / "run")
    assert source.events is not None and source.events.connected
    seen = len(_events)
    v6_sandbox.server.stop()
    try:
        with pytest.raises(V6UnreachableError) as info:
            source.set_finished(claimed.ticket_id, outcome)
        assert source.classify(info.value) == "transient"  # the outbox retries it later
        wait_for(lambda: not source.events.connected, 30, "the socket to notice")
    finally:
        v6_sandbox.server.restart()
    source.set_finished(claimed.ticket_id, outcome)
    assert researcher.call("wait_task", task_id=task_id, timeout=30) == "completed"
    assert researcher.call("results", task_id=task_id)[0]["count"] == 40
    # The socket comes back by itself (backoff 1 s doubling) and says so.
    wait_for(lambda: source.events.connected, 60, "the socket to reconnect")
    states = [e.connected for e in _events[seen:] if isinstance(e, Connection)]
    assert False in states and True in states[states.index(False):]
    assert not any(m.errors for m in [paused_demo_node])
