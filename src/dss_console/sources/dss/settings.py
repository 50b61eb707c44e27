"""The ``[services.*]`` tables of the settings file: how this machine runs DSS services.

One table per service, keyed by its exact name or its 40-hex hash (the format is in the
core module's docstring, :mod:`dss_console.engine.settings`)::

    [services."ASHS-PMC-T1"]
    command = "bash /opt/ashs/service_ashs.sh {ticket} {workdir} {workspace} {result}"
    timeout = "6h"

The keys every service or algorithm table shares are read by the core's
:func:`~dss_console.engine.settings_reader.read_job_kind`, ``executor`` and the
executors' own keys by :func:`~dss_console.engine.settings_reader.read_executor`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dss_console.core.executor import OptionValue
from dss_console.engine.settings import Settings
from dss_console.engine.settings_reader import (
    EXECUTORS,
    ServiceCommand,
    SettingsError,
    SettingsParser,
    TableReader,
    executor_keys,
    executor_toml,
    is_hash,
    read_defaults,
    read_executor,
    read_job_kind,
    toml_key,
    toml_value,
    type_name,
    validate_command_template,
)

__all__ = ["SETTINGS", "DssSettings", "DssSettingsParser", "dss_settings", "service_keys"]


def service_keys() -> tuple[str, ...]:
    """A service table's keys, in the order an "unknown key" message lists them (the
    executors' keys as the executor classes declare them)."""
    return ("command", "timeout", "max_jobs", "cwd", "env", "auto", "nice", *executor_keys(),
            "itksnap_wt", "send_output_tail", "approve")


@dataclass
class DssSettings:
    """The ``[services]`` tables: each service's command, by key as written in the file."""

    services: dict[str, ServiceCommand] = field(default_factory=dict)
    # Keys whose command came from --command: they win over the file's entries in
    # command_for, so `--command Name=...` is not shadowed by a hash key in the file.
    # An init field (not init=False), so dataclasses.replace() carries it along.
    overridden: frozenset[str] = field(default_factory=frozenset, repr=False, compare=False)
    # The file's [defaults] isolation and limit keys, for services made here (--command).
    inherited: dict[str, OptionValue] = field(default_factory=dict, repr=False, compare=False)

    def command_for(self, name: str, key: str) -> ServiceCommand | None:
        """The command for a service: an override first, then a hash key, then a name key."""
        matching = [sc for sc in self.services.values() if sc.matches(name, key)]
        if not matching:
            return None

        def rank(sc: ServiceCommand) -> tuple[int, int]:
            by_hash = is_hash(sc.key) and sc.key.lower() == key.lower()
            return (0 if sc.key in self.overridden else 1, 0 if by_hash else 1)

        return min(matching, key=rank)

    def configured_keys(self) -> list[str]:
        return list(self.services)

    def with_services(self, services: dict[str, ServiceCommand]) -> DssSettings:
        # replace(), not a new DssSettings: the --command overrides' precedence stays.
        return dataclasses.replace(self, services=services)

    def apply_command_overrides(self, overrides: Sequence[str]) -> None:
        """Apply ``SERVICE=TEMPLATE`` overrides (from ``--command``) in place.

        The command text of key SERVICE is replaced, keeping its other options, or a new
        entry is added. SERVICE is a key as in the file: a service name or hash.
        """
        overridden = set(self.overridden)
        for item in overrides:
            key, sep, template = item.partition("=")
            key = key.strip()
            if not sep or not key or not template.strip():
                raise SettingsError(
                    f"--command {item!r}: expected SERVICE=TEMPLATE, e.g. "
                    "'MyService=bash run.sh {workspace} {result}'"
                )
            try:
                validate_command_template(template)
            except SettingsError as exc:
                raise SettingsError(f"--command {key!r}: {exc}") from None
            existing = self.services.get(key)
            if existing is not None:
                existing.command = template
            else:
                self.services[key] = ServiceCommand(key=key, command=template,
                                                    inherited=dict(self.inherited))
            overridden.add(key)
        self.overridden = frozenset(overridden)

    def apply_executor_overrides(self, overrides: Sequence[str]) -> None:
        """Apply ``SERVICE=EXECUTOR`` overrides (from ``--executor``) in place, to services
        that have a command (from the file or ``--command``)."""
        for item in overrides:
            key, sep, executor = (part.strip() for part in item.partition("="))
            if not sep or not key or executor not in EXECUTORS:
                raise SettingsError(f"--executor {item!r}: expected SERVICE=local or "
                                    "SERVICE=slurm")
            service = self.services.get(key)
            if service is None:
                raise SettingsError(f"--executor {key!r}: that service has no command (give "
                                    "it one with --command or in the settings file)")
            service.executor = executor

    def to_toml(self) -> list[str]:
        """The tables' lines (one blank line between tables); values at their defaults are
        left out."""
        lines: list[str] = []
        for key, service in self.services.items():
            if service.key != key:
                raise SettingsError(f"services: the entry under {key!r} has key {service.key!r}")
            header = f"services.{toml_key(key, quote=True)}"
            if lines:
                lines.append("")
            lines.append(f"[{header}]")
            lines.append(f"command = {toml_value(service.command)}")
            for name in ("timeout", "max_jobs", "cwd"):
                value = getattr(service, name)
                if value is not None:
                    lines.append(f"{name} = {toml_value(value)}")
            if service.nice is not None:
                lines.append(f"nice = {service.nice}")
            if not service.auto:
                lines.append("auto = false")
            if service.itksnap_wt:
                lines.append("itksnap_wt = true")
            if service.send_output_tail is not None:
                lines.append(f"send_output_tail = {toml_value(service.send_output_tail)}")
            if service.approve != "none":
                lines.append(f"approve = {toml_value(service.approve)}")
            lines.extend(executor_toml(service))
            if service.env:
                lines.append("")
                lines.append(f"[{header}.env]")
                for env_name, env_value in service.env.items():
                    lines.append(f"{toml_key(env_name)} = {toml_value(env_value)}")
        return lines


def dss_settings(settings: Settings) -> DssSettings:
    """The ``[services]`` tables of ``settings``: what this plug-in read of the file."""
    value = settings.plugins["dss"]
    if not isinstance(value, DssSettings):
        raise TypeError(f"the dss plug-in's settings are a {type(value).__name__}")
    return value


class DssSettingsParser:
    """Reads ``[services]`` for the core's settings loader."""

    tables = ("services",)

    def parse_settings(self, reader: TableReader, data: Mapping[str, Any]) -> DssSettings:
        # A DSS service is not isolated unless it says so (its pipelines often need cluster
        # tools): only the file's [defaults] is inherited.
        settings = DssSettings(inherited=read_defaults(reader, data))
        if "services" in data:
            for key, table in reader.table(data["services"], "services").items():
                settings.services[key] = _service(reader, key, table)
                settings.services[key].inherited = dict(settings.inherited)
        return settings


SETTINGS: SettingsParser = DssSettingsParser()


def _service(reader: TableReader, key: str, value: object) -> ServiceCommand:
    where = f"services.{toml_key(key, quote=True)}"
    if not key.strip():
        raise reader.error(where, "the service key must not be empty")
    table = reader.table(value, where)
    keys = service_keys()
    nested = [k for k, v in table.items() if k not in keys and isinstance(v, dict)]
    if nested and "command" not in table:
        # [services.My.Service] without quotes nests tables; say so rather than "unknown key".
        dotted = f"{key}.{nested[0]}"
        raise reader.error(
            where,
            f"no command, but a sub-table {nested[0]!r}: a service name with dots or spaces "
            f"must be quoted, e.g. [services.{toml_key(dotted, quote=True)}]",
        )
    reader.unknown(table, keys, where)
    if "command" not in table:
        raise reader.error(where, "missing 'command' (the command template to run)")
    command = reader.string(table["command"], f"{where}.command")
    try:
        validate_command_template(command)
    except SettingsError as exc:
        raise reader.error(f"{where}.command", str(exc)) from None
    service = ServiceCommand(key=key, command=command, **read_job_kind(reader, table, where))
    if "itksnap_wt" in table:
        service.itksnap_wt = reader.boolean(table["itksnap_wt"], f"{where}.itksnap_wt")
    service.executor, service.options = read_executor(reader, table, where)
    if "env" in table:
        service.env = _env(reader, table["env"], f"{where}.env")
    return service


def _env(reader: TableReader, value: object, where: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, item in reader.table(value, where).items():
        env_where = f"{where}.{toml_key(name)}"
        if not name or "=" in name or "\x00" in name:
            raise reader.error(env_where, "is not a valid environment variable name")
        if not isinstance(item, str):
            raise reader.error(
                env_where,
                f'must be a string, not {type_name(item)} (quote it: {name} = "...")',
            )
        env[name] = reader.string(item, env_where, empty=True)
    return env
