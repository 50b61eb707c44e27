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
