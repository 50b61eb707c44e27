"""What the operator trial found in the engine: a command that cannot start must not burn the
queue, a run of failures pauses a service, Retry rescues a ticket this console failed, and
messages end users read carry no local detail. Real server, real child processes."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dss_console import plugins
from dss_console.engine.engine import Engine, EngineError
from dss_console.engine.events import JobChanged, ServicePaused, ServiceResumed
from dss_console.engine.settings import ServiceCommand
from dss_console.engine.states import JobState
from dss_console.sandbox import Sandbox
from dss_console.sources.dss.source import RETRY_NOTE, USER_EXPORT_FAILED

from test_engine import TAGS, Harness, command, harness_for
from waiting import wait_for

MISSING_PROGRAM = "dss-console-test-no-such-program"


@pytest.fixture
def service(sandbox: Sandbox) -> str:
    return sandbox.register_service(f"ProviderErrors-{uuid.uuid4().hex[:8]}", "1.0.0", TAGS)


@pytest.fixture
def harness(sandbox: Sandbox, tmp_path: Path, service: str) -> Iterator[Harness]:
    yield from harness_for(sandbox, tmp_path, service)


def with_command(engine: Engine, service: str, template: str) -> None:
    settings = engine.settings.with_services({
        service: ServiceCommand(key=service, command=template)})
    engine.update_settings(settings)


def paused_reason(engine: Engine, service: str) -> str | None:
    return next((v.paused for v in engine.services() if v.service_hash == service), None)


def server_messages(harness: Harness, ticket: int) -> str:
    return "\n".join(message for _, message in harness.log(ticket))


def test_a_command_that_cannot_start_claims_nothing_and_pauses_the_service(
        harness: Harness) -> None:
    first, second = harness.ticket(), harness.ticket()
    engine = harness.engine(auto=True, extra={harness.service: ServiceCommand(
        key=harness.service, command=f"{MISSING_PROGRAM} {{workspace}} {{result}}")})
    wait_for(lambda: paused_reason(engine, harness.service), 30,
             what="the service to be paused")
    wait_for(engine.idle_poll_completed, 30, what="a poll after the pause")
    assert harness.server_status(first) == "ready" and harness.server_status(second) == "ready"
    assert engine.jobs() == []
    paused = [e for e in harness.event_list() if isinstance(e, ServicePaused)]
    assert len(paused) == 1 and f"command not found: {MISSING_PROGRAM}" in paused[0].reason
    with_command(engine, harness.service, command("success"))
    harness.wait_job(engine, first, JobState.SUCCEEDED)
    harness.wait_job(engine, second, JobState.SUCCEEDED)
    assert any(isinstance(e, ServiceResumed) for e in harness.event_list())


def test_a_command_that_fails_to_start_keeps_its_ticket_claimed_until_fixed(
        harness: Harness) -> None:
    first, second = harness.ticket(), harness.ticket()
    broken = ServiceCommand(key=harness.service, command=command("success"),
                            cwd="no-such-directory")
    engine = harness.engine(auto=True, concurrency=1, extra={harness.service: broken})
    job_id = harness.wait_job(engine, first, JobState.BLOCKED)
    assert "no-such-directory" in (engine.job(job_id).reason or "")
    # The service is paused: polls go on, but the next ticket is not claimed.
    wait_for(engine.idle_poll_completed, 30, what="a poll after the job blocked")
    assert harness.server_status(first) == "claimed"
    assert harness.server_status(second) == "ready"
    paused = [e for e in harness.event_list() if isinstance(e, ServicePaused)]
    assert len(paused) == 1 and "no-such-directory" in paused[0].reason
    assert "no-such-directory" in (paused_reason(engine, harness.service) or "")
    # Nothing of it reached the end user: no error, no local path, no PATH.
    told = server_messages(harness, first)
    assert "error" not in [category for category, _ in harness.log(first)]
    assert os.environ["PATH"] not in told and str(harness.tmp) not in told
    # Fixing the command runs the kept ticket and resumes claiming.
    with_command(engine, harness.service, command("success"))
    harness.wait_job(engine, first, JobState.SUCCEEDED)
    harness.wait_job(engine, second, JobState.SUCCEEDED)
    harness.wait_server(first, "success")
    assert any(isinstance(e, ServiceResumed) for e in harness.event_list())
    assert paused_reason(engine, harness.service) is None


def test_a_blocked_ticket_can_be_failed_by_the_operator(harness: Harness) -> None:
    ticket = harness.ticket()
    engine = harness.engine(extra={harness.service: ServiceCommand(
        key=harness.service, command="{nonsense}")})
    job_id = harness.run_by_hand(engine, ticket, JobState.BLOCKED)
    assert "unknown placeholder" in (engine.job(job_id).reason or "")
    engine.fail_job(job_id, "we cannot run this service today")
    harness.wait_server(ticket, "failed")
    assert ("error", "we cannot run this service today") in harness.log(ticket)


def test_consecutive_failures_pause_auto_claiming_until_resumed(harness: Harness) -> None:
    tickets = [harness.ticket() for _ in range(4)]
    engine = harness.engine("fail", auto=True, concurrency=1)
    for ticket in tickets[:3]:
        harness.wait_job(engine, ticket, JobState.FAILED)
    wait_for(lambda: paused_reason(engine, harness.service), 10, what="the service to be paused")
    wait_for(engine.idle_poll_completed, 30, what="a poll after the pause")
    assert harness.server_status(tickets[3]) == "ready"
    assert "3 tickets failed in a row" in (paused_reason(engine, harness.service) or "")
    # A fixed command alone does not lift the breaker: the operator does.
    with_command(engine, harness.service, command("success"))
    assert paused_reason(engine, harness.service)
    engine.resume_service(harness.service)
    harness.wait_job(engine, tickets[3], JobState.SUCCEEDED)


def failed_jobs(engine: Engine) -> list[int]:
    return [j.ticket_id for j in engine.jobs() if j.state is JobState.FAILED]


def test_the_breaker_counts_running_jobs_so_no_more_than_its_limit_fail(
        harness: Harness) -> None:
    """Concurrency 2 and pause_after_failures 3: the old breaker let jobs started before the
    third failure fail too (4 of 4 ready tickets). Those still running count as failures to
    come, so exactly 3 fail and the rest stay ready."""
    tickets = [harness.ticket() for _ in range(6)]
    engine = harness.engine("fail", auto=True, concurrency=2)
    assert engine.settings.pause_after_failures == 3
    wait_for(lambda: paused_reason(engine, harness.service), 60,
             what="the service to be paused")
    wait_for(lambda: engine.is_idle() and engine.idle_poll_completed(), 30,
             what="a poll after the last job ended")
    assert len(failed_jobs(engine)) == 3, [(j.ticket_id, j.state) for j in engine.jobs()]
    assert len(engine.jobs()) == 3
    statuses = [harness.server_status(t) for t in tickets]
    assert statuses.count("failed") == 3 and statuses.count("ready") == 3, statuses
    assert len([e for e in harness.event_list() if isinstance(e, ServicePaused)]) == 1
    # Claim next, by hand, claims nothing for the paused service either.
    with pytest.raises(EngineError, match="is paused"):
        engine.claim_next([harness.service], run=True)
    with pytest.raises(EngineError, match="is paused"):
        engine.claim_next()  # every service with a command: only the paused one here
    assert [harness.server_status(t) for t in tickets] == statuses


def test_a_retry_that_succeeds_ends_the_failure_pause(harness: Harness) -> None:
    first, second = harness.ticket(), harness.ticket()
    engine = harness.engine("fail", concurrency=1)
    engine.update_settings(dataclasses.replace(engine.settings, pause_after_failures=1))
    engine.set_auto(True)
    job_id = harness.wait_job(engine, first, JobState.FAILED)
    wait_for(lambda: paused_reason(engine, harness.service), 30,
             what="the service to be paused")
    wait_for(engine.idle_poll_completed, 30, what="a poll after the pause")
    assert harness.server_status(second) == "ready"
    # The operator fixes the command and retries the failed ticket: its success shows the
    # service works again, so the pause ends by itself and claiming goes on.
    with_command(engine, harness.service, command("success"))
    harness.wait_server(first, "failed")
    engine.retry_job(job_id)
    harness.wait_job(engine, first, JobState.SUCCEEDED)
    wait_for(lambda: paused_reason(engine, harness.service) is None, 30,
             what="the pause to end")
    resumed = [e for e in harness.event_list() if isinstance(e, ServiceResumed)]
    assert [e.why for e in resumed] == [f"ticket {first} succeeded"]
    harness.wait_job(engine, second, JobState.SUCCEEDED)


def test_retry_rescues_a_ticket_this_console_cancelled(harness: Harness, tmp_path: Path) -> None:
    ticket = harness.ticket()
    engine = harness.engine("sleep", "600")
    job_id = harness.run_by_hand(engine, ticket, JobState.RUNNING)
    engine.cancel_job(job_id)
    harness.wait_job(engine, ticket, JobState.CANCELLED)
    harness.wait_server(ticket, "failed")
    with_command(engine, harness.service, command("success"))
    engine.retry_job(job_id)
    harness.wait_job(engine, ticket, JobState.SUCCEEDED, timeout=60)
    harness.wait_server(ticket, "success")
    log = harness.log(ticket)
    assert log.count(("info", RETRY_NOTE)) == 1
    assert ("info", "Processing finished; result uploaded (2 files)") in log
    assert log.index(("info", RETRY_NOTE)) > log.index(("error", "cancelled by the provider"))


def test_retry_refuses_a_deleted_ticket_and_says_why(harness: Harness) -> None:
    ticket = harness.ticket()
    engine = harness.engine("fail")
    job_id = harness.run_by_hand(engine, ticket, JobState.FAILED)
    harness.wait_server(ticket, "failed")
    harness.sandbox.admin.delete_ticket(ticket)
    with pytest.raises(EngineError, match="deleted on the server"):
        engine.retry_job(job_id)
    assert engine.job(job_id).not_retryable == "the ticket was deleted on the server"
    with pytest.raises(EngineError, match="deleted on the server"):
        engine.retry_job(job_id)  # refused from the journal, without asking the server


def test_a_result_that_cannot_be_exported_tells_the_user_no_local_path(
        harness: Harness) -> None:
    ticket = harness.ticket()
    engine = harness.engine("bad-result")
    job_id = harness.run_by_hand(engine, ticket, JobState.FAILED)
    harness.wait_server(ticket, "failed")
    assert "vanished_layer" in (engine.job(job_id).reason or "")  # the detail, locally
    told = server_messages(harness, ticket)
    assert USER_EXPORT_FAILED in told
    assert str(harness.tmp) not in told and "vanished_layer" not in told


def test_views_learn_when_a_job_owes_nothing_more(harness: Harness) -> None:
    """The last snapshot of a failed job, whose failure calls are sent after it ended,
    says that nothing is owed (the console's "N calls waiting" must clear)."""
    ticket = harness.ticket()
    engine = harness.engine("fail")
    job_id = harness.run_by_hand(engine, ticket, JobState.FAILED)
    harness.wait_server(ticket, "failed")

    def last_snapshot_owed() -> int:
        snaps = [e.job for e in harness.event_list()
                 if isinstance(e, JobChanged) and e.job.job_id == job_id]
        return snaps[-1].owed

    wait_for(lambda: engine.job(job_id).owed == 0, 30, what="every call delivered")
    wait_for(lambda: last_snapshot_owed() == 0, 10, what="a snapshot saying nothing is owed")


def test_a_server_that_does_not_answer_shows_as_waiting_within_seconds(tmp_path: Path) -> None:
    """Not "online" for the minute a read timeout takes: "waiting" after a few seconds,
    "online" again as soon as it answers."""
    from dss_console.dss import DssClient
    from dss_console.engine.events import ConnectionChanged
    from dss_console.engine.journal import Journal
    from dss_console.engine.settings import Settings
    from dss_console.sources.dss.source import DssSource

    from hostile_server import HostileServer, Reply

    answer = threading.Event()

    def hung() -> Reply:
        answer.wait(60)  # the peer's behaviour under test: it holds the request
        return Reply(200, b'{"result": []}')

    states: list[str] = []
    with HostileServer() as server:
        server.routes["GET /api/pro/services"] = hung
        client = DssClient(server.url, session_id="c0ffee" * 6 + "abcd", timeout=(2.0, 60.0),
                           retries=0)
        engine = Engine(Settings(workroot=tmp_path / "work", poll_interval=0.2),
                        DssSource(client), Journal(tmp_path / "journal.sqlite3"),
                        provider="lab", executors=plugins.executors(), auto=True)
        engine.events.subscribe(lambda e: isinstance(e, ConnectionChanged)
                                and states.append(e.state))
        started = time.monotonic()
        engine.start()
        try:
            wait_for(lambda: "waiting" in states, 15, what="the waiting state")
            assert time.monotonic() - started < 10
            assert engine.connection.state == "waiting"
            answer.set()
            wait_for(lambda: engine.connection.state == "online", 15, what="online again")
        finally:
            answer.set()
            engine.shutdown(flush_timeout=1)
            engine.journal.close()


def test_the_breaker_does_not_cap_concurrency_before_a_failure() -> None:
    """pause_after_failures 3 must not quietly cap concurrency = 8 while the command works;
    once it has failed, the jobs already running count against the limit."""
    from dss_console.engine.pauses import ServicePauses

    pauses = ServicePauses(3, 600)
    assert pauses.may_start("svc", running=7)
    assert pauses.failed("svc", "exit 1") is None
    assert pauses.may_start("svc", running=1)
    assert not pauses.may_start("svc", running=2)
    assert pauses.succeeded("svc") is False  # no pause to lift, but the run is over
    assert pauses.may_start("svc", running=7)
