"""The ledger (issue 20, part 6): an append-only, hash-chained record of every step of every
job, one JSON-lines file per source key, that nobody can quietly edit.

What is recorded is decided where the step happens, as a :class:`LedgerEntry`; it is queued in
the journal *in the same transaction* as the state change it records
(``Journal.transition(..., ledger=[...])``, ``Journal.create_job(..., ledger=[...])``,
``Journal.queue_ledger``), so a record never names a step the journal did not take, and a
step the journal took is never left out: the :class:`~dss_console.engine.ledger_writer.
LedgerWriter` appends queued rows to the file later (after a crash: at the next start).

This module holds the record's shape and its canonical bytes, the journal tables the queue
lives in, and where the file is. Nothing here names a source or a kind the writer must know:
a new kind of record is a new ``kind`` string and its ``data``.

**Never in a record**: argument values, file contents, local paths, file names, host names,
tokens. Inputs and results are named by their SHA-256 and size only.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeAlias

from dss_console.engine.workdirs import server_slug

# A value a record may carry: JSON, nothing else.
LedgerValue: TypeAlias = ("str | int | float | bool | Sequence[LedgerValue] | "
                          "Mapping[str, LedgerValue] | None")

FORMAT_VERSION = 1
GENESIS = "0" * 64  # `prev` of the first record
LEDGER_DIR = "ledger"


@dataclass(frozen=True)
class LedgerEntry:
    """One step to record. The journal fills in the rest of the record from the job it is
    queued with (source, instance, ``job``: local id, ticket/run id, attempt; ``service``: name
    and key) and the time of the transaction; the writer adds ``v``, ``seq``, ``prev`` and
    ``j``.

    ``kind``: what happened (``claim``, ``refusal``, ``inputs``, ``start``, ``end``, ``upload``,
    ``delivered``, ``awaiting``, ``decision``, ``rule``, ...): any string; the writer does not
    look at it. ``data``: that step's facts (JSON values; never argument values, paths or
    names). ``by``: who decided (``{"user": ..., "via": "window|cli|rule|timeout", "rule":
    ...}``). ``requester``: who asked (``{"key", "user", "org"}``). ``job``: the local job id
    of an entry queued without a transition (``Journal.queue_ledger``); ignored where the
    journal knows the job (``transition``, ``create_job``). ``service``: for an entry bound to
    no job (``{"name": ..., "key": ...}``, e.g. a rule).
    """

    kind: str
    data: Mapping[str, LedgerValue] = field(default_factory=dict)
    by: Mapping[str, LedgerValue] | None = None
    requester: Mapping[str, LedgerValue] | None = None
    job: int | None = None
    service: Mapping[str, LedgerValue] | None = None


@dataclass(frozen=True)
class LedgerHead:
    """The last record the journal knows was written to a source's ledger: its number, the
    SHA-256 of its line, and the file's size after it."""

    seq: int
    hash: str
    size: int


@dataclass(frozen=True)
class QueuedRecord:
    """A row of the journal's ``ledger_queue``: a record's body, not yet in the file."""

    id: int
    source: str
    at: float
    body: dict[str, Any]


# The journal's tables for the ledger (created with the journal's schema; a journal written
# before them gains them at its next open).
LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    at REAL NOT NULL,
    entry TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_queue_by_source ON ledger_queue(source, id);
CREATE TABLE IF NOT EXISTS ledger_head (
    source TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    size INTEGER NOT NULL
);
"""


# -- the record's bytes -------------------------------------------------------------------
def canonical(record: Mapping[str, Any]) -> bytes:
    """A record's line (without the newline): sorted keys, no spaces, UTF-8."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False).encode("utf-8")


def line_hash(line: bytes) -> str:
    """The SHA-256 the next record's ``prev`` carries: of the line's bytes, newline excluded."""
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def utc_text(at: float) -> str:
    """``2026-12-07T15:03:27.123Z``."""
    moment = datetime.fromtimestamp(at, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


_EPOCH = datetime(1970, 1, 1)


def parse_utc(text: str) -> float:
    """The time a record's ``at`` names (fromisoformat: C, ten times strptime's speed), read
    as UTC whatever offset it carries. The difference from a naive epoch is the float that
    ``.replace(tzinfo=utc).timestamp()`` gives, at a third of its cost (an index rebuild reads
    a million)."""
    if not text.endswith("Z") or "T" not in text:
        raise ValueError(f"not a ledger time: {text!r}")
    moment = datetime.fromisoformat(text[:-1])
    if moment.tzinfo is not None:
        moment = moment.replace(tzinfo=None)
    return (moment - _EPOCH).total_seconds()


def queue_marker(row_id: int) -> str:
    """The ``j`` of a record written from the journal's queue row ``row_id``: after a crash
    between the append and the row's delete, the row is known written and dropped."""
    return f"q:{row_id}"


def marker_row(record: Mapping[str, Any]) -> int | None:
    marker = record.get("j")
    if isinstance(marker, str) and marker.startswith("q:"):
        try:
            return int(marker[2:])
        except ValueError:
            return None
    return None


# -- where ------------------------------------------------------------------------------
def ledger_dir(data_dir: Path) -> Path:
    return Path(data_dir) / LEDGER_DIR


def ledger_path(data_dir: Path, source_key: str) -> Path:
    """``<data dir>/ledger/<slug>-<hash8>.jsonl``: the slug says which server (without the
    key's fragment), the hash keeps two source keys of one server apart."""
    digest = hashlib.sha256(source_key.encode("utf-8")).hexdigest()[:8]
    return ledger_dir(data_dir) / f"{server_slug(source_key)}-{digest}.jsonl"


def make_ledger_dir(data_dir: Path) -> Path:
    folder = ledger_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.name == "posix":
        os.chmod(folder, 0o700)
    return folder


# -- the queue (called by the journal inside its transactions) ----------------------------
def queue_entries(db: sqlite3.Connection, entries: Sequence[LedgerEntry], *,
                  job: Mapping[str, Any] | None, source: str | None = None,
                  instance: str | None = None, at: float | None = None) -> int:
    """Insert ``entries`` into ``ledger_queue`` in the caller's transaction. ``job``: the job
    row they record (its columns ``id, source, instance, ticket_id, attempt, service_name,
    service_hash``); an entry's own ``job`` is read from ``db`` when ``job`` is None. Returns
    how many were queued."""
    now = time.time() if at is None else at
    count = 0
    for entry in entries:
        row = job
        if row is None and entry.job is not None:
            found = db.execute("SELECT * FROM jobs WHERE id=?", (entry.job,)).fetchone()
            if found is None:
                raise KeyError(entry.job)
            row = dict(found)
        body = _body(entry, row, source, instance, now)
        db.execute("INSERT INTO ledger_queue (source, at, entry) VALUES (?,?,?)",
                   (body["source"], now, json.dumps(body, sort_keys=True)))
        count += 1
    return count


def _body(entry: LedgerEntry, job: Mapping[str, Any] | None, source: str | None,
          instance: str | None, at: float) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": entry.kind, "at": utc_text(at), "data": dict(entry.data)}
    if job is not None:
        body["source"] = job["source"]
        body["instance"] = job["instance"]
        body["job"] = {"local": int(job["id"]), "id": int(job["ticket_id"]),
                       "attempt": int(job["attempt"] or 1)}
        body["service"] = {"name": job["service_name"], "key": job["service_hash"]}
    else:
        if source is None:
            raise ValueError(f"a {entry.kind!r} ledger entry bound to no job needs a source")
        body["source"] = source
        if instance is not None:
            body["instance"] = instance
    if entry.service is not None:
        body["service"] = dict(entry.service)
    if entry.requester is not None:
        body["requester"] = dict(entry.requester)
    if entry.by is not None:
        body["by"] = dict(entry.by)
    # Fails here, in the step's transaction, rather than in the writer: a value that is not
    # JSON is the recorder's mistake.
    canonical(body)
    return body


def queued_rows(db: sqlite3.Connection, source: str, limit: int = 500) -> list[QueuedRecord]:
    rows = db.execute("SELECT id, source, at, entry FROM ledger_queue WHERE source=? "
                      "ORDER BY id LIMIT ?", (source, limit)).fetchall()
    return [QueuedRecord(int(r[0]), r[1], float(r[2]), json.loads(r[3])) for r in rows]


def read_head(db: sqlite3.Connection, source: str) -> LedgerHead | None:
    row = db.execute("SELECT seq, hash, size FROM ledger_head WHERE source=?",
                     (source,)).fetchone()
    return LedgerHead(int(row[0]), str(row[1]), int(row[2])) if row is not None else None


def note_written(db: sqlite3.Connection, source: str, row_ids: Sequence[int],
                 head: LedgerHead) -> None:
    """In the caller's transaction: the rows are in the file, which now ends at ``head``."""
    if row_ids:
        db.execute(f"DELETE FROM ledger_queue WHERE id IN ({','.join('?' * len(row_ids))})",
                   tuple(row_ids))
    db.execute("INSERT INTO ledger_head (source, seq, hash, size) VALUES (?,?,?,?) "
               "ON CONFLICT(source) DO UPDATE SET seq=excluded.seq, hash=excluded.hash, "
               "size=excluded.size", (source, head.seq, head.hash, head.size))
