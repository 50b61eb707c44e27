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
import json
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from dss_console.paths import write_private
from dss_console.server_process import BIND_HOST, ServerProcess, child_environment
from dss_console.sources.v6 import crypto
from dss_console.sources.v6.venv import V6_VERSION, V6SandboxError, ensure_venv

API_PATH = "/api"
LISTENING_PREFIX = "V6_SERVER_LISTENING"
SANDBOX_FILE = "sandbox.json"
DEMO_IMAGE = "v6-demo-mean"
DEMO_PACKAGE = "v6_demo_mean"
ROOT_PASSWORD_ENV = "V6_SANDBOX_ROOT_PASSWORD"

_HTTP_TIMEOUT = 30.0


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


class V6ServerProcess(ServerProcess):
    """One vantage6-server child on 127.0.0.1; ``restart()`` keeps the port (outage tests)."""

    listening_prefix = LISTENING_PREFIX
    probe_path = API_PATH + "/health"
    error_type = V6SandboxError
    default_timeout = 90.0
    what = "the vantage6 server"
    log_name = "server-stdout.log"

    def __init__(self, python: Path) -> None:
        super().__init__()
        self.python = python
        self._root_password = ""

    @property
    def api_url(self) -> str:
        """``url`` is the base URL without the API path (what researchers and nodes are
        told)."""
        return self.url + API_PATH

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
        return [str(self.python), str(server_script()), "--config", str(config),
                "--port", str(port), "--exit-with-parent", str(os.getpid())], env


def write_server_config(data_dir: Path, stem: str, *, description: str, api_path: str,
                        **settings: Any) -> Path:
    """``<stem>.yaml`` (0600) for a vantage6 server (4.x) or HQ (5.x) on ``data_dir``:
    SQLite ``<stem>.sqlite``, logs in ``logs/`` (``<stem>.log``), plus ``settings``."""
    # The JWT secret is kept with the data so tokens survive a restart (outage tests).
    secret_file = data_dir / "jwt_secret"
    if not secret_file.exists():
        write_private(secret_file, secrets.token_hex(32))
    config = {
        "description": description,
        **settings,
        "port": 0,
        "api_path": api_path,
        "uri": f"sqlite:///{data_dir / (stem + '.sqlite')}",
        "allow_drop_all": False,
        "jwt_secret_key": secret_file.read_text(encoding="utf-8").strip(),
        "directories": {"log": str(data_dir / "logs"), "data": str(data_dir)},
        "logging": {
            "level": "INFO", "file": f"{stem}.log", "use_console": True, "backup_count": 1,
            "max_size": 4096, "datefmt": "%H:%M:%S",
            "format": "%(asctime)s - %(name)-14s - %(levelname)-8s - %(message)s",
            "loggers": [{"name": n, "level": "warning"} for n in
                        ("urllib3", "socketio.server", "engineio.server", "sqlalchemy.engine")],
        },
    }
    path = data_dir / f"{stem}.yaml"
    # JSON is valid YAML, and the console's venv has no YAML writer.
    write_private(path, json.dumps(config, indent=1))
    return path


# -- seeding -----------------------------------------------------------------------------


class _Admin:
    """The root user over REST, only for seeding."""

    def __init__(self, api_url: str, password: str) -> None:
        self.api_url = api_url
        self.http = requests.Session()
        self.http.trust_env = False
        reply = self.http.post(f"{api_url}/token/user",
                               json={"username": "root", "password": password},
                               timeout=_HTTP_TIMEOUT)
        if reply.status_code != 200:
            raise V6SandboxError(f"cannot log in as root on the sandbox server "
                                 f"(HTTP {reply.status_code})")
        self.http.headers["Authorization"] = f"Bearer {reply.json()['access_token']}"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        reply = self.http.request(method, f"{self.api_url}{path}", timeout=_HTTP_TIMEOUT,
                                  **kwargs)
        if reply.status_code >= 300:
            raise V6SandboxError(f"seeding: {method} {path} answered HTTP {reply.status_code}: "
                                 f"{reply.text[:300]}")
        return reply.json()

    def find(self, path: str, **params: Any) -> list[dict[str, Any]]:
        return list(self.call("GET", path, params={**params, "per_page": 100})["data"])

    def close(self) -> None:
        self.http.close()


@dataclass(frozen=True)
class SandboxNode:
    name: str
    id: int
    api_key: str
    collaboration: str
    collaboration_id: int
    encrypted: bool


def seed(api_url: str, root_password: str, data_dir: Path) -> dict[str, Any]:
    """Create the demo organizations, collaborations, nodes, keys and researcher."""
    admin = _Admin(api_url, root_password)
    try:
        keys = data_dir / "keys"
        keys.mkdir(mode=0o700, exist_ok=True)
        orgs: dict[str, dict[str, Any]] = {}
        for name in ("station", "research"):
            pem = crypto.new_private_key_pem()
            key_file = keys / f"{name}.pem"
            write_private(key_file, pem.decode("ascii"))
            public = crypto.RsaCryptor.from_pem(pem).public_key_b64
            org = admin.call("POST", "/organization",
                             json={"name": name, "public_key": public,
                                   "domain": f"{name}.sandbox.invalid"})
            orgs[name] = {"id": org["id"], "key_file": str(key_file)}
        org_ids = [orgs["station"]["id"], orgs["research"]["id"]]
        collaborations: dict[str, dict[str, Any]] = {}
        for name, encrypted in (("demo", False), ("demo-enc", True)):
            collab = admin.call("POST", "/collaboration",
                                json={"name": name, "organization_ids": org_ids,
                                      "encrypted": encrypted})
            collaborations[name] = {"id": collab["id"], "encrypted": encrypted}
        nodes: dict[str, dict[str, Any]] = {}
        for name, collab in (("station-demo", "demo"), ("station-demo-enc", "demo-enc")):
            node = admin.call("POST", "/node",
                              json={"name": name, "organization_id": orgs["station"]["id"],
                                    "collaboration_id": collaborations[collab]["id"]})
            nodes[name] = {"id": node["id"], "api_key": node["api_key"],
                           "collaboration": collab,
                           "collaboration_id": collaborations[collab]["id"],
                           "encrypted": collaborations[collab]["encrypted"]}
        role = admin.find("/role", name="Researcher")
        rules = [r for r in admin.find("/rule", name="event")
                 if r.get("scope") == "COLLABORATION" and r.get("operation") == "SEND"]
        if not role or not rules:
            raise V6SandboxError("seeding: the Researcher role or the event/send/collaboration "
                                 "rule is missing on this server")
        password = secrets.token_urlsafe(12) + "aA1!"
        admin.call("POST", "/user", json={
            "username": "researcher", "email": "researcher@sandbox.invalid",
            "password": password, "firstname": "Demo", "lastname": "Researcher",
            "organization_id": orgs["research"]["id"], "roles": [role[0]["id"]],
            "rules": [rules[0]["id"]]})
    finally:
        admin.close()
    return {
        "organizations": orgs,
        "collaborations": collaborations,
        "nodes": nodes,
        "researcher": {"username": "researcher", "password": password,
                       "organization": "research"},
    }


class V6Sandbox:
    """``with V6Sandbox() as sb:`` — the venv (built on first use), the server and the seed.

    ``data_dir=None``: a temp dir removed on stop; a given dir is kept and reused (the seed
    in its ``sandbox.json`` is reused too). ``port=0``: any free port.
    """

    def __init__(self, data_dir: Path | str | None = None, port: int = 0, *,
                 timeout: float = 90.0, report: Any = None) -> None:
        self._requested_dir = Path(data_dir) if data_dir is not None else None
        self._port = port
        self._timeout = timeout
        self._report = report
        self._data_dir: Path | None = None
        self._owns_dir = False
        self.server: V6ServerProcess | None = None
        self.info: dict[str, Any] = {}
        self.python: Path | None = None
        self.timings: dict[str, float] = {}

    def start(self) -> V6Sandbox:
        t0 = time.monotonic()
        self.python = ensure_venv(self._report)
        t1 = time.monotonic()
        self.timings["venv"] = t1 - t0
        if self._requested_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="dss-v6-sandbox-"))
            self._owns_dir = True
        else:
            self._data_dir = self._requested_dir.resolve()
            self._data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self._data_dir, 0o700)
        try:
            previous = self._read_previous()
            root_password = previous.get("root_password") or secrets.token_urlsafe(18)
            self.server = V6ServerProcess(self.python)
            self.server.start(self._data_dir, self._port, root_password=root_password,
                              timeout=self._timeout)
            t2 = time.monotonic()
            self.timings["server"] = t2 - t1
            seeded = previous.get("seed") or seed(self.server.api_url, root_password,
                                                  self._data_dir)
            self.timings["seed"] = time.monotonic() - t2
            self.info = {
                "version": V6_VERSION,
                "url": self.server.url,
                "api_path": API_PATH,
                "root_password": root_password,
                "seed": seeded,
                "python": str(self.python),
                "demo": {"image": DEMO_IMAGE, "package": DEMO_PACKAGE,
                         "pythonpath": str(demo_root()), "csv": str(demo_csv())},
                "data_dir": str(self._data_dir),
                "server_log": str(self._data_dir / "logs"),
            }
            write_private(self._data_dir / SANDBOX_FILE, json.dumps(self.info, indent=1))
        except BaseException:
            self.stop()
            raise
        return self

    def _read_previous(self) -> dict[str, Any]:
        assert self._data_dir is not None
        path = self._data_dir / SANDBOX_FILE
        if not path.exists() or not (self._data_dir / "server.sqlite").exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self._owns_dir and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._owns_dir = False

    def __enter__(self) -> V6Sandbox:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- what clients need ------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    @property
    def api_url(self) -> str:
        assert self.server is not None
        return self.server.api_url

    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            raise V6SandboxError("sandbox not started")
        return self._data_dir

    @property
    def sandbox_file(self) -> Path:
        return self.data_dir / SANDBOX_FILE

    def node(self, name: str) -> SandboxNode:
        entry = self.info["seed"]["nodes"][name]
        return SandboxNode(name=name, id=entry["id"], api_key=entry["api_key"],
                           collaboration=entry["collaboration"],
                           collaboration_id=entry["collaboration_id"],
                           encrypted=entry["encrypted"])

    def org_id(self, name: str) -> int:
        return int(self.info["seed"]["organizations"][name]["id"])

    def key_file(self, org: str) -> Path:
        return Path(self.info["seed"]["organizations"][org]["key_file"])

    @property
    def researcher(self) -> tuple[str, str]:
        r = self.info["seed"]["researcher"]
        return r["username"], r["password"]

    def demo_settings(self) -> dict[str, Any]:
        """A ``[v6]`` table that runs the demo algorithm on the demo CSV."""
        return {
            "algorithms": {DEMO_IMAGE: {
                "python": str(self.python), "package": DEMO_PACKAGE, "subtasks": True,
                "env": {"PYTHONPATH": str(demo_root())}}},
            "databases": {"default": {"uri": str(demo_csv()), "type": "csv"}},
        }
