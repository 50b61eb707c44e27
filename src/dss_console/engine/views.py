"""Each job as the window shows it: its source's cells and summary, and which engine actions
cannot be done now and why; and each service's figures.

The engine decides this, not the window: the rules are the engine's (which states a job may
be run, retried, failed or given a result in) and the source's (whether a job the server
ended can run again). Computed for every snapshot sent over the channel, from the journal's
values alone: no server call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from dss_console.core.executor import Executor
from dss_console.core.history import ServiceHistory
from dss_console.core.interfaces import Source
from dss_console.core.presentation import JobView, Presentation, ServiceFigures
from dss_console.engine.events import JobSnapshot
from dss_console.engine.scheduler import ServiceView
from dss_console.engine.settings import ServiceCommand
from dss_console.engine.states import JobState
from dss_console.engine.workdirs import ENGINE_DIR, INPUT_DIR, output_log_name

# The states from which Retry run starts the command again (Engine.retry_job).
RETRYABLE = frozenset({JobState.FAILED, JobState.CANCELLED, JobState.INTERRUPTED})
# Run is offered for a job waiting to run; a blocked one runs by itself once it can.
RUNNABLE = frozenset({JobState.CLAIMED, JobState.INTERRUPTED})


def unavailable_actions(words: Presentation, job: JobSnapshot, *,
                        ended_is_final: bool) -> dict[str, str]:
    """The engine actions (run, cancel, fail, upload, retry, approve, reject, release) this
    job cannot take now, each
    with why in words ("" when its state says it plainly). ``ended_is_final``: a job whose
    end the server holds cannot be processed again (the source's rules.rescue_own_failure is
    off: a finished vantage6 run is immutable)."""
    off: dict[str, str] = {}
    if job.state not in RUNNABLE:
        off["run"] = (words.text("blocked_run_tip") if job.state is JobState.BLOCKED else "")
    if job.state.is_terminal:
        # A failed or cancelled job is already failed on the server: failing it again would
        # only add a second failure to the requester's log.
        off["cancel"] = off["fail"] = ""
    if job.state in (JobState.SUCCEEDED, JobState.UPLOADING):
        off["upload"] = ""
    # The gate's decisions, by state (engine/decisions.py); Run, Cancel and Fail as above.
    if job.state is not JobState.AWAITING_APPROVAL:
        off["approve"] = ""
    if job.state is not JobState.AWAITING_RELEASE:
        off["release"] = ""
    if not job.state.is_waiting:
        off["reject"] = ""
    if job.state is JobState.AWAITING_APPROVAL:
        off["upload"] = ""  # its command did not run yet: approve or reject it first
    if job.state not in RETRYABLE:
        off["retry"] = ""
    elif job.not_retryable:
        off["retry"] = f"Retry run is not possible: {job.not_retryable}"
    elif ended_is_final and job.state is not JobState.INTERRUPTED and job.owed == 0:
        # Its end was delivered: the server holds a finished job, which cannot run again.
        off["retry"] = words.text("retry_closed_tip") or "Retry run is not possible"
    return off


def options_words(executors: Mapping[str, Executor], executor: str,
                  command: ServiceCommand | None) -> str:
    """How ``command``'s isolation and limit keys contain it under ``executor`` (one of
    ``executors``), in that executor's words; "" without a command or a known executor."""
    found = executors.get(executor) if command is not None else None
    if command is None or found is None:
        return ""
    return found.describe_options(found.own_options(command.executor_options()))


def described_services(views: Iterable[ServiceView],
                       executors: Mapping[str, Executor]) -> list[ServiceView]:
    """The services as the window lists them: each with how its command is contained."""
    return [replace(view, isolation=options_words(executors, view.command.executor,
                                                  view.command))
            if view.command is not None else view for view in views]


def job_view(source: Source, job: JobSnapshot, limits: str = "") -> JobView:
    workdir = Path(job.workdir)
    return JobView(cells=source.job_cells(job.service_hash, job.details),
                   summary=source.job_summary(job.service_hash, job.details),
                   unavailable=unavailable_actions(
                       source.presentation, job,
                       ended_is_final=not source.rules.rescue_own_failure),
                   log_file=str(workdir / ENGINE_DIR / output_log_name(job.attempt)),
                   inputs_dir=str(workdir / INPUT_DIR), limits=limits)


def presented(source: Source, job: JobSnapshot, limits: str = "") -> JobSnapshot:
    """The snapshot with its view, as it crosses the channel (``limits``: job_limits)."""
    return replace(job, view=job_view(source, job, limits))


def job_limits(executors: Mapping[str, Executor],
               command_for: Callable[[str, str], ServiceCommand | None],
               job: JobSnapshot) -> str:
    """The isolation and limits a job runs (or ran) with: as journaled when its command
    started; before that (or for a job started by an older version), the words of its
    executor for its service's options as the settings now give them
    (``command_for(name, hash)``)."""
    journaled = job.details.get("limits")
    if isinstance(journaled, str):
        return journaled
    return options_words(executors, job.executor,
                         command_for(job.service_name, job.service_hash))


def ledger_day_counts(histories: Mapping[str, ServiceHistory],
                      services: Iterable[ServiceView]) -> dict[str, tuple[int, int]]:
    """Succeeded / failed (or cancelled, or refused) per service hash in the last 24 h, from
    the ledger's figures (``Engine.ledger_stats``, keyed by service name): the counts the
    history chart shows, not a second bookkeeping."""
    counts: dict[str, tuple[int, int]] = {}
    for view in services:
        history = histories.get(view.name)
        if history is not None:
            counts[view.service_hash] = (sum(bar.succeeded for bar in history.hours),
                                         sum(bar.failed for bar in history.hours))
    return counts


def service_figures(source: Source, service_keys: Sequence[str],
                    own_counts: Callable[[], Mapping[str, tuple[int, int]]]
                    ) -> dict[str, ServiceFigures]:
    """The source's figures where it keeps them (a DSS server), else this engine's own:
    ``own_counts()``, succeeded / failed per service hash in the last 24 h (read only
    then: the ledger's, see ``ledger_day_counts``), and the work ``available`` says waits."""
    figures = source.service_figures(service_keys)
    if figures is not None:
        return figures
    ready = source.available(service_keys) if service_keys else {}
    counts = own_counts()
    return {key: ServiceFigures(ready=int(ready.get(key, 0)), done=counts.get(key, (0, 0))[0],
                                failed=counts.get(key, (0, 0))[1])
            for key in service_keys}
