"""`dss-console --sandbox v6x5` (or `--sandbox v6 --sandbox-version 5`): the real vantage6 HQ
5.0.3 on 127.0.0.1 (its Python 3.13 venv, built on first use) behind the Keycloak-compatible
stand-in, this console logged in as the node of the plain collaboration ``demo`` through the
login pane's family probe, and the service account posting demo tasks; and the self-test's
steps on it."""

from __future__ import annotations

import sys
import uuid
from typing import TYPE_CHECKING

from dss_console.gui.source_window import SandboxOptions
from dss_console.gui.tasks import run_blocking
from dss_console.sources.v6.window.sandbox import (
    log_in_while_researcher_starts,
    run_demo_self_test,
    use_console_dir,
)

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
        # The 4.x sandbox's settings fragment (the family's one [v6] table), for the 5.x
        # demo algorithm run by HQ's venv Python (it has vantage6-algorithm-tools 5.0.3).
        info = {**sandbox.info, "demo": demo_info()}
        use_console_dir(window, console_dir, sandbox_settings_toml(info))
        researcher = HqDemoResearcher.for_hq_sandbox(sandbox, "demo")
        self.researcher = researcher
        node = sandbox.node(NODE)
        # As an operator would: the family's form, the server asked which version it runs,
        # the 5.x form with every value already filled in.
        await log_in_while_researcher_starts(
            window, researcher, {"server": sandbox.url, "auth_url": sandbox.auth_url,
                                 "realm": str(sandbox.info["realm"]), "node": node.name,
                                 "api_key": node.api_key})
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
        from dss_console.sources.v6x5.demo_researcher import DEMO_IMAGE

        await run_demo_self_test(window, self.researcher, "v6x5", DEMO_IMAGE, "HQ")

    def stop(self) -> None:
        if self.researcher is not None:
            self.researcher.close()
        if self.sandbox is not None:
            self.sandbox.stop()
