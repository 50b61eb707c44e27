"""The window's settings: the Settings dialog, saving to and reloading from the settings
file, a file that does not load (the window then runs on defaults and never overwrites it
without asking), and the settings an engine this console started runs with (Auto mode
included)."""

from __future__ import annotations

import copy
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QWidget

from dss_console import plugins
from dss_console.engine.remote import EngineCallError, EngineGoneError, RemoteEngine
from dss_console.engine.settings import (
    Settings,
    SettingsError,
    load_settings,
    save_settings,
    settings_path,
    settings_to_toml,
)
from dss_console.gui.login_pane import LoginPane
from dss_console.gui.services_pane import ServicesPane
from dss_console.gui.status_bar import BannerAction
from dss_console.gui.tasks import run_blocking, spawn

if TYPE_CHECKING:
    from dss_console.gui.settings_dialog import SettingsDialog


class SettingsHost(Protocol):
    """What of the window the settings use."""

    settings: Settings
    settings_file: Path | None  # None: do not persist (sandbox)
    settings_dialog: SettingsDialog | None  # the last one opened (tests answer it)
    login_pane: LoginPane
    services_pane: ServicesPane

    @property
    def engine(self) -> RemoteEngine | None: ...

    @property
    def logged_in(self) -> object | None: ...

    def window(self) -> QWidget: ...

    def show_banner(self, text: str, level: str = "error", action: BannerAction | None = None,
                    cause: str | None = None) -> None: ...

    def ask_broken_settings(self, path: Path, problem: str) -> str | None: ...

    def ask_copy_path(self, title: str, text: str, path: str) -> None: ...

    def show_services(self, engine: RemoteEngine) -> Coroutine[Any, Any, None]: ...

    def update_status(self) -> None: ...


class SettingsController:
    def __init__(self, host: SettingsHost) -> None:
        self._host = host
        # Why the settings file did not load; while set, the file is never written without
        # asking.
        self.problem: str | None = None
        self._replacing = False

    def verify(self) -> bool | str:
        return self._host.settings.ca_bundle or True

    def engine_config(self) -> Path | None:
        """The settings file an engine this console starts reads: none while it does not
        load (the engine then gets the window's settings only)."""
        return self._host.settings_file if self.problem is None else None

    def servers_changed(self, servers: list[str]) -> None:
        self._host.settings.servers = list(servers)
        self.save()

    def save(self) -> None:
        host = self._host
        if host.settings_file is None or self.problem is not None:
            # A file that does not load is never overwritten behind the user's back:
            # apply asks (replace it, keeping a backup, or fix it first).
            return
        try:
            save_settings(host.settings, host.settings_file)
        except (SettingsError, OSError) as exc:
            host.show_banner(f"Could not save the settings: {exc}")

    def open_dialog(self, service_hash: str | None = None) -> None:
        from dss_console.gui.settings_dialog import SettingsDialog

        host = self._host
        # The logged-in source's own tab, if it has one; its services go to the service
        # editor only when its presentation says their commands are edited there (a
        # vantage6 node's images are its algorithms tables, edited in its own tab).
        source = plugins.source_of(host.logged_in).name if host.logged_in is not None else None
        in_editor = source is None or "service_editor" in plugins.presentation(source).features
        services = []
        if host.engine is not None and in_editor:
            services = [(s.name, s.service_hash) for s in host.engine.known_services()]
        dialog = SettingsDialog(host.settings, services, host.window(),
                                file_problem=self.problem,
                                engine_note=self._foreign_engine_note(), source=source,
                                settings_file=str(host.settings_file) if host.settings_file
                                else f"{settings_path(None)} (created at OK)")
        if service_hash and dialog.source_tab is not None:
            dialog.select_source_item(service_hash)  # e.g. an image: its "hash" is its name
        elif service_hash:
            dialog.select_service(service_hash)

        def finished(result: int) -> None:
            if result:
                self.apply(dialog.result_settings())
            dialog.deleteLater()

        # open(), not exec(): a nested event loop inside the qasync loop is fragile.
        dialog.finished.connect(finished)
        dialog.open()
        host.settings_dialog = dialog

    def _foreign_engine_note(self) -> str | None:
        """Words for the Settings dialog when the attached engine is a headless worker,
        which keeps reading its own settings file whatever is changed here."""
        engine = self._host.engine
        if engine is None or engine.steered_by_console:
            return None
        info = engine.info
        pid = f" (process {info['pid']})" if info.get("pid") else ""
        source = str(info.get("settings_file") or "")
        settings_file = self._host.settings_file
        if source and settings_file is not None and Path(source) == settings_file:
            return (f"This window is attached to a headless worker{pid} started outside the "
                    f"console. It reads the same settings file ({source}) and reloads it when "
                    "it changes, so what is saved here reaches it, except what its command "
                    "line sets (--command, --concurrency, …).")
        return (f"This window is attached to a headless worker{pid} started outside the "
                f"console. It runs with the settings in {source or 'its own settings file'} "
                "and the options it was started with; what is saved here is this console's "
                "own settings and does not reach that worker. Edit its file to change what it "
                "runs (it reloads the file when it changes).")

    def apply(self, settings: Settings) -> None:
        """Use and save settings the operator changed (Settings… → OK)."""
        self._use(settings)
        settings_file = self._host.settings_file
        if self.problem is not None and settings_file is not None:
            self._not_saved(settings_file, self.problem)
        else:
            self.save()

    def _use(self, settings: Settings) -> None:
        host = self._host
        host.settings = settings
        engine = host.engine
        if engine is not None:
            spawn(self.push(engine))
        host.login_pane.set_servers(list(dict.fromkeys(
            [*settings.servers, *([settings.server] if settings.server else [])])),
            host.login_pane.server_text())

    async def push(self, engine: RemoteEngine) -> None:
        """The engine runs what the window's settings say (an engine this console started;
        a headless worker keeps its own settings file)."""
        if not engine.steered_by_console:
            return
        try:
            await run_blocking(engine.update_settings, settings_to_toml(self._host.settings))
        except (EngineGoneError, EngineCallError) as exc:
            self._host.show_banner(f"The engine did not take the new settings: {exc}")
            return
        await self._host.show_services(engine)

    # -- Auto mode, the window's and per service --------------------------------------------
    def auto_mode_toggled(self, on: bool) -> None:
        host = self._host
        if host.engine is not None:
            spawn(self.set_auto(host.engine, on))
        host.services_pane.set_auto_mode(on)
        if host.settings.auto != on:
            host.settings.auto = on  # kept for the next start
            self.save()
        host.update_status()

    async def set_auto(self, engine: RemoteEngine, on: bool) -> None:
        try:
            await run_blocking(engine.set_auto, on)
        except (EngineGoneError, EngineCallError) as exc:
            self._host.show_banner(f"Auto mode could not be switched: {exc}")
        self._host.update_status()

    def service_auto_toggled(self, service_hash: str, on: bool) -> None:
        host = self._host
        engine = host.engine
        names = {s.service_hash: s.name for s in engine.known_services()} if engine else {}
        command = host.settings.command_for(names.get(service_hash, ""), service_hash)
        if command is None:
            return
        command.auto = on  # part of the settings: saved, and what the Settings dialog shows
        self.save()
        if engine is not None:
            spawn(self.push(engine))

    # -- a settings file that does not load ---------------------------------------------------
    def file_broken(self, path: Path, problem: str) -> None:
        """The settings file exists but does not load: the window runs on defaults and keeps
        the path, to offer replacing the file (with a backup) when the settings change."""
        self._host.settings_file = path
        self.problem = problem
        self._broken_banner(f"{problem}.")

    def _broken_banner(self, lead: str) -> None:
        self._host.show_banner(
            f"{lead} The console uses default settings, and changes apply to this session "
            "only until the file is fixed (then Reload it) or replaced (Settings… → OK offers "
            "that). The file was not changed.", "error", ("Reload settings file", self.reload))

    def _not_saved(self, path: Path, problem: str) -> None:
        from dss_console.gui.broken_settings import FIX_FILE, REPLACE_FILE

        choice = self._host.ask_broken_settings(path, problem)
        if choice == REPLACE_FILE:
            spawn(self._replace_file())
        elif choice == FIX_FILE:
            self._broken_banner(f"Your changes were not saved: {path} does not load. Fix it, "
                                "then Reload it (the file's settings then replace this "
                                "session's changes).")
            self._open_file(path)
        else:
            self._broken_banner(f"Your changes were not saved: {path} does not load.")

    def _open_file(self, path: Path) -> None:
        # False when no program opens it (no desktop): show the path to edit it another way.
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))):
            self._host.ask_copy_path(
                "Settings file", "No program could open the settings file here. Edit it with "
                "any text editor, then press Reload settings file:", str(path))

    async def _replace_file(self) -> None:
        from dss_console.gui.broken_settings import replace_settings_file

        host = self._host
        path = host.settings_file
        if path is None or self._replacing:
            return
        self._replacing = True
        try:
            # A copy: the operator may change settings while the file is written.
            backup = await run_blocking(replace_settings_file, copy.deepcopy(host.settings),
                                        path)
        except (SettingsError, OSError) as exc:
            self._broken_banner(f"Could not replace {path}: {exc}.")
            return
        finally:
            self._replacing = False
        self.problem = None
        kept = f"; the file that did not load is kept as {backup}" if backup else ""
        host.show_banner(f"Saved the settings to {path}{kept}.", "info")

    def reload(self) -> None:
        spawn(self._reload())

    async def _reload(self) -> None:
        host = self._host
        path = host.settings_file
        if path is None:
            return
        try:
            settings = await run_blocking(load_settings, path)
        except SettingsError as exc:
            self.problem = str(exc)
            self._broken_banner(f"Still does not load: {exc}.")
            return
        self.problem = None
        # Used as read, not written back: the file keeps the user's own layout and comments.
        self._use(settings)
        engine = host.engine
        if engine is not None and engine.steered_by_console:
            # The file's Auto mode too, as at a start: the switch, the engine and the footer
            # agree with the file just read.
            host.services_pane.set_auto_mode(settings.auto)
            if settings.auto != engine.auto:
                await self.set_auto(engine, settings.auto)
        host.update_status()
        host.show_banner(f"Settings reloaded from {path}.", "info")
