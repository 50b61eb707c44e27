"""Running blocking work (network, disk, processes) off the Qt thread.

Every client or engine call from the GUI goes through `run_blocking`, awaited from an async
slot on the qasync loop, so the event loop keeps painting while it runs.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None


def executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="gui-blocking")
    return _executor


async def run_blocking(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor(), functools.partial(func, *args, **kwargs))


def shutdown_executor(wait: bool = True) -> None:
    global _executor
    if _executor is not None:
        _executor.shutdown(wait=wait, cancel_futures=True)
        _executor = None


_tasks: set[asyncio.Task[Any]] = set()
_error_handler: Callable[[str], None] | None = None


def set_error_handler(handler: Callable[[str], None] | None) -> None:
    """Where a background task's unexpected exception is shown (the window's banner)."""
    global _error_handler
    _error_handler = handler


def spawn(coro: Any) -> asyncio.Task[Any]:
    """Schedule a coroutine from a plain slot, keeping a reference until it is done (asyncio
    holds only weak ones) and reporting an exception instead of losing it."""
    task = asyncio.ensure_future(coro)
    _tasks.add(task)

    def done(finished: asyncio.Task[Any]) -> None:
        _tasks.discard(finished)
        if not finished.cancelled() and finished.exception() is not None:
            import logging

            error = finished.exception()
            logging.getLogger("dss_console.gui").error("background task failed",
                                                       exc_info=error)
            if _error_handler is not None:
                _error_handler(f"{type(error).__name__}: {error}")

    task.add_done_callback(done)
    return task


def pending_tasks() -> set[asyncio.Task[Any]]:
    return set(_tasks)
