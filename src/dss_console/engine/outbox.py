"""The outbox: every server-bound call for a ticket, queued in the journal and delivered in
order, with back-off while the server is unreachable.

One job's calls go out strictly in order (the final status after everything queued before
it); different jobs are delivered in parallel so one slow upload does not hold back another
ticket's progress. Consecutive progress updates collapse into the latest. A restart resumes
delivery from the journal.

Kinds: progress, log, attach, upload (where the source has them); active and output (a
vantage6 run: started, its log follows the output); finish, the one call that ends a job
with its :class:`Outcome`, for every source (engine/calls.py).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dss_console.core.interfaces import Failure, RemoteState, Source
from dss_console.engine import journal as jr
from dss_console.engine.calls import is_end_call, outcome_from_payload
from dss_console.engine.connection import LOGGED_OUT as LOGGED_OUT_STATE
from dss_console.engine.connection import OFFLINE, ConnectionState
from dss_console.engine.events import (
    CallDelivered,
    CallQueued,
    EventBus,
    JobChanged,
)
from dss_console.engine.journal import Journal, OutboxItem
from dss_console.engine.ledger_records import delivered_entry

INTERNAL_ERROR_LIMIT = 5  # a call the server keeps answering 500 to is given up after this
# While a stop waits for what is owed, retry this often at most: a server back from an outage
# must not find the outbox asleep in a long back-off until the stop gives up.
FLUSH_RETRY = 1.0


class Outbox:
    def __init__(self, journal: Journal, source: Source, events: EventBus, *,
                 instance: str | None = None,
                 workers: int = 3, base_backoff: float = 1.0, max_backoff: float = 30.0,
                 logged_out_retry: float = 30.0,
                 on_gone: Callable[[int, str], None] | None = None,
                 on_refused: Callable[[int, OutboxItem, str], None] | None = None,
                 connection: ConnectionState | None = None):
        self.journal = journal
        self.source = source
        self.instance = instance  # deliver only this engine's calls from a shared journal
        self._server_errors: dict[int, int] = {}  # item id -> consecutive HTTP 500s
        self.events = events
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self.logged_out_retry = logged_out_retry
        self.on_gone = on_gone
        self.on_refused = on_refused
        self._cond = threading.Condition()
        self._busy: set[int] = set()
        self._not_before: dict[int, float] = {}
        self._paused_until = 0.0
        self._stopping = False
        self._flushing = 0  # flush() calls waiting
        self.connection_state = connection or ConnectionState(events)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="outbox")
        self._thread = threading.Thread(target=self._loop, name="outbox", daemon=True)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=True, cancel_futures=True)

    @property
    def connection(self) -> str:
        return self.connection_state.state

    # -- queueing ---------------------------------------------------------------------------
    def put(self, job_id: int, ticket_id: int, kind: str, *, held: bool = False,
            **payload: Any) -> OutboxItem:
        """Queue a call; ``held``: kept until the operator releases the job's result."""
        payload["ticket"] = ticket_id
        item = self.journal.enqueue(job_id, kind, payload, held=held)
        self.events.publish(CallQueued(job_id=job_id, item_id=item.id, kind=kind,
                                       summary=item.summary))
        if not held:
            self.wake()
        return item

    def announce(self, items: list[OutboxItem]) -> None:
        """Publish and start delivering calls queued directly through the journal."""
        for item in items:
            self.events.publish(CallQueued(job_id=item.job_id, item_id=item.id, kind=item.kind,
                                           summary=item.summary))
        self.wake()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def resume(self) -> None:
        """Retry at once (after a new login, or when the operator asks)."""
        with self._cond:
            self._paused_until = 0.0
            self._not_before.clear()
            self._cond.notify_all()

    def wait_job(self, job_id: int, timeout: float | None = None) -> bool:
        """Wait until nothing is pending for `job_id`; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self.journal.pending_count(job_id):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(timeout=0.5 if remaining is None else min(remaining, 0.5))
        return True

    def flush(self, timeout: float) -> bool:
        """Wait until nothing is pending for any job; False on timeout."""
        deadline = time.monotonic() + timeout
        self.resume()
        with self._cond:
            self._flushing += 1
            try:
                while self.owed():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(timeout=min(remaining, 0.5))
            finally:
                self._flushing -= 1
        return True

    def owed(self) -> int:
        """Calls of this engine not yet delivered."""
        return self.journal.pending_count(source=self.source.key, instance=self.instance)

    # -- delivery ---------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                now = time.monotonic()
                wait = 1.0
                if now < self._paused_until:
                    wait = self._paused_until - now
                else:
                    for job_id in self.journal.jobs_with_pending(self.source.key,
                                                                 self.instance):
                        if job_id in self._busy:
                            continue
                        not_before = self._not_before.get(job_id, 0.0)
                        if not_before > now:
                            wait = min(wait, not_before - now)
                            continue
                        self._busy.add(job_id)
                        self._pool.submit(self._drain_job, job_id)
                self._cond.wait(timeout=max(0.05, wait))

    def _drain_job(self, job_id: int) -> None:
        try:
            while not self._stopping and time.monotonic() >= self._paused_until:
                item = self.journal.next_pending(job_id)
                if item is None:
                    break
                if item.kind == "progress":
                    item, superseded = self.journal.supersede_progress(item)
                    for old in superseded:
                        self.events.publish(CallDelivered(
                            job_id=job_id, item_id=old, kind="progress",
                            summary="progress (replaced by a newer value)",
                            state=jr.SUPERSEDED))
                if not self._deliver(item):
                    break
        finally:
            with self._cond:
                self._busy.discard(job_id)
                self._cond.notify_all()
            # Views show how many calls a job still owes: give them the new count once per
            # round of deliveries (not per call: progress may be sent twice a second).
            with contextlib.suppress(KeyError, sqlite3.Error):  # a journal closed at exit
                self.events.publish(JobChanged(job=self.journal.job(job_id)))

    def _deliver(self, item: OutboxItem) -> bool:
        """Send one call. True: go on with the job's next call; False: stop for now."""
        try:
            note = self._send(item)
        except Exception as exc:  # classified below; nothing may escape a delivery thread
            return self._handle_failure(item, exc)
        state = jr.SKIPPED if note else jr.DELIVERED
        self._server_errors.pop(item.id, None)
        # The end call reaching the server is a step of the job the ledger records.
        self.journal.mark_item(item.id, state, note, ledger=[
            delivered_entry(item.job_id, item.payload, state)] if is_end_call(item) else [])
        self._not_before.pop(item.job_id, None)
        self.connection_state.reached()
        self.events.publish(CallDelivered(job_id=item.job_id, item_id=item.id, kind=item.kind,
                                          summary=item.summary, state=state, error=note))
        with self._cond:
            self._cond.notify_all()
        return True

    def _send(self, item: OutboxItem) -> str | None:
        """Perform the call; a returned text means it was deliberately skipped (why)."""
        with self.connection_state.call():
            return self._perform(item)

    def _perform(self, item: OutboxItem) -> str | None:
        p = item.payload
        ticket = int(p["ticket"])
        src = self.source
        if item.kind == "progress":
            src.send_progress(ticket, float(p["value"]))
        elif item.kind == "log":
            src.send_log(ticket, p["level"], p["message"])
        elif item.kind == "attach":
            src.send_attachment(ticket, p["description"], Path(p["path"]), p.get("mime_type"))
        elif item.kind == "upload":
            src.send_result_file(ticket, Path(p["path"]), p["name"])
        elif is_end_call(item):
            outcome = outcome_from_payload(p)
            if not outcome.success:
                # Never fail a job that already ended on the server (the command may have
                # failed its ticket itself, the user deleted it): it stays as it ended.
                current = src.remote_status(ticket)
                if current.state is not RemoteState.OURS:
                    return f"not sent: the {src.words.job} is already {current.words}"
            src.set_finished(ticket, outcome)
        elif item.kind == "active":
            src.mark_active(ticket)
        elif item.kind == "output":
            src.send_output(ticket, Path(p["path"]))
        else:
            raise ValueError(f"unknown outbox call {item.kind!r}")
        return None

    def _handle_failure(self, item: OutboxItem, exc: BaseException) -> bool:
        kind = self.source.classify(exc)
        message = str(exc)
        if kind is Failure.TRANSIENT:
            attempts = self.journal.record_attempt(item.id, message)
            status = getattr(exc, "status", None)
            errors_500 = self._server_errors.get(item.id, 0) + 1 if status == 500 else 0
            self._server_errors[item.id] = errors_500
            # A call the server answers 500 to every time (a malformed request) is given up,
            # but never the final status: a ticket must not stay claimed because of it.
            if errors_500 >= INTERNAL_ERROR_LIMIT and not is_end_call(item):
                kind = Failure.REFUSED
            else:
                delay = min(self.max_backoff, self.base_backoff * 2 ** min(attempts - 1, 10))
                if self._flushing:
                    delay = min(delay, FLUSH_RETRY)
                self._not_before[item.job_id] = time.monotonic() + delay
                if status is None:
                    self.connection_state.set(OFFLINE, message)
                else:
                    self.connection_state.reply_received()
                return False
        if kind is Failure.LOGGED_OUT:
            self.journal.record_attempt(item.id, message)
            with self._cond:
                self._paused_until = time.monotonic() + self.logged_out_retry
            self.connection_state.set(LOGGED_OUT_STATE, message)
            return False
        if kind is Failure.GONE:
            dropped = self.journal.drop_pending(item.job_id, message)
            for item_id in dropped:
                self.events.publish(CallDelivered(job_id=item.job_id, item_id=item_id,
                                                  kind="call", summary="dropped",
                                                  state=jr.DROPPED, error=message))
            if self.on_gone:
                self.on_gone(item.job_id, message)
            with self._cond:
                self._cond.notify_all()
            return False
        # REFUSED: this call will never work; record it and go on with the next one.
        self.journal.mark_item(item.id, jr.FAILED, message)
        self.events.publish(CallDelivered(job_id=item.job_id, item_id=item.id, kind=item.kind,
                                          summary=item.summary, state=jr.FAILED, error=message))
        if self.on_refused:
            self.on_refused(item.job_id, item, message)
        with self._cond:
            self._cond.notify_all()
        return True
