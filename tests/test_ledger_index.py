"""The ledger's index rebuilt in bulk (one transaction, its secondary indexes dropped and made
again): a rebuild that dies half-way, in a real child process that ``os._exit``s or from an
error in this one, leaves the index it started from (or none), never half of one that
``catch_up`` would trust; a reader in another process sees the old index meanwhile."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import textwrap
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from dss_console.engine import ledger_index
from dss_console.engine.journal import Journal
from dss_console.engine.ledger import ledger_path, utc_text
from dss_console.engine.ledger_index import LedgerIndex, index_path
from dss_console.engine.ledger_writer import LedgerWriter

SOURCE = "https://dss.example.org"
NOW = 1_800_000_000.0
JOBS = 1500

# A rebuild in a child process: its page cache cut to 8 KiB (SQLite keeps 10 pages), so that
# the rows it inserts reach the WAL before it ends (a crash then leaves pages of a half index
# on disk), and a flush of every 200 records; after flush number ``after`` it prints the
# WAL's size, then exits at once (``exit``) or waits for a line on stdin (``pause``) and goes on.
CHILD = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from dss_console.engine import ledger_index

    ledger, mode, call, after = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    ledger_index.REBUILD_CACHE_KIB = 8
    ledger_index._BATCH = 200
    flush, flushes = ledger_index.LedgerIndex._flush, [0]

    def counted(db, ends, offsets):
        flush(db, ends, offsets)
        flushes[0] += 1
        if flushes[0] == after:
            wal = Path(str(ledger_index.index_path(ledger)) + "-wal")
            print(wal.stat().st_size if wal.exists() else 0, flush=True)
            if mode == "exit":
                os._exit(3)
            sys.stdin.readline()

    ledger_index.LedgerIndex._flush = staticmethod(counted)
    print("added", getattr(ledger_index.LedgerIndex(ledger), call)(), flush=True)
""")


def _bodies(jobs: int) -> list[dict[str, Any]]:
    rng = random.Random(7)
    bodies = []
    for job in range(1, jobs + 1):
        at = NOW - rng.uniform(0, 35 * 86400)
        service = rng.choice(["seg", "reg", "=odd"])
        base = {"source": SOURCE, "instance": "i1",
                "job": {"local": job, "id": 100 + job, "attempt": 1},
                "service": {"name": service, "key": f"h-{service}"}}
        ok = rng.random() < 0.8
        run_s = round(rng.uniform(1, 500), 3)
        bodies += [{**base, "kind": "claim", "at": utc_text(at), "data": {}},
                   {**base, "kind": "start", "at": utc_text(at + 1), "data": {}},
                   {**base, "kind": "end", "at": utc_text(at + 2 + run_s),
                    "data": {"outcome": "completed" if ok else "crashed", "run_s": run_s}}]
    bodies.sort(key=lambda b: str(b["at"]))
    return bodies


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    journal = Journal(tmp_path / "journal.sqlite3")
    LedgerWriter(journal, SOURCE, tmp_path).append_bodies(_bodies(JOBS))
    journal.close()
    return ledger_path(tmp_path, SOURCE)


def _append(path: Path, bodies: list[dict[str, Any]]) -> None:
    journal = Journal(path.parent.parent / "journal.sqlite3")
    LedgerWriter(journal, SOURCE, path.parent.parent).append_bodies(bodies)
    journal.close()


def _answers(path: Path, index_at: Path | None = None) -> tuple[Any, ...]:
    index = LedgerIndex(path, path=index_at)
    return (index.stats(NOW), index.count(), index.page(job=42), index.page(before=500, limit=7))


def _child(path: Path, mode: str, call: str, after: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(path), mode, call, str(after)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _secondary_indexes(path: Path) -> set[str]:
    with closing(sqlite3.connect(index_path(path))) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return {r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type='index' AND sql IS NOT NULL")}


def test_a_rebuild_killed_half_way_leaves_the_old_index(tmp_path: Path) -> None:
    bodies = _bodies(JOBS)
    path = ledger_path(tmp_path, SOURCE)
    _append(path, bodies[:1500])
    assert LedgerIndex(path).catch_up() == 1501  # with the ledger's first record
    _append(path, bodies[1500:])  # not yet indexed: the rebuild outgrows the old index
    lines = len(path.read_bytes().splitlines())
    expected = _answers(path, tmp_path / "elsewhere.sqlite3")
    assert expected[1] == lines and len(expected[2]) == 3 and expected[0]

    child = _child(path, "exit", "rebuild", 20)  # 4000 of 4501 records in
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 3, out
    assert int(out.split()[0]) > 20_000  # pages of the half index were in the WAL
    # The old index, whole and trusted: catch_up goes on from where it ended.
    assert _secondary_indexes(path) == {"ends_by_service", "offsets_by_job"}
    assert LedgerIndex(path).catch_up() == lines - 1501
    assert _answers(path) == expected


def test_a_first_build_killed_half_way_is_built_again(ledger: Path) -> None:
    lines = len(ledger.read_bytes().splitlines())
    LedgerIndex(ledger).catch_up()
    expected = _answers(ledger)
    for leftover in ledger.parent.glob(index_path(ledger).name + "*"):
        leftover.unlink()

    child = _child(ledger, "exit", "catch_up", 10)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 3, out
    assert index_path(ledger).exists()
    assert LedgerIndex(ledger).catch_up() == lines  # none was trusted: all indexed again
    assert _answers(ledger) == expected
    assert _secondary_indexes(ledger) == {"ends_by_service", "offsets_by_job"}


def test_an_error_mid_rebuild_rolls_back_and_the_kept_index_goes_on(
        ledger: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = LedgerIndex(ledger, keep_open=True)  # as the engine's writer keeps it
    index.catch_up()
    expected = _answers(ledger)
    flush, flushes = LedgerIndex._flush, [0]

    def failing(db: sqlite3.Connection, ends: list[Any], offsets: list[Any]) -> None:
        flush(db, ends, offsets)
        flushes[0] += 1
        if flushes[0] == 3:
            raise OSError("disk gone")

    monkeypatch.setattr(LedgerIndex, "_flush", staticmethod(failing))
    monkeypatch.setattr(ledger_index, "_BATCH", 200)
    with pytest.raises(OSError, match="disk gone"):
        index.rebuild()
    monkeypatch.undo()
    assert flushes[0] == 3
    assert index.catch_up() == 0  # its connection is out of the failed transaction
    assert _answers(ledger) == expected
    assert index.rebuild() == expected[1]
    assert _answers(ledger) == expected
    index.close()


def test_readers_in_another_process_see_the_old_index_during_a_rebuild(ledger: Path) -> None:
    LedgerIndex(ledger).catch_up()
    before = _answers(ledger)
    _append(ledger, _bodies(5)[:4])  # past the index: the rebuild adds them
    lines = len(ledger.read_bytes().splitlines())

    child = _child(ledger, "pause", "rebuild", 10)
    assert child.stdout is not None and child.stdin is not None
    int(child.stdout.readline())  # paused mid-rebuild, its write lock held
    with closing(sqlite3.connect(index_path(ledger))) as db:  # a reader: the old index, whole
        assert db.execute("SELECT COUNT(*) FROM offsets").fetchone()[0] == before[1]
        plan = " ".join(r[-1] for r in db.execute(
            "EXPLAIN QUERY PLAN SELECT seq FROM offsets WHERE job = 42"))
        assert "offsets_by_job" in plan
    answers: list[tuple[Any, ...]] = []
    reader = threading.Thread(target=lambda: answers.append(_answers(ledger)))
    reader.start()  # waits for the rebuild's lock (catch_up), then answers from its index
    child.stdin.write("go\n")
    child.stdin.flush()
    out, _ = child.communicate(timeout=60)
    reader.join(timeout=60)
    assert child.returncode == 0 and out.split() == ["added", str(lines)]
    assert answers and answers[0][1] == lines == before[1] + 4
    assert answers[0] == _answers(ledger)


@pytest.mark.parametrize("line", [
    b'{"seq":1,"at":"2026-12-07T15:03:27.123Z"}\n', b' {"seq":1}\n', b'{"seq":1} \t\r\n',
    b'\xef\xbb\xbf{"seq":1}\n', '{"seq":1}\n'.encode("utf-16"), '{"seq":1}'.encode("utf-32-le"),
    b'{"seq":1} x\n', b'{"seq":1}x', b'{"seq":1}', b'{"seq":1}{"seq":2}\n', b'1\n', b'\n', b'',
    b'{"seq":\xff}\n', b'{"a":NaN}\n', b'{"a":"\\ud800"}\n', b'{"a":"x\x01"}\n',
    b'{"a":1,"a":2}\n', b'"\x00"', b'1\x00\x00\x00', b'[' * 100_000 + b'\n'])
def test_a_line_is_read_as_json_loads_reads_it(line: bytes) -> None:
    """The rebuild's quicker reading of a line: json.loads's value, or its error."""
    def outcome(read: Any) -> Any:
        try:
            return "value", read(line)
        except (ValueError, RecursionError) as error:
            return "error", type(error)

    assert outcome(ledger_index._json_line) == outcome(json.loads)
