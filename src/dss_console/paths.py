"""Where dss-console keeps its files (platformdirs: XDG on Linux, the usual places elsewhere)."""

from __future__ import annotations

import os
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
