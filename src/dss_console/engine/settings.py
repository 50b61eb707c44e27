"""The settings file: a TOML file shared by the console and the headless worker.

Where: ``settings.toml`` in the platform config dir (``paths.config_dir()``), unless
``--config FILE`` or the environment variable ``DSS_CONSOLE_CONFIG`` names another file.
A missing file means all defaults. Every key is optional::

    server = "https://dss.itksnap.org"   # default server of the worker; last used in the GUI
    servers = ["https://dss.itksnap.org", "http://127.0.0.1:8080"]  # known servers (GUI list)
    provider = "mylab"                    # provider name sent with claims
    instance = "node1"                    # instance code; default: this host's name
    workroot = "/data/dss-work"           # default: <user data dir>/work; relative paths are
                                          # taken from this file's directory, ~ is expanded
    poll_interval = 5.0                   # seconds between polls for new tickets (> 0)
    concurrency = 2                       # max jobs running at once (>= 1; default 1)
    retention_days = 7                    # finished jobs' work dirs older than this are
                                          # deleted (0 = keep forever)
    interrupted = "rerun"                 # a job found mid-run after a crash: "rerun" | "fail"
    on_shutdown = "resume"                # running jobs at a stop (SIGTERM, Quit): "resume"
                                          # (stop the command, keep the ticket claimed, run it
                                          # again at the next start) | "fail" (fail the ticket)
    pause_after_failures = 3              # this many failures of one service's command in a
    pause_window = "15m"                  # row within this time pause its auto claiming until
                                          # the operator resumes it or a retry succeeds
                                          # (0 = never pause)
    auto = false                          # the console's Auto mode, as last left (the
                                          # headless worker always runs in auto mode)
    ca_bundle = "/etc/ssl/my-ca.pem"      # extra CA bundle for TLS verification
    notify = false                        # desktop notification on success/failure (GUI)
    send_output_tail = false              # a failed ticket's log gets the last lines of the
                                          # command's output, redacted (default false: raw
                                          # output stays on this machine); each service may
                                          # say otherwise

    [services."ASHS-PMC-T1"]              # key: a service name (exact) or its 40-hex hash
    command = "bash /opt/ashs/service_ashs.sh {ticket} {workdir} {workspace} {result}"
    timeout = "6h"                        # seconds, or "6h", "90m", "45s", "1h30m", "2d"
    max_jobs = 1                          # at most this many jobs of this service at once
    nice = 10                             # CPU priority of the command, 0 (normal) to 19
                                          # (lowest); default 10 for an engine a console
                                          # started (the desktop stays responsive), else 0
    cwd = "/opt/ashs"                     # working directory of the command
    auto = true                           # take part in auto mode (default true)
    executor = "slurm"                    # "local" (default: a child process) or "slurm"
                                          # (each ticket is a cluster job, see below)
    sbatch_options = ["--partition=gpu", "--gres=gpu:1"]  # added to sbatch (slurm only;
                                          # placeholders allowed)
    itksnap_wt = true                     # put an `itksnap-wt` (dss-console wt) first on the
                                          # command's PATH: existing scripts run unchanged
    send_output_tail = true               # this service's failures attach the output's last
                                          # lines; paths under the work root, home and data
                                          # dirs, host names and environment values are
                                          # replaced by <workdir>, <home>, <host>, <env:NAME>

    [services."ASHS-PMC-T1".env]          # extra environment variables (string values)
    ASHS_ROOT = "/opt/ashs"

Command templates are split with shlex into words (no shell) and may use the placeholders
``{ticket} {service} {service_hash} {workdir} {inputs} {workspace} {result}``; ``{{`` and
``}}`` are literal braces. Service names with dots or spaces must be quoted in table headers
(``[services."My.Service v2"]``), otherwise TOML reads them as nested tables.

Loading is strict: an unknown key (a typo), a wrong type or a bad value raises
:class:`SettingsError` naming the file, the key and the problem, so a mistake never turns
silently into a default. :func:`save_settings` edits the file in place: only the values
that changed are written, so the operator's comments, order and spellings ("30m") stay, and
nothing is written when nothing changed. Values equal to their defaults are left out, so
host-dependent defaults (instance, work root) are not frozen into a file that several hosts
may share.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import math
import os
import re
import shlex
import socket
import string
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs
import tomlkit
from tomlkit.exceptions import TOMLKitError

from dss_console import paths
from dss_console.v6.settings import V6Settings, V6SettingsError, parse_v6_settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "CONFIG_ENV",
    "PLACEHOLDERS",
    "SETTINGS_FILE_NAME",
    "ServiceCommand",
    "Settings",
    "SettingsError",
    "default_instance",
    "default_workroot",
    "format_duration",
    "load_settings",
    "parse_duration",
    "parse_settings",
    "save_settings",
    "settings_path",
    "settings_to_toml",
    "validate_command_template",
]

SETTINGS_FILE_NAME = "settings.toml"
CONFIG_ENV = "DSS_CONSOLE_CONFIG"
PLACEHOLDERS = ("ticket", "service", "service_hash", "workdir", "inputs", "workspace", "result")
INTERRUPTED_CHOICES = ("rerun", "fail")
ON_SHUTDOWN_CHOICES = ("resume", "fail")
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


class SettingsError(ValueError):
    """The settings file (or a settings value) is unusable; the message says where and why.

    A ValueError, so ``parse_duration`` can serve directly as an argparse ``type=``.
    """


def default_instance() -> str:
    return socket.gethostname() or "localhost"


def default_workroot() -> Path:
    # Not paths.data_dir(): that creates the directory, and merely loading settings (or
    # building a Settings in a test) must not touch the user's home. The runner creates
    # the work root, 0700, when it first needs it.
    return platformdirs.user_data_path(paths.APP_NAME, appauthor=False) / "work"


def _is_hash(key: str) -> bool:
    return _HASH_RE.fullmatch(key) is not None


@dataclass
class ServiceCommand:
    """How to run one service's tickets."""

    key: str  # service name or 40-hex service hash, as written in the file
    command: str
    timeout: float | None = None  # seconds
    max_jobs: int | None = None
    nice: int | None = None  # None: the engine's default (CONSOLE_COMMAND_NICE or 0)
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    auto: bool = True
    executor: str = "local"  # one of EXECUTORS
    sbatch_options: list[str] = field(default_factory=list)
    itksnap_wt: bool = False  # the itksnap-wt shim on the command's PATH
    send_output_tail: bool | None = None  # None: the file's top-level send_output_tail

    def matches(self, name: str, githash: str) -> bool:
        """True when the key is this service's hash or its exact name."""
        # Hashes are hex; a key pasted in upper case still means the same service.
        if _is_hash(self.key) and self.key.lower() == githash.lower():
            return True
        return self.key == name


@dataclass
class Settings:
    """Everything the settings file can hold; see the module docstring for the meaning."""

    server: str | None = None
    servers: list[str] = field(default_factory=list)
    provider: str | None = None
    instance: str = field(default_factory=default_instance)
    workroot: Path = field(default_factory=default_workroot)
    poll_interval: float = 5.0
    concurrency: int = 1
    retention_days: float = 7
    interrupted: str = "rerun"
    on_shutdown: str = "resume"
    pause_after_failures: int = 3
    pause_window: float = 900.0
    auto: bool = False
    ca_bundle: str | None = None
    notify: bool = False
    # Raw output stays on this machine unless a service (or this default) opts in.
    send_output_tail: bool = False
    services: dict[str, ServiceCommand] = field(default_factory=dict)
    # The [v6] table: this machine as a vantage6 node (dss_console.v6.settings).
    v6: V6Settings = field(default_factory=V6Settings)
    # Keys whose command came from --command: they win over the file's entries in
    # command_for, so `--command Name=...` is not shadowed by a hash key in the file.
    # An init field (not init=False), so dataclasses.replace() carries it along.
    _overridden: frozenset[str] = field(default_factory=frozenset, repr=False, compare=False)

    def command_for(self, name: str, githash: str) -> ServiceCommand | None:
        """The command for a service: an override first, then a hash key, then a name key."""
        matching = [sc for sc in self.services.values() if sc.matches(name, githash)]
        if not matching:
            return None

        def rank(sc: ServiceCommand) -> tuple[int, int]:
            by_hash = _is_hash(sc.key) and sc.key.lower() == githash.lower()
            return (0 if sc.key in self._overridden else 1, 0 if by_hash else 1)

        return min(matching, key=rank)

    def with_command_overrides(self, overrides: Sequence[str]) -> Settings:
        """A copy with ``SERVICE=TEMPLATE`` overrides (from ``--command``) applied.

        The command text of key SERVICE is replaced, keeping its other options, or a new
        entry is added. SERVICE is a key as in the file: a service name or hash.
        """
        result = copy.deepcopy(self)
        overridden = set(self._overridden)
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
            existing = result.services.get(key)
            if existing is not None:
                existing.command = template
            else:
                result.services[key] = ServiceCommand(key=key, command=template)
            overridden.add(key)
        result._overridden = frozenset(overridden)
        return result

    def with_executor_overrides(self, overrides: Sequence[str]) -> Settings:
        """A copy with ``SERVICE=EXECUTOR`` overrides (from ``--executor``) applied to
        services that have a command (from the file or ``--command``)."""
        result = copy.deepcopy(self)
        for item in overrides:
            key, sep, executor = (part.strip() for part in item.partition("="))
            if not sep or not key or executor not in EXECUTORS:
                raise SettingsError(f"--executor {item!r}: expected SERVICE=local or "
                                    "SERVICE=slurm")
            service = result.services.get(key)
            if service is None:
                raise SettingsError(f"--executor {key!r}: that service has no command (give "
                                    "it one with --command or in the settings file)")
            service.executor = executor
        return result


# -- command templates ---------------------------------------------------------------


def validate_command_template(template: str) -> None:
    """Check that a command template splits into words and uses only known placeholders.

    Only validation: the runner expands templates itself. This runs at load time so a typo
    in the settings file is reported before the first ticket is claimed, not after.
    """
    if not isinstance(template, str):
        raise SettingsError(f"the command must be a string, not {_type_name(template)}")
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


def parse_duration(text: str | int | float) -> float:
    """Seconds from a number or a string like ``"3600"``, ``"6h"``, ``"90m"``, ``"1h30m"``."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise SettingsError(f"{text!r} is not a duration (use seconds or e.g. 6h, 90m)")
    if isinstance(text, str):
        stripped = text.strip()
        try:
            value = float(stripped)
        except ValueError:
            match = _DURATION_RE.fullmatch(stripped)
            if not stripped or match is None or not any(match.groupdict().values()):
                raise SettingsError(
                    f"{text!r} is not a duration (use seconds or e.g. 6h, 90m)"
                ) from None
            value = sum(
                float(amount) * _DURATION_UNITS[unit]
                for unit, amount in match.groupdict().items()
                if amount
            )
    else:
        value = float(text)
    if not math.isfinite(value) or value < 0:
        raise SettingsError(f"{text!r} is not a duration (use seconds or e.g. 6h, 90m)")
    return value


# -- locating, loading ---------------------------------------------------------------


def settings_path(explicit: str | Path | None = None) -> Path:
    """The settings file: ``explicit`` (--config), else $DSS_CONSOLE_CONFIG, else default."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    from_env = os.environ.get(CONFIG_ENV, "")
    if from_env:
        return Path(from_env).expanduser()
    return paths.config_dir() / SETTINGS_FILE_NAME


def load_settings(path: Path | None = None) -> Settings:
    """Read and check the settings file; a missing file gives the defaults."""
    path = settings_path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Settings()
    except IsADirectoryError:
        raise SettingsError(f"{path}: is a directory, not a settings file") from None
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return _parse(raw, path)


def parse_settings(text: str, source: Path) -> Settings:
    """Settings from TOML text (e.g. sent by a console window); `source` names where it
    came from in errors and anchors relative paths."""
    return _parse(text.encode("utf-8"), source)


def _parse(raw: bytes, path: Path) -> Settings:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The decoder's message ends with "(at line L, column C)".
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    return _from_dict(data, path)


def _type_name(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)


def _key_part(key: str, *, quote: bool = False) -> str:
    return key if not quote and _BARE_KEY_RE.fullmatch(key) else _toml_string(key)


class _Checker:
    """Typed getters that name the file and the dotted key in every error."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, where: str, message: str) -> SettingsError:
        return SettingsError(
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

    def string(self, value: Any, where: str, *, empty: bool = False) -> str:
        if not isinstance(value, str):
            raise self.error(where, f"must be a string, not {_type_name(value)}")
        if not empty and not value.strip():
            raise self.error(where, "must not be empty")
        if "\x00" in value:
            raise self.error(where, "must not contain NUL characters")
        return value

    def url(self, value: Any, where: str) -> str:
        text = self.string(value, where)
        if not re.match(r"https?://[^\s/]+", text):
            raise self.error(where, f"{text!r} is not an http:// or https:// URL")
        return text

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(where, f"must be true or false, not {_type_name(value)}")
        return value

    def integer(self, value: Any, where: str, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(where, f"must be an integer, not {_type_name(value)}")
        if value < minimum:
            raise self.error(where, f"must be at least {minimum}, not {value}")
        return value

    def number(self, value: Any, where: str, *, positive: bool) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(where, f"must be a number, not {_type_name(value)}")
        number = float(value)
        if not math.isfinite(number) or number < 0 or (positive and number == 0):
            bound = "greater than 0" if positive else "0 or more"
            raise self.error(where, f"must be a number {bound}, not {value}")
        return number

    def duration(self, value: Any, where: str) -> float:
        try:
            seconds = parse_duration(value)
        except SettingsError as exc:
            raise self.error(where, str(exc)) from None
        if seconds <= 0:
            raise self.error(where, f"must be longer than 0 seconds, not {value!r}")
        return seconds

    def table(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(where, f"must be a table, not {_type_name(value)}")
        return value


_TOP_KEYS = tuple(f.name for f in fields(Settings) if not f.name.startswith("_"))
_SERVICE_KEYS = ("command", "timeout", "max_jobs", "cwd", "env", "auto", "nice", "executor",
                 "sbatch_options", "itksnap_wt", "send_output_tail")
EXECUTORS = ("local", "slurm")


def _from_dict(data: Mapping[str, Any], path: Path) -> Settings:
    check = _Checker(path)
    check.unknown(data, _TOP_KEYS, "")
    settings = Settings()
    if "server" in data:
        settings.server = check.url(data["server"], "server")
    if "servers" in data:
        servers = data["servers"]
        if not isinstance(servers, list):
            raise check.error("servers", f"must be an array of URLs, not {_type_name(servers)}")
        settings.servers = [check.url(s, f"servers[{i}]") for i, s in enumerate(servers)]
    if "provider" in data:
        settings.provider = check.string(data["provider"], "provider")
    if "instance" in data:
        settings.instance = check.string(data["instance"], "instance")
    if "workroot" in data:
        root = Path(check.string(data["workroot"], "workroot")).expanduser()
        # From the file's directory, not the process's: the worker may start anywhere.
        settings.workroot = root if root.is_absolute() else path.parent.absolute() / root
    if "poll_interval" in data:
        settings.poll_interval = check.duration(data["poll_interval"], "poll_interval")
    if "concurrency" in data:
        settings.concurrency = check.integer(data["concurrency"], "concurrency", 1)
    if "retention_days" in data:
        settings.retention_days = check.number(
            data["retention_days"], "retention_days", positive=False
        )
    if "interrupted" in data:
        value = check.string(data["interrupted"], "interrupted")
        if value not in INTERRUPTED_CHOICES:
            raise check.error("interrupted", f'must be "rerun" or "fail", not {value!r}')
        settings.interrupted = value
    if "on_shutdown" in data:
        value = check.string(data["on_shutdown"], "on_shutdown")
        if value not in ON_SHUTDOWN_CHOICES:
            raise check.error("on_shutdown", f'must be "resume" or "fail", not {value!r}')
        settings.on_shutdown = value
    if "pause_after_failures" in data:
        settings.pause_after_failures = check.integer(data["pause_after_failures"],
                                                      "pause_after_failures", 0)
    if "pause_window" in data:
        settings.pause_window = check.duration(data["pause_window"], "pause_window")
    if "auto" in data:
        settings.auto = check.boolean(data["auto"], "auto")
    if "ca_bundle" in data:
        settings.ca_bundle = str(Path(check.string(data["ca_bundle"], "ca_bundle")).expanduser())
    if "notify" in data:
        settings.notify = check.boolean(data["notify"], "notify")
    if "send_output_tail" in data:
        settings.send_output_tail = check.boolean(data["send_output_tail"], "send_output_tail")
    if "services" in data:
        for key, table in check.table(data["services"], "services").items():
            settings.services[key] = _service_from_dict(check, key, table)
    if "v6" in data:
        try:
            settings.v6 = parse_v6_settings(data["v6"])
        except V6SettingsError as exc:
            raise check.error("", str(exc)) from None  # the message starts with "v6.…"
    return settings


def _service_from_dict(check: _Checker, key: str, table: Any) -> ServiceCommand:
    where = f"services.{_key_part(key, quote=True)}"
    if not key.strip():
        raise check.error(where, "the service key must not be empty")
    table = check.table(table, where)
    nested = [k for k, v in table.items() if k not in _SERVICE_KEYS and isinstance(v, dict)]
    if nested and "command" not in table:
        # [services.My.Service] without quotes nests tables; say so rather than "unknown key".
        dotted = f"{key}.{nested[0]}"
        raise check.error(
            where,
            f"no command, but a sub-table {nested[0]!r}: a service name with dots or spaces "
            f"must be quoted, e.g. [services.{_toml_string(dotted)}]",
        )
    check.unknown(table, _SERVICE_KEYS, where)
    if "command" not in table:
        raise check.error(where, "missing 'command' (the command template to run)")
    command = check.string(table["command"], f"{where}.command")
    try:
        validate_command_template(command)
    except SettingsError as exc:
        raise check.error(f"{where}.command", str(exc)) from None
    service = ServiceCommand(key=key, command=command)
    if "timeout" in table:
        service.timeout = check.duration(table["timeout"], f"{where}.timeout")
    if "max_jobs" in table:
        service.max_jobs = check.integer(table["max_jobs"], f"{where}.max_jobs", 1)
    if "cwd" in table:
        service.cwd = check.string(table["cwd"], f"{where}.cwd")
    if "nice" in table:
        service.nice = check.integer(table["nice"], f"{where}.nice", 0)
        if service.nice > 19:
            raise check.error(f"{where}.nice", f"must be 0 to 19, not {service.nice}")
    if "auto" in table:
        service.auto = check.boolean(table["auto"], f"{where}.auto")
    if "itksnap_wt" in table:
        service.itksnap_wt = check.boolean(table["itksnap_wt"], f"{where}.itksnap_wt")
    if "send_output_tail" in table:
        service.send_output_tail = check.boolean(table["send_output_tail"],
                                                 f"{where}.send_output_tail")
    if "executor" in table:
        service.executor = check.string(table["executor"], f"{where}.executor")
        if service.executor not in EXECUTORS:
            raise check.error(f"{where}.executor",
                              f'must be "local" or "slurm", not {service.executor!r}')
    if "sbatch_options" in table:
        options = table["sbatch_options"]
        option_where = f"{where}.sbatch_options"
        if not isinstance(options, list):
            raise check.error(option_where,
                              f"must be an array of strings, not {_type_name(options)} "
                              '(e.g. ["--partition=gpu", "--time=06:00:00"])')
        for index, option in enumerate(options):
            text = check.string(option, f"{option_where}[{index}]")
            try:
                validate_placeholders(text)
            except SettingsError as exc:
                raise check.error(f"{option_where}[{index}]", str(exc)) from None
            service.sbatch_options.append(text)
    if "env" in table:
        env = check.table(table["env"], f"{where}.env")
        for name, value in env.items():
            env_where = f"{where}.env.{_key_part(name)}"
            if not name or "=" in name or "\x00" in name:
                raise check.error(env_where, "is not a valid environment variable name")
            if not isinstance(value, str):
                raise check.error(
                    env_where,
                    f'must be a string, not {_type_name(value)} (quote it: {name} = "...")',
                )
            service.env[name] = check.string(value, env_where, empty=True)
    return service


# -- saving --------------------------------------------------------------------------


def _toml_string(text: str) -> str:
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


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 2**53:
            return str(int(value))  # "7", not "7.0": the file is for people too
        return repr(value)
    if isinstance(value, (str, Path)):
        return _toml_string(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise SettingsError(f"cannot write {_type_name(value)} {value!r} to the settings file")


def settings_to_toml(settings: Settings) -> str:
    """The TOML text of ``settings``; values equal to their defaults are left out."""
    defaults = Settings()
    lines: list[str] = []
    for name in _TOP_KEYS:
        if name in ("services", "v6"):
            continue
        value = getattr(settings, name)
        if value is None or value == getattr(defaults, name):
            continue
        lines.append(f"{name} = {_toml_value(value)}")
    for key, service in settings.services.items():
        if service.key != key:
            raise SettingsError(f"services: the entry under {key!r} has key {service.key!r}")
        header = f"services.{_key_part(key, quote=True)}"
        if lines:
            lines.append("")
        lines.append(f"[{header}]")
        lines.append(f"command = {_toml_value(service.command)}")
        for name in ("timeout", "max_jobs", "cwd"):
            value = getattr(service, name)
            if value is not None:
                lines.append(f"{name} = {_toml_value(value)}")
        if service.nice is not None:
            lines.append(f"nice = {service.nice}")
        if not service.auto:
            lines.append("auto = false")
        if service.itksnap_wt:
            lines.append("itksnap_wt = true")
        if service.send_output_tail is not None:
            lines.append(f"send_output_tail = {_toml_value(service.send_output_tail)}")
        if service.executor != "local":
            lines.append(f"executor = {_toml_value(service.executor)}")
        if service.sbatch_options:
            lines.append(f"sbatch_options = {_toml_value(service.sbatch_options)}")
        if service.env:
            lines.append("")
            lines.append(f"[{header}.env]")
            for env_name, env_value in service.env.items():
                lines.append(f"{_key_part(env_name)} = {_toml_value(env_value)}")
    _v6_to_toml(settings.v6, lines)
    return "\n".join(lines) + "\n" if lines else ""


def _v6_to_toml(v6: V6Settings, lines: list[str]) -> None:
    """The [v6] table, written back from what was parsed (so a console that saves its
    settings keeps the node's configuration); values equal to their defaults are left out."""
    defaults = V6Settings()

    def table(header: str, rows: list[str]) -> None:
        if not rows:
            return
        if lines:
            lines.append("")
        lines.append(f"[{header}]")
        lines.extend(rows)

    def env_rows(env: Mapping[str, str]) -> list[str]:
        return [f"{_key_part(k)} = {_toml_value(v)}" for k, v in env.items()]

    top = [f"{name} = {_toml_value(getattr(v6, name))}"
           for name in ("send_output_tail", "log_limit", "unknown_images", "on_shutdown")
           if getattr(v6, name) != getattr(defaults, name)]
    if top or v6.algorithm_env or v6.algorithms or v6.databases:
        table("v6", top)
    table("v6.algorithm_env", env_rows(v6.algorithm_env))
    for image, algorithm in v6.algorithms.items():
        header = f"v6.algorithms.{_key_part(image, quote=True)}"
        rows = [f"{name} = {_toml_value(getattr(algorithm, name))}"
                for name in ("python", "package", "command", "timeout", "max_jobs", "nice",
                             "cwd", "send_output_tail") if getattr(algorithm, name) is not None]
        if algorithm.subtasks:
            rows.append("subtasks = true")
        table(header, rows)
        table(f"{header}.env", env_rows(algorithm.env))
    for label, database in v6.databases.items():
        header = f"v6.databases.{_key_part(label, quote=True)}"
        table(header, [f"uri = {_toml_value(database.uri)}",
                       f"type = {_toml_value(database.type)}"])
        table(f"{header}.env", env_rows(database.env))


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


# Keys whose numbers are seconds: a changed one is written as a person would ("30m").
_DURATION_KEYS = frozenset({"poll_interval", "pause_window", "timeout"})


def _plain(settings: Settings) -> dict[str, Any]:
    """The file's content for ``settings`` as plain TOML data (defaults left out)."""
    return tomllib.loads(settings_to_toml(settings))


def _merge(container: Any, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Change ``container`` (a tomlkit table) from ``old`` to ``new`` touching only the keys
    whose values differ, so everything else keeps its comments and spelling."""
    for key in [k for k in old if k not in new]:
        if key in container:
            del container[key]
    for key, value in new.items():
        if key in old and old[key] == value:
            continue
        if (isinstance(value, dict) and isinstance(old.get(key), dict) and key in container
                and isinstance(container[key], Mapping)):
            _merge(container[key], old[key], value)
        elif key in _DURATION_KEYS and isinstance(value, (int, float)):
            container[key] = format_duration(value)
        else:
            container[key] = value


def _edited_text(text: str, old: Settings, new: Settings, path: Path) -> str:
    """``text`` (which loads as ``old``) edited to load as ``new``; the whole file rewritten
    only where an in-place edit would not load back as ``new`` (an unusual layout)."""
    try:
        document = tomlkit.parse(text)
        _merge(document, _plain(old), _plain(new))
        edited = tomlkit.dumps(document)
        if _parse(edited.encode("utf-8"), path) == new:
            return edited
    except (TOMLKitError, SettingsError, KeyError, TypeError, ValueError):
        pass
    return settings_to_toml(new)


def save_settings(settings: Settings, path: Path | None = None) -> Path:
    """Write ``settings`` atomically (temp file + rename), mode 0600; returns the path.

    A file that loads is edited in place (comments and spellings kept) and left untouched
    when it already holds these settings; a missing or broken file is written whole. The
    text is checked by loading it back before anything is written, so a file this function
    writes always loads.
    """
    path = settings_path(path)
    try:
        current: bytes | None = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        current = None
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    old: Settings | None = None
    if current is not None:
        try:
            old = _parse(current, path)
        except SettingsError:
            old = None  # a broken file is replaced whole (replace_settings_file keeps a copy)
    if old is not None and current is not None:
        if old == settings:
            return path
        text = _edited_text(current.decode("utf-8"), old, settings, path)
    else:
        text = settings_to_toml(settings)
    _parse(text.encode("utf-8"), path)
    directory = path.parent
    try:
        # A new config dir is private; an existing one (maybe named by --config) is left alone.
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        # mkstemp creates the file 0600 from the start: no moment with wider permissions.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise SettingsError(f"{path}: cannot write: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise SettingsError(f"{path}: cannot write: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
