"""What a long-running engine keeps: old work dirs of finished jobs go (unfinished and owing
jobs' stay), and finished jobs leave no objects behind."""

from __future__ import annotations

import gc
import os
import time
import uuid
from pathlib import Path

import requests

from dss_console import plugins
from dss_console.core.interfaces import OutcomeKind
from dss_console.dss import DssClient
from dss_console.engine.calls import finish_call
from dss_console.engine.engine import Engine
from dss_console.engine.journal import Journal
from dss_console.engine.settings import Settings
from dss_console.engine.states import JobState
from dss_console.sandbox import Sandbox
from dss_console.sources.dss.source import DssSource

from test_engine import TAGS, harness_for
from waiting import wait_for


def test_retention_keeps_unfinished_and_owing_jobs_dirs(sandbox: Sandbox, client: DssClient,
                                                       tmp_path: Path) -> None:
    source = DssSource(client)
    journal = Journal(tmp_path / "journal.sqlite3")
    settings = Settings(instance="keeper", workroot=tmp_path / "work", retention_days=7)
    engine = Engine(settings, source, journal, provider=sandbox.provider,
                    executors=plugins.executors(), auto=False)
    month_ago = time.time() - 30 * 86400

    def job(ticket: int, state: JobState, *, owes: bool = False,
            instance: str = "keeper") -> Path:
        workdir = tmp_path / "work" / "server" / f"ticket_{ticket:08d}"
        (workdir / ".dss").mkdir(parents=True)
        (workdir / ".dss" / "output.log").write_text("done\n")
        for path in (workdir / ".dss" / "output.log", workdir / ".dss", workdir):
            os.utime(path, (month_ago, month_ago))
        job_id = journal.create_job(source=source.key, ticket_id=ticket, service_hash="ab" * 20,
                                    service_name="S", instance=instance, workdir=str(workdir),
                                    state=state)
        if owes:
            journal.enqueue(job_id, *finish_call(OutcomeKind.COMPLETED, status="success"))
        return workdir

    finished = [job(1, JobState.SUCCEEDED), job(2, JobState.FAILED)]
    kept = [job(3, JobState.RUNNING), job(4, JobState.SUCCEEDED, owes=True),
            job(5, JobState.INTERRUPTED, instance="another-worker"),
            job(6, JobState.CLAIMED)]
    try:
        engine._cleanup_old_workdirs()
        assert [p.exists() for p in finished] == [False, False]
        assert [p.exists() for p in kept] == [True, True, True, True]
    finally:
        journal.close()


def test_finished_jobs_leave_no_sessions_or_executions(sandbox: Sandbox, tmp_path: Path) -> None:
    """A worker ran 1,200 tickets and grew ~17 KiB a ticket: each job's thread left its HTTP
    session (and a pooled socket) behind. After many jobs, what is alive must not depend on
    how many ran."""
    from dss_console.engine.jobs import JobExecution

    def alive(kind: type) -> int:
        gc.collect()
        return sum(isinstance(o, kind) for o in gc.get_objects())

    service = sandbox.register_service(f"Keep-{uuid.uuid4().hex[:8]}", "1.0.0", TAGS)
    stages = harness_for(sandbox, tmp_path, service)
    harness = next(stages)
    try:
        engine = harness.engine("success", concurrency=2, auto=True)
        sessions_before = alive(requests.Session)
        tickets = [harness.ticket() for _ in range(12)]
        for ticket in tickets:
            harness.wait_server(ticket, "success", timeout=120)
        wait_for(lambda: not engine.busy_job_ids(), 30, what="the engine to be idle")
        # This engine's: an earlier test's engine may still be collected later in a full run.
        gc.collect()
        ours = [o for o in gc.get_objects()
                if isinstance(o, JobExecution) and o.ctx.journal is engine.journal]
        assert ours == []
        # The scheduler's and the outbox workers' sessions (4), and those of the jobs whose
        # threads ended after the last new session was opened (at most 2 x concurrency); the
        # old engine kept one per job ever run (16 here).
        assert alive(requests.Session) - sessions_before <= 8
    finally:
        next(stages, None)  # shuts the engine down
