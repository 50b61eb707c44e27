"""The researcher of the vantage6 5.x sandbox: posts demo tasks for the console to run.

The official ``vantage6-client`` 5.0.3 (``UserClient``) in the sandbox's Python 3.13 venv, as
the sandbox's service account ``researcher-sa`` (client credentials at the identity stand-in),
one child process driven over JSON lines as the 4.x researcher is
(:class:`~dss_console.sources.v6.demo_researcher.DemoResearcher`: same protocol, same calls).
Every 5.x task belongs to a session: the child makes one at start and posts every task in it.
Qt-free and blocking (the window calls it off its thread).
"""

from __future__ import annotations

import importlib.resources
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dss_console.sources.v6.demo_researcher import DemoResearcher

if TYPE_CHECKING:
    from dss_console.sources.v6x5.sandbox import HqSandbox

__all__ = ["DEMO_COLUMN", "DEMO_IMAGE", "DEMO_METHOD", "DEMO_PACKAGE", "HqDemoResearcher",
           "demo_info", "demo_root"]

DEMO_IMAGE = "v6x5-demo-mean"
DEMO_PACKAGE = "v6x5_demo_mean"   # resources/v6x5_demo/v6x5_demo_mean
DEMO_METHOD = "column_mean"
DEMO_COLUMN = "age"


def demo_root() -> Path:
    """The directory to put on PYTHONPATH for the 5.x demo algorithm package."""
    return Path(str(importlib.resources.files("dss_console.resources") / "v6x5_demo"))


def demo_info() -> dict[str, str]:
    """The demo algorithm as the sandbox's settings fragment names it (the shape of the 4.x
    sandbox's ``info["demo"]``; the CSV ships inside the package, the database entry is
    only there for the shape)."""
    root = demo_root()
    return {"image": DEMO_IMAGE, "package": DEMO_PACKAGE, "pythonpath": str(root),
            "csv": str(root / DEMO_PACKAGE / "demo.csv")}


_AGENT_5 = r'''
import json, os, sys
out = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)                       # the client's prints must not corrupt the protocol
def reply(ok, value=None, error=None):
    out.write(json.dumps({"ok": ok, "value": value, "error": error}, default=str) + "\n")
def unpage(answer):
    return answer.get("data", answer) if isinstance(answer, dict) else answer
def decoded(value):
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8")
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
try:
    from vantage6.client import UserClient
    cfg = json.loads(sys.stdin.readline())   # secrets on stdin, never in the argv
    client = UserClient(cfg["hq_url"], cfg["auth_url"], auth_realm=cfg["realm"],
                        log_level="warn")
    client.initialize_service_account(cfg["client_secret"], username=cfg["username"])
    client.authenticate_service_account()
    # 5.0.3's service-account login takes the token only; its user login then loads who
    # the user is (the cryptor needs the organization): the client's own step, run here.
    client._finalize_successful_authentication({"access_token": client._access_token})
    client.setup_encryption(cfg.get("key_file"))
    client.setup_collaboration(cfg["collaboration_id"])
    session = client.session.create(scope="own", name=cfg["session_name"],
                                    collaboration=cfg["collaboration_id"])
    session_id = session["id"]
except Exception as exc:
    reply(False, error=f"{type(exc).__name__}: {exc}")
    sys.exit(1)
reply(True, "ready")
for line in sys.stdin:
    cmd = json.loads(line)
    op, args = cmd["op"], cmd.get("args", {})
    try:
        if op == "create_task":
            task = client.task.create(
                organizations=args["organizations"], name=args["name"], image=args["image"],
                description=args.get("description", ""), method=args["method"],
                arguments=args.get("kwargs", {}), session=session_id, databases=[],
                action="federated_compute")
            value = {"id": task["id"]}
        elif op in ("task_status", "run_status"):
            kind = op.split("_")[0]
            item = (client.task.get(args["task_id"]) if kind == "task"
                    else client.run.get(args["run_id"]))
            if not isinstance(item, dict) or "status" not in item:
                msg = item.get("msg") if isinstance(item, dict) else item
                raise LookupError(f"no such {kind} ({msg})")
            value = item["status"]
        elif op == "results":
            value = [decoded(r.get("result"))
                     for r in unpage(client.result.from_task(args["task_id"]))]
        else:
            raise ValueError(f"unknown op {op}")
        reply(True, value)
    except Exception as exc:
        reply(False, error=f"{type(exc).__name__}: {exc}")
'''


class HqDemoResearcher(DemoResearcher):
    """The official 5.0.3 UserClient as the sandbox's service account, in one
    collaboration."""

    agent = _AGENT_5

    def __init__(self, python: Path, hq_url: str, auth_url: str, realm: str, username: str,
                 client_secret: str, collaboration_id: int, organizations: list[int], *,
                 key_file: Path | None = None, log_file: Path | None = None) -> None:
        super().__init__(python, 0, username, "", collaboration_id, organizations,
                         key_file=key_file, log_file=log_file)
        self._config = {"hq_url": hq_url, "auth_url": auth_url, "realm": realm,
                        "username": username, "client_secret": client_secret,
                        "collaboration_id": collaboration_id,
                        "session_name": f"dss-console sandbox {os.getpid()} {time.time():.0f}",
                        "key_file": str(key_file) if key_file else None}

    @classmethod
    def for_hq_sandbox(cls, sandbox: HqSandbox, collaboration: str = "demo"
                       ) -> HqDemoResearcher:
        """The service account in ``collaboration``, posting to the data station's node."""
        collab = sandbox.info["seed"]["collaborations"][collaboration]
        account = sandbox.info["seed"]["service_account"]
        assert sandbox.python is not None
        return cls(sandbox.python, sandbox.api_url, sandbox.auth_url, sandbox.info["realm"],
                   account["username"], account["client_secret"], collab["id"],
                   [sandbox.org_id("station")],
                   key_file=sandbox.key_file("research") if collab["encrypted"] else None,
                   log_file=sandbox.data_dir / "logs" / f"researcher-{collaboration}.log")

    def create_task(self, method: str = DEMO_METHOD, kwargs: dict[str, Any] | None = None, *,
                    name: str | None = None, image: str = DEMO_IMAGE) -> int:
        if kwargs is None:
            kwargs = {"column": DEMO_COLUMN} if method == DEMO_METHOD else {}
        return super().create_task(method, kwargs, name=name, image=image)

    def post_demo_tasks(self, count: int) -> list[int]:
        """``count`` tasks of the demo algorithm (the mean of a column of the demo CSV)."""
        return [self.create_task(name=f"demo {DEMO_METHOD} {i + 1}/{count}")
                for i in range(count)]
