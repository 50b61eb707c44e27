"""The vantage6 5.x sandbox's own Python 3.13 environment with the official 5.0.3 packages.

HQ 5.0.3 and 5.x algorithms need Python >= 3.13, which the console's own interpreter need not
be, so the first use builds ``<user cache>/dss-console/v6-sandbox-5.0.3/`` (~640 MB) with the
4.x sandbox's builder (:mod:`dss_console.sources.v6.venv`: marker after pip, file lock),
from a Python 3.13 found by :func:`find_python313`. The console never imports from it.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from dss_console.sources.v6 import venv as v6venv
from dss_console.sources.v6.venv import V6SandboxError, V6VenvUnavailable, VenvSpec

V6X5_VERSION = "5.0.3"
PACKAGES = (
    f"vantage6-hq=={V6X5_VERSION}",
    # HQ 5.0.3 imports vantage6.backend.common but does not declare it.
    f"vantage6-backend-common=={V6X5_VERSION}",
    f"vantage6-client=={V6X5_VERSION}",  # the researcher in tests
    f"vantage6-algorithm-tools=={V6X5_VERSION}",  # 5.x algorithms' wrapper
)
PYTHON_ENV = "DSS_CONSOLE_PYTHON313"  # an operator's (or CI's) choice of interpreter
ENV_OVERRIDE = "DSS_CONSOLE_V6X5_VENV"  # a prepared venv elsewhere
_CHECK = "import sys; sys.exit(0 if sys.version_info[:2] >= (3, 13) else 3)"


def _runs_as_313(python: str) -> bool:
    """True when ``python`` starts and is 3.13 or newer (a pyenv shim for a version not
    selected exists on PATH but fails)."""
    try:
        return subprocess.run([python, "-I", "-c", _CHECK], capture_output=True,
                              stdin=subprocess.DEVNULL, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _pyenv_candidates() -> list[str]:
    roots = [os.environ.get("PYENV_ROOT") or "", str(Path.home() / ".pyenv")]
    found: list[str] = []
    for root in dict.fromkeys(r for r in roots if r):
        # newest first: 3.13.10 after 3.13.9 needs a numeric sort, not a string one
        versions = glob.glob(os.path.join(root, "versions", "3.1[3-9]*"))
        for version in sorted(versions, key=_version_key, reverse=True):
            python = os.path.join(version, "bin", "python3")
            if os.path.exists(python):
                found.append(python)
    return found


def _version_key(path: str) -> tuple[int, ...]:
    parts = []
    for piece in os.path.basename(path).split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def find_python313() -> str:
    """A Python >= 3.13 to build the 5.x environment with, in this order: the path in
    ``$DSS_CONSOLE_PYTHON313``; ``python3.13`` on PATH when it runs; pyenv's installs
    (``$PYENV_ROOT`` or ``~/.pyenv``, ``versions/3.13*``). V6SandboxError in words when none."""
    chosen = os.environ.get(PYTHON_ENV)
    if chosen:
        if _runs_as_313(chosen):
            return chosen
        raise V6SandboxError(f"{PYTHON_ENV} names {chosen}, which is not a Python 3.13 or "
                             "newer that runs")
    on_path = shutil.which("python3.13")
    if on_path and _runs_as_313(on_path):
        return on_path
    for candidate in _pyenv_candidates():
        if _runs_as_313(candidate):
            return candidate
    raise V6SandboxError(
        "the vantage6 5.x sandbox needs Python 3.13 (vantage6 5.0.3 requires it), and none "
        f"was found: set {PYTHON_ENV} to its path, put python3.13 on PATH, or install it "
        "with pyenv (pyenv install 3.13)")


__all__ = ["PACKAGES", "SPEC", "V6X5_VERSION", "V6SandboxError", "V6VenvUnavailable",
           "ensure_venv", "find_python313", "venv_dir", "venv_ready"]

SPEC = VenvSpec(name=f"v6-sandbox-{V6X5_VERSION}", label=f"vantage6 {V6X5_VERSION}",
                what=f"vantage6 {V6X5_VERSION} HQ", packages=PACKAGES,
                find_python=find_python313, env_override=ENV_OVERRIDE)


def venv_dir() -> Path:
    return v6venv.venv_dir(SPEC)


def venv_ready() -> bool:
    return v6venv.venv_ready(spec=SPEC)


def ensure_venv(report: Callable[[str], None] | None = None, *,
                timeout: float = 1800.0) -> Path:
    """The 5.x environment's Python, built on first use (see the module docstring)."""
    return v6venv.ensure_venv(report, timeout=timeout, spec=SPEC)
