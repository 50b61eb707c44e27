"""`dss-console worker --source v6` running a vantage6 **5.x** node, its computations
(sessions: test_v6x5_sessions_worker.py): the real worker process, the real HQ 5.0.3
behind the Keycloak stand-in, the official 5.0.3 UserClient as the researcher, the official
5.0.3 wrapper running an unmodified algorithm (tests/v6x5_algorithm), and a plain local
command for the crash test. The family's `--source v6` picks the 5.x member from the stored
login."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dss_console.sources.v6x5.sandbox import HqSandbox
from test_v6_worker import EXE, SLEEPER, Worker, _alive

from v6_fixtures import SERVER_TEST_TIMEOUT
from v6x5_fixtures import HqResearcher, log_in_v6x5_home, v6x5_algorithm_root
from waiting import wait_for

pytestmark = pytest.mark.timeout(SERVER_TEST_TIMEOUT)

DEMO_IMAGE = "v6x5-demo"
SLEEPER_IMAGE = "v6x5-test-sleeper"
NODE = "station-demo"
ENDED = {"completed", "crashed", "failed", "start failed", "killed by user", "not allowed",
         "unknown error", "dataframe not found", "unexpected output"}


def _env(home: Path) -> dict[str, str]:
    return dict(os.environ, XDG_DATA_HOME=str(home / "data"), DSS_CONSOLE_KEYRING="off")


@pytest.fixture(scope="module")
def home(v6x5_sandbox: HqSandbox, v6x5_python: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A node operator's machine: the 5.x node logged in, one settings file."""
    path = tmp_path_factory.mktemp("v6x5-worker-home")
    script = path / "sleeper.py"
    script.write_text(SLEEPER)
    (path / "lives").mkdir()
    table: dict[str, Any] = {"algorithms": {
        DEMO_IMAGE: {"python": str(v6x5_python), "package": "v6x5_demo",
                     "env": {"PYTHONPATH": str(v6x5_algorithm_root())}},
        SLEEPER_IMAGE: {"command": f"{sys.executable} {script} {{output}} "
                                   f"{path / 'lives'}/{{run}}"}}}
    log_in_v6x5_home(path, table, v6x5_sandbox, NODE, _env(path))
    return path


@pytest.fixture(scope="module")
def worker(home: Path, v6x5_sandbox: HqSandbox) -> Iterator[Worker]:
    made = Worker(home, v6x5_sandbox.url, NODE, "--concurrency", "1")
    try:
        made.wait_line(r"worker .* on .*#node-\d+")
        yield made
    finally:
        code = made.stop()
        assert code == 0, made.output
        assert "Traceback" not in made.output, made.output


@pytest.fixture
def researcher(v6x5_researchers: dict[str, HqResearcher]) -> HqResearcher:
    return v6x5_researchers["demo"]


def _runs(researcher: HqResearcher, task_id: int) -> list[dict[str, Any]]:
    return list(researcher.call("runs", task_id=task_id))


def _ended(researcher: HqResearcher, task_id: int, timeout: float = 90.0) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def done() -> bool:
        runs = _runs(researcher, task_id)
        found[:] = runs
        return bool(runs) and all(r["status"] in ENDED for r in runs)

    wait_for(done, timeout, what=f"task {task_id}'s run to end")
    (run,) = found
    return run


def test_a_task_without_data_runs_and_the_researcher_reads_the_result(
        worker: Worker, researcher: HqResearcher, v6x5_sandbox: HqSandbox) -> None:
    station = v6x5_sandbox.org_id("station")
    task_id = researcher.create_task(DEMO_IMAGE, "echo", [station], value="hello 5.x")
    run = _ended(researcher, task_id)
    assert run["status"] == "completed", (run, worker.output)
    assert researcher.call("results", task_id=task_id) == [{"echo": "hello 5.x"}]
    worker.wait_line(rf"run {run['id']} \(.*\): succeeded")


def test_an_unconfigured_image_is_not_allowed(
        worker: Worker, researcher: HqResearcher, v6x5_sandbox: HqSandbox) -> None:
    station = v6x5_sandbox.org_id("station")
    task_id = researcher.create_task("harbor2.example/unknown:5", "echo", [station])
    run = _ended(researcher, task_id)
    assert run["status"] == "not allowed"
    assert "not configured on this node" in run["log"]


def _lives(home: Path, run_id: int) -> list[int]:
    path = home / "lives" / str(run_id)
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def test_a_worker_killed_mid_run_reruns_it_once_after_a_restart(
        worker: Worker, home: Path, researcher: HqResearcher,
        v6x5_sandbox: HqSandbox) -> None:
    worker.stop()  # this test runs its own workers for the node (one at a time: the rule)
    station = v6x5_sandbox.org_id("station")
    task_id = researcher.create_task(SLEEPER_IMAGE, "anything", [station])
    (run,) = _runs(researcher, task_id)
    run_id = int(run["id"])
    first = Worker(home, v6x5_sandbox.url, NODE)
    try:
        wait_for(lambda: len(_lives(home, run_id)) == 1, 60, what="the run's first life")
        wait_for(lambda: _runs(researcher, task_id)[0]["status"] == "active", 30,
                 what="the run to be active on HQ")
        (pid,) = _lives(home, run_id)
    finally:
        first.kill()  # SIGKILL: no shutdown, the journal is all the next start has
    assert _alive(pid), "the command should outlive its worker (own process group)"
    second = Worker(home, v6x5_sandbox.url, NODE)
    try:
        wait_for(lambda: not _alive(pid), 30, what="the leftover process to be stopped")
        ended = _ended(researcher, task_id)
        assert ended["status"] == "completed", second.output
        assert researcher.call("results", task_id=task_id) == [{"life": 2}]
        assert len(_lives(home, run_id)) == 2  # the killed life and one rerun, no more
        second.wait_line(rf"run {run_id} \(.*\): succeeded")
    finally:
        assert second.stop() == 0, second.output
    assert "Traceback" not in first.output + second.output
    assert v6x5_sandbox.node(NODE).api_key not in first.output + second.output


def test_an_encrypted_collaboration_decrypts_the_input_and_encrypts_the_result(
        home: Path, v6x5_sandbox: HqSandbox, v6x5_python: Path) -> None:
    """The node of ``demo-enc`` (its organization's private key stored at login): the
    researcher's arguments reach the algorithm decrypted, its result is encrypted for the
    researcher's organization, which the official client decrypts."""
    sb, node = v6x5_sandbox, "station-demo-enc"
    done = subprocess.run(
        [str(EXE), "v6", "login", "--server", sb.url, "--auth-url", sb.auth_url,
         "--realm", sb.info["realm"], "--node", node, "--api-key-stdin",
         "--private-key", str(sb.key_file("station"))],
        input=sb.node(node).api_key + "\n", env=_env(home), capture_output=True, text=True,
        timeout=120)
    assert done.returncode == 0, done.stderr
    researcher = HqResearcher(v6x5_python, sb, "demo-enc")
    worker = Worker(home, sb.url, node)
    try:
        task_id = researcher.create_task(DEMO_IMAGE, "echo", [sb.org_id("station")],
                                         value="sealed 5.x")
        run = _ended(researcher, task_id)
        assert run["status"] == "completed", (run, worker.output)
        assert researcher.call("results", task_id=task_id) == [{"echo": "sealed 5.x"}]
    finally:
        researcher.close()
        assert worker.stop() == 0, worker.output
    assert "Traceback" not in worker.output
    pem_body = sb.key_file("station").read_text().splitlines()[1]
    assert pem_body not in worker.output and sb.node(node).api_key not in worker.output
