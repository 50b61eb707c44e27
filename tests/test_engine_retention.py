"""Retention: old work dirs of finished jobs go; unfinished jobs' and owing jobs' stay."""

from __future__ import annotations

import os
import time
from pathlib import Path

from dss_console.dss import DssClient
from dss_console.engine.engine import Engine
from dss_console.engine.journal import Journal
from dss_console.engine.settings import Settings
from dss_console.engine.source import DssSource
from dss_console.engine.states import JobState
from dss_console.sandbox import Sandbox


def test_retention_keeps_unfinished_and_owing_jobs_dirs(sandbox: Sandbox, client: DssClient,
                                                       tmp_path: Path) -> None:
    source = DssSource(client)
    journal = Journal(tmp_path / "journal.sqlite3")
    settings = Settings(instance="keeper", workroot=tmp_path / "work", retention_days=7)
    engine = Engine(settings, source, journal, provider=sandbox.provider, auto=False)
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
            journal.enqueue(job_id, "status", {"status": "success"})
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
