"""What the vantage6 4.x sandbox (:mod:`dss_console.sources.v6.sandbox`) and the 5.x one
(:mod:`dss_console.sources.v6x5.sandbox`) share: the server in the sandbox venv's Python, its
configuration, the seeding session and the seed's common part, the data dir with its
``sandbox.json`` and what clients read from it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, TypeVar

import requests

from dss_console.paths import write_private
from dss_console.server_process import ServerProcess
from dss_console.sources.v6 import crypto
from dss_console.sources.v6.venv import V6SandboxError

SANDBOX_FILE = "sandbox.json"
HTTP_TIMEOUT = 30.0


class Vantage6ServerProcess(ServerProcess):
    """A vantage6 server (4.x) or HQ (5.x) run by the sandbox venv's ``python``."""

    api_path: ClassVar[str]
    error_type = V6SandboxError

    def __init__(self, python: Path) -> None:
        super().__init__()
        self.python = python

    @property
    def api_url(self) -> str:
        """``url`` is the base URL without the API path (what researchers and nodes are told;
        socket.io lives there)."""
        return self.url + self.api_path

    def _script_argv(self, script: Path, config: Path, port: int) -> list[str]:
        return [str(self.python), str(script), "--config", str(config),
                "--port", str(port), "--exit-with-parent", str(os.getpid())]


def write_server_config(data_dir: Path, stem: str, *, description: str, api_path: str,
                        **settings: Any) -> Path:
    """``<stem>.yaml`` (0600) for a vantage6 server (4.x) or HQ (5.x) on ``data_dir``:
    SQLite ``<stem>.sqlite``, logs in ``logs/`` (``<stem>.log``), plus ``settings``."""
    # The JWT secret (HQ also signs container tokens with it) is kept with the data so tokens
    # survive a restart (outage tests).
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


class SeedingAdmin:
    """The server's root user over REST, only for seeding; a subclass logs in."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url
        self.http = requests.Session()
        self.http.trust_env = False

    def _take_token(self, reply: requests.Response, refused: str) -> None:
        if reply.status_code != 200:
            raise V6SandboxError(f"{refused} (HTTP {reply.status_code})")
        self.http.headers["Authorization"] = f"Bearer {reply.json()['access_token']}"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        reply = self.http.request(method, f"{self.api_url}{path}", timeout=HTTP_TIMEOUT,
                                  **kwargs)
        if reply.status_code >= 300:
            raise V6SandboxError(f"seeding: {method} {path} answered HTTP {reply.status_code}: "
                                 f"{reply.text[:300]}")
        return reply.json()

    def find(self, path: str, **params: Any) -> list[dict[str, Any]]:
        return list(self.call("GET", path, params={**params, "per_page": 100})["data"])

    def close(self) -> None:
        self.http.close()


def seed_demo(admin: SeedingAdmin, data_dir: Path,
              is_send_rule: Callable[[dict[str, Any]], bool]
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """What both seeds create: organizations ``station`` and ``research`` with their keys,
    collaborations ``demo`` and ``demo-enc``, the station's nodes (the seed so far); and the
    researcher's rights (organization, the Researcher role, the event/send/collaboration rule
    ``is_send_rule`` picks) for the users each seed adds."""
    keys = data_dir / "keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    orgs: dict[str, dict[str, Any]] = {}
    for name in ("station", "research"):
        pem = crypto.new_private_key_pem()
        key_file = keys / f"{name}.pem"
        write_private(key_file, pem.decode("ascii"))
        public = crypto.RsaCryptor.from_pem(pem).public_key_b64
        org = admin.call("POST", "/organization", json={
            "name": name, "public_key": public, "domain": f"{name}.sandbox.invalid"})
        orgs[name] = {"id": org["id"], "key_file": str(key_file)}
    org_ids = [orgs["station"]["id"], orgs["research"]["id"]]
    collaborations: dict[str, dict[str, Any]] = {}
    for name, encrypted in (("demo", False), ("demo-enc", True)):
        collab = admin.call("POST", "/collaboration", json={
            "name": name, "organization_ids": org_ids, "encrypted": encrypted})
        collaborations[name] = {"id": collab["id"], "encrypted": encrypted}
    nodes: dict[str, dict[str, Any]] = {}
    for name, collab in (("station-demo", "demo"), ("station-demo-enc", "demo-enc")):
        node = admin.call("POST", "/node", json={
            "name": name, "organization_id": orgs["station"]["id"],
            "collaboration_id": collaborations[collab]["id"]})
        nodes[name] = {"id": node["id"], "api_key": node["api_key"], "collaboration": collab,
                       "collaboration_id": collaborations[collab]["id"],
                       "encrypted": collaborations[collab]["encrypted"]}
    role = admin.find("/role", name="Researcher")
    rules = [r for r in admin.find("/rule", name="event") if is_send_rule(r)]
    if not role or not rules:
        raise V6SandboxError("seeding: the Researcher role or the event/send/collaboration rule "
                             "is missing on this server")
    rights = {"organization_id": orgs["research"]["id"], "roles": [role[0]["id"]],
              "rules": [rules[0]["id"]]}
    return {"organizations": orgs, "collaborations": collaborations, "nodes": nodes}, rights


# -- the sandbox -------------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxNode:
    name: str
    id: int
    api_key: str
    collaboration: str
    collaboration_id: int
    encrypted: bool


_Sandbox = TypeVar("_Sandbox", bound="SeededSandbox")


class SeededSandbox:
    """``with Sandbox() as sb:``: the venv (built on first use), the servers and the seed.

    ``data_dir=None``: a temp dir removed on stop; a given dir is kept and reused (the seed
    in its ``sandbox.json`` too). ``port=0``: any free port. A subclass starts its servers
    (:meth:`_start_services`) and stops them (:meth:`_stop_services`).
    """

    temp_prefix: ClassVar[str]
    database_name: ClassVar[str]  # without it in the data dir, sandbox.json is stale
    node_type: ClassVar[type[SandboxNode]] = SandboxNode

    def __init__(self, data_dir: Path | str | None, port: int, timeout: float,
                 report: Callable[[str], None] | None) -> None:
        self._requested_dir = Path(data_dir) if data_dir is not None else None
        self._port = port
        self._timeout = timeout
        self._report = report
        self._data_dir: Path | None = None
        self._owns_dir = False
        self.info: dict[str, Any] = {}
        self.python: Path | None = None
        self.timings: dict[str, float] = {}

    def _ensure_venv(self) -> Path:
        raise NotImplementedError

    def _start_services(self, data_dir: Path, python: Path, t1: float) -> None:
        """Start the servers, seed (or reuse the seed of ``_read_previous()``), set ``info``;
        ``t1``: when the venv was ready (for ``timings``)."""
        raise NotImplementedError

    def _stop_services(self) -> None:
        raise NotImplementedError

    def start(self: _Sandbox) -> _Sandbox:
        t0 = time.monotonic()
        self.python = self._ensure_venv()
        t1 = time.monotonic()
        self.timings["venv"] = t1 - t0
        if self._requested_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix=self.temp_prefix))
            self._owns_dir = True
        else:
            self._data_dir = self._requested_dir.resolve()
            self._data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self._data_dir, 0o700)
        try:
            self._start_services(self._data_dir, self.python, t1)
            write_private(self._data_dir / SANDBOX_FILE, json.dumps(self.info, indent=1))
        except BaseException:
            self.stop()
            raise
        return self

    def _read_previous(self) -> dict[str, Any]:
        assert self._data_dir is not None
        path = self._data_dir / SANDBOX_FILE
        if not path.exists() or not (self._data_dir / self.database_name).exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def stop(self) -> None:
        self._stop_services()
        if self._owns_dir and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._owns_dir = False

    def __enter__(self: _Sandbox) -> _Sandbox:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- what clients need ------------------------------------------------------------

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
        return self.node_type(name=name, id=entry["id"], api_key=entry["api_key"],
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
