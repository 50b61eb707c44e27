"""Building and reading Settings by plug-in, for tests: the core's Settings has no `services`
or `v6` of its own (each plug-in reads its part through its typed function)."""

from __future__ import annotations

import dataclasses
from typing import Any

from dss_console.engine.settings import ServiceCommand, Settings
from dss_console.sources.dss.settings import dss_settings
from dss_console.sources.v6.settings import V6Settings, v6_settings


def settings_with(*, services: dict[str, ServiceCommand] | None = None,
                  v6: V6Settings | None = None, **core: Any) -> Settings:
    """Settings(**core) with these DSS services and this [v6] table."""
    settings = Settings(**core)
    if services is not None:
        settings = settings.with_services(services)
    if v6 is not None:
        settings = dataclasses.replace(settings, plugins={**settings.plugins, "v6": v6})
    return settings


def services_of(settings: Settings) -> dict[str, ServiceCommand]:
    """The DSS [services] tables of ``settings`` (the dict itself: changes stick)."""
    return dss_settings(settings).services


def v6_of(settings: Settings) -> V6Settings:
    return v6_settings(settings)
