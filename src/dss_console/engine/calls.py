"""The outbox's calls as the core knows them: what a call list tells the server, whichever
source built it.

A source says how its jobs end (``Source.result_calls`` / ``failure_calls``) as a list of
:data:`~dss_console.core.interfaces.OutboxCall`; the core queues them with the job's
transition. One call ends a job, whatever the source: ``finish``, the neutral
:class:`Outcome` in one call, which the source turns into its server's words when it is
delivered (``Source.set_finished``: DSS its status call, vantage6 one PATCH of the run).
A journal written before there was one end call may still owe DSS ``status`` calls: the
journal reads those as ``finish`` (:func:`dss_console.engine.journal.legacy_end_call`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dss_console.core.interfaces import OutboxCall, Outcome, OutcomeKind, Refusal
from dss_console.engine.journal import Journal, OutboxItem
from dss_console.engine.ledger_records import refusal_entry
from dss_console.engine.states import JobState

FINISH = "finish"


def finish_call(kind: OutcomeKind, *, reason: str = "", result: Path | None = None,
                output: Path | None = None, status: str | None = None,
                final: bool = False) -> OutboxCall:
    """The call that ends a job with an :class:`Outcome` (after everything queued before
    it). ``status``: the word the server will show for this end, where the source names it
    (DSS: ``success`` / ``failed``); the outbox views show it ("status failed") instead of
    the outcome."""
    payload: dict[str, Any] = {"outcome": kind.value, "reason": reason}
    if result is not None:
        payload["result"] = str(result)
    if output is not None:
        payload["output"] = str(output)
    if status is not None:
        payload["status"] = status
    if final:
        payload["final"] = True
    return FINISH, payload


def details_with_outcome(details: dict[str, Any], calls: list[OutboxCall]
                         ) -> dict[str, Any] | None:
    """The job's details with the outcome its `finish` call tells the server (for the audit:
    "crashed" and "start failed" are not job states), or None when no such call is queued."""
    for kind, payload in calls:
        if kind == FINISH:
            return {**details, "outcome": payload["outcome"]}
    return None


def outcome_from_payload(payload: dict[str, Any]) -> Outcome:
    return Outcome(OutcomeKind(payload["outcome"]),
                   result=Path(payload["result"]) if payload.get("result") else None,
                   output=Path(payload["output"]) if payload.get("output") else None,
                   reason=str(payload.get("reason") or ""))


def is_end_call(item: OutboxItem) -> bool:
    """The call that ends the job on the server (`finish`)."""
    return item.kind == FINISH


def is_success_call(item: OutboxItem) -> bool:
    """The end call that says "this job succeeded"."""
    return is_end_call(item) and item.payload.get("outcome") == OutcomeKind.COMPLETED.value


def is_failure_call(item: OutboxItem) -> bool:
    """The end call that says "this job did not succeed" (failed, crashed, cancelled, …)."""
    return is_end_call(item) and not is_success_call(item)


def carries_result(item: OutboxItem) -> bool:
    """A call without which the job cannot succeed: a result file, or the success that
    carries the result itself (a vantage6 run's; a DSS success only follows the uploads)."""
    return item.kind == "upload" or (is_success_call(item) and bool(item.payload.get("result")))


def record_refusal(journal: Journal, *, source_key: str, instance: str, workdir: Path,
                   refusal: Refusal,
                   ledger_details: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None
                   = None) -> int:
    """Work the source ended before claiming it (``Source.refuse_unconfigured``), as an
    ended job: in the jobs list and the audit with its service, who asked and why. Returns
    the job id."""
    details = {**refusal.details, "outcome": refusal.outcome.value}
    return journal.create_job(
        source=source_key, ticket_id=refusal.run_id, service_hash=refusal.image,
        service_name=refusal.image, instance=instance, workdir=str(workdir),
        state=JobState.FAILED, reason=refusal.reason, details=details,
        finished_at=time.time(), not_retryable=refusal.not_retryable,
        ledger=[refusal_entry(refusal.outcome.value, refusal.reason,
                              ledger_details(refusal.details) if ledger_details else {})])
