"""Why auto claiming is paused for a service.

Two reasons, both the provider's business rather than the end user's:

* *blocked*: the service's command cannot start (not found, not executable, bad template,
  missing working directory, options the cluster refuses). Claiming more tickets would only
  block more of them. Cleared as soon as a command of that service starts, or by the operator.
* *failing*: a run of consecutive command failures of one service within a short time (a
  circuit breaker). A broken environment fails every ticket in the queue within seconds;
  the breaker stops that at N: jobs already running count as failures to come, so no more
  start than could still fail (``may_start``). Cleared by the operator (Resume), or by a
  later success of the service's command (a Retry that worked).

Qt-free; thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

BLOCKED = "blocked"
FAILING = "failing"


@dataclass(frozen=True)
class Pause:
    kind: str  # blocked | failing
    reason: str  # in words, for the operator (may name local paths: never sent)
    since: float


class ServicePauses:
    def __init__(self, failures: int = 3, window: float = 900.0):
        self.failures = failures  # 0 switches the breaker off
        self.window = window
        self._lock = threading.Lock()
        self._pauses: dict[str, Pause] = {}
        self._recent: dict[str, deque[float]] = {}

    def reason(self, service_hash: str) -> str | None:
        with self._lock:
            pause = self._pauses.get(service_hash)
        return pause.reason if pause else None

    def pause(self, service_hash: str) -> Pause | None:
        with self._lock:
            return self._pauses.get(service_hash)

    def paused(self) -> dict[str, Pause]:
        with self._lock:
            return dict(self._pauses)

    def block(self, service_hash: str, reason: str) -> bool:
        """The command cannot start. True when this newly pauses the service (or changes
        why), so the caller says it once, not once per blocked ticket."""
        with self._lock:
            old = self._pauses.get(service_hash)
            if old is not None and old.kind == BLOCKED and old.reason == reason:
                return False
            self._pauses[service_hash] = Pause(BLOCKED, reason, time.time())
            return True

    def started(self, service_hash: str) -> bool:
        """A command of the service started: it is not blocked any more. True if that
        lifted a pause."""
        with self._lock:
            old = self._pauses.get(service_hash)
            if old is not None and old.kind == BLOCKED:
                del self._pauses[service_hash]
                return True
            return False

    def succeeded(self, service_hash: str) -> bool:
        """The command succeeded: the run of failures is over. True if that lifted a
        failing pause (the service works again, e.g. a retried ticket succeeded)."""
        with self._lock:
            self._recent.pop(service_hash, None)
            old = self._pauses.get(service_hash)
            if old is not None and old.kind == FAILING:
                del self._pauses[service_hash]
                return True
            return False

    def may_start(self, service_hash: str, running: int) -> bool:
        """Whether another job of the service may start, with ``running`` of its jobs
        already on their way. Once the service has failed recently, each running job may
        fail too: with the failures in a row so far they must stay under the breaker's
        limit. Before any failure the concurrency is the operator's (a limit of 3 must not
        quietly cap `concurrency = 8`), so at most max(limit, concurrency) tickets fail
        before the pause."""
        if self.failures <= 0:
            return True
        now = time.monotonic()
        with self._lock:
            recent = self._recent.get(service_hash)
            if recent is not None:
                while recent and now - recent[0] > self.window:
                    recent.popleft()
            in_a_row = len(recent) if recent is not None else 0
        return in_a_row == 0 or in_a_row + running < self.failures

    def failed(self, service_hash: str, reason: str) -> Pause | None:
        """The command failed a ticket. Returns the new pause when this trips the breaker."""
        if self.failures <= 0:
            return None
        now = time.monotonic()
        with self._lock:
            recent = self._recent.setdefault(service_hash, deque())
            recent.append(now)
            while recent and now - recent[0] > self.window:
                recent.popleft()
            if len(recent) < self.failures or service_hash in self._pauses:
                return None
            recent.clear()
            minutes = max(1, round(self.window / 60))
            tickets = "1 ticket" if self.failures == 1 else f"{self.failures} tickets"
            pause = Pause(FAILING, f"{tickets} failed in a row within {minutes} min (last: "
                                   f"{reason}); auto claiming paused until you resume it or "
                                   "a retried ticket succeeds", time.time())
            self._pauses[service_hash] = pause
            return pause

    def resume(self, service_hash: str) -> bool:
        with self._lock:
            self._recent.pop(service_hash, None)
            return self._pauses.pop(service_hash, None) is not None
