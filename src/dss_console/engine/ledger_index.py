"""A derived index beside a ledger (``<ledger>.index.sqlite3``), so the history chart, ``audit
stats`` and the audit view's pages need not scan a file of a million records.

It holds nothing the ledger does not: each job's end (service, time, succeeded or not, run
seconds) and each record's byte offset. Deleted, it is rebuilt from the file; one whose last
line no longer hashes as it noted (the file was replaced or cut) is rebuilt too. The writer
brings it up to date after each append (``catch_up``: the lines past the last it read).

A rebuild (``rebuild``, or a ``catch_up`` that finds the index stale or new) is one SQLite
transaction: a crash half-way leaves the index as it was (or none), never half of one, and
readers in other processes see the old one meanwhile (WAL). Inside it the secondary indexes
are dropped and made again after the rows are in (one sort instead of a b-tree insert per
row), with a page cache large enough to hold the index, given back afterwards.
"""

from __future__ import annotations

import contextlib
import json
import json.scanner
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from dss_console.core.history import Bar, ServiceHistory
from dss_console.engine.ledger import line_hash, parse_utc

SCHEMA = """
CREATE TABLE IF NOT EXISTS ends (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    service TEXT NOT NULL,
    ok INTEGER NOT NULL,
    run_s REAL
);
-- Covering: the figures of a month read the index alone, never the table.
CREATE INDEX IF NOT EXISTS ends_by_service ON ends(service, at, ok, run_s);
CREATE TABLE IF NOT EXISTS offsets (
    seq INTEGER PRIMARY KEY,
    byte_offset INTEGER NOT NULL,
    at REAL NOT NULL,
    job INTEGER,
    kind TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS offsets_by_job ON offsets(job, seq);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# Dropped at the start of a rebuild's transaction and made again at its end.
SECONDARY_INDEXES = (
    "CREATE INDEX IF NOT EXISTS ends_by_service ON ends(service, at, ok, run_s)",
    "CREATE INDEX IF NOT EXISTS offsets_by_job ON offsets(job, seq)",
)

HOURS = 24
DAYS = 30
_BATCH = 5000
# A rebuild's page cache (KiB): a million records make an index of about 64 MB; pages that do
# not fit are spilled to the WAL mid-transaction (uncommitted: still crash safe), only slower.
REBUILD_CACHE_KIB = 96 * 1024
# The C scanner behind json.loads, called without json.loads's per-call checks (encoding
# detection, the regular expressions around the value): a rebuild parses a million lines.
# (typeshed types its argument as a scanner: it is the decoder whose settings it copies.)
_scan_json: Callable[[str, int], tuple[Any, int]] = cast(
    Any, json.scanner.make_scanner)(json.JSONDecoder())
_JSON_SPACE = " \t\n\r"
_ENDING_KINDS = ("end", "refusal", "imported")  # a tuple: a kind may be unhashable JSON


def index_path(ledger: Path) -> Path:
    return ledger.with_name(ledger.name + ".index.sqlite3")


def end_of(record: dict[str, Any]) -> tuple[bool, float | None] | None:
    """(succeeded, run seconds) when the record ends a job (an ``end``, a ``refusal``, an
    imported job that had ended); None otherwise."""
    kind = record.get("kind")
    data = record.get("data") if isinstance(record.get("data"), dict) else {}
    assert isinstance(data, dict)
    if kind == "end":
        return data.get("outcome") == "completed", _seconds(data.get("run_s"))
    if kind == "refusal":
        return False, None
    if kind == "imported" and data.get("state") in ("succeeded", "failed", "cancelled"):
        return data.get("state") == "succeeded", _seconds(data.get("run_s"))
    return None


def _json_line(raw: bytes) -> Any:
    """``json.loads(raw)``, the same value or the same error, quicker on a plain UTF-8 line:
    anything else (a BOM, another encoding, space before the value) goes to json.loads."""
    try:
        text = raw.decode("utf-8")
        value, end = _scan_json(text, 0)
    except (ValueError, StopIteration):
        return json.loads(raw)
    if (end != len(text) - 1 or text[end] != "\n") and text[end:].strip(_JSON_SPACE):
        return json.loads(raw)  # more after the value: json.loads says what
    return value


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


class LedgerIndex:
    """The index of the ledger at ``ledger``. A reader opens one per use (cheap, and safe
    across the processes that share a data dir); the writer keeps one open (``keep_open``):
    closing the last connection of a WAL database checkpoints and syncs it, a cost per
    append it need not pay."""

    def __init__(self, ledger: Path, *, keep_open: bool = False, path: Path | None = None):
        self.ledger = Path(ledger)
        # ``path``: an index elsewhere (someone reading another user's ledger must not
        # write beside it: the owner's engine could no longer update a file it does not own).
        self.path = index_path(self.ledger) if path is None else Path(path)
        self.keep_open = keep_open
        self._open: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            if self._open is not None:
                self._open.close()
                self._open = None

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._open is not None and self.path.exists():
                yield self._open
                return
            self.close()
            fresh = not self.path.exists()
            db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None,
                                 check_same_thread=False)
            try:
                if fresh and os.name == "posix":
                    with contextlib.suppress(OSError):
                        os.chmod(self.path, 0o600)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(SCHEMA)
            except BaseException:
                db.close()
                raise
            if self.keep_open:
                self._open = db
                yield db
                return
            try:
                yield db
            finally:
                db.close()

    # -- following the file -------------------------------------------------------------
    def catch_up(self) -> int:
        """Index the lines past the last one indexed (rebuilding when the index no longer
        matches the file); returns how many records were added."""
        if not self.ledger.is_file():
            return 0
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                start = self._resume_offset(db)
                added = self._index_from(db, start)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return added

    def rebuild(self) -> int:
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                self._clear(db)
                added = self._index_from(db, 0)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return added

    def _resume_offset(self, db: sqlite3.Connection) -> int:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if "last_offset" not in meta:
            self._clear(db)
            return 0
        last_offset, last_hash = int(meta["last_offset"]), meta.get("last_hash", "")
        try:
            with open(self.ledger, "rb") as handle:
                handle.seek(last_offset)
                line = handle.readline()
        except OSError:
            line = b""
        if not line.endswith(b"\n") or line_hash(line) != last_hash:
            self._clear(db)  # the file is not the one indexed: start again
            return 0
        return last_offset + len(line)

    @staticmethod
    def _clear(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM ends")
        db.execute("DELETE FROM offsets")
        db.execute("DELETE FROM meta")

    def _index_from(self, db: sqlite3.Connection, start: int) -> int:
        """Index the lines from byte ``start`` on, in the caller's transaction. From 0 (the
        tables were just cleared): in bulk, the secondary indexes made once at the end."""
        if start != 0:
            return self._read_from(db, start)
        cache = int(db.execute("PRAGMA cache_size").fetchone()[0])
        db.execute("DROP INDEX IF EXISTS ends_by_service")
        db.execute("DROP INDEX IF EXISTS offsets_by_job")
        db.execute(f"PRAGMA cache_size=-{REBUILD_CACHE_KIB}")
        try:
            added = self._read_from(db, 0)
            for create in SECONDARY_INDEXES:
                db.execute(create)
        finally:
            db.execute(f"PRAGMA cache_size={cache}")
        return added

    def _read_from(self, db: sqlite3.Connection, start: int) -> int:
        ends: list[tuple[Any, ...]] = []
        offsets: list[tuple[Any, ...]] = []
        last_offset, last_line = -1, b""  # the last whole line read, a record or not
        added = 0
        with open(self.ledger, "rb") as handle:
            handle.seek(start)
            position = start
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break  # a line being written: the next catch-up reads it whole
                offset, position = position, position + len(raw)
                last_offset, last_line = offset, raw
                try:
                    record = _json_line(raw)
                    seq = int(record["seq"])
                    at_text = record["at"]
                    at = parse_utc(at_text if type(at_text) is str else str(at_text))
                except (ValueError, KeyError, TypeError):
                    continue  # not a record: verify says so; the index skips it
                job = record.get("job")
                kind = record.get("kind", "")
                offsets.append((seq, offset, at,
                                job.get("local") if isinstance(job, dict) and job else None,
                                kind if type(kind) is str else str(kind)))
                if kind in _ENDING_KINDS:
                    ended = end_of(record)
                    service = record.get("service")
                    if ended is not None and isinstance(service, dict) and service:
                        ends.append((seq, at, str(service.get("name") or service.get("key")),
                                     int(ended[0]), ended[1]))
                added += 1
                if len(offsets) >= _BATCH:
                    self._flush(db, ends, offsets)
        self._flush(db, ends, offsets)
        if last_offset >= 0:
            db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?,?)",
                           [("last_offset", str(last_offset)), ("last_hash", line_hash(last_line))])
        return added

    @staticmethod
    def _flush(db: sqlite3.Connection, ends: list[tuple[Any, ...]],
               offsets: list[tuple[Any, ...]]) -> None:
        db.executemany("INSERT OR REPLACE INTO ends VALUES (?,?,?,?,?)", ends)
        db.executemany("INSERT OR REPLACE INTO offsets VALUES (?,?,?,?,?)", offsets)
        ends.clear()
        offsets.clear()

    # -- reading ------------------------------------------------------------------------
    def stats(self, now: float, days: int = DAYS) -> dict[str, ServiceHistory]:
        """Per service: jobs that ended per hour over the last day and per day over the last
        ``days`` days (succeeded, failed), and the median run seconds of each window. Counted
        and sorted in SQL: a month of a busy service is thousands of rows."""
        self.catch_up()
        since, day_ago = now - days * 86400, now - 86400
        hours: dict[str, list[list[int]]] = {}
        day_bars: dict[str, list[list[int]]] = {}
        with self._db() as db:
            for service, age, ok, count in db.execute(
                    "SELECT service, CAST((? - at) / 86400 AS INTEGER) AS age, ok, COUNT(*) "
                    "FROM ends WHERE at >= ? AND at < ? GROUP BY service, age, ok",
                    (now, since, now)):
                bars = day_bars.setdefault(service, [[0, 0] for _ in range(days)])
                if 0 <= age < days:
                    bars[days - 1 - age][0 if ok else 1] += count
            for service, age, ok, count in db.execute(
                    "SELECT service, CAST((? - at) / 3600 AS INTEGER) AS age, ok, COUNT(*) "
                    "FROM ends WHERE at >= ? AND at < ? GROUP BY service, age, ok",
                    (now, day_ago, now)):
                bars = hours.setdefault(service, [[0, 0] for _ in range(HOURS)])
                if 0 <= age < HOURS:
                    bars[HOURS - 1 - age][0 if ok else 1] += count
            return {service: ServiceHistory(
                service=service,
                hours=tuple(Bar(a, b) for a, b in hours.get(
                    service, [[0, 0] for _ in range(HOURS)])),
                days=tuple(Bar(a, b) for a, b in bars),
                median_run_s_day=_median_in(db, service, day_ago, now),
                median_run_s_month=_median_in(db, service, since, now))
                for service, bars in day_bars.items()}

    def page(self, *, before: int | None = None, limit: int = 100,
             job: int | None = None) -> list[dict[str, Any]]:
        """Records newest first: those before seq ``before`` (all when None), of one local
        ``job`` when given, at most ``limit``."""
        self.catch_up()
        sql, args = "SELECT byte_offset FROM offsets WHERE 1=1", []
        if before is not None:
            sql += " AND seq < ?"
            args.append(before)
        if job is not None:
            sql += " AND job = ?"
            args.append(job)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(max(1, min(int(limit), 10_000)))
        with self._db() as db:
            offsets = [int(r[0]) for r in db.execute(sql, tuple(args))]
        records = []
        with open(self.ledger, "rb") as handle:
            for offset in offsets:
                handle.seek(offset)
                with contextlib.suppress(ValueError):
                    records.append(json.loads(handle.readline()))
        return records

    def count(self) -> int:
        self.catch_up()
        with self._db() as db:
            return int(db.execute("SELECT COUNT(*) FROM offsets").fetchone()[0])


def _median_in(db: sqlite3.Connection, service: str, since: float, until: float
               ) -> float | None:
    """The median run seconds of ``service``'s jobs that ended in [since, until)."""
    where = "FROM ends WHERE service=? AND at >= ? AND at < ? AND run_s IS NOT NULL"
    args = (service, since, until)
    count = int(db.execute(f"SELECT COUNT(*) {where}", args).fetchone()[0])
    if not count:
        return None
    middle = [float(r[0]) for r in db.execute(
        f"SELECT run_s {where} ORDER BY run_s LIMIT ? OFFSET ?",
        (*args, 2 - count % 2, (count - 1) // 2))]
    return sum(middle) / len(middle)


def days_for(since_days: float | None) -> int:
    """The number of day bars ``--since DAYS`` asks for (default: a month)."""
    return DAYS if since_days is None else max(1, math.ceil(since_days))
