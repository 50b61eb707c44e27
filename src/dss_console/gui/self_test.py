"""What every source's sandbox self-test uses (`dss-console --sandbox [NAME] --self-test`):
the failure it raises, waiting on a condition of the window, and claiming and running the
selected service's first job through the window's own buttons."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dss_console.engine.events import JobSnapshot
    from dss_console.engine.remote import RemoteEngine
    from dss_console.gui.main_window import MainWindow

__all__ = ["SelfTestFailed", "claim_and_run", "until"]


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


async def claim_and_run(window: MainWindow, engine: RemoteEngine, noun: str) -> JobSnapshot:
    """Claim the selected service's next job and run it, as the operator's clicks on
    "Claim next" and "Run" do; the job as claimed. ``noun``: the source's word ("ticket")."""
    window.services_pane.claim_button.click()
    await until(lambda: bool(engine.jobs()), 30, f"a claimed {noun}")
    job = engine.jobs()[0]
    await until(lambda: engine.job(job.job_id).inputs_ready, 30, "its inputs")
    if not window.queue_pane.select_job(job.job_id):
        raise SelfTestFailed(f"{noun} {job.ticket_id} is not in the queue view")
    await until(lambda: window.queue_pane.buttons["run"].isEnabled(), 10,
                "the Run button to be enabled")
    window.queue_pane.buttons["run"].click()
    return job
