"""Ledger benchmark (issue 20, part 6/7): the real writer, the real file format.

    .venv/bin/python benchmarks/ledger.py [--appends 1000] [--verify-records 200000]
                                          [--stats-records 1000000] [--dir DIR]

(a) append    one record queued in the journal, then one writer round: read the queue,
              append, fsync, delete the row and note the head in one journal transaction,
              bring the index up to date. p50/p95 in ms (target: p95 <= 5 ms). Also the
              append + fsync alone.
(b) verify    ``audit verify``'s check of a ledger of N records (target: 1 M <= 10 s).
(c) stats     ``audit stats`` from the index at N records (target: <= 0.2 s at 1 M), and the
              index's rebuild from the file (target: <= 10 s per million).

Measured (2 cores shared with other test runs, load 2-4, 2026-12-07): (a) round p50 0.54 ms,
p95 0.85 ms (append + fdatasync alone 0.22 / 0.42 ms); under heavy I/O from other runs 3.4 /
7.6 ms. (b) 195k records (110 MB) in 1.44 s, 7.4 s per million (2.2-5 s under load).
(c) 975k records, 125k ends in the month: stats 160-170 ms median, worst 290 ms; rebuild
11.5-14 s per million (64 MB index). Since the rebuild drops and remakes the two secondary
indexes inside its transaction, with a larger page cache, and reads lines with json's C
scanner straight (2026-12-07, load 1.3-2): rebuild 7.4-7.9 s per million at 975k (61 MB;
the old code 10.3-10.9 s alternated with it), stats 147 ms median; at load 4.5-5 (half a
core each) 11.1 s per million at 244k, 13.7 at 975k (CPU time still 8.1-8.4 s per million).
Of the 7.4 s: about 5.7 s Python (json ~4.5, the rest parse_utc and the loop), 1.2 s the
inserts, 0.3 s the two index builds, 0.2 s the commit.

Records are synthetic jobs of seven steps (claim with v6-like details, inputs, start,
upload, delivered, end), spread over 40 days, written through ``LedgerWriter``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from dss_console.engine.journal import Journal
from dss_console.engine.ledger import LedgerEntry, ledger_path, utc_text
from dss_console.engine.ledger_index import LedgerIndex, index_path
from dss_console.engine.ledger_sign import Ed25519PrivateKey, public_text, signer
from dss_console.engine.ledger_verify import verify_file
from dss_console.engine.ledger_writer import LedgerWriter

SOURCE = "https://v6.example.org/api#node-3"
SERVICES = [f"harbor2.example.org/algorithms/service-{i}:1.{i}" for i in range(8)]


def _sha(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


def job_bodies(job: int, at: float, rng: random.Random) -> list[dict[str, Any]]:
    service = rng.choice(SERVICES)
    base = {"source": SOURCE, "instance": "node1",
            "job": {"local": job, "id": 100000 + job, "attempt": 1},
            "service": {"name": service.rsplit("/", 1)[-1], "key": service}}
    details = {"task_id": 5000 + job, "task_name": "mean age per site", "job_id": 5000 + job,
               "collaboration_id": 3, "init_org_id": 2, "init_org": "research",
               "init_user_id": 7, "init_user": "alice", "databases": ["default"],
               "input_sha256": _sha(rng),
               "input_summary": {"method": "central_mean", "kwargs": ["column"], "args": 0,
                                 "bytes": 61}}
    run_s = round(rng.lognormvariate(3, 1), 3)
    ok = rng.random() < 0.85
    steps: list[tuple[str, dict[str, Any], float]] = [
        ("claim", {"details": details}, 0.0),
        ("inputs", {"files": [{"sha256": _sha(rng), "size": 61}], "count": 1, "bytes": 61,
                    "sha256": _sha(rng), "details": details}, 0.2),
        ("start", {"executor": "local", "attempt": 1, "following": False}, 0.3)]
    if ok:
        steps += [("upload", {"files": [{"sha256": _sha(rng), "size": 812, "role": "result"}],
                              "count": 1, "bytes": 812, "sha256": _sha(rng)}, 0.3 + run_s),
                  ("delivered", {"outcome": "completed", "state": "delivered"}, 0.5 + run_s),
                  ("end", {"outcome": "completed", "state": "succeeded", "exit_code": 0,
                           "run_s": run_s, "reason": None}, 0.6 + run_s)]
    else:
        steps += [("end", {"outcome": "crashed", "state": "failed", "exit_code": 1,
                           "run_s": run_s, "reason": "the algorithm crashed"}, 0.3 + run_s),
                  ("delivered", {"outcome": "crashed", "state": "delivered"}, 0.5 + run_s)]
    return [{**base, "kind": kind, "at": utc_text(at + offset), "data": data}
            for kind, data, offset in steps]


def fill(writer: LedgerWriter, records: int, now: float, seed: int = 6) -> int:
    """Append about ``records`` synthetic records (whole jobs), oldest first."""
    rng = random.Random(seed)
    jobs = max(1, records // 6)
    starts = sorted(now - rng.uniform(0, 40 * 86400) for _ in range(jobs))
    written, batch = 0, []
    for job, at in enumerate(starts, start=1):
        batch += job_bodies(job, at, rng)
        if len(batch) >= 10000 or job == jobs:
            batch.sort(key=lambda b: str(b["at"]))
            written += writer.append_bodies(batch)
            batch = []
        if written >= records:
            break
    return written


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def bench_append(folder: Path, count: int, sign: bool = False) -> None:
    journal = Journal(folder / "journal.sqlite3")
    # As the engine does: the writer's index stays open.
    index = LedgerIndex(ledger_path(folder, SOURCE), keep_open=True)
    key = Ed25519PrivateKey.generate() if sign else None  # the keyring's, in the engine
    writer = LedgerWriter(journal, SOURCE, folder,
                          on_appended=lambda _path, _lines: index.catch_up() and None,
                          signer=signer(key) if key else None,
                          signing=public_text(key) if key else None)
    writer.drain()
    job = journal.create_job(source=SOURCE, ticket_id=1, service_hash=SERVICES[0],
                             service_name="service-0", instance="node1", workdir="/w")
    rng = random.Random(1)
    details = job_bodies(1, time.time(), rng)[0]["data"]
    rounds, writes = [], []
    original = writer._write

    def timed_write(tail: Any, lines: Any) -> Any:
        began = time.perf_counter()
        try:
            return original(tail, lines)
        finally:
            writes.append((time.perf_counter() - began) * 1000)

    writer._write = timed_write  # type: ignore[method-assign]
    for _ in range(count):
        journal.queue_ledger([LedgerEntry("claim", details, job=job)])
        began = time.perf_counter()
        writer.drain()
        rounds.append((time.perf_counter() - began) * 1000)
    size = ledger_path(folder, SOURCE).stat().st_size
    print(f"(a) append{', signed' if sign else ''}, {count} records "
          f"(~{size // max(1, count + 1)} bytes a line):")
    print(f"    writer round (queue -> append+fsync -> journal note -> index): "
          f"p50 {statistics.median(rounds):.2f} ms, p95 {percentile(rounds, 0.95):.2f} ms")
    print(f"    append + fsync alone: p50 {statistics.median(writes):.2f} ms, "
          f"p95 {percentile(writes, 0.95):.2f} ms")
    index.close()
    journal.close()


def bench_verify(folder: Path, records: int) -> None:
    journal = Journal(folder / "journal.sqlite3")
    writer = LedgerWriter(journal, SOURCE, folder)
    began = time.perf_counter()
    written = fill(writer, records, time.time())
    made = time.perf_counter() - began
    path = ledger_path(folder, SOURCE)
    began = time.perf_counter()
    verdict = verify_file(path, journal.ledger_head(SOURCE))
    took = time.perf_counter() - began
    assert verdict.ok, verdict.text()
    print(f"(b) verify: {written:,} records ({path.stat().st_size / 1e6:.0f} MB, written in "
          f"{made:.1f} s): {took:.2f} s ({took / written * 1e6:.2f} s per million)")
    journal.close()


def bench_stats(folder: Path, records: int) -> None:
    journal = Journal(folder / "journal.sqlite3")
    writer = LedgerWriter(journal, SOURCE, folder)
    now = time.time()
    written = fill(writer, records, now)
    path = ledger_path(folder, SOURCE)
    index = LedgerIndex(path)
    began = time.perf_counter()
    index.rebuild()
    rebuilt = time.perf_counter() - began
    times = []
    for _ in range(5):
        began = time.perf_counter()
        figures = LedgerIndex(path).stats(now)
        times.append(time.perf_counter() - began)
    ended = sum(b.succeeded + b.failed for h in figures.values() for b in h.days)
    print(f"(c) stats at {written:,} records ({len(figures)} services, {ended:,} ends in the "
          f"month): median {statistics.median(times) * 1000:.0f} ms, worst "
          f"{max(times) * 1000:.0f} ms; index rebuild {rebuilt:.1f} s "
          f"({rebuilt / written * 1e6:.1f} s per million, "
          f"{index_path(path).stat().st_size / 1e6:.0f} MB)")
    journal.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--appends", type=int, default=1000)
    parser.add_argument("--verify-records", type=int, default=200_000)
    parser.add_argument("--stats-records", type=int, default=1_000_000)
    parser.add_argument("--sign", action="store_true",
                        help="append with Ed25519 signatures (a generated key)")
    parser.add_argument("--dir", type=Path, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ledger-bench-", dir=args.dir))
    try:
        for name, bench, size in (("append", bench_append, args.appends),
                                  ("verify", bench_verify, args.verify_records),
                                  ("stats", bench_stats, args.stats_records)):
            if size > 0:
                folder = root / name
                folder.mkdir()
                if bench is bench_append:
                    bench_append(folder, size, args.sign)
                else:
                    bench(folder, size)
                shutil.rmtree(folder)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
