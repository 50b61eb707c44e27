"""What the 4.x and 5.x test fixtures share: the sandbox venv in the real user cache, and the
official vantage6 client as a child process of that venv driven over JSON lines (one request
a line, one reply a line; one process per collaboration: the official cryptor is a singleton).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def real_user_cache() -> Path:
    # conftest points XDG_CACHE_HOME at a per-session scratch dir; the venv must outlive it.
    if sys.platform.startswith("linux"):
        return Path.home() / ".cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir())


def sandbox_python(ensure_venv: Callable[[Callable[[str], None]], Path], env_override: str,
                   cache_name: str, unavailable: type[Exception], label: str) -> Path:
    """The sandbox venv's Python, built on first use in the real user cache (``cache_name``);
    skipped, loudly, only when PyPI is unreachable outside CI."""
    os.environ.setdefault(env_override, str(real_user_cache() / "dss-console" / cache_name))
    try:
        return ensure_venv(lambda line: print(line, file=sys.stderr))
    except unavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"*** {label} SANDBOX UNAVAILABLE (PyPI unreachable?): {exc}")


_AGENT_HEAD = """\
import json, os, sys, time
out = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)                       # the client's prints must not corrupt the protocol
from vantage6.client import UserClient
cfg = json.loads(sys.argv[1])
def unpage(answer):
    return answer.get("data", answer) if isinstance(answer, dict) else answer
"""
_AGENT_LOOP = """\
for line in sys.stdin:
    cmd = json.loads(line)
    op, args = cmd["op"], cmd.get("args", {})
    try:
{ops}
        elif op == "runs":
            value = [{"id": r["id"], "status": r["status"], "log": r.get("log")}
                     for r in unpage(client.run.from_task(args["task_id"]))]
        elif op == "kill":
            value = client.task.kill(args["task_id"])
        elif op == "task":
            value = client.task.get(args["task_id"])
        else:
            raise ValueError(f"unknown op {op}")
        out.write(json.dumps({"ok": True, "value": value}, default=str) + "\\n")
    except Exception as exc:
        out.write(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}) + "\\n")
"""


def agent_script(setup: str, ops: str) -> str:
    """The agent :class:`OfficialClient` runs: ``setup`` makes ``client`` (a UserClient) from
    ``cfg``; for every request line, ``ops`` (an ``if op == ...`` chain the ops ``runs``,
    ``kill`` and ``task`` follow) sets ``value`` from ``op`` and ``args`` (an exception is the
    error reply)."""
    ops = textwrap.indent(textwrap.dedent(ops).strip("\n"), " " * 8)
    return _AGENT_HEAD + textwrap.dedent(setup) + _AGENT_LOOP.replace("{ops}", ops)


class OfficialClient:
    """``agent`` (a script reading ops on stdin) run by ``python`` with ``cfg`` as argv[1]."""

    def __init__(self, python: Path, agent: str, cfg: dict[str, Any]) -> None:
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [str(python), "-c", agent, json.dumps(cfg)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)

    def call(self, op: str, timeout: float = 120.0, **args: Any) -> Any:
        with self._lock:
            assert self._proc.stdin is not None and self._proc.stdout is not None
            self._proc.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
            self._proc.stdin.flush()
            line = readline(self._proc, timeout)
        reply = json.loads(line)
        if not reply["ok"]:
            raise RuntimeError(f"researcher {op}: {reply['error']}")
        return reply["value"]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self._proc.stdin is not None
            self._proc.stdin.close()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def readline(proc: subprocess.Popen[str], timeout: float) -> str:
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    reader.join(timeout)
    if not result or not result[0]:
        raise RuntimeError(f"the researcher process gave no answer within {timeout} s "
                           f"(exit code {proc.poll()})")
    return result[0]
