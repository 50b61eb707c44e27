"""One view of the server connection for the whole engine: polls and deliveries both report
how their calls went, and a call that gets no reply for a few seconds says so at once instead
of when its timeout (up to a minute) ends.

States published as `ConnectionChanged`: online | waiting (a call has had no reply for a
while) | offline (unreachable, retrying) | logged_out (session expired).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from dss_console.engine.events import ConnectionChanged, EventBus

ONLINE, WAITING, OFFLINE, LOGGED_OUT = "online", "waiting", "offline", "logged_out"
SLOW_REPLY = 5.0  # seconds without a reply before the state says "waiting"


class ConnectionState:
    def __init__(self, events: EventBus, *, slow_after: float = SLOW_REPLY):
        self.events = events
        self.slow_after = slow_after
        self._lock = threading.RLock()  # a subscriber may ask for the state
        self._state = ONLINE
        self._detail = ""
        self._in_flight: dict[int, float] = {}
        self._ids = itertools.count()
        self._wake = threading.Event()
        self._stopped = False
        self._watchdog: threading.Thread | None = None

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    def set(self, state: str, detail: str = "", *, only_from: tuple[str, ...] | None = None
            ) -> None:
        """Change the state (and say so). With `only_from`, only when the current state is
        one of those, decided under the lock: threads race to report, and e.g. a slow-reply
        note must never overwrite a "logged out" another thread just set."""
        with self._lock:
            if only_from is not None and self._state not in only_from:
                return
            if state == self._state and (state != WAITING or detail == self._detail):
                return
            self._state, self._detail = state, detail
            # Published under the lock, so subscribers see the changes in the order made.
            self.events.publish(ConnectionChanged(state=state, detail=detail))

    def reached(self) -> None:
        """A call went through. It does not undo "logged out": a call that started before
        the session ended may still succeed; only a new session does (`set(ONLINE)`)."""
        self.set(ONLINE, only_from=(ONLINE, WAITING, OFFLINE))

    def reply_received(self) -> None:
        """An error reply is still a reply: the server is there."""
        self.set(ONLINE, only_from=(WAITING, OFFLINE))

    @contextmanager
    def call(self) -> Iterator[None]:
        """Around one server call: a reply (any reply) means the server is there."""
        call_id = next(self._ids)
        with self._lock:
            self._in_flight[call_id] = time.monotonic()
            if self._watchdog is None and not self._stopped:
                self._watchdog = threading.Thread(target=self._watch, name="connection",
                                                  daemon=True)
                self._watchdog.start()
        try:
            yield
        finally:
            with self._lock:
                self._in_flight.pop(call_id, None)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
        self._wake.set()

    def _watch(self) -> None:
        while not self._wake.wait(1.0):
            with self._lock:
                oldest = min(self._in_flight.values(), default=None)
            if oldest is None:
                continue
            waited = time.monotonic() - oldest
            if waited >= self.slow_after:
                self.set(WAITING, f"no reply from the server for {waited:.0f} s",
                         only_from=(ONLINE, WAITING))
