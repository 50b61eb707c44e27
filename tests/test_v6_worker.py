"""`dss-console worker --source v6` as a node operator runs it: real worker processes, the
real vantage6-server 4.15.2, the official `vantage6-client` as the researcher, the official
wrapper running the demo algorithm (and a plain local command for the tests that need an
algorithm which never ends by itself on its first life).

One worker per node at a time (the rule): the plain node's worker is shared by the tests of
the module that use the plain collaboration; the encrypted node gets its own workers.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dss_console import plugins
from dss_console.engine.settings import settings_to_toml
from dss_console.sources.v6.sandbox import DEMO_IMAGE, V6Sandbox
from dss_console.sources.v6.settings import parse_v6_settings
from settings_helpers import settings_with, v6_of

from v6_fixtures import (
    SERVER_TEST_TIMEOUT,
    Researcher,
    wait_for,
)

pytestmark = pytest.mark.timeout(SERVER_TEST_TIMEOUT)

EXE = Path(sys.executable).with_name("dss-console")
SLEEPER_IMAGE = "v6-test-sleeper"
SILENT_IMAGE = "v6-test-silent"  # exits 0 without writing its output file
DEMO_AGE_MEAN = 50.025  # resources/v6_demo/demo.csv

# An algorithm as a plain local command: it records each life's pid; the first life of a
# run never ends by itself (only a stop ends it), a later life writes its result at once.
SLEEPER = textwrap.dedent('''
    import json, os, sys, time
    output, record = sys.argv[1], sys.argv[2]
    with open(record, "a") as f:
        f.write(f"{os.getpid()}\\n")
    with open(record) as f:
        lives = len(f.read().split())
    if lives == 1:
        time.sleep(600)
    with open(output, "w") as f:
        json.dump({"life": lives}, f)
''')


class Worker:
    """One `dss-console worker --source v6` process and its output lines."""

    def __init__(self, home: Path, server: str, node: str, *extra: str,
                 config: str = "settings.toml") -> None:
        env = dict(os.environ, XDG_DATA_HOME=str(home / "data"), DSS_CONSOLE_KEYRING="off")
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [str(EXE), "worker", "--source", "v6", "--server", server, "--node", node,
             "--config", str(home / config), "--poll-interval", "2", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_line(self, pattern: str, timeout: float = 60.0) -> str:
        regex = re.compile(pattern)
        with self._cond:
            found = self._cond.wait_for(
                lambda: any(regex.search(x) for x in self.lines) or self.proc.poll() is not None,
                timeout)
            match = next((x for x in self.lines if regex.search(x)), None)
        if not found or match is None:
            raise AssertionError(f"no line matching {pattern!r} within {timeout} s; "
                                 f"output:\n{self.output}")
        return match

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def stop(self, timeout: float = 60.0) -> int:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaps yet counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _write_settings(home: Path, sandbox: V6Sandbox, name: str = "settings.toml",
                    **v6: object) -> None:
    table = sandbox.demo_settings()
    script = home / "sleeper.py"
    script.write_text(SLEEPER)
    (home / "lives").mkdir(exist_ok=True)
    table["algorithms"][SLEEPER_IMAGE] = {
        "command": f"{sys.executable} {script} {{output}} {home / 'lives'}/{{run}}"}
    table["algorithms"][SILENT_IMAGE] = {"command": f"{sys.executable} -c pass"}
    table.update(v6)
    settings = settings_with(v6=parse_v6_settings(table))
    (home / name).write_text(settings_to_toml(settings))


def _login(home: Path, sandbox: V6Sandbox, node: str) -> None:
    env = dict(os.environ, XDG_DATA_HOME=str(home / "data"), DSS_CONSOLE_KEYRING="off")
    argv = [str(EXE), "v6", "login", "--server", sandbox.url, "--api-key-stdin"]
    if sandbox.node(node).encrypted:
        argv += ["--private-key", str(sandbox.key_file("station"))]
    done = subprocess.run(argv, input=sandbox.node(node).api_key + "\n", env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def home(v6_sandbox: V6Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A node operator's machine: both nodes logged in, one settings file."""
    path = tmp_path_factory.mktemp("v6-worker-home")
    _write_settings(path, v6_sandbox)
    for node in ("station-demo", "station-demo-enc"):
        _login(path, v6_sandbox, node)
    return path


@pytest.fixture(scope="module")
def plain_worker(home: Path, v6_sandbox: V6Sandbox) -> Iterator[Worker]:
    """The plain node's worker, one slot (subtasks must not wait for it)."""
    worker = Worker(home, v6_sandbox.url, "station-demo", "--concurrency", "1")
    try:
        worker.wait_line(r"worker .* on .*#node-\d+")
        yield worker
    finally:
        code = worker.stop()
        assert code == 0, worker.output
        assert "Traceback" not in worker.output, worker.output


def _lives(home: Path, run_id: int) -> list[int]:
    path = home / "lives" / str(run_id)
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _run_ids(researcher: Researcher, task_id: int) -> list[int]:
    return [r["id"] for r in researcher.call("runs", task_id=task_id)]


def test_a_task_runs_through_the_worker_and_an_unknown_image_is_not_allowed(
        plain_worker: Worker, researchers: dict[str, Researcher],
        v6_sandbox: V6Sandbox) -> None:
    researcher = researchers["demo"]
    station = v6_sandbox.org_id("station")
    task_id = researcher.create_task(DEMO_IMAGE, "column_mean", [station], column="age")
    assert researcher.call("wait_task", task_id=task_id, timeout=60) == "completed"
    assert researcher.call("results", task_id=task_id) == [
        {"sum": pytest.approx(DEMO_AGE_MEAN * 40), "count": 40}]
    (run_id,) = _run_ids(researcher, task_id)
    plain_worker.wait_line(rf"run {run_id} \(.*\): succeeded")

    silent = researcher.create_task(SILENT_IMAGE, "anything", [station])
    assert researcher.call("wait_task", task_id=silent, timeout=60) == "crashed"
    assert "wrote no result" in researcher.call("runs", task_id=silent)[0]["log"]

    refused = researcher.create_task("harbor2.example/unknown:1", "anything", [station])
    assert researcher.call("wait_task", task_id=refused, timeout=60) == "not allowed"
    (run,) = researcher.call("runs", task_id=refused)
    assert "not configured on this node" in run["log"]


def test_subtasks_run_while_their_parent_holds_the_only_slot(
        plain_worker: Worker, researchers: dict[str, Researcher],
        v6_sandbox: V6Sandbox) -> None:
    researcher = researchers["demo"]
    task_id = researcher.create_task(DEMO_IMAGE, "central_mean", [v6_sandbox.org_id("station")],
                                     column="age")
    assert researcher.call("wait_task", task_id=task_id, timeout=90) == "completed", \
        plain_worker.output
    assert researcher.call("results", task_id=task_id) == [
        {"mean": pytest.approx(DEMO_AGE_MEAN), "count": 40, "organizations": 1}]


def test_a_kill_stops_the_local_process_and_the_next_task_runs(
        plain_worker: Worker, researchers: dict[str, Researcher], home: Path,
        v6_sandbox: V6Sandbox) -> None:
    researcher = researchers["demo"]
    station = v6_sandbox.org_id("station")
    task_id = researcher.create_task(SLEEPER_IMAGE, "sleep", [station])
    (run_id,) = _run_ids(researcher, task_id)
    (pid,) = wait_for(lambda: _lives(home, run_id), 30, "the local process to start")
    wait_for(lambda: researcher.call("runs", task_id=task_id)[0]["status"] == "active", 30,
             "the run to be active on the server")
    researcher.call("kill", task_id=task_id)
    wait_for(lambda: not _alive(pid), 10, "the process to be stopped")
    plain_worker.wait_line(rf"run {run_id} \(.*\): cancelled")
    assert researcher.call("wait_task", task_id=task_id, timeout=10) == "killed by user"
    assert _lives(home, run_id) == [pid]  # stopped, never run again

    task_id = researcher.create_task(DEMO_IMAGE, "column_mean", [station], column="age")
    assert researcher.call("wait_task", task_id=task_id, timeout=60) == "completed"


def test_a_node_wide_kill_stops_the_process_and_ends_the_run_killed(
        researchers: dict[str, Researcher], home: Path, v6_sandbox: V6Sandbox,
        tmp_path: Path) -> None:
    """A kill of everything on the node (socket `kill_containers` with the node's id) leaves
    the runs open on the server: the engine stops the process and ends the run "killed by
    user" itself, as the official node does, and never runs it again. 4.15.2's
    `POST /kill/node/tasks` answers 500 ("RuleCollection has no attribute s_glo") even for
    root, so the event is handed to the engine as its socket handler would."""
    from dss_console.core.interfaces import WorkGone
    from dss_console.engine.engine import Engine
    from dss_console.engine.journal import Journal
    from dss_console.engine.settings import load_settings
    from dss_console.engine.states import JobState
    from dss_console.sources.v6.source import V6Source

    node = v6_sandbox.node("station-demo-enc")  # no worker of this module runs for it now
    settings = load_settings(home / "settings.toml")
    settings.workroot = tmp_path / "work"
    source = V6Source.connect(v6_sandbox.url, node.api_key, v6_of(settings),
                              private_key_pem=v6_sandbox.key_file("station").read_bytes())
    journal = Journal(tmp_path / "journal.sqlite")
    engine = Engine(settings, source, journal, provider="station-demo-enc",
                    executors=plugins.executors(), auto=True)
    researcher = researchers["demo-enc"]
    try:
        engine.start()
        task_id = researcher.create_task(SLEEPER_IMAGE, "sleep", [v6_sandbox.org_id("station")])
        (run_id,) = _run_ids(researcher, task_id)
        (pid,) = wait_for(lambda: _lives(home, run_id), 60, "the local process to start")
        wait_for(lambda: researcher.call("runs", task_id=task_id)[0]["status"] == "active",
                 30, "the run to be active on the server")
        engine._on_source_event(WorkGone((), all=True))
        wait_for(lambda: not _alive(pid), 15, "the process to be stopped")
        assert researcher.call("wait_task", task_id=task_id, timeout=30) == "killed by user"
        job = journal.latest_job_for_ticket(source.key, run_id)
        assert job is not None
        wait_for(lambda: journal.job(job.job_id).state is JobState.CANCELLED, 30,
                 "the job to end")
        assert "cannot run again" in (journal.job(job.job_id).not_retryable or "")
        assert journal.job(job.job_id).details.get("outcome") == "killed"
        assert _lives(home, run_id) == [pid]
    finally:
        engine.shutdown(drain=False, flush_timeout=10)
        journal.close()
        source.close()


def test_an_image_configured_while_the_worker_runs_is_run(
        plain_worker: Worker, researchers: dict[str, Researcher], home: Path,
        v6_sandbox: V6Sandbox) -> None:
    script = home / "late.py"
    script.write_text("import json, sys\njson.dump({'late': True}, open(sys.argv[1], 'w'))\n")
    seen = len(re.findall("settings reloaded", plain_worker.output))
    with open(home / "settings.toml", "a") as settings:
        settings.write(f'\n[v6.algorithms."v6-test-late"]\n'
                       f'command = "{sys.executable} {script} {{output}}"\n')
    wait_for(lambda: len(re.findall("settings reloaded", plain_worker.output)) > seen, 30,
             "the worker to reload its settings")
    researcher = researchers["demo"]
    task_id = researcher.create_task("v6-test-late", "anything", [v6_sandbox.org_id("station")])
    assert researcher.call("wait_task", task_id=task_id, timeout=60) == "completed", \
        plain_worker.output
    assert researcher.call("results", task_id=task_id) == [{"late": True}]


def test_a_crash_reaches_the_researcher_and_a_finished_run_is_not_retried(
        plain_worker: Worker, researchers: dict[str, Researcher], home: Path,
        v6_sandbox: V6Sandbox) -> None:
    from dss_console.engine.engine import Engine, EngineError, journal_path
    from dss_console.engine.journal import Journal
    from dss_console.engine.settings import load_settings
    from dss_console.sources.v6.source import V6Source

    researcher = researchers["demo"]
    task_id = researcher.create_task(DEMO_IMAGE, "fail", [v6_sandbox.org_id("station")],
                                     message="no such column: bmi")
    assert researcher.call("wait_task", task_id=task_id, timeout=60) == "crashed"
    plain_worker.wait_line(rf"run {researcher.call('runs', task_id=task_id)[0]['id']} "
                           r"\(.*\): failed")
    (run,) = researcher.call("runs", task_id=task_id)
    # send_output_tail is off by default: our words, not the crash's traceback.
    assert "command exited with code 1" in run["log"], run["log"]
    assert "no such column: bmi" not in run["log"] and "Traceback" not in run["log"]
    # The operator's Retry (the console's button) on the same journal: refused in words.
    settings = load_settings(home / "settings.toml")
    source = V6Source.connect(v6_sandbox.url, v6_sandbox.node("station-demo").api_key,
                              v6_of(settings))
    journal = Journal(journal_path(home / "data" / "dss-console"))
    try:
        engine = Engine(settings, source, journal, provider="station-demo",
                        executors=plugins.executors())
        job = journal.latest_job_for_ticket(source.key, run["id"])
        assert job is not None
        # The audit's outcome is the status the server was told, not only the job's state.
        assert job.details.get("outcome") == "crashed"
        assert job.details.get("input_sha256") and job.details.get("task_id") == task_id
        with pytest.raises(EngineError, match="a finished vantage6 run cannot run again"):
            engine.retry_job(job.job_id)
    finally:
        journal.close()
        source.close()


def test_encrypted_task_gives_the_decrypted_result(
        home: Path, researchers: dict[str, Researcher], v6_sandbox: V6Sandbox) -> None:
    researcher = researchers["demo-enc"]
    worker = Worker(home, v6_sandbox.url, "station-demo-enc")
    try:
        task_id = researcher.create_task(DEMO_IMAGE, "column_mean",
                                         [v6_sandbox.org_id("station")], column="age")
        assert researcher.call("wait_task", task_id=task_id, timeout=60) == "completed", \
            worker.output
        assert researcher.call("results", task_id=task_id) == [
            {"sum": pytest.approx(DEMO_AGE_MEAN * 40), "count": 40}]
    finally:
        assert worker.stop() == 0, worker.output


def test_a_stopped_worker_leaves_the_run_open_and_runs_it_at_the_next_start(
        home: Path, researchers: dict[str, Researcher], v6_sandbox: V6Sandbox) -> None:
    researcher = researchers["demo-enc"]
    first = Worker(home, v6_sandbox.url, "station-demo-enc")
    try:
        task_id = researcher.create_task(SLEEPER_IMAGE, "sleep", [v6_sandbox.org_id("station")])
        (run_id,) = _run_ids(researcher, task_id)
        (pid,) = wait_for(lambda: _lives(home, run_id), 30, "the local process to start")
    finally:
        assert first.stop() == 0, first.output  # SIGTERM: on_shutdown = "leave" (default)
    assert not _alive(pid)
    first.wait_line(rf"run {run_id} \(.*\): interrupted: .*stays open on the server")
    (run,) = researcher.call("runs", task_id=task_id)
    assert run["status"] in ("initializing", "active"), run  # not finished on the server

    second = Worker(home, v6_sandbox.url, "station-demo-enc")
    try:
        assert researcher.call("wait_task", task_id=task_id, timeout=60) == "completed", \
            second.output
        assert researcher.call("results", task_id=task_id) == [{"life": 2}]
    finally:
        assert second.stop() == 0, second.output


def test_on_shutdown_fail_fails_the_run_in_flight(
        home: Path, researchers: dict[str, Researcher], v6_sandbox: V6Sandbox) -> None:
    _write_settings(home, v6_sandbox, "fail.toml", on_shutdown="fail")
    researcher = researchers["demo-enc"]
    worker = Worker(home, v6_sandbox.url, "station-demo-enc", config="fail.toml")
    try:
        task_id = researcher.create_task(SLEEPER_IMAGE, "sleep", [v6_sandbox.org_id("station")])
        (run_id,) = _run_ids(researcher, task_id)
        (pid,) = wait_for(lambda: _lives(home, run_id), 30, "the local process to start")
    finally:
        assert worker.stop() == 0, worker.output
    assert not _alive(pid)
    assert researcher.call("wait_task", task_id=task_id, timeout=30) == "failed"
    (run,) = researcher.call("runs", task_id=task_id)
    assert "the node shut down" in run["log"], run


def test_exit_when_idle_runs_what_is_queued_then_exits(
        home: Path, researchers: dict[str, Researcher], v6_sandbox: V6Sandbox) -> None:
    researcher = researchers["demo-enc"]
    task_id = researcher.create_task(DEMO_IMAGE, "column_mean", [v6_sandbox.org_id("station")],
                                     column="age")
    worker = Worker(home, v6_sandbox.url, "station-demo-enc", "--exit-when-idle")
    assert worker.proc.wait(60) == 0, worker.output
    assert researcher.call("wait_task", task_id=task_id, timeout=5) == "completed"


def test_not_logged_in_says_how_to_log_in(tmp_path: Path, v6_sandbox: V6Sandbox) -> None:
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path), DSS_CONSOLE_KEYRING="off")
    (tmp_path / "empty.toml").write_text("")
    done = subprocess.run([str(EXE), "worker", "--source", "v6", "--server", v6_sandbox.url,
                           "--config", str(tmp_path / "empty.toml")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done
    assert "not logged in as a node" in done.stderr
    assert f"dss-console v6 login --server {v6_sandbox.url}/api --api-key-stdin" in done.stderr


def test_worker_killed_mid_run_stops_the_leftover_and_runs_it_once(
        home: Path, researchers: dict[str, Researcher], v6_sandbox: V6Sandbox) -> None:
    researcher = researchers["demo-enc"]
    station = v6_sandbox.org_id("station")
    first = Worker(home, v6_sandbox.url, "station-demo-enc")
    try:
        task_id = researcher.create_task(SLEEPER_IMAGE, "sleep", [station])
        (run_id,) = _run_ids(researcher, task_id)
        (pid,) = wait_for(lambda: _lives(home, run_id), 30, "the local process to start")
        first.wait_line(rf"run {run_id} \(.*\): running")
    finally:
        first.kill()  # no shutdown: the journal is all the next start has
    assert _alive(pid), "the command should outlive its worker (own process group)"
    # Work posted while no worker runs.
    queued = researcher.create_task(DEMO_IMAGE, "column_mean", [station], column="weight")

    second = Worker(home, v6_sandbox.url, "station-demo-enc")
    try:
        wait_for(lambda: not _alive(pid), 30, "the leftover process to be stopped")
        second.wait_line(r"stopped the command left running by the previous run")
        assert researcher.call("wait_task", task_id=task_id, timeout=60) == "completed", \
            second.output
        assert researcher.call("results", task_id=task_id) == [{"life": 2}]
        assert [r["status"] for r in researcher.call("runs", task_id=task_id)] == ["completed"]
        assert len(_lives(home, run_id)) == 2  # the killed life and one rerun, no more
        assert researcher.call("wait_task", task_id=queued, timeout=60) == "completed"
        assert researcher.call("results", task_id=queued)[0]["count"] == 40
        second.wait_line(rf"run {run_id} \(.*\): succeeded")
        assert len(re.findall(rf"run {run_id} \(.*\): succeeded", second.output)) == 1
    finally:
        assert second.stop() == 0, second.output
    # Secrets stay out of the worker's output and the journal: the API key, the private
    # key, and the run's container token (kept 0600 in its work dir only).
    (token_file,) = (home / "data").glob(f"dss-console/work/*/run_{run_id:08d}/input/token")
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    journal = b"".join(f.read_bytes()  # with the WAL, if any
                       for f in (home / "data" / "dss-console").glob("journal.sqlite3*"))
    pem_body = v6_sandbox.key_file("station").read_text().splitlines()[1]
    for secret in (v6_sandbox.node("station-demo-enc").api_key, token_file.read_text(),
                   pem_body):
        assert secret not in first.output + second.output
        assert secret.encode() not in journal


def _host_names() -> list[str]:
    import socket

    names = {socket.gethostname(), socket.getfqdn()}
    return sorted({n for n in names | {n.split(".")[0] for n in names} if n != "localhost"})


def test_a_crash_tells_the_researcher_nothing_of_the_node(
        home: Path, researchers: dict[str, Researcher], v6_sandbox: V6Sandbox) -> None:
    """What a researcher can fetch of a crashed run (its log, its result, the task) carries
    no path of the node, no host name, no environment value: with the output's tail off
    (the default) and with it on (redacted, the algorithm's own error still there)."""
    from dss_console.sources.v6.sandbox import demo_csv

    secret = "v6-secret-" + os.urandom(6).hex()
    _write_settings(home, v6_sandbox, "tail.toml", send_output_tail=True,
                    algorithm_env={"SITE_SECRET": secret})
    researcher = researchers["demo-enc"]
    station = v6_sandbox.org_id("station")
    forbidden = [str(Path.home()), str(home), str(demo_csv()), secret,
                 str(demo_csv().parent), "pytest-of-"]
    logs: dict[str, list[str]] = {}
    for config in ("settings.toml", "tail.toml"):
        worker = Worker(home, v6_sandbox.url, "station-demo-enc", config=config)
        try:
            crash = researcher.create_task(DEMO_IMAGE, "fail", [station],
                                           message="no such column: bmi")
            mean = researcher.create_task(DEMO_IMAGE, "column_mean", [station], column="age")
            assert researcher.call("wait_task", task_id=crash, timeout=60) == "crashed", \
                worker.output
            assert researcher.call("wait_task", task_id=mean, timeout=60) == "completed", \
                worker.output
            for task_id in (crash, mean):
                (run_id,) = _run_ids(researcher, task_id)
                worker.wait_line(rf"run {run_id} \(.*\): (failed|succeeded)")
        finally:
            assert worker.stop() == 0, worker.output
        runs = [researcher.call("runs", task_id=t)[0] for t in (crash, mean)]
        fetched = json.dumps([runs, researcher.call("results", task_id=crash),
                              researcher.call("results", task_id=mean)])
        for value in forbidden:
            assert value not in fetched, f"{value!r} reached the researcher: {fetched}"
        for host in _host_names():
            assert re.search(rf"(?<![A-Za-z0-9]){re.escape(host)}(?![A-Za-z0-9])", fetched,
                             re.IGNORECASE) is None, f"host {host!r} in {fetched}"
        logs[config] = [run["log"] for run in runs]
    off, on = logs["settings.toml"], logs["tail.toml"]
    assert "command exited with code 1" in off[0]
    assert "no such column: bmi" not in off[0] and "Traceback" not in off[0]
    assert "as database" not in off[1]
    # Opted in: the algorithm's own words and its traceback, the node's detail replaced.
    assert "no such column: bmi" in on[0] and "Traceback" in on[0]
    assert "<workdir>/input" in on[0]
    assert "Using '<database:default>' with label 'default' as database" in on[1]
    assert "Writing output to <workdir>/input/output" in on[1]
