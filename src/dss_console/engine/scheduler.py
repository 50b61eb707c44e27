"""Auto mode: the scheduler thread polls the server, claims what the free slots and the
service pauses allow (subtasks even with the slots full), checks each command can start before
claiming for it, retries blocked jobs and removes old work dirs.

:class:`Scheduler` is mixed into :class:`~dss_console.engine.engine.Engine`; the attributes
and methods it declares are the engine's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dss_console.core.executor import Executor, StartError
from dss_console.core.interfaces import Failure, Source, SourceService
from dss_console.engine.calls import record_refusal
from dss_console.engine.connection import LOGGED_OUT as LOGGED_OUT_STATE
from dss_console.engine.connection import OFFLINE, ConnectionState
from dss_console.engine.events import (
    EngineNotice,
    EventBus,
    JobChanged,
    JobSnapshot,
    PollCompleted,
    ServiceResumed,
)
from dss_console.engine.gate import Gate, gates
from dss_console.engine.journal import Journal
from dss_console.engine.pauses import BLOCKED, ServicePauses
from dss_console.engine.settings import ServiceCommand, Settings
from dss_console.engine.states import JobState
from dss_console.engine.workdirs import remove_old_workdirs, ticket_workdir

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
    # How its command is contained, in its executor's words ("sandbox, no network, memory
    # 8 GiB"); "" when it has no command or the executor says nothing (engine/views.py).
    isolation: str = ""


class Scheduler:
    """The engine's auto mode (the attributes are :class:`Engine`'s)."""

    settings: Settings
    source: Source
    journal: Journal
    events: EventBus
    connection: ConnectionState
    pauses: ServicePauses
    executors: Mapping[str, Executor]
    provider: str
    instance: str
    noun: str
    auto: bool
    max_tickets: int | None
    claims_made: int
    _lock: threading.RLock
    _services: list[SourceService]
    _last_ready: dict[str, int]
    _last_empty_poll: float
    _polled: bool
    _wake: threading.Event
    _stopping: threading.Event
    _claiming: bool
    _claims_in_flight: int
    _cleanup_thread: threading.Thread | None

    if TYPE_CHECKING:
        def refresh_services(self) -> list[ServiceView]: ...
        def services(self) -> list[ServiceView]: ...
        def command_for(self, service_hash: str) -> ServiceCommand | None: ...
        def active_count(self, service_hash: str | None = None) -> int: ...
        def blocked_jobs(self) -> list[JobSnapshot]: ...
        def retry_blocked(self, service_hash: str | None = None) -> list[int]: ...
        def _claim(self, hashes: list[str], *, run: bool) -> JobSnapshot | None: ...
        def _adopt(self, ticket_id: int, service_hash: str, *, run: bool,
                   details: dict[str, Any] | None = None) -> JobSnapshot: ...
        def _say_paused(self, service_hash: str, name: str, reason: str) -> None: ...
        def waiting_for_approval(self, service_hash: str) -> int: ...
        def expire_decisions(self, now: float | None = None) -> list[int]: ...
        def next_decision_deadline(self) -> float | None: ...

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
            try:
                self.expire_decisions()  # one indexed query, only while decisions wait
            except Exception as exc:
                self.events.publish(EngineNotice(level="error",
                                                 text=f"a decision's timeout failed: {exc}"))
            if self._stopping.is_set():
                break
            wait = poll_wait(interval, time.monotonic() - idle_since, error_backoff)
            deadline = self.next_decision_deadline()
            if deadline is not None:  # no longer than the nearest decision's deadline
                wait = max(0.05, min(wait, deadline - time.time() + 0.05))
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
                refusal=refusal, ledger_details=self.source.ledger_details)
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
            refused: str | None = None  # a template that cannot be expanded, say
            try:
                spec = self.source.preflight_spec(view.service_hash, view.command)
            except StartError as exc:
                spec, refused = None, str(exc)
            if spec is None and refused is None:
                continue  # e.g. the program's name has a placeholder: checked at start
            executor = self.executors.get(view.command.executor)
            if executor is None:
                problem: str | None = \
                    f"no executor named {view.command.executor!r} in this engine"
            elif spec is None:
                problem = refused
            else:
                problem = executor.preflight(spec, Path(self.settings.workroot)) or \
                    executor.options_problem(
                        executor.own_options(view.command.executor_options()))
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
        if (Gate.RUN in gates(command.approve)
                and self.waiting_for_approval(service_hash) >= self.settings.approval_bound):
            return False  # its queue of work waiting for the operator's approval is full
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
