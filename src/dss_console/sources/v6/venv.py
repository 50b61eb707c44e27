"""The sandbox's own Python environment with the official vantage6 4.15.2 packages.

The server's exact pins (requests, Flask, SQLAlchemy 1.4, cryptography 46, ~375 MB) cannot
share the console's environment, so the first use creates
``<user cache>/dss-console/v6-sandbox-4.15.2/`` with pip (~80-110 s, needs PyPI). A marker
file is written only after pip succeeded, so an interrupted build is redone, never used; a
file lock keeps two processes (two test sessions, a test run and ``v6 sandbox``) from
building it at once. The console itself never imports anything from it.

:class:`VenvSpec` names one such environment; the vantage6 5.x sandbox (``sources/v6x5``)
builds its own with the same code.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from dss_console import paths

V6_VERSION = "4.15.2"
SANDBOX_PACKAGES = (
    f"vantage6-server=={V6_VERSION}",
    # Imported by the server but not declared by it.
    f"vantage6-backend-common=={V6_VERSION}",
    f"vantage6-client=={V6_VERSION}",  # the researcher in tests and snippets
    f"vantage6-algorithm-tools=={V6_VERSION}",  # the demo algorithm's wrapper
)
MARKER = ".dss-console-complete"
ENV_OVERRIDE = "DSS_CONSOLE_V6_VENV"  # a prepared venv elsewhere (CI cache, air-gapped box)


class V6SandboxError(RuntimeError):
    """The v6 sandbox could not be built or started; the message says why in words."""


class V6VenvUnavailable(V6SandboxError):
    """The venv could not be created because PyPI (or pip) is unreachable from here."""


@dataclass(frozen=True)
class VenvSpec:
    """One sandbox environment: where it lives, what pip installs, which Python makes it.

    The 4.x sandbox's is :data:`V6_SPEC`; the 5.x one (``sources/v6x5/venv.py``) differs only
    in these fields, and shares the build, the marker and the lock below."""

    name: str  # directory under the user cache, e.g. "v6-sandbox-4.15.2"
    label: str  # in words: "vantage6 4.15.2"
    what: str  # what the environment serves, for the "waiting for …" line
    packages: tuple[str, ...]
    find_python: Callable[[], str]  # the interpreter to create the venv with
    env_override: str  # a prepared venv elsewhere (CI cache, air-gapped box)


def _find_4x_python() -> str:
    return _base_python()  # looked up at call time (tests replace it)


V6_SPEC = VenvSpec(name=f"v6-sandbox-{V6_VERSION}", label=f"vantage6 {V6_VERSION}",
                   what="vantage6 server", packages=SANDBOX_PACKAGES,
                   find_python=_find_4x_python, env_override=ENV_OVERRIDE)


def venv_dir(spec: VenvSpec = V6_SPEC) -> Path:
    override = os.environ.get(spec.env_override)
    if override:
        return Path(override).expanduser()
    cache = platformdirs.user_cache_path(paths.APP_NAME, appauthor=False)
    return cache / spec.name


def venv_python(directory: Path | None = None, spec: VenvSpec = V6_SPEC) -> Path:
    directory = directory or venv_dir(spec)
    if os.name == "nt":
        return directory / "Scripts" / "python.exe"
    return directory / "bin" / "python"


def venv_ready(directory: Path | None = None, spec: VenvSpec = V6_SPEC) -> bool:
    directory = directory or venv_dir(spec)
    return (directory / MARKER).is_file() and venv_python(directory).exists()


def ensure_venv(report: Callable[[str], None] | None = None, *,
                timeout: float = 1800.0, spec: VenvSpec = V6_SPEC) -> Path:
    """The sandbox venv's Python, building the venv first if needed (returns at once when it
    exists). ``report`` gets one line before a build starts (it takes minutes)."""
    directory = venv_dir(spec)
    if venv_ready(directory):
        return venv_python(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(directory.with_name(directory.name + ".lock"), timeout, report,
                     spec.what):
        if venv_ready(directory):  # another process built it while we waited
            return venv_python(directory)
        base = spec.find_python()  # before saying "creating": it may fail in words
        if report is not None:
            report(f"creating the {spec.label} sandbox environment in {directory} "
                   "(first use only; needs PyPI, takes 1-2 minutes) …")
        _build(directory, timeout, spec, base)
    return venv_python(directory)


def _base_python() -> str:
    # A frozen console has no interpreter of its own to create a venv with.
    if not getattr(sys, "frozen", False):
        return sys.executable
    for name in ("python3", "python"):
        found = shutil.which(name)
        if found:
            return found
    raise V6SandboxError("the vantage6 sandbox needs a Python 3.10 or 3.11 interpreter "
                         "(python3 on PATH) to create its environment")


def _build(directory: Path, timeout: float, spec: VenvSpec, base_python: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)  # a half-built leftover is never reused
    log_path = directory.with_name(directory.name + ".pip.log")
    deadline = time.monotonic() + timeout
    try:
        subprocess.run([base_python, "-m", "venv", str(directory)], check=True,
                       capture_output=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        shutil.rmtree(directory, ignore_errors=True)
        detail = getattr(exc, "stderr", b"") or b""
        raise V6SandboxError(f"cannot create a Python venv in {directory}: "
                             f"{detail.decode(errors='replace').strip() or exc}") from None
    command = [str(venv_python(directory)), "-m", "pip", "install", "--disable-pip-version-check",
               "--no-input", *spec.packages]
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL,
                                  timeout=max(1.0, deadline - time.monotonic()))
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
    if code != 0:
        tail = _useful_tail(log_path)
        shutil.rmtree(directory, ignore_errors=True)
        what = "timed out" if code is None else f"failed (exit {code})"
        offline = any(s in tail for s in ("NewConnectionError", "Name or service not known",
                                           "Temporary failure in name resolution",
                                           "No matching distribution found",
                                           "Could not find a version"))
        error = V6VenvUnavailable if offline else V6SandboxError
        hint = (" — is PyPI reachable from here? The sandbox environment is built on first "
                "use and needs network access once") if offline else ""
        raise error(f"installing {spec.label} into {directory} {what}{hint}; "
                    f"full log: {log_path}\n{tail}")
    (directory / MARKER).write_text(" ".join(spec.packages) + "\n", encoding="utf-8")


def _useful_tail(log_path: Path, lines: int = 15) -> str:
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    # pip's per-index "location is ignored" warnings on some machines bury the real error.
    kept = [ln for ln in text.splitlines() if "is ignored: it is neither" not in ln]
    return "\n".join(kept[-lines:])


@contextlib.contextmanager
def _build_lock(path: Path, timeout: float, report: Callable[[str], None] | None = None,
                what: str = "vantage6 server") -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: no concurrent builds expected there; go without
        yield
        return
    with open(path, "a+b") as handle:
        deadline = time.monotonic() + timeout
        said = False
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if report is not None and not said:
                    # Another build takes a minute or two: silence would look like a hang.
                    said = True
                    report(f"waiting for another process building the {what} environment…")
                if time.monotonic() >= deadline:
                    raise V6SandboxError(f"another process has been building {path.stem} "
                                         f"for over {timeout:.0f} s (lock {path})") from None
                time.sleep(0.5)  # waiting on another process's lock: no event to wait on
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
