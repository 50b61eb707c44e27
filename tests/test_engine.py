"""The engine against the real DSS server and real child processes."""

from __future__ import annotations

import os
import shlex
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dss_console import plugins
from dss_console.dss import DssClient
from dss_console.engine.engine import Engine, EngineError
from dss_console.engine.events import CallDelivered, Event, JobMessage, JobOutput
from dss_console.engine.journal import Journal
from dss_console.engine.settings import ServiceCommand
from dss_console.engine.states import JobState
from dss_console.sandbox import Sandbox, SandboxError
from dss_console.sources.dss.source import DssSource
from dss_console.workspace import Workspace
from settings_helpers import services_of, settings_with

from waiting import process_gone, wait_for

SERVICE_CMD = Path(__file__).with_name("service_cmd.py")
TAGS = [{"name": "T1-MRI", "type": "MainImage", "hint": "T1 image", "required": True}]


def command(mode: str, *args: str) -> str:
    extra = (" " + shlex.join(args)) if args else ""
    return shlex.join([sys.executable, str(SERVICE_CMD), mode]) + " {workspace} {result}" + extra


@pytest.fixture
def service(sandbox: Sandbox) -> str:
    """A service of its own for each test, so auto mode only ever sees this test's tickets."""
    return sandbox.register_service(f"EngineTest-{uuid.uuid4().hex[:8]}", "1.0.0", TAGS)


class Harness:
    def __init__(self, sandbox: Sandbox, tmp_path: Path, service: str):
        self.sandbox = sandbox
        self.tmp = tmp_path
        self.service = service
        self.engines: list[Engine] = []
        self.events: list[Event] = []
        self._events_lock = threading.Lock()

    def client(self) -> DssClient:
        client = DssClient(self.sandbox.url, backoff=0.05, timeout=(2.0, 30.0))
        client.login(self.sandbox.fresh_token())
        return client

    def engine(self, mode: str | None = None, *args: str, instance: str = "node-a",
               concurrency: int = 2, auto: bool = False, timeout: float | None = None,
               max_jobs: int | None = None, extra: dict[str, ServiceCommand] | None = None,
               interrupted: str = "rerun", journal: Path | None = None) -> Engine:
        services = dict(extra or {})
        if mode is not None:
            services[self.service] = ServiceCommand(key=self.service, command=command(mode, *args),
                                                    timeout=timeout, max_jobs=max_jobs)
        settings = settings_with(instance=instance, workroot=self.tmp / "work", poll_interval=0.2,
                            concurrency=concurrency, services=services, interrupted=interrupted)
        engine = Engine(settings, DssSource(self.client()),
                        Journal(journal or self.tmp / f"journal-{instance}.sqlite3"),
                        provider=self.sandbox.provider, executors=plugins.executors(),
                        auto=auto, status_interval=0.5,
                        grace_period=2.0, retry_interval=0.2, outbox_backoff=0.1,
                        outbox_max_backoff=0.5)
        engine.events.subscribe(self._record)
        self.engines.append(engine)
        engine.start()
        return engine

    def _record(self, event: Event) -> None:
        with self._events_lock:
            self.events.append(event)

    def event_list(self) -> list[Event]:
        with self._events_lock:
            return list(self.events)

    def ticket(self) -> int:
        return self.sandbox.add_ticket(self.service)

    def run_by_hand(self, engine: Engine, ticket: int, *end: JobState) -> int:
        """Claim this service's next ticket with Run (as the console's buttons do) and wait
        until the job reaches one of `end`; returns the job id."""
        assert engine.claim_next([self.service], run=True) is not None
        return self.wait_job(engine, ticket, *end)

    def server_status(self, ticket: int) -> str:
        return self.sandbox.admin.ticket_status(ticket)

    def wait_server(self, ticket: int, status: str, timeout: float = 30.0) -> None:
        def reached() -> bool:
            try:
                return self.server_status(ticket) == status
            except SandboxError as exc:
                # The real server answers an occasional 500 while the engine's calls keep its
                # SQLite store busy (seen once in a full run): the observer asks again, as
                # the engine's outbox does; anything else is a real failure.
                if "HTTP 500" not in str(exc):
                    raise
                return False

        wait_for(reached, timeout, what=f"ticket {ticket} to be {status} on the server")

    def wait_job(self, engine: Engine, ticket: int, *states: JobState,
                 timeout: float = 30.0) -> int:
        def done() -> int | None:
            job = engine.journal.latest_job_for_ticket(engine.source.key, ticket)
            return job.job_id if job and job.state in states else None

        return wait_for(done, timeout, what=f"ticket {ticket} to reach {states}")

    def log(self, ticket: int) -> list[tuple[str, str]]:
        return [(e["category"], e["message"]) for e in
                self.sandbox.admin.ticket_detail(ticket)["log"]]


def harness_for(sandbox: Sandbox, tmp_path: Path, service: str) -> Iterator[Harness]:
    """A harness whose engines are shut down when the test ends (for fixtures)."""
    h = Harness(sandbox, tmp_path, service)
    yield h
    for engine in h.engines:
        engine.shutdown(flush_timeout=10, job_timeout=15)
        engine.journal.close()


@pytest.fixture
def harness(sandbox: Sandbox, tmp_path: Path, service: str) -> Iterator[Harness]:
    yield from harness_for(sandbox, tmp_path, service)


def test_success_path_both_channels_attachment_scrambled_upload(harness: Harness) -> None:
    ticket = harness.ticket()
    engine = harness.engine("success", auto=True)
    job_id = harness.wait_job(engine, ticket, JobState.SUCCEEDED)
    harness.wait_server(ticket, "success")
    job = engine.job(job_id)
    assert job.progress == 1.0 and job.owed == 0 and job.exit_code == 0
    log = harness.log(ticket)
    assert ("info", "Affine registration done") in log
    assert ("info", "QC written") in log
    assert ("info", "Processing finished; result uploaded (2 files)") in log
    detail = harness.sandbox.admin.ticket_detail(ticket)
    attached = [a["description"] for e in detail["log"] for a in e["attachments"]]
    assert attached == ["QC report"]
    results = harness.sandbox.admin.result_files(ticket)
    assert results[-1] == f"ticket_{ticket:08d}_results.itksnap"
    assert len(results) == 2 and results[0].startswith("layer_000_")
    assert "layer_000_" in results[0] and results[0].endswith(".nii.gz")
    # The uploaded workspace opens wherever the user downloads it.
    down = harness.tmp / "user-download"
    down.mkdir()
    for index, name in enumerate(results):
        (down / name).write_bytes(harness.sandbox.admin.download_file(ticket, "results", index))
    layers = Workspace.load(down / results[-1]).layers
    assert [layer.path for layer in layers] == [down / results[0]]
    # The command's ordinary output was relayed live, not sent to the server.
    outputs = [line for e in harness.event_list() if isinstance(e, JobOutput) for line in e.lines]
    assert ("stderr", "some stderr noise") in outputs
    assert not any("stderr noise" in message for _, message in log)
    states = [s for _, s, _ in engine.journal.transitions(job_id)]
    assert states == ["claimed", "downloading", "running", "uploading", "succeeded"]
    workdir = Path(job.workdir)
    assert workdir.stat().st_mode & 0o777 == 0o700
    assert (workdir / ".dss" / "output.log").read_text().count("@dss") >= 2


def test_command_failure_reports_last_error_once_and_keeps_the_output_here(
        harness: Harness) -> None:
    ticket = harness.ticket()
    engine = harness.engine("fail", auto=True)
    job_id = harness.wait_job(engine, ticket, JobState.FAILED)
    harness.wait_server(ticket, "failed")
    assert engine.job(job_id).reason == "input rejected: not a brain"
    assert engine.job(job_id).exit_code == 3
    wait_for(lambda: engine.job(job_id).owed == 0, 30, what="every call to be delivered")
    detail = harness.sandbox.admin.ticket_detail(ticket)
    errors = [e for e in detail["log"] if e["category"] == "error"]
    assert [e["message"] for e in errors] == ["input rejected: not a brain"]
    # send_output_tail is off by default: the output stays on the provider's machine
    # (tests/test_leaks.py has the opt-in).
    assert [a for e in detail["log"] for a in e["attachments"]] == []


def test_exit_zero_without_result_fails(harness: Harness) -> None:
    ticket = harness.ticket()
    engine = harness.engine("no-result", auto=True)
    job_id = harness.wait_job(engine, ticket, JobState.FAILED)
    harness.wait_server(ticket, "failed")
    assert "finished without a result workspace" in (engine.job(job_id).reason or "")


@pytest.mark.parametrize("template, words", [
    ("no-such-program-xyz {workspace}", "not found"),
    ("{workdir}", "directory"),
    ("{ticket", "bad braces"),
])
def test_command_that_cannot_start_blocks_the_job(harness: Harness, template: str,
                                                  words: str) -> None:
    """The provider's configuration, not the user's failure: the ticket stays claimed."""
    ticket = harness.ticket()
    extra = {harness.service: ServiceCommand(key=harness.service, command=template)}
    engine = harness.engine(extra=extra)
    assert engine.claim_next([harness.service], run=True) is not None
    job_id = harness.wait_job(engine, ticket, JobState.BLOCKED)
    reason = engine.job(job_id).reason or ""
    assert reason.startswith("the command cannot start") and words in reason
    assert harness.server_status(ticket) == "claimed"
    assert not [m for c, m in harness.log(ticket) if c != "info" or "start" in m]


def test_command_not_executable(harness: Harness) -> None:
    script = harness.tmp / "service.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    ticket = harness.ticket()
    extra = {harness.service: ServiceCommand(key=harness.service, command=f"{script} {{ticket}}")}
    engine = harness.engine(extra=extra)
    assert engine.claim_next([harness.service], run=True) is not None
    job_id = harness.wait_job(engine, ticket, JobState.BLOCKED)
    assert "not executable" in (engine.job(job_id).reason or "")
    assert harness.server_status(ticket) == "claimed"


def _pids(engine: Engine, job_id: int) -> list[int]:
    pid_file = Path(engine.job(job_id).workdir) / "pids.txt"
    text = wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 20,
                    what="the command to start")
    return [int(p) for p in text.split()]


def test_timeout_kills_the_whole_group(harness: Harness) -> None:
    ticket = harness.ticket()
    engine = harness.engine("sleep", "300", auto=True, timeout=1.5)
    job_id = harness.wait_job(engine, ticket, JobState.RUNNING)
    pids = _pids(engine, job_id)
    harness.wait_job(engine, ticket, JobState.FAILED, timeout=20)
    assert "timed out" in (engine.job(job_id).reason or "")
    wait_for(lambda: all(process_gone(p) for p in pids), 10, what="command and grandchild gone")
    harness.wait_server(ticket, "failed")


def test_operator_cancel(harness: Harness) -> None:
    ticket = harness.ticket()
    engine = harness.engine("sleep", "300", auto=True)
    job_id = harness.wait_job(engine, ticket, JobState.RUNNING)
    pids = _pids(engine, job_id)
    engine.cancel_job(job_id, "wrong queue")
    harness.wait_job(engine, ticket, JobState.CANCELLED, timeout=15)
    wait_for(lambda: all(process_gone(p) for p in pids), 10, what="processes gone")
    harness.wait_server(ticket, "failed")
    assert ("error", "cancelled by the provider: wrong queue") in harness.log(ticket)


def test_ticket_deleted_while_running_stops_command_within_10s(harness: Harness) -> None:
    ticket = harness.ticket()
    engine = harness.engine("sleep", "300", auto=True)
    job_id = harness.wait_job(engine, ticket, JobState.RUNNING)
    pids = _pids(engine, job_id)
    harness.sandbox.admin.delete_ticket(ticket)
    wait_for(lambda: all(process_gone(p) for p in pids), 10,
             what="the command and its children to be gone after the deletion")
    harness.wait_job(engine, ticket, JobState.CANCELLED, timeout=10)
    assert "no longer ours" in (engine.job(job_id).reason or "")
    assert engine.job(job_id).owed == 0


def test_flood_of_output_binary_and_huge_line(harness: Harness) -> None:
    ticket = harness.ticket()
    engine = harness.engine("flood", auto=True)
    job_id = harness.wait_job(engine, ticket, JobState.SUCCEEDED, timeout=90)
    log = (Path(engine.job(job_id).workdir) / ".dss" / "output.log").read_bytes()
    assert log.count(b" of the flood\n") == 500_000
    assert b"line 499999 of the flood\n" in log
    assert b"x" * (1024 * 1024) + b"\n" in log
    assert b"binary \x00\xff\xfe\x80 bytes\n" in log
    batches = [e for e in harness.event_list() if isinstance(e, JobOutput)]
    assert 0 < len(batches) < 5000  # batched, not one event per line
    harness.wait_server(ticket, "success")


def test_server_down_while_command_reports_nothing_lost(harness: Harness) -> None:
    ticket = harness.ticket()
    # 14 steps of 1 s: the command still runs when the 10.5 s outage ends (about 12 s in).
    engine = harness.engine("slow-report", "14", "1.0", auto=True)
    job_id = harness.wait_job(engine, ticket, JobState.RUNNING)
    wait_for(lambda: ("info", "step 1 of 14") in harness.log(ticket), 20,
             what="the first message to arrive")
    server = harness.sandbox.public_server
    server.stop()
    down_at = time.monotonic()
    try:
        wait_for(lambda: engine.outbox.connection == "offline", 20, what="the outage noticed")
        # The acceptance scenario: the server stays away for 10 s or more.
        wait_for(lambda: time.monotonic() - down_at >= 10.5, 20, interval=0.2,
                 what="ten seconds of outage")
        assert engine.job(job_id).owed >= 8
        assert engine.job(job_id).state is JobState.RUNNING  # not killed for an outage
    finally:
        server.restart()
    harness.wait_job(engine, ticket, JobState.SUCCEEDED, timeout=60)
    harness.wait_server(ticket, "success")
    messages = [m for c, m in harness.log(ticket) if m.startswith("step ")]
    assert messages == [f"step {i} of 14" for i in range(1, 15)]


def test_restart_resumes_calls_owed_and_cancel_during_upload(harness: Harness) -> None:
    """The command finishes while the server is down; one engine is restarted and delivers
    what the previous one owed; on another ticket a cancel replaces the pending success."""
    first, second = harness.ticket(), harness.ticket()
    go = harness.tmp / "go"
    journal = harness.tmp / "shared-journal.sqlite3"
    engine = harness.engine("wait-file", str(go), auto=True, journal=journal)
    for ticket in (first, second):
        harness.wait_job(engine, ticket, JobState.RUNNING)
    server = harness.sandbox.public_server
    server.stop()
    try:
        go.write_text("go")
        jobs = {t: harness.wait_job(engine, t, JobState.UPLOADING) for t in (first, second)}
        assert engine.job(jobs[first]).owed > 0
        engine.cancel_job(jobs[second])  # cancelled while its result is still owed
        harness.wait_job(engine, second, JobState.CANCELLED)
        assert engine.shutdown(flush_timeout=1.0) is False  # owed calls stay journaled
        engine.journal.close()
    finally:
        server.restart()
    again = harness.engine("success", journal=journal)  # same instance: it resumes
    harness.wait_job(again, first, JobState.SUCCEEDED, timeout=60)
    harness.wait_server(first, "success")
    harness.wait_server(second, "failed")
    assert harness.sandbox.admin.result_files(second) == []  # the dropped uploads never went
    assert ("error", "cancelled by the provider") in harness.log(second)


def test_manual_claim_inspect_run(harness: Harness) -> None:
    ticket = harness.ticket()
    engine = harness.engine("success")
    engine.refresh_services()
    job = engine.claim_next([harness.service])
    assert job is not None and job.ticket_id == ticket
    harness.wait_job(engine, ticket, JobState.CLAIMED)
    wait_for(lambda: engine.job(job.job_id).inputs_ready, 20, what="inputs fetched")
    assert engine.job(job.job_id).state is JobState.CLAIMED
    assert (Path(job.workdir) / "input" / f"ticket_{ticket:08d}.itksnap").is_file()
    assert engine.claim_next([harness.service]) is None  # nothing else is ready
    engine.run_job(job.job_id)
    harness.wait_job(engine, ticket, JobState.SUCCEEDED)
    harness.wait_server(ticket, "success")
    with pytest.raises(EngineError, match=r"use Retry run|only failed"):
        engine.run_job(job.job_id)


def test_manual_fail_with_message_and_upload_picked_result(harness: Harness) -> None:
    first, second = harness.ticket(), harness.ticket()
    engine = harness.engine(None)
    engine.refresh_services()
    job1 = engine.claim_next([harness.service])
    job2 = engine.claim_next([harness.service])
    assert (job1.ticket_id, job2.ticket_id) == (first, second)
    wait_for(lambda: engine.job(job1.job_id).inputs_ready and engine.job(job2.job_id).inputs_ready,
             20, what="inputs")
    engine.fail_job(job1.job_id, "Image is a knee, not a brain")
    harness.wait_server(first, "failed")
    assert ("error", "Image is a knee, not a brain") in harness.log(first)
    picked = Path(job2.workdir) / "input" / f"ticket_{second:08d}.itksnap"
    engine.upload_result(job2.job_id, picked)
    harness.wait_job(engine, second, JobState.SUCCEEDED)
    harness.wait_server(second, "success")
    assert harness.sandbox.admin.result_files(second)[-1] == f"ticket_{second:08d}_results.itksnap"


def test_a_fail_that_comes_as_the_download_ends_is_not_lost(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's Fail reached the job's thread after its last check (the download done,
    the job about to wait for Run): it was taken, then nothing acted on it, and the ticket
    stayed claimed (seen once in a full run). Held in exactly that gap here."""
    from dss_console.engine.jobs import JobExecution

    in_gap, go_on = threading.Event(), threading.Event()
    transition = JobExecution._transition

    def held_after_the_download(self: JobExecution, state: JobState, *args: object,
                                **kwargs: object) -> object:
        done = transition(self, state, *args, **kwargs)  # type: ignore[arg-type]
        if state is JobState.CLAIMED and self.prefetch_only:
            in_gap.set()
            go_on.wait(30)
        return done

    monkeypatch.setattr(JobExecution, "_transition", held_after_the_download)
    ticket = harness.ticket()
    engine = harness.engine(None)
    engine.refresh_services()
    job = engine.claim_next([harness.service])
    assert job is not None and job.ticket_id == ticket
    assert in_gap.wait(30), "the download did not end"
    engine.fail_job(job.job_id, "Image is a knee, not a brain")
    go_on.set()
    harness.wait_server(ticket, "failed")
    assert ("error", "Image is a knee, not a brain") in harness.log(ticket)
    assert harness.wait_job(engine, ticket, JobState.FAILED) == job.job_id

    # After the thread has ended, Fail ends the job itself (the request is refused there).
    second = harness.ticket()
    other = engine.claim_next([harness.service])
    assert other is not None and other.ticket_id == second
    go_on.set()
    wait_for(lambda: engine._execution(other.job_id) is None, 30, what="the thread to end")
    engine.fail_job(other.job_id, "Not a brain either")
    harness.wait_server(second, "failed")


def test_retry_run_after_failure(harness: Harness, tmp_path: Path) -> None:
    ticket = harness.ticket()
    engine = harness.engine("fail", auto=True)
    job_id = harness.wait_job(engine, ticket, JobState.FAILED)
    harness.wait_server(ticket, "failed")
    engine.set_auto(False)
    services_of(engine.settings)[harness.service] = ServiceCommand(
        key=harness.service, command=command("success"))
    engine.retry_job(job_id)
    harness.wait_job(engine, ticket, JobState.SUCCEEDED)
    harness.wait_server(ticket, "success")
    assert (Path(engine.job(job_id).workdir) / ".dss" / "output-2.log").exists()


def test_per_service_limit_and_concurrency(harness: Harness, sandbox: Sandbox) -> None:
    other = sandbox.register_service(f"EngineTest-{uuid.uuid4().hex[:8]}", "1.0.0", TAGS)
    go = harness.tmp / "go"
    a1, a2 = harness.ticket(), harness.ticket()
    b1 = sandbox.add_ticket(other)
    extra = {other: ServiceCommand(key=other, command=command("wait-file", str(go)))}
    engine = harness.engine("wait-file", str(go), auto=True, concurrency=3, max_jobs=1,
                            extra=extra)
    harness.wait_job(engine, a1, JobState.RUNNING)
    harness.wait_job(engine, b1, JobState.RUNNING)
    assert engine.active_count(harness.service) == 1
    assert engine.journal.latest_job_for_ticket(engine.source.key, a2) is None  # not claimed
    assert harness.server_status(a2) == "ready"
    go.write_text("go")
    for ticket in (a1, a2, b1):
        harness.wait_job(engine, ticket, JobState.SUCCEEDED, timeout=60)


def test_two_engines_share_one_queue_each_ticket_once(harness: Harness) -> None:
    tickets = [harness.ticket() for _ in range(6)]
    a = harness.engine("success", instance="node-a", auto=True)
    b = harness.engine("success", instance="node-b", auto=True)
    for ticket in tickets:
        harness.wait_server(ticket, "success", timeout=90)
    done_by = {}
    for engine in (a, b):
        for job in engine.jobs():
            assert job.ticket_id not in done_by, f"ticket {job.ticket_id} processed twice"
            done_by[job.ticket_id] = engine.instance
    assert sorted(done_by) == sorted(tickets)
    for ticket in tickets:
        claims = [m for _, m in harness.log(ticket) if m.startswith("Ticket claimed")]
        assert len(claims) == 1 and done_by[ticket] in claims[0]


def test_progress_is_coalesced_and_messages_ordered(harness: Harness) -> None:
    ticket = harness.ticket()
    engine = harness.engine("slow-report", "20", "0.01", auto=True)
    job_id = harness.wait_job(engine, ticket, JobState.SUCCEEDED)
    items = engine.journal.outbox_items(job_id)
    progress = [i for i in items if i.kind == "progress"]
    assert all(i.state in ("delivered", "superseded") for i in items if i.kind != "finish")
    assert progress[-1].payload["value"] == 1.0 and progress[-1].state == "delivered"
    kinds = [i.kind for i in items if i.state == "delivered"]
    assert kinds[-1] == "finish" and kinds.count("log") == 21
    delivered = [e for e in harness.event_list() if isinstance(e, CallDelivered)]
    assert delivered and all(e.job_id == job_id for e in delivered)
    messages = [e.text for e in harness.event_list() if isinstance(e, JobMessage)
                and not e.local]
    assert messages[:3] == ["step 1 of 20", "step 2 of 20", "step 3 of 20"]


def test_never_fails_a_ticket_the_command_failed_itself(harness: Harness) -> None:
    ticket = harness.ticket()
    cli = shlex.join([str(Path(sys.executable).with_name("dss-console"))])
    script = harness.tmp / "self_fail.sh"
    # It lingers after failing the ticket (as a loaded machine makes any command do): the
    # engine's status check sees `failed` first and must let the command end by itself.
    script.write_text(f"#!/bin/sh\n{cli} pro fail \"$1\" 'Bad contrast' --server \"$2\"\n"
                      "sleep 1\nexit 1\n")
    script.chmod(0o755)
    extra = {harness.service: ServiceCommand(
        key=harness.service, command=f"{script} {{ticket}} {harness.sandbox.url}",
        env={"XDG_DATA_HOME": str(harness.tmp / "cli-data"), "DSS_CONSOLE_KEYRING": "off"})}
    # The command's own CLI session: log it in first.
    env = dict(os.environ, XDG_DATA_HOME=str(harness.tmp / "cli-data"), DSS_CONSOLE_KEYRING="off")
    import subprocess

    subprocess.run([str(Path(sys.executable).with_name("dss-console")), "login", "--server",
                    harness.sandbox.url, "--token", harness.sandbox.fresh_token()],
                   env=env, check=True, capture_output=True)
    engine = harness.engine(extra=extra, auto=True)
    job_id = harness.wait_job(engine, ticket, JobState.FAILED)
    harness.wait_server(ticket, "failed")
    wait_for(lambda: engine.job(job_id).owed == 0, 20, what="outbox drained")
    errors = [m for c, m in harness.log(ticket) if c == "error"]
    assert errors == ["Bad contrast"]  # ours was not added on top
    assert "already failed" in (engine.job(job_id).reason or "")


def test_a_command_that_delivers_its_result_itself_ends_succeeded(harness: Harness) -> None:
    """Old itksnap-wt scripts upload and mark success themselves, then exit 0 without the
    {result} workspace: the ticket succeeded, and the engine sends nothing more."""
    ticket = harness.ticket()
    cli = str(Path(sys.executable).with_name("dss-console"))
    script = harness.tmp / "self_success.sh"
    script.write_text(f"#!/bin/sh\nset -e\n"
                      f"{cli} pro upload \"$1\" \"$3\" --server \"$2\"\n"
                      f"{cli} pro success \"$1\" --server \"$2\"\n")
    script.chmod(0o755)
    env = {"XDG_DATA_HOME": str(harness.tmp / "cli-data"), "DSS_CONSOLE_KEYRING": "off"}
    extra = {harness.service: ServiceCommand(
        key=harness.service, command=f"{script} {{ticket}} {harness.sandbox.url} {{workspace}}",
        env=env)}
    import subprocess

    subprocess.run([cli, "login", "--server", harness.sandbox.url, "--token",
                    harness.sandbox.fresh_token()], env=dict(os.environ, **env), check=True,
                   capture_output=True)
    engine = harness.engine(extra=extra, auto=True)
    job_id = harness.wait_job(engine, ticket, JobState.SUCCEEDED, JobState.FAILED)
    job = engine.job(job_id)
    assert job.state is JobState.SUCCEEDED, job.reason
    assert harness.server_status(ticket) == "success"
    assert not any(c == "error" for c, _ in harness.log(ticket))


def test_itksnap_wt_setting_puts_the_shim_first_on_the_commands_path(harness: Harness) -> None:
    ticket = harness.ticket()
    script = harness.tmp / "wt_service.sh"
    script.write_text('#!/bin/sh\nset -e\n'
                      'itksnap-wt -i "$1" -layers-list > "$DSS_WORKDIR/layers.txt"\n'
                      'itksnap-wt -i "$1" -dssp-tickets-log "$DSS_TICKET_ID" info "listed" '
                      '-o "$2"\n')
    script.chmod(0o755)
    extra = {harness.service: ServiceCommand(key=harness.service, itksnap_wt=True,
                                             command=f"{script} {{workspace}} {{result}}")}
    engine = harness.engine(extra=extra, auto=True)
    job_id = harness.wait_job(engine, ticket, JobState.SUCCEEDED, JobState.FAILED)
    assert engine.job(job_id).state is JobState.SUCCEEDED, engine.job(job_id).reason
    layers = (Path(engine.job(job_id).workdir) / "layers.txt").read_text().splitlines()
    assert layers and all(line.startswith("2> ") for line in layers)
    assert ("info", "listed") in harness.log(ticket)  # through the job's own channel


def test_ashs_style_script_through_hook_from_settings_env(harness: Harness) -> None:
    """An ASHS-like pipeline: positional args in ASHS order, reporting via $ASHS_HOOK_SCRIPT
    (set to ${DSS_HOOK} in the service's env), from a grandchild shell."""
    script = harness.tmp / "service_ashs.sh"
    script.write_text(
        "#!/bin/bash\n"
        "set -e\n"
        'TICKET_ID=$1; WORKDIR=$2; IN_WS=$3; OUT_WS=$4\n'
        '$ASHS_HOOK_SCRIPT progress 0 0.5 1.0\n'
        'bash -c \'"$ASHS_HOOK_SCRIPT" info "ASHS stage 1 done for ticket $0"\' "$TICKET_ID"\n'
        'cp "$DSS_INPUT_DIR"/* "$WORKDIR"/\n'
        'cp "$IN_WS" "$OUT_WS"\n')
    script.chmod(0o755)
    ticket = harness.ticket()
    extra = {harness.service: ServiceCommand(
        key=harness.service, command=f"{script} {{ticket}} {{workdir}} {{workspace}} {{result}}",
        env={"ASHS_HOOK_SCRIPT": "${DSS_HOOK}"})}
    engine = harness.engine(extra=extra, auto=True)
    harness.wait_job(engine, ticket, JobState.SUCCEEDED)
    harness.wait_server(ticket, "success")
    assert ("info", f"ASHS stage 1 done for ticket {ticket}") in harness.log(ticket)


def test_poll_interval_backs_off_only_after_long_idleness() -> None:
    from dss_console.engine.engine import poll_wait

    assert poll_wait(1.0, idle_for=10) == 1.0
    assert poll_wait(1.0, idle_for=3600) == 2.0  # never more than twice the interval
    assert poll_wait(5.0, idle_for=3600) == 10.0
    assert poll_wait(120.0, idle_for=3600) == 120.0
    assert poll_wait(1.0, idle_for=0, error_backoff=8.0) == 8.0
