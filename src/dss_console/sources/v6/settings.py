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
    approve = "both"           # the operator approves each run before it runs and reviews
                               #   its result before it leaves: "none" (default) | "run" |
                               #   "release" | "both"
    [v6.algorithms."harbor2.vantage6.ai/demo/average".env]   # plain, like the image's ENV
    PYTHONPATH = "/opt/v6/average/src"

    [v6.databases.default]     # same meaning as the official node's `databases`
    uri = "/data/cohort.csv"
    type = "csv"               # csv | excel | parquet | sql | sparql | omop | other
    [v6.databases.default.env] # → DEFAULT_DB_PARAM_<KEY>
    password = "…"

Command placeholders: ``{run} {task} {image} {workdir} {input} {output} {token} {tmp}``.

Strict like the rest of the file: unknown keys, wrong types and bad values raise an error
naming the dotted key: :class:`V6SettingsError` from :func:`parse_v6_settings` (the table
alone), the core's SettingsError with the file name when the core's loader reads the file
through :data:`SETTINGS`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dss_console.core.executor import OptionValue
from dss_console.engine.settings import Settings
from dss_console.engine.settings_reader import (
    JOB_KIND_KEYS,
    ServiceCommand,
    SettingsError,
    SettingsParser,
    TableReader,
    policy_keys,
    read_defaults,
    read_job_kind,
    read_policy,
    toml_key,
    toml_value,
    type_name,
    validate_placeholders,
)

__all__ = [
    "DATABASE_TYPES",
    "PLACEHOLDERS",
    "SETTINGS",
    "V6Algorithm",
    "V6Database",
    "V6Settings",
    "V6SettingsError",
    "parse_size",
    "parse_v6_settings",
    "v6_settings",
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
_BASE_ALGORITHM_KEYS = ("python", "package", "command", "subtasks", "timeout", "max_jobs",
                        "nice", "cwd", "env", "send_output_tail", "approve")
# A new algorithm entry runs in a sandbox without network (what the Docker node users
# compare with gives each algorithm a container): the keys are written into it
# (new_algorithm_policy), so the file shows it and the operator can change it. An entry
# without them inherits [defaults] only: an algorithm configured before isolation existed
# (its venv, its subtasks through the proxy) keeps running as it did.
KIND_POLICY: dict[str, OptionValue] = {"isolation": "sandbox", "network": False}
# The shared keys an algorithm table has: all but auto (every configured image runs).
_JOB_KIND_KEYS = tuple(key for key in JOB_KIND_KEYS if key != "auto")
_DATABASE_KEYS = ("uri", "type", "env")
# Labels become parts of variable names (<LABEL>_DATABASE_URI), so they must be identifiers.
_LABEL_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PACKAGE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_SIZE_RE = re.compile(r"(?P<n>\d+)\s*(?P<unit>[kKmMgG]?)[bB]?")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


class V6SettingsError(SettingsError):
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
    # The operator's gate: "none" | "run" | "release" | "both" (engine/gate.py).
    approve: str = "none"
    # Its own isolation and limit keys, as written; ``inherited``: the file's [defaults]
    # (docs/isolation-plan.md).
    policy: dict[str, OptionValue] = field(default_factory=dict)
    inherited: dict[str, OptionValue] = field(default_factory=dict)

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

    def service_command(self) -> ServiceCommand:
        """The engine's view of this image: its limits, and a command line to show. The
        argv that really runs comes from ``source.command`` when the run starts."""
        return ServiceCommand(key=self.image, command=shlex.join(self.argv_template()),
                              timeout=self.timeout, max_jobs=self.max_jobs, nice=self.nice,
                              cwd=self.cwd, env=dict(self.env),
                              send_output_tail=self.send_output_tail,
                              options=dict(self.policy), inherited=dict(self.inherited),
                              approve=self.approve)


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

    def command_for(self, name: str, key: str) -> ServiceCommand | None:
        """A run's image (``key``; a v6 service's name is its image too) as the engine's
        per-service record; None when the image is not configured (not allowed here)."""
        algorithm = self.algorithm_for(key)
        return algorithm.service_command() if algorithm is not None else None

    def configured_keys(self) -> list[str]:
        """The configured images: claimable from the next poll, before the next services
        refresh lists them (an image's name is all a v6 "service" is)."""
        return list(self.algorithms)

    def to_toml(self) -> list[str]:
        """The [v6] tables, written back from what was parsed (so a console that saves its
        settings keeps the node's configuration); values at their defaults are left out."""
        defaults = V6Settings()
        lines: list[str] = []

        def table(header: str, rows: list[str]) -> None:
            if not rows:
                return
            if lines:
                lines.append("")
            lines.append(f"[{header}]")
            lines.extend(rows)

        def env_rows(env: Mapping[str, str]) -> list[str]:
            return [f"{toml_key(k)} = {toml_value(v)}" for k, v in env.items()]

        top = [f"{name} = {toml_value(getattr(self, name))}"
               for name in ("send_output_tail", "log_limit", "unknown_images", "on_shutdown")
               if getattr(self, name) != getattr(defaults, name)]
        if top or self.algorithm_env or self.algorithms or self.databases:
            table("v6", top)
        table("v6.algorithm_env", env_rows(self.algorithm_env))
        for image, algorithm in self.algorithms.items():
            header = f"v6.algorithms.{toml_key(image, quote=True)}"
            rows = [f"{name} = {toml_value(getattr(algorithm, name))}"
                    for name in ("python", "package", "command", "timeout", "max_jobs", "nice",
                                 "cwd", "send_output_tail") if getattr(algorithm, name) is not None]
            if algorithm.approve != "none":
                rows.append(f"approve = {toml_value(algorithm.approve)}")
            if algorithm.subtasks:
                rows.append("subtasks = true")
            rows += [f"{key} = {toml_value(value)}" for key, value in algorithm.policy.items()]
            table(header, rows)
            table(f"{header}.env", env_rows(algorithm.env))
        for label, database in self.databases.items():
            header = f"v6.databases.{toml_key(label, quote=True)}"
            table(header, [f"uri = {toml_value(database.uri)}",
                           f"type = {toml_value(database.type)}"])
            table(f"{header}.env", env_rows(database.env))
        return lines


def v6_settings(settings: Settings) -> V6Settings:
    """The ``[v6]`` table of ``settings``: what this plug-in read of the file."""
    value = settings.plugins["v6"]
    if not isinstance(value, V6Settings):
        raise TypeError(f"the v6 plug-in's settings are a {type(value).__name__}")
    return value


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
    return _parse(TableReader(None, V6SettingsError), table, where)


class V6SettingsParser:
    """Reads ``[v6]`` (with its algorithms and databases) for the core's settings loader."""

    tables = ("v6",)

    def parse_settings(self, reader: TableReader, data: Mapping[str, Any]) -> V6Settings:
        return _parse(reader, data["v6"], "v6", read_defaults(reader, data)) \
            if "v6" in data else V6Settings()


SETTINGS: SettingsParser = V6SettingsParser()


def _parse(check: TableReader, value: object, where: str,
           defaults: Mapping[str, OptionValue] | None = None) -> V6Settings:
    table = check.table(value, where)
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
        kwargs["algorithm_env"] = _env(check, table["algorithm_env"], f"{where}.algorithm_env")
    if "algorithms" in table:
        algorithms = check.table(table["algorithms"], f"{where}.algorithms")
        kwargs["algorithms"] = {
            image: _algorithm(check, image, value, f"{where}.algorithms.{_quoted(image)}",
                              defaults or {})
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
    # The same rules as a DSS command's words, with the v6 placeholders.
    for word in words:
        try:
            validate_placeholders(word, PLACEHOLDERS)
        except SettingsError as exc:
            raise V6SettingsError(str(exc)) from None


def algorithm_keys() -> tuple[str, ...]:
    """An algorithm table's keys, the isolation and limit keys last."""
    return (*_BASE_ALGORITHM_KEYS, *policy_keys())


def new_algorithm_policy() -> dict[str, OptionValue]:
    """The isolation keys a new algorithm entry is written with: the kind's default,
    spelled out so the operator sees (and can change) how it runs."""
    return dict(KIND_POLICY)


def _algorithm(check: TableReader, image: str, value: Any, where: str,
               defaults: Mapping[str, OptionValue]) -> V6Algorithm:
    if not image.strip():
        raise check.error(where, "the image name must not be empty")
    table = check.table(value, where)
    check.unknown(table, algorithm_keys(), where)
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
    kwargs.update(read_job_kind(check, table, where, _JOB_KIND_KEYS))
    if "env" in table:
        kwargs["env"] = _env(check, table["env"], f"{where}.env")
    kwargs["policy"] = read_policy(check, table, where)
    kwargs["inherited"] = dict(defaults)
    return V6Algorithm(**kwargs)


def _database(check: TableReader, label: str, value: Any, where: str) -> V6Database:
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
    env = _env(check, table["env"], f"{where}.env") if "env" in table else {}
    return V6Database(label=label, uri=uri, type=kind, env=env)


def _quoted(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else '"' + key.replace('"', '\\"') + '"'


def _env(check: TableReader, value: object, where: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, item in check.table(value, where).items():
        item_where = f"{where}.{_quoted(name)}"
        if not _ENV_NAME_RE.fullmatch(name):
            raise check.error(item_where, "is not a valid environment variable name")
        if not isinstance(item, str):
            raise check.error(item_where, f'must be a string, not {type_name(item)} '
                                          f'(quote it: {name} = "...")')
        if "\x00" in item:
            raise check.error(item_where, "must not contain NUL characters")
        env[name] = item
    return env
