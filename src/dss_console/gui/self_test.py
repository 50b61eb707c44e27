"""What every source's sandbox self-test uses (`dss-console --sandbox [NAME] --self-test`):
the failure it raises and waiting on a condition of the window."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

__all__ = ["SelfTestFailed", "until"]


class SelfTestFailed(Exception):
    pass


async def until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Wait until ``condition()`` is true (an exception in it counts as not yet); raises
    SelfTestFailed naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if condition():
                return
        if time.monotonic() > deadline:
            raise SelfTestFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)
