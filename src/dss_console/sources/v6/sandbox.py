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

import atexit
import contextlib
import importlib.resources
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import requests

from dss_console.paths import write_private
from dss_console.sources.v6 import crypto
from dss_console.sources.v6.venv import V6_VERSION, V6SandboxError, ensure_venv

BIND_HOST = "127.0.0.1"
API_PATH = "/api"
LISTENING_PREFIX = "V6_SERVER_LISTENING"
SANDBOX_FILE = "sandbox.json"
DEMO_IMAGE = "v6-demo-mean"
DEMO_PACKAGE = "v6_demo_mean"
ROOT_PASSWORD_ENV = "V6_SANDBOX_ROOT_PASSWORD"

_LISTENING_RE = re.compile(
    rb"^" + re.escape(LISTENING_PREFIX.encode()) + rb" (?P<host>[\d.]+):(?P<port>\d+)\r?$",
    re.MULTILINE)
_POLL = 0.05
_HTTP_TIMEOUT = 30.0

_live: set[V6ServerProcess] = set()
_live_lock = threading.Lock()


@atexit.register
def _stop_live() -> None:
    with _live_lock:
        servers = list(_live)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


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


class V6ServerProcess:
    """One vantage6-server child on 127.0.0.1; ``restart()`` keeps the port (outage tests)."""

    def __init__(self, python: Path) -> None:
        self.python = python
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_path: Path | None = None
        self._log_offset = 0
        self._port: int | None = None
        self._data_dir: Path | None = None
        self._root_password = ""
        self._lock = threading.RLock()

    @property
    def port(self) -> int:
        if self._port is None:
            raise V6SandboxError("the vantage6 server has not been started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL without the API path (what researchers and nodes are told)."""
        return f"http://{BIND_HOST}:{self.port}"

    @property
    def api_url(self) -> str:
        return self.url + API_PATH

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    def start(self, data_dir: Path, port: int = 0, *, root_password: str,
              timeout: float = 90.0) -> None:
        with self._lock:
            if self.running:
                raise V6SandboxError("the vantage6 server is already running")
            data_dir = Path(data_dir).resolve()
            self._data_dir = data_dir
            self._root_password = root_password
            logs = data_dir / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            config = _write_server_config(data_dir)
            self._log_path = logs / "server-stdout.log"
            self._log = open(self._log_path, "ab")  # noqa: SIM115 - owned until stop()
            self._log_offset = self._log.tell()
            self._port = None
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith(("V6_", "VANTAGE6_", "PYTHON"))}
            env[ROOT_PASSWORD_ENV] = root_password
            env["PYTHONUNBUFFERED"] = "1"
            # appdirs-based defaults of vantage6 must land in the data dir, not in $HOME.
            for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
                env[name] = str(data_dir / "xdg" / name.lower())
            try:
                self._proc = subprocess.Popen(
                    [str(self.python), str(server_script()), "--config", str(config),
                     "--port", str(port), "--exit-with-parent", str(os.getpid())],
                    stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                    cwd=data_dir, env=env, start_new_session=True)
            except OSError as exc:
                self._close_log()
                raise V6SandboxError(f"cannot start the vantage6 server: {exc}") from exc
            with _live_lock:
                _live.add(self)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until ``GET /api/health`` answers 200; V6SandboxError with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        with requests.Session() as http:
            http.trust_env = False
            while True:
                proc = self._proc
                if proc is None:
                    raise V6SandboxError("the vantage6 server has not been started")
                code = proc.poll()
                if code is not None:
                    self._forget()
                    raise V6SandboxError(
                        f"the vantage6 server exited with code {code} during start-up; "
                        f"log tail:\n{self.log_tail()}")
                if self._port is None:
                    self._port = self._read_port()
                if self._port is not None:
                    with contextlib.suppress(requests.RequestException):
                        if http.get(self.api_url + "/health", timeout=2.0).status_code == 200:
                            return
                if time.monotonic() >= deadline:
                    self.stop()
                    raise V6SandboxError(
                        f"the vantage6 server did not answer /api/health within {timeout:.0f} s;"
                        f" log tail:\n{self.log_tail()}")
                time.sleep(_POLL)  # no event to wait on: the child is another process

    def stop(self, grace: float = 5.0) -> None:
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self._forget()

    def restart(self, *, timeout: float = 90.0) -> None:
        """Stop and start on the same data dir and port (the URL stays valid)."""
        if self._data_dir is None or self._port is None:
            raise V6SandboxError("the vantage6 server was never started")
        data_dir, port = self._data_dir, self._port
        self.stop()
        self.start(data_dir, port, root_password=self._root_password, timeout=timeout)

    def log_tail(self, max_bytes: int = 4000) -> str:
        if self._log_path is None:
            return ""
        try:
            with open(self._log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(self._log_offset, fh.tell() - max_bytes))
                return fh.read().decode("utf-8", errors="replace")
        except OSError as exc:
            return f"(log unreadable: {exc})"

    def _read_port(self) -> int | None:
        assert self._log_path is not None
        try:
            with open(self._log_path, "rb") as fh:
                fh.seek(self._log_offset)
                match = _LISTENING_RE.search(fh.read())
        except OSError:
            return None
        if match is None:
            return None
        if match.group("host").decode() != BIND_HOST:
            raise V6SandboxError("the vantage6 server bound a non-loopback address")
        return int(match.group("port"))

    def _forget(self) -> None:
        self._close_log()
        with _live_lock:
            _live.discard(self)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def _write_server_config(data_dir: Path) -> Path:
    # The JWT secret is kept with the data so tokens survive a restart (outage tests).
    secret_file = data_dir / "jwt_secret"
    if not secret_file.exists():
        write_private(secret_file, secrets.token_hex(32))
    jwt_secret = secret_file.read_text(encoding="utf-8").strip()
    db = data_dir / "server.sqlite"
    config = {
        "description": "dss-console v6 sandbox",
        "ip": BIND_HOST,
        "port": 0,
        "api_path": API_PATH,
        "uri": f"sqlite:///{db}",
        "allow_drop_all": False,
        "jwt_secret_key": jwt_secret,
        "directories": {"log": str(data_dir / "logs"), "data": str(data_dir)},
        "logging": {
            "level": "INFO", "file": "server.log", "use_console": True, "backup_count": 1,
            "max_size": 4096, "datefmt": "%H:%M:%S",
            "format": "%(asctime)s - %(name)-14s - %(levelname)-8s - %(message)s",
            "loggers": [{"name": n, "level": "warning"} for n in
                        ("urllib3", "socketio.server", "engineio.server", "sqlalchemy.engine")],
        },
    }
    path = data_dir / "server.yaml"
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
