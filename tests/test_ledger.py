"""The ledger (issue 20, part 6) with real workers on the real DSS server: every step of a job
is one chained record, the writer survives crashes on either side of its append, two engines
share one chain, and nothing private reaches it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dss_console.engine.ledger import GENESIS, canonical, ledger_path, line_hash
from dss_console.engine.ledger_verify import journal_head, verify_file
from dss_console.sandbox import Sandbox
from test_worker_cli import Worker, worker_env  # noqa: F401  (a fixture)

from test_engine import TAGS, command


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
