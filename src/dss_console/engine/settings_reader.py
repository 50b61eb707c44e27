"""Reading and writing settings values: what the core and every plug-in's table parser share.

The core (:mod:`dss_console.engine.settings`) reads the top-level keys; each source plug-in
reads its own tables with the same :class:`TableReader`, so every error names the file and
the dotted key the same way. :func:`read_job_kind` reads the keys every service or algorithm
table shares; :func:`read_executor` hands ``executor`` and the executors' own keys to the
executor classes (:meth:`~dss_console.core.executor.Executor.parse_options`).
This module imports no plug-in: plug-ins import it.
"""

from __future__ import annotations

import difflib
import math
import re
import shlex
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypedDict, runtime_checkable

from dss_console import plugins
from dss_console.core.executor import OptionValue

__all__ = [
    "CONSOLE_COMMAND_NICE",
    "DEFAULTS_TABLE",
    "EXECUTORS",
    "JOB_KIND_KEYS",
    "PLACEHOLDERS",
    "JobKindKeys",
    "PluginSettings",
    "ServiceCommand",
    "ServiceTables",
    "SettingsError",
    "SettingsParser",
    "TableReader",
    "executor_keys",
    "executor_toml",
    "format_duration",
    "is_hash",
    "parse_duration",
    "policy_keys",
    "read_defaults",
    "read_executor",
    "read_job_kind",
    "read_policy",
    "toml_key",
    "toml_string",
    "toml_value",
    "type_name",
    "validate_command_template",
    "validate_placeholders",
]

# The placeholders of a DSS command template (and of sbatch options). Here, not in the DSS
# plug-in, while validate_placeholders defaults to them and the settings dialog checks
# templates with validate_command_template; sources/dss/command.py fills in these names.
PLACEHOLDERS = ("ticket", "service", "service_hash", "workdir", "inputs", "workspace", "result")
# Commands of an engine a console started run below the console's priority: a machine full
# of jobs still answers the person in front of it. A headless worker's run at normal priority.
CONSOLE_COMMAND_NICE = 10

_HASH_RE = re.compile(r"[0-9a-fA-F]{40}")
_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_DURATION_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION_RE = re.compile(
    r"(?:(?P<d>\d+(?:\.\d+)?)\s*d)?\s*(?:(?P<h>\d+(?:\.\d+)?)\s*h)?\s*"
    r"(?:(?P<m>\d+(?:\.\d+)?)\s*m)?\s*(?:(?P<s>\d+(?:\.\d+)?)\s*s)?",
    re.IGNORECASE,
)
_NOT_A_DURATION = "is not a duration (use seconds or e.g. 6h, 90m)"


class SettingsError(ValueError):
    """The settings file (or a settings value) is unusable; the message says where and why.

    A ValueError, so ``parse_duration`` can serve directly as an argparse ``type=``.
    """


def is_hash(key: str) -> bool:
    """A 40-hex DSS service hash (any case), as a ``[services]`` key may be."""
    return _HASH_RE.fullmatch(key) is not None


@dataclass
class ServiceCommand:
    """How to run one service's jobs: the engine's per-service record, built by each source
    from its own table (a DSS ``[services.*]`` entry, a configured vantage6 image)."""

    key: str  # service name or 40-hex service hash, as written in the file
    command: str
    timeout: float | None = None  # seconds
    max_jobs: int | None = None
    nice: int | None = None  # None: the engine's default (CONSOLE_COMMAND_NICE or 0)
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    auto: bool = True
    executor: str = "local"  # one of EXECUTORS
    # Each executor's keys the table gave, by key (``sbatch_options``): those of another
    # executor than the chosen one too, kept for when the service is switched to it.
    options: dict[str, OptionValue] = field(default_factory=dict)
    itksnap_wt: bool = False  # the itksnap-wt shim on the command's PATH
    send_output_tail: bool | None = None  # None: the file's top-level send_output_tail
    # The isolation and limit keys (docs/isolation-plan.md) this command inherits: its
    # kind's default (a vantage6 algorithm: a sandbox without network) under the file's
    # [defaults]. Its own keys are in ``options``, with the executors' other keys.
    inherited: dict[str, OptionValue] = field(default_factory=dict)
    # The operator's gate (engine/gate.py): "none", "run" (approve before the command runs),
    # "release" (review the result before it leaves) or "both".
    approve: str = "none"

    def executor_options(self) -> dict[str, OptionValue]:
        """What the executors read: the inherited isolation keys, then the table's own."""
        return {**self.inherited, **self.options}

    def matches(self, name: str, githash: str) -> bool:
        """True when the key is this service's hash or its exact name."""
        # Hashes are hex; a key pasted in upper case still means the same service.
        if is_hash(self.key) and self.key.lower() == githash.lower():
            return True
        return self.key == name


# -- durations, command templates ----------------------------------------------------


def parse_duration(text: str | int | float) -> float:
    """Seconds from a number or a string like ``"3600"``, ``"6h"``, ``"90m"``, ``"1h30m"``."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise SettingsError(f"{text!r} {_NOT_A_DURATION}")
    if isinstance(text, str):
        stripped = text.strip()
        try:
            value = float(stripped)
        except ValueError:
            match = _DURATION_RE.fullmatch(stripped)
            if not stripped or match is None or not any(match.groupdict().values()):
                raise SettingsError(f"{text!r} {_NOT_A_DURATION}") from None
            value = sum(
                float(amount) * _DURATION_UNITS[unit]
                for unit, amount in match.groupdict().items()
                if amount
            )
    else:
        value = float(text)
    if not math.isfinite(value) or value < 0:
        raise SettingsError(f"{text!r} {_NOT_A_DURATION}")
    return value


def format_duration(seconds: float) -> str:
    """Seconds as durations are written by hand: "6h", "1h30m", "45s"; fractions stay
    plain seconds. :func:`parse_duration` reads every result back exactly."""
    if seconds > 0 and float(seconds).is_integer():
        rest = int(seconds)
        parts = []
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
            amount, rest = divmod(rest, size)
            if amount:
                parts.append(f"{amount}{unit}")
        return "".join(parts)
    return repr(float(seconds))


def validate_command_template(template: str) -> None:
    """Check that a command template splits into words and uses only known placeholders.

    Only validation: the runner expands templates itself. This runs at load time so a typo
    in the settings file is reported before the first ticket is claimed, not after.
    """
    if not isinstance(template, str):
        raise SettingsError(f"the command must be a string, not {type_name(template)}")
    try:
        words = shlex.split(template)
    except ValueError as exc:
        raise SettingsError(f"cannot split the command into words: {exc}") from None
    if not words:
        raise SettingsError("the command is empty")
    for word in words:
        validate_placeholders(word)


def validate_placeholders(word: str, placeholders: Sequence[str] = PLACEHOLDERS) -> None:
    """Check one word (of a command, or an sbatch option) for unknown placeholders and
    bad braces; SettingsError in words. ``placeholders``: the names allowed (a vantage6
    command has its own)."""
    known = ", ".join("{" + p + "}" for p in placeholders)
    try:
        parts = list(string.Formatter().parse(word))
    except ValueError as exc:
        raise SettingsError(
            f"bad braces in {word!r} ({exc}); write {{{{ and }}}} for literal braces"
        ) from None
    for _literal, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in placeholders:
            shown = "{" + name + "}"
            close = difflib.get_close_matches(name, placeholders, n=1)
            hint = f"; did you mean {{{close[0]}}}?" if close else ""
            context = "" if word == shown else f" in {word!r}"
            raise SettingsError(
                f"unknown placeholder {shown}{context}{hint} (known: {known}; "
                "write {{ and }} for literal braces)"
            )
        if spec or conversion:
            raise SettingsError(
                f"placeholder {{{name}}} in {word!r} takes no format spec or conversion"
            )


# -- TOML spelling -------------------------------------------------------------------


def type_name(value: object) -> str:
    """A TOML value's type as an error message says it: "an integer", "a table"."""
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)


def toml_string(text: str) -> str:
    """A TOML basic string: escapes for quote, backslash and control characters."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:
            # TOML (and UTF-8) cannot carry lone surrogates, e.g. from undecodable file names.
            raise SettingsError(f"{text!r} contains a character TOML cannot store")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_key(key: str, *, quote: bool = False) -> str:
    """A key as a table header or key/value line spells it; ``quote``: always quoted (a
    service name or image, so that one reads the same in every header)."""
    return key if not quote and _BARE_KEY_RE.fullmatch(key) else toml_string(key)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 2**53:
            return str(int(value))  # "7", not "7.0": the file is for people too
        return repr(value)
    if isinstance(value, (str, Path)):
        return toml_string(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise SettingsError(f"cannot write {type_name(value)} {value!r} to the settings file")


# -- reading tables ------------------------------------------------------------------


class TableReader:
    """Typed getters that name the file and the dotted key in every error.

    ``path`` None: the table did not come from a file (the v6 tab of the settings dialog
    checks its rows alone); messages then start with the key. ``error_type``: the
    SettingsError subclass raised (a plug-in's own, for callers that catch just that).
    """

    def __init__(self, path: Path | None,
                 error_type: type[SettingsError] = SettingsError) -> None:
        self.path = path
        self.error_type = error_type

    def error(self, where: str, message: str) -> SettingsError:
        if self.path is None:
            return self.error_type(f"{where}: {message}" if where else message)
        return self.error_type(
            f"{self.path}: {where}: {message}" if where else f"{self.path}: {message}"
        )

    def unknown(self, table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
        extra = [k for k in table if k not in allowed]
        if not extra:
            return
        described = []
        for key in extra:
            close = difflib.get_close_matches(key, allowed, n=1)
            described.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
        noun = "unknown key" if len(extra) == 1 else "unknown keys"
        message = f"{noun} {', '.join(described)}; known keys: {', '.join(allowed)}"
        raise self.error(where, message)

    def string(self, value: object, where: str, *, empty: bool = False) -> str:
        if not isinstance(value, str):
            raise self.error(where, f"must be a string, not {type_name(value)}")
        if not empty and not value.strip():
            raise self.error(where, "must not be empty")
        if "\x00" in value:
            raise self.error(where, "must not contain NUL characters")
        return value

    def url(self, value: object, where: str) -> str:
        text = self.string(value, where)
        if not re.match(r"https?://[^\s/]+", text):
            raise self.error(where, f"{text!r} is not an http:// or https:// URL")
        return text

    def boolean(self, value: object, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(where, f"must be true or false, not {type_name(value)}")
        return value

    def integer(self, value: object, where: str, minimum: int,
                maximum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(where, f"must be an integer, not {type_name(value)}")
        if maximum is not None and not minimum <= value <= maximum:
            raise self.error(where, f"must be {minimum} to {maximum}, not {value}")
        if value < minimum:
            raise self.error(where, f"must be at least {minimum}, not {value}")
        return value

    def number(self, value: object, where: str, *, positive: bool) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(where, f"must be a number, not {type_name(value)}")
        number = float(value)
        if not math.isfinite(number) or number < 0 or (positive and number == 0):
            bound = "greater than 0" if positive else "0 or more"
            raise self.error(where, f"must be a number {bound}, not {value}")
        return number

    def choice(self, value: object, where: str, choices: Sequence[str]) -> str:
        if not isinstance(value, str) or value not in choices:
            shown = " | ".join(f'"{c}"' for c in choices)
            raise self.error(where, f"must be {shown}, not {value!r}")
        return value

    def duration(self, value: object, where: str) -> float:
        try:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise SettingsError(f"{value!r} {_NOT_A_DURATION}")
            seconds = parse_duration(value)
        except SettingsError as exc:
            raise self.error(where, str(exc)) from None
        if seconds <= 0:
            raise self.error(where, f"must be longer than 0 seconds, not {value!r}")
        return seconds

    def table(self, value: object, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(where, f"must be a table, not {type_name(value)}")
        return value


# -- what a source plug-in's settings look like to the core ---------------------------


class PluginSettings(Protocol):
    """What one source plug-in read from its own tables."""

    def command_for(self, name: str, key: str) -> ServiceCommand | None:
        """The engine's record for a service (by name or key), None when not configured."""
        ...

    def configured_keys(self) -> list[str]:
        """The service keys configured here (a vantage6 image is claimable before the next
        services refresh lists it)."""
        ...

    def to_toml(self) -> list[str]:
        """The tables' lines, one blank line between tables; defaults left out."""
        ...


@runtime_checkable
class ServiceTables(PluginSettings, Protocol):
    """A plug-in's settings that are one table per service, each a ServiceCommand (the DSS
    ``[services.*]``): what the Settings dialog's service editor edits and the worker's
    ``--command``/``--executor`` overrides change. The core finds them by this shape, never
    by a source's name."""

    @property
    def services(self) -> dict[str, ServiceCommand]: ...  # by key as in the file

    def with_services(self, services: dict[str, ServiceCommand]) -> ServiceTables:
        """A copy with these tables (the other fields kept)."""
        ...

    def apply_command_overrides(self, overrides: Sequence[str]) -> None: ...  # SERVICE=TEMPLATE

    def apply_executor_overrides(self, overrides: Sequence[str]) -> None: ...  # SERVICE=EXECUTOR


class SettingsParser(Protocol):
    """A source plug-in's reader of its own tables (later ``SourcePlugin.parse_settings``)."""

    @property
    def tables(self) -> tuple[str, ...]:
        """The top-level keys it owns (``"services"``, ``"v6"``)."""
        ...

    def parse_settings(self, reader: TableReader, data: Mapping[str, Any]) -> PluginSettings:
        """Its tables of the file's top-level ``data``, checked; defaults when absent."""
        ...


# -- the keys every service or algorithm table shares --------------------------------


class JobKindKeys(TypedDict, total=False):
    """The shared keys a table gave (absent: the record's default)."""

    timeout: float
    max_jobs: int
    nice: int
    cwd: str
    auto: bool
    send_output_tail: bool
    approve: str


# In the order they are read (the first bad one is reported).
JOB_KIND_KEYS = ("timeout", "max_jobs", "nice", "cwd", "auto", "send_output_tail", "approve")
APPROVE_CHOICES = ("none", "run", "release", "both")  # engine/gate.py reads them


def read_job_kind(reader: TableReader, table: Mapping[str, Any], where: str,
                  keys: Sequence[str] = JOB_KIND_KEYS) -> JobKindKeys:
    """The shared keys of a service or algorithm table ``where``, checked; ``keys``: the
    ones this kind of table has (a vantage6 algorithm has no ``auto``)."""
    found = JobKindKeys()
    if "timeout" in keys and "timeout" in table:
        found["timeout"] = reader.duration(table["timeout"], f"{where}.timeout")
    if "max_jobs" in keys and "max_jobs" in table:
        found["max_jobs"] = reader.integer(table["max_jobs"], f"{where}.max_jobs", 1)
    if "nice" in keys and "nice" in table:
        found["nice"] = reader.integer(table["nice"], f"{where}.nice", 0, 19)
    if "cwd" in keys and "cwd" in table:
        found["cwd"] = reader.string(table["cwd"], f"{where}.cwd")
    if "auto" in keys and "auto" in table:
        found["auto"] = reader.boolean(table["auto"], f"{where}.auto")
    if "send_output_tail" in keys and "send_output_tail" in table:
        found["send_output_tail"] = reader.boolean(table["send_output_tail"],
                                                   f"{where}.send_output_tail")
    if "approve" in keys and "approve" in table:
        found["approve"] = reader.choice(table["approve"], f"{where}.approve",
                                         APPROVE_CHOICES)
    return found


# -- executor keys -------------------------------------------------------------------
# ``executor`` here; the rest by each executor class, which owns its keys.

EXECUTORS = tuple(plugins.EXECUTORS)  # the names a service's `executor` may give


def _quoted(name: str) -> str:
    return f'"{name}"'


def executor_keys() -> tuple[str, ...]:
    """The keys of a service table the executors read: ``executor``, then each executor's
    options in the registry's order, then the isolation and limit keys they read."""
    return ("executor", *(option.name for name in plugins.EXECUTORS
                          for option in plugins.executor_class(name).option_fields),
            *policy_keys())


def policy_keys() -> tuple[str, ...]:
    """The isolation and limit keys some executor reads (``Executor.policy_keys``), in the
    registry's order, each once (isolation, network, memory, cpus, processes, read_only,
    read_write)."""
    found: list[str] = []
    for name in plugins.EXECUTORS:
        found += [k for k in plugins.executor_class(name).policy_keys if k not in found]
    return tuple(found)


def read_executor(reader: TableReader, table: Mapping[str, Any],
                  where: str) -> tuple[str, dict[str, OptionValue]]:
    """``executor`` of the service table ``where`` and the executors' options, checked.
    Every executor reads its keys, not only the chosen one: options set for a cluster are
    checked and kept while the service runs locally."""
    executor = "local"
    if "executor" in table:
        executor = reader.string(table["executor"], f"{where}.executor")
        if executor not in plugins.EXECUTORS:
            raise reader.error(f"{where}.executor",
                               f"must be {' or '.join(map(_quoted, plugins.EXECUTORS))}, "
                               f"not {executor!r}")
    options: dict[str, OptionValue] = {}
    for name in plugins.EXECUTORS:
        options.update(plugins.executor_class(name).parse_options(reader, table, where))
    options.update(read_policy(reader, table, where))
    return executor, options


# -- isolation and limits ------------------------------------------------------------
# The keys of docs/isolation-plan.md, in a service table, a vantage6 algorithm table and
# the [defaults] table both inherit. Kept as written (``memory = "8G"`` stays "8G", so the
# file reads back as it was); the executors turn them into a Policy when a job starts.

DEFAULTS_TABLE = "defaults"


def read_policy(reader: TableReader, table: Mapping[str, Any], where: str,
                keys: Sequence[str] | None = None) -> dict[str, OptionValue]:
    """The isolation and limit keys the table ``where`` gives, checked as the executors
    will read them (a bad one names its dotted key and the fix)."""
    found: dict[str, OptionValue] = {}
    for key in policy_keys() if keys is None else keys:
        if key not in table:
            continue
        value = table[key]
        for name in plugins.EXECUTORS:
            executor = plugins.executor_class(name)
            if key in executor.policy_keys:
                try:
                    executor.check_policy_value(key, value)
                except ValueError as exc:
                    raise reader.error(f"{where}.{key}", str(exc)) from None
        found[key] = list(value) if isinstance(value, list) else value
    return found


def read_defaults(reader: TableReader, data: Mapping[str, Any]) -> dict[str, OptionValue]:
    """The file's ``[defaults]`` table: the isolation and limit keys every service and
    vantage6 algorithm inherits (its own keys win)."""
    if DEFAULTS_TABLE not in data:
        return {}
    table = reader.table(data[DEFAULTS_TABLE], DEFAULTS_TABLE)
    keys = policy_keys()
    reader.unknown(table, keys, DEFAULTS_TABLE)
    return read_policy(reader, table, DEFAULTS_TABLE, keys)


def executor_toml(service: ServiceCommand) -> list[str]:
    """The executor keys' lines of a service table; defaults (and empty options) left
    out."""
    lines = []
    if service.executor != "local":
        lines.append(f"executor = {toml_value(service.executor)}")
    for key in executor_keys()[1:]:
        value = service.options.get(key)
        if value is not None and value != [] and value != "":
            lines.append(f"{key} = {toml_value(value)}")
    return lines
