"""The engine process behind the window: starting it (or attaching to one already running) at
login, handing a new session over, noticing it went away and restarting it, stopping it or
letting go of it at log-out and quit.

The window's panes follow the engine, so the session drives the window itself (MainWindow);
the window keeps the views and the dialogs (tests answer them there)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QMessageBox, QPushButton, QWidget

from dss_console import plugins
from dss_console.core.presentation import Presentation
from dss_console.core.source_plugin import SourcePlugin
from dss_console.engine.remote import (
    EngineCallError,
    EngineGoneError,
    RemoteEngine,
    find_engine,
)
from dss_console.engine.settings import settings_to_toml
from dss_console.engine.spawn import (
    EngineStartError,
    engine_log_path,
    start_engine_process,
    wait_for_engine,
)
from dss_console.engine.states import JobState
from dss_console.gui.tasks import run_blocking, spawn

if TYPE_CHECKING:
    from PySide6.QtWidgets import QAbstractButton

    from dss_console.gui.main_window import MainWindow

QUIT_STATUS_TIMEOUT = 3.0  # s; the engine's own count for the quit question, else the table's
# What the operator chose when jobs run: let them finish, then stop the engine; stop them now
# and run them again at the next start (the tickets stay claimed); stop them now and fail
# their tickets ("provider shut down"); or keep the engine running without a window.
QUIT_DRAIN, QUIT_RESUME, QUIT_CANCEL, QUIT_DETACH = "drain", "resume", "cancel", "detach"
# What the engine does with the jobs it stops, per choice.
RUNNING_AT_STOP = {QUIT_RESUME: "resume", QUIT_CANCEL: "fail"}
ENGINE_STOP_WAIT = 60.0  # seconds for an engine to deliver what is owed and exit


def stop_engine_process(engine: RemoteEngine, process: subprocess.Popen[bytes] | None,
                        drain: bool, running: str | None = None) -> None:
    """Ask an engine this console started to stop, and wait until it has (a worker started
    by someone else is only let go: it is not this window's to stop)."""
    try:
        if engine.steered_by_console:
            with contextlib.suppress(EngineGoneError, EngineCallError):
                engine.shutdown(drain=drain, running=running)
            wait = None if drain else ENGINE_STOP_WAIT  # finishing jobs takes what it takes
            if process is not None:
                try:
                    process.wait(wait)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            else:  # no process handle: the channel closing is the sign
                engine.wait_lost(wait)
    finally:
        engine.close()


class QuitChoiceBox(QMessageBox):
    """A question whose buttons each stand for a choice; Cancel (or Escape) answers None."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.choices: dict[str, QAbstractButton] = {}

    def add_choice(self, label: str, choice: str,
                   role: QMessageBox.ButtonRole = QMessageBox.ButtonRole.AcceptRole
                   ) -> QPushButton:
        button = self.addButton(label, role)
        self.choices[choice] = button
        return button

    def choice(self) -> str | None:
        clicked = self.clickedButton()
        return next((c for c, b in self.choices.items() if b is clicked), None)


def engine_key(logged_in: object) -> str:
    """What the engine for this login serves under (the source's key: one engine per DSS
    server, per vantage6 node)."""
    return plugins.source_of(logged_in).engine_key(logged_in)


class EngineSession(QObject):
    lost = Signal(object, str)  # RemoteEngine, why (from the channel's thread)

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self._w = window
        # The engine process this window is attached to (it may have started it).
        self.engine: RemoteEngine | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.starting: asyncio.Task[bool] | None = None
        self.quitting = False
        self._preset_quit_choice: str | None = None  # quit_for_signal: no dialog
        self.closed = False  # the window closed for real, after the engine stopped
        self.lost.connect(self._lost)

    def _start_pending(self) -> bool:
        return self.starting is not None and not self.starting.done()

    # -- login ------------------------------------------------------------------------------
    def logged_in(self, result: object) -> None:
        w = self._w
        engine = self.engine
        source = plugins.source_of(result)
        if not source.renews_credential or (
                w.logged_in is not None
                and not plugins.source_of(w.logged_in).renews_credential):
            # A credential that does not expire (a node's key: nothing to hand over): a
            # login is a new engine, after the one of another node or server stopped.
            if engine is not None or self._start_pending():
                self.starting = spawn(self._restart(result, self.starting))
            else:
                self.starting = spawn(self.start(result))
            self._store_note(source)
            return
        if engine is not None and result is w.logged_in:
            # A new session for the one that expired (same server and account): the engine
            # carries on with it, so running jobs go on and their queued calls go out now.
            spawn(self._hand_over_session(engine, source, result))
        elif engine is not None or self._start_pending():
            # Another account after an expired session: its engine stops first (its jobs
            # cannot report with this session).
            self.starting = spawn(self._restart(result, self.starting))
        else:
            self.starting = spawn(self.start(result))
        self._store_note(source)

    def _store_note(self, source: SourcePlugin) -> None:
        """Where the login was stored when the keyring could not take it."""
        note = source.store_note(self._w.login_pane.login_store(source))
        if note:
            self._w.show_banner(note.replace("note: ", "Note: ") + ".", "warning")

    async def _hand_over_session(self, engine: RemoteEngine, source: SourcePlugin,
                                 logged_in: object) -> None:
        w = self._w
        handover = source.handover(logged_in, settings_to_toml(w.settings))
        if engine.steered_by_console and handover:
            try:
                await run_blocking(engine.use_session, handover)
            except (EngineGoneError, EngineCallError) as exc:
                w.show_banner(f"The engine did not take the new session: {exc}")
                return
        w.statusBar().showMessage("Logged in again: queued calls are being delivered.", 10_000)
        spawn(w.refresh_services())

    async def _restart(self, logged_in: object,
                       starting: asyncio.Task[bool] | None) -> bool:
        if starting is not None and not starting.done():
            await starting
        old = self._w.logged_in
        await self.stop(drain=False)
        if old is not None and old is not logged_in:
            await run_blocking(plugins.source_of(old).close, old)
        return await self.start(logged_in)

    # -- start ------------------------------------------------------------------------------
    async def start(self, logged_in: object) -> bool:
        w = self._w
        if self.quitting:
            return False
        w.logged_in = logged_in
        w.use_source_kind(w.source_kind)
        source = plugins.source_of(logged_in)
        if source.server_setting:
            w.settings.server = source.server(logged_in)
            w.settings_control.save()
        w.connection_changed("connecting", "")
        w.statusBar().showMessage("Starting the engine…")
        try:
            engine, process = await run_blocking(self._attach, logged_in)
        except (ValueError, OSError, EngineStartError, EngineGoneError,
                EngineCallError) as exc:
            w.statusBar().clearMessage()
            w.show_banner(f"Logged in, but the console cannot work with this server: {exc}")
            w.connection_changed("stopped", str(exc))
            return False
        w.statusBar().clearMessage()
        if self.quitting:  # the window closed while the engine was starting
            await run_blocking(stop_engine_process, engine, process, False)
            return False
        self.engine, self.process = engine, process
        presentation = engine.info.get("presentation")
        if isinstance(presentation, Presentation):  # an engine older than this window: none
            w.use_presentation(presentation)
        w.bridge.attach(engine.events)

        def on_lost(why: str) -> None:
            # Qt signal from the channel's thread: delivered on the Qt thread.
            self.lost.emit(engine, why)

        engine.on_lost(on_lost)
        w.update_status()
        try:
            views, jobs = await run_blocking(lambda: (engine.services(),
                                                      engine.jobs(limit=1000)))
        except (EngineGoneError, EngineCallError):
            return False  # _lost says what happened
        if self.engine is not engine:
            return False
        w.services_pane.set_logged_in(True)
        w.services_pane.set_services(views)
        # Auto mode as the operator left it (the settings file keeps it); a headless worker
        # this window attached to keeps its own.
        if engine.steered_by_console and w.settings.auto != engine.auto:
            await run_blocking(engine.set_auto, w.settings.auto)
        w.services_pane.set_auto_mode(engine.auto)
        w.queue_pane.setEnabled(True)
        w.queue_pane.set_jobs(jobs)
        # Unless the engine said otherwise meanwhile:
        if w.status_line.connection[0] == "connecting":
            w.connection_changed("online", "")
        w.start_refreshing()
        w.engineStarted.emit(engine)
        return True

    def _attach(self, logged_in: object
                ) -> tuple[RemoteEngine, subprocess.Popen[bytes] | None]:
        """The engine for this server (or vantage6 node) and instance: the one already
        running (a headless worker, or the engine an earlier window left running), else a
        new engine process. Blocks: run it off the Qt thread."""
        w = self._w
        settings, data_dir = w.settings, w.data_dir
        source = plugins.source_of(logged_in)
        key = source.engine_key(logged_in)
        instance = settings.instance
        handover = source.handover(logged_in, settings_to_toml(settings))
        found = find_engine(data_dir, key, instance)
        process = None
        if found is None:
            # The source's credential goes to the engine on its stdin, never on its
            # command line.
            process = start_engine_process(
                source=source.name, handover=handover,
                server=source.server(logged_in), instance=instance, data_dir=data_dir,
                workroot=Path(settings.workroot), config=w.settings_control.engine_config(),
                provider=settings.provider, ca_bundle=settings.ca_bundle,
                options=source.engine_argv(logged_in), engine_key=key)
            found = wait_for_engine(process, data_dir, key, instance)
        engine = RemoteEngine(found)
        try:
            if engine.steered_by_console:
                engine.update_settings(settings_to_toml(settings))
                if process is None and source.renews_credential and handover:
                    engine.use_session(handover)  # this window's login is the newest
            engine.services()
        except BaseException:
            engine.close()
            raise
        return engine, process

    # -- an engine that went away -----------------------------------------------------------
    def _lost(self, engine: RemoteEngine, why: str) -> None:
        """The engine process went away without this window asking (it crashed, was
        killed, or stopped for its own reasons)."""
        w = self._w
        if engine is not self.engine:
            return  # one this window stopped or let go
        process, self.process = self.process, None
        self.engine = None
        code = process.poll() if process is not None else None
        w.stop_refreshing()
        w.bridge.drain()
        w.bridge.detach()
        engine.close()
        w.queue_pane.setEnabled(False)
        w.services_pane.set_logged_in(False)
        key = engine_key(w.logged_in) if w.logged_in else ""
        log = engine_log_path(w.data_dir, key, w.settings.instance)
        ended = f" (exit code {code})" if code is not None else ""
        w.connection_changed("stopped", f"the engine stopped{ended}")
        action = None
        if w.logged_in is not None and not self.quitting:
            logged_in = w.logged_in
            action = ("Restart the engine", lambda: self._restart_after_loss(logged_in))
        detail = "" if why == "the engine stopped" else f" ({why})"  # EOF says nothing new
        w.show_banner(f"The engine process stopped unexpectedly{ended}{detail}. No job is "
                      "lost: restarting it recovers every ticket from the journal (a job "
                      f"that was running runs again). Its log: {log}", "error", action)

    def _restart_after_loss(self, logged_in: object) -> None:
        self._w.clear_banner()
        self.starting = spawn(self.start(logged_in))

    # -- stop, log out ----------------------------------------------------------------------
    async def stop(self, *, drain: bool = False, detach: bool = False,
                   running: str | None = None) -> None:
        """Stop this window's engine (or only let go of it, with `detach`: its jobs go on
        without a window); `running`: "resume" or "fail" the jobs it stops (None: as the
        settings say)."""
        w = self._w
        engine, process = self.engine, self.process
        w.stop_refreshing()
        w.close_views()  # their jobs are this engine's
        if engine is None:
            return
        self.engine, self.process = None, None
        w.queue_pane.setEnabled(False)
        if detach:
            await run_blocking(engine.close)
        else:
            w.statusBar().showMessage("Stopping the engine and delivering what is owed…")
            await run_blocking(stop_engine_process, engine, process, drain, running)
        w.statusBar().clearMessage()
        w.bridge.drain()
        w.bridge.detach()
        w.services_pane.set_logged_in(False)
        w.queue_pane.set_jobs([])
        w.detail_pane.show_job(None)
        w.connection_changed("none", "")
        w.engineStopped.emit()

    def running_count(self, *, now: bool = False) -> int:
        """Jobs fetching, running or uploading: what the engine last said, and what the
        table shows (either may be a moment ahead of the other); `now` asks the engine
        itself (a question about quitting must not count a job that already ended)."""
        engine = self.engine
        if engine is None:
            return 0
        if now:
            with contextlib.suppress(EngineGoneError, EngineCallError):
                return len(engine.status(timeout=QUIT_STATUS_TIMEOUT).busy)
        shown = {job.job_id for job in self._w.queue_pane.model.jobs()
                 if job.state in (JobState.DOWNLOADING, JobState.RUNNING, JobState.UPLOADING)}
        return len(shown | engine.busy_job_ids())

    def logout_requested(self) -> None:
        choice = None
        running = self.running_count()
        if running:
            choice = self._w.ask_quit_choice(running)
            if choice is None:
                return
        spawn(self._logout(choice == QUIT_DRAIN, RUNNING_AT_STOP.get(choice or "")))

    async def _logout(self, drain: bool, running: str | None = None) -> None:
        # The engine first, while the session still works: its last calls (a "provider shut
        # down" failure, say) must reach the server before the session ends.
        w = self._w
        w.login_pane.setEnabled(False)
        try:
            if self.starting is not None and not self.starting.done():
                await self.starting
            await self.stop(drain=drain, running=running)
            await w.login_pane.logout()
        finally:
            w.login_pane.setEnabled(True)
        w.logged_in = None

    # -- quit -------------------------------------------------------------------------------
    def quit_requested(self) -> None:
        """The window is being closed (not for real yet): ask what becomes of running jobs,
        then stop or let go of the engine, then close it for real."""
        w = self._w
        if self.quitting:
            return
        engine = self.engine
        running = self.running_count(now=True)
        drain = detach = False
        stop_as = None
        if engine is not None and not engine.steered_by_console:
            detach = True  # a headless worker goes on as it did before this window came
        elif running:
            choice = self._preset_quit_choice or w.ask_quit_choice(
                running, allow_detach=not w.sandbox)
            if choice is None:
                return
            drain = choice == QUIT_DRAIN
            detach = choice == QUIT_DETACH
            stop_as = RUNNING_AT_STOP.get(choice)
        self.quitting = True
        if drain:
            # Nothing new while waiting: no claims (the button, Ctrl+N, auto mode), and the
            # services are shown off so the wait is visible.
            w.services_pane.setEnabled(False)
            w.services_pane.summary.setText("Quitting: no new tickets are claimed.")
            w.show_banner(f"Waiting for {running} job(s) to finish before quitting…",
                          "warning")
        spawn(self._quit(drain, detach, stop_as))

    def quit_for_signal(self, *, keep_running_jobs: bool) -> None:
        """Quit because the process was asked to (SIGTERM, Ctrl-C): nobody can answer a
        dialog. Running jobs go on in the engine (`keep_running_jobs`), or are stopped now."""
        self._preset_quit_choice = QUIT_DETACH if keep_running_jobs else QUIT_CANCEL
        self._w.close()

    async def _quit(self, drain: bool, detach: bool = False,
                    running: str | None = None) -> None:
        w = self._w
        if self.starting is not None and not self.starting.done():
            await self.starting  # it sees quitting and stops what it started
        engine = self.engine
        if engine is not None:
            if not detach:
                with contextlib.suppress(EngineGoneError, EngineCallError):
                    await run_blocking(engine.stop_claiming)
            await self.stop(drain=drain, detach=detach, running=running)
        w.shut_down_views()
        if w.logged_in is not None:
            plugins.source_of(w.logged_in).close(w.logged_in)
        self.closed = True
        w.close()
        w.finished.emit()
