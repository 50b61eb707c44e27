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
    notify = ["decision", "failed"]       # desktop notifications (console), any of
                                          # "decision" (a job waits for a person), "failed",
                                          # "succeeded"; true (older files) means
                                          # ["succeeded", "failed"], false none
    send_output_tail = false              # a failed ticket's log gets the last lines of the
                                          # command's output, redacted (default false: raw
                                          # output stays on this machine); each service may
                                          # say otherwise
    approval_timeout = "2d"               # a decision not made within this fails the job
                                          # (default: none, it waits)
    approval_queue = 4                    # a gated service claims no more while this many
                                          # of its jobs wait for approval (default:
                                          # concurrency)

    [[approval_rules]]                    # "always approve this requester for this service"
    service = "ASHS-PMC-T1"               # a service's name or hash, a vantage6 image
    requester = "user:7@org:3"            # a requester's key; absent: anyone
    gate = "run"                          # "run" | "release" | "both"
    until = 2027-06-30                    # the last day it holds (a date); absent: always
    id = "rule-ashs"                      # named by each decision it makes (default: derived)

    [services."ASHS-PMC-T1"]              # key: a service name (exact) or its 40-hex hash
    command = "bash /opt/ashs/service_ashs.sh {ticket} {workdir} {workspace} {result}"
    timeout = "6h"                        # seconds, or "6h", "90m", "45s", "1h30m", "2d"
    max_jobs = 1                          # at most this many jobs of this service at once
    nice = 10                             # CPU priority of the command, 0 (normal) to 19
                                          # (lowest); default 10 for an engine a console
                                          # started (the desktop stays responsive), else 0
    cwd = "/opt/ashs"                     # working directory of the command
    approve = "run"                       # the operator's gate: "none" (default), "run"
                                          # (approve each ticket before it runs), "release"
                                          # (review each result before it leaves), "both"
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

Each table has an owner: this module reads the top-level keys; every source plug-in reads
its own tables (``[services]``: :mod:`dss_console.sources.dss.settings`; ``[v6]``:
:mod:`dss_console.sources.v6.settings`, documented there) through the shared
:class:`~dss_console.engine.settings_reader.TableReader`, and writes them back itself.

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
import dataclasses
import datetime as dt
import difflib
import os
import socket
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

import platformdirs
import tomlkit
from tomlkit.exceptions import TOMLKitError

from dss_console import paths, plugins
from dss_console.core.executor import OptionValue
from dss_console.engine.gate import RULE_GATES, ApprovalRule
from dss_console.engine.settings_reader import (
    CONSOLE_COMMAND_NICE,
    DEFAULTS_TABLE,
    EXECUTORS,
    PLACEHOLDERS,
    PluginSettings,
    ServiceCommand,
    ServiceTables,
    SettingsError,
    SettingsParser,
    TableReader,
    format_duration,
    parse_duration,
    read_defaults,
    toml_value,
    type_name,
    validate_command_template,
    validate_placeholders,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "CONFIG_ENV",
    "CONSOLE_COMMAND_NICE",
    "CORE_KEYS",
    "EXECUTORS",
    "PLACEHOLDERS",
    "SETTINGS_FILE_NAME",
    "PluginSettings",
    "ServiceCommand",
    "ServiceTables",
    "Settings",
    "SettingsError",
    "TableReader",
    "default_instance",
    "default_workroot",
    "format_duration",
    "load_settings",
    "parse_duration",
    "parse_settings",
    "save_settings",
    "settings_path",
    "settings_to_toml",
    "source_settings",
    "validate_command_template",
    "validate_placeholders",
]

SETTINGS_FILE_NAME = "settings.toml"
CONFIG_ENV = "DSS_CONSOLE_CONFIG"
INTERRUPTED_CHOICES = ("rerun", "fail")
ON_SHUTDOWN_CHOICES = ("resume", "fail")
# What the console's desktop notifications may tell, each opted into by the operator.
NOTIFY_KINDS = ("decision", "failed", "succeeded")
NOTIFY_ON_OLD_TRUE = ("failed", "succeeded")  # what `notify = true` meant before the kinds


def default_instance() -> str:
    return socket.gethostname() or "localhost"


def default_workroot() -> Path:
    # Not paths.data_dir(): that creates the directory, and merely loading settings (or
    # building a Settings in a test) must not touch the user's home. The runner creates
    # the work root, 0700, when it first needs it.
    return platformdirs.user_data_path(paths.APP_NAME, appauthor=False) / "work"


@cache
def source_settings() -> dict[str, SettingsParser]:
    """Each source plug-in's reader of its own tables, by source name, in file order;
    imported on first use from the registry (:data:`dss_console.plugins.SOURCE_SETTINGS`)."""
    parsers: dict[str, SettingsParser] = {}
    for name, target in plugins.SOURCE_SETTINGS.items():
        parsers[name] = cast(SettingsParser, plugins.load(target))
    return parsers


def _default_plugins() -> dict[str, PluginSettings]:
    """Every source's settings as an empty file gives them."""
    reader = TableReader(None)
    return {name: parser.parse_settings(reader, {})
            for name, parser in source_settings().items()}


@dataclass(init=False)
class Settings:
    """Everything the settings file can hold: the top-level keys (see the module docstring
    for their meaning) and, by source name, what each source plug-in read from its tables
    (each plug-in reads its own part through a typed function it owns, e.g.
    ``sources.dss.settings.dss_settings``).
    """

    server: str | None
    servers: list[str]
    provider: str | None
    instance: str
    workroot: Path
    poll_interval: float
    concurrency: int
    retention_days: float
    interrupted: str
    on_shutdown: str
    pause_after_failures: int
    pause_window: float
    auto: bool
    ca_bundle: str | None
    notify: tuple[str, ...]  # NOTIFY_KINDS opted into, in NOTIFY_KINDS order
    # Raw output stays on this machine unless a service (or this default) opts in.
    send_output_tail: bool
    # The operator's gate (engine/gate.py): seconds a decision may wait (None: for ever),
    # jobs of one gated service waiting for approval before it claims more (None: as many
    # as `concurrency`), and the rules that approve by themselves ([[approval_rules]]).
    approval_timeout: float | None
    approval_queue: int | None
    approval_rules: list[ApprovalRule]
    # [defaults]: the isolation and limit keys every service and algorithm inherits (as
    # written; each source reads them again for its entries). Written back as a table.
    defaults: dict[str, OptionValue]
    plugins: dict[str, PluginSettings]

    def __init__(self, *, server: str | None = None, servers: Sequence[str] = (),
                 provider: str | None = None, instance: str | None = None,
                 workroot: Path | None = None, poll_interval: float = 5.0,
                 concurrency: int = 1, retention_days: float = 7, interrupted: str = "rerun",
                 on_shutdown: str = "resume", pause_after_failures: int = 3,
                 pause_window: float = 900.0, auto: bool = False,
                 ca_bundle: str | None = None, notify: Sequence[str] = (),
                 send_output_tail: bool = False,
                 approval_timeout: float | None = None, approval_queue: int | None = None,
                 approval_rules: Sequence[ApprovalRule] = (),
                 defaults: Mapping[str, OptionValue] | None = None,
                 plugins: Mapping[str, PluginSettings] | None = None) -> None:
        self.server = server
        self.servers = list(servers)
        self.provider = provider
        self.instance = default_instance() if instance is None else instance
        self.workroot = default_workroot() if workroot is None else workroot
        self.poll_interval = poll_interval
        self.concurrency = concurrency
        self.retention_days = retention_days
        self.interrupted = interrupted
        self.on_shutdown = on_shutdown
        self.pause_after_failures = pause_after_failures
        self.pause_window = pause_window
        self.auto = auto
        self.ca_bundle = ca_bundle
        self.notify = tuple(k for k in NOTIFY_KINDS if k in notify)
        self.send_output_tail = send_output_tail
        self.approval_timeout = approval_timeout
        self.approval_queue = approval_queue
        self.approval_rules = list(approval_rules)
        self.defaults = dict(defaults or {})
        # A copy: dataclasses.replace() passes the original's mapping.
        self.plugins = _default_plugins() if plugins is None else dict(plugins)

    def _service_tables_owner(self) -> str | None:
        # One source at most reads one table per service (the DSS [services]): with two,
        # an edit or an override could land in the other's tables unnoticed.
        owners = [name for name, p in self.plugins.items() if isinstance(p, ServiceTables)]
        if len(owners) > 1:
            raise SettingsError(f"several sources read service tables ({', '.join(owners)}): "
                                "the settings cannot tell whose a service is")
        return owners[0] if owners else None

    def service_tables(self) -> ServiceTables | None:
        """The plug-in settings that are one table per service (the DSS ``[services]``), if
        a registered source reads such tables."""
        owner = self._service_tables_owner()
        return cast(ServiceTables, self.plugins[owner]) if owner is not None else None

    def with_services(self, services: dict[str, ServiceCommand]) -> Settings:
        """A copy whose service tables are ``services`` (the other plug-ins' settings and
        the tables' own other fields kept); SettingsError when no source reads such tables."""
        owner = self._service_tables_owner()
        if owner is None:
            raise SettingsError("no source reads service tables")
        tables = cast(ServiceTables, self.plugins[owner])
        return dataclasses.replace(self, plugins={**self.plugins,
                                                  owner: tables.with_services(services)})

    @property
    def approval_bound(self) -> int:
        """Jobs of one gated service that may wait for approval before it claims more."""
        return self.approval_queue if self.approval_queue is not None else self.concurrency

    def command_for(self, name: str, githash: str) -> ServiceCommand | None:
        """The command for a service of the service tables: an override first, then a hash
        key, then a name."""
        tables = self.service_tables()
        return tables.command_for(name, githash) if tables is not None else None

    def _tables_for(self, option: str) -> ServiceTables:
        tables = self.service_tables()
        if tables is None:
            raise SettingsError(f"{option}: no source reads service tables")
        return tables

    def with_command_overrides(self, overrides: Sequence[str]) -> Settings:
        """A copy with ``SERVICE=TEMPLATE`` overrides (from ``--command``) applied.

        The command text of key SERVICE is replaced, keeping its other options, or a new
        entry is added. SERVICE is a key as in the file: a service name or hash.
        """
        result = copy.deepcopy(self)
        if overrides:
            result._tables_for("--command").apply_command_overrides(overrides)
        return result

    def with_executor_overrides(self, overrides: Sequence[str]) -> Settings:
        """A copy with ``SERVICE=EXECUTOR`` overrides (from ``--executor``) applied to
        services that have a command (from the file or ``--command``)."""
        result = copy.deepcopy(self)
        if overrides:
            result._tables_for("--executor").apply_executor_overrides(overrides)
        return result


# The top-level keys the core reads, in the order an "unknown key" message lists them
# (each source's tables follow).
CORE_KEYS = tuple(f.name for f in dataclasses.fields(Settings)
                  if f.name not in ("plugins", "defaults"))


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


def _from_dict(data: Mapping[str, Any], path: Path) -> Settings:
    check = TableReader(path)
    parsers = source_settings()
    check.unknown(data, (*CORE_KEYS, DEFAULTS_TABLE,
                         *(t for p in parsers.values() for t in p.tables)), "")
    settings = Settings(plugins={})
    if "server" in data:
        settings.server = check.url(data["server"], "server")
    if "servers" in data:
        servers = data["servers"]
        if not isinstance(servers, list):
            raise check.error("servers", f"must be an array of URLs, not {type_name(servers)}")
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
        settings.notify = _notify_kinds(check, data["notify"])
    if "send_output_tail" in data:
        settings.send_output_tail = check.boolean(data["send_output_tail"], "send_output_tail")
    if "approval_timeout" in data:
        settings.approval_timeout = check.duration(data["approval_timeout"], "approval_timeout")
    if "approval_queue" in data:
        settings.approval_queue = check.integer(data["approval_queue"], "approval_queue", 1)
    if "approval_rules" in data:
        settings.approval_rules = _approval_rules(check, data["approval_rules"])
    settings.defaults = read_defaults(check, data)
    # Each source reads its own tables (absent ones give its defaults).
    settings.plugins = {name: parser.parse_settings(check, data)
                        for name, parser in parsers.items()}
    return settings


def _notify_kinds(check: TableReader, value: object) -> tuple[str, ...]:
    """The kinds of desktop notification opted into; the old switch still reads as it
    meant."""
    if isinstance(value, bool):
        return NOTIFY_ON_OLD_TRUE if value else ()
    choices = ", ".join(f'"{k}"' for k in NOTIFY_KINDS)
    if not isinstance(value, list):
        raise check.error("notify", f"must be a list of {choices} (e.g. notify = "
                                    f'["decision", "failed"]), not {type_name(value)}')
    chosen: set[str] = set()
    for index, item in enumerate(value):
        kind = check.string(item, f"notify[{index}]")
        if kind not in NOTIFY_KINDS:
            close = difflib.get_close_matches(kind, NOTIFY_KINDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise check.error("notify", f"unknown kind {kind!r}{hint}: use {choices}")
        chosen.add(kind)
    return tuple(k for k in NOTIFY_KINDS if k in chosen)


_RULE_KEYS = ("id", "service", "requester", "gate", "until", "added_by", "added")


def _approval_rules(check: TableReader, value: object) -> list[ApprovalRule]:
    """``[[approval_rules]]``: each a table; errors name the rule by its position."""
    if not isinstance(value, list):
        raise check.error("approval_rules", "must be an array of tables ([[approval_rules]]), "
                                            f"not {type_name(value)}")
    rules = []
    for index, item in enumerate(value):
        where = f"approval_rules[{index}]"
        table = check.table(item, where)
        check.unknown(table, _RULE_KEYS, where)
        if "service" not in table:
            raise check.error(where, "missing 'service' (the service's name or hash, or the "
                                     "vantage6 image, the rule approves)")
        until = table.get("until")
        if isinstance(until, dt.date) and not isinstance(until, dt.datetime):
            until = until.isoformat()  # a TOML date, as the file is written
        fields = {key: check.string(until if key == "until" else table[key], f"{where}.{key}")
                  for key in _RULE_KEYS if key in table and key != "gate"}
        if "gate" in table:
            fields["gate"] = check.choice(table["gate"], f"{where}.gate", RULE_GATES)
        if "until" in fields:
            try:
                dt.date.fromisoformat(fields["until"])
            except ValueError:
                raise check.error(f"{where}.until", f"{fields['until']!r} is not a date "
                                                    "like 2027-06-30") from None
        rules.append(ApprovalRule(**fields))
    ids = [r.rule_id for r in rules]
    twice = next((i for i in ids if ids.count(i) > 1), None)
    if twice is not None:
        raise check.error("approval_rules", f"two rules have the id {twice!r}: give each its "
                                            "own id")
    return rules


def _rule_value(key: str, value: str) -> str:
    return value if key == "until" else toml_value(value)


def _rules_toml(rules: Sequence[ApprovalRule]) -> list[str]:
    lines: list[str] = []
    for rule in rules:
        lines += ["", "[[approval_rules]]"]
        # `until` as a TOML date (2027-06-30), the rest as strings.
        lines += [f"{key} = {_rule_value(key, getattr(rule, key))}" for key in _RULE_KEYS
                  if getattr(rule, key)]
    return lines


# -- saving --------------------------------------------------------------------------


def settings_to_toml(settings: Settings) -> str:
    """The TOML text of ``settings``; values equal to their defaults are left out."""
    defaults = Settings(plugins={})
    lines: list[str] = []
    for name in CORE_KEYS:
        value = getattr(settings, name)
        if value is None or value == getattr(defaults, name) or name == "approval_rules":
            continue
        lines.append(f"{name} = {toml_value(value)}")
    if settings.defaults:
        if lines:
            lines.append("")
        lines.append(f"[{DEFAULTS_TABLE}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in settings.defaults.items())
    for plugin in settings.plugins.values():
        tables = plugin.to_toml()
        if tables and lines:
            lines.append("")
        lines.extend(tables)
    # Arrays of tables last: a top-level key after them would belong to the last one.
    lines.extend(_rules_toml(settings.approval_rules))
    while lines and lines[0] == "":
        lines.pop(0)
    return "\n".join(lines) + "\n" if lines else ""


# Keys whose numbers are seconds: a changed one is written as a person would ("30m").
_DURATION_KEYS = frozenset({"poll_interval", "pause_window", "timeout", "approval_timeout"})


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
