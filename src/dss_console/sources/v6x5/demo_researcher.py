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

from dss_console.sources.v6.demo_researcher import DemoResearcher, agent_script

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


# Parts of the 5.x researcher's script the tests' official client uses as well
# (tests/v6x5_fixtures.py): ``decoded``, a result as HQ hands it back, made an object;
# the service account's login (indented 4), making ``client`` and ``session_id`` from ``cfg``.
AGENT_DECODED = r'''def decoded(value):
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8")
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
'''
AGENT_LOGIN_5 = r'''    client = UserClient(cfg["hq_url"], cfg["auth_url"], auth_realm=cfg["realm"],
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
'''

_AGENT_HELPERS_5 = r'''def reply(ok, value=None, error=None):
    out.write(json.dumps({"ok": ok, "value": value, "error": error}, default=str) + "\n")
def unpage(answer):
    return answer.get("data", answer) if isinstance(answer, dict) else answer
''' + AGENT_DECODED
_AGENT_TASK_ARGUMENTS_5 = '''\
                description=args.get("description", ""), method=args["method"],
                arguments=args.get("kwargs", {}), session=session_id, databases=[],
                action="federated_compute")
'''
_AGENT_RESULTS_5 = '''\
            value = [decoded(r.get("result"))
                     for r in unpage(client.result.from_task(args["task_id"]))]
'''
_AGENT_5 = agent_script(_AGENT_HELPERS_5, AGENT_LOGIN_5, _AGENT_TASK_ARGUMENTS_5,
                        _AGENT_RESULTS_5)


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
