"""Waiting on a condition with a deadline: the only way tests synchronise."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 30.0, interval: float = 0.05,
             what: str = "the condition") -> T:
    """Return the first truthy value of `condition()`; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: T = condition()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
        last = condition()
    return last


def process_gone(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


STAYS_OUT = 2.0  # seconds a logged-out session must stay out before a test relies on it


def end_session(server: str, session_id: str, timeout: float = 20.0) -> None:
    """Log a session out on the server and wait until it stays out: web.py saves a session
    at the end of every request, so a request in flight while it is killed brings it back
    (the console's own calls, say). Repeat until a check says 401."""
    import requests

    cookie = {"webpy_session_id": session_id}

    def out() -> bool:
        return requests.get(server + "/api/login", cookies=cookie, timeout=10).status_code == 401

    def ended() -> bool:
        requests.get(server + "/logout", cookies=cookie, allow_redirects=False, timeout=10)
        if not out():
            return False
        # A request that was in flight at the logout saves the session when it ends, which
        # under load can be after the first 401: the session must stay out for a while.
        stable_until = time.monotonic() + STAYS_OUT
        while time.monotonic() < stable_until:
            if not out():
                return False
            time.sleep(0.1)
        return True

    wait_for(ended, timeout, interval=0.2, what="the session to end on the server")
