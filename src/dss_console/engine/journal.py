"""The journal: a SQLite file recording every job, each state transition (written before it
is acted on) and the outbox of server calls still owed. A restart reads it to learn where
each ticket stands.

Nothing secret is ever written here: no token, no cookie.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dss_console.core.executor import DetailValue, ExecutorDetails
from dss_console.core.interfaces import OutcomeKind
from dss_console.engine.events import JobSnapshot
from dss_console.engine.ledger import (
    LEDGER_SCHEMA,
    LedgerEntry,
    LedgerHead,
    QueuedRecord,
    note_written,
    queue_entries,
    queued_rows,
    read_head,
)
from dss_console.engine.ledger_records import json_dict, step_entries
from dss_console.engine.states import JobState, check_transition

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    ticket_id INTEGER NOT NULL,
    service_hash TEXT NOT NULL,
    service_name TEXT NOT NULL,
    instance TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    workdir TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    exit_code INTEGER,
    -- pid, pgid, proc_start and executor's cluster_job ... running_at: what the executor said
    -- before that went to `execution` (JSON); only read, by _migrate and read_jobs.
    pid INTEGER,
    pgid INTEGER,
    proc_start TEXT,
    inputs_ready INTEGER NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL DEFAULT 1,
    claimed_at REAL,
    started_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL,
    not_retryable TEXT,
    executor TEXT NOT NULL DEFAULT 'local',
    cluster_job TEXT,
    cluster_state TEXT,
    cluster_node TEXT,
    queued_at REAL,
    running_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_by_ticket ON jobs(source, ticket_id);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state);
-- The services pane's day counts read only the last day's jobs.
CREATE INDEX IF NOT EXISTS jobs_by_finish ON jobs(finished_at);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    at REAL NOT NULL,
    state TEXT NOT NULL,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at REAL NOT NULL,
    delivered_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_by_state ON outbox(state, job_id, id);
""" + LEDGER_SCHEMA
# Created after the columns it names exist (an old journal gains them in _migrate).
_WAITING_INDEX = "CREATE INDEX IF NOT EXISTS jobs_by_waiting ON jobs(state, waiting_since)"

# Columns added after the first release, with their declarations, in the order added.
_ADDED_COLUMNS = (
    ("not_retryable", "TEXT"),
    ("executor", "TEXT NOT NULL DEFAULT 'local'"),
    ("cluster_job", "TEXT"),
    ("cluster_state", "TEXT"),
    ("cluster_node", "TEXT"),
    ("queued_at", "REAL"),
    ("running_at", "REAL"),
    ("details", "TEXT"),
    ("execution", "TEXT"),  # ExecutorDetails as JSON; replaces pid ... running_at (kept readable)
    # The operator's gate (engine/gate.py): when the job began to wait for a decision, and
    # the decisions made, by gate (JSON: {gate: {verdict, user, via, rule, at, ...}}).
    ("waiting_since", "REAL"),
    ("decision", "TEXT"),
)

PENDING = "pending"
DELIVERED = "delivered"
SUPERSEDED = "superseded"
DROPPED = "dropped"
FAILED = "failed"
SKIPPED = "skipped"
# Calls a job made while its result waits for the operator's release: kept in order, never
# sent (the outbox reads only pending rows), turned pending by `release` or dropped by a
# rejection.
HELD = "held"


@dataclass(frozen=True)
class OutboxItem:
    id: int
    job_id: int
    kind: str  # progress | log | attach | upload | active | output | finish (the end call)
    payload: dict[str, Any]
    state: str
    attempts: int
    last_error: str | None
    created_at: float
    delivered_at: float | None

    @property
    def summary(self) -> str:
        p = self.payload
        if self.kind == "progress":
            return f"progress {p['value'] * 100:.0f}%"
        if self.kind == "log":
            return f"{p['level']}: {p['message']}"
        if self.kind == "attach":
            return f"attachment {p['description']!r} ({Path(p['path']).name})"
        if self.kind == "upload":
            return f"result file {p['name']}"
        if self.kind == "finish":
            # The server's word where the source gave it (DSS: "status failed"), else the
            # outcome (a vantage6 run: "run end: crashed").
            if p.get("status"):
                return f"status {p['status']}"
            return f"run end: {p.get('outcome', '?')}"
        if self.kind == "active":
            return "run active"
        if self.kind == "output":
            return "run log (output tail)"
        return self.kind


class Journal:
    """Thread-safe access to the journal file (one connection, one lock)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                                   timeout=30)
        self._db.row_factory = sqlite3.Row
        # Called after a transaction that queued ledger records committed (the writers wake).
        self._ledger_listeners: list[Callable[[], None]] = []
        self._initialise()

    def _initialise(self) -> None:
        # Two engines starting together on a new journal: switching to WAL and creating the
        # schema can meet SQLITE_BUSY without the busy handler being consulted; retry briefly.
        deadline = time.monotonic() + 30
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                # NORMAL survives a crash or SIGKILL of this process: what must be survived.
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(SCHEMA)
                self._migrate()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _migrate(self) -> None:
        """Columns added after a journal was first written."""
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(jobs)")}
        for name, declaration in _ADDED_COLUMNS:
            if name not in columns:
                with contextlib.suppress(sqlite3.OperationalError):  # another engine added it
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {declaration}")
        # A journal written before executors were plug-ins keeps what its executor said in
        # flat columns: carried into `execution` once, so a command still running (a cluster
        # job) is followed, and a leftover process group stopped, after the upgrade.
        with self._tx() as db:
            rows = db.execute(f"SELECT * FROM jobs WHERE execution IS NULL AND "
                              f"({_LEGACY_PRESENT})").fetchall()
            for row in rows:
                legacy = _legacy_execution(row)
                if legacy is not None:
                    db.execute("UPDATE jobs SET execution=? WHERE id=?",
                               (_execution_json(legacy), row["id"]))
        with contextlib.suppress(sqlite3.OperationalError):  # another engine made it
            self._db.execute(_WAITING_INDEX)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- jobs -------------------------------------------------------------------------------
    def create_job(self, *, source: str, ticket_id: int, service_hash: str, service_name: str,
                   instance: str, workdir: str, state: JobState = JobState.CLAIMED,
                   reason: str | None = None, details: dict[str, Any] | None = None,
                   ledger: Sequence[LedgerEntry] = (), **fields: Any) -> int:
        """A new job; ``ledger``: what to record of it (the claim, a refusal), queued in the
        same transaction. ``fields``: more job fields (as ``update_job``)."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO jobs (source, ticket_id, service_hash, service_name, instance, "
                "state, reason, workdir, claimed_at, updated_at, details) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (source, ticket_id, service_hash, service_name, instance, state.value, reason,
                 workdir, now, now, json.dumps(details) if details else None))
            job_id = int(cur.lastrowid or 0)
            db.execute("INSERT INTO transitions (job_id, at, state, reason) VALUES (?,?,?,?)",
                       (job_id, now, state.value, reason))
            if fields:
                self._update(db, job_id, fields)
            queued = self._queue_ledger(db, job_id, ledger, now)
        self._ledger_queued(queued)
        return job_id

    def transition(self, job_id: int, new: JobState, reason: str | None = None, *,
                   check: bool = True, calls: Sequence[tuple[str, dict[str, Any]]] = (),
                   drop_final: bool = False, hold: bool = False, drop_held: bool = False,
                   release_held: bool = False, ledger: Sequence[LedgerEntry] = (),
                   **fields: Any) -> list[OutboxItem]:
        """Record a state change (and job fields) durably before the caller acts on it.

        `calls` are queued in the outbox in the same transaction, so a crash can never leave
        a job decided but its server calls unqueued (or the other way round); so are the
        `ledger` entries recording the step (bound to this job, after the change).
        ``hold``: the calls are queued held (a result waiting for the operator's
        release); ``drop_held``: the job's held calls are dropped (a rejected release);
        ``release_held``: they become pending, in order, before ``calls`` (a rule released
        the result of a command whose reports were held).
        """
        now = time.time()
        items: list[OutboxItem] = []
        state_of_calls = HELD if hold else PENDING
        with self._tx() as db:
            if drop_held:
                db.execute("UPDATE outbox SET state=?, last_error=?, delivered_at=? WHERE "
                           "job_id=? AND state=?", (DROPPED, reason, now, job_id, HELD))
            if release_held:
                items += [replace(_item(r), state=PENDING) for r in db.execute(
                    "SELECT * FROM outbox WHERE job_id=? AND state=? ORDER BY id",
                    (job_id, HELD)).fetchall()]
                db.execute("UPDATE outbox SET state=? WHERE job_id=? AND state=?",
                           (PENDING, job_id, HELD))
            if drop_final:
                # A failure replaces a result phase still in flight (its uploads and success).
                for row in db.execute("SELECT id, payload FROM outbox WHERE job_id=? AND "
                                      "state=?", (job_id, PENDING)).fetchall():
                    if json.loads(row["payload"]).get("final"):
                        db.execute("UPDATE outbox SET state=?, last_error=?, delivered_at=? "
                                   "WHERE id=?", (DROPPED, reason, now, row["id"]))
            row = db.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                raise KeyError(job_id)
            old = JobState(row["state"])
            if check and old != new:
                check_transition(old, new)
            values = {"state": new.value, "reason": reason, "updated_at": now, **fields}
            if new is JobState.RUNNING and "started_at" not in fields:
                values["started_at"] = now
            if new.is_terminal and "finished_at" not in fields:
                values["finished_at"] = now
            self._update(db, job_id, values)
            db.execute("INSERT INTO transitions (job_id, at, state, reason) VALUES (?,?,?,?)",
                       (job_id, now, new.value, reason))
            for kind, payload in calls:
                cur = db.execute("INSERT INTO outbox (job_id, kind, payload, state, created_at) "
                                 "VALUES (?,?,?,?,?)", (job_id, kind, json.dumps(payload),
                                                        state_of_calls, now))
                items.append(OutboxItem(int(cur.lastrowid or 0), job_id, kind, payload,
                                        state_of_calls, 0, None, now, None))
            after = dict(db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone())
            steps = step_entries(db, job_id, old, new, after)  # start, end: whoever moved it
            queued = queue_entries(db, [*steps, *ledger], job=after, at=now)
        self._ledger_queued(queued)
        return [] if hold else items

    def release(self, job_id: int, new: JobState, reason: str | None = None, *,
                ledger: Sequence[LedgerEntry] = (), **fields: Any) -> list[OutboxItem]:
        """The operator released a held result: its held calls become pending, in the order
        they were made, and the job goes to ``new`` (UPLOADING), in one transaction."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                raise KeyError(job_id)
            check_transition(JobState(row["state"]), new)
            rows = db.execute("SELECT * FROM outbox WHERE job_id=? AND state=? ORDER BY id",
                              (job_id, HELD)).fetchall()
            db.execute("UPDATE outbox SET state=? WHERE job_id=? AND state=?",
                       (PENDING, job_id, HELD))
            self._update(db, job_id, {"state": new.value, "reason": reason, "updated_at": now,
                                      "waiting_since": None, **fields})
            db.execute("INSERT INTO transitions (job_id, at, state, reason) VALUES (?,?,?,?)",
                       (job_id, now, new.value, reason))
            queued = self._queue_ledger(db, job_id, ledger, now)
        self._ledger_queued(queued)
        return [replace(_item(r), state=PENDING) for r in rows]

    def held_items(self, job_id: int) -> list[OutboxItem]:
        """The calls a job's result waits to make (in order)."""
        return [_item(r) for r in self._query("SELECT * FROM outbox WHERE job_id=? AND "
                                              "state=? ORDER BY id", (job_id, HELD))]

    # -- the ledger's queue (engine/ledger.py) -------------------------------------------------
    def queue_ledger(self, entries: Sequence[LedgerEntry], *, source: str | None = None,
                     instance: str | None = None) -> None:
        """Queue records of steps that change no job state (an entry's ``job`` names its job;
        one bound to no job needs ``source``), in one transaction."""
        if not entries:
            return
        with self._tx() as db:
            queued = queue_entries(db, entries, job=None, source=source, instance=instance)
        self._ledger_queued(queued)

    def on_ledger_queued(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (cheap, non-blocking: it wakes a writer) after each commit that
        queued ledger records."""
        with self._lock:
            self._ledger_listeners.append(listener)

    def remove_ledger_listener(self, listener: Callable[[], None]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._ledger_listeners.remove(listener)

    def queued_ledger(self, source: str, limit: int = 500) -> list[QueuedRecord]:
        """The oldest records queued for ``source``'s ledger, in the order they are written."""
        with self._lock:
            return queued_rows(self._db, source, limit)

    def queued_ledger_count(self, source: str) -> int:
        return int(self._query("SELECT COUNT(*) AS n FROM ledger_queue WHERE source=?",
                               (source,))[0]["n"])

    def ledger_head(self, source: str) -> LedgerHead | None:
        with self._lock:
            return read_head(self._db, source)

    def ledger_written(self, source: str, row_ids: Sequence[int], head: LedgerHead) -> None:
        """The rows are in the ledger file, which now ends at ``head``: one transaction."""
        with self._tx() as db:
            note_written(db, source, row_ids, head)

    def _queue_ledger(self, db: sqlite3.Connection, job_id: int,
                      entries: Sequence[LedgerEntry], now: float) -> int:
        if not entries:
            return 0
        row = db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return queue_entries(db, entries, job=dict(row), at=now)

    def _ledger_queued(self, count: int) -> None:
        if not count:
            return
        with self._lock:
            listeners = list(self._ledger_listeners)
        for listener in listeners:
            listener()

    def update_job(self, job_id: int, *, ledger: Sequence[LedgerEntry] = (),
                   **fields: Any) -> None:
        """Job fields; ``ledger``: records of the step they note (the inputs), queued in the
        same transaction."""
        now = fields["updated_at"] = time.time()
        with self._tx() as db:
            self._update(db, job_id, fields)
            queued = self._queue_ledger(db, job_id, ledger, now)
        self._ledger_queued(queued)

    @staticmethod
    def _update(db: sqlite3.Connection, job_id: int, fields: dict[str, Any]) -> None:
        allowed = {"state", "reason", "progress", "exit_code", "inputs_ready", "attempt",
                   "started_at", "finished_at", "updated_at", "workdir", "not_retryable",
                   "executor", "details", "execution", "waiting_since", "decision",
                   _FORGET, _REPLACE}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown job fields {sorted(unknown)}")
        for name in ("details", "decision"):
            if isinstance(fields.get(name), dict):
                fields[name] = json.dumps(fields[name])
        forget = bool(fields.pop(_FORGET, False))
        replace = bool(fields.pop(_REPLACE, False))
        update = fields.get("execution")
        if forget or isinstance(update, ExecutorDetails):
            row = db.execute("SELECT execution FROM jobs WHERE id=?", (job_id,)).fetchone()
            current = _execution_of(row["execution"]) if row is not None else None
            if isinstance(update, ExecutorDetails):
                current = update if current is None or replace else current.merged(update)
            if forget and current is not None:
                current = current.forgotten()
            fields["execution"] = None if current is None else _execution_json(current)
        if not fields:
            return
        cols = ", ".join(f"{k}=?" for k in fields)
        db.execute(f"UPDATE jobs SET {cols} WHERE id=?", (*fields.values(), job_id))

    def job(self, job_id: int) -> JobSnapshot:
        rows = self._query(f"{_JOB_SELECT} WHERE j.id=?", (job_id,))
        if not rows:
            raise KeyError(job_id)
        return _snapshot(rows[0])

    def record_execution(self, job_id: int, details: ExecutorDetails) -> None:
        """A later report of the job's executor (ExecutorDetails.merged)."""
        self.update_job(job_id, **execution_fields(details))

    def job_row(self, job_id: int) -> dict[str, Any]:
        rows = self._query("SELECT * FROM jobs WHERE id=?", (job_id,))
        if not rows:
            raise KeyError(job_id)
        return dict(rows[0])

    def jobs(self, *, source: str | None = None, instance: str | None = None,
             states: set[JobState] | frozenset[JobState] | None = None,
             limit: int | None = None, finished_since: float | None = None,
             waiting_before: float | None = None) -> list[JobSnapshot]:
        sql, args = _scoped(f"{_JOB_SELECT} WHERE 1=1", [], source, instance)
        if waiting_before is not None:  # decisions overdue (jobs_by_waiting)
            sql += " AND j.waiting_since IS NOT NULL AND j.waiting_since < ?"
            args.append(waiting_before)
        if finished_since is not None:
            sql += " AND j.finished_at >= ?"
            args.append(finished_since)
        if states:
            sql += f" AND j.state IN ({','.join('?' * len(states))})"
            args.extend(s.value for s in states)
        sql += " ORDER BY j.id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [_snapshot(r) for r in self._query(sql, tuple(args))]

    def latest_job_for_ticket(self, source: str, ticket_id: int) -> JobSnapshot | None:
        rows = self._query(f"{_JOB_SELECT} WHERE j.source=? AND j.ticket_id=? "
                           "ORDER BY j.id DESC LIMIT 1", (source, ticket_id))
        return _snapshot(rows[0]) if rows else None

    def transitions(self, job_id: int) -> list[tuple[float, str, str | None]]:
        return [(r["at"], r["state"], r["reason"]) for r in
                self._query("SELECT at, state, reason FROM transitions WHERE job_id=? "
                            "ORDER BY id", (job_id,))]

    # -- outbox -----------------------------------------------------------------------------
    def enqueue(self, job_id: int, kind: str, payload: dict[str, Any], *,
                held: bool = False) -> OutboxItem:
        now = time.time()
        state = HELD if held else PENDING
        with self._tx() as db:
            cur = db.execute("INSERT INTO outbox (job_id, kind, payload, state, created_at) "
                             "VALUES (?,?,?,?,?)", (job_id, kind, json.dumps(payload), state,
                                                    now))
            item_id = int(cur.lastrowid or 0)
        return OutboxItem(item_id, job_id, kind, payload, state, 0, None, now, None)

    def next_pending(self, job_id: int) -> OutboxItem | None:
        rows = self._query("SELECT * FROM outbox WHERE job_id=? AND state=? ORDER BY id "
                           "LIMIT 1", (job_id, PENDING))
        return _item(rows[0]) if rows else None

    def supersede_progress(self, item: OutboxItem) -> tuple[OutboxItem, list[int]]:
        """If `item` is progress followed by more pending progress, keep only the latest:
        the server needs the current value, not the history."""
        with self._tx() as db:
            rows = db.execute("SELECT * FROM outbox WHERE job_id=? AND state=? AND id>=? "
                              "ORDER BY id", (item.job_id, PENDING, item.id)).fetchall()
            run = []
            for row in rows:
                if row["kind"] != "progress":
                    break
                run.append(row)
            if len(run) <= 1:
                return item, []
            superseded = [r["id"] for r in run[:-1]]
            db.execute(f"UPDATE outbox SET state=? WHERE id IN ({','.join('?' * len(superseded))})",
                       (SUPERSEDED, *superseded))
            return _item(run[-1]), superseded

    def jobs_with_pending(self, source: str | None = None,
                          instance: str | None = None) -> list[int]:
        """Jobs owing calls, oldest call first; only those of one engine when scoped (several
        workers may share a journal and must not send each other's calls)."""
        sql, args = _scoped("SELECT o.job_id, MIN(o.id) AS first FROM outbox o JOIN jobs j ON "
                            "j.id=o.job_id WHERE o.state=?", [PENDING], source, instance)
        return [r["job_id"] for r in self._query(sql + " GROUP BY o.job_id ORDER BY first",
                                                 tuple(args))]

    def mark_item(self, item_id: int, state: str, error: str | None = None, *,
                  ledger: Sequence[LedgerEntry] = ()) -> None:
        with self._tx() as db:
            db.execute("UPDATE outbox SET state=?, last_error=?, delivered_at=? WHERE id=?",
                       (state, error, time.time() if state != PENDING else None, item_id))
            queued = queue_entries(db, ledger, job=None)
        self._ledger_queued(queued)

    def record_attempt(self, item_id: int, error: str) -> int:
        with self._tx() as db:
            db.execute("UPDATE outbox SET attempts=attempts+1, last_error=? WHERE id=?",
                       (error, item_id))
            row = db.execute("SELECT attempts FROM outbox WHERE id=?", (item_id,)).fetchone()
        return int(row["attempts"])

    def drop_pending(self, job_id: int, reason: str, kinds: set[str] | None = None) -> list[int]:
        with self._tx() as db:
            rows = db.execute("SELECT id, kind FROM outbox WHERE job_id=? AND state=?",
                              (job_id, PENDING)).fetchall()
            ids = [r["id"] for r in rows if kinds is None or r["kind"] in kinds]
            if ids:
                db.execute(f"UPDATE outbox SET state=?, last_error=?, delivered_at=? WHERE id IN "
                           f"({','.join('?' * len(ids))})", (DROPPED, reason, time.time(), *ids))
        return ids

    def outbox_items(self, job_id: int) -> list[OutboxItem]:
        return [_item(r) for r in self._query("SELECT * FROM outbox WHERE job_id=? ORDER BY id",
                                              (job_id,))]

    def pending_count(self, job_id: int | None = None, *, source: str | None = None,
                      instance: str | None = None) -> int:
        if job_id is not None:
            rows = self._query("SELECT COUNT(*) AS n FROM outbox WHERE state=? AND job_id=?",
                               (PENDING, job_id))
        else:
            sql, args = _scoped("SELECT COUNT(*) AS n FROM outbox o JOIN jobs j ON "
                                "j.id=o.job_id WHERE o.state=?", [PENDING], source, instance)
            rows = self._query(sql, tuple(args))
        return int(rows[0]["n"])

    def pending_final(self, job_id: int) -> int:
        """Calls of the result phase (uploads, the closing message and status) still owed."""
        return sum(1 for item in self.outbox_items(job_id)
                   if item.state == PENDING and item.payload.get("final"))


def _scoped(sql: str, args: list[Any], source: str | None,
            instance: str | None) -> tuple[str, list[Any]]:
    if source is not None:
        sql += " AND j.source=?"
        args.append(source)
    if instance is not None:
        sql += " AND j.instance=?"
        args.append(instance)
    return sql, args


_JOB_SELECT = (
    "SELECT j.*, (SELECT COUNT(*) FROM outbox o WHERE o.job_id=j.id AND o.state='pending') "
    "AS owed FROM jobs j")


def read_jobs(path: Path, *, source_contains: str = "") -> list[JobSnapshot]:
    """The jobs recorded in the journal at `path` (newest first), read without writing to it:
    no schema change, no migration (an engine may be running on it). A journal written before
    a column existed reads that column as empty."""
    uri = f"{Path(path).resolve().as_uri()}?mode=ro"
    db = sqlite3.connect(uri, uri=True, timeout=30)
    try:
        db.row_factory = sqlite3.Row
        rows = db.execute(f"{_JOB_SELECT} WHERE instr(j.source, ?) > 0 ORDER BY j.id DESC",
                          (source_contains,)).fetchall()
    finally:
        db.close()
    jobs = []
    for row in rows:
        values = dict(row)
        for name, _declaration in _ADDED_COLUMNS:
            values.setdefault(name, None)
        jobs.append(_snapshot(values))
    return jobs


# Pseudo-fields of update_job/transition: what the executor said of the job's last command
# is forgotten (kept for the operator, not to follow or stop); `execution` replaces the
# details instead of updating them (a new run).
_FORGET = "_forget_command"
_REPLACE = "_replace_execution"


def execution_fields(details: ExecutorDetails, *, reset: bool = False) -> dict[str, Any]:
    """The job fields that record ``details``: a later report of the same command, or with
    ``reset`` the first one of a new run (what the last run's executor said is dropped)."""
    fields: dict[str, Any] = {"executor": details.executor, "execution": details}
    if reset:
        fields[_REPLACE] = True
    return fields


def command_forgotten() -> dict[str, Any]:
    """The job fields that make the next start neither follow nor stop the job's last
    command (it was stopped on purpose and is to run again)."""
    return {_FORGET: True}


def _execution_json(details: ExecutorDetails) -> str:
    return json.dumps({"executor": details.executor, "label": details.label,
                       "summary": details.summary,
                       "waiting": details.waiting, "queued_at": details.queued_at,
                       "running_at": details.running_at, "lines": list(details.lines),
                       "ref": details.ref, "host": details.host, "data": dict(details.data)})


def _execution_of(text: str | None) -> ExecutorDetails | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("executor"), str):
        return None

    def number(name: str) -> float | None:
        item = value.get(name)
        return float(item) if isinstance(item, int | float) else None

    def text_of(name: str) -> str | None:
        item = value.get(name)
        return item if isinstance(item, str) else None

    data = value.get("data")
    lines = value.get("lines")
    return ExecutorDetails(
        executor=value["executor"], label=text_of("label") or "",
        summary=text_of("summary") or "",
        waiting=bool(value.get("waiting")), queued_at=number("queued_at"),
        running_at=number("running_at"), ref=text_of("ref"), host=text_of("host"),
        lines=tuple(str(line) for line in lines) if isinstance(lines, list) else (),
        data={str(k): v for k, v in data.items() if v is None or isinstance(v, str | int | float)}
        if isinstance(data, dict) else {})


# The flat columns a journal written before executors were plug-ins (c269b3e … issue 18 step 7)
# keeps its executor's word in; read once into `execution` (Journal._migrate), or on the fly
# by read_jobs, which never writes.
_LEGACY_DATA = ("pid", "pgid", "proc_start", "cluster_job", "cluster_state", "cluster_node")
_LEGACY_PRESENT = " OR ".join(f"{name} IS NOT NULL"
                              for name in (*_LEGACY_DATA, "queued_at", "running_at")) + \
    " OR executor != 'local'"


def _legacy_execution(row: Mapping[str, Any] | sqlite3.Row) -> ExecutorDetails | None:
    """What an older version's flat columns said about the job's command, in the shape its
    executor reports today (the data keys are the ones it reads back); None when they hold
    nothing."""
    keys = set(row.keys())
    data: dict[str, DetailValue] = {name: row[name] for name in _LEGACY_DATA
                                    if name in keys and row[name] is not None}
    executor = (row["executor"] if "executor" in keys else None) or "local"
    queued_at = row["queued_at"] if "queued_at" in keys else None
    running_at = row["running_at"] if "running_at" in keys else None
    if not data and queued_at is None and running_at is None and executor == "local":
        return None
    if executor == "local":
        return ExecutorDetails(executor, label="local", data=data)
    # Words the old window showed, from the same columns; the executor's next report (a
    # followed cluster job) replaces them.
    job = data.get("cluster_job")
    state = data.get("cluster_state")
    node = data.get("cluster_node")
    label = executor.upper() + (f" {job}" if job else "") + (f" · {state}" if state else "") \
        + (f" on {node}" if node and state and not str(state).startswith("PENDING") else "")
    return ExecutorDetails(executor, label=label, queued_at=queued_at, running_at=running_at,
                           ref=str(job) if job else None, host=str(node) if node else None,
                           data=data)


def _snapshot(row: sqlite3.Row | Mapping[str, Any]) -> JobSnapshot:
    """A job from its row (an sqlite3.Row, or a dict of its columns)."""
    return JobSnapshot(
        job_id=row["id"], source=row["source"], ticket_id=row["ticket_id"],
        service_hash=row["service_hash"], service_name=row["service_name"],
        state=JobState(row["state"]), progress=row["progress"], instance=row["instance"],
        reason=row["reason"], workdir=row["workdir"], exit_code=row["exit_code"],
        claimed_at=row["claimed_at"], started_at=row["started_at"],
        finished_at=row["finished_at"], updated_at=row["updated_at"],
        inputs_ready=bool(row["inputs_ready"]), attempt=int(row["attempt"]),
        owed=int(row["owed"]), not_retryable=row["not_retryable"],
        executor=row["executor"] or "local",
        execution=_execution_of(row["execution"]) if row["execution"] is not None
        else _legacy_execution(row),
        details=json_dict(row["details"]),
        waiting_since=row["waiting_since"], decision=json_dict(row["decision"]))


def _item(row: sqlite3.Row) -> OutboxItem:
    kind, payload = legacy_end_call(row["kind"], json.loads(row["payload"]))
    return OutboxItem(id=row["id"], job_id=row["job_id"], kind=kind, payload=payload,
                      state=row["state"], attempts=row["attempts"],
                      last_error=row["last_error"], created_at=row["created_at"],
                      delivered_at=row["delivered_at"])


def legacy_end_call(kind: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A DSS ``status`` call (``{"status": "success" | "failed", "ticket": N}``, perhaps
    ``"final"``), as journals written before one end call hold it, read as the ``finish``
    call that says the same: delivered, skipped and shown exactly as it was. Any other call
    as it is."""
    if kind != "status":
        return kind, payload
    outcome = OutcomeKind.COMPLETED if payload.get("status") == "success" else OutcomeKind.FAILED
    return "finish", {"outcome": outcome.value, "reason": "", **payload}
