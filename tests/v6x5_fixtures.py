"""The real vantage6 HQ 5.0.3 behind the Keycloak-compatible stand-in, once per session, on
first use.

conftest.py registers the fixtures (``v6x5_python``, ``v6x5_sandbox``) for the whole session:
never import them into a test module, which would give that module an HQ of its own. Only
tests that ask for them start anything.

The 5.x venv lives in the *real* user cache (``~/.cache/dss-console/v6-sandbox-5.0.3``), not in
the per-session scratch XDG dirs conftest sets, so it is built once per machine (~70-90 s
here) and reused by every later session. Without a Python 3.13 the tests fail in words
(never skip: CI must not pass without them); only when PyPI is unreachable outside CI are they
skipped, loudly, as the 4.x ones are.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dss_console.engine.settings import settings_to_toml
from dss_console.sources.v6.settings import parse_v6_settings
from dss_console.sources.v6x5 import venv as v6x5venv
from dss_console.sources.v6x5.demo_researcher import AGENT_DECODED, AGENT_LOGIN_5
from dss_console.sources.v6x5.sandbox import HqSandbox
from official_client import OfficialClient, agent_script, sandbox_python
from settings_helpers import settings_with


@pytest.fixture(scope="session")
def v6x5_python() -> Path:
    """The 5.x venv's Python 3.13 (built on first use)."""
    return sandbox_python(v6x5venv.ensure_venv, v6x5venv.ENV_OVERRIDE, v6x5venv.SPEC.name,
                          v6x5venv.V6VenvUnavailable, "v6 5.x")


@pytest.fixture(scope="session")
def v6x5_sandbox(v6x5_python: Path, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[HqSandbox]:
    """HQ 5.0.3 seeded, behind the stand-in; its data dir (logs, realm) lives under pytest's
    basetemp."""
    with HqSandbox(data_dir=tmp_path_factory.mktemp("v6x5-sandbox")) as sb:
        print(f"v6x5 sandbox up: {sb.timings}", file=sys.stderr)
        yield sb


# The researcher: the official UserClient 5.0.3 in the 5.x venv, as the service account
# ``researcher-sa``, driven over JSON lines (one process per collaboration, as for 4.x: the
# official cryptor is a singleton). It makes one session in its collaboration at start; every
# task goes in it.
_AGENT_5 = agent_script("\n" + AGENT_LOGIN_5 + textwrap.indent(AGENT_DECODED, "    "), r'''
    if op == "create_task":
        task = client.task.create(
            organizations=args["organizations"], name=args.get("name", "test"),
            image=args["image"], description="dss-console test",
            method=args["method"], arguments=args.get("kwargs", {}),
            session=session_id, databases=args.get("databases") or [],
            action=args.get("action", "federated_compute"))
        value = {"id": task["id"], "job_id": task.get("job_id")}
    elif op == "results":
        results = unpage(client.result.from_task(args["task_id"]))
        value = [decoded(r.get("result")) for r in results]
    elif op == "session_id":
        value = session_id
    elif op == "client":        # any UserClient call, e.g. "dataframe.create"
        target = client
        for part in args["path"].split("."):
            target = getattr(target, part)
        value = target(*args.get("args", []), **args.get("kwargs", {}))
    ''')


class HqResearcher(OfficialClient):
    """The official 5.0.3 UserClient (service account) in one collaboration of the sandbox."""

    def __init__(self, python: Path, sandbox: HqSandbox, collaboration: str, *,
                 session_name: str | None = None) -> None:
        """``session_name``: the session its tasks go in (HQ refuses a second session of
        one name in a collaboration: a second researcher there needs its own)."""
        collab = sandbox.info["seed"]["collaborations"][collaboration]
        _, secret = sandbox.service_account
        cfg = {"hq_url": sandbox.api_url, "auth_url": sandbox.auth_url,
               "realm": sandbox.info["realm"], "username": "researcher-sa",
               "client_secret": secret, "collaboration_id": collab["id"],
               "session_name": session_name or f"tests-{collaboration}-{os.getpid()}",
               "key_file": str(sandbox.key_file("research")) if collab["encrypted"] else None}
        self.collaboration = collaboration
        super().__init__(python, _AGENT_5, cfg)

    def create_task(self, image: str, method: str, organizations: list[int], *,
                    action: str = "federated_compute", **kwargs: Any) -> int:
        databases = kwargs.pop("databases", [])
        return int(self.call("create_task", image=image, method=method, kwargs=kwargs,
                             organizations=organizations, databases=databases,
                             action=action)["id"])


@pytest.fixture(scope="session")
def v6x5_researchers(v6x5_python: Path, v6x5_sandbox: HqSandbox
                     ) -> Iterator[dict[str, HqResearcher]]:
    """``v6x5_researchers["demo"]``: the official client in the sandbox's collaboration."""
    made = {"demo": HqResearcher(v6x5_python, v6x5_sandbox, "demo")}
    try:
        yield made
    finally:
        for researcher in made.values():
            researcher.close()


def v6x5_algorithm_root() -> Path:
    """The directory to put on PYTHONPATH for the tests' 5.x algorithm (``v6x5_demo``)."""
    return Path(__file__).with_name("v6x5_algorithm")


def log_in_v6x5_home(home: Path, table: dict[str, Any], sandbox: HqSandbox, node: str,
                     env: dict[str, str]) -> None:
    """A node operator's machine at ``home`` (its environment ``env``): ``table`` its
    settings' [v6] table, the sandbox's ``node`` logged in with the console's own CLI."""
    (home / "settings.toml").write_text(
        settings_to_toml(settings_with(v6=parse_v6_settings(table))))
    done = subprocess.run(
        [str(Path(sys.executable).with_name("dss-console")), "v6", "login",
         "--server", sandbox.url, "--auth-url", sandbox.auth_url,
         "--realm", sandbox.info["realm"], "--node", node, "--api-key-stdin"],
        input=sandbox.node(node).api_key + "\n", env=env, capture_output=True, text=True,
        timeout=120)
    assert done.returncode == 0, done.stderr
