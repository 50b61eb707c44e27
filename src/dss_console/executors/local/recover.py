"""After a crash: stop what the previous run's local commands left running."""

from __future__ import annotations

import contextlib
import os
import signal
import time

__all__ = ["kill_orphaned_group", "process_identity"]


def process_identity(pid: int) -> str | None:
    """Start time of a process (Linux), so a recorded pid is not mistaken for a reused one."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return fields[19]  # starttime, field 22 of stat
    except (OSError, IndexError):
        return None


def kill_orphaned_group(pgid: int | None, pid: int | None, identity: str | None,
                        grace: float = 5.0) -> bool:
    """After a crash, stop a command group the previous run left behind. True if it did."""
    if not pgid or os.name != "posix":
        return False
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    if pid and identity is not None:
        current = process_identity(pid)
        if current is not None and current != identity:
            return False  # that pid now belongs to an unrelated process
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
        # A stopped group (Ctrl-Z, SIGSTOP) only acts on SIGTERM once it runs again.
        os.killpg(pgid, signal.SIGCONT)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)  # polling a process group's existence has no event to wait on
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    return True
