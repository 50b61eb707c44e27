"""What differs per kind of job source, kept out of the job's control flow.

A DSS ticket: inputs are an ITK-SNAP workspace, the command is a template from
``[services]`` run with our environment plus ``DSS_*`` variables, the result is a
``.itksnap`` exported and uploaded file by file, then the status. A vantage6 run
(``source.kind == "v6"``): inputs come from ``source.fetch_inputs`` (decrypted input, a fresh
container token), the command is ``source.command`` → (argv, env) run *exactly* (the official
wrapper base32-decodes every variable it sees), and the end is one ``finish`` call carrying
an :class:`Outcome` (result + log + status in one PATCH).

These helpers are the v6 half; ``jobs.py`` keeps the DSS path as it was.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from dss_console.core.interfaces import Outcome, OutcomeKind, Refusal, Source
from dss_console.engine.journal import Journal, OutboxItem
from dss_console.engine.settings import ServiceCommand
from dss_console.v6.settings import V6Algorithm

V6 = "v6"

# What the operator reads for a v6 run left open at shutdown (on_shutdown = "leave").
V6_LEFT_OPEN = ("dss-console stopped while the run was in flight; the run stays open on the "
                "server and runs again when the worker starts")
V6_NOT_AGAIN = "a finished vantage6 run cannot run again"


def is_v6(source: Source) -> bool:
    return source.kind == V6


def v6_service_command(algorithm: V6Algorithm) -> ServiceCommand:
    """The engine's view of a configured image: its limits, and a command line to show.
    The argv that really runs comes from ``source.command`` when the run starts."""
    return ServiceCommand(key=algorithm.image, command=shlex.join(algorithm.argv_template()),
                          timeout=algorithm.timeout, max_jobs=algorithm.max_jobs,
                          nice=algorithm.nice, cwd=algorithm.cwd, env=dict(algorithm.env),
                          send_output_tail=algorithm.send_output_tail)


def v6_preflight_template(algorithm: V6Algorithm) -> str | None:
    """A template of just the program, for the runner's preflight (is it on PATH, is it
    executable); None when the program name itself has a placeholder (checked at start)."""
    program = algorithm.argv_template()[0]
    return None if "{" in program else shlex.quote(program)


def finish_call(kind: OutcomeKind, *, reason: str = "", result: Path | None = None,
                output: Path | None = None, final: bool = False) -> tuple[str, dict[str, Any]]:
    """The outbox call that ends a v6 run (after everything queued before it)."""
    payload: dict[str, Any] = {"outcome": kind.value, "reason": reason}
    if result is not None:
        payload["result"] = str(result)
    if output is not None:
        payload["output"] = str(output)
    if final:
        payload["final"] = True
    return "finish", payload


def details_with_outcome(details: dict[str, Any], calls: list[tuple[str, dict[str, Any]]]
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
    """The call that says "this job succeeded": DSS `status success`, v6 `finish completed`."""
    if item.kind == "status":
        return item.payload.get("status") == "success"
    if item.kind == "finish":
        return item.payload.get("outcome") == OutcomeKind.COMPLETED.value
    return False


def is_end_call(item: OutboxItem) -> bool:
    return item.kind in ("status", "finish")


def requester_words(details: dict[str, Any]) -> str:
    """'research / alice'; ids where the server would not tell the node a name."""
    org = details.get("init_org") or (f"org {details['init_org_id']}"
                                      if details.get("init_org_id") is not None else None)
    user = details.get("init_user") or (f"user {details['init_user_id']}"
                                        if details.get("init_user_id") is not None else None)
    return " / ".join(part for part in (org, user) if part) or "unknown"


def record_refusal(journal: Journal, *, source_key: str, instance: str, workdir: Path,
                   refusal: Refusal) -> tuple[int, str]:
    """A run the node ended before claiming it (``V6Source.refuse_unconfigured``), as an
    ended job: in the Runs list and the audit with its image, task, who asked and why.
    Returns the job id and the line for the status bar."""
    import time

    from dss_console.engine.states import JobState

    outcome = refusal.outcome.value
    details = {**refusal.details, "outcome": outcome}
    word = "not allowed" if refusal.outcome is OutcomeKind.NOT_ALLOWED else "refused"
    job_id = journal.create_job(
        source=source_key, ticket_id=refusal.run_id, service_hash=refusal.image,
        service_name=refusal.image, instance=instance, workdir=str(workdir),
        state=JobState.FAILED, reason=refusal.reason, details=details)
    journal.update_job(job_id, finished_at=time.time(), not_retryable=V6_NOT_AGAIN)
    task = details.get("task_id")
    line = (f"run {refusal.run_id}"
            + (f" (task {task})" if task is not None else "")
            + f": {word}: {refusal.reason}; image {refusal.image!r}, asked by "
              f"{requester_words(details)}")
    return job_id, line
