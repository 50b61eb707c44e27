"""Stopping an engine (SIGTERM, Quit) around outages and restarts: what the user's ticket
keeps, and how soon the stop ends. Real DSS server, real commands."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dss_console.engine.states import JobState
from dss_console.sandbox import Sandbox
from dss_console.sources.dss.source import RESTARTING_NOTE

from test_engine import TAGS, Harness, harness_for
from waiting import wait_for


@pytest.fixture
def service(sandbox: Sandbox) -> str:
    return sandbox.register_service(f"RestartTest-{uuid.uuid4().hex[:8]}", "1.0.0", TAGS)


@pytest.fixture
def harness(sandbox: Sandbox, tmp_path: Path, service: str) -> Iterator[Harness]:
    yield from harness_for(sandbox, tmp_path, service)


def test_a_stop_during_an_outage_ends_soon_after_the_server_is_back(
        harness: Harness) -> None:
    """A stop waits for what is owed; when the server comes back meanwhile, the stop must
    deliver it then, not sleep out a back-off grown during the outage (a worker SIGTERMed
    around a server restart took 40 s to exit)."""
    ticket = harness.ticket()
    engine = harness.engine("sleep", "300", auto=True)
    engine.outbox.base_backoff, engine.outbox.max_backoff = 8.0, 30.0  # a long outage's
    job_id = harness.wait_job(engine, ticket, JobState.RUNNING)
    server = harness.sandbox.public_server
    server.stop()
    ended = threading.Event()
    result: list[bool] = []
    stopper = threading.Thread(
        target=lambda: (result.append(engine.shutdown(flush_timeout=40)), ended.set()))
    try:
        stopper.start()

        # The job stopped: the stop now waits for what is owed (a flush) and tries at once.
        wait_for(lambda: not engine.busy_job_ids(), 30, what="the job to stop")

        def head_attempts() -> int:
            return next(i.attempts for i in engine.journal.outbox_items(job_id)
                        if i.state == "pending")

        before = head_attempts()
        wait_for(lambda: head_attempts() > before, 30, what="the stop to try during the outage")
    finally:
        server.restart()
    back = time.monotonic()
    assert ended.wait(30), "the stop never ended"
    took = time.monotonic() - back
    assert result == [True]
    # A retry every second while stopping; the grown back-off alone would wait up to 30 s.
    assert took < 6, f"the stop ended {took:.1f} s after the server was back"
    assert harness.server_status(ticket) == "claimed"
    assert ("info", RESTARTING_NOTE) in harness.log(ticket)
    assert engine.job(job_id).state is JobState.INTERRUPTED
