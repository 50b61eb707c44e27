"""`dss-console audit verify` on a ledger the real writer wrote: intact, then a changed byte,
a deleted line and two swapped lines at its first, a middle and its last record (exit 1,
the record named); path, export and stats on the same ledger."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dss_console.engine.engine import journal_path
from dss_console.engine.journal import Journal
from dss_console.engine.ledger import LedgerEntry, ledger_path
from dss_console.engine.ledger_verify import verify_file
from dss_console.engine.ledger_writer import LedgerWriter
from dss_console.engine.states import JobState

EXE = Path(sys.executable).with_name("dss-console")
SOURCE = "https://dss.example.org"


def audit(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DSS_CONSOLE_KEYRING="off")
    return subprocess.run([str(EXE), "audit", *args, "--data-dir", str(data)], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A data dir whose ledger holds two jobs' steps, written by the real writer."""
    data = tmp_path_factory.mktemp("ledger-data")
    journal = Journal(journal_path(data))
    writer = LedgerWriter(journal, SOURCE, data)
    writer.start()
    for ticket, end in ((7, JobState.SUCCEEDED), (8, JobState.FAILED)):
        job = journal.create_job(source=SOURCE, ticket_id=ticket, service_hash="h1",
                                 service_name="=seg", instance="i1", workdir="/w",
                                 ledger=[LedgerEntry("claim")])
        journal.transition(job, JobState.DOWNLOADING)
        journal.transition(job, JobState.RUNNING)
        if end is JobState.SUCCEEDED:
            journal.transition(job, JobState.UPLOADING, exit_code=0, calls=[
                ("finish", {"outcome": "completed", "reason": "", "ticket": ticket})])
        journal.transition(job, end, exit_code=0 if end is JobState.SUCCEEDED else 2, calls=[
            ("finish", {"outcome": "crashed", "reason": "=exit 2", "ticket": ticket})]
            if end is JobState.FAILED else [])
    writer.stop()
    assert journal.queued_ledger(SOURCE) == []
    journal.close()
    return data, ledger_path(data, SOURCE)


def test_an_intact_ledger_verifies(ledger: tuple[Path, Path]) -> None:
    data, path = ledger
    done = audit(data, "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    count = len(path.read_bytes().splitlines())
    assert f"{count} records, chain intact" in done.stdout and "not signed" in done.stdout


def _kind_changed(line: bytes) -> bytes:
    at = line.index(b'"kind":"') + len(b'"kind":"')
    return line[:at] + line[at:at + 1].upper() + line[at + 1:]


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_verify_names_a_changed_byte_a_deleted_line_and_two_swapped_lines(
        ledger: tuple[Path, Path], where: str) -> None:
    data, path = ledger
    original = path.read_bytes()
    lines = original.splitlines()
    count = len(lines)
    index = {"first": 0, "middle": count // 2, "last": count - 1}[where]
    number = index + 1
    pair = index if where != "last" else index - 1  # the pair swapped: pair, pair + 1
    cases = {
        f"record {number} was changed": [
            _kind_changed(line) if i == index else line for i, line in enumerate(lines)],
        f"record {number} was removed": [line for i, line in enumerate(lines) if i != index],
        f"records {pair + 1} and {pair + 2} are swapped": [
            lines[pair + 1] if i == pair else lines[pair] if i == pair + 1 else line
            for i, line in enumerate(lines)],
        f"line {number} is not a record": [
            line[:-3] if i == index else line for i, line in enumerate(lines)],
    }
    try:
        for verdict, tampered in cases.items():
            path.write_bytes(b"".join(line + b"\n" for line in tampered))
            done = audit(data, "verify")
            assert done.returncode == 1, (verdict, done.stdout, done.stderr)
            assert verdict in done.stdout, (verdict, done.stdout)
    finally:
        path.write_bytes(original)
    assert audit(data, "verify").returncode == 0


def test_a_copy_verifies_without_its_journal(ledger: tuple[Path, Path],
                                             tmp_path: Path) -> None:
    data, path = ledger
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(path.read_bytes())
    done = audit(data, "verify", "--file", str(copy))
    assert done.returncode == 0 and "without its journal" in done.stdout, done.stdout
    lines = copy.read_bytes().splitlines()
    copy.write_bytes(b"\n".join([lines[0], *lines[2:]]) + b"\n")
    done = audit(data, "verify", "--file", str(copy))
    assert done.returncode == 1 and "record 2 was removed" in done.stdout


def test_audit_path_export_and_stats(ledger: tuple[Path, Path]) -> None:
    data, path = ledger
    done = audit(data, "path")
    assert done.returncode == 0 and done.stdout.strip() == f"{SOURCE}\t{path}"
    assert audit(data, "path", "--server", SOURCE).stdout.strip() == str(path)
    exported = audit(data, "export", "--csv")
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout, newline="")))
    assert len(rows) == len(path.read_bytes().splitlines())
    assert [r["kind"] for r in rows][:3] == ["ledger", "claim", "start"]
    ends = [r for r in rows if r["kind"] == "end"]
    assert [(r["job_id"], r["outcome"], r["exit_code"]) for r in ends] == [
        ("7", "completed", "0"), ("8", "crashed", "2")]
    # Formula-safe: a service named "=seg", a reason "=exit 2".
    assert ends[1]["service"] == "'=seg" and ends[1]["reason"] == "'=exit 2"
    document = json.loads(audit(data, "export", "--json", "--since", "1").stdout)
    (only,) = document["ledgers"]
    assert only["ok"] is True and only["head"] and only["source"] == SOURCE
    assert len(only["records"]) == len(rows)
    stats = audit(data, "stats")
    assert stats.returncode == 0, stats.stderr
    line = next(x for x in stats.stdout.splitlines() if "=seg" in x)
    assert line.split()[:5] == ["=seg", "1", "1", "1", "1"], stats.stdout
    empty = audit(data, "stats", "--server", "https://other.example.org")
    assert empty.returncode == 1 and "no ledger" in empty.stderr


def _end(at: float, service: str, outcome: str, run_s: float, job: int) -> dict[str, object]:
    from dss_console.engine.ledger import utc_text

    return {"kind": "end", "at": utc_text(at), "source": SOURCE, "instance": "i1",
            "job": {"local": job, "id": job, "attempt": 1},
            "service": {"name": service, "key": service},
            "data": {"outcome": outcome, "run_s": run_s, "state": "x", "exit_code": 0,
                     "reason": None}}


def test_stats_match_a_full_scan_and_survive_a_deleted_index(tmp_path: Path) -> None:
    import random

    from dss_console.engine.ledger_index import LedgerIndex, index_path

    now = 1_800_000_000.0
    rng = random.Random(20)
    bodies = []
    for job in range(1, 2001):
        at = now - rng.uniform(0, 40 * 86400)  # some older than the month: left out
        service = rng.choice(["seg", "reg", "=odd"])
        outcome = rng.choice(["completed", "completed", "crashed", "failed"])
        bodies.append(_end(at, service, outcome, round(rng.uniform(1, 500), 3), job))
    bodies.sort(key=lambda b: str(b["at"]))
    journal = Journal(tmp_path / "journal.sqlite3")
    writer = LedgerWriter(journal, SOURCE, tmp_path,
                          on_appended=lambda path, _lines: LedgerIndex(path).catch_up())
    writer.append_bodies(bodies[:1500])
    writer.append_bodies(bodies[1500:])  # the index follows in steps
    path = ledger_path(tmp_path, SOURCE)
    stats = LedgerIndex(path).stats(now)

    # A full scan, by hand: hour bars for the last day, day bars for the last 30 days.
    expected: dict[str, dict[str, list[int]]] = {}
    runs: dict[str, list[float]] = {}
    for line in path.read_bytes().splitlines():
        record = json.loads(line)
        if record["kind"] != "end":
            continue
        from dss_console.engine.ledger import parse_utc

        age = now - parse_utc(record["at"])
        name, ok = record["service"]["name"], record["data"]["outcome"] == "completed"
        bars = expected.setdefault(name, {"hours": [0] * 48, "days": [0] * 60})
        if age < 30 * 86400:
            day = 29 - int(age // 86400)
            bars["days"][day * 2 + (0 if ok else 1)] += 1
            runs.setdefault(name, []).append(record["data"]["run_s"])
        if age < 86400:
            hour = 23 - int(age // 3600)
            bars["hours"][hour * 2 + (0 if ok else 1)] += 1
    assert set(stats) == set(expected) == {"seg", "reg", "=odd"}
    for name, history in stats.items():
        assert [v for b in history.hours for v in (b.succeeded, b.failed)] == \
            expected[name]["hours"]
        assert [v for b in history.days for v in (b.succeeded, b.failed)] == \
            expected[name]["days"]
        values = sorted(runs[name])
        middle = len(values) // 2
        median = values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2
        assert history.median_run_s_month == pytest.approx(median)
    # Deleted: rebuilt, same figures; a different file behind the same name: rebuilt too.
    index_path(path).unlink()
    assert LedgerIndex(path).stats(now) == stats
    lines = path.read_bytes().splitlines()
    path.write_bytes(b"\n".join(lines[:-1]) + b"\n")
    shorter = LedgerIndex(path).stats(now)
    assert shorter != stats and LedgerIndex(path).count() == len(lines) - 1
    journal.close()


def test_a_sources_own_day_counts_are_the_ledgers(tmp_path: Path) -> None:
    """A source that keeps no figures (vantage6): the services pane's 24 h counts per
    service hash come from the ledger's figures (keyed by name), the chart's numbers."""
    from dss_console.engine.ledger_index import LedgerIndex
    from dss_console.engine.scheduler import ServiceView
    from dss_console.engine.views import ledger_day_counts

    now = 1_800_000_000.0
    journal = Journal(tmp_path / "journal.sqlite3")
    writer = LedgerWriter(journal, SOURCE, tmp_path)
    writer.append_bodies([
        _end(now - 2 * 86400, "seg", "completed", 5.0, 1),  # older than a day: not counted
        _end(now - 7200, "seg", "crashed", 5.0, 2),
        _end(now - 60, "seg", "completed", 5.0, 3),
        _end(now - 30, "seg", "completed", 5.0, 4),
        _end(now - 20, "gone", "completed", 5.0, 5)])  # a service no longer listed
    stats = LedgerIndex(ledger_path(tmp_path, SOURCE)).stats(now, days=1)
    views = [ServiceView(service_hash=h, name=n, version="", command=None, auto=False,
                         running=0) for h, n in (("h-seg", "seg"), ("h-quiet", "quiet"))]
    assert ledger_day_counts(stats, views) == {"h-seg": (2, 1)}
    journal.close()


def test_an_interrupted_append_is_cut_and_the_chain_goes_on(tmp_path: Path) -> None:
    journal = Journal(journal_path(tmp_path))
    notices: list[str] = []
    writer = LedgerWriter(journal, SOURCE, tmp_path,
                          on_notice=lambda _level, text: notices.append(text))
    job = journal.create_job(source=SOURCE, ticket_id=1, service_hash="h", service_name="s",
                             instance="i", workdir="/w", ledger=[LedgerEntry("claim")])
    writer.drain()
    path = ledger_path(tmp_path, SOURCE)
    whole = path.read_bytes()
    # A crash mid-append in another engine: half a record, no newline.
    with open(path, "ab") as handle:
        handle.write(b'{"at":"2026-12-07T18:00:00.000Z","kind":"sta')
    journal.transition(job, JobState.RUNNING)
    writer.drain()
    lines = path.read_bytes().splitlines()
    assert path.read_bytes().startswith(whole)
    assert [json.loads(line)["kind"] for line in lines] == ["ledger", "claim", "start"]
    assert any("interrupted append" in text for text in notices)
    verdict = verify_file(path, journal.ledger_head(SOURCE))
    assert verdict.ok, verdict.text()
    journal.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the ledger another owner")
def test_stats_of_another_users_ledger_write_nothing_beside_it(
        ledger: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    from dss_console.engine.ledger_index import index_path

    data, _path = ledger
    theirs = tmp_path / "theirs"
    shutil.copytree(data, theirs, ignore=shutil.ignore_patterns("*.index.sqlite3*"))
    copied = ledger_path(theirs, SOURCE)
    os.chown(copied, 65534, 65534)
    done = audit(theirs, "stats")
    assert done.returncode == 0, done.stderr
    assert next(x for x in done.stdout.splitlines() if "=seg" in x).split()[:3] == [
        "=seg", "1", "1"]
    assert not index_path(copied).exists()
    assert not list(copied.parent.glob("*.index.sqlite3*"))


@pytest.mark.parametrize("where", ["second", "middle", "last"])
def test_a_changed_prev_names_its_own_record_not_the_one_before(
        ledger: tuple[Path, Path], where: str) -> None:
    """A byte changed in a record's own ``prev`` is that record's change: the record before
    it is intact (the verdict used to blame it)."""
    from dss_console.engine.ledger_verify import journal_head

    data, path = ledger
    original = path.read_bytes()
    lines = original.splitlines()
    index = {"second": 1, "middle": len(lines) // 2, "last": len(lines) - 1}[where]
    line = lines[index]
    at = line.index(b'"prev":"') + len(b'"prev":"')
    flipped = b"0" if line[at:at + 1] != b"0" else b"1"
    lines[index] = line[:at] + flipped + line[at + 1:]
    try:
        path.write_bytes(b"".join(item + b"\n" for item in lines))
        verdict = verify_file(path, journal_head(journal_path(data), SOURCE))
        assert not verdict.ok
        assert verdict.problem == f"record {index + 1} was changed", verdict.problem
        assert verdict.record == index + 1
    finally:
        path.write_bytes(original)


def test_a_half_written_last_line_is_an_unfinished_append_not_tampering(
        ledger: tuple[Path, Path]) -> None:
    """A crash mid-append leaves the start of a line without its newline; before the next
    start cuts it, verify says so and passes (the journal's head still vouches for every
    record written), but a last record cut short that the journal knows is a removal."""
    from dss_console.engine.ledger_verify import journal_head

    data, path = ledger
    original = path.read_bytes()
    head = journal_head(journal_path(data), SOURCE)
    try:
        path.write_bytes(original + b'{"at":"2026-12-07T1')
        verdict = verify_file(path, head)
        assert verdict.ok, verdict.problem
        assert any("unfinished append" in note for note in verdict.notes), verdict.notes
        lines = original.splitlines()
        path.write_bytes(b"".join(line + b"\n" for line in lines[:-1]) + lines[-1][:20])
        verdict = verify_file(path, head)
        assert not verdict.ok and verdict.problem == f"record {len(lines)} was removed"
    finally:
        path.write_bytes(original)


def test_lines_swapped_far_apart_or_moved_are_named_not_called_removed(
        ledger: tuple[Path, Path]) -> None:
    """Two records swapped across the file, or one moved to its end, lose nothing: the
    verdict says so, not that the records between them were removed."""
    from dss_console.engine.ledger_verify import journal_head

    data, path = ledger
    original = path.read_bytes()
    lines = original.splitlines()
    count = len(lines)
    head = journal_head(journal_path(data), SOURCE)
    first_last = list(lines)
    first_last[0], first_last[-1] = lines[-1], lines[0]
    second_fifth = list(lines)
    second_fifth[1], second_fifth[4] = lines[4], lines[1]
    moved = [line for i, line in enumerate(lines) if i != 1] + [lines[1]]
    cases = {f"records 1 and {count} are swapped": first_last,
             "records 2 and 5 are swapped": second_fifth,
             f"record 2 was moved to line {count}": moved}
    try:
        for words, tampered in cases.items():
            path.write_bytes(b"".join(line + b"\n" for line in tampered))
            verdict = verify_file(path, head)
            assert not verdict.ok and verdict.problem == words, (words, verdict.problem)
    finally:
        path.write_bytes(original)
