"""What of a command's raw output may leave this machine, when a service opts in.

By default nothing does (``send_output_tail = false``): the server gets the command's own
``@dss``/hook messages and our fixed words. A service that sends its output's tail gets it
through :class:`Redactor`, which replaces this machine's detail with placeholders:

* paths under the job's work dir, the work root, the data dirs (a v6 node's databases too)
  and the home dir → ``<workdir>``, ``<workroot>``, ``<data>``, ``<database:LABEL>``,
  ``<home>`` (the rest of the path stays: ``<home>/.cache/pip/…``);
* the machine's host names (and a cluster job's node) → ``<host>``; the instance code is
  the provider's chosen public name and is not added (unless it *is* the host name);
* the values of the process's (and the command's configured) environment that are long
  enough to be specific → ``<env:NAME>``; the user name → ``<user>``.

One pass of one regular expression, longest literal first: a placeholder is never
rewritten again, and a value that contains another (``PATH`` holding the home dir) is
replaced whole. Pure: no Qt, no disk, no network.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs

__all__ = ["MIN_ENV_VALUE", "SHARED_SUFFIX", "TAIL_DESCRIPTION", "TAIL_NOTE", "Redactor",
           "job_redactor", "machine_hosts", "private_dirs", "shared_tail", "tail_text",
           "write_shared"]

# Shorter values ("1", "true", "C.UTF-8"…) say nothing about the machine and are everywhere.
MIN_ENV_VALUE = 6
# A file written for the server ends so; a source sends no other output file.
SHARED_SUFFIX = ".shared.txt"
# What the end user reads about a shared tail (a DSS attachment shows with the next message).
TAIL_DESCRIPTION = "Last lines of the command's output"
TAIL_NOTE = "The last lines of the command's output are attached"
# Values that are not this machine's: replacing them would only garble harmless words.
_GENERIC_HOSTS = frozenset({"localhost", "localhost.localdomain", "localdomain", "ip6-localhost"})
_GENERIC_ENV = frozenset({"/bin/bash", "/bin/sh", "/usr/bin/bash", "/usr/bin", "xterm-256color",
                          "C.UTF-8", "en_US.UTF-8", "POSIX"})
_WORD = r"[A-Za-z0-9]"  # what may not touch a host or user name on either side
# What may not follow a path prefix (/home/al is not /home/alice); a full stop may, as
# the end of a sentence, unless a name goes on after it (/data/x.csv is not /data/x).
_PATH_END = r"(?![A-Za-z0-9_\-]|\.[A-Za-z0-9_\-])"


def machine_hosts() -> list[str]:
    """This machine's names: the host name, its FQDN and the short name."""
    names: set[str] = set()
    for name in (socket.gethostname(), _fqdn()):
        if name:
            names.add(name)
            names.add(name.split(".")[0])
    return sorted(n for n in names if n and n.lower() not in _GENERIC_HOSTS)


def _fqdn() -> str:
    try:
        return socket.getfqdn()
    except OSError:  # pragma: no cover - a resolver that fails outright
        return ""


def private_dirs() -> dict[str, Path]:
    """dss-console's own per-user dirs (journal, settings, caches), without creating them."""
    app = "dss-console"
    return {"<data>": platformdirs.user_data_path(app, appauthor=False),
            "<config>": platformdirs.user_config_path(app, appauthor=False),
            "<cache>": platformdirs.user_cache_path(app, appauthor=False),
            "<state>": platformdirs.user_state_path(app, appauthor=False)}


@dataclass(frozen=True)
class Redactor:
    """Replaces known local detail in text; build it with :meth:`build`."""

    pattern: re.Pattern[str] | None
    replacements: Mapping[str, str]  # the matched text (hosts: lower case) → placeholder

    @classmethod
    def build(cls, *, paths: Mapping[str, str | Path | None] | None = None,
              env: Mapping[str, str] | None = None, hosts: Iterable[str] = (),
              values: Mapping[str, str] | None = None, home: str | Path | None = None,
              machine: bool = True) -> Redactor:
        """``paths``: placeholder → path (e.g. ``{"<workdir>": workdir}``). ``env``: the
        variables whose values are secret-ish (default: ``os.environ``; pass the command's
        configured env on top). ``hosts``: names besides this machine's (a cluster node).
        ``values``: placeholder → a literal to hide wherever it appears (a database URI).
        ``machine``: add this machine's host names, home, user and dss-console's dirs."""
        path_map: dict[str, str] = {}
        literal: dict[str, str] = {}
        worded: dict[str, str] = {}  # matched only as a whole word
        hosts = list(hosts)
        all_paths: dict[str, str | Path | None] = dict(paths or {})
        if machine:
            all_paths.update({k: v for k, v in private_dirs().items() if k not in all_paths})
            all_paths.setdefault("<home>", home if home is not None else Path.home())
            hosts += machine_hosts()
            user = os.environ.get("USER") or os.environ.get("LOGNAME") or ""
            if len(user) >= 3:
                worded[user] = "<user>"
        for placeholder, path in all_paths.items():
            if path is None or str(path) in ("", "/"):
                continue
            for form in {str(path), os.path.realpath(path)}:
                form = form.rstrip("/")
                if form.count("/") >= 1 and len(form) > 1:
                    # The most specific placeholder wins for one text (workdir over home).
                    path_map.setdefault(form, placeholder)
        for placeholder, value in (values or {}).items():
            if value and value.strip() not in ("", "/"):
                literal[value.strip()] = placeholder
        for name, value in (os.environ if env is None else env).items():
            value = value.strip()
            if len(value) >= MIN_ENV_VALUE and value not in _GENERIC_ENV \
                    and value not in path_map and "\n" not in value:
                literal.setdefault(value, f"<env:{name}>")
        for host in hosts:
            if host and host.lower() not in _GENERIC_HOSTS:
                worded[host.lower()] = "<host>"
        return cls.from_parts(path_map, literal, worded)

    @classmethod
    def from_parts(cls, paths: Mapping[str, str], literal: Mapping[str, str],
                   worded: Mapping[str, str]) -> Redactor:
        alternatives: list[tuple[int, str]] = []
        replacements: dict[str, str] = {}
        for path, placeholder in paths.items():
            alternatives.append((len(path), re.escape(path) + _PATH_END))
            replacements[path] = placeholder
        for value, placeholder in literal.items():
            alternatives.append((len(value), re.escape(value)))
            replacements.setdefault(value, placeholder)
        for word, placeholder in worded.items():
            alternatives.append((len(word),
                                 f"(?<!{_WORD})(?i:{re.escape(word)})(?!{_WORD})"))
            replacements.setdefault(word.lower(), placeholder)
        if not alternatives:
            return cls(None, {})
        alternatives.sort(key=lambda a: -a[0])  # the longest literal first, at each position
        return cls(re.compile("|".join(a for _, a in alternatives)), replacements)

    def text(self, text: str) -> str:
        if self.pattern is None:
            return text
        return self.pattern.sub(self._replace, text)

    def lines(self, lines: Iterable[str]) -> list[str]:
        return [self.text(line) for line in lines]

    def _replace(self, match: re.Match[str]) -> str:
        found = match.group(0)
        return self.replacements.get(found) or self.replacements.get(found.lower(), "<redacted>")


def tail_text(path: Path, limit: int) -> str:
    """The last ``limit`` bytes of a file, whole lines, "[… N lines cut]" in front."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            data = fh.read()
            if size <= limit:
                return data.decode("utf-8", errors="replace")
            fh.seek(0)
            head_lines = 0
            remaining = size - len(data)
            while remaining > 0:
                chunk = fh.read(min(1 << 20, remaining))
                head_lines += chunk.count(b"\n")
                remaining -= len(chunk)
    except OSError:
        return ""
    cut = data.find(b"\n")
    if cut >= 0:
        data = data[cut + 1:]
        head_lines += 1
    return f"[… {head_lines} lines cut]\n" + data.decode("utf-8", errors="replace")


# -- what a job sends ---------------------------------------------------------------------


def job_redactor(*, workdir: str | Path, workroot: str | Path | None,
                 command_env: Mapping[str, str], extra_env: Mapping[str, str] | None = None,
                 values: Mapping[str, str] | None = None, node: str | None = None) -> Redactor:
    """The redactor of one job: its work dir and root, this process's environment with the
    command's configured variables (and a v6 node's: ``extra_env``, database URIs in
    ``values``), and the cluster node it ran on."""
    env = {**os.environ, **command_env, **(extra_env or {})}
    return Redactor.build(paths={"<workdir>": workdir, "<workroot>": workroot}, env=env,
                          values=values, hosts=[node] if node else [])


def write_shared(path: Path, text: str) -> Path:
    """Write text meant for the server (private to this user, like everything here)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as fh:
        fh.write(text)
    return path


def shared_tail(log_path: Path, limit: int, redactor: Redactor) -> Path | None:
    """A redacted copy of the last ``limit`` bytes of a command's log beside it, named so a
    source sends it; None when there is no log."""
    if not log_path.is_file():
        return None
    return write_shared(log_path.with_name(log_path.stem + SHARED_SUFFIX),
                        redactor.text(tail_text(log_path, limit)))
