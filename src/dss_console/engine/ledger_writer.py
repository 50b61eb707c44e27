"""The ledger's writer: one thread per engine that appends the journal's queued records to the
source's ledger file (engine/ledger.py says what a record is).

Woken after each commit that queued records (``Journal.on_ledger_queued``), idle otherwise.
Each round, under ``flock`` on ``<file>.lock`` (two engines of one data dir and source key
write one chain): the queued rows in id order become lines numbered after the file's last
record (``seq``) and chained to it (``prev``: the SHA-256 of its line); they are written,
``fsync``-ed, and only then deleted from the queue with ``ledger_head`` set, in one journal
transaction.

Crash-safe both ways: a crash before the append leaves the rows queued (written at the next
start); a crash after the append, before the delete, leaves lines carrying ``"j": "q:<row
id>"`` past the journal's head, so those rows are dropped, not written twice. A ledger that
cannot be written (disk full, permissions) keeps the rows queued, says so once a minute, and
jobs go on.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dss_console.engine.journal import Journal
from dss_console.engine.ledger import (
    FORMAT_VERSION,
    GENESIS,
    LedgerHead,
    QueuedRecord,
    canonical,
    ledger_path,
    line_hash,
    make_ledger_dir,
    marker_row,
    queue_marker,
    utc_text,
)
from dss_console.engine.ledger_import import DetailsFilter, import_records
from dss_console.engine.ledger_read import last_line, lines_after

BATCH = 500  # rows per append (one write, one fsync)
RETRY_AFTER = 5.0  # seconds before an unwritable ledger is tried again
NOTICE_EVERY = 60.0  # seconds between two notices that it still cannot be written


@dataclass(frozen=True)
class _Tail:
    """Where the file ends: its size and last record (seq 0, GENESIS: an empty file)."""

    size: int
    seq: int
    hash: str


class LedgerWriter:
    """Appends ``source_key``'s queued records to its ledger under ``data_dir``.

    ``on_notice(level, text)``: how it tells the operator (an ``EngineNotice``).
    ``on_appended(path, records)``: called after each append, on the writer's thread, with
    the new records as written (the index follows the file with it).
    """

    def __init__(self, journal: Journal, source_key: str, data_dir: Path, *,
                 instance: str = "",
                 on_notice: Callable[[str, str], None] | None = None,
                 on_appended: Callable[[Path, list[tuple[int, bytes]]], None] | None = None,
                 signer: Callable[[bytes], dict[str, str]] | None = None,
                 signing: str | None = None,
                 details_filter: DetailsFilter | None = None):
        self.journal = journal
        self.source = source_key
        self.instance = instance
        self.data_dir = Path(data_dir)
        self.path = ledger_path(self.data_dir, source_key)
        self.on_notice = on_notice
        self.on_appended = on_appended
        self.signer = signer  # canonical bytes -> the fields that sign them ({"sig": ...})
        self.signing = signing  # the public key the `ledger` record names, when signing
        self.details_filter = details_filter  # Source.ledger_details, for imported jobs
        self._tail: _Tail | None = None  # cached after our own write; re-read if the size moved
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._round = threading.Lock()  # one round at a time (the thread, a drain())
        self._failing_since: float | None = None
        self._last_notice = 0.0
        self._announced = signer is None  # the chain names our signing key
        self.written = 0  # records this writer appended (for tests and the benchmark)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Write what is queued now (before the engine recovers its jobs), then follow the
        queue on a thread."""
        self.drain()
        self.journal.on_ledger_queued(self.wake)
        self._thread = threading.Thread(target=self._loop, name="ledger", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued (within ``timeout``) and stop."""
        self.journal.remove_ledger_listener(self.wake)
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wake(self) -> None:
        self._wake.set()

    @property
    def failing(self) -> bool:
        return self._failing_since is not None

    def _loop(self) -> None:
        while True:
            self._wake.wait(RETRY_AFTER if self.failing else None)
            self._wake.clear()
            with contextlib.suppress(Exception):  # said by drain(); never kill the thread
                self.drain()
            if self._stopping.is_set():
                return

    # -- one round ----------------------------------------------------------------------
    def drain(self) -> int:
        """Append every queued row; returns how many records were written. An unwritable
        ledger leaves them queued and says so (at most once a minute)."""
        total = 0
        with self._round:
            try:
                with self._locked():
                    total += self._import_once()
                    total += self._announce_key()
                    while True:
                        rows = self.journal.queued_ledger(self.source, BATCH)
                        if not rows:
                            break
                        rows = self._unwritten(rows)
                        if rows:
                            total += self._append(rows)
            except OSError as exc:
                self._failed(exc)
                return total
        if self._failing_since is not None:
            self._failing_since = None
            self._say("info", f"the ledger {self.path} is written again")
        return total

    @contextmanager
    def _locked(self) -> Iterator[None]:
        make_ledger_dir(self.data_dir)
        fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                import fcntl
            except ImportError:  # pragma: no cover - Windows: one engine per data dir
                yield
                return
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _current_tail(self) -> _Tail:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        cached = self._tail
        if cached is not None and cached.size == size:
            return cached
        if size:
            size = self._cut_interrupted_append(size)
        if size == 0:
            head = self.journal.ledger_head(self.source)
            # The file is gone or emptied while the journal remembers records: the chain
            # goes on from the journal's head, so `verify` names what was removed.
            tail = _Tail(0, head.seq, head.hash) if head is not None else _Tail(0, 0, GENESIS)
        else:
            line = last_line(self.path, size)
            record = _record_of(line)
            tail = _Tail(size, int(record["seq"]), line_hash(line))
        self._tail = tail
        return tail

    def _cut_interrupted_append(self, size: int) -> int:
        """A file that does not end with a newline holds the start of an append that never
        finished (a crash or power loss mid-write): never synced, never noted, its rows still
        queued. It is cut, so the chain goes on from the last whole record."""
        with open(self.path, "rb+") as handle:
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return size
            step, end = min(size, 1 << 16), size
            keep = 0
            while end > 0:
                start = max(0, end - step)
                handle.seek(start)
                cut = handle.read(end - start).rfind(b"\n")
                if cut >= 0:
                    keep = start + cut + 1
                    break
                end = start
            handle.truncate(keep)
            os.fsync(handle.fileno())
        self._say("warning", f"the ledger {self.path} ended in an interrupted append "
                             f"({size - keep} bytes): cut; its records are written again")
        return keep

    def _unwritten(self, rows: list[QueuedRecord]) -> list[QueuedRecord]:
        """The rows not yet in the file: lines past the journal's head (a crash between the
        append and the delete) name the rows they came from."""
        tail = self._current_tail()
        head = self.journal.ledger_head(self.source)
        if tail.size == 0 or (head is not None and head.seq >= tail.seq):
            return rows
        if head is None:
            # A new journal beside an existing ledger: its row ids are not the ones the
            # file's markers name. The chain goes on from the file.
            self.journal.ledger_written(self.source, [],
                                        LedgerHead(tail.seq, tail.hash, tail.size))
            return rows
        written: list[int] = []
        for line in lines_after(self.path, head.size):
            row = marker_row(_record_of(line))
            if row is not None:
                written.append(row)
        done = set(written)
        self.journal.ledger_written(self.source, sorted(done & {r.id for r in rows}),
                                    LedgerHead(tail.seq, tail.hash, tail.size))
        if done:
            self._say("info", f"{len(done)} ledger record(s) written before a crash were "
                              "not written again")
        return [r for r in rows if r.id not in done]

    def _append(self, rows: list[QueuedRecord]) -> int:
        tail = self._current_tail()
        lines = self._lines(tail, [(row.body, queue_marker(row.id)) for row in rows])
        new_tail = self._write(tail, lines)
        self.journal.ledger_written(self.source, [r.id for r in rows],
                                    LedgerHead(new_tail.seq, new_tail.hash, new_tail.size))
        self._appended(lines)
        return len(lines)

    def _lines(self, tail: _Tail, bodies: list[tuple[dict[str, Any], str | None]]
               ) -> list[tuple[int, bytes]]:
        seq, prev = tail.seq, tail.hash
        lines = []
        for body, marker in bodies:
            seq += 1
            record = {**body, "v": FORMAT_VERSION, "seq": seq, "prev": prev}
            if marker is not None:
                record["j"] = marker
            if self.signer is not None:
                record.update(self.signer(canonical(record)))
            line = canonical(record)
            prev = line_hash(line)
            lines.append((seq, line))
        return lines

    def _write(self, tail: _Tail, lines: list[tuple[int, bytes]]) -> _Tail:
        """Append and fsync (the seam a crash test stops at)."""
        data = b"".join(line + b"\n" for _seq, line in lines)
        created = not self.path.exists()
        fd = os.open(str(self.path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if tail.size and os.fstat(fd).st_size != tail.size:
                raise OSError(f"the ledger {self.path} changed size while locked")
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(fd, view):]
                # The data and the size it grew to: what a reader after a crash needs.
                sync = getattr(os, "fdatasync", os.fsync)
                sync(fd)
            except OSError:
                # A short write (a full disk) must not leave half a line behind.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, tail.size)
                self._tail = None
                raise
        finally:
            os.close(fd)
        if created:
            # A new file's name lives in its folder: without syncing the folder too, a power
            # loss could take the file while the journal already notes its records written.
            _sync_folder(self.path.parent)
        new_tail = _Tail(tail.size + len(data), lines[-1][0], line_hash(lines[-1][1]))
        self._tail = new_tail
        self.written += len(lines)
        return new_tail

    def _appended(self, lines: list[tuple[int, bytes]]) -> None:
        if self.on_appended is not None:
            with contextlib.suppress(Exception):  # the index is derived: rebuilt if behind
                self.on_appended(self.path, lines)

    # -- the first start: where the chain begins --------------------------------------------
    def _import_once(self) -> int:
        """A new ledger begins with a ``ledger`` record, then one ``imported`` record per job
        the journal already holds for this source (its history before the ledger)."""
        tail = self._current_tail()
        if tail.size or tail.seq:
            return 0
        queued = {int(r.body["job"]["local"]) for r in self.journal.queued_ledger(self.source,
                                                                                   10 ** 9)
                  if isinstance(r.body.get("job"), dict)}
        bodies = import_records(self.journal, self.source, self.instance, skip_jobs=queued,
                                signing=self.signing, details_filter=self.details_filter)
        return self._append_bodies(bodies)

    def _append_bodies(self, bodies: list[dict[str, Any]]) -> int:
        tail = self._current_tail()
        lines = self._lines(tail, [(body, None) for body in bodies])
        new_tail = self._write(tail, lines)
        self.journal.ledger_written(self.source, [],
                                    LedgerHead(new_tail.seq, new_tail.hash, new_tail.size))
        self._appended(lines)
        return len(lines)

    def append_bodies(self, bodies: list[dict[str, Any]]) -> int:
        """Write records made elsewhere (bodies as the journal queues them) straight to the
        file, chained after what is there: records with no journal step of their own (a
        benchmark's, a test's). Returns how many were written."""
        with self._round, self._locked():
            self._import_once()
            return self._append_bodies(bodies) if bodies else 0

    def _announce_key(self) -> int:
        """Signing begins on a chain that does not name this key yet: a ``signing`` record
        (signed by it) says so, and the records after it must be signed by it."""
        if self._announced:
            return 0
        self._announced = True
        if self.signing is None or _named_last(self.path) == self.signing:
            return 0
        return self._append_bodies([{
            "kind": "signing", "at": utc_text(time.time()), "source": self.source,
            "instance": self.instance, "data": {"public_key": self.signing}}])

    # -- words ----------------------------------------------------------------------------
    def _failed(self, exc: OSError) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._last_notice >= NOTICE_EVERY or self._last_notice == 0.0:
            self._last_notice = now
            queued = self.journal.queued_ledger_count(self.source)
            self._say("error", f"cannot write the ledger {self.path}: "
                               f"{exc.strerror or exc}; {queued} record(s) wait in the "
                               "journal and are written when it can be; jobs go on")

    def _say(self, level: str, text: str) -> None:
        if self.on_notice is not None:
            with contextlib.suppress(Exception):
                self.on_notice(level, text)


def _named_last(path: Path) -> str | None:
    """The signing key the chain names last (its ``signing`` records, else its ``ledger``
    record), read backwards from the end: a chain that named one names it near its start or
    in a ``signing`` record."""
    import json

    try:
        with open(path, "rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            carry = b""
            while end > 0:
                start = max(0, end - (1 << 20))
                handle.seek(start)
                chunk = handle.read(end - start) + carry
                lines = chunk.split(b"\n")
                carry = lines[0] if start > 0 else b""
                for line in reversed(lines[1:] if start > 0 else lines):
                    if b'"kind":"signing"' in line or b'"kind":"ledger"' in line:
                        with contextlib.suppress(ValueError):
                            record = json.loads(line)
                            data = record.get("data") or {}
                            if record.get("kind") == "signing":
                                return str(data.get("public_key") or "") or None
                            if record.get("kind") == "ledger":
                                return str(data.get("signing") or "") or None
                end = start
    except OSError:
        return None
    return None


def _record_of(line: bytes) -> dict[str, Any]:
    import json

    try:
        record = json.loads(line)
    except ValueError:
        raise OSError(f"the ledger's last line is not a record: {line[:60]!r}") from None
    if not isinstance(record, dict) or not isinstance(record.get("seq"), int):
        raise OSError("the ledger's last line is not a record")
    return record


def _sync_folder(folder: Path) -> None:
    """fsync a folder (its entries), where the platform can (not Windows)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
