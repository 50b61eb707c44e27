"""The one module that names the plug-ins (docs/plugin-plan.md §2, "Registry").

``"module:attribute"`` strings, imported on first use: naming a plug-in here loads nothing,
and this module imports nothing of the package, so the core can read it without importing a
plug-in (or forming a circle with one).
"""

from __future__ import annotations

__all__ = ["SOURCE_SETTINGS"]

# Each source's reader of its own settings tables (engine.settings_reader.SettingsParser), in
# the order the file is read and written. Later part of each source's SourcePlugin.
SOURCE_SETTINGS: dict[str, str] = {
    "dss": "dss_console.sources.dss.settings:SETTINGS",
    "v6": "dss_console.sources.v6.settings:SETTINGS",
}
