"""Where dss-console keeps its files (platformdirs: XDG on Linux, the usual places elsewhere)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import platformdirs

APP_NAME = "dss-console"


def config_dir() -> Path:
    return platformdirs.user_config_path(APP_NAME, appauthor=False)


def data_dir() -> Path:
    """Private per-user data: journal, session fallback file, server index. Created 0700."""
    path = platformdirs.user_data_path(APP_NAME, appauthor=False)
    ensure_private_dir(path)
    return path


def ensure_private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.name == "posix":
        os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: str | bytes) -> None:
    """Replace `path` atomically with `data`, readable by this user only (0600 from the start:
    a token or key is never readable by others, not even for a moment)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
