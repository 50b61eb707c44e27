"""Where a new ledger's chain begins: the ``ledger`` record, then one ``imported`` record per
job the journal held for the source before the ledger existed (its newest job per ticket,
with what the audit showed of it then, ``"origin": "journal"``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from dss_console.engine.journal import Journal
from dss_console.engine.ledger import FORMAT_VERSION, utc_text
from dss_console.engine.ledger_records import end_outcome, sent_reason

DetailsFilter = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def import_records(journal: Journal, source: str, instance: str, *, skip_jobs: set[int],
                   signing: str | None = None,
                   details_filter: DetailsFilter | None = None) -> list[dict[str, Any]]:
    """The bodies of the first records of ``source``'s ledger."""
    newest: dict[int, Any] = {}
    for job in journal.jobs(source=source):  # newest first
        if job.job_id in skip_jobs or job.ticket_id in newest:
            continue
        newest[job.ticket_id] = job
    now = time.time()
    first: dict[str, Any] = {
        "kind": "ledger", "at": utc_text(now), "source": source, "instance": instance,
        "data": {"format": FORMAT_VERSION, "signing": signing, "imported": len(newest)}}
    bodies = [first]
    for job in sorted(newest.values(), key=lambda j: j.job_id):
        run_s = None
        if job.started_at is not None and job.finished_at is not None:
            run_s = round(max(0.0, job.finished_at - job.started_at), 3)
        data: dict[str, Any] = {
            "origin": "journal", "state": job.state.value,
            "outcome": end_outcome(job.state, job.details) if job.state.is_terminal else None,
            "exit_code": job.exit_code, "run_s": run_s,
            "claimed_at": utc_text(job.claimed_at) if job.claimed_at else None,
            "started_at": utc_text(job.started_at) if job.started_at else None,
            "finished_at": utc_text(job.finished_at) if job.finished_at else None,
            "reason": sent_reason((i.kind, i.payload) for i in journal.outbox_items(job.job_id)
                                  if i.state != "dropped"),
        }
        if details_filter is not None:
            data["details"] = dict(details_filter(job.details))
        bodies.append({
            "kind": "imported", "at": utc_text(job.finished_at or job.updated_at or now),
            "source": job.source, "instance": job.instance,
            "job": {"local": job.job_id, "id": job.ticket_id, "attempt": job.attempt},
            "service": {"name": job.service_name, "key": job.service_hash},
            "data": data})
    return bodies
