"""Tickets as SLURM batch jobs, against a real single-node SLURM (munged, slurmctld, slurmd
started for this test session) and the real DSS server. No fake sbatch."""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dss_console.core.executor import ExecutorDetails
from dss_console.engine.engine import journal_path
from dss_console.engine.events import JobMessage, JobSnapshot, ServicePaused
from dss_console.engine.journal import Journal
from dss_console.engine.settings import ServiceCommand
from dss_console.engine.states import JobState
from dss_console.sandbox import Sandbox
from test_leaks import assert_nothing_local, everything_the_user_can_fetch, local_detail
from test_worker_cli import Worker, args_for, worker_env  # noqa: F401 (fixture)

from slurm_cluster import FAST_POLL, SlurmCluster
from test_engine import TAGS, Harness, command, harness_for
from waiting import process_gone, wait_for


@pytest.fixture
def cluster_env(slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> SlurmCluster:
    """The engine finds the cluster as any SLURM client does: SLURM_CONF."""
    for name, value in {**slurm.env, **FAST_POLL}.items():
        monkeypatch.setenv(name, value)
    return slurm


@pytest.fixture
def service(sandbox: Sandbox) -> str:
    return sandbox.register_service(f"SlurmTest-{uuid.uuid4().hex[:8]}", "1.0.0", TAGS)


@pytest.fixture
def harness(sandbox: Sandbox, tmp_path: Path, service: str,
            cluster_env: SlurmCluster) -> Iterator[Harness]:
    yield from harness_for(sandbox, tmp_path, service)


def on_slurm(harness: Harness, mode: str, *args: str, options: list[str] | None = None,
             ) -> dict[str, ServiceCommand]:
    return {harness.service: ServiceCommand(key=harness.service, command=command(mode, *args),
                                            executor="slurm",
                                            options={"sbatch_options": options or []})}


def cluster(job: JobSnapshot) -> ExecutorDetails:
    """What the SLURM executor said of the job's command (nothing yet: empty details)."""
    return job.execution or ExecutorDetails("slurm")


def cluster_jobs(cluster: SlurmCluster) -> list[str]:
    result = cluster.run("squeue", "--noheader", "--states=all", "--format=%i")
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_a_ticket_runs_as_a_slurm_job_to_success(harness: Harness,
                                                 cluster_env: SlurmCluster) -> None:
    ticket = harness.ticket()
    engine = harness.engine(auto=True, extra=on_slurm(harness, "success"))
    job_id = harness.wait_job(engine, ticket, JobState.SUCCEEDED, timeout=60)
    harness.wait_server(ticket, "success")
    job = engine.job(job_id)
    assert job.executor == "slurm" and cluster(job).ref and cluster(job).ref.isdigit()
    assert cluster(job).data.get("cluster_state") == "COMPLETED"
    assert cluster(job).host == cluster_env.node
    assert cluster(job).running_at is not None and cluster(job).queued_at is not None
    assert job.pending_seconds is not None and job.running_seconds is not None
    assert cluster_env.job_state(cluster(job).ref) == "COMPLETED"
    # Both reporting channels crossed the cluster: @dss lines from the log SLURM wrote, and
    # the hook's events file; the attachment too.
    log = harness.log(ticket)
    assert ("info", "Affine registration done") in log and ("info", "QC written") in log
    detail = harness.sandbox.admin.ticket_detail(ticket)
    assert [a["description"] for e in detail["log"] for a in e["attachments"]] == ["QC report"]
    assert job.progress == 1.0 and job.exit_code == 0
    notes = [e.text for e in harness.event_list() if isinstance(e, JobMessage)
             and e.job_id == job_id]
    assert f"submitted as SLURM job {cluster(job).ref}" in notes
    # RUNNING, or already COMPLETED when the job ran between two polls: with its node.
    assert f"SLURM job {cluster(job).ref}: COMPLETED on {cluster_env.node}" in notes
    output = (Path(job.workdir) / ".dss" / "output.log").read_text()
    assert "some stderr noise" in output  # SLURM merged stderr into the job's log


def test_sbatch_options_are_filled_in_with_the_tickets_values(
        harness: Harness, cluster_env: SlurmCluster) -> None:
    # The DSS source gives the values (CommandSpec.option_values); the executor fills its
    # own options with them.
    ticket = harness.ticket()
    engine = harness.engine(auto=True, extra=on_slurm(
        harness, "success", options=["--comment=ticket {ticket}, {{literal}}"]))
    job_id = harness.wait_job(engine, ticket, JobState.SUCCEEDED, timeout=60)
    ref = cluster(engine.job(job_id)).ref
    assert ref
    result = cluster_env.run("squeue", "--noheader", "--states=all", f"--jobs={ref}",
                             "--format=%k")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ticket {ticket}, {{literal}}"


def test_a_failing_cluster_job_fails_the_ticket_with_its_error(harness: Harness) -> None:
    ticket = harness.ticket()
    engine = harness.engine(auto=True, extra=on_slurm(harness, "fail"))
    job_id = harness.wait_job(engine, ticket, JobState.FAILED, timeout=60)
    harness.wait_server(ticket, "failed")
    job = engine.job(job_id)
    assert job.exit_code == 3 and cluster(job).data.get("cluster_state") == "FAILED"
    assert job.reason == "input rejected: not a brain"  # its @dss error, read from SLURM's log
    wait_for(lambda: engine.job(job_id).owed == 0, 30, what="every call to be delivered")
    detail = harness.sandbox.admin.ticket_detail(ticket)
    errors = [e for e in detail["log"] if e["category"] == "error"]
    assert [e["message"] for e in errors] == ["input rejected: not a brain"]  # once
    assert [a for e in detail["log"] for a in e["attachments"]] == []  # no tail by default


def test_cancel_stops_the_cluster_job_and_its_processes(harness: Harness,
                                                        cluster_env: SlurmCluster) -> None:
    ticket = harness.ticket()
    engine = harness.engine(extra=on_slurm(harness, "sleep", "600"))
    job_id = harness.run_by_hand(engine, ticket, JobState.RUNNING)
    pid_file = wait_for(lambda: next(Path(harness.tmp / "work").glob(
        f"*/ticket_{ticket:08d}/pids.txt"), None), 60, what="the job's pid file")
    pids = [int(p) for p in wait_for(lambda: pid_file.read_text().split(), 10)]
    engine.cancel_job(job_id)
    harness.wait_job(engine, ticket, JobState.CANCELLED, timeout=30)
    job = engine.job(job_id)
    assert cluster(job).data.get("cluster_state") == "CANCELLED"
    assert cluster_env.job_state(cluster(job).ref) == "CANCELLED"
    wait_for(lambda: all(process_gone(p) for p in pids), 20,
             what="the cluster job's processes to be gone")
    harness.wait_server(ticket, "failed")


def test_a_ticket_deleted_on_the_server_cancels_its_cluster_job(
        harness: Harness, cluster_env: SlurmCluster) -> None:
    ticket = harness.ticket()
    engine = harness.engine(extra=on_slurm(harness, "sleep", "600"))
    job_id = harness.run_by_hand(engine, ticket, JobState.RUNNING)
    cluster_job = wait_for(lambda: cluster(engine.job(job_id)).ref, 30)
    wait_for(lambda: cluster_env.job_state(cluster_job) == "RUNNING", 30,
             what="the cluster job to run")
    harness.sandbox.admin.delete_ticket(ticket)
    harness.wait_job(engine, ticket, JobState.CANCELLED, timeout=30)
    wait_for(lambda: cluster_env.job_state(cluster_job) == "CANCELLED", 30,
             what="scancel to take effect")


def test_a_pending_job_shows_why_it_waits(harness: Harness, cluster_env: SlurmCluster) -> None:
    ticket = harness.ticket()
    engine = harness.engine(extra=on_slurm(harness, "success", options=["--partition=closed"]))
    job_id = harness.run_by_hand(engine, ticket, JobState.RUNNING)
    wait_for(lambda: cluster(engine.job(job_id)).data.get("cluster_state")
             == "PENDING (PartitionDown)", 30,
             what="the job to be shown pending with SLURM's reason")
    job = engine.job(job_id)
    assert cluster(job).running_at is None and cluster(job).host is None
    engine.cancel_job(job_id)
    harness.wait_job(engine, ticket, JobState.CANCELLED, timeout=30)
    assert cluster_env.job_state(cluster(job).ref) == "CANCELLED"


def test_a_refused_submission_blocks_the_tickets_and_pauses_the_service(
        harness: Harness, cluster_env: SlurmCluster) -> None:
    """A partition the cluster refuses is the provider's configuration: it used to fail both
    queued users' tickets within a second. Now no ticket fails, the service is paused with
    SLURM's words, and fixing the options runs the tickets."""
    tickets = [harness.ticket(), harness.ticket()]
    engine = harness.engine(auto=True, concurrency=2, extra=on_slurm(
        harness, "success", options=["--partition=nope"]))
    job_id = harness.wait_job(engine, tickets[0], JobState.BLOCKED, timeout=60)
    wait_for(lambda: engine.is_idle() and engine.idle_poll_completed(), 30,
             what="a poll after the job was blocked")
    paused = [e for e in harness.event_list() if isinstance(e, ServicePaused)]
    assert len(paused) == 1, paused
    why = next(v.paused for v in engine.services() if v.service_hash == harness.service)
    assert why is not None and why.startswith("the cluster refused the job: Batch job "
                                              "submission failed: Invalid partition name "
                                              "specified")
    assert cluster_env.node not in why and str(harness.tmp) not in why
    assert not [j for j in engine.jobs() if j.state is JobState.FAILED]
    assert cluster(engine.job(job_id)).ref is None
    statuses = [harness.server_status(t) for t in tickets]
    assert set(statuses) <= {"claimed", "ready"} and statuses[0] == "claimed", statuses
    for ticket in tickets:  # nothing reached the users
        assert "error" not in [category for category, _ in harness.log(ticket)]
    fixed = engine.settings.with_services(on_slurm(harness, "success"))
    engine.update_settings(fixed)
    for ticket in tickets:
        harness.wait_job(engine, ticket, JobState.SUCCEEDED, timeout=90)
    wait_for(lambda: all(v.paused is None for v in engine.services()), 30,
             what="the pause to end")


def test_a_worker_refused_by_the_cluster_fails_nothing_and_exits_1_when_idle(
        sandbox: Sandbox, slurm_worker_env: dict[str, str], service: str,
        tmp_path: Path) -> None:
    config = tmp_path / "settings.toml"
    config.write_text(f'[services."{service}"]\ncommand = {json.dumps(command("success"))}\n'
                      'executor = "slurm"\nsbatch_options = ["--partition=nope"]\n')
    ticket = sandbox.add_ticket(service)
    worker = Worker(slurm_worker_env, "--config", str(config), "--workdir",
                    str(tmp_path / "work"), "--poll-interval", "0.2", "--instance", "ci-node",
                    "--exit-when-idle")
    try:
        assert worker.finish(timeout=90) == 1, "\n".join(worker.lines)
    finally:
        worker.kill()
    paused = [line for line in worker.lines if "PAUSED" in line]
    assert len(paused) == 1, "\n".join(worker.lines)
    assert "Invalid partition name specified" in paused[0]
    assert worker.saw(f"ticket {ticket} is blocked and stays claimed")
    assert sandbox.admin.ticket_status(ticket) == "claimed"
    sandbox.admin.delete_ticket(ticket)


# -- a worker that dies while its cluster job runs --------------------------------------------


@pytest.fixture
def slurm_worker_env(worker_env: dict[str, str], slurm: SlurmCluster) -> dict[str, str]:  # noqa: F811
    return {**worker_env, **slurm.env, **FAST_POLL}


def slurm_worker(env: dict[str, str], service: str, tmp_path: Path, go: Path,
                 *options: str) -> Worker:
    return Worker(env, *args_for(service, tmp_path, "wait-file", str(go)), "--executor",
                  f"{service}=slurm", *options)


@pytest.mark.parametrize(("finish_while_down", "upgraded"),
                         [(False, False), (True, False), (False, True)],
                         ids=["job-still-running", "job-ended-while-down",
                              "journaled-by-the-version-before-executor-plug-ins"])
def test_a_restarted_worker_follows_its_cluster_job_instead_of_running_the_ticket_again(
        sandbox: Sandbox, slurm_worker_env: dict[str, str], slurm: SlurmCluster,
        service: str, tmp_path: Path, finish_while_down: bool, upgraded: bool) -> None:
    go = tmp_path / "go"
    ticket = sandbox.add_ticket(service)
    first = slurm_worker(slurm_worker_env, service, tmp_path, go)
    try:
        first.wait_line("submitted as SLURM job", timeout=60)
        wait_for(lambda: any(e["message"] == "waiting for the go signal"
                             for e in sandbox.admin.ticket_detail(ticket)["log"]), 60,
                 what="the job's first report to reach the server")
        reported = time.time()  # the cluster job was running by then
        submitted = [line for line in first.lines if "submitted as SLURM job" in line]
        cluster_job = submitted[0].rsplit(" ", 1)[1]
    finally:
        first.kill()  # SIGKILL: no chance to scancel
    # Not a wait for anything: the worker that follows the job starts measurably later than
    # the job did, so a run time counted from the re-attach shows. 2.5 s is enough: the
    # line's stamp is cut to the second, so a count from the re-attach gives a start at least
    # 1.5 s after `reported`, and the check below allows 1 s.
    time.sleep(max(0.0, reported + 2.5 - time.time()))
    assert slurm.job_state(cluster_job) == "RUNNING"
    jobs_before = cluster_jobs(slurm)
    journal = journal_path(tmp_path / "data" / "dss-console")
    if upgraded:
        # The version before executors were plug-ins kept the cluster job in flat columns
        # and had no `execution` column: the new one must still follow that job.
        assert _as_old_journal(journal) == [cluster_job]
    if finish_while_down:
        go.write_text("go")
        wait_for(lambda: slurm.job_state(cluster_job) == "COMPLETED", 60,
                 what="the cluster job to end while no worker watches")
    second = slurm_worker(slurm_worker_env, service, tmp_path, go, "--exit-when-idle")
    try:
        second.wait_line(f"following SLURM job {cluster_job} again", timeout=60)
        go.write_text("go")
        assert second.finish(timeout=90) == 0, "\n".join(second.lines)
    finally:
        second.kill()
    assert sandbox.admin.ticket_status(ticket) == "success"
    # Only new ids count: slurmctld forgets ended jobs after MinJobAge, so an old one may
    # have left the list meanwhile.
    assert set(cluster_jobs(slurm)) - set(jobs_before) == set(), \
        "a second cluster job was submitted"
    assert not second.saw("submitted as SLURM job")
    # "succeeded after X s" counts from the job's real start, not from the re-attach.
    done = next(line for line in second.lines if ": succeeded after " in line)
    ran = float(done.rsplit(" after ", 1)[1].removesuffix(" s"))
    began = _stamp_epoch(done.split(" ", 1)[0], near=reported) - ran
    assert began <= reported + 1.0, (began - reported, "\n".join(second.lines))
    followed = Journal(journal)
    try:
        execution = followed.jobs()[0].execution
    finally:
        followed.close()
    assert execution is not None and execution.ref == cluster_job
    assert execution.data.get("cluster_state") == "COMPLETED"


def _as_old_journal(path: Path) -> list[str]:
    """Rewrite a journal into the shape the version before executor plug-ins wrote (what
    the SLURM executor said in flat columns, no `execution` column); the cluster job ids
    it holds."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT id, execution FROM jobs WHERE execution IS NOT NULL")
        for job_id, text in rows.fetchall():
            execution = json.loads(text)
            data = execution["data"]
            db.execute("UPDATE jobs SET executor=?, cluster_job=?, cluster_state=?, "
                       "cluster_node=?, queued_at=?, running_at=?, pid=?, pgid=? WHERE id=?",
                       (execution["executor"], data.get("cluster_job"),
                        data.get("cluster_state"), data.get("cluster_node"),
                        execution["queued_at"], execution["running_at"], data.get("pid"),
                        data.get("pgid"), job_id))
        db.execute("ALTER TABLE jobs DROP COLUMN execution")
        db.commit()
        return [row[0] for row in db.execute("SELECT cluster_job FROM jobs "
                                             "WHERE cluster_job IS NOT NULL")]
    finally:
        db.close()


def _stamp_epoch(stamp: str, near: float) -> float:
    """The epoch time of a worker line's HH:MM:SS stamp (local time), the day nearest `near`."""
    day = time.localtime(near)
    hour, minute, second = (int(part) for part in stamp.split(":"))
    at = time.mktime((day.tm_year, day.tm_mon, day.tm_mday, hour, minute, second, 0, 0, -1))
    return min((at - 86400, at, at + 86400), key=lambda c: abs(c - near))


# -- the cluster's bad days -------------------------------------------------------------------


def test_a_forgotten_job_without_accounting_fails_in_words_after_its_output_is_read(
        cluster_env: SlurmCluster, tmp_path: Path) -> None:
    from dss_console.core.command import CommandSpec, JobPaths
    from dss_console.engine.protocol import MessageReport
    from dss_console.executors.slurm.runner import ResumePoint, SlurmRunner
    from dss_console.executors.slurm.tools import ClusterMonitor, SlurmTools

    work = tmp_path / "work"
    engine_dir = work / ".dss"
    engine_dir.mkdir(parents=True)
    # What the job wrote before the controller forgot it (this cluster keeps no accounting).
    (engine_dir / "output.log").write_text('@dss error "ran out of scratch space"\n')
    paths = JobPaths(1, "s", "h", work, work, None, work / "r.itksnap", engine_dir)
    reports: list[object] = []
    monitor = ClusterMonitor(SlurmTools(), interval=0.2)
    try:
        runner = SlurmRunner(CommandSpec(argv=("true",)), paths, reports.append,
                             monitor=monitor, job_name="dss-test-forgotten",
                             resume=ResumePoint("987654"))
        assert runner.start() == "987654"
        outcome = runner.wait(timeout=30)
    finally:
        monitor.close()
    assert outcome is not None
    assert outcome.stop_reason == ("ended, but SLURM no longer knows job 987654 and keeps no "
                                   "accounting, so its exit status is unknown")
    assert outcome.last_error == "ran out of scratch space"
    assert MessageReport("error", "ran out of scratch space") in reports


def test_an_unreachable_controller_is_transient_never_a_refusal(
        slurm: SlurmCluster, tmp_path: Path) -> None:
    import re

    from dss_console.executors.slurm.tools import SlurmTools, SlurmUnreachableError

    dead_conf = re.sub(r"SlurmctldPort=\d+", "SlurmctldPort=1", slurm.conf.read_text())
    dead = tmp_path / "dead.conf"
    dead.write_text(dead_conf)
    # A client retries the connection for MessageTimeout seconds (10 by default) before it
    # says "Unable to contact": a cluster configured with 1 s says it within a second.
    dead_soon = tmp_path / "dead-soon.conf"
    dead_soon.write_text(dead_conf + "MessageTimeout=1\n")
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\ntrue\n")
    tools = SlurmTools(env={**os.environ, "SLURM_CONF": str(dead_soon)})
    with pytest.raises(SlurmUnreachableError, match=r"cannot be reached.*Unable to contact"):
        tools.submit(script, [], tools.env)
    # With the default 10 s the client is still trying when the console stops waiting.
    quick = SlurmTools(env={**os.environ, "SLURM_CONF": str(dead)}, timeout=2)
    with pytest.raises(SlurmUnreachableError, match="did not answer within 2 s"):
        quick.queue_states(["1"])


def test_a_cluster_cancel_tells_the_user_nothing_of_the_cluster(
        harness: Harness, cluster_env: SlurmCluster) -> None:
    """slurmstepd's own "*** JOB n ON <node> CANCELLED" lands in the job's output: with the
    tail shared it reaches the user redacted, like every other line of the machine."""
    secret = f"pA55-w0rd-{uuid.uuid4().hex[:10]}"
    ticket = harness.ticket()
    extra = on_slurm(harness, "leaky", "sleep")
    extra[harness.service].send_output_tail = True
    extra[harness.service].env = {"LEAK_TEST_SECRET": secret}
    engine = harness.engine(auto=True, extra=extra)
    job_id = harness.wait_job(engine, ticket, JobState.RUNNING, timeout=60)
    cluster_job = wait_for(lambda: cluster(engine.job(job_id)).ref, 30)
    log = Path(engine.job(job_id).workdir) / ".dss" / "output.log"
    wait_for(lambda: log.is_file() and "harmless: the last words" in log.read_text(), 60,
             what="the job's output")
    assert cluster_env.run("scancel", cluster_job).returncode == 0
    harness.wait_job(engine, ticket, JobState.FAILED, timeout=60)
    harness.wait_server(ticket, "failed")
    wait_for(lambda: engine.job(job_id).owed == 0, 30, what="every call to be delivered")
    job = engine.job(job_id)
    assert f"SLURM job {cluster_job}: CANCELLED" in (job.reason or "")
    output = log.read_text()
    assert f"*** JOB {cluster_job} ON {cluster_env.node} CANCELLED AT" in output

    detail, bodies = everything_the_user_can_fetch(harness.sandbox, ticket)
    assert_nothing_local(str(detail) + "\n".join(bodies), local_detail(harness, job.workdir,
                                                                       secret))
    (tail,) = bodies
    assert f"slurmstepd-<host>: error: *** JOB {cluster_job} ON <host> CANCELLED AT" in tail
    assert "harmless: segmentation step 3 of 5 done" in tail


def test_the_poll_interval_is_the_operators_to_set(cluster_env: SlurmCluster,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    from dss_console.core.command import CommandSpec
    from dss_console.executors.slurm import SlurmExecutor
    from dss_console.executors.slurm.tools import POLL_INTERVAL_VARIABLE, cluster_poll_interval

    assert cluster_poll_interval({}) == 2.0  # unset: the default
    assert cluster_poll_interval({POLL_INTERVAL_VARIABLE: " 0.5 "}) == 0.5
    for wrong in ("0.1", "0", "-1", "fast", "inf", "nan"):
        with pytest.raises(ValueError, match=r"must be a number of seconds, 0\.2 or more"):
            cluster_poll_interval({POLL_INTERVAL_VARIABLE: wrong})
    monkeypatch.setenv(POLL_INTERVAL_VARIABLE, "0.75")
    executor = SlurmExecutor()
    try:
        assert executor.monitor().interval == 0.75
    finally:
        executor.close()
    # Set wrong: no new job is submitted (the service pauses with the words), and the
    # monitor still follows what is on the cluster at the default pace.
    monkeypatch.setenv(POLL_INTERVAL_VARIABLE, "often")
    executor = SlurmExecutor()
    try:
        problem = executor.preflight(CommandSpec(argv=("true",)), tmp_path / "work")
        assert problem is not None and "$DSS_CONSOLE_SLURM_POLL_INTERVAL is 'often'" in problem
        assert executor.monitor().interval == 2.0
    finally:
        executor.close()
