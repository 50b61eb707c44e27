"""The outbox's calls as the core knows them: what a call list tells the server, whichever
source built it.

A source says how its jobs end (``Source.result_calls`` / ``failure_calls``) as a list of
:data:`~dss_console.core.interfaces.OutboxCall`; the core queues them with the job's
transition. Two calls end a job: ``status`` (``{"status": "success" | "failed"}``) and
``finish`` (an :class:`Outcome` in one call); the helpers below recognise both.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dss_console.core.interfaces import OutboxCall, Outcome, OutcomeKind, Refusal
from dss_console.engine.journal import Journal, OutboxItem
from dss_console.engine.states import JobState


def finish_call(kind: OutcomeKind, *, reason: str = "", result: Path | None = None,
                output: Path | None = None, final: bool = False) -> OutboxCall:
    """The call that ends a job with an :class:`Outcome` (after everything queued before
    it)."""
    payload: dict[str, Any] = {"outcome": kind.value, "reason": reason}
    if result is not None:
        payload["result"] = str(result)
    if output is not None:
        payload["output"] = str(output)
    if final:
        payload["final"] = True
    return "finish", payload


def details_with_outcome(details: dict[str, Any], calls: list[OutboxCall]
                         ) -> dict[str, Any] | None:
    """The job's details with the outcome its `finish` call tells the server (for the audit:
    "crashed" and "start failed" are not job states), or None when no such call is queued."""
    for kind, payload in calls:
        if kind == "finish":
            return {**details, "outcome": payload["outcome"]}
    return None


def outcome_from_payload(payload: dict[str, Any]) -> Outcome:
    return Outcome(OutcomeKind(payload["outcome"]),
                   result=Path(payload["result"]) if payload.get("result") else None,
                   output=Path(payload["output"]) if payload.get("output") else None,
                   reason=str(payload.get("reason") or ""))


def is_success_call(item: OutboxItem) -> bool:
    """The call that says "this job succeeded": `status success` or `finish completed`."""
    if item.kind == "status":
        return item.payload.get("status") == "success"
    if item.kind == "finish":
        return item.payload.get("outcome") == OutcomeKind.COMPLETED.value
    return False


def is_end_call(item: OutboxItem) -> bool:
    return item.kind in ("status", "finish")


def carries_result(item: OutboxItem) -> bool:
    """A call without which the job cannot succeed: a result file, or the success that
    carries the result itself."""
    return item.kind == "upload" or (item.kind == "finish" and is_success_call(item))


def record_refusal(journal: Journal, *, source_key: str, instance: str, workdir: Path,
                   refusal: Refusal) -> int:
    """Work the source ended before claiming it (``Source.refuse_unconfigured``), as an
    ended job: in the jobs list and the audit with its service, who asked and why. Returns
    the job id."""
    details = {**refusal.details, "outcome": refusal.outcome.value}
    job_id = journal.create_job(
        source=source_key, ticket_id=refusal.run_id, service_hash=refusal.image,
        service_name=refusal.image, instance=instance, workdir=str(workdir),
        state=JobState.FAILED, reason=refusal.reason, details=details)
    journal.update_job(job_id, finished_at=time.time(), not_retryable=refusal.not_retryable)
    return job_id
