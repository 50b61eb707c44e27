"""``audit verify``: does a ledger file still hold the chain its writer wrote? Reads only.

Line by line: JSON, ``seq`` one more than the record before, ``prev`` the SHA-256 of the line
before; the last record against the journal's ``ledger_head`` (else an edit of the last line
would pass). A verdict names the record: ``record 17 was changed``, ``record 17 was
removed``, ``records 17 and 18 are swapped``, ``line 17 is not a record``.

What the chain cannot see: someone rewriting the whole file *and* the journal's head (only
signatures or an earlier export catch that).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dss_console.engine.ledger import GENESIS, LedgerHead, line_hash
from dss_console.engine.ledger_sign import fingerprint, signature_problem


@dataclass(frozen=True)
class Verdict:
    ok: bool
    records: int  # records read before the verdict
    head: str | None  # SHA-256 of the last line read
    problem: str | None = None  # "record 17 was changed"
    record: int | None = None  # the record (or line) the problem names
    notes: tuple[str, ...] = field(default_factory=tuple)
    signed_by: str | None = None

    def text(self) -> str:
        if not self.ok:
            return f"{self.problem}" + "".join(f"\n  {note}" for note in self.notes)
        head = f"head {self.head[:12]}…" if self.head else "empty"
        signed = f"signed by {self.signed_by}" if self.signed_by else "not signed"
        line = f"{self.records:,} records, chain intact, {head}, {signed}"
        return line + "".join(f"\n  {note}" for note in self.notes)


@dataclass
class _Line:
    number: int
    raw: bytes
    record: dict[str, Any] | None
    whole: bool = True  # ends with a newline (only the file's last line may not)


def _parsed(path: Path) -> Iterator[_Line]:
    loads = json.loads
    with open(path, "rb") as handle:
        for number, read in enumerate(handle, start=1):
            raw = read.rstrip(b"\n")
            try:
                value = loads(raw)
            except ValueError:
                value = None
            if value.__class__ is not dict or value.get("seq").__class__ is not int \
                    or value.get("prev").__class__ is not str:
                value = None
            yield _Line(number, raw, value, read.endswith(b"\n"))


def verify_file(path: Path, head: LedgerHead | None, *, journal_known: bool = True,
                public_key: str | None = None) -> Verdict:
    """The verdict on the ledger at ``path``. ``head``: the journal's ``ledger_head`` for its
    source (None: the journal knows none); ``journal_known`` False: a copy checked without
    its journal (the last record is then checked only by its signature, said so).

    Signatures: from the record that names a key (the ``ledger`` record, or a ``signing``
    record when signing began later) every record must carry one that holds under it.
    ``public_key`` (``ed25519:…``): the key to trust; a chain naming another fails."""
    notes: list[str] = []
    key: str | None = None
    signed_by: str | None = None
    if not path.is_file():
        if head is not None:
            return Verdict(False, 0, None, f"the ledger is missing: the journal knows "
                                           f"{head.seq} records", 1)
        return Verdict(True, 0, None, notes=("no ledger yet",))
    lines = _parsed(path)
    pending: _Line | None = None
    prev_hash, prev_seq, count = GENESIS, 0, 0
    hash_at_head: str | None = None
    first = True

    def fail(problem: str, record: int) -> Verdict:
        return Verdict(False, count, prev_hash if count else None, problem, record,
                       tuple(notes))

    while True:
        line = pending if pending is not None else next(lines, None)
        pending = None
        if line is None:
            break
        record = line.record
        if record is None and not line.whole:
            # The last line, cut short: an append a crash interrupted (or one being written
            # now), never noted in the journal; the writer cuts it and writes its records
            # again. Records the journal knows were written are still checked below.
            notes.append(f"line {line.number} is an unfinished append (a crash, or an "
                         "engine writing now): not a record yet")
            break
        if record is None:
            if not line.raw.strip():
                return fail(f"line {line.number} is empty, not a record", line.number)
            return fail(f"line {line.number} is not a record", line.number)
        seq = int(record["seq"])
        expected = prev_seq + 1
        chained = record["prev"] == prev_hash
        data = record.get("data")
        if first and record.get("kind") == "ledger" and isinstance(data, dict) \
                and data.get("imported"):
            notes.append("the chain starts with the history the journal held before the "
                         "ledger (imported records)")
        first = False
        if seq == expected:
            if not chained:
                changed = seq if _own_prev_changed(line, next(lines, None), head) \
                    else max(prev_seq, 1)
                return fail(f"record {changed} was changed", changed)
        elif chained:  # linked to the line before, but numbered wrong: its own bytes changed
            return fail(f"record {expected} was changed", expected)
        elif seq > expected:
            following = next(lines, None)
            if following is not None and following.record is not None \
                    and following.record.get("seq") == expected:
                return fail(f"records {expected} and {seq} are swapped", expected)
            # Is the record that belongs here further down (two lines swapped across the
            # file, one moved)? Then nothing was removed. The rest is read: this fails.
            rest = [following] if following is not None else []
            found = next((later for later in [*rest, *lines] if later.record is not None
                          and later.record.get("seq") == expected), None)
            if found is not None:
                return fail(f"records {expected} and {seq} are swapped"
                            if found.number == line.number + seq - expected else
                            f"record {expected} was moved to line {found.number}", expected)
            gone = f"record {expected} was removed" if seq == expected + 1 else \
                f"records {expected} to {seq - 1} were removed"
            return fail(gone, expected)
        else:
            return fail(f"records {seq} and {prev_seq} are swapped" if seq == prev_seq - 1
                        else f"line {line.number} repeats record {seq}", line.number)
        named = _named_key(record)
        if named is not None:
            if public_key is not None and named != public_key:
                return fail(f"record {seq} names a signing key other than the one given "
                            f"({fingerprint(named)})", seq)
            key, signed_by = named, fingerprint(named)
        if key is not None:
            why = signature_problem(key, record)
            if why is not None:
                return fail(f"record {seq} was changed ({why})", seq)
        prev_hash, prev_seq = line_hash(line.raw), seq
        count += 1
        if head is not None and seq == head.seq:
            hash_at_head = prev_hash
    last = Verdict(True, count, prev_hash if count else None, notes=tuple(notes),
                   signed_by=signed_by)
    if key is not None and public_key is None:
        notes.append("signatures checked against the key the ledger names; give the key "
                     "you trust (--public-key) to check it is that one")
    if not journal_known:
        notes.append("checked without its journal: the last record is vouched for by its "
                     "signature only" if key is not None else
                     "checked without its journal and unsigned: an edit of the last record "
                     "would not show")
        return Verdict(True, count, last.head, notes=tuple(notes), signed_by=signed_by)
    if head is None:
        if count:
            notes.append("the journal has no head for this ledger: the last record is not "
                         "checked against it")
        return Verdict(True, count, last.head, notes=tuple(notes), signed_by=signed_by)
    if prev_seq < head.seq:
        gone = f"record {head.seq} was removed" if head.seq == prev_seq + 1 else \
            f"records {prev_seq + 1} to {head.seq} were removed"
        return fail(gone, prev_seq + 1)
    if hash_at_head != head.hash:
        return fail(f"record {head.seq} was changed", head.seq)
    if prev_seq > head.seq:
        notes.append(f"{prev_seq - head.seq} record(s) past the journal's head: written "
                     "just before a crash or by a running engine, noted at its next write")
    return Verdict(True, count, last.head, notes=tuple(notes), signed_by=signed_by)


def _own_prev_changed(line: _Line, following: _Line | None, head: LedgerHead | None) -> bool:
    """A record that does not chain to the line before: was its own ``prev`` changed (the
    record after it, or the journal's head, no longer matches its bytes either), or the
    record before (its own bytes still match what follows)?"""
    if line.number == 1 or line.record is None:
        return True
    own = line_hash(line.raw)
    if following is not None and following.record is not None:
        return bool(following.record["prev"] != own)
    if head is not None and line.record["seq"] == head.seq:
        return head.hash != own
    return False


def _named_key(record: dict[str, Any]) -> str | None:
    """The signing key a record names: the ``ledger`` record's, or a ``signing`` record's."""
    data = record.get("data")
    if not isinstance(data, dict):
        return None
    if record.get("kind") == "ledger" and isinstance(data.get("signing"), str):
        return str(data["signing"])
    if record.get("kind") == "signing" and isinstance(data.get("public_key"), str):
        return str(data["public_key"])
    return None


def journal_head(journal: Path, source: str) -> LedgerHead | None:
    """The journal's ``ledger_head`` for ``source``, read without writing (an engine may be
    running on it); None when it has none (or no such table yet)."""
    if not journal.is_file():
        return None
    uri = f"{journal.resolve().as_uri()}?mode=ro"
    db = sqlite3.connect(uri, uri=True, timeout=30)
    try:
        row = db.execute("SELECT seq, hash, size FROM ledger_head WHERE source=?",
                         (source,)).fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        db.close()
    return LedgerHead(int(row[0]), str(row[1]), int(row[2])) if row is not None else None


def first_record(path: Path) -> dict[str, Any] | None:
    """The ledger's first record (its ``source`` says whose ledger it is)."""
    try:
        with open(path, "rb") as handle:
            value = json.loads(handle.readline())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
