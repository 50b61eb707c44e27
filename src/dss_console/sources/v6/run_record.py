"""What a node keeps of one run: the details its task tells (for the console, the journal
and the audit) and a summary of its input that names arguments, never their values.

Moved out of ``source.py`` (a module's size cap); ``source.py`` re-exports the names.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from dss_console.sources.v6.client import Run


def claim_details(run: Run) -> dict[str, Any]:
    """What the run itself tells about its task (no input, no server-side secrets)."""
    labels = [str(d.get("label")) for d in run.databases if d.get("label") is not None]
    return {"task_id": run.task_id, "task_name": run.task.get("name"), "job_id": run.job_id,
            "parent_id": run.parent_id, "init_org_id": run.init_org_id,
            "init_user_id": run.init_user_id, "databases": labels}


def input_summary(data: bytes) -> dict[str, Any]:
    """Method and argument names only, for the console and the audit: never the values."""
    try:
        payload = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {"format": "not JSON", "bytes": len(data)}
    if not isinstance(payload, dict):
        return {"format": type(payload).__name__, "bytes": len(data)}
    kwargs = payload.get("kwargs")
    args = payload.get("args")
    return {"method": payload.get("method"),
            "kwargs": sorted(kwargs) if isinstance(kwargs, dict) else [],
            "args": len(args) if isinstance(args, list) else 0, "bytes": len(data)}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
