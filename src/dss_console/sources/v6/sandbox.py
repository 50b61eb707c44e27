"""A throw-away vantage6 4.15.2 deployment on 127.0.0.1: ``dss-console v6 sandbox`` and tests.

Mirrors ``dss_console.sandbox`` (the DSS one): the real server in a child process bound to the
loopback interface, a SQLite store, logs and keys in one data dir (a temp dir, or ``--data``
DIR which is kept and reused), seeded over REST:

* organizations ``station`` (the data station this machine plays) and ``research``;
* collaborations ``demo`` (plain) and ``demo-enc`` (encrypted), both with both organizations;
* nodes ``station-demo`` and ``station-demo-enc`` (station's), with their API keys;
* an RSA-4096 key per organization, public keys uploaded (needed for ``demo-enc``);
* user ``researcher`` (organization research, role Researcher plus the rule
  event/send/collaboration, without which ``POST /kill/task`` answers 401).

The server runs in its own venv (see :mod:`dss_console.sources.v6.venv`) through
``resources/v6_demo/v6_sandbox_server.py``, which applies the Python 3.11 enum fix.
``sandbox.json`` (0600) in the data dir holds everything a client needs, secrets included:
it is the sandbox's purpose.
"""

from __future__ import annotations

import importlib.resources
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dss_console.server_process import BIND_HOST, child_environment
from dss_console.sources.v6.sandbox_common import (
    HTTP_TIMEOUT,
    SeededSandbox,
    SeedingAdmin,
    Vantage6ServerProcess,
    seed_demo,
    write_server_config,
)
from dss_console.sources.v6.venv import V6_VERSION, ensure_venv

API_PATH = "/api"
LISTENING_PREFIX = "V6_SERVER_LISTENING"
DEMO_IMAGE = "v6-demo-mean"
DEMO_PACKAGE = "v6_demo_mean"
ROOT_PASSWORD_ENV = "V6_SANDBOX_ROOT_PASSWORD"


def demo_root() -> Path:
    """The directory to put on PYTHONPATH for the demo algorithm package."""
    return Path(str(importlib.resources.files("dss_console.resources") / "v6_demo"))


def demo_csv() -> Path:
    return demo_root() / "demo.csv"


def server_script() -> Path:
    """The wrapper the sandbox venv's Python runs. A resource, not a module of this package:
    it imports vantage6, and a frozen bundle carries resources as files but modules only
    compiled."""
    return demo_root() / "v6_sandbox_server.py"


class V6ServerProcess(Vantage6ServerProcess):
    """One vantage6-server child on 127.0.0.1; ``restart()`` keeps the port (outage tests)."""

    listening_prefix = LISTENING_PREFIX
    api_path = API_PATH
    probe_path = API_PATH + "/health"
    default_timeout = 90.0
    what = "the vantage6 server"
    log_name = "server-stdout.log"

    def __init__(self, python: Path) -> None:
        super().__init__(python)
        self._root_password = ""

    def start(self, data_dir: Path, port: int = 0, *, root_password: str,
              timeout: float = 90.0) -> None:
        with self._lock:
            self._refuse_if_running()
            self._root_password = root_password
        self._launch(data_dir, port, timeout=timeout)

    def _command(self, data_dir: Path, port: int) -> tuple[list[str], dict[str, str]]:
        config = write_server_config(data_dir, "server", description="dss-console v6 sandbox",
                                     api_path=API_PATH, ip=BIND_HOST)
        env = child_environment(("V6_", "VANTAGE6_", "PYTHON"),
                                {ROOT_PASSWORD_ENV: self._root_password},
                                private_dirs_in=data_dir)
        return self._script_argv(server_script(), config, port), env


# -- seeding -----------------------------------------------------------------------------


class _Admin(SeedingAdmin):
    """The root user over REST, only for seeding."""

    def __init__(self, api_url: str, password: str) -> None:
        super().__init__(api_url)
        reply = self.http.post(f"{api_url}/token/user",
                               json={"username": "root", "password": password},
                               timeout=HTTP_TIMEOUT)
        self._take_token(reply, "cannot log in as root on the sandbox server")


def seed(api_url: str, root_password: str, data_dir: Path) -> dict[str, Any]:
    """Create the demo organizations, collaborations, nodes, keys and researcher."""
    admin = _Admin(api_url, root_password)
    try:
        seeded, rights = seed_demo(
            admin, data_dir,
            lambda r: r.get("scope") == "COLLABORATION" and r.get("operation") == "SEND")
        password = secrets.token_urlsafe(12) + "aA1!"
        admin.call("POST", "/user", json={
            "username": "researcher", "email": "researcher@sandbox.invalid",
            "password": password, "firstname": "Demo", "lastname": "Researcher", **rights})
    finally:
        admin.close()
    return {**seeded, "researcher": {"username": "researcher", "password": password,
                                     "organization": "research"}}


class V6Sandbox(SeededSandbox):
    """``with V6Sandbox() as sb:`` — the venv (built on first use), the server and the seed.

    ``data_dir=None``: a temp dir removed on stop; a given dir is kept and reused (the seed
    in its ``sandbox.json`` is reused too). ``port=0``: any free port.
    """

    temp_prefix = "dss-v6-sandbox-"
    database_name = "server.sqlite"

    def __init__(self, data_dir: Path | str | None = None, port: int = 0, *,
                 timeout: float = 90.0, report: Callable[[str], None] | None = None) -> None:
        super().__init__(data_dir, port, timeout, report)
        self.server: V6ServerProcess | None = None

    def _ensure_venv(self) -> Path:
        return ensure_venv(self._report)

    def _start_services(self, data_dir: Path, python: Path, t1: float) -> None:
        previous = self._read_previous()
        root_password = previous.get("root_password") or secrets.token_urlsafe(18)
        self.server = V6ServerProcess(python)
        self.server.start(data_dir, self._port, root_password=root_password,
                          timeout=self._timeout)
        t2 = time.monotonic()
        self.timings["server"] = t2 - t1
        seeded = previous.get("seed") or seed(self.server.api_url, root_password, data_dir)
        self.timings["seed"] = time.monotonic() - t2
        self.info = {
            "version": V6_VERSION,
            "url": self.server.url,
            "api_path": API_PATH,
            "root_password": root_password,
            "seed": seeded,
            "python": str(python),
            "demo": {"image": DEMO_IMAGE, "package": DEMO_PACKAGE,
                     "pythonpath": str(demo_root()), "csv": str(demo_csv())},
            "data_dir": str(data_dir),
            "server_log": str(data_dir / "logs"),
        }

    def _stop_services(self) -> None:
        if self.server is not None:
            self.server.stop()

    # -- what clients need ------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    @property
    def api_url(self) -> str:
        assert self.server is not None
        return self.server.api_url

    def demo_settings(self) -> dict[str, Any]:
        """A ``[v6]`` table that runs the demo algorithm on the demo CSV."""
        return {
            "algorithms": {DEMO_IMAGE: {
                "python": str(self.python), "package": DEMO_PACKAGE, "subtasks": True,
                "env": {"PYTHONPATH": str(demo_root())}}},
            "databases": {"default": {"uri": str(demo_csv()), "type": "csv"}},
        }
