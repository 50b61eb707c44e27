"""A journal written before one end call: DSS jobs then ended with a `status` call
(``{"status": "success" | "failed", "ticket": N}``, ``"final"`` on a success), queued by
``Journal.transition`` as below. Calls such a journal still owes are delivered after the
upgrade exactly as before: against the real DSS server, the ticket ends as they said, a
`failed` is still not sent over a ticket that already ended, and the outbox views read them
as they did."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dss_console.engine.endings import failed_here
from dss_console.engine.events import CallDelivered
from dss_console.engine.journal import Journal
from dss_console.engine.states import JobState
from dss_console.sandbox import Sandbox

from test_engine import TAGS, Harness, harness_for
from waiting import wait_for

INSTANCE = "node-a"  # the harness's engine: it delivers this instance's calls only


@pytest.fixture
def service(sandbox: Sandbox) -> str:
    return sandbox.register_service(f"LegacyTest-{uuid.uuid4().hex[:8]}", "1.0.0", TAGS)


@pytest.fixture
def harness(sandbox: Sandbox, tmp_path: Path, service: str) -> Iterator[Harness]:
    yield from harness_for(sandbox, tmp_path, service)


def old_job(harness: Harness, key: str, state: JobState,
            calls: list[tuple[str, dict[str, Any]]]) -> tuple[int, int]:
    """Claim this service's next ticket on the server and journal a job for it in `state`
    owing `calls`, written as the old version's ``Journal.transition`` wrote them (one row
    per call, its payload as JSON with the ticket added, pending). Returns (ticket, job id)."""
    ticket = harness.ticket()
    claimed = harness.client().services.claim([harness.service], harness.sandbox.provider,
                                              INSTANCE)
    assert claimed is not None and claimed.ticket_id == ticket
    path = harness.tmp / f"journal-{INSTANCE}.sqlite3"
    journal = Journal(path)
    try:
        job_id = journal.create_job(source=key, ticket_id=ticket, service_hash=harness.service,
                                    service_name="LegacyTest", instance=INSTANCE,
                                    workdir=str(harness.tmp / "work" / str(ticket)),
                                    state=state)
    finally:
        journal.close()
    db = sqlite3.connect(path)
    try:
        with db:
            for kind, payload in calls:
                db.execute("INSERT INTO outbox (job_id, kind, payload, created_at) "
                           "VALUES (?,?,?,?)",
                           (job_id, kind, json.dumps({**payload, "ticket": ticket}),
                            time.time()))
    finally:
        db.close()
    return ticket, job_id


def test_end_calls_owed_by_an_older_journal_end_their_tickets_after_the_upgrade(
        harness: Harness) -> None:
    key = harness.client().server
    # Stopped while its result phase was delivered (the uploads had gone out).
    succeeded, success_job = old_job(harness, key, JobState.UPLOADING, [
        ("log", {"level": "info", "final": True,
                 "message": "Processing finished; result uploaded (0 files)"}),
        ("progress", {"value": 1.0, "final": True}),
        ("status", {"status": "success", "final": True})])
    # Failed here, the server not told yet.
    failed, failed_job = old_job(harness, key, JobState.FAILED, [
        ("log", {"level": "error", "message": "command exited with code 3"}),
        ("status", {"status": "failed"})])
    # Failed here, but finished on the server meanwhile: `failed` is not sent over it.
    finished, finished_job = old_job(harness, key, JobState.FAILED, [
        ("status", {"status": "failed"})])
    harness.client().tickets.set_status(finished, "success")

    engine = harness.engine()
    harness.wait_job(engine, succeeded, JobState.SUCCEEDED)
    harness.wait_server(succeeded, "success")
    harness.wait_server(failed, "failed")
    assert ("info", "Processing finished; result uploaded (0 files)") in harness.log(succeeded)
    assert ("error", "command exited with code 3") in harness.log(failed)

    def delivered(job_id: int) -> bool:
        return not engine.journal.pending_count(job_id)

    wait_for(lambda: delivered(failed_job) and delivered(finished_job), 30,
             what="the owed calls to be delivered")
    assert harness.server_status(finished) == "success"
    assert engine.job(failed_job).state is JobState.FAILED

    # The outbox views (the window's calls list, the worker's lines) read them as before.
    ends = {job_id: engine.journal.outbox_items(job_id)[-1]
            for job_id in (success_job, failed_job, finished_job)}
    assert [(i.kind, i.summary, i.state) for i in ends.values()] == [
        ("finish", "status success", "delivered"),
        ("finish", "status failed", "delivered"),
        ("finish", "status failed", "skipped")]
    assert ends[finished_job].last_error == "not sent: the ticket is already success"
    skipped = [e for e in harness.event_list() if isinstance(e, CallDelivered)
               and e.job_id == finished_job]
    assert [(e.kind, e.summary, e.state) for e in skipped] == [
        ("finish", "status failed", "skipped")]
    # A ticket this console failed under the old version is still its own to rescue.
    assert failed_here(engine.journal, failed_job)
    assert not failed_here(engine.journal, success_job)
