"""The one module that names the plug-ins (docs/plugin-plan.md §2, "Registry").

``"module:attribute"`` strings, imported on first use: naming a plug-in here loads nothing,
and this module imports nothing of the package, so the core can read it without importing a
plug-in (or forming a circle with one).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dss_console.core.command import CommandSpec, JobPaths
    from dss_console.core.executor import Executor
    from dss_console.core.presentation import Presentation
    from dss_console.core.source_plugin import SourcePlugin
    from dss_console.engine.settings import ServiceCommand
    from dss_console.gui.source_window import SourceWindow

__all__ = ["DRY_RUN_COMMAND", "EXECUTORS", "LOGIN_ONLY_SOURCES", "SOURCES", "SOURCE_FAMILIES",
           "SOURCE_PRESENTATIONS", "SOURCE_SETTINGS", "SOURCE_WINDOWS", "dry_run_command",
           "executor_class", "executors", "family_member", "family_plugin", "load",
           "presentation", "source_of", "source_plugin", "source_window"]

# The sources (core.source_plugin.SourcePlugin) the roots offer, the default first: the
# worker's --source choices, the window's login forms.
SOURCES: dict[str, str] = {
    "dss": "dss_console.sources.dss.plugin:PLUGIN",
    "v6": "dss_console.sources.v6.plugin:PLUGIN",
    "v6x5": "dss_console.sources.v6x5.plugin:PLUGIN",
}

# A family: one kind of server in several major versions, one plug-in each, in the order
# they are asked which of them serves a server (`family_member`): `dss-console v6 login`
# picks the plug-in by the server's version.
SOURCE_FAMILIES: dict[str, tuple[str, ...]] = {
    "v6": ("v6", "v6x5"),
}

# Family members whose login works but whose worker does not yet (none today: the vantage6
# 5.x node, issue 21, is in SOURCES).
LOGIN_ONLY_SOURCES: dict[str, str] = {}

# Each source's reader of its own settings tables (engine.settings_reader.SettingsParser), in
# the order the file is read and written. Later part of each source's SourcePlugin.
SOURCE_SETTINGS: dict[str, str] = {
    "dss": "dss_console.sources.dss.settings:SETTINGS",
    "v6": "dss_console.sources.v6.settings:SETTINGS",
}

# Each source's face in the window (core.presentation.Presentation). The engine sends its
# source's in the channel's info; the window reads these only before an engine runs (the
# login form's choice of source).
SOURCE_PRESENTATIONS: dict[str, str] = {
    "dss": "dss_console.sources.dss.presentation:PRESENTATION",
    "v6": "dss_console.sources.v6.presentation:PRESENTATION",
    "v6x5": "dss_console.sources.v6x5.presentation:PRESENTATION",
}


def load(target: str) -> object:
    """The object a registry's ``"module:attribute"`` names (imported now)."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def source_plugin(name: str) -> SourcePlugin:
    from dss_console.core.source_plugin import SourcePlugin

    value = load(SOURCES[name])
    if not isinstance(value, SourcePlugin):
        raise TypeError(f"{SOURCES[name]} is not a SourcePlugin")
    return value


def family_plugin(name: str) -> object:
    """A family member by name: a registered source, or one whose login alone is ready."""
    return load(SOURCES[name]) if name in SOURCES else load(LOGIN_ONLY_SOURCES[name])


def family_member(family: str, server: str, verify: bool | str) -> object:
    """The member of ``family`` that serves the server at ``server`` (each asked in
    order, a short probe each). ConnectError in words when none does."""
    from dss_console.core.source_plugin import ConnectError, plugin_serves

    members = SOURCE_FAMILIES.get(family, (family,))
    for name in members:
        plugin = family_plugin(name)
        if plugin_serves(plugin, server, verify):
            return plugin
    probes = " nor ".join(str(getattr(family_plugin(n), "probe_says", n)) for n in members)
    raise ConnectError(f"the server at {server} answers neither {probes}")


def source_of(credential: object) -> SourcePlugin:
    """The source whose login returned this credential."""
    for name in SOURCES:
        plugin = source_plugin(name)
        if plugin.owns(credential):
            return plugin
    raise ValueError(f"no source plug-in owns a {type(credential).__name__}")


def presentation(source: str) -> Presentation:
    from dss_console.core.presentation import Presentation

    value = load(SOURCE_PRESENTATIONS[source])
    if not isinstance(value, Presentation):
        raise TypeError(f"{SOURCE_PRESENTATIONS[source]} is not a Presentation")
    return value


# Each source's parts of the window (gui.source_window.SourceWindow: its Settings tab, its
# --sandbox, its extra views). Qt modules: only the window loads them, never the worker. The
# keys are the `--sandbox [SOURCE]` choices, the default first.
SOURCE_WINDOWS: dict[str, str] = {
    "dss": "dss_console.sources.dss.window.window:WINDOW",
    "v6": "dss_console.sources.v6.window.window:WINDOW",
    "v6x5": "dss_console.sources.v6x5.window.window:WINDOW",
}


def source_window(source: str) -> SourceWindow:
    """The window parts of source ``source`` (imports Qt)."""
    from dss_console.gui.source_window import SourceWindow

    value = load(SOURCE_WINDOWS[source])
    if not isinstance(value, SourceWindow):
        raise TypeError(f"{SOURCE_WINDOWS[source]} is not a SourceWindow")
    return value


# Each executor's class, by the name a service's `executor` setting gives.
EXECUTORS: dict[str, str] = {
    "local": "dss_console.executors.local:LocalExecutor",
    "slurm": "dss_console.executors.slurm:SlurmExecutor",
}


def executor_class(name: str) -> type[Executor]:
    """The executor class ``name`` (imported now): what it reads of a service's table and
    how the settings dialog edits that, without making one."""
    from dss_console.core.executor import Executor

    value = load(EXECUTORS[name])
    if not (isinstance(value, type) and issubclass(value, Executor)):
        raise TypeError(f"{EXECUTORS[name]} is not an Executor")
    return value


def executors() -> dict[str, Executor]:
    """One of each executor, for one engine (the SLURM one keeps a monitor for all the
    engine's cluster jobs). Their modules are imported here, not before."""
    return {name: executor_class(name)() for name in EXECUTORS}


# The builder of a DSS service's command, as a ticket runs it: the window's dry run (a DSS
# workspace run locally, no server) runs exactly what a claimed ticket would.
DRY_RUN_COMMAND = "dss_console.sources.dss.command:command_spec"


def dry_run_command(command: ServiceCommand, paths: JobPaths) -> CommandSpec:
    """The spec a ticket with ``paths`` would run for ``command``, ready for an executor.
    CommandStartError (core.command) in words when it cannot be built."""
    from dss_console.core.command import CommandSpec

    build = load(DRY_RUN_COMMAND)
    spec = build(command, paths) if callable(build) else None
    if not isinstance(spec, CommandSpec):
        raise TypeError(f"{DRY_RUN_COMMAND} does not build a CommandSpec")
    return spec
