"""The ``[v6]`` table of the settings file: this machine as a vantage6 node.

::

    [v6]
    send_output_tail = false   # the run log gets the tail of the command's output, redacted
                               #   (paths under the work root, home, data dirs and the
                               #   databases, host names, environment values → <workdir>,
                               #   <home>, <database:LABEL>, <host>, <env:NAME>); default
                               #   false: only the command's @dss messages and our words go.
                               #   An algorithm may say otherwise. (Old name: share_logs.)
    log_limit = "256k"         # only the last N bytes of it (bytes, or "64k", "1M")
    unknown_images = "refuse"  # a run for an image not configured here: refuse → "not allowed"
                               #   (the node's policy), leave → leave it open for another node
    on_shutdown = "leave"      # runs in flight at shutdown: leave (re-run at next start) | fail
    algorithm_env = { SITE = "a" }   # every run gets these, encoded like the node's

    [v6.algorithms."harbor2.vantage6.ai/demo/average"]   # image exactly as researchers post it
    python = "/opt/v6/average/bin/python"   # shorthand: the official wrapper with this Python
    package = "v6_average"                  #   and this algorithm package (PKG_NAME)
    # command = "apptainer exec /opt/avg.sif python -m avg"   # or any command template
    subtasks = true            # the algorithm may create subtasks: give it the local proxy
    timeout = "6h"
    max_jobs = 1
    nice = 0
    cwd = "/opt/v6/average"
    send_output_tail = true    # this image's run logs carry its output's tail (redacted)
    [v6.algorithms."harbor2.vantage6.ai/demo/average".env]   # plain, like the image's ENV
    PYTHONPATH = "/opt/v6/average/src"

    [v6.databases.default]     # same meaning as the official node's `databases`
    uri = "/data/cohort.csv"
    type = "csv"               # csv | excel | parquet | sql | sparql | omop | other
    [v6.databases.default.env] # → DEFAULT_DB_PARAM_<KEY>
    password = "…"

Command placeholders: ``{run} {task} {image} {workdir} {input} {output} {token} {tmp}``.

Strict like the rest of the file: unknown keys, wrong types and bad values raise
:class:`V6SettingsError` naming the dotted key. The engine's settings loader calls
:func:`parse_v6_settings` with the ``v6`` table and prefixes the file name.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DATABASE_TYPES",
    "PLACEHOLDERS",
    "V6Algorithm",
    "V6Database",
    "V6Settings",
    "V6SettingsError",
    "parse_size",
    "parse_v6_settings",
]

PLACEHOLDERS = ("run", "task", "image", "workdir", "input", "output", "token", "tmp")
DATABASE_TYPES = ("csv", "excel", "parquet", "sql", "sparql", "omop", "other")
UNKNOWN_IMAGES = ("refuse", "leave")
ON_SHUTDOWN = ("leave", "fail")
DEFAULT_LOG_LIMIT = 256 * 1024

# The official wrapper, as the algorithm image's CMD runs it.
WRAPPER_CODE = "from vantage6.algorithm.tools.wrap import wrap_algorithm; wrap_algorithm()"

_TOP_KEYS = ("send_output_tail", "share_logs", "log_limit", "unknown_images", "on_shutdown",
             "algorithm_env", "algorithms", "databases")
_ALGORITHM_KEYS = ("python", "package", "command", "subtasks", "timeout", "max_jobs", "nice",
                   "cwd", "env", "send_output_tail")
_DATABASE_KEYS = ("uri", "type", "env")
# Labels become parts of variable names (<LABEL>_DATABASE_URI), so they must be identifiers.
_LABEL_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PACKAGE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_SIZE_RE = re.compile(r"(?P<n>\d+)\s*(?P<unit>[kKmMgG]?)[bB]?")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


class V6SettingsError(ValueError):
    """A bad ``[v6]`` value; the message starts with the dotted key (``v6.algorithms.…``)."""


@dataclass(frozen=True)
class V6Database:
    label: str
    uri: str
    type: str
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class V6Algorithm:
    """How to run one image locally: the official wrapper (python + package) or a command."""

    image: str
    python: str | None = None
    package: str | None = None
    command: str | None = None
    subtasks: bool = False
    timeout: float | None = None
    max_jobs: int | None = None
    nice: int | None = None
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    send_output_tail: bool | None = None  # None: [v6] send_output_tail

    def argv_template(self) -> list[str]:
        """The command's words before placeholders are filled in."""
        if self.command is not None:
            return shlex.split(self.command)
        assert self.python is not None
        return [self.python, "-c", WRAPPER_CODE]

    def plain_env(self) -> dict[str, str]:
        """Unencoded variables: the image's ENV (``env``) and PKG_NAME for the shorthand."""
        env = dict(self.env)
        if self.package is not None:
            env["PKG_NAME"] = self.package
        return env


@dataclass(frozen=True)
class V6Settings:
    # Raw output stays on the node unless opted in (then redacted, engine/redact.py).
    send_output_tail: bool = False
    log_limit: int = DEFAULT_LOG_LIMIT
    unknown_images: str = "refuse"
    on_shutdown: str = "leave"
    algorithm_env: dict[str, str] = field(default_factory=dict)
    algorithms: dict[str, V6Algorithm] = field(default_factory=dict)
    databases: dict[str, V6Database] = field(default_factory=dict)

    def algorithm_for(self, image: str) -> V6Algorithm | None:
        """Exact match only: the allowlist is the configured image names, nothing looser."""
        return self.algorithms.get(image)


def parse_size(value: Any) -> int:
    """Bytes from an integer or ``"256k"``, ``"1M"``, ``"2g"`` (binary units)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size (use bytes or e.g. 256k, 1M)")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value!r} is not a size (use bytes or e.g. 256k, 1M)")
        return value
    if isinstance(value, str):
        match = _SIZE_RE.fullmatch(value.strip())
        if match:
            return int(match.group("n")) * _SIZE_UNITS[match.group("unit").lower()]
    raise ValueError(f"{value!r} is not a size (use bytes or e.g. 256k, 1M)")


def parse_v6_settings(table: Mapping[str, Any], where: str = "v6") -> V6Settings:
    """Check and convert the ``[v6]`` table; V6SettingsError names the key on any problem."""
    check = _Checker()
    table = check.table(table, where)
    check.unknown(table, _TOP_KEYS, where)
    kwargs: dict[str, Any] = {}
    if "share_logs" in table and "send_output_tail" in table:
        raise check.error(f"{where}.share_logs", "is the old name of send_output_tail: give "
                                                 "only send_output_tail")
    for key in ("send_output_tail", "share_logs"):  # the old name still loads
        if key in table:
            kwargs["send_output_tail"] = check.boolean(table[key], f"{where}.{key}")
    if "log_limit" in table:
        try:
            kwargs["log_limit"] = parse_size(table["log_limit"])
        except ValueError as exc:
            raise check.error(f"{where}.log_limit", str(exc)) from None
    for key, choices in (("unknown_images", UNKNOWN_IMAGES), ("on_shutdown", ON_SHUTDOWN)):
        if key in table:
            kwargs[key] = check.choice(table[key], f"{where}.{key}", choices)
    if "algorithm_env" in table:
        kwargs["algorithm_env"] = check.env(table["algorithm_env"], f"{where}.algorithm_env")
    if "algorithms" in table:
        algorithms = check.table(table["algorithms"], f"{where}.algorithms")
        kwargs["algorithms"] = {
            image: _algorithm(check, image, value, f"{where}.algorithms.{_quoted(image)}")
            for image, value in algorithms.items()
        }
    if "databases" in table:
        databases = check.table(table["databases"], f"{where}.databases")
        kwargs["databases"] = {
            label: _database(check, label, value, f"{where}.databases.{_quoted(label)}")
            for label, value in databases.items()
        }
    return V6Settings(**kwargs)


def validate_v6_command(template: str) -> None:
    """Split like the runner will and allow only the v6 placeholders."""
    try:
        words = shlex.split(template)
    except ValueError as exc:
        raise V6SettingsError(f"cannot split the command into words: {exc}") from None
    if not words:
        raise V6SettingsError("the command is empty")
    # The same rules as a DSS command's words, with the v6 placeholders (imported here:
    # engine.settings imports this module).
    from dss_console.engine.settings import SettingsError, validate_placeholders

    for word in words:
        try:
            validate_placeholders(word, PLACEHOLDERS)
        except SettingsError as exc:
            raise V6SettingsError(str(exc)) from None


def _algorithm(check: _Checker, image: str, value: Any, where: str) -> V6Algorithm:
    if not image.strip():
        raise check.error(where, "the image name must not be empty")
    table = check.table(value, where)
    check.unknown(table, _ALGORITHM_KEYS, where)
    has_shorthand = "python" in table or "package" in table
    if has_shorthand and "command" in table:
        raise check.error(where, "give either python + package or command, not both")
    if not has_shorthand and "command" not in table:
        raise check.error(where, "missing how to run it: python + package, or command")
    kwargs: dict[str, Any] = {"image": image}
    if has_shorthand:
        for key in ("python", "package"):
            if key not in table:
                raise check.error(where, f"missing {key!r} (python and package go together)")
        kwargs["python"] = check.string(table["python"], f"{where}.python")
        package = check.string(table["package"], f"{where}.package")
        if not _PACKAGE_RE.fullmatch(package):
            raise check.error(f"{where}.package", f"{package!r} is not a Python package name")
        kwargs["package"] = package
    else:
        command = check.string(table["command"], f"{where}.command")
        try:
            validate_v6_command(command)
        except V6SettingsError as exc:
            raise check.error(f"{where}.command", str(exc)) from None
        kwargs["command"] = command
    if "subtasks" in table:
        kwargs["subtasks"] = check.boolean(table["subtasks"], f"{where}.subtasks")
    if "timeout" in table:
        kwargs["timeout"] = check.duration(table["timeout"], f"{where}.timeout")
    if "max_jobs" in table:
        kwargs["max_jobs"] = check.integer(table["max_jobs"], f"{where}.max_jobs", 1, None)
    if "nice" in table:
        kwargs["nice"] = check.integer(table["nice"], f"{where}.nice", 0, 19)
    if "cwd" in table:
        kwargs["cwd"] = check.string(table["cwd"], f"{where}.cwd")
    if "env" in table:
        kwargs["env"] = check.env(table["env"], f"{where}.env")
    if "send_output_tail" in table:
        kwargs["send_output_tail"] = check.boolean(table["send_output_tail"],
                                                   f"{where}.send_output_tail")
    return V6Algorithm(**kwargs)


def _database(check: _Checker, label: str, value: Any, where: str) -> V6Database:
    if not _LABEL_RE.fullmatch(label):
        raise check.error(where, "a database label must start with a letter and hold only "
                                 "letters, digits and _ (it becomes part of variable names)")
    table = check.table(value, where)
    check.unknown(table, _DATABASE_KEYS, where)
    for key in ("uri", "type"):
        if key not in table:
            raise check.error(where, f"missing {key!r}")
    uri = check.string(table["uri"], f"{where}.uri")
    kind = check.choice(table["type"], f"{where}.type", DATABASE_TYPES)
    env = check.env(table["env"], f"{where}.env") if "env" in table else {}
    return V6Database(label=label, uri=uri, type=kind, env=env)


def _quoted(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else '"' + key.replace('"', '\\"') + '"'


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


class _Checker:
    def error(self, where: str, message: str) -> V6SettingsError:
        return V6SettingsError(f"{where}: {message}")

    def unknown(self, table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
        extra = [k for k in table if k not in allowed]
        if not extra:
            return
        described = []
        for key in extra:
            close = difflib.get_close_matches(key, allowed, n=1)
            described.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
        noun = "unknown key" if len(extra) == 1 else "unknown keys"
        raise self.error(where, f"{noun} {', '.join(described)}; known keys: {', '.join(allowed)}")

    def table(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(where, f"must be a table, not {_type_name(value)}")
        return value

    def string(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise self.error(where, f"must be a string, not {_type_name(value)}")
        if not value.strip():
            raise self.error(where, "must not be empty")
        if "\x00" in value:
            raise self.error(where, "must not contain NUL characters")
        return value

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(where, f"must be true or false, not {_type_name(value)}")
        return value

    def integer(self, value: Any, where: str, minimum: int, maximum: int | None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(where, f"must be an integer, not {_type_name(value)}")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"{minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
            raise self.error(where, f"must be {bound}, not {value}")
        return value

    def choice(self, value: Any, where: str, choices: Sequence[str]) -> str:
        if value not in choices or not isinstance(value, str):
            shown = " | ".join(f'"{c}"' for c in choices)
            raise self.error(where, f"must be {shown}, not {value!r}")
        return value

    def duration(self, value: Any, where: str) -> float:
        # Imported here: engine.settings imports this module to parse [v6].
        from dss_console.engine.settings import SettingsError, parse_duration

        try:
            seconds = parse_duration(value)
        except SettingsError as exc:
            raise self.error(where, str(exc)) from None
        if seconds <= 0:
            raise self.error(where, f"must be longer than 0 seconds, not {value!r}")
        return seconds

    def env(self, value: Any, where: str) -> dict[str, str]:
        table = self.table(value, where)
        env: dict[str, str] = {}
        for name, item in table.items():
            item_where = f"{where}.{_quoted(name)}"
            if not _ENV_NAME_RE.fullmatch(name):
                raise self.error(item_where, "is not a valid environment variable name")
            if not isinstance(item, str):
                raise self.error(item_where, f'must be a string, not {_type_name(item)} '
                                             f'(quote it: {name} = "...")')
            if "\x00" in item:
                raise self.error(item_where, "must not contain NUL characters")
            env[name] = item
        return env
