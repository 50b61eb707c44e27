"""`dss-console --sandbox [dss]`: an embedded DSS server with demo tickets, the demo service's
command configured, this console logged in to it; and the self-test's steps on it."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from dss_console.connection import LoggedIn
from dss_console.engine.settings import ServiceCommand, Settings
from dss_console.gui.self_test import SelfTestFailed, claim_and_run, until
from dss_console.gui.source_window import SandboxOptions
from dss_console.gui.tasks import run_blocking

if TYPE_CHECKING:
    from dss_console.gui.main_window import MainWindow
    from dss_console.sandbox import Sandbox

__all__ = ["DssWindowSandbox"]


class DssWindowSandbox:
    """A gui.source_window.SourceSandbox."""

    def __init__(self) -> None:
        self.sandbox: Sandbox | None = None

    async def start(self, window: MainWindow, options: SandboxOptions) -> None:
        from dss_console.resources.demo_service import demo_service_command
        from dss_console.sandbox import Sandbox

        window.show_banner("Starting the embedded sandbox (a local DSS server with demo "
                           "tickets)…", "info")
        sandbox = Sandbox(tickets=options.work)
        await run_blocking(sandbox.start)
        self.sandbox = sandbox
        console_dir = sandbox.data_dir / "console"
        settings = Settings(
            server=sandbox.url, servers=[sandbox.url], provider=sandbox.provider,
            instance="sandbox-console", workroot=console_dir / "work", poll_interval=2.0,
            concurrency=2).with_services({sandbox.service_name: ServiceCommand(
                key=sandbox.service_name, command=demo_service_command(options.pace))})
        window.settings = settings
        window.login_pane.keep_logins_in(console_dir / "sessions", use_keyring=False)
        window.data_dir = console_dir
        window.login_pane.set_servers([sandbox.url], sandbox.url)
        token = await run_blocking(sandbox.fresh_token)
        window.clear_banner()
        if not await window.login_pane.log_in("dss", {"server": sandbox.url,
                                                         "token": token}):
            raise RuntimeError(window.login_pane.message.text())
        window.show_banner(f"Sandbox running at {sandbox.url}: the demo service's command is "
                           "configured and selected: press Claim next, or turn on Auto mode.",
                           "info")

    async def self_test(self, window: MainWindow) -> None:
        """Claim a demo ticket, run it with the window's own buttons, and wait for the
        server to say `success`."""
        sandbox = self.sandbox
        if sandbox is None:
            raise SelfTestFailed("the sandbox did not start")
        await until(lambda: window.engine is not None, 30, "the engine to start after login")
        engine = window.engine
        assert engine is not None
        await until(lambda: window.services_pane.table.rowCount() > 0, 30,
                    "the services list")
        window.services_pane.select_service(sandbox.service_hash)
        job = await claim_and_run(window, engine, "ticket")
        login = window.logged_in
        if not isinstance(login, LoggedIn):
            raise SelfTestFailed("not logged in to the DSS server")
        client = login.client
        deadline = time.monotonic() + 120
        while True:
            status = await run_blocking(client.tickets.status, job.ticket_id)
            if status.value == "success":
                break
            if status.is_terminal or time.monotonic() > deadline:
                reason = engine.job(job.job_id).reason
                raise SelfTestFailed(f"ticket {job.ticket_id} ended {status.value} on the "
                                     f"server: {reason}")
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        if self.sandbox is not None:
            self.sandbox.stop()
