"""The one module that names the plug-ins (docs/plugin-plan.md §2, "Registry").

``"module:attribute"`` strings, imported on first use: naming a plug-in here loads nothing,
and this module imports nothing of the package, so the core can read it without importing a
plug-in (or forming a circle with one).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dss_console.core.executor import Executor

__all__ = ["EXECUTORS", "SOURCE_SETTINGS", "executors"]

# Each source's reader of its own settings tables (engine.settings_reader.SettingsParser), in
# the order the file is read and written. Later part of each source's SourcePlugin.
SOURCE_SETTINGS: dict[str, str] = {
    "dss": "dss_console.sources.dss.settings:SETTINGS",
    "v6": "dss_console.v6.settings:SETTINGS",
}

# Each executor's class, by the name a service's `executor` setting gives.
EXECUTORS: dict[str, str] = {
    "local": "dss_console.executors.local:LocalExecutor",
    "slurm": "dss_console.executors.slurm:SlurmExecutor",
}


def executors() -> dict[str, Executor]:
    """One of each executor, for one engine (the SLURM one keeps a monitor for all the
    engine's cluster jobs). Their modules are imported here, not before."""
    made: dict[str, Executor] = {}
    for name, target in EXECUTORS.items():
        module, _, attribute = target.partition(":")
        made[name] = getattr(importlib.import_module(module), attribute)()
    return made
