"""What an executor says about a job's command is one journal column (`execution`, JSON):
a journal written before executors were plug-ins (flat pid/pgid/cluster_* columns) reads
back the same, is migrated once when an engine opens it, and is read as it is (no write)
by `read_jobs`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from dss_console.core.executor import ExecutorDetails
from dss_console.engine.events import JobSnapshot
from dss_console.engine.journal import Journal, command_forgotten, execution_fields, read_jobs
from dss_console.engine.states import JobState

# The jobs table as the version before executor plug-ins created it (its SCHEMA plus the
# columns its migration added), with one local job whose process group was running and one
# SLURM job running on a node, as that version journaled them.
OLD_JOBS = """
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL, ticket_id INTEGER NOT NULL,
    service_hash TEXT NOT NULL, service_name TEXT NOT NULL, instance TEXT NOT NULL,
    state TEXT NOT NULL, reason TEXT, workdir TEXT NOT NULL, progress REAL NOT NULL DEFAULT 0,
    exit_code INTEGER, pid INTEGER, pgid INTEGER, proc_start TEXT,
    inputs_ready INTEGER NOT NULL DEFAULT 0, attempt INTEGER NOT NULL DEFAULT 1,
    claimed_at REAL, started_at REAL, finished_at REAL, updated_at REAL NOT NULL,
    not_retryable TEXT, executor TEXT NOT NULL DEFAULT 'local', cluster_job TEXT,
    cluster_state TEXT, cluster_node TEXT, queued_at REAL, running_at REAL, details TEXT);
CREATE TABLE transitions (id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL REFERENCES jobs(id), at REAL NOT NULL, state TEXT NOT NULL,
    reason TEXT);
CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL REFERENCES jobs(id), kind TEXT NOT NULL, payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, created_at REAL NOT NULL, delivered_at REAL);
INSERT INTO jobs (source, ticket_id, service_hash, service_name, instance, state, workdir,
                  pid, pgid, proc_start, claimed_at, started_at, updated_at)
    VALUES ('https://dss.example', 7, 'abc', 'Demo', 'ci', 'running', '/w/7', 4242, 4242,
            '998877', 10.0, 11.0, 12.0);
INSERT INTO jobs (source, ticket_id, service_hash, service_name, instance, state, workdir,
                  claimed_at, started_at, updated_at, executor, cluster_job, cluster_state,
                  cluster_node, queued_at, running_at)
    VALUES ('https://dss.example', 8, 'abc', 'Demo', 'ci', 'running', '/w/8', 20.0, 21.0,
            25.0, 'slurm', '1234', 'RUNNING', 'node7', 21.5, 23.0);
INSERT INTO jobs (source, ticket_id, service_hash, service_name, instance, state, workdir,
                  claimed_at, updated_at)
    VALUES ('https://dss.example', 9, 'abc', 'Demo', 'ci', 'claimed', '/w/9', 30.0, 30.0);
"""


def old_journal(tmp_path: Path) -> Path:
    path = tmp_path / "journal.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(OLD_JOBS)
    db.commit()
    db.close()
    return path


def by_ticket(jobs: list[JobSnapshot]) -> dict[int, JobSnapshot]:
    return {job.ticket_id: job for job in jobs}


def test_an_old_journal_reads_back_as_its_executors_details_before_and_after_migration(
        tmp_path: Path) -> None:
    path = old_journal(tmp_path)
    # Read-only (the worker's `status`, an engine may be running): no column added.
    unmigrated = by_ticket(read_jobs(path))
    db = sqlite3.connect(path)
    assert "execution" not in {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    db.close()

    journal = Journal(path)  # an engine opens it: migrated once
    try:
        migrated = by_ticket(journal.jobs())
        stored = journal.job_row(migrated[8].job_id)["execution"]
    finally:
        journal.close()
    assert stored is not None and '"1234"' in stored
    for jobs in (unmigrated, migrated):
        local, slurm, claimed = jobs[7].execution, jobs[8].execution, jobs[9].execution
        assert local == ExecutorDetails("local", label="local", data={
            "pid": 4242, "pgid": 4242, "proc_start": "998877"})
        assert slurm is not None and slurm.executor == "slurm"
        assert (slurm.ref, slurm.host, slurm.queued_at, slurm.running_at) == \
            ("1234", "node7", 21.5, 23.0)
        # The keys the SLURM executor reads back to follow the job.
        assert slurm.data == {"cluster_job": "1234", "cluster_state": "RUNNING",
                              "cluster_node": "node7"}
        assert slurm.label == "SLURM 1234 · RUNNING on node7"
        assert slurm.queued and jobs[8].run_started_at == 23.0
        assert claimed is None and jobs[9].executor == "local"


def test_reports_update_the_details_and_a_stop_forgets_only_what_finds_the_command(
        tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    try:
        job_id = journal.create_job(source="s", ticket_id=1, service_hash="h",
                                    service_name="n", instance="i", workdir="/w")
        journal.transition(job_id, JobState.RUNNING, **execution_fields(
            ExecutorDetails("slurm", label="SLURM · not submitted yet", waiting=True),
            reset=True))
        journal.record_execution(job_id, ExecutorDetails(
            "slurm", label="SLURM 5 · PENDING", waiting=True, queued_at=100.0, ref="5",
            data={"cluster_job": "5", "cluster_state": "PENDING"}))
        journal.record_execution(job_id, ExecutorDetails(
            "slurm", label="SLURM 5 · RUNNING on n1", running_at=101.0, host="n1",
            data={"cluster_state": "RUNNING", "cluster_node": "n1"}))
        running = journal.job(job_id).execution
        assert running is not None and not running.waiting
        assert (running.label, running.ref, running.queued_at, running.running_at) == \
            ("SLURM 5 · RUNNING on n1", "5", 100.0, 101.0)
        assert running.data == {"cluster_job": "5", "cluster_state": "RUNNING",
                                "cluster_node": "n1"}
        # A value of None drops a key (a process group that is gone).
        journal.record_execution(job_id, ExecutorDetails("slurm", data={"cluster_node": None}))
        dropped = journal.job(job_id).execution
        assert dropped is not None and "cluster_node" not in dropped.data

        journal.transition(job_id, JobState.INTERRUPTED, "stopped", check=False,
                           **command_forgotten())
        forgotten = journal.job(job_id).execution
        assert forgotten is not None and forgotten.data == {}
        assert (forgotten.label, forgotten.ref) == ("SLURM 5 · RUNNING on n1", "5")

        # A new run starts from the executor's first word, nothing of the last run's.
        journal.transition(job_id, JobState.RUNNING, check=False, **execution_fields(
            ExecutorDetails("local", label="local"), reset=True))
        assert journal.job(job_id).execution == ExecutorDetails("local", label="local")
        assert journal.job(job_id).executor == "local"
    finally:
        journal.close()


def test_jobs_finished_since_reads_only_the_jobs_that_ended_after_it(tmp_path: Path) -> None:
    # A journal of months is not read whole for the last day's jobs.
    DAY = 24 * 3600.0
    journal = Journal(tmp_path / "journal.sqlite3")
    try:
        now = 1_000_000_000.0
        for ticket, (state, finished_at) in enumerate([
                (JobState.SUCCEEDED, now - 2 * DAY), (JobState.SUCCEEDED, now - 60),
                (JobState.FAILED, now - 3600), (JobState.RUNNING, None)], start=1):
            job_id = journal.create_job(source="s", ticket_id=ticket, service_hash="h",
                                        service_name="n", instance="i", workdir="/w")
            journal.transition(job_id, state, check=False, finished_at=finished_at)
        recent = journal.jobs(source="s", instance="i", finished_since=now - DAY)
        assert sorted(j.ticket_id for j in recent) == [2, 3]
        assert sorted(j.state.value for j in recent) == ["failed", "succeeded"]
        assert len(journal.jobs(source="s", instance="i")) == 4
    finally:
        journal.close()
