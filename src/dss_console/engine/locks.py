"""One engine per instance code and server on a machine.

Two engines sharing a journal with the same instance code would each take the other's
running jobs for interrupted ones; an advisory lock file prevents that.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

from dss_console import paths
from dss_console.engine.workdirs import server_slug


class InstanceBusyError(Exception):
    pass


def instance_lock(data_dir: Path, server: str, instance: str) -> IO[str]:
    """Hold the lock for as long as the returned file stays open."""
    folder = paths.ensure_private_dir(data_dir / "locks")
    handle = open(folder / f"{server_slug(server)}__{instance}.lock", "a+")  # noqa: SIM115
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no flock; the journal still works
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise InstanceBusyError(
            f"another worker or console with instance code {instance!r} is already running for "
            f"{server} on this machine; give this one a different instance code") from None
    return handle
