"""`dss-console --sandbox v6`: the real vantage6 server on 127.0.0.1 (its own venv, built on
first use), this console logged in as the node of the plain collaboration ``demo``, and a
researcher who posts the demo tasks; and the self-test's steps on it."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING

from dss_console.engine.settings import Settings, parse_settings
from dss_console.gui.self_test import SelfTestFailed, claim_and_run, until
from dss_console.gui.source_window import SandboxOptions
from dss_console.gui.tasks import run_blocking
from dss_console.sources.v6.settings import v6_settings

if TYPE_CHECKING:
    from pathlib import Path

    from dss_console.gui.main_window import MainWindow
    from dss_console.sources.v6.demo_researcher import DemoResearcher
    from dss_console.sources.v6.sandbox import V6Sandbox

__all__ = ["V6WindowSandbox", "log_in_while_researcher_starts", "run_demo_self_test",
           "use_console_dir"]


class V6WindowSandbox:
    """A gui.source_window.SourceSandbox."""

    def __init__(self) -> None:
        self.sandbox: V6Sandbox | None = None
        self.researcher: DemoResearcher | None = None  # posts the demo tasks

    async def start(self, window: MainWindow, options: SandboxOptions) -> None:
        from dss_console.commands.v6 import sandbox_settings_toml
        from dss_console.sources.v6.demo_researcher import (
            DEMO_COLUMN,
            DEMO_METHOD,
            DemoResearcher,
        )
        from dss_console.sources.v6.sandbox import DEMO_IMAGE, V6Sandbox
        from dss_console.sources.v6.venv import venv_dir, venv_ready

        first = "" if venv_ready() else (
            f" The first start builds the server's Python environment in {venv_dir()} "
            "(1–2 minutes, needs PyPI); later starts take seconds.")
        window.show_banner("Starting the vantage6 sandbox (a local vantage6 server with a demo "
                           f"collaboration, this console its data station's node)…{first}",
                           "info")
        sandbox = V6Sandbox(report=lambda line: print(f"v6 sandbox: {line}", file=sys.stderr,
                                                      flush=True))
        self.sandbox = sandbox  # stopped by stop() whatever happens from here
        await run_blocking(sandbox.start)
        console_dir = sandbox.data_dir / "console"
        use_console_dir(window, console_dir, sandbox_settings_toml(sandbox.info))
        researcher = DemoResearcher.for_sandbox(sandbox, "demo")
        self.researcher = researcher
        node = sandbox.node("station-demo")
        await log_in_while_researcher_starts(
            window, researcher, {"server": sandbox.url, "api_key": node.api_key})
        count = options.work
        await run_blocking(researcher.post_demo_tasks, count)
        window.show_banner(
            f"vantage6 sandbox running at {sandbox.url}; this console is node "
            f"{node.name!r} of collaboration 'demo', and a researcher posted {count} tasks of "
            f"{DEMO_IMAGE!r} ({DEMO_METHOD}: the mean of {DEMO_COLUMN!r} in the demo CSV). "
            "It is selected: press Claim next, or turn on Auto mode.", "info")

    async def self_test(self, window: MainWindow) -> None:
        """As the DSS one, for a vantage6 run: the engine as the node, the demo algorithm in
        the services list, Claim next, Run, its subtasks approved and results released (the
        demo is gated), the run `completed` on the server (asked as the researcher), its
        result there."""
        from dss_console.sources.v6.sandbox import DEMO_IMAGE

        await run_demo_self_test(window, self.researcher, "v6", DEMO_IMAGE, "the server")

    def stop(self) -> None:
        if self.researcher is not None:
            self.researcher.close()
        if self.sandbox is not None:
            self.sandbox.stop()


# -- shared with the 5.x sandbox (sources/v6x5/window/sandbox.py) -------------------------


def use_console_dir(window: MainWindow, console_dir: Path, settings_toml: str) -> None:
    """The window's settings, logins and data under ``console_dir``, its one [v6] table
    from the sandbox's settings fragment ``settings_toml``."""
    settings = Settings(instance="sandbox-console", workroot=console_dir / "work",
                        poll_interval=2.0, concurrency=2)
    settings.plugins["v6"] = v6_settings(parse_settings(settings_toml, console_dir / "settings"))
    window.settings = settings
    window.login_pane.keep_logins_in(console_dir / "sessions", use_keyring=False)
    window.data_dir = console_dir


async def log_in_while_researcher_starts(window: MainWindow, researcher: DemoResearcher,
                                         fields: dict[str, str]) -> None:
    """The node's login with ``fields`` in the login pane while the researcher logs in;
    RuntimeError in the pane's words if the login failed, else the researcher's failure."""
    # The tasks are posted once both are in (the node's engine then sees them at its first
    # poll or push).
    starting = asyncio.ensure_future(run_blocking(researcher.start))
    try:
        window.clear_banner()
        logged_in = await window.login_pane.log_in("v6", fields)
    finally:
        await asyncio.wait([starting])
        if not starting.cancelled():
            starting.exception()  # retrieved here, raised below unless login failed
    if not logged_in:
        raise RuntimeError(window.login_pane.message.text())
    starting.result()  # the researcher's failure, in words


async def run_demo_self_test(window: MainWindow, researcher: DemoResearcher | None, kind: str,
                             demo_image: str, server: str) -> None:
    """The self-test's steps for a window serving source ``kind``: the demo algorithm
    ``demo_image`` in the services list, Claim next, Run, the gate's approvals and releases,
    the run `completed` on ``server`` (asked as the researcher), its result there."""
    from dss_console.sources.v6.demo_researcher import FINISHED

    if researcher is None:
        raise SelfTestFailed("the sandbox's researcher did not start")
    await until(lambda: window.engine is not None, 30, "the engine to start after login")
    engine = window.engine
    assert engine is not None
    if window.source_kind != kind:
        raise SelfTestFailed(f"the window serves a {window.source_kind!r} source, not {kind}")

    def demo_selected() -> bool:
        window.services_pane.select_service(demo_image)
        return demo_image in window.services_pane.selected_hashes()

    await until(demo_selected, 30, f"{demo_image} in the services list")
    job = await claim_and_run(window, engine, "run")
    deadline = time.monotonic() + 120
    while True:
        # The demo is gated (approve = "both"): the operator's Run approved the run; its
        # subtasks (4.x) wait for approval and every result for its release, as a person
        # would decide them.
        for waiting in await run_blocking(engine.waiting_jobs):
            if waiting.gate == "run":
                await run_blocking(engine.approve_job, waiting.job_id)
            else:
                await run_blocking(engine.release_job, waiting.job_id)
        status = await run_blocking(researcher.run_status, job.ticket_id)
        if status == "completed":
            break
        if status in FINISHED or time.monotonic() > deadline:
            reason = engine.job(job.job_id).reason
            raise SelfTestFailed(f"run {job.ticket_id} is {status!r} on {server}: {reason}")
        await asyncio.sleep(0.2)
    task_id = engine.job(job.job_id).details.get("task_id")
    if task_id is not None:
        results = await run_blocking(researcher.results, int(task_id))
        if not any(isinstance(r, dict) and r.get("count") for r in results):
            raise SelfTestFailed(f"task {task_id} completed without the demo's result "
                                 f"(the researcher sees {results!r})")
