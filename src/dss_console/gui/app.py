"""Starting the console: the Qt application on a qasync loop, the embedded sandboxes
(`--sandbox [dss]`: a DSS server; `--sandbox v6`: a vantage6 server, this console its node)
and the end-to-end self-test (`--sandbox [dss|v6] --self-test`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QObject, QSize
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from dss_console.credentials import SessionStore
from dss_console.engine.settings import (
    ServiceCommand,
    Settings,
    SettingsError,
    load_settings,
    parse_settings,
    settings_path,
)
from dss_console.gui.main_window import MainWindow
from dss_console.gui.tasks import run_blocking, shutdown_executor

FIRST_PAINT_ENV = "DSS_CONSOLE_REPORT_FIRST_PAINT"
SELF_TEST_TIMEOUT = 180.0


@dataclass(frozen=True)
class GuiOptions:
    sandbox: bool = False
    sandbox_kind: str = "dss"  # with sandbox: "dss" (an embedded DSS server) or "v6"
    self_test: bool = False
    screenshot: Path | None = None
    config: str | None = None
    sandbox_tickets: int = 3
    sandbox_pace: float = 0.3


class SelfTestFailed(Exception):
    pass


class _FirstPaint(QObject):
    """Prints when the window first paints (for the startup benchmark)."""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Paint:
            print(f"DSS_CONSOLE_FIRST_PAINT {time.time():.6f}", flush=True)
            watched.removeEventFilter(self)
        return False


def _quiet_platform_noise(kind: object, context: object, message: str) -> None:
    # The offscreen platform (self-test, CI) warns about a feature it lacks, once per window
    # resize; everything else Qt says is passed on.
    if "does not support propagateSizeHints" in message:
        return
    print(message, file=sys.stderr)


def load_user_settings(config: str | None) -> tuple[Settings, Path, str]:
    """The settings, their file, and why the file did not load ("" when it did or when
    there is none yet). A file that does not load gives the defaults: the console opens
    anyway, and the window keeps the path but never overwrites the file without asking."""
    path = settings_path(config)
    try:
        return load_settings(path), path, ""
    except SettingsError as exc:
        return Settings(), path, str(exc)


def app_icon() -> QIcon:
    icon = QIcon()
    folder = files("dss_console.resources") / "icons"
    for size in (16, 32, 48, 64, 128, 256):
        icon.addFile(str(folder / f"dss-console-{size}.png"), QSize(size, size))
    return icon


def run(options: GuiOptions) -> int:
    import qasync
    from PySide6.QtCore import qInstallMessageHandler

    qInstallMessageHandler(_quiet_platform_noise)
    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("DSS Console")
    app.setDesktopFileName("dss-console")  # Wayland app id = the .desktop file's name
    app.setWindowIcon(app_icon())
    app.setQuitOnLastWindowClosed(False)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    console = Console(options)
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
            loop.add_signal_handler(signum, console.on_signal, signum)
    try:
        with loop:
            return loop.run_until_complete(console.main())
    finally:
        shutdown_executor(wait=False)


class Console:
    """One console session: settings, the window, and (with --sandbox) the local server."""

    def __init__(self, options: GuiOptions):
        self.options = options
        self.sandbox: Any = None  # dss_console.sandbox.Sandbox or v6.sandbox.V6Sandbox
        self.researcher: Any = None  # v6: the DemoResearcher posting the demo tasks
        self.window: MainWindow | None = None
        self.closed = asyncio.Event()
        self._paint_probe: _FirstPaint | None = None
        self._signalled = False

    def on_signal(self, signum: int) -> None:
        """SIGTERM or Ctrl-C: close as the Quit menu would, without asking. A console keeps
        its running jobs going in the engine (as when the window crashes); a sandbox stops
        them, its server and its files. A second signal exits at once."""
        name = signal.Signals(signum).name
        if self._signalled:
            print(f"dss-console: second {name}: exiting now", file=sys.stderr, flush=True)
            os._exit(130)
        self._signalled = True
        keep = not self.options.sandbox
        print(f"dss-console: {name}: closing the window; "
              + ("running jobs go on in the engine (open the console again to see them)"
                 if keep else "stopping the sandbox"), file=sys.stderr, flush=True)
        window = self.window
        if window is None or window.closed:
            self.closed.set()
            return
        window.quit_for_signal(keep_running_jobs=keep)

    async def main(self) -> int:
        try:
            return await self._main()
        finally:
            if self.researcher is not None:
                await run_blocking(self.researcher.close)
            if self.sandbox is not None:
                await run_blocking(self.sandbox.stop)

    async def _main(self) -> int:
        options = self.options
        settings, settings_file, store, data_dir, problem = self._user_settings()
        if problem and settings_file is not None:
            # The window runs on defaults, never writes the file unasked, and offers to
            # replace it (keeping a copy) or to reload it once fixed.
            window = self._open_window(settings, None, store, data_dir)
            window.settings_file_broken(settings_file, problem)
        else:
            window = self._open_window(settings, settings_file, store, data_dir)
        if options.sandbox:
            start = self._start_v6_sandbox if self.v6 else self._start_sandbox
            try:
                await start(window)
            except Exception as exc:  # the sandbox is optional; say why it did not start
                message = f"The sandbox could not start: {exc}"
                window.show_banner(message)
                if options.self_test:
                    print(f"self-test failed: {message}", file=sys.stderr)
                    await self._close(window)
                    return 1
        else:
            # The last login again, if the chosen source stored one: the DSS session for
            # the last server, or the vantage6 node logged in last.
            await window.login_pane.resume(store.last_server() or "")
        if options.self_test:
            try:
                return await self._self_test(window)
            finally:
                await self._close(window)
        await self.closed.wait()
        return 0

    @property
    def v6(self) -> bool:
        return self.options.sandbox and self.options.sandbox_kind == "v6"

    def _user_settings(self) -> tuple[Settings, Path | None, SessionStore, Path | None, str]:
        """Settings, their file, the session store, the data dir, and why the file did not
        load ("" when it did, or when there is none yet)."""
        if self.options.sandbox:
            return Settings(), None, SessionStore(), None, ""
        settings, path, problem = load_user_settings(self.options.config)
        return settings, path, SessionStore(), None, problem

    def _open_window(self, settings: Settings, settings_file: Path | None,
                     store: SessionStore, data_dir: Path | None) -> MainWindow:
        # The sandbox's throw-away window must not overwrite the user's remembered layout.
        window = MainWindow(settings, settings_file, store, data_dir=data_dir,
                            remember_layout=not self.options.sandbox,
                            sandbox=self.options.sandbox)
        window.finished.connect(self.closed.set)
        if os.environ.get(FIRST_PAINT_ENV):
            self._paint_probe = _FirstPaint()
            window.installEventFilter(self._paint_probe)
            # ... and when the jobs of the engine it attached to are in the table.
            window.engineStarted.connect(lambda _engine: print(
                f"DSS_CONSOLE_JOBS_SHOWN {time.time():.6f} "
                f"{window.queue_pane.model.rowCount()}", flush=True))
        window.show()
        self.window = window
        return window

    async def _start_sandbox(self, window: MainWindow) -> None:
        from dss_console.resources.demo_service import demo_service_command
        from dss_console.sandbox import Sandbox

        window.show_banner("Starting the embedded sandbox (a local DSS server with demo "
                           "tickets)…", "info")
        sandbox = Sandbox(tickets=self.options.sandbox_tickets)
        await run_blocking(sandbox.start)
        self.sandbox = sandbox
        pace = 0.0 if self.options.self_test else self.options.sandbox_pace
        console_dir = sandbox.data_dir / "console"
        settings = Settings(
            server=sandbox.url, servers=[sandbox.url], provider=sandbox.provider,
            instance="sandbox-console", workroot=console_dir / "work", poll_interval=2.0,
            concurrency=2, services={sandbox.service_name: ServiceCommand(
                key=sandbox.service_name, command=demo_service_command(pace))})
        window.settings = settings
        window.store = window.login_pane.store = SessionStore(console_dir / "sessions",
                                                              use_keyring=False)
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

    async def _start_v6_sandbox(self, window: MainWindow) -> None:
        """The real vantage6 server on 127.0.0.1 (its own venv, built on first use), this
        console logged in as the node of the plain collaboration ``demo``, and a researcher
        who posts the demo tasks."""
        from dss_console.commands.v6 import sandbox_settings_toml
        from dss_console.credentials import V6CredentialStore
        from dss_console.sources.v6.demo_researcher import DEMO_COLUMN, DEMO_METHOD, DemoResearcher
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
        self.sandbox = sandbox  # stopped by main() whatever happens from here
        await run_blocking(sandbox.start)
        console_dir = sandbox.data_dir / "console"
        v6 = parse_settings(sandbox_settings_toml(sandbox.info), console_dir / "settings").v6
        window.settings = Settings(instance="sandbox-console", workroot=console_dir / "work",
                                   poll_interval=2.0, concurrency=2, v6=v6)
        window.login_pane.v6_store = V6CredentialStore(console_dir / "sessions",
                                                       use_keyring=False)
        window.data_dir = console_dir
        # The researcher logs in while the node does; the tasks are posted once both are in
        # (the node's engine then sees them at its first poll or push).
        researcher = DemoResearcher.for_sandbox(sandbox, "demo")
        self.researcher = researcher
        starting = asyncio.ensure_future(run_blocking(researcher.start))
        node = sandbox.node("station-demo")
        try:
            window.clear_banner()
            logged_in = await window.login_pane.log_in(
                "v6", {"server": sandbox.url, "api_key": node.api_key})
        finally:
            await asyncio.wait([starting])
            if not starting.cancelled():
                starting.exception()  # retrieved here, raised below unless login failed
        if not logged_in:
            raise RuntimeError(window.login_pane.message.text())
        starting.result()  # the researcher's failure, in words
        count = self.options.sandbox_tickets
        await run_blocking(researcher.post_demo_tasks, count)
        window.show_banner(
            f"vantage6 sandbox running at {sandbox.url}; this console is node "
            f"{node.name!r} of collaboration 'demo', and a researcher posted {count} tasks of "
            f"{DEMO_IMAGE!r} ({DEMO_METHOD}: the mean of {DEMO_COLUMN!r} in the demo CSV). "
            "It is selected: press Claim next, or turn on Auto mode.", "info")

    async def _close(self, window: MainWindow) -> None:
        window.close()
        deadline = time.monotonic() + 60
        while not window.closed and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    # -- the self-test ----------------------------------------------------------------------
    async def _self_test(self, window: MainWindow) -> int:
        try:
            await asyncio.wait_for(self._self_test_steps(window), SELF_TEST_TIMEOUT)
        except SelfTestFailed as exc:
            print(f"self-test failed: {exc}", file=sys.stderr)
            return 1
        except asyncio.TimeoutError:
            print(f"self-test failed: not done after {SELF_TEST_TIMEOUT:.0f} s",
                  file=sys.stderr)
            return 1
        except Exception as exc:  # anything unexpected is a failure with a reason, too
            print(f"self-test failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print("self-test passed", flush=True)
        return 0

    async def _self_test_steps(self, window: MainWindow) -> None:
        sandbox = self.sandbox
        if sandbox is None:
            raise SelfTestFailed("--self-test needs --sandbox")
        if self.v6:
            await self._v6_self_test_steps(window)
            return
        await _until(lambda: window.engine is not None, 30, "the engine to start after login")
        engine = window.engine
        assert engine is not None
        await _until(lambda: window.services_pane.table.rowCount() > 0, 30,
                     "the services list")
        window.services_pane.select_service(sandbox.service_hash)
        # The same action as the operator's click on "Claim next".
        window.services_pane.claim_button.click()
        await _until(lambda: bool(engine.jobs()), 30, "a claimed ticket")
        job = engine.jobs()[0]
        await _until(lambda: engine.job(job.job_id).inputs_ready, 30, "its inputs")
        if not window.queue_pane.select_job(job.job_id):
            raise SelfTestFailed(f"ticket {job.ticket_id} is not in the queue view")
        await _until(lambda: window.queue_pane.buttons["run"].isEnabled(), 10,
                     "the Run button to be enabled")
        window.queue_pane.buttons["run"].click()
        client = window.logged_in.client if window.logged_in else None
        if client is None:
            raise SelfTestFailed("not logged in")
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
        await self._self_test_end(window)

    async def _self_test_end(self, window: MainWindow) -> None:
        """The queue shows the job succeeded, its log shows output; the screenshot."""
        await _until(lambda: window.queue_pane.current_job() is not None
                     and window.queue_pane.current_job().state.value == "succeeded", 20,
                     "the queue to show success")
        window.detail_pane.tabs.setCurrentIndex(0)
        await _until(lambda: window.detail_pane.log.text_edit.toPlainText().strip() != "", 20,
                     "the ticket's log to show")
        if self.options.screenshot:
            await asyncio.sleep(0.3)  # one more paint cycle for the last updates
            path = Path(self.options.screenshot)
            path.parent.mkdir(parents=True, exist_ok=True)
            if not window.grab().save(str(path)):
                raise SelfTestFailed(f"could not save the screenshot to {path}")
            print(f"screenshot saved to {path}", flush=True)

    async def _v6_self_test_steps(self, window: MainWindow) -> None:
        """As the DSS one, for a vantage6 run: the engine as the node, the demo algorithm in
        the services list, Claim next, Run, the run `completed` on the server (asked as the
        researcher), its result there, success in the queue and output in its log."""
        from dss_console.sources.v6.demo_researcher import FINISHED
        from dss_console.sources.v6.sandbox import DEMO_IMAGE

        researcher = self.researcher
        if researcher is None:
            raise SelfTestFailed("the sandbox's researcher did not start")
        await _until(lambda: window.engine is not None, 30, "the engine to start after login")
        engine = window.engine
        assert engine is not None
        if window.source_kind != "v6":
            raise SelfTestFailed(f"the window serves a {window.source_kind!r} source, not v6")

        def demo_selected() -> bool:
            window.services_pane.select_service(DEMO_IMAGE)
            return DEMO_IMAGE in window.services_pane.selected_hashes()

        await _until(demo_selected, 30, f"{DEMO_IMAGE} in the services list")
        # The same action as the operator's click on "Claim next".
        window.services_pane.claim_button.click()
        await _until(lambda: bool(engine.jobs()), 30, "a claimed run")
        job = engine.jobs()[0]
        await _until(lambda: engine.job(job.job_id).inputs_ready, 30, "its input")
        if not window.queue_pane.select_job(job.job_id):
            raise SelfTestFailed(f"run {job.ticket_id} is not in the queue view")
        await _until(lambda: window.queue_pane.buttons["run"].isEnabled(), 10,
                     "the Run button to be enabled")
        window.queue_pane.buttons["run"].click()
        deadline = time.monotonic() + 120
        while True:
            status = await run_blocking(researcher.run_status, job.ticket_id)
            if status == "completed":
                break
            if status in FINISHED or time.monotonic() > deadline:
                reason = engine.job(job.job_id).reason
                raise SelfTestFailed(f"run {job.ticket_id} is {status!r} on the server: "
                                     f"{reason}")
            await asyncio.sleep(0.2)
        task_id = engine.job(job.job_id).details.get("task_id")
        if task_id is not None:
            results = await run_blocking(researcher.results, int(task_id))
            if not any(isinstance(r, dict) and r.get("count") for r in results):
                raise SelfTestFailed(f"task {task_id} completed without the demo's result "
                                     f"(the researcher sees {results!r})")
        await self._self_test_end(window)


async def _until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if condition():
                return
        if time.monotonic() > deadline:
            raise SelfTestFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)
