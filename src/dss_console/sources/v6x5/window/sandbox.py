"""`dss-console --sandbox v6x5` (or `--sandbox v6 --sandbox-version 5`): the real vantage6 HQ
5.0.3 on 127.0.0.1 (its Python 3.13 venv, built on first use) behind the Keycloak-compatible
stand-in, this console logged in as the node of the plain collaboration ``demo`` through the
login pane's family probe, and the service account posting demo tasks; and the self-test's
steps on it."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from typing import TYPE_CHECKING

from dss_console.engine.settings import Settings, parse_settings
from dss_console.gui.self_test import SelfTestFailed, claim_and_run, until
from dss_console.gui.source_window import SandboxOptions
from dss_console.gui.tasks import run_blocking
from dss_console.sources.v6.settings import v6_settings

if TYPE_CHECKING:
    from dss_console.gui.main_window import MainWindow
    from dss_console.sources.v6x5.demo_researcher import HqDemoResearcher
    from dss_console.sources.v6x5.sandbox import HqSandbox

__all__ = ["V6x5WindowSandbox"]

# The 5.x sandbox's seed (sources/v6x5/sandbox.py): the data station's node in `demo`.
NODE = "station-demo"


class V6x5WindowSandbox:
    """A gui.source_window.SourceSandbox."""

    def __init__(self, running: HqSandbox | None = None) -> None:
        # ``running``: an HQ sandbox started elsewhere (the tests' session one), used as it
        # is and left running by stop(); None: start() starts one of its own.
        self._running = running
        self.sandbox: HqSandbox | None = None
        self.researcher: HqDemoResearcher | None = None  # posts the demo tasks

    async def start(self, window: MainWindow, options: SandboxOptions) -> None:
        from dss_console.commands.v6 import sandbox_settings_toml
        from dss_console.sources.v6x5.demo_researcher import (
            DEMO_COLUMN,
            DEMO_IMAGE,
            DEMO_METHOD,
            HqDemoResearcher,
            demo_info,
        )
        from dss_console.sources.v6x5.sandbox import HqSandbox
        from dss_console.sources.v6x5.venv import venv_dir, venv_ready

        first = "" if venv_ready() or self._running is not None else (
            f" The first start builds HQ's Python 3.13 environment in {venv_dir()} (1–2 "
            "minutes, needs PyPI); later starts take seconds.")
        window.show_banner("Starting the vantage6 5.x sandbox (a local vantage6 HQ 5.0.3 "
                           "behind a stand-in for Keycloak, a demo collaboration, this console "
                           f"its data station's node)…{first}", "info")
        if self._running is not None:
            sandbox = self._running
        else:
            sandbox = HqSandbox(report=lambda line: print(f"v6x5 sandbox: {line}",
                                                          file=sys.stderr, flush=True))
            self.sandbox = sandbox  # stopped by stop() whatever happens from here
            await run_blocking(sandbox.start)
        console_dir = sandbox.data_dir / f"console-{uuid.uuid4().hex[:8]}"
        settings = Settings(instance="sandbox-console", workroot=console_dir / "work",
                            poll_interval=2.0, concurrency=2)
        # The 4.x sandbox's settings fragment (the family's one [v6] table), for the 5.x
        # demo algorithm run by HQ's venv Python (it has vantage6-algorithm-tools 5.0.3).
        info = {**sandbox.info, "demo": demo_info()}
        settings.plugins["v6"] = v6_settings(parse_settings(
            sandbox_settings_toml(info), console_dir / "settings"))
        window.settings = settings
        window.login_pane.keep_logins_in(console_dir / "sessions", use_keyring=False)
        window.data_dir = console_dir
        researcher = HqDemoResearcher.for_hq_sandbox(sandbox, "demo")
        self.researcher = researcher
        starting = asyncio.ensure_future(run_blocking(researcher.start))
        node = sandbox.node(NODE)
        try:
            window.clear_banner()
            # As an operator would: the family's form, the server asked which version it
            # runs, the 5.x form with every value already filled in.
            logged_in = await window.login_pane.log_in(
                "v6", {"server": sandbox.url, "auth_url": sandbox.auth_url,
                       "realm": str(sandbox.info["realm"]), "node": node.name,
                       "api_key": node.api_key})
        finally:
            await asyncio.wait([starting])
            if not starting.cancelled():
                starting.exception()  # retrieved here, raised below unless login failed
        if not logged_in:
            raise RuntimeError(window.login_pane.message.text())
        starting.result()  # the researcher's failure, in words
        count = options.work
        await run_blocking(researcher.post_demo_tasks, count)
        window.show_banner(
            f"vantage6 5.x sandbox running at {sandbox.url} (HQ {sandbox.info['version']}, "
            f"logins at the stand-in {sandbox.auth_url}); this console is node {node.name!r} "
            f"of collaboration 'demo', and a researcher posted {count} tasks of "
            f"{DEMO_IMAGE!r} ({DEMO_METHOD}: the mean of {DEMO_COLUMN!r} in the demo CSV). "
            "It is selected: press Claim next, or turn on Auto mode.", "info")

    async def self_test(self, window: MainWindow) -> None:
        """As the 4.x one: the engine as the 5.x node, the demo algorithm in the services
        list, Claim next, Run, the gate's approval and release, the run `completed` on HQ
        (asked as the researcher), its result there."""
        from dss_console.sources.v6.demo_researcher import FINISHED
        from dss_console.sources.v6x5.demo_researcher import DEMO_IMAGE

        researcher = self.researcher
        if researcher is None:
            raise SelfTestFailed("the sandbox's researcher did not start")
        await until(lambda: window.engine is not None, 30, "the engine to start after login")
        engine = window.engine
        assert engine is not None
        if window.source_kind != "v6x5":
            raise SelfTestFailed(f"the window serves a {window.source_kind!r} source, not "
                                 "v6x5")

        def demo_selected() -> bool:
            window.services_pane.select_service(DEMO_IMAGE)
            return DEMO_IMAGE in window.services_pane.selected_hashes()

        await until(demo_selected, 30, f"{DEMO_IMAGE} in the services list")
        job = await claim_and_run(window, engine, "run")
        deadline = time.monotonic() + 120
        while True:
            # The demo is gated (approve = "both"): the operator's Run approved the run;
            # its result waits for its release, as a person would decide it.
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
                raise SelfTestFailed(f"run {job.ticket_id} is {status!r} on HQ: {reason}")
            await asyncio.sleep(0.2)
        task_id = engine.job(job.job_id).details.get("task_id")
        if task_id is not None:
            results = await run_blocking(researcher.results, int(task_id))
            if not any(isinstance(r, dict) and r.get("count") for r in results):
                raise SelfTestFailed(f"task {task_id} completed without the demo's result "
                                     f"(the researcher sees {results!r})")

    def stop(self) -> None:
        if self.researcher is not None:
            self.researcher.close()
        if self.sandbox is not None:
            self.sandbox.stop()
