"""The audit trail of the vantage6 runs this machine ran: who asked for what, on which data,
with which input, and how it ended. Built from the journal's job snapshots, so it needs no
server; Qt-free (the console's dialog and `dss-console v6 audit` both use it).

A record holds what a data station is accountable for and nothing it must keep to itself:
never the input's values (only its SHA-256, the method and the argument *names*), never a
path on this machine (no work dir), never a token or key.
"""

from __future__ import annotations

import csv
import datetime
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from dss_console.engine.events import JobSnapshot
from dss_console.engine.ledger_export import csv_cell
from dss_console.engine.states import JobState

__all__ = [
    "CSV_FIELDS",
    "AuditRecord",
    "audit_record",
    "audit_record_from",
    "audit_records",
    "format_input",
    "format_requester",
    "is_v6_job",
    "iso_time",
    "ledger_fields",
    "load_journal_jobs",
    "record_key",
    "records_to_csv",
    "records_to_json",
    "records_to_jsonable",
    "split_source",
]

NODE_MARK = "#node-"  # a vantage6 job's source is "<api url>#node-<id>"

# The outcome, in the words a vantage6 researcher would use (the run's status on the
# server), for a job that ended; a job still under way says where it stands.
_OUTCOME: dict[JobState, str] = {
    JobState.SUCCEEDED: "completed",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "failed",  # vantage6 has no cancelled status: the server says failed
    JobState.INTERRUPTED: "interrupted",
    JobState.CLAIMED: "waiting",
    JobState.BLOCKED: "blocked",
    JobState.DOWNLOADING: "fetching input",
    JobState.RUNNING: "running",
    JobState.UPLOADING: "sending result",
    JobState.AWAITING_APPROVAL: "awaiting approval",
    JobState.AWAITING_RELEASE: "awaiting release",
}
# Run ends a source may record in details["outcome"] (OutcomeKind values or status words).
_OUTCOME_WORDS = {"completed": "completed", "crashed": "crashed", "start_failed": "start failed",
                  "start failed": "start failed", "failed": "failed", "cancelled": "failed",
                  "not_allowed": "not allowed", "not allowed": "not allowed",
                  "rejected": "rejected",
                  "killed": "killed by user", "killed by user": "killed by user"}
# The engine's reason when a claimed run's image has no command (any more): the node ends the
# run "not allowed" (engine/jobs.py).
_NOT_ALLOWED_REASON = "this image is not configured on this node"


@dataclass(frozen=True)
class AuditRecord:
    """One vantage6 run as this node ran it (the newest journal job of the run)."""

    run_id: int
    server: str                 # the API URL
    node_id: int | None
    task_id: int | None
    task_name: str | None
    job_id: int | None          # vantage6's job id (a task and its subtasks share it)
    parent_id: int | None       # the parent task of a subtask
    collaboration_id: int | None
    init_org_id: int | None
    init_org: str | None
    init_user_id: int | None
    init_user: str | None
    image: str
    databases: tuple[str, ...]
    input_sha256: str | None
    input_format: str | None    # "JSON", "not JSON"; None before the input was fetched
    input_method: str | None
    input_kwargs: tuple[str, ...]  # the names of the keyword arguments, never their values
    input_args: int | None      # how many positional arguments
    input_bytes: int | None
    outcome: str                # completed | failed | not allowed | running | interrupted…
    state: str                  # the engine's job state (cancelled is told apart here)
    reason: str | None
    claimed_at: float | None
    started_at: float | None
    finished_at: float | None
    duration: float | None      # seconds the command ran (so far, when `live`)
    live: bool                  # still under way: the duration grows
    exit_code: int | None
    attempt: int
    instance: str
    local_job: int              # the journal's job id on this machine
    updated_at: float = 0.0     # the job's last change (which of two records is newer)
    node_name: str | None = None  # the node's name on its server, when the run recorded it

    @property
    def key(self) -> tuple[str, int]:
        return record_key(self.server, self.node_id, self.run_id)

    @property
    def outcome_text(self) -> str:
        """'failed: command exited with code 2'; 'completed'."""
        if self.reason and self.outcome in ("failed", "not allowed", "crashed", "start failed",
                                            "interrupted", "blocked"):
            return f"{self.outcome}: {self.reason}"
        return self.outcome

    def duration_at(self, now: float | None = None) -> float | None:
        """The duration, counted up to `now` while the run is under way."""
        if self.live and self.started_at is not None:
            return max(0.0, (time.time() if now is None else now) - self.started_at)
        return self.duration


def record_key(server: str, node_id: int | None, run_id: int) -> tuple[str, int]:
    """A run's identity: its id on its server (a node's runs are its server's runs)."""
    return f"{server}{NODE_MARK}{node_id}", run_id


def is_v6_job(job: JobSnapshot) -> bool:
    return NODE_MARK in job.source


def split_source(source: str) -> tuple[str, int | None]:
    """'<api url>#node-<id>' → (api url, node id)."""
    server, _, node = source.rpartition(NODE_MARK)
    if not server:
        return source, None
    return server, int(node) if node.isdigit() else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _outcome(job: JobSnapshot, details: Mapping[str, Any]) -> str:
    recorded = details.get("outcome")
    if job.state.is_terminal and isinstance(recorded, str) and recorded in _OUTCOME_WORDS:
        if job.state is JobState.SUCCEEDED:
            return "completed"
        return _OUTCOME_WORDS[recorded]
    if job.state is JobState.FAILED and (job.reason or "").startswith(_NOT_ALLOWED_REASON):
        return "not allowed"
    return _OUTCOME.get(job.state, job.state.value)


def _clock(job: JobSnapshot, now: float) -> tuple[float | None, bool]:
    """(seconds the command ran, whether that still grows)."""
    # A cluster job's time in the scheduler's queue is not run time.
    started = job.run_started_at
    if started is None:
        return None, False
    if job.finished_at is not None:
        return max(0.0, job.finished_at - started), False
    if job.state.is_terminal or job.state in (JobState.INTERRUPTED, JobState.BLOCKED,
                                              JobState.CLAIMED):
        # Ended without a recorded end, or not running now: the last update is the best
        # end we know (the clock must not count on forever).
        return max(0.0, job.updated_at - started), False
    return max(0.0, now - started), True


def _detail_fields(details: Mapping[str, Any]) -> dict[str, Any]:
    """The record's fields a run's details give: task, who asked, databases, input."""
    summary = details.get("input_summary")
    summary = summary if isinstance(summary, Mapping) else {}
    kwargs = summary.get("kwargs")
    databases = details.get("databases")
    return dict(
        task_id=_int(details.get("task_id")), task_name=_text(details.get("task_name")),
        job_id=_int(details.get("job_id")), parent_id=_int(details.get("parent_id")),
        collaboration_id=_int(details.get("collaboration_id")),
        init_org_id=_int(details.get("init_org_id")), init_org=_text(details.get("init_org")),
        init_user_id=_int(details.get("init_user_id")),
        init_user=_text(details.get("init_user")),
        databases=tuple(str(d) for d in databases) if isinstance(databases, list) else (),
        input_sha256=_text(details.get("input_sha256")),
        input_format=(_text(summary.get("format")) or "JSON") if summary else None,
        input_method=_text(summary.get("method")),
        input_kwargs=tuple(str(k) for k in kwargs) if isinstance(kwargs, list) else (),
        input_args=_int(summary.get("args")), input_bytes=_int(summary.get("bytes")),
        node_name=_text(details.get("node")))


def audit_record_from(details: Mapping[str, Any]) -> AuditRecord:
    """A record holding what ``details`` give, the rest empty: for a record built from
    elsewhere (the ledger: sources/v6/audit_ledger.py), which fills the rest in."""
    return AuditRecord(
        run_id=0, server="", node_id=None, image="", outcome="", state="", reason=None,
        claimed_at=None, started_at=None, finished_at=None, duration=None, live=False,
        exit_code=None, attempt=1, instance="", local_job=0, **_detail_fields(details))


def audit_record(job: JobSnapshot, now: float | None = None) -> AuditRecord:
    """One job as a record (any job: see `audit_records` for the vantage6 ones only)."""
    details: Mapping[str, Any] = getattr(job, "details", None) or {}
    server, node_id = split_source(job.source)
    duration, live = _clock(job, time.time() if now is None else now)
    return AuditRecord(
        run_id=job.ticket_id, server=server, node_id=node_id,
        image=job.service_hash or job.service_name,
        outcome=_outcome(job, details), state=job.state.value, reason=job.reason,
        claimed_at=job.claimed_at, started_at=job.started_at, finished_at=job.finished_at,
        duration=duration, live=live, exit_code=job.exit_code, attempt=job.attempt,
        instance=job.instance, local_job=job.job_id, updated_at=job.updated_at,
        **_detail_fields(details))


def audit_records(jobs: Iterable[JobSnapshot], now: float | None = None) -> list[AuditRecord]:
    """The vantage6 jobs among `jobs` as records, one per run (its newest journal job),
    newest first."""
    latest: dict[tuple[str, int], JobSnapshot] = {}
    for job in jobs:
        if not is_v6_job(job):
            continue
        key = (job.source, job.ticket_id)
        known = latest.get(key)
        if known is None or (job.job_id, job.updated_at) > (known.job_id, known.updated_at):
            latest[key] = job
    at = time.time() if now is None else now
    records = [audit_record(job, at) for job in latest.values()]
    records.sort(key=lambda r: (r.claimed_at or 0.0, r.local_job), reverse=True)
    return records


_LEDGER_KEYS = ("task_id", "task_name", "job_id", "parent_id", "collaboration_id",
                "init_org_id", "init_org", "init_user_id", "init_user", "databases", "node",
                "input_sha256")
_SUMMARY_KEYS = ("format", "method", "kwargs", "args", "bytes")


def ledger_fields(details: Mapping[str, Any]) -> dict[str, Any]:
    """The whitelist of a run's journaled details the ledger keeps (V6Source.ledger_details)."""
    kept: dict[str, Any] = {key: details[key] for key in _LEDGER_KEYS
                            if details.get(key) is not None}
    if isinstance(kept.get("databases"), list):
        kept["databases"] = [str(label) for label in kept["databases"]]
    summary = details.get("input_summary")
    if isinstance(summary, Mapping):
        kept["input_summary"] = {key: summary[key] for key in _SUMMARY_KEYS if key in summary}
    return kept


# -- words ------------------------------------------------------------------------------


def format_requester(record: AuditRecord) -> str:
    """'research / alice'; an unknown name shows its id ('org 3 / user 7'), '—' when the
    run did not say."""
    org = record.init_org or (f"org {record.init_org_id}" if record.init_org_id is not None
                              else None)
    user = record.init_user or (f"user {record.init_user_id}"
                                if record.init_user_id is not None else None)
    if org is None and user is None:
        return "—"
    return " / ".join(part for part in (org, user) if part)


def format_input(record: AuditRecord) -> str:
    """'central_mean(column, limit)', 'partial(2 positional)', 'not JSON (120 bytes)',
    'JSON list (12 bytes)';
    '—' before the input was fetched."""
    if record.input_format is None:
        return "—"
    if record.input_format != "JSON":
        size = f" ({record.input_bytes} bytes)" if record.input_bytes is not None else ""
        kind = record.input_format
        # JSON but not an object (V6Source names the type: "list", "str"…).
        return f"{kind if kind == 'not JSON' else f'JSON {kind}'}{size}"
    parts = []
    if record.input_args:
        parts.append(f"{record.input_args} positional")
    parts.extend(record.input_kwargs)
    return f"{record.input_method or '(no method)'}({', '.join(parts)})"


def iso_time(at: float | None) -> str | None:
    """UTC, to the second: '2026-03-01T14:03:27Z'."""
    if at is None:
        return None
    moment = datetime.datetime.fromtimestamp(at, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- export -----------------------------------------------------------------------------


CSV_FIELDS = (
    "run_id", "task_id", "task_name", "job_id", "parent_id", "collaboration_id", "server",
    "node_id", "init_org_id", "init_org", "init_user_id", "init_user", "image", "databases",
    "input_sha256", "input_format", "input_method", "input_kwargs", "input_args",
    "input_bytes", "outcome", "state", "reason", "claimed_at", "started_at", "finished_at",
    "duration_s", "exit_code", "attempt", "instance", "local_job",
)
_TIMES = ("claimed_at", "started_at", "finished_at")


def records_to_jsonable(records: Iterable[AuditRecord],
                        now: float | None = None) -> list[dict[str, Any]]:
    """Plain dicts (times as UTC ISO 8601, the duration in seconds), fields in CSV order."""
    out = []
    for record in records:
        row: dict[str, Any] = {}
        for name in CSV_FIELDS:
            if name == "duration_s":
                duration = record.duration_at(now)
                row[name] = None if duration is None else round(duration, 3)
            elif name in _TIMES:
                row[name] = iso_time(getattr(record, name))
            elif name in ("databases", "input_kwargs"):
                row[name] = list(getattr(record, name))
            else:
                row[name] = getattr(record, name)
        out.append(row)
    return out


def records_to_json(records: Iterable[AuditRecord], stream: IO[str],
                    now: float | None = None) -> None:
    json.dump(records_to_jsonable(records, now), stream, indent=2, ensure_ascii=False)
    stream.write("\n")


def records_to_csv(records: Iterable[AuditRecord], stream: IO[str],
                   now: float | None = None) -> None:
    """One header line and a row per record; lists joined with ';'. Open `stream` with
    newline='' (the csv module writes its own line ends)."""
    writer = csv.writer(stream)
    writer.writerow(CSV_FIELDS)
    for row in records_to_jsonable(records, now):
        writer.writerow([
            csv_cell(";".join(value) if isinstance(value, list) else
                      "" if value is None else value)
            for value in row.values()])


# -- the journal, read-only ---------------------------------------------------------------


def load_journal_jobs(path: Path) -> list[JobSnapshot]:
    """The vantage6 jobs recorded in the journal at `path`, read without writing to it."""
    from dss_console.engine.journal import read_jobs

    return read_jobs(path, source_contains=NODE_MARK)
