"""Typed engine events and the thread-safe bus that carries them to subscribers.

The engine publishes from its worker threads; subscribers must be quick (the GUI pushes
into a queue drained on its own thread, the headless worker prints a line).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dss_console.core.executor import ExecutorDetails
from dss_console.core.presentation import JobView
from dss_console.engine.states import JobState


@dataclass(frozen=True)
class JobSnapshot:
    """Everything a view needs about one job, at one moment."""

    job_id: int
    source: str
    ticket_id: int
    service_hash: str
    service_name: str
    state: JobState
    progress: float
    instance: str
    reason: str | None
    workdir: str
    exit_code: int | None
    claimed_at: float | None
    started_at: float | None
    finished_at: float | None
    updated_at: float
    inputs_ready: bool
    attempt: int
    owed: int  # server calls queued for this job and not yet delivered
    # Why Retry run cannot rescue this job (the ticket was deleted on the server or finished
    # by someone else), in words; None when a retry may be tried.
    not_retryable: str | None = None
    # The executor the job's command was given to ("local", "slurm"), and what it says about
    # that command (None before it said anything): where it runs, whether it waits in a queue.
    executor: str = "local"
    execution: ExecutorDetails | None = field(default=None, hash=False)
    # What the source tells about the job beyond its id (a vantage6 run: task, who asked,
    # databases, input hash and summary; see V6Source.run_details). Empty for DSS tickets.
    details: dict[str, Any] = field(default_factory=dict, hash=False)
    # The job as its source presents it (cells, summary, actions that cannot be done now):
    # set on snapshots sent to windows (engine/views.py), None inside the engine.
    view: JobView | None = field(default=None, hash=False, compare=False)
    # The operator's gate: since when the job waits for a decision (None: it does not), and
    # the decisions made, by gate ("run", "release"): {verdict, user, via, rule, at}.
    waiting_since: float | None = None
    decision: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def pending_seconds(self) -> float | None:
        """How long the command waited in its executor's queue (so far); None if it did not
        go through one."""
        execution = self.execution
        if execution is None or execution.queued_at is None:
            return None
        end = execution.running_at or self.finished_at or time.time()
        return max(0.0, end - execution.queued_at)

    @property
    def running_seconds(self) -> float | None:
        """How long a queued command has run since it left the queue (so far)."""
        execution = self.execution
        if execution is None or execution.running_at is None:
            return None
        end = self.finished_at if self.finished_at is not None else time.time()
        return max(0.0, end - execution.running_at)

    @property
    def run_started_at(self) -> float | None:
        """When the command began to run: for one that went through a queue, when it left it
        (None while it waits); else the job's start."""
        execution = self.execution
        if execution is not None and execution.queued:
            return execution.running_at
        return self.started_at

    @property
    def elapsed(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at if self.finished_at is not None else time.time()
        return max(0.0, end - self.started_at)


@dataclass(frozen=True)
class Event:
    at: float = field(default_factory=time.time, kw_only=True)


@dataclass(frozen=True)
class JobChanged(Event):
    job: JobSnapshot


@dataclass(frozen=True)
class JobOutput(Event):
    """A batch of the command's output lines: ((stream, text), ...)."""

    job_id: int
    lines: tuple[tuple[str, str], ...]
    skipped: int = 0  # lines before these left out of the live view (all are on disk)


@dataclass(frozen=True)
class JobMessage(Event):
    """A message the command reported (sent to the user), or a local engine warning."""

    job_id: int
    level: str
    text: str
    local: bool = False  # True: shown to the operator only, never sent to the server


@dataclass(frozen=True)
class CallQueued(Event):
    job_id: int
    item_id: int
    kind: str
    summary: str


@dataclass(frozen=True)
class CallDelivered(Event):
    """A queued server call reached an end state: delivered, superseded, dropped or failed."""

    job_id: int
    item_id: int
    kind: str
    summary: str
    state: str
    error: str | None = None


@dataclass(frozen=True)
class ConnectionChanged(Event):
    """online | offline (unreachable, retrying) | logged_out (session expired)."""

    state: str
    detail: str = ""


@dataclass(frozen=True)
class PollCompleted(Event):
    ready: dict[str, int]  # service hash -> ready tickets
    next_poll_in: float


@dataclass(frozen=True)
class ServicePaused(Event):
    """Auto claiming stopped for a service: its command cannot start, or it failed several
    tickets in a row. `reason` is for the operator (never sent to the server)."""

    service_hash: str
    service_name: str
    reason: str


@dataclass(frozen=True)
class ServiceResumed(Event):
    service_hash: str
    service_name: str
    why: str  # "the command started" | "resumed by the operator" | ...


@dataclass(frozen=True)
class EngineStatus(Event):
    """The engine's state besides its jobs, sent to attached windows when it changes."""

    auto: bool
    busy: tuple[int, ...]  # jobs with a live execution
    connection: str
    claims_in_flight: int
    idle_poll_completed: bool
    # Jobs waiting for the operator's decision (approve, release or reject): from a set the
    # engine keeps, not a query per status tick.
    waiting: int = 0


@dataclass(frozen=True)
class RulesEdited(Event):
    """The operator's approval rules changed (added or revoked): whoever keeps the settings
    file saves them (a worker's channel host; a console's window)."""

    rules: tuple[Any, ...]  # engine.gate.ApprovalRule (not imported here: no cycle)


@dataclass(frozen=True)
class EngineNotice(Event):
    level: str  # info | warning | error
    text: str
    job_id: int | None = None


Subscriber = Callable[[Event], None]


class EventBus:
    """Delivers each event to every subscriber, synchronously, in publish order per thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscriber] = []

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def publish(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:  # a broken view must not break the engine
                import logging

                logging.getLogger(__name__).exception("event subscriber failed")
