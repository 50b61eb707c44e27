"""The engine: jobs, the scheduler (manual operations and auto mode), crash recovery.

Qt-free. The GUI and the headless worker drive it through the methods below and watch it
through `events`. Methods that talk to the server block; call them off the GUI thread.

This module holds the engine's state, its lifecycle, queries, services and the jobs'
executions; the rest is mixed in, one job per module: the operator's actions
(engine/actions.py), auto mode (engine/scheduler.py), start-up recovery (engine/recovery.py)
and the answers to the server and the source (engine/reactions.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dss_console.core.executor import Executor
from dss_console.core.history import ServiceHistory
from dss_console.core.interfaces import (
    NO_FILE,
    Ending,
    OutboxCall,
    OutcomeKind,
    Source,
    SourceService,
)
from dss_console.engine.actions import EngineError, OperatorActions
from dss_console.engine.connection import ConnectionState
from dss_console.engine.decisions import GateDecisions
from dss_console.engine.events import (
    EngineNotice,
    EventBus,
    JobChanged,
    JobSnapshot,
    ServicePaused,
    ServiceResumed,
)
from dss_console.engine.gate import Decision
from dss_console.engine.jobs import JobContext, JobExecution
from dss_console.engine.journal import Journal
from dss_console.engine.ledger import make_ledger_dir
from dss_console.engine.ledger_index import DAYS, LedgerIndex
from dss_console.engine.ledger_records import claim_entry
from dss_console.engine.ledger_sign import (
    Ed25519PrivateKey,
    SigningUnavailable,
    public_text,
    signer,
    signing_key,
    write_public_key,
)
from dss_console.engine.ledger_verify import Verdict, verify_file
from dss_console.engine.ledger_writer import LedgerWriter
from dss_console.engine.outbox import Outbox
from dss_console.engine.pauses import ServicePauses
from dss_console.engine.reactions import Reactions
from dss_console.engine.recovery import StartupRecovery
from dss_console.engine.scheduler import Scheduler, ServiceView, poll_wait
from dss_console.engine.settings import ServiceCommand, Settings
from dss_console.engine.states import JobState
from dss_console.engine.workdirs import server_slug, ticket_workdir


class Engine(OperatorActions, GateDecisions, Scheduler, StartupRecovery, Reactions):
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
                              workroot=Path(settings.workroot),
                              approval_rules=list(settings.approval_rules))
        self.noun = source.words.job  # in what the operator reads
        # The ledger beside the journal (engine/ledger.py): every step, hash-chained, and
        # signed when the settings ask (the key from the keyring; refused in words if none).
        signing = ledger_signing(journal.path.parent) if settings.sign_ledger else None
        self._signing_refused = signing if isinstance(signing, str) else None
        key = None if signing is None or isinstance(signing, str) else signing
        self.ledger = LedgerWriter(journal, source.key, journal.path.parent,
                                   instance=self.instance, on_notice=self._ledger_notice,
                                   details_filter=source.ledger_details,
                                   on_appended=self._follow_index,
                                   signer=signer(key) if key is not None else None,
                                   signing=public_text(key) if key is not None else None)
        self._index: LedgerIndex | None = None  # the writer's, kept open (its thread only)
        self.pauses = ServicePauses(settings.pause_after_failures, settings.pause_window)
        self._lock = threading.RLock()
        self._executions: dict[int, JobExecution] = {}
        # Jobs waiting for a decision: job -> (state, service key, since); kept from the
        # engine's own JobChanged events (engine/decisions.py), rebuilt at start.
        self._waiting: dict[int, tuple[JobState, str, float]] = {}
        # One decision at a time (window, cli, timeout): each re-reads its job under it.
        self._deciding = threading.RLock()
        self.events.subscribe(self._track_waiting)
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
        # What a previous run queued for the ledger is written before anything moves.
        if self._signing_refused is not None:
            self.events.publish(EngineNotice(level="error", text=self._signing_refused))
        self.ledger.start()
        self.outbox.start()
        self._load_waiting()
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
        self.ledger.stop()
        if self._index is not None:
            self._index.close()
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
    def jobs(self, limit: int | None = None,
             finished_since: float | None = None) -> list[JobSnapshot]:
        """This engine's jobs (a shared journal also holds other instances'); with
        ``finished_since``, only those that ended at or after it."""
        return self.journal.jobs(source=self.source.key, instance=self.instance, limit=limit,
                                 finished_since=finished_since)

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

    # -- the ledger (read: the audit view, `audit stats`, the history chart) ---------------
    def _follow_index(self, ledger: Path, _lines: list[tuple[int, bytes]]) -> None:
        if self._index is None:
            self._index = LedgerIndex(ledger, keep_open=True)
        self._index.catch_up()

    def ledger_page(self, before: int | None = None, limit: int = 100,
                    job: int | None = None) -> list[dict[str, Any]]:
        """Records newest first (before seq ``before``; of one local job)."""
        return LedgerIndex(self.ledger.path).page(before=before, limit=limit, job=job)

    def ledger_verify(self) -> Verdict:
        # The head first: the file holds at least what it names.
        head = self.journal.ledger_head(self.source.key)
        return verify_file(self.ledger.path, head, public_key=self.ledger.signing)

    def ledger_stats(self, now: float | None = None,
                     days: int = DAYS) -> dict[str, ServiceHistory]:
        """Per service name: jobs ended per hour (last day) and per day, medians."""
        return LedgerIndex(self.ledger.path).stats(time.time() if now is None else now, days)

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
        self.ctx.approval_rules = list(settings.approval_rules)
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

    # -- internals --------------------------------------------------------------------------
    def _adopt(self, ticket_id: int, service_hash: str, *, run: bool,
               details: dict[str, Any] | None = None) -> JobSnapshot:
        workdir = ticket_workdir(self.settings.workroot, self.source.key, ticket_id, self.noun)
        job_id = self.journal.create_job(
            source=self.source.key, ticket_id=ticket_id, service_hash=service_hash,
            service_name=self._service_name(service_hash), instance=self.instance,
            workdir=str(workdir), details=details,
            ledger=[claim_entry(self.source.ledger_details(details or {}))])
        self._launch(job_id, prefetch_only=not run)
        with self._lock:
            self.claims_made += 1
        self.events.publish(JobChanged(job=self.journal.job(job_id)))
        return self.journal.job(job_id)

    def _launch(self, job_id: int, *, fresh_run: bool = False, prefetch_only: bool = False,
                upload: Path | None = None, follow: bool = False,
                restarted: bool = False, decision: Decision | None = None) -> JobExecution:
        snap = self.journal.job(job_id)
        # By the job's own service name: the live service list may not be loaded yet.
        command = self._command(snap.service_name, snap.service_hash)
        execution = JobExecution(self.ctx, job_id, command,
                                 fresh_run=fresh_run, prefetch_only=prefetch_only,
                                 upload=upload, follow=follow, restarted=restarted,
                                 decision=decision, on_finished=self._on_job_finished)
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

    def _finish_without_run(self, snap: JobSnapshot, state: JobState, reason: str, *,
                            kind: OutcomeKind | None = None, drop_held: bool = False) -> None:
        """End a job no command runs for (``drop_held``: its held result stays here)."""
        kind = kind or (OutcomeKind.CANCELLED if state is JobState.CANCELLED
                        else OutcomeKind.FAILED)
        calls = self._failure_calls(snap, kind, reason)
        held = bool(self.journal.held_items(snap.job_id))
        items = self.journal.transition(snap.job_id, state, reason, check=False, calls=calls,
                                        drop_final=True, drop_held=drop_held or held,
                                        waiting_since=None)
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

    def _ledger_notice(self, level: str, text: str) -> None:
        self.events.publish(EngineNotice(level=level, text=text))

    def _say_paused(self, service_hash: str, name: str, reason: str) -> None:
        self.events.publish(ServicePaused(service_hash=service_hash, service_name=name,
                                          reason=reason))


def ledger_signing(data_dir: Path) -> Ed25519PrivateKey | str:
    """The ledger's signing key (its public half written beside the ledgers), or why there
    is none, in words."""
    try:
        key = signing_key(data_dir)
        make_ledger_dir(data_dir)
        write_public_key(data_dir, key)
    except (SigningUnavailable, OSError) as exc:
        return f"the ledger is not signed although sign_ledger = true: {exc}"
    return key


def journal_path(data_dir: Path) -> Path:
    return data_dir / "journal.sqlite3"


__all__ = ["Engine", "EngineError", "ServiceView", "journal_path", "poll_wait",
           "server_slug"]
