"""The engine: jobs, the scheduler (manual operations and auto mode), crash recovery.

Qt-free. The GUI and the headless worker drive it through the methods below and watch it
through `events`. Methods that talk to the server block; call them off the GUI thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dss_console.core.executor import Executor, ExecutorDetails, JobRef, Recovery
from dss_console.core.interfaces import (
    NO_FILE,
    Connection,
    Ending,
    Failure,
    NewWork,
    OutboxCall,
    OutcomeKind,
    RemoteState,
    Source,
    SourceEvent,
    SourceService,
    WorkGone,
)
from dss_console.engine.calls import carries_result, details_with_outcome, record_refusal
from dss_console.engine.connection import LOGGED_OUT as LOGGED_OUT_STATE
from dss_console.engine.connection import OFFLINE, ConnectionState
from dss_console.engine.endings import remote_status
from dss_console.engine.events import (
    EngineNotice,
    EventBus,
    JobChanged,
    JobSnapshot,
    PollCompleted,
    ServicePaused,
    ServiceResumed,
)
from dss_console.engine.jobs import JobContext, JobExecution
from dss_console.engine.journal import Journal, OutboxItem, command_forgotten
from dss_console.engine.outbox import Outbox
from dss_console.engine.pauses import BLOCKED, ServicePauses
from dss_console.engine.redact import Redactor
from dss_console.engine.settings import ServiceCommand, Settings
from dss_console.engine.states import JobState
from dss_console.engine.workdirs import (
    remove_old_workdirs,
    server_slug,
    ticket_workdir,
)

IDLE_BACKOFF_AFTER = 300.0  # seconds without work before polling slows down
IDLE_BACKOFF_FACTOR = 2.0  # ... to at most this many poll intervals (and at most a minute)
SERVICES_REFRESH = 300.0  # a new service version is picked up within five minutes
CLEANUP_EVERY = 3600.0
BLOCKED_RETRY = 60.0  # a blocked job tries its command again this often (a program installed)


def poll_wait(interval: float, idle_for: float, error_backoff: float = 0.0) -> float:
    """Seconds until the next poll: the interval; after five idle minutes up to twice that
    (at most a minute, unless the interval itself is longer); longer after errors."""
    wait = interval
    if idle_for > IDLE_BACKOFF_AFTER:
        wait = max(interval, min(interval * IDLE_BACKOFF_FACTOR, 60.0))
    return max(wait, error_backoff)


class EngineError(Exception):
    """An operation the engine refuses, in words (e.g. "ticket 12 is running")."""


@dataclass(frozen=True)
class ServiceView:
    name: str
    service_hash: str
    version: str
    command: ServiceCommand | None
    auto: bool
    running: int
    # Why auto claiming is paused for this service (its command cannot start, or several
    # tickets failed in a row), in words; None when it is not paused.
    paused: str | None = None


class Engine:
    def __init__(self, settings: Settings, source: Source, journal: Journal, *,
                 provider: str, executors: Mapping[str, Executor],
                 events: EventBus | None = None, auto: bool = False,
                 max_tickets: int | None = None, status_interval: float = 5.0,
                 grace_period: float = 10.0, retry_interval: float = 5.0,
                 outbox_backoff: float = 1.0, outbox_max_backoff: float = 30.0,
                 command_nice: int = 0):
        self.settings = settings
        # What runs the commands, by the name a service's `executor` setting gives (the
        # composition root's: plugins.executors()); the engine closes them when it stops.
        self.executors = executors
        self.source = source
        self.journal = journal
        self.provider = provider
        self.instance = settings.instance
        self.events = events or EventBus()
        self.auto = auto
        self.max_tickets = max_tickets
        self.claims_made = 0
        self.connection = ConnectionState(self.events)
        self.outbox = Outbox(journal, source, self.events, instance=self.instance,
                             connection=self.connection,
                             base_backoff=outbox_backoff,
                             max_backoff=outbox_max_backoff, on_gone=self._on_ticket_gone,
                             on_refused=self._on_call_refused)
        self.ctx = JobContext(journal=journal, outbox=self.outbox, source=source,
                              events=self.events, status_interval=status_interval,
                              grace_period=grace_period, retry_interval=retry_interval,
                              command_nice=command_nice,
                              executors=self.executors,
                              on_started=self._on_command_started,
                              on_blocked=self._on_job_blocked,
                              on_shutdown=settings.on_shutdown,
                              interrupted=settings.interrupted,
                              send_output_tail=source.shares_output_tail(settings),
                              workroot=Path(settings.workroot))
        self.noun = source.words.job  # in what the operator reads
        self.pauses = ServicePauses(settings.pause_after_failures, settings.pause_window)
        self._lock = threading.RLock()
        self._executions: dict[int, JobExecution] = {}
        self._services: list[SourceService] = []
        self._service_auto: dict[str, bool] = {}
        self._last_ready: dict[str, int] = {}
        self._last_job_end = 0.0
        self._last_empty_poll = -1.0
        self._polled = False  # a poll asked the server since the last PollCompleted
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._claiming = True
        self._claims_in_flight = 0
        self._cleanup_thread: threading.Thread | None = None
        self._poller = threading.Thread(target=self._poll_loop, name="scheduler", daemon=True)
        self._shutdown_result: bool | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, *, run_claimed: bool = False) -> None:
        """Resume deliveries and interrupted jobs, then start polling (auto mode)."""
        self.outbox.start()
        self.recover(run_claimed=run_claimed)
        # Push events (v6's socket) make the engine react at once; polling stays the
        # backstop for anything missed while the channel is down.
        self.source.watch(self._on_source_event)
        self._poller.start()

    def shutdown(self, *, drain: bool = False, flush_timeout: float = 30.0,
                 job_timeout: float | None = None, running: str | None = None) -> bool:
        """Stop claiming; finish (drain) or stop running jobs; deliver what is owed. True if
        nothing is left owed. A second call returns the first one's answer.

        Stopped jobs stay claimed and run again at the next start, as after a crash
        (`running="resume"`), or their tickets fail with "provider shut down" ("fail");
        None: as the settings say (`on_shutdown`, `[v6] on_shutdown`)."""
        if self._shutdown_result is not None:
            return self._shutdown_result
        if running is not None:
            self.set_shutdown_choice(running)
        self._claiming = False
        # No claim may slip past the snapshot below: stop the scheduler, let claims already
        # sent come back (and register their jobs) first.
        self._stopping.set()
        self._wake.set()
        if self._poller.is_alive():
            self._poller.join(timeout=60)
        deadline_claims = time.monotonic() + 60
        while self.claims_in_flight and time.monotonic() < deadline_claims:
            time.sleep(0.05)  # a claim's reply; it has its own network timeout
        executions = self._live_executions()
        if not drain:
            for execution in executions:
                execution.shutdown()
        deadline = None if job_timeout is None else time.monotonic() + job_timeout
        for execution in executions:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            execution.join(remaining)
        flushed = self.outbox.flush(flush_timeout)
        self.outbox.stop()
        self.connection.stop()
        self.source.close()  # e.g. a push channel, a proxy for the commands
        for executor in self.executors.values():
            executor.close()
        if self._cleanup_thread is not None:
            self._cleanup_thread.join(timeout=30)
        self._shutdown_result = flushed
        return flushed

    def stop_claiming(self) -> None:
        self._claiming = False

    def set_shutdown_choice(self, running: str) -> None:
        """What the coming shutdown does with running jobs, whatever the settings say: "resume"
        (leave them open, run them again at the next start) or "fail" (the operator's choice
        when quitting a console)."""
        if running not in ("resume", "fail"):
            raise EngineError(f'running jobs at shutdown: "resume" or "fail", not {running!r}')
        self.ctx.shutdown_choice = running

    # -- queries ----------------------------------------------------------------------------
    def jobs(self, limit: int | None = None) -> list[JobSnapshot]:
        """This engine's jobs (a shared journal also holds other instances')."""
        return self.journal.jobs(source=self.source.key, instance=self.instance, limit=limit)

    def job(self, job_id: int) -> JobSnapshot:
        return self.journal.job(job_id)

    def busy_job_ids(self) -> set[int]:
        """Jobs with a live execution (fetching, running, uploading)."""
        return {e.job_id for e in self._live_executions()}

    def active_count(self, service_hash: str | None = None) -> int:
        """Jobs holding a slot: about to run, fetching inputs, running or just ended (a job
        sending its result does not hold one)."""
        count = 0
        for execution in self._live_executions():
            if execution.prefetch_only:
                continue
            snap = self.journal.job(execution.job_id)
            # A job that just ended holds its slot until its thread has reported how it
            # ended: the failure breaker must count it before the next claim.
            if snap.state is JobState.UPLOADING:
                continue
            if service_hash is None or snap.service_hash == service_hash:
                count += 1
        return count

    @property
    def claims_in_flight(self) -> int:
        with self._lock:
            return self._claims_in_flight

    def is_idle(self) -> bool:
        """Nothing running, no claim on its way, and nothing owed to the server."""
        return (not self._live_executions() and not self.claims_in_flight
                and self.outbox.owed() == 0)

    @property
    def last_ready(self) -> dict[str, int]:
        return dict(self._last_ready)

    def idle_poll_completed(self) -> bool:
        """True when a poll that started after the last job ended found nothing to claim."""
        return self._last_empty_poll > self._last_job_end

    def wake(self) -> None:
        self._wake.set()

    # -- services ---------------------------------------------------------------------------
    def refresh_services(self) -> list[ServiceView]:
        with self.connection.call():
            services = self.source.services()
        self.connection.reached()
        with self._lock:
            self._services = services
        return self.services()

    def known_services(self) -> list[SourceService]:
        """The services as last listed by the server (no journal or network access)."""
        with self._lock:
            return list(self._services)

    def services(self) -> list[ServiceView]:
        with self._lock:
            services = list(self._services)
        views = []
        for s in services:
            command = self.command_for(s.service_hash)
            views.append(ServiceView(
                name=s.name, service_hash=s.service_hash, version=s.version, command=command,
                auto=self._service_auto.get(s.service_hash, bool(command and command.auto)),
                running=self.active_count(s.service_hash),
                paused=self.pauses.reason(s.service_hash)))
        return views

    def command_for(self, service_hash: str) -> ServiceCommand | None:
        name = self._service_name(service_hash)
        return self._command(name, service_hash)

    def _command(self, name: str, service_hash: str) -> ServiceCommand | None:
        # The source's own settings tables say (a vantage6 image: only when named exactly).
        return self.settings.plugins[self.source.kind].command_for(name, service_hash)

    def set_auto(self, enabled: bool, service_hash: str | None = None) -> None:
        if service_hash is None:
            self.auto = enabled
        else:
            self._service_auto[service_hash] = enabled
        self._wake.set()

    def update_settings(self, settings: Settings) -> None:
        """New settings apply to the next claim and the next run; jobs blocked by a command
        that could not start try the (maybe fixed) command at once."""
        self.settings = settings
        self.ctx.on_shutdown = settings.on_shutdown
        self.ctx.interrupted = settings.interrupted
        self.ctx.send_output_tail = self.source.shares_output_tail(settings)
        self.ctx.workroot = Path(settings.workroot)
        self.source.update_settings(settings)
        configured = self.source.configured_services()
        if configured:
            # Claimed from the next poll, not the next services refresh.
            with self._lock:
                known = {s.service_hash for s in self._services}
                self._services += [s for s in configured if s.service_hash not in known]
        self.pauses.failures = settings.pause_after_failures
        self.pauses.window = settings.pause_window
        self.retry_blocked()
        self._wake.set()

    def resume_service(self, service_hash: str) -> None:
        """The operator lifts a pause: auto claiming goes on, blocked jobs try again."""
        if self.pauses.resume(service_hash):
            self.events.publish(ServiceResumed(service_hash=service_hash,
                                               service_name=self._service_name(service_hash),
                                               why="resumed by the operator"))
        self.retry_blocked(service_hash)
        self._wake.set()

    def blocked_jobs(self) -> list[JobSnapshot]:
        """This engine's jobs whose command could not start (tickets kept claimed)."""
        return self.journal.jobs(source=self.source.key, instance=self.instance,
                                 states={JobState.BLOCKED})

    def retry_blocked(self, service_hash: str | None = None) -> list[int]:
        """Try the command of each blocked job (of one service) again."""
        started = []
        for snap in self.blocked_jobs():
            if service_hash is not None and snap.service_hash != service_hash:
                continue
            if self._execution(snap.job_id) is not None or not self._claiming:
                continue
            self._launch(snap.job_id)
            started.append(snap.job_id)
        return started

    def _service_name(self, service_hash: str) -> str:
        with self._lock:
            for s in self._services:
                if s.service_hash == service_hash:
                    return s.name
        return ""

    # -- manual operations (block on the network) -------------------------------------------
    def claim_next(self, service_hashes: Sequence[str] | None = None, *,
                   run: bool = False) -> JobSnapshot | None:
        """Claim the next ready ticket of these services (default: all with a command).
        The inputs are fetched at once; with `run` the command starts right after."""
        if not self._services:
            self.refresh_services()
        hashes = list(service_hashes or [s.service_hash for s in self._services
                                         if self.command_for(s.service_hash)])
        if not hashes:
            raise EngineError("no service to claim for: configure a command for a service, "
                              "or choose the services to claim from")
        # A paused service claims nothing, by hand either: its next ticket would only fail
        # or block like the last ones.
        paused = {h: why for h in hashes if (why := self.pauses.reason(h))}
        hashes = [h for h in hashes if h not in paused]
        if not hashes:
            name, why = next((self._service_name(h) or h[:10], why) for h, why in paused.items())
            raise EngineError(f"service {name} is paused ({why}); resume it to claim again")
        if not self._claiming:
            raise EngineError("the console is shutting down; no more claims")
        return self._claim(hashes, run=run)

    def _claim(self, hashes: list[str], *, run: bool) -> JobSnapshot | None:
        """Claim, and register the job before anyone can see the claim count or go idle."""
        with self._lock:
            self._claims_in_flight += 1
        try:
            claimed = self.source.claim(hashes, self.provider, self.instance)
            if claimed is None:
                return None
            return self._adopt(claimed.ticket_id, claimed.service_hash, run=run,
                               details=claimed.details)
        finally:
            with self._lock:
                self._claims_in_flight -= 1

    def run_job(self, job_id: int) -> None:
        snap = self._job_without_execution(job_id, "run")
        if snap.state not in (JobState.CLAIMED, JobState.INTERRUPTED, JobState.BLOCKED):
            raise EngineError(f"ticket {snap.ticket_id} is {snap.state.value}; use Retry run")
        self._launch(job_id, fresh_run=snap.state is JobState.INTERRUPTED)

    def retry_job(self, job_id: int) -> None:
        """Run the command again from a clean work dir, if the ticket is still ours."""
        snap = self._job_without_execution(job_id, "retry")
        if snap.state not in (JobState.FAILED, JobState.CANCELLED, JobState.INTERRUPTED):
            raise EngineError(f"ticket {snap.ticket_id} is {snap.state.value}; only failed, "
                              "cancelled or interrupted jobs can be retried")
        if snap.not_retryable:
            raise EngineError(f"ticket {snap.ticket_id} cannot be retried: {snap.not_retryable}")
        status = remote_status(self.source, self.journal, job_id, snap.ticket_id)
        # `failed` is a rescue only when this console failed it and the source lets the
        # claimant turn its own failure into a success (remote_status says).
        if status.state is not RemoteState.OURS and not status.failed_by_us:
            why = self.source.not_retryable(status)
            self.journal.update_job(job_id, not_retryable=why)
            self.events.publish(JobChanged(job=self.journal.job(job_id)))
            raise EngineError(f"{self.noun} {snap.ticket_id} cannot be retried: {why}")
        self._launch(job_id, fresh_run=True)

    def cancel_job(self, job_id: int, message: str | None = None) -> None:
        """Stop the command (if any) and fail the ticket as cancelled by the provider."""
        execution = self._execution(job_id)
        if execution is not None:
            execution.cancel(message)
            return
        snap = self.journal.job(job_id)
        if snap.state.is_terminal:
            raise EngineError(f"ticket {snap.ticket_id} is already {snap.state.value}")
        reason = self.source.words.cancelled + (f": {message}" if message else "")
        self._finish_without_run(snap, JobState.CANCELLED, reason)

    def fail_job(self, job_id: int, message: str) -> None:
        """Fail the ticket with the operator's message (stopping its command first)."""
        if not message.strip():
            raise EngineError("a failure needs a message for the user")
        execution = self._execution(job_id)
        if execution is not None:
            execution.fail_with(message)
            return
        snap = self.journal.job(job_id)
        if snap.state is JobState.SUCCEEDED:
            raise EngineError(f"ticket {snap.ticket_id} already succeeded")
        self._finish_without_run(snap, JobState.FAILED, message)

    def upload_result(self, job_id: int, workspace: str | Path) -> None:
        """Upload a result workspace the operator picked, then mark the ticket a success."""
        snap = self._job_without_execution(job_id, "upload a result for")
        if not self.source.rules.operator_result:
            raise EngineError(self.source.words.no_operator_result)
        if snap.state is JobState.SUCCEEDED:
            raise EngineError(f"ticket {snap.ticket_id} already succeeded")
        if self.journal.pending_final(job_id):
            raise EngineError(f"ticket {snap.ticket_id} is still sending a result")
        path = Path(workspace)
        if not path.is_file():
            raise EngineError(f"{path} is not a file")
        self._launch(job_id, upload=path)

    # -- internals --------------------------------------------------------------------------
    def _adopt(self, ticket_id: int, service_hash: str, *, run: bool,
               details: dict[str, Any] | None = None) -> JobSnapshot:
        workdir = ticket_workdir(self.settings.workroot, self.source.key, ticket_id, self.noun)
        job_id = self.journal.create_job(
            source=self.source.key, ticket_id=ticket_id, service_hash=service_hash,
            service_name=self._service_name(service_hash), instance=self.instance,
            workdir=str(workdir), details=details)
        self._launch(job_id, prefetch_only=not run)
        with self._lock:
            self.claims_made += 1
        self.events.publish(JobChanged(job=self.journal.job(job_id)))
        return self.journal.job(job_id)

    def _launch(self, job_id: int, *, fresh_run: bool = False, prefetch_only: bool = False,
                upload: Path | None = None, follow: bool = False,
                restarted: bool = False) -> JobExecution:
        snap = self.journal.job(job_id)
        # By the job's own service name: the live service list may not be loaded yet.
        command = self._command(snap.service_name, snap.service_hash)
        execution = JobExecution(self.ctx, job_id, command,
                                 fresh_run=fresh_run, prefetch_only=prefetch_only,
                                 upload=upload, follow=follow,
                                 restarted=restarted, on_finished=self._on_job_finished)
        with self._lock:
            self._executions[job_id] = execution
        execution.start()
        return execution

    def _execution(self, job_id: int) -> JobExecution | None:
        with self._lock:
            execution = self._executions.get(job_id)
        return execution if execution is not None and execution.alive else None

    def _live_executions(self) -> list[JobExecution]:
        with self._lock:
            return [e for e in self._executions.values() if e.alive]

    def _job_without_execution(self, job_id: int, verb: str) -> JobSnapshot:
        snap = self.journal.job(job_id)
        if self._execution(job_id) is not None:
            raise EngineError(f"cannot {verb} ticket {snap.ticket_id}: it is busy "
                              f"({snap.state.value})")
        return snap

    def _finish_without_run(self, snap: JobSnapshot, state: JobState, reason: str) -> None:
        kind = OutcomeKind.CANCELLED if state is JobState.CANCELLED else OutcomeKind.FAILED
        calls = self._failure_calls(snap, kind, reason)
        items = self.journal.transition(snap.job_id, state, reason, check=False, calls=calls,
                                        drop_final=True)
        self.outbox.announce(items)
        self.events.publish(JobChanged(job=self.journal.job(snap.job_id)))

    def _failure_calls(self, snap: JobSnapshot, kind: OutcomeKind, reason: str,
                       output: Path | None = None) -> list[OutboxCall]:
        """The source's calls that end a job the engine fails without a running command."""
        calls = self.source.failure_calls(Ending(
            kind=kind, reason=reason, told=False, tail_file=NO_FILE,
            shared_output=(lambda: output) if output is not None else NO_FILE))
        return [(name, {**payload, "ticket": snap.ticket_id}) for name, payload in calls]

    def _on_job_finished(self, job_id: int) -> None:
        with self._lock:
            execution = self._executions.get(job_id)
        # The breaker hears how it ended before the job stops counting as running: a claim
        # in between must see it in one or the other (pauses.may_start).
        if execution is not None and execution.command_result is not None:
            snap = self.journal.job(job_id)
            if execution.command_result != "succeeded":
                pause = self.pauses.failed(snap.service_hash, snap.reason or "failed")
                if pause is not None:
                    self._say_paused(snap.service_hash, snap.service_name, pause.reason)
            elif self.pauses.succeeded(snap.service_hash):
                self.events.publish(ServiceResumed(
                    service_hash=snap.service_hash, service_name=snap.service_name,
                    why=f"ticket {snap.ticket_id} succeeded"))
        with self._lock:
            if self._executions.get(job_id) is execution:
                self._executions.pop(job_id, None)
            self._last_job_end = time.monotonic()
        self._wake.set()  # a slot is free: claim the next ticket without waiting for a poll

    def _on_job_blocked(self, snap: JobSnapshot, reason: str) -> None:
        if self.pauses.block(snap.service_hash, reason):
            self._say_paused(snap.service_hash, snap.service_name,
                             f"{reason}; tickets stay claimed until the command is fixed")

    def _on_command_started(self, snap: JobSnapshot) -> None:
        if self.pauses.started(snap.service_hash):
            self.events.publish(ServiceResumed(service_hash=snap.service_hash,
                                               service_name=snap.service_name,
                                               why="its command started"))
            self.retry_blocked(snap.service_hash)
            self._wake.set()

    def _say_paused(self, service_hash: str, name: str, reason: str) -> None:
        self.events.publish(ServicePaused(service_hash=service_hash, service_name=name,
                                          reason=reason))

    def _on_ticket_gone(self, job_id: int, message: str) -> None:
        execution = self._execution(job_id)
        if execution is not None:
            self.journal.update_job(job_id, not_retryable=f"the ticket is no longer ours on "
                                                          f"the server ({message})")
            execution.ticket_gone(message)
            return
        snap = self.journal.job(job_id)
        if not snap.state.is_terminal:
            self.journal.transition(job_id, JobState.CANCELLED, f"the ticket went away: "
                                                                f"{message}", check=False,
                                    not_retryable=f"the ticket is no longer ours on the "
                                                  f"server ({message})")
            self.events.publish(JobChanged(job=self.journal.job(job_id)))
        self.events.publish(EngineNotice(level="warning", job_id=job_id,
                                         text=f"{self.noun} {snap.ticket_id}: {message}"))

    def _on_source_event(self, event: SourceEvent) -> None:
        """From the source's push channel (its own thread)."""
        if isinstance(event, NewWork):
            self._wake.set()
        elif isinstance(event, WorkGone):
            wanted = set(event.ticket_ids)
            for execution in self._live_executions():
                snap = self.journal.job(execution.job_id)
                if event.all or snap.ticket_id in wanted:
                    self.journal.update_job(execution.job_id,
                                            not_retryable=self.source.words.killed)
                    if event.all:  # the server left these open: they end here, killed
                        execution.killed_on_node("every run of this node")
                    else:
                        execution.ticket_gone("killed on the server", killed=True)
        elif isinstance(event, Connection):
            self.events.publish(EngineNotice(
                level="info", text="push events: connected" if event.connected else
                "push events: disconnected; polling until they are back"))

    def _on_call_refused(self, job_id: int, item: OutboxItem, message: str) -> None:
        snap = self.journal.job(job_id)
        self.events.publish(EngineNotice(
            level="error", job_id=job_id,
            text=f"{self.noun} {snap.ticket_id}: the server refused {item.summary}: {message}"))
        if not carries_result(item):
            return
        # Without its result the job cannot succeed (a file refused, a result that cannot be
        # encrypted for its requester), and it must still end, or its requester waits
        # forever: in one transaction, replace the rest of the result phase with a failure
        # the requester is told about.
        verb = "uploaded" if item.kind == "upload" else "sent"
        reason = f"the result could not be {verb} ({message})"
        output = item.payload.get("output")
        calls = self._failure_calls(snap, OutcomeKind.CRASHED, self._told(reason),
                                    Path(output) if output else None)
        items = self.journal.transition(job_id, snap.state, reason, check=False, calls=calls,
                                        drop_final=True, details=details_with_outcome(
                                            snap.details, calls) or snap.details)
        self.outbox.announce(items)

    def _told(self, reason: str) -> str:
        """A reason with an error's text in it (a local file's path), as the user reads it."""
        return Redactor.build(paths={"<workroot>": self.settings.workroot}).text(reason)

    # -- recovery ---------------------------------------------------------------------------
    def recover(self, *, run_claimed: bool = False) -> list[int]:
        """Handle this instance's jobs left unfinished by a previous run."""
        resumed = []
        mine = [j for j in self.journal.jobs(source=self.source.key)
                if j.instance == self.instance and not j.state.is_terminal]
        for snap in mine:
            if snap.state is JobState.UPLOADING:
                self._launch(snap.job_id)
                resumed.append(snap.job_id)
                continue
            if snap.state is JobState.BLOCKED:
                self._launch(snap.job_id)  # the settings may have been fixed meanwhile
                resumed.append(snap.job_id)
                continue
            if snap.state is JobState.CLAIMED:
                if run_claimed:
                    self._launch(snap.job_id)
                    resumed.append(snap.job_id)
                continue
            recovery = self._recover_command(snap)
            if recovery.follow:
                self._launch(snap.job_id, follow=True)
                resumed.append(snap.job_id)
                continue
            was = snap.state.value
            if snap.state is not JobState.INTERRUPTED:
                self.journal.transition(snap.job_id, JobState.INTERRUPTED,
                                        f"dss-console stopped while the job was {was}",
                                        check=False, **command_forgotten())
            for note in recovery.notes:
                self.events.publish(EngineNotice(
                    level="warning", job_id=snap.job_id,
                    text=f"{self.noun} {snap.ticket_id}: {note}"))
            self.events.publish(JobChanged(job=self.journal.job(snap.job_id)))
            if self.settings.interrupted == "fail":
                self._finish_without_run(
                    self.journal.job(snap.job_id), JobState.FAILED,
                    "the provider restarted while this ticket was being processed")
            else:
                self._launch(snap.job_id, fresh_run=True, restarted=True)
            resumed.append(snap.job_id)
        return resumed

    def _recover_command(self, snap: JobSnapshot) -> Recovery:
        """Ask the job's executor what became of its command: follow it (it ran on without
        us), or it cleaned up what was left (a process group, a held cluster job)."""
        executor = self.executors.get(snap.executor)
        if executor is None:
            return Recovery()
        return executor.recover(snap.execution or ExecutorDetails(snap.executor),
                                JobRef(snap.instance, snap.job_id, snap.attempt),
                                grace=self.ctx.grace_period)

    # -- auto mode --------------------------------------------------------------------------
    def _poll_loop(self) -> None:
        idle_since = time.monotonic()
        error_backoff = 0.0
        last_cleanup = 0.0
        last_refresh = time.monotonic()
        last_blocked_retry = time.monotonic()
        while not self._stopping.is_set():
            self._wake.clear()  # before polling: a wake-up during the poll is not lost
            interval = self.settings.poll_interval
            try:
                if time.monotonic() - last_refresh > SERVICES_REFRESH:
                    last_refresh = time.monotonic()
                    self.refresh_services()
                started = time.monotonic()
                found = self._poll_once()
                error_backoff = 0.0
                if found:
                    idle_since = time.monotonic()
                else:
                    self._last_empty_poll = started
            except Exception as exc:
                kind = self.source.classify(exc)
                self._note_failure(kind, exc)
                error_backoff = min(60.0, max(interval, error_backoff * 2 or interval))
                self.events.publish(EngineNotice(
                    level="error" if kind is not Failure.GONE else "warning",
                    text=f"polling for {self.noun}s failed: {exc}"))
            if time.monotonic() - last_blocked_retry > BLOCKED_RETRY:
                last_blocked_retry = time.monotonic()
                self.retry_blocked()
            if time.monotonic() - last_cleanup > CLEANUP_EVERY:
                last_cleanup = time.monotonic()
                self._start_cleanup()
            if self._stopping.is_set():
                break
            wait = poll_wait(interval, time.monotonic() - idle_since, error_backoff)
            if self._polled:
                # The real wait (slower when idle or after errors), so a countdown is right.
                self._polled = False
                self.events.publish(PollCompleted(ready=dict(self._last_ready),
                                                  next_poll_in=wait))
            self._wake.wait(wait)

    def _note_failure(self, kind: Failure, exc: BaseException) -> None:
        if kind is Failure.LOGGED_OUT:
            self.connection.set(LOGGED_OUT_STATE, str(exc))
        elif kind is Failure.TRANSIENT and getattr(exc, "status", None) is None:
            self.connection.set(OFFLINE, str(exc))
        else:
            self.connection.reply_received()

    def _refuse_unconfigured(self) -> None:
        """Work for a service this worker does not run is answered now (a vantage6 run "not
        allowed"), so its requester is not left waiting (the source ends it). The allowlist
        holds whether Auto mode is on or not."""
        with self.connection.call():
            refused = self.source.refuse_unconfigured()
        for refusal in refused:  # recorded: the jobs list and the audit show them
            job_id = record_refusal(
                self.journal, source_key=self.source.key, instance=self.instance,
                workdir=ticket_workdir(self.settings.workroot, self.source.key, refusal.run_id,
                                       self.noun),
                refusal=refusal)
            self.events.publish(JobChanged(job=self.journal.job(job_id)))
            self.events.publish(EngineNotice(level="info", job_id=job_id, text=refusal.note))

    def _poll_once(self) -> bool:
        if not self._claiming or self._stopping.is_set():
            return False
        if not self.auto:
            self._refuse_unconfigured()
            return False
        if self.max_tickets is not None and self.claims_made >= self.max_tickets:
            return False
        if not self._services:
            self.refresh_services()
        self._refuse_unconfigured()
        free = self.settings.concurrency - self.active_count()
        candidates = [s for s in self.services() if s.command and s.auto]
        self._check_commands(candidates)
        eligible = [s.service_hash for s in candidates if s.command
                    and not self.pauses.reason(s.service_hash)
                    and self._service_has_slot(s.service_hash, s.command)]
        subtasks = self._claim_subtasks([s.service_hash for s in candidates
                                         if not self.pauses.reason(s.service_hash)],
                                        free <= 0 or len(eligible) < len(candidates))
        if subtasks:
            free = self.settings.concurrency - self.active_count()
        if not eligible:
            if subtasks:
                return True
            self._last_ready = {}
            return False
        with self.connection.call():
            ready = self.source.available(eligible)
        self.connection.reached()
        self._last_ready = ready
        self._polled = True
        found = False
        for service_hash, count in ready.items():
            command = self.command_for(service_hash)
            # A pause that starts mid-poll (the first claim blocked) stops the next claim.
            while (free > 0 and count > 0 and self._claiming and command
                   and not self.pauses.reason(service_hash)
                   and self._service_has_slot(service_hash, command)
                   and (self.max_tickets is None or self.claims_made < self.max_tickets)):
                # One service per claim, so a busy service cannot take another's slot.
                if self._claim([service_hash], run=True) is None:
                    break
                free -= 1
                count -= 1
                found = True
        return found or bool(ready)

    def _claim_subtasks(self, hashes: list[str], slots_full: bool) -> bool:
        """A subtask never waits for a slot its parent holds (the parent waits for it, so
        waiting would deadlock): with the slots full, claim pending subtask runs anyway.
        With a free slot the normal claim takes them first."""
        if not slots_full or not hashes or not self._claiming:
            return False
        found = False
        while self._claiming and not self._stopping.is_set():
            with self._lock:
                self._claims_in_flight += 1
            try:
                claimed = self.source.claim_subtask(hashes, self.provider, self.instance)
                if claimed is None:
                    break
                self._adopt(claimed.ticket_id, claimed.service_hash, run=True,
                            details=claimed.details)
                found = True
            finally:
                with self._lock:
                    self._claims_in_flight -= 1
        return found

    def _check_commands(self, services: list[ServiceView]) -> None:
        """A command that cannot start claims nothing: pause its service before a claim
        (and lift that pause once the command would start and no ticket waits on it)."""
        for view in services:
            assert view.command is not None
            spec = self.source.preflight_spec(view.service_hash, view.command)
            if spec is None:
                continue  # e.g. the program's name has a placeholder: checked at start
            executor = self.executors.get(view.command.executor)
            problem = f"no executor named {view.command.executor!r} in this engine" \
                if executor is None else executor.preflight(spec, Path(self.settings.workroot))
            if problem is not None:
                reason = f"the command cannot start: {problem}"
                if self.pauses.block(view.service_hash, reason):
                    self._say_paused(view.service_hash, view.name, reason)
                continue
            pause = self.pauses.pause(view.service_hash)
            if (pause is not None and pause.kind == BLOCKED
                    and not any(j.service_hash == view.service_hash
                                for j in self.blocked_jobs())
                    and self.pauses.started(view.service_hash)):
                self.events.publish(ServiceResumed(service_hash=view.service_hash,
                                                   service_name=view.name,
                                                   why="its command can start"))

    def _service_has_slot(self, service_hash: str, command: ServiceCommand) -> bool:
        running = self.active_count(service_hash)
        if not self.pauses.may_start(service_hash, running):
            return False  # those running may still fail: no more than the breaker allows
        return command.max_jobs is None or running < command.max_jobs

    def _start_cleanup(self) -> None:
        """Retention runs on its own thread: walking old work dirs must not delay polling."""
        if self._cleanup_thread is not None and self._cleanup_thread.is_alive():
            return
        self._cleanup_thread = threading.Thread(target=self._cleanup_old_workdirs,
                                                name="retention", daemon=True)
        self._cleanup_thread.start()

    def _cleanup_old_workdirs(self) -> None:
        root = Path(self.settings.workroot)
        # Every source's unfinished jobs and those still owing calls keep their files. Asked
        # by state, not by reading every job ever run (a worker's journal holds months of them).
        unfinished = {s for s in JobState if not s.is_terminal}
        keep = {Path(j.workdir) for j in self.journal.jobs(states=unfinished)}
        keep |= {Path(self.journal.job(job_id).workdir)
                 for job_id in self.journal.jobs_with_pending()}
        removed = remove_old_workdirs(root, self.settings.retention_days, keep)
        if removed:
            self.events.publish(EngineNotice(
                level="info", text=f"removed {len(removed)} work dirs older than "
                                   f"{self.settings.retention_days:g} days"))


def journal_path(data_dir: Path) -> Path:
    return data_dir / "journal.sqlite3"


__all__ = ["Engine", "EngineError", "ServiceView", "journal_path", "server_slug"]
