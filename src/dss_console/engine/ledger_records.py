"""What the ledger records of today's steps of a job, as :class:`LedgerEntry` values: the claim,
a refusal, the inputs, the start, the end, the upload and the delivery of the end call.

``start`` and ``end`` follow from the journal's own transitions (``step_entries``, called by
``Journal.transition`` inside its transaction), so every path that starts or ends a job
records it, whoever wrote the path. The others are queued where the step happens.

Inputs and results are named by SHA-256 and size only, never by name (a file name may carry
a patient's); a reason is recorded only as the requester was sent it (the end call's), never
the journal's local one (which may name paths or hosts).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dss_console.engine.ledger import LedgerEntry, LedgerValue
from dss_console.engine.states import JobState

FINISH_KINDS = ("finish", "status")  # the end call (a journal before it was one: "status")

_STATE_OUTCOME = {JobState.SUCCEEDED: "completed", JobState.FAILED: "failed",
                  JobState.CANCELLED: "cancelled"}


def file_digest(path: Path) -> tuple[str, int]:
    """(SHA-256, size) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def folder_digests(folder: Path) -> list[dict[str, LedgerValue]]:
    """Every file under ``folder`` as ``{"sha256", "size"}``, in SHA-256 order (no names, and
    no order that would tell them)."""
    files: list[dict[str, LedgerValue]] = []
    if folder.is_dir():
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                sha, size = file_digest(path)
                files.append({"sha256": sha, "size": size})
    files.sort(key=lambda f: (str(f["sha256"]), int(str(f["size"]))))
    return files


def set_digest(files: Sequence[Mapping[str, LedgerValue]]) -> str:
    """One SHA-256 for a set of files (of their sorted SHA-256s): what an approval binds."""
    return hashlib.sha256("\n".join(sorted(str(f["sha256"]) for f in files)).encode()
                          ).hexdigest()


# -- entries queued where the step happens ---------------------------------------------------
def claim_entry(details: Mapping[str, Any]) -> LedgerEntry:
    """A job was claimed; ``details``: the source's ``ledger_details`` (a whitelist)."""
    return LedgerEntry("claim", {"details": dict(details)} if details else {})


def refusal_entry(outcome: str, reason: str, details: Mapping[str, Any]) -> LedgerEntry:
    """Work ended before it was claimed (v6: an image not allowed, an unknown database);
    ``reason`` as the requester reads it."""
    data: dict[str, LedgerValue] = {"outcome": outcome, "reason": reason}
    if details:
        data["details"] = dict(details)
    return LedgerEntry("refusal", data)


def inputs_entry(folder: Path, details: Mapping[str, Any] | None = None) -> LedgerEntry:
    """The inputs as fetched: each file's SHA-256 and size, their count, total and set
    digest; ``details``: the source's ``ledger_details`` of what the fetch learnt."""
    files = folder_digests(folder)
    data: dict[str, LedgerValue] = {
        "files": files, "count": len(files),
        "bytes": sum(int(str(f["size"])) for f in files), "sha256": set_digest(files)}
    if details:
        data["details"] = dict(details)
    return LedgerEntry("inputs", data)


def upload_entry(calls: Iterable[tuple[str, Mapping[str, Any]]]) -> LedgerEntry | None:
    """What the result phase sends: each result file's SHA-256 and size (the files the
    ``upload`` calls and the end call carry); None when no file leaves."""
    files: list[dict[str, LedgerValue]] = []
    for kind, payload in calls:
        if kind == "upload" and payload.get("path"):
            role = "result"
            path = Path(str(payload["path"]))
        elif kind in FINISH_KINDS and payload.get("result"):
            role = "result"
            path = Path(str(payload["result"]))
        else:
            continue
        try:
            sha, size = file_digest(path)
        except OSError:
            continue
        files.append({"sha256": sha, "size": size, "role": role})
    if not files:
        return None
    files.sort(key=lambda f: str(f["sha256"]))
    return LedgerEntry("upload", {"files": list(files), "count": len(files),
                                  "bytes": sum(int(str(f["size"])) for f in files),
                                  "sha256": set_digest(files)})


def delivered_entry(job_id: int, payload: Mapping[str, Any], state: str) -> LedgerEntry:
    """The end call reached the server (``state``: delivered, or skipped: it was not sent
    because the job had already ended there)."""
    return LedgerEntry("delivered", {"outcome": payload.get("outcome"), "state": state},
                       job=job_id)


# -- start and end, from the journal's transitions --------------------------------------------
def step_entries(db: sqlite3.Connection, job_id: int, old: JobState, new: JobState,
                 row: Mapping[str, Any]) -> list[LedgerEntry]:
    """The records a transition implies (``row``: the job after it), in its transaction."""
    if new is JobState.RUNNING:
        return [LedgerEntry("start", {"executor": row["executor"] or "local",
                                      "attempt": int(row["attempt"] or 1),
                                      "following": old is JobState.RUNNING})]
    if new.is_terminal and not old.is_terminal:
        calls = [(r[0], json.loads(r[1])) for r in db.execute(
            "SELECT kind, payload FROM outbox WHERE job_id=? AND state != 'dropped' AND "
            "kind IN ('finish', 'status') ORDER BY id DESC LIMIT 1", (job_id,))]
        details = json_dict(row["details"])
        outcome = _STATE_OUTCOME[new] if new is JobState.SUCCEEDED else \
            _finish_outcome(calls) or end_outcome(new, details)
        return [LedgerEntry("end", {
            "outcome": outcome, "state": new.value, "exit_code": row["exit_code"],
            "run_s": _run_seconds(row), "reason": sent_reason(calls)})]
    return []


def end_outcome(state: JobState, details: Mapping[str, Any]) -> str:
    """How a job that ended ended, as an OutcomeKind value where the source recorded one."""
    if state is JobState.SUCCEEDED:
        return "completed"
    recorded = details.get("outcome")
    if isinstance(recorded, str) and recorded:
        return recorded
    return _STATE_OUTCOME.get(state, state.value)


def sent_reason(calls: Iterable[tuple[str, Mapping[str, Any]]]) -> str | None:
    """The reason the last end call tells the requester ("" when the command's own message
    already did), or None when no end call carries one."""
    reason = None
    for kind, payload in calls:
        if kind in FINISH_KINDS:
            reason = str(payload.get("reason") or "") or None
    return reason


def _finish_outcome(calls: Sequence[tuple[str, Mapping[str, Any]]]) -> str | None:
    for kind, payload in calls:
        if kind == "finish" and payload.get("outcome"):
            return str(payload["outcome"])
        if kind == "status":
            return "completed" if payload.get("status") == "success" else "failed"
    return None


def _run_seconds(row: Mapping[str, Any]) -> float | None:
    """Seconds the command ran (a cluster job's queue time is not run time)."""
    started = row["started_at"]
    execution = json_dict(row["execution"])
    running_at = execution.get("running_at")
    if execution.get("queued_at") is not None and isinstance(running_at, int | float):
        started = running_at
    finished = row["finished_at"]
    if started is None or finished is None:
        return None
    return round(max(0.0, float(finished) - float(started)), 3)


def json_dict(text: str | None) -> dict[str, Any]:
    """A JSON object stored as text (a details column): {} for nothing, or for anything else."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
