"""Starting the console: the Qt application on a qasync loop, the embedded sandbox of a source
(`--sandbox [SOURCE]`: its local server with demo work, this console logged in to it; each
source's own, gui.source_window.SourceSandbox) and the end-to-end self-test
(`--sandbox [SOURCE] --self-test`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, QSize
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from dss_console import plugins
from dss_console.credentials import SessionStore
from dss_console.engine.settings import (
    Settings,
    SettingsError,
    load_settings,
    settings_path,
)
from dss_console.gui.main_window import MainWindow
from dss_console.gui.self_test import SelfTestFailed, until
from dss_console.gui.source_window import SandboxOptions, SourceSandbox
from dss_console.gui.tasks import run_blocking, shutdown_executor

FIRST_PAINT_ENV = "DSS_CONSOLE_REPORT_FIRST_PAINT"
SELF_TEST_TIMEOUT = 180.0


@dataclass(frozen=True)
class GuiOptions:
    sandbox: bool = False
    # With sandbox: whose (a key of plugins.SOURCE_WINDOWS; the first is the default).
    sandbox_source: str = next(iter(plugins.SOURCE_WINDOWS))
    self_test: bool = False
    screenshot: Path | None = None
    config: str | None = None
    sandbox_tickets: int = 3
    sandbox_pace: float = 0.3


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
        self.sandbox: SourceSandbox | None = None  # with --sandbox: the source's
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
            try:
                await self._start_sandbox(window)
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

    async def _start_sandbox(self, window: MainWindow) -> None:
        options = self.options
        sandbox = plugins.source_window(options.sandbox_source).sandbox()
        if sandbox is None:
            raise RuntimeError(f"the source {options.sandbox_source!r} has no sandbox")
        self.sandbox = sandbox  # stopped by main() whatever happens from here
        await sandbox.start(window, SandboxOptions(
            work=options.sandbox_tickets,
            pace=0.0 if options.self_test else options.sandbox_pace))

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
        await sandbox.self_test(window)
        await self._self_test_end(window)

    async def _self_test_end(self, window: MainWindow) -> None:
        """The queue shows the job succeeded, its log shows output, the service's history
        chart the job; the screenshot."""
        await until(lambda: window.queue_pane.current_job() is not None
                    and window.queue_pane.current_job().state.value == "succeeded", 20,
                    "the queue to show success")
        window.detail_pane.tabs.setCurrentIndex(0)
        await until(lambda: window.detail_pane.log.text_edit.toPlainText().strip() != "", 20,
                    "the ticket's log to show")
        # The job's end in the service's history chart (fetched shortly after the end).
        await until(lambda: window.services_pane.history_chart.message() == "", 20,
                    "the service's history to show the job")
        if self.options.screenshot:
            await asyncio.sleep(0.3)  # one more paint cycle for the last updates
            path = Path(self.options.screenshot)
            path.parent.mkdir(parents=True, exist_ok=True)
            if not window.grab().save(str(path)):
                raise SelfTestFailed(f"could not save the screenshot to {path}")
            print(f"screenshot saved to {path}", flush=True)
