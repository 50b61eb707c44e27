"""What the engine does when the server speaks first: a ticket gone (the outbox heard it), a
call refused (a result that cannot be delivered ends the job as failed), the source's push
events (new work, runs killed on the server, the channel up or down).

:class:`Reactions` is mixed into :class:`~dss_console.engine.engine.Engine`; the attributes
and methods it declares are the engine's.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from dss_console.core.interfaces import (
    Connection,
    LedgerNote,
    NewWork,
    OutboxCall,
    OutcomeKind,
    Source,
    SourceEvent,
    WorkGone,
)
from dss_console.engine.calls import carries_result, details_with_outcome
from dss_console.engine.events import EngineNotice, EventBus, JobChanged, JobSnapshot
from dss_console.engine.journal import Journal, OutboxItem
from dss_console.engine.ledger import LedgerEntry
from dss_console.engine.outbox import Outbox
from dss_console.engine.redact import Redactor
from dss_console.engine.settings import Settings
from dss_console.engine.states import JobState

if TYPE_CHECKING:
    from dss_console.engine.jobs import JobExecution


class Reactions:
    """The engine's answers to the server and the source (the attributes are :class:`Engine`'s)."""

    settings: Settings
    source: Source
    journal: Journal
    events: EventBus
    outbox: Outbox
    noun: str
    instance: str
    _wake: threading.Event
    _lock: threading.RLock
    _deciding: threading.RLock
    _waiting: dict[int, tuple[JobState, str, float]]

    if TYPE_CHECKING:
        def _execution(self, job_id: int) -> JobExecution | None: ...
        def _live_executions(self) -> list[JobExecution]: ...
        def _failure_calls(self, snap: JobSnapshot, kind: OutcomeKind, reason: str,
                           output: Path | None = None) -> list[OutboxCall]: ...

    def _on_ticket_gone(self, job_id: int, message: str) -> None:
        execution = self._execution(job_id)
        if execution is not None:
            self.journal.update_job(job_id, not_retryable=f"the ticket is no longer ours on "
                                                          f"the server ({message})")
            if execution.ticket_gone(message):
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
            self._gone_while_waiting(wanted, every=event.all)
        elif isinstance(event, LedgerNote):
            # Bound to no job: the source's own step (its ids are in the data).
            self.journal.queue_ledger([LedgerEntry(event.kind, dict(event.data))],
                                      source=self.source.key, instance=self.instance)
        elif isinstance(event, Connection):
            self.events.publish(EngineNotice(
                level="info", text="push events: connected" if event.connected else
                "push events: disconnected; polling until they are back"))

    def _gone_while_waiting(self, ticket_ids: set[int], *, every: bool) -> None:
        """Work killed on the server while it waited for the operator: no execution runs to
        stop, so it ends here (its held calls dropped: nothing is sent for it)."""
        with self._lock:
            waiting = list(self._waiting)
        for job_id in waiting:
            # As a decision (engine/decisions.py): an approve or release made meanwhile
            # either started its execution (left to learn of the kill) or comes after this.
            with self._deciding:
                snap = self.journal.job(job_id)
                if not snap.state.is_waiting or not (every or snap.ticket_id in ticket_ids):
                    continue
                if self._execution(job_id) is not None:
                    continue
                self.journal.transition(job_id, JobState.CANCELLED, "killed on the server "
                                        "while it waited for a decision", check=False,
                                        drop_held=True, waiting_since=None,
                                        not_retryable=self.source.words.killed)
            self.events.publish(JobChanged(job=self.journal.job(job_id)))

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
