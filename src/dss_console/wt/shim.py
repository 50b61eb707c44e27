"""``itksnap-wt`` on PATH: a tiny script that runs ``dss-console wt "$@"``."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

__all__ = ["SHIM_NAME", "shim_command", "write_shim"]

SHIM_NAME = "itksnap-wt"


def shim_command() -> list[str]:
    """The argv prefix that runs `dss-console wt`: the frozen bundle's own binary, or this
    interpreter in isolated mode (a script's PYTHONPATH must not break it)."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "wt"]
    return [sys.executable or "python3", "-I", "-m", "dss_console", "wt"]


def write_shim(directory: Path) -> Path:
    """Write an executable ``directory/itksnap-wt`` and return its path.

    A POSIX sh script, so ``bash itksnap-wt ...`` and ``PATH=directory:$PATH`` both work.
    Replaced in one rename: a running script may be executing the old one.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    command = " ".join(shlex.quote(word) for word in shim_command())
    script = ("#!/bin/sh\n"
              "# itksnap-wt compatible workspace and DSS tool, provided by dss-console.\n"
              f'exec {command} "$@"\n')
    path = directory / SHIM_NAME
    partial = directory / f".{SHIM_NAME}.{os.getpid()}.tmp"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o755)
    try:
        os.write(fd, script.encode("utf-8", errors="surrogateescape"))
    finally:
        os.close(fd)
    if os.name == "posix":
        os.chmod(partial, 0o755)  # the umask may have taken bits away
    os.replace(partial, path)
    return path
