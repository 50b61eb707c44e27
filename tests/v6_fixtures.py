"""The real vantage6 4.15.2 server for the v6 tests: started once per session, on first use.

conftest.py registers the fixtures (``v6_python``, ``v6_sandbox``, ``researchers``) for the
whole session: never import them into a test module, which would give that module a server
of its own.
The sandbox venv lives in the *real* user cache (``~/.cache/dss-console/v6-sandbox-4.15.2``),
not in the per-session scratch XDG dirs conftest sets, so it is built once per machine
(~70-110 s with PyPI) and reused by every later session. Only when it cannot be built because
PyPI is unreachable is the test skipped — loudly, and never under CI (CI has PyPI).

The researcher is the official ``vantage6-client`` in the sandbox venv, driven as a child
process over JSON lines (one process per collaboration: the official cryptor is a singleton).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dss_console.sources.v6 import venv as v6venv
from dss_console.sources.v6.sandbox import V6Sandbox
from official_client import OfficialClient, agent_script, sandbox_python

# Module-level timeout for tests that use the server: the first one pays for the venv build.
SERVER_TEST_TIMEOUT = 900


@pytest.fixture(scope="session")
def v6_python() -> Path:
    """The sandbox venv's Python (built on first use)."""
    return sandbox_python(v6venv.ensure_venv, v6venv.ENV_OVERRIDE,
                          f"v6-sandbox-{v6venv.V6_VERSION}", v6venv.V6VenvUnavailable, "v6")


@pytest.fixture(scope="session")
def v6_sandbox(v6_python: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[V6Sandbox]:
    """The seeded server; its data dir (logs) lives under pytest's basetemp."""
    with V6Sandbox(data_dir=tmp_path_factory.mktemp("v6-sandbox")) as sb:
        yield sb


_AGENT = agent_script(r'''
    client = UserClient(cfg["host"], cfg["port"], "/api", log_level="warn")
    client.authenticate(cfg["username"], cfg["password"])
    client.setup_encryption(cfg.get("key_file"))
    client.setup_collaboration(cfg["collaboration_id"])
    DONE = {"completed", "crashed", "failed", "start failed", "non-existing Docker image",
            "killed by user", "not allowed", "unknown error"}
    def wait_task(task_id, timeout):
        deadline = time.monotonic() + timeout
        while True:
            status = client.task.get(task_id)["status"]
            if status in DONE or time.monotonic() > deadline:
                return status
            time.sleep(0.1)
    ''', r'''
    if op == "create_task":
        task = client.task.create(
            organizations=args["organizations"], name=args.get("name", "test"),
            image=args["image"], description="dss-console test",
            input_={"method": args["method"], "kwargs": args.get("kwargs", {})},
            databases=args.get("databases", [{"label": "default"}]))
        value = {"id": task["id"], "job_id": task.get("job_id")}
    elif op == "wait_task":
        value = wait_task(args["task_id"], args.get("timeout", 60))
    elif op == "results":
        # 4.15.2's UserClient hands back the decrypted JSON text, not the object.
        value = [json.loads(r["result"]) if isinstance(r.get("result"), str)
                 else r.get("result") for r in unpage(client.result.from_task(args["task_id"]))]
    ''')


class Researcher(OfficialClient):
    """The official UserClient in one collaboration, in the sandbox venv."""

    def __init__(self, python: Path, sandbox: V6Sandbox, collaboration: str) -> None:
        seed = sandbox.info["seed"]
        collab = seed["collaborations"][collaboration]
        username, password = sandbox.researcher
        assert sandbox.server is not None
        cfg = {"host": "http://127.0.0.1", "port": sandbox.server.port,
               "username": username, "password": password,
               "collaboration_id": collab["id"],
               "key_file": str(sandbox.key_file("research")) if collab["encrypted"] else None}
        self.collaboration = collaboration
        self.encrypted = collab["encrypted"]
        super().__init__(python, _AGENT, cfg)

    def create_task(self, image: str, method: str, organizations: list[int],
                    **kwargs: Any) -> int:
        databases = kwargs.pop("databases", [{"label": "default"}])
        return int(self.call("create_task", image=image, method=method, kwargs=kwargs,
                             organizations=organizations, databases=databases)["id"])


@pytest.fixture(scope="session")
def researchers(v6_python: Path, v6_sandbox: V6Sandbox) -> Iterator[dict[str, Researcher]]:
    """``researchers["demo"]`` and ``researchers["demo-enc"]``."""
    made = {name: Researcher(v6_python, v6_sandbox, name) for name in ("demo", "demo-enc")}
    yield made
    for r in made.values():
        r.close()


def run_official(python: Path, code: str, stdin: str = "", timeout: float = 60.0) -> str:
    """Run ``code`` with the sandbox venv's Python (where vantage6-common is); its stdout."""
    proc = subprocess.run([str(python), "-c", code], input=stdin, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"official snippet failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until truthy (for state in another process: no event to wait on)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
