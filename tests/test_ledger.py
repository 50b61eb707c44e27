"""The ledger (issue 20, part 6) with real workers on the real DSS server: every step of a job
is one chained record, the writer survives crashes on either side of its append, two engines
share one chain, and nothing private reaches it."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dss_console.engine.journal import Journal
from dss_console.engine.ledger import GENESIS, canonical, ledger_path, line_hash
from dss_console.engine.ledger_verify import journal_head, verify_file
from dss_console.engine.states import JobState
from dss_console.sandbox import Sandbox
from test_worker_cli import Worker, worker_env  # noqa: F401  (a fixture)

from test_engine import TAGS, command
from waiting import wait_for

EXE_AUDIT = Path(sys.executable).with_name("dss-console")


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def assert_chained(path: Path) -> list[dict[str, Any]]:
    """Every record numbered one after the other and carrying the previous line's SHA-256,
    its line canonical."""
    lines = path.read_bytes().splitlines()
    prev = GENESIS
    for number, line in enumerate(lines, start=1):
        record = json.loads(line)
        assert record["seq"] == number and record["prev"] == prev, (number, record)
        assert canonical(record) == line
        prev = line_hash(line)
    return [json.loads(line) for line in lines]


def job_kinds(all_records: list[dict[str, Any]], ticket: int) -> list[str]:
    return [r["kind"] for r in all_records if r.get("job", {}).get("id") == ticket]


def data_dir(env: dict[str, str]) -> Path:
    return Path(env["XDG_DATA_HOME"]) / "dss-console"


@pytest.fixture
def services(sandbox: Sandbox) -> Iterator[tuple[str, str]]:
    tag = uuid.uuid4().hex[:8]
    yield (sandbox.register_service(f"LedgerOk-{tag}", "1.0.0", TAGS),
           sandbox.register_service(f"LedgerFail-{tag}", "1.0.0", TAGS))


def test_every_step_of_a_dss_job_is_one_chained_record(
        sandbox: Sandbox, worker_env: dict[str, str],  # noqa: F811
        services: tuple[str, str], tmp_path: Path) -> None:
    ok, bad = services
    good_ticket, bad_ticket = sandbox.add_ticket(ok), sandbox.add_ticket(bad)
    worker = Worker(worker_env, "--command", f"{ok}={command('success')}",
                    "--command", f"{bad}={command('fail')}", "--workdir",
                    str(tmp_path / "work"), "--poll-interval", "0.2", "--instance", "ci-led",
                    "--exit-when-idle")
    try:
        assert worker.finish(timeout=120) == 0, "\n".join(worker.lines)
    finally:
        worker.kill()
    path = ledger_path(data_dir(worker_env), sandbox.url)
    assert path.is_file()
    assert (path.stat().st_mode & 0o777) == 0o600
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    found = assert_chained(path)
    assert found[0]["kind"] == "ledger"
    assert job_kinds(found, good_ticket) == ["claim", "inputs", "start", "upload", "delivered",
                                             "end"]
    assert job_kinds(found, bad_ticket) == ["claim", "inputs", "start", "end", "delivered"]
    by_kind = {r["kind"]: r for r in found if r.get("job", {}).get("id") == good_ticket}
    assert by_kind["claim"]["service"]["name"].startswith("LedgerOk-")
    assert by_kind["inputs"]["data"]["count"] >= 1
    assert all(len(f["sha256"]) == 64 and f["size"] > 0
               for f in by_kind["inputs"]["data"]["files"])
    assert by_kind["start"]["data"] == {"executor": "local", "attempt": 1, "following": False}
    assert by_kind["end"]["data"]["outcome"] == "completed"
    assert by_kind["end"]["data"]["exit_code"] == 0
    assert by_kind["end"]["data"]["run_s"] >= 0
    assert by_kind["upload"]["data"]["count"] >= 1
    assert by_kind["delivered"]["data"] == {"outcome": "completed", "state": "delivered"}
    failed_end = next(r for r in found if r["kind"] == "end"
                      and r["job"]["id"] == bad_ticket)
    assert failed_end["data"]["outcome"] == "crashed"
    assert failed_end["data"]["exit_code"] == 3
    # The journal's head is the file's last record; the verdict holds.
    head = journal_head(data_dir(worker_env) / "journal.sqlite3", sandbox.url)
    assert head is not None and head.seq == len(found)
    verdict = verify_file(path, head)
    assert verdict.ok and verdict.records == len(found), verdict.text()
    # No path, file name or host reaches it.
    text = path.read_text()
    assert str(tmp_path) not in text and "ticket_0" not in text and ".nii" not in text


def _child(code: str) -> None:
    """Run ``code`` in a child Python that ends with os._exit (a crash: no cleanup)."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 17, done.stdout + done.stderr


def _idle_worker(env: dict[str, str], service: str, tmp_path: Path,
                 instance: str = "ci-led") -> Worker:
    worker = Worker(env, "--command", f"{service}={command('success')}", "--workdir",
                    str(tmp_path / "work"), "--poll-interval", "0.2", "--instance", instance,
                    "--exit-when-idle")
    try:
        assert worker.finish(timeout=120) == 0, "\n".join(worker.lines)
    finally:
        worker.kill()
    return worker


def test_a_crash_after_the_journal_commit_writes_the_record_at_restart(
        sandbox: Sandbox, worker_env: dict[str, str],  # noqa: F811
        services: tuple[str, str], tmp_path: Path) -> None:
    data = data_dir(worker_env)
    data.mkdir(parents=True, exist_ok=True)
    # The engine's own step (a claim journaled with its record), then the process dies
    # before any writer ran.
    _child(f"""
        import os
        from pathlib import Path
        from dss_console.engine.journal import Journal
        from dss_console.engine.ledger_records import claim_entry
        journal = Journal(Path({str(data / 'journal.sqlite3')!r}))
        journal.create_job(source={sandbox.url!r}, ticket_id=424242, service_hash="h",
                           service_name="crashed", instance="crashed-node", workdir="/w",
                           ledger=[claim_entry({{"task": 1}})])
        os._exit(17)
    """)
    assert not ledger_path(data, sandbox.url).exists()
    _idle_worker(worker_env, services[0], tmp_path)
    found = assert_chained(ledger_path(data, sandbox.url))
    claims = [r for r in found if r["kind"] == "claim"]
    assert [(r["job"]["id"], r["instance"], r["data"]) for r in claims] == [
        (424242, "crashed-node", {"details": {"task": 1}})]
    # Queued when the ledger began: recorded as its claim, not imported a second time.
    assert found[0]["kind"] == "ledger" and found[0]["data"]["imported"] == 0
    assert not [r for r in found if r["kind"] == "imported"]


def test_a_crash_after_the_append_does_not_write_it_twice(
        sandbox: Sandbox, worker_env: dict[str, str],  # noqa: F811
        services: tuple[str, str], tmp_path: Path) -> None:
    data = data_dir(worker_env)
    data.mkdir(parents=True, exist_ok=True)
    # The writer appends and fsyncs a queued record, then dies before the journal learns.
    _child(f"""
        import os
        from pathlib import Path
        from dss_console.engine.journal import Journal
        from dss_console.engine.ledger_records import claim_entry
        from dss_console.engine.ledger_writer import LedgerWriter

        class DiesAfterTheAppend(LedgerWriter):
            def _write(self, tail, lines):
                written = super()._write(tail, lines)
                if any(b'"j":"q:' in line for _seq, line in lines):
                    os._exit(17)
                return written

        journal = Journal(Path({str(data / 'journal.sqlite3')!r}))
        journal.create_job(source={sandbox.url!r}, ticket_id=434343, service_hash="h",
                           service_name="crashed", instance="crashed-node", workdir="/w",
                           ledger=[claim_entry({{}})])
        DiesAfterTheAppend(journal, {sandbox.url!r}, Path({str(data)!r})).start()
        os._exit(3)
    """)
    path = ledger_path(data, sandbox.url)
    before = assert_chained(path)
    assert [r["kind"] for r in before] == ["ledger", "claim"]
    journal = data / "journal.sqlite3"
    assert journal_head(journal, sandbox.url).seq == 1  # type: ignore[union-attr]
    worker = _idle_worker(worker_env, services[0], tmp_path)
    after = assert_chained(path)
    assert [r["kind"] for r in after] == ["ledger", "claim"]
    assert worker.saw("were not written again"), "\n".join(worker.lines)
    head = journal_head(journal, sandbox.url)
    assert head is not None and head.seq == 2
    assert verify_file(path, head).ok


def test_two_instances_share_one_chain(
        sandbox: Sandbox, worker_env: dict[str, str],  # noqa: F811
        services: tuple[str, str], tmp_path: Path) -> None:
    ok = services[0]
    tickets = [sandbox.add_ticket(ok) for _ in range(4)]
    common = ["--command", f"{ok}={command('slow-report', '2', '0.1')}", "--workdir",
              str(tmp_path / "work"), "--poll-interval", "0.2", "--exit-when-idle"]
    workers = [Worker(worker_env, *common, "--instance", name) for name in ("node-a", "node-b")]
    try:
        for worker in workers:
            assert worker.finish(timeout=180) == 0, "\n".join(worker.lines)
    finally:
        for worker in workers:
            worker.kill()
    found = assert_chained(ledger_path(data_dir(worker_env), sandbox.url))
    # One beginning (both writers started on an empty ledger), one claim and one end per
    # ticket, whichever engine ran it.
    assert [r["kind"] for r in found].count("ledger") == 1
    for ticket in tickets:
        assert job_kinds(found, ticket).count("claim") == 1
        assert job_kinds(found, ticket).count("end") == 1
    head = journal_head(data_dir(worker_env) / "journal.sqlite3", sandbox.url)
    assert head is not None and head.seq == len(found)


def test_migration_imports_each_journal_job_once(
        sandbox: Sandbox, worker_env: dict[str, str],  # noqa: F811
        services: tuple[str, str], tmp_path: Path) -> None:
    data = data_dir(worker_env)
    data.mkdir(parents=True, exist_ok=True)
    journal_file = data / "journal.sqlite3"
    journal = Journal(journal_file)
    for ticket, attempt_states in ((501, [JobState.FAILED, JobState.SUCCEEDED]),
                                   (502, [JobState.CANCELLED])):
        for state in attempt_states:
            job = journal.create_job(source=sandbox.url, ticket_id=ticket, service_hash="h",
                                     service_name="old", instance="old-node", workdir="/w")
            journal.transition(job, JobState.RUNNING)
            journal.transition(job, state, check=False)
    other = journal.create_job(source="https://elsewhere.example.org", ticket_id=1,
                               service_hash="h", service_name="x", instance="old-node",
                               workdir="/w")
    journal.close()
    # As a journal written before the ledger: no queue, no head.
    with sqlite3.connect(journal_file) as db:
        db.execute("DROP TABLE ledger_queue")
        db.execute("DROP TABLE ledger_head")
    for _start in range(2):
        _idle_worker(worker_env, services[0], tmp_path)
    found = assert_chained(ledger_path(data, sandbox.url))
    assert found[0]["kind"] == "ledger" and found[0]["data"]["imported"] == 2
    imported = [r for r in found if r["kind"] == "imported"]
    assert [(r["job"]["id"], r["data"]["state"], r["data"]["origin"]) for r in imported] == [
        (501, "succeeded", "journal"), (502, "cancelled", "journal")]
    assert len(found) == 3 and other  # the other source's job is not in this ledger
    verdict = verify_file(ledger_path(data, sandbox.url),
                          journal_head(journal_file, sandbox.url))
    assert verdict.ok and "imported" in verdict.text()


def test_an_unwritable_ledger_keeps_its_records_queued_and_jobs_go_on(
        sandbox: Sandbox, worker_env: dict[str, str],  # noqa: F811
        services: tuple[str, str], tmp_path: Path) -> None:
    ok = services[0]
    data = data_dir(worker_env)
    path = ledger_path(data, sandbox.url)
    path.mkdir(parents=True)  # a folder where the file should be: no write can succeed
    ticket = sandbox.add_ticket(ok)
    worker = _idle_worker(worker_env, ok, tmp_path)
    assert sandbox.admin.ticket_status(ticket) == "success"  # the job went on
    assert worker.saw("cannot write the ledger"), "\n".join(worker.lines)
    journal = Journal(data / "journal.sqlite3")
    try:
        queued = [r.body["kind"] for r in journal.queued_ledger(sandbox.url)]
    finally:
        journal.close()
    assert queued == ["claim", "inputs", "start", "upload", "delivered", "end"]
    path.rmdir()
    _idle_worker(worker_env, ok, tmp_path)  # written at the next start
    found = assert_chained(path)
    assert job_kinds(found, ticket) == queued


def test_a_window_reads_the_ledger_over_the_channel(
        sandbox: Sandbox, worker_env: dict[str, str],  # noqa: F811
        services: tuple[str, str], tmp_path: Path) -> None:
    from dss_console.core.history import ServiceHistory
    from dss_console.engine.remote import RemoteEngine, find_engine

    ok, bad = services
    tickets = [sandbox.add_ticket(ok), sandbox.add_ticket(bad)]
    worker = Worker(worker_env, "--command", f"{ok}={command('success')}",
                    "--command", f"{bad}={command('fail')}", "--workdir",
                    str(tmp_path / "work"), "--poll-interval", "0.2", "--instance", "ci-led")
    try:
        paths = wait_for(lambda: find_engine(data_dir(worker_env), sandbox.url, "ci-led"), 60,
                         what="the worker's channel")
        remote = RemoteEngine(paths)
        try:
            def ended() -> bool:
                page = remote.ledger_page(limit=50)
                return sum(r["kind"] == "end" for r in page) == 2
            wait_for(ended, 90, what="both jobs' ends in the ledger")
            page = remote.ledger_page(limit=3)
            assert [r["seq"] for r in page] == sorted((r["seq"] for r in page), reverse=True)
            older = remote.ledger_page(before=page[-1]["seq"], limit=1)
            assert older[0]["seq"] == page[-1]["seq"] - 1
            job = next(r for r in remote.ledger_page(limit=50) if r["kind"] == "claim"
                       and r["job"]["id"] == tickets[0])["job"]["local"]
            assert {r["kind"] for r in remote.ledger_page(job=job)} >= {"claim", "end"}
            verdict = remote.ledger_verify()
            assert verdict.ok and "chain intact" in verdict.text()
            stats = remote.ledger_stats()
            assert all(isinstance(h, ServiceHistory) for h in stats.values())
            by_name = {name.split("-")[0]: h for name, h in stats.items()}
            assert sum(b.succeeded for b in by_name["LedgerOk"].hours) == 1
            assert sum(b.failed for b in by_name["LedgerFail"].days) == 1
            assert len(by_name["LedgerOk"].hours) == 24 and len(by_name["LedgerOk"].days) == 30
            assert by_name["LedgerOk"].median_run_s_day is not None
        finally:
            remote.close()
    finally:
        worker.proc.terminate()
        worker.finish(timeout=60)
