"""The vantage6 audit from the ledger (issue 20, part 6): a node's records folded into today's
:class:`~dss_console.sources.v6.audit.AuditRecord`, one per run (its newest local job), with
the same columns and outcome words. ``v6 audit`` reads the ledger where one exists and the
journal for a node that has none yet (an upgrade whose engine has not started).

The ledger keeps what the requester was told as the reason, never the journal's local one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dss_console.engine.ledger import parse_utc
from dss_console.engine.ledger_read import lines_with_offsets
from dss_console.sources.v6.audit import NODE_MARK, AuditRecord, split_source

# OutcomeKind values and job states, in the words `v6 audit` shows.
_WORDS = {"completed": "completed", "crashed": "crashed", "start_failed": "start failed",
          "failed": "failed", "cancelled": "failed", "not_allowed": "not allowed",
          "killed": "killed by user", "rejected": "rejected", "succeeded": "completed",
          "interrupted": "interrupted"}
_UNDER_WAY = {"claim": "waiting", "inputs": "fetching input", "start": "running",
              "upload": "sending result", "awaiting": "waiting for a decision"}


@dataclass
class _Run:
    source: str
    run_id: int
    local_job: int
    image: str
    instance: str
    attempt: int = 1
    details: dict[str, Any] = field(default_factory=dict)
    state: str = "claimed"
    outcome: str = "waiting"
    reason: str | None = None
    exit_code: int | None = None
    claimed_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    run_s: float | None = None
    ended: bool = False


def is_v6_ledger(source: str) -> bool:
    return NODE_MARK in source


def ledger_audit_records(paths: Iterable[Path], now: float | None = None) -> list[AuditRecord]:
    """The runs the ledgers at ``paths`` record, newest first."""
    runs: dict[tuple[str, int], _Run] = {}
    for path in paths:
        for _offset, line in lines_with_offsets(path):
            try:
                record = json.loads(line)
            except ValueError:
                continue  # `audit verify` names it
            if isinstance(record, dict):
                _fold(runs, record)
    at = time.time() if now is None else now
    records = [_audit_record(run, at) for run in runs.values()]
    records.sort(key=lambda r: (r.claimed_at or 0.0, r.local_job), reverse=True)
    return records


def _fold(runs: dict[tuple[str, int], _Run], record: Mapping[str, Any]) -> None:
    job, service = record.get("job"), record.get("service")
    source = record.get("source")
    if not isinstance(job, dict) or not isinstance(source, str) or not is_v6_ledger(source):
        return
    try:
        run_id, local = int(job["id"]), int(job["local"])
        when = parse_utc(str(record["at"]))
    except (KeyError, TypeError, ValueError):
        return
    kind = record.get("kind")
    data = record.get("data") if isinstance(record.get("data"), dict) else {}
    assert isinstance(data, dict)
    key = (source, run_id)
    run = runs.get(key)
    if run is None or local > run.local_job:  # a newer local job speaks for the run
        image = service.get("key") or service.get("name") if isinstance(service, dict) else ""
        run = runs[key] = _Run(source, run_id, local, str(image or ""),
                               str(record.get("instance") or ""))
    elif local < run.local_job:
        return
    run.attempt = int(job.get("attempt") or run.attempt)
    details = data.get("details")
    if isinstance(details, dict):
        run.details.update(details)
    if kind in _UNDER_WAY and not (run.ended and kind in ("upload",)):
        run.state, run.outcome, run.ended = kind, _UNDER_WAY[str(kind)], False
    if kind == "claim":
        run.claimed_at = when
    elif kind == "start":
        run.started_at, run.finished_at, run.run_s = when, None, None
    elif kind == "end":
        run.ended, run.state, run.finished_at = True, str(data.get("state") or "failed"), when
        run.outcome = _WORDS.get(str(data.get("outcome")), str(data.get("outcome")))
        run.reason = _text(data.get("reason"))
        run.exit_code = _int(data.get("exit_code"))
        run.run_s = _float(data.get("run_s"))
    elif kind == "refusal":
        run.ended, run.state = True, "failed"
        run.claimed_at = run.finished_at = when
        run.outcome = _WORDS.get(str(data.get("outcome")), "failed")
        run.reason = _text(data.get("reason"))
    elif kind == "imported":
        state = str(data.get("state") or "")
        run.state = state
        run.ended = state in ("succeeded", "failed", "cancelled")
        outcome = str(data.get("outcome") or state)
        run.outcome = _WORDS.get(outcome, outcome)
        run.reason, run.exit_code = _text(data.get("reason")), _int(data.get("exit_code"))
        run.run_s = _float(data.get("run_s"))
        run.claimed_at = _time(data.get("claimed_at"))
        run.started_at = _time(data.get("started_at"))
        run.finished_at = _time(data.get("finished_at"))


def _audit_record(run: _Run, now: float) -> AuditRecord:
    from dss_console.sources.v6.audit import audit_record_from

    server, node_id = split_source(run.source)
    live = not run.ended and run.started_at is not None and run.state == "start"
    duration = run.run_s if run.ended else (max(0.0, now - run.started_at)
                                            if live and run.started_at is not None else None)
    base = audit_record_from(run.details)
    return replace(
        base, run_id=run.run_id, server=server, node_id=node_id, image=run.image,
        outcome=run.outcome, state=_STATE.get(run.state, run.state), reason=run.reason,
        claimed_at=run.claimed_at, started_at=run.started_at, finished_at=run.finished_at,
        duration=duration, live=live, exit_code=run.exit_code, attempt=run.attempt,
        instance=run.instance, local_job=run.local_job,
        updated_at=run.finished_at or run.started_at or run.claimed_at or 0.0)


# The ledger's kinds and end states as the journal's job states (the AuditRecord's `state`).
_STATE = {"claim": "claimed", "inputs": "downloading", "start": "running",
          "upload": "uploading", "awaiting": "awaiting_approval"}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_utc(value)
    except ValueError:
        return None
