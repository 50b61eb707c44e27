"""Where a job's files live, and the housekeeping around them.

    <workroot>/<server-slug>/ticket_%08d/      (0700)  {workdir}
        input/                                         {inputs}: the ticket's files
        input/ticket_%08d.itksnap                      {workspace}
        result.itksnap                                 {result}: the command writes it
        .dss/                                          the engine's own files (logs, hook,
                                                       events, attachments, export)
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit

ENGINE_DIR = ".dss"  # in a job's work dir: the engine's own files (events, hook, logs)
INPUT_DIR = "input"  # in a job's work dir: the inputs as fetched


def output_log_name(attempt: int) -> str:
    """The file (in ENGINE_DIR) holding an attempt's output: one per attempt, so a retry
    keeps the earlier run's log."""
    return "output.log" if attempt <= 1 else f"output-{attempt}.log"


def server_slug(server: str) -> str:
    """A folder name for a server URL: `https://dss.itksnap.org` -> `dss.itksnap.org`."""
    parts = urlsplit(server)
    text = (parts.hostname or "server") + (f"_{parts.port}" if parts.port else "")
    if parts.path.strip("/"):
        text += "_" + parts.path.strip("/")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def ticket_workdir(workroot: Path, server: str, ticket_id: int, noun: str) -> Path:
    """A job's work dir, named by the source's noun: a DSS ticket's `ticket_%08d`, a
    vantage6 run's `run_%08d` (a node's operator meets vantage6 words, not DSS ones).
    Existing dirs are found through the journal, which keeps each job's work dir, so a
    rename never strands one."""
    return Path(workroot) / server_slug(server) / f"{noun}_{ticket_id:08d}"


def make_private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.name == "posix":
        os.chmod(path, 0o700)
    return path


def clean_workdir(workdir: Path) -> None:
    """Empty a work dir for a fresh run, keeping the engine's own files (logs of earlier runs)."""
    if not workdir.exists():
        return
    for entry in workdir.iterdir():
        if entry.name == ENGINE_DIR:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()


def find_input_workspace(input_dir: Path, ticket_id: int) -> Path | None:
    expected = input_dir / f"ticket_{ticket_id:08d}.itksnap"
    if expected.is_file():
        return expected
    candidates = sorted(input_dir.glob("*.itksnap"))
    return candidates[0] if candidates else None


def remove_old_workdirs(root: Path, days: float, keep: set[Path]) -> list[Path]:
    """Delete ticket (and vantage6 run) work dirs untouched for `days` (retention), except
    those in `keep`."""
    if days <= 0 or not root.exists():
        return []
    cutoff = time.time() - days * 86400
    removed = []
    for server_dir in root.iterdir():
        if not server_dir.is_dir():
            continue
        for workdir in [*server_dir.glob("ticket_*"), *server_dir.glob("run_*")]:
            if workdir in keep or not workdir.is_dir():
                continue
            try:
                newest = max((p.stat().st_mtime for p in workdir.rglob("*")),
                             default=workdir.stat().st_mtime)
            except OSError:
                continue
            if newest < cutoff:
                shutil.rmtree(workdir, ignore_errors=True)
                removed.append(workdir)
    return removed
