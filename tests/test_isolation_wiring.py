"""Issue 19, wired: the isolation keys in the settings file, and the local executor running a
job's command in the real sandbox (bwrap) with real limits (cgroups)."""

from __future__ import annotations

import http.server
import json
import os
import shlex
import socket
import sys
import tempfile
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from dss_console.core.command import CommandSpec, JobPaths
from dss_console.core.executor import (
    ExecutorDetails,
    JobRef,
    OptionValue,
    RunCallbacks,
    RunHandle,
    RunOutcome,
    RunRequest,
    StartError,
)
from dss_console.credentials import FALLBACK_FILE, SessionStore
from dss_console.engine.protocol import Report
from dss_console.engine.settings import (
    ServiceCommand,
    SettingsError,
    parse_settings,
    settings_to_toml,
)
from dss_console.engine.states import JobState
from dss_console.executors.local import LocalExecutor
from dss_console.executors.local.contain import SandboxUnavailable
from dss_console.executors.slurm import SlurmExecutor
from dss_console.isolation import Limits, probe, probe_limits
from dss_console.resources.demo_service import demo_service_command
from dss_console.sandbox import Sandbox
from settings_helpers import services_of
from test_engine_provider_errors import paused_reason
from test_leaks import assert_nothing_local, everything_the_user_can_fetch

from test_engine import TAGS, Harness, harness_for
from waiting import process_gone, wait_for

NO_SANDBOX = probe()
NO_CGROUPS = None if probe_limits().kind in ("cgroup1", "cgroup2") else "no usable cgroup"
if os.environ.get("DSS_CONSOLE_REQUIRE_SANDBOX") and (NO_SANDBOX or NO_CGROUPS):
    raise RuntimeError(f"DSS_CONSOLE_REQUIRE_SANDBOX is set but {NO_SANDBOX or NO_CGROUPS}")
needs_sandbox = pytest.mark.skipif(NO_SANDBOX is not None, reason=str(NO_SANDBOX))
needs_cgroups = pytest.mark.skipif(NO_SANDBOX is not None or NO_CGROUPS is not None,
                                   reason=str(NO_SANDBOX or NO_CGROUPS))


# -- settings -------------------------------------------------------------------------


def test_the_isolation_keys_are_read_inherited_and_written_back(tmp_path: Path) -> None:
    text = textwrap.dedent("""\
        [defaults]
        memory = "8G"
        processes = 256

        [services.Seg]
        command = "seg {result}"
        isolation = "sandbox"
        network = false
        cpus = 2
        read_only = ["/opt/ashs"]

        [v6.algorithms."img/avg:1"]
        command = "avg {input} {output}"
        isolation = "sandbox"
        memory = "1G"
    """)
    settings = parse_settings(text, tmp_path / "settings.toml")
    seg = services_of(settings)["Seg"]
    # What the local executor is handed: [defaults] under the service's own keys.
    assert LocalExecutor.own_options(seg.executor_options()) == {
        "memory": "8G", "processes": 256, "isolation": "sandbox", "network": False,
        "cpus": 2, "read_only": ["/opt/ashs"]}
    # The cluster reads only the limits it can map to sbatch options.
    assert SlurmExecutor.own_options(seg.executor_options()) == {"memory": "8G", "cpus": 2}
    avg = settings.plugins["v6"].command_for("img/avg:1", "img/avg:1")
    assert avg is not None
    assert LocalExecutor.own_options(avg.executor_options()) == {
        "memory": "1G", "processes": 256, "isolation": "sandbox"}
    # Written back as written: the defaults stay in [defaults], not in each table.
    written = settings_to_toml(settings)
    assert "[defaults]\nmemory = \"8G\"\nprocesses = 256\n" in written
    assert written.count("memory") == 2
    assert parse_settings(written, tmp_path / "settings.toml") == settings


@pytest.mark.parametrize(("text", "message"), [
    ('[services.X]\ncommand = "run"\nisolation = "docker"',
     'services."X".isolation: \'docker\' is not an isolation mode'),
    ('[services.X]\ncommand = "run"\nmemory = "8"', 'services."X".memory: \'8\' is less than'),
    ('[defaults]\nprocesses = 2', "defaults.processes: 2 processes are too few"),
    ('[defaults]\nsbatch_options = []', "defaults: unknown key 'sbatch_options'"),
    ('[v6.algorithms."i"]\ncommand = "a {input}"\nread_write = ["/"]',
     'v6.algorithms.i.read_write: "/" read-write'),
])
def test_a_bad_isolation_key_names_its_dotted_key(tmp_path: Path, text: str,
                                                  message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings(text, tmp_path / "settings.toml")
    assert message in str(caught.value)


# -- the local executor ---------------------------------------------------------------


class Ran:
    def __init__(self, executor: LocalExecutor, tmp_path: Path) -> None:
        self.executor = executor
        self.root = tmp_path / "workroot"
        self.data = tmp_path / "data"
        self.data.mkdir()
        self.secret = self.data / "session.json"
        self.secret.write_text('{"session": "s3cret"}')
        self.secret.chmod(0o600)
        self.other = self.root / "other-job"
        self.other.mkdir(parents=True)
        (self.other / "their.txt").write_text("theirs")
        self.on_details: Callable[[ExecutorDetails], None] = lambda details: None

    def start(self, code: str, options: dict[str, object], *, name: str = "job",
              grace: float = 5.0, loopback_port: int | None = None,
              nice: int = 0) -> RunHandle:
        workdir = self.root / name
        (workdir / "input").mkdir(parents=True, exist_ok=True)
        paths = JobPaths(1, "Seg", "ab" * 20, workdir, workdir / "input", None,
                         workdir / "result.itksnap", workdir / ".dss")
        spec = CommandSpec(argv=[sys.executable, "-I", "-c", code], timeout=60,
                           loopback_port=loopback_port, nice=nice)
        self.reports: list[Report] = []
        request = RunRequest(spec=spec, paths=paths, job=JobRef("test", 1, 1),
                             log_name="output.log", grace_period=grace,
                             options=options,  # type: ignore[arg-type]
                             private_dirs=(self.root, self.data))
        callbacks = RunCallbacks(on_report=self.reports.append, on_details=self.on_details,
                                 on_note=lambda level, text: None)
        return self.executor.start(request, callbacks)

    def run(self, code: str, options: dict[str, object],
            loopback_port: int | None = None) -> tuple[RunOutcome, str]:
        outcome = self.start(code, options, loopback_port=loopback_port).wait(60)
        assert outcome is not None
        return outcome, outcome.log_path.read_text()


@pytest.fixture
def ran(tmp_path: Path) -> Ran:
    return Ran(LocalExecutor(), tmp_path)


SANDBOX = {"isolation": "sandbox", "network": False}

PROBE = textwrap.dedent("""\
    import os, socket, sys
    secret, other, outside = sys.argv[1:] if len(sys.argv) > 1 else (None,) * 3
    def attempt(what, action):
        try:
            action()
            print(what, "ALLOWED", flush=True)
        except OSError as exc:
            print(what, "refused", type(exc).__name__, flush=True)
    attempt("read-secret", lambda: open(SECRET).read())
    attempt("list-other", lambda: os.listdir(OTHER))
    attempt("write-outside", lambda: open(OUTSIDE, "w").write("x"))
    attempt("write-own", lambda: open("mine.txt", "w").write("x"))
    if os.environ.get("HOME") == "/home/sandbox":  # never tried on the host itself
        attempt("write-system", lambda: open("/usr/dss-sandbox-test", "w").write("x"))
    attempt("connect", lambda: socket.create_connection(("127.0.0.1", PORT), timeout=2))
""")


@needs_sandbox
def test_a_sandboxed_command_reaches_nothing_of_the_console(ran: Ran, tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    outside = tmp_path / "outside.txt"
    code = (PROBE.replace("SECRET", repr(str(ran.secret)))
            .replace("OTHER", repr(str(ran.other))).replace("OUTSIDE", repr(str(outside)))
            .replace("PORT", str(port)))
    try:
        # Uncontained, it reaches all of it: the probe can tell.
        outcome, log = ran.run(code, {})
        assert outcome.exit_code == 0, log
        assert "read-secret ALLOWED" in log and "list-other ALLOWED" in log
        assert "connect ALLOWED" in log
        outside.unlink()
        outcome, log = ran.run(code, SANDBOX)
    finally:
        listener.close()
    assert outcome.exit_code == 0, log
    for what in ("read-secret", "list-other", "write-system", "connect"):
        assert f"{what} refused" in log, log
    assert "write-own ALLOWED" in log
    # Outside its work dir it writes at most into its private /tmp: nothing reaches here.
    assert not outside.exists()
    assert (ran.root / "job" / "mine.txt").read_text() == "x"


@needs_cgroups
def test_a_memory_hog_ends_with_the_limit_in_words(ran: Ran) -> None:
    code = "x = []\nwhile True: x.append(bytearray(16 * 1024 * 1024))"
    outcome, _ = ran.run(code, {**SANDBOX, "memory": "64M"})
    assert outcome.exit_code != 0
    assert outcome.stop_reason == "ran out of memory: limit 64 MiB"


@needs_cgroups
def test_a_fork_bomb_is_stopped_by_the_process_limit(ran: Ran) -> None:
    code = textwrap.dedent("""\
        import os, sys, time
        children = 0
        for _ in range(10000):
            try:
                pid = os.fork()
            except OSError:
                sys.exit(3)
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            children += 1
    """)
    outcome, _ = ran.run(code, {"isolation": "none", "processes": 32})
    assert outcome.exit_code == 3
    assert outcome.stop_reason == "hit its process limit: 32 processes"


@needs_cgroups
def test_a_stop_reaches_the_sandboxed_command_with_its_grace(ran: Ran) -> None:
    # bwrap does not forward a TERM: it reaches the command through its cgroup, which
    # then ends on its own within the grace period (not killed by bwrap dying).
    code = textwrap.dedent("""\
        import signal, sys, time
        def done(*_):
            print("got TERM", flush=True)
            sys.exit(7)
        signal.signal(signal.SIGTERM, done)
        print("ready", flush=True)
        time.sleep(60)
    """)
    handle = ran.start(code, SANDBOX, grace=20)

    def ready() -> bool:
        log = ran.root / "job" / ".dss" / "output.log"
        return log.exists() and "ready" in log.read_text()

    wait_for(ready, timeout=30)
    handle.stop("cancelled by the test")
    outcome = handle.wait(15)
    assert outcome is not None, "the command did not end within its grace period"
    assert outcome.exit_code == 7
    assert "got TERM" in outcome.log_path.read_text()


def test_no_sandbox_here_pauses_the_service_instead_of_running_uncontained(
        ran: Ran, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no bwrap to be found
    with pytest.raises(SandboxUnavailable) as caught:
        ran.start("open('ran', 'w')", SANDBOX)
    assert isinstance(caught.value, StartError) and caught.value.configuration
    assert 'install the package "bubblewrap"' in str(caught.value)
    assert not (ran.root / "job" / "ran").exists()


# -- through the engine, with the real DSS server ---------------------------------------

TESTS = Path(__file__).parent


@pytest.fixture
def service(sandbox: Sandbox) -> str:
    return sandbox.register_service(f"IsoTest-{uuid.uuid4().hex[:8]}", "1.0.0", TAGS)


@pytest.fixture
def harness(sandbox: Sandbox, tmp_path: Path, service: str) -> Iterator[Harness]:
    yield from harness_for(sandbox, tmp_path, service)


def contained(harness: Harness, command: str, **options: OptionValue) -> ServiceCommand:
    # The test's own scripts are shown read-only: a command's program must be visible.
    return ServiceCommand(key=harness.service, command=command, options={
        "isolation": "sandbox", "network": False, "read_only": [str(TESTS)], **options})


@needs_cgroups
def test_a_sandboxed_service_succeeds_and_reaches_nothing_local(harness: Harness) -> None:
    store = SessionStore(use_keyring=False)  # the real store, in the console's data dir
    store.save(harness.sandbox.url, f"session-{uuid.uuid4().hex}", "provider@example.org")
    secret = store.directory / FALLBACK_FILE
    assert secret.is_file()
    other = harness.tmp / "work" / "another-job"
    other.mkdir(parents=True)
    port = urlsplit(harness.sandbox.url).port
    command = shlex.join([sys.executable, str(TESTS / "isolation_cmd.py"), str(secret),
                          str(other), str(port), "success"]) + " {workspace} {result}"
    ticket = harness.ticket()
    engine = harness.engine(auto=True, extra={harness.service: contained(harness, command)})
    job_id = harness.wait_job(engine, ticket, JobState.SUCCEEDED, JobState.FAILED)
    job = engine.job(job_id)
    assert job.state == JobState.SUCCEEDED, (job.reason, harness.log(ticket))
    harness.wait_server(ticket, "success")
    # Both channels worked inside: the hook's progress and the @dss lines.
    assert ("info", "Affine registration done") in harness.log(ticket)
    assert not Path("/usr/dss-escaped").exists()


@needs_cgroups
def test_a_memory_hog_fails_with_the_limit_in_words_and_nothing_local(
        harness: Harness) -> None:
    hog = "x = []\nwhile True: x.append(bytearray(16 * 1024 * 1024))"
    command = shlex.join([sys.executable, "-c", hog.replace("{", "{{").replace("}", "}}")])
    ticket = harness.ticket()
    engine = harness.engine(auto=True, extra={
        harness.service: contained(harness, command, memory="64M")})
    job_id = harness.wait_job(engine, ticket, JobState.FAILED)
    harness.wait_server(ticket, "failed")
    wait_for(lambda: engine.job(job_id).owed == 0, 30, what="every call to be delivered")
    job = engine.job(job_id)
    assert job.reason == "the command ran out of memory: limit 64 MiB"
    detail, bodies = everything_the_user_can_fetch(harness.sandbox, ticket)
    fetched = json.dumps(detail) + "\n".join(bodies)
    assert "ran out of memory: limit 64 MiB" in fetched
    assert_nothing_local(fetched, [job.workdir, str(harness.tmp), "pytest-of-",
                                   str(Path.home())])


@needs_cgroups
def test_the_demo_service_and_an_itksnap_wt_script_succeed_inside(harness: Harness) -> None:
    script = harness.tmp / "scripts" / "wt_service.sh"
    script.parent.mkdir()
    script.write_text('#!/bin/sh\nset -e\n'
                      'itksnap-wt -i "$1" -layers-list > "$DSS_WORKDIR/layers.txt"\n'
                      'itksnap-wt -i "$1" -dssp-tickets-log "$DSS_TICKET_ID" info "listed" '
                      '-o "$2"\n')
    script.chmod(0o755)
    demo = harness.sandbox.register_service(f"IsoDemo-{uuid.uuid4().hex[:8]}", "1.0.0", TAGS)
    wt_service = contained(harness, f"{script} {{workspace}} {{result}}",
                           read_only=[str(script.parent)])
    wt_service.itksnap_wt = True
    demo_service = contained(harness, demo_service_command())
    demo_service.key = demo
    tickets = {harness.ticket(): harness.service, harness.sandbox.add_ticket(demo): demo}
    engine = harness.engine(auto=True, extra={harness.service: wt_service, demo: demo_service})
    for ticket in tickets:
        job_id = harness.wait_job(engine, ticket, JobState.SUCCEEDED, JobState.FAILED,
                                  timeout=60)
        job = engine.job(job_id)
        assert job.state is JobState.SUCCEEDED, (job.reason, harness.log(ticket))
        harness.wait_server(ticket, "success")
    wt_ticket = next(t for t, s in tickets.items() if s == harness.service)
    assert ("info", "listed") in harness.log(wt_ticket)  # the shim's report, from inside


@needs_cgroups
def test_after_a_crash_recovery_ends_the_sandbox_and_removes_its_cgroup(ran: Ran) -> None:
    details: list[ExecutorDetails] = []
    ran.on_details = details.append
    ran.start("import time\nprint('ready', flush=True)\ntime.sleep(60)", SANDBOX)
    (started,) = details
    name = started.data["cgroup"]
    assert isinstance(name, str) and Limits.leftover(name) is not None
    pgid = started.data["pgid"]
    assert isinstance(pgid, int)
    # The engine died: a new one's executor finds the journaled details.
    recovery = LocalExecutor().recover(started, JobRef("test", 1, 1), grace=5)
    assert recovery.notes and not recovery.follow
    wait_for(lambda: process_gone(pgid), 10, what="the sandbox to end")
    assert Limits.leftover(name) is None


@needs_sandbox
def test_without_network_only_the_relayed_loopback_port_is_reached(ran: Ran) -> None:
    # The vantage6 subtask proxy's case: a real HTTP server on the host's loopback is
    # reached at the same 127.0.0.1:PORT inside; another local port is not.
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"hello from the proxy")

        def log_message(self, *args: object) -> None:
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen()
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    port, other_port = proxy.server_address[1], other.getsockname()[1]
    code = textwrap.dedent(f"""\
        import socket, urllib.request
        print(urllib.request.urlopen("http://127.0.0.1:{port}/", timeout=10).read().decode())
        try:
            socket.create_connection(("127.0.0.1", {other_port}), timeout=2)
            print("other port ALLOWED")
        except OSError:
            print("other port refused")
    """)
    before = set(Path(tempfile.gettempdir()).glob("dss-proxy-*"))
    try:
        outcome, log = ran.run(code, SANDBOX, loopback_port=port)
    finally:
        proxy.shutdown()
        other.close()
    assert outcome.exit_code == 0, log
    assert "hello from the proxy" in log and "other port refused" in log
    assert set(Path(tempfile.gettempdir()).glob("dss-proxy-*")) == before  # closed


def test_a_sandboxed_service_on_a_host_without_bwrap_is_paused_before_claiming(
        harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ticket = harness.ticket()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # bwrap cannot be found
    engine = harness.engine(auto=True, extra={
        harness.service: contained(harness, f"{sys.executable} -c pass")})
    reason = wait_for(lambda: paused_reason(engine, harness.service), 30,
                      what="the service to be paused")
    assert 'isolation is "sandbox"' in reason and 'install the package "bubblewrap"' in reason
    wait_for(lambda: engine.idle_poll_completed(), 30, what="a poll after the pause")
    # Nothing claimed, nothing run uncontained: the ticket waits on the server.
    assert engine.jobs() == [] and harness.server_status(ticket) == "ready"


@needs_sandbox
def test_a_sandboxed_command_runs_at_its_lower_priority(ran: Ran) -> None:
    # In its own session inside bwrap, the group's priority does not reach it: nice does.
    handle = ran.start("import os\nprint('nice', os.nice(0))", SANDBOX, nice=5)
    outcome = handle.wait(60)
    assert outcome is not None and outcome.exit_code == 0
    assert f"nice {min(19, os.nice(0) + 5)}" in outcome.log_path.read_text()
