"""One vantage6 HQ 5.0.3 child process on 127.0.0.1, behind an identity server.

The 5.x counterpart of the 4.x sandbox's ``V6ServerProcess``: the venv's Python runs
``resources/v6x5/hq_script.py``; HQ's configuration (SQLite, ``api_path: /hq``, logs in the
data dir) is written 0600; the identity server's address and HQ's admin client arrive as
``KEYCLOAK_*`` variables, never on the command line. HQ reads the realm's public key once at
start and exits when it cannot: the identity server must answer before :meth:`start`.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.resources
import json
import os
import re
import secrets
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import requests

from dss_console.paths import write_private
from dss_console.sources.v6.venv import V6SandboxError

BIND_HOST = "127.0.0.1"
API_PATH = "/hq"
LISTENING_PREFIX = "V6X5_HQ_LISTENING"
_LISTENING_RE = re.compile(
    rb"^" + re.escape(LISTENING_PREFIX.encode()) + rb" (?P<host>[\d.]+):(?P<port>\d+)\r?$",
    re.MULTILINE)
_POLL = 0.05

_live: set[HqProcess] = set()
_live_lock = threading.Lock()


@atexit.register
def _stop_live() -> None:
    with _live_lock:
        processes = list(_live)
    for process in processes:
        with contextlib.suppress(Exception):
            process.stop()


def hq_script() -> Path:
    """A resource, not a module: it imports vantage6, and a frozen bundle carries resources
    as files but modules only compiled."""
    return Path(str(importlib.resources.files("dss_console.resources") / "v6x5"
                    / "hq_script.py"))


@dataclass(frozen=True)
class IdentitySettings:
    """What HQ needs to reach its Keycloak (or the stand-in): ``KEYCLOAK_*``."""

    url: str
    realm: str
    admin_client: str
    admin_client_secret: str
    admin_username: str  # HQ's root user (also its username in the realm)
    admin_password: str

    def environment(self) -> dict[str, str]:
        return {"KEYCLOAK_URL": self.url, "KEYCLOAK_REALM": self.realm,
                "KEYCLOAK_ADMIN_CLIENT": self.admin_client,
                "KEYCLOAK_ADMIN_CLIENT_SECRET": self.admin_client_secret,
                "KEYCLOAK_ADMIN_USERNAME": self.admin_username,
                "KEYCLOAK_ADMIN_PASSWORD": self.admin_password}


class HqProcess:
    """``start(data_dir, identity)``; ``restart()`` keeps the port (outage tests)."""

    def __init__(self, python: Path) -> None:
        self.python = python
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_path: Path | None = None
        self._log_offset = 0
        self._port: int | None = None
        self._data_dir: Path | None = None
        self._identity: IdentitySettings | None = None
        self._lock = threading.RLock()

    @property
    def port(self) -> int:
        if self._port is None:
            raise V6SandboxError("HQ has not been started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL without the API path (socket.io lives here)."""
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

    def start(self, data_dir: Path, identity: IdentitySettings, port: int = 0, *,
              timeout: float = 120.0) -> None:
        with self._lock:
            if self.running:
                raise V6SandboxError("HQ is already running")
            data_dir = Path(data_dir).resolve()
            self._data_dir, self._identity = data_dir, identity
            logs = data_dir / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            config = _write_config(data_dir)
            self._log_path = logs / "hq-stdout.log"
            self._log = open(self._log_path, "ab")  # noqa: SIM115 - owned until stop()
            self._log_offset = self._log.tell()
            self._port = None
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith(("V6_", "VANTAGE6_", "PYTHON", "KEYCLOAK_"))}
            env.update(identity.environment())
            env["PYTHONUNBUFFERED"] = "1"
            # appdirs-based defaults of vantage6 must land in the data dir, not in $HOME.
            for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
                env[name] = str(data_dir / "xdg" / name.lower())
            try:
                self._proc = subprocess.Popen(
                    [str(self.python), str(hq_script()), "--config", str(config),
                     "--port", str(port), "--exit-with-parent", str(os.getpid())],
                    stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                    cwd=data_dir, env=env, start_new_session=True)
            except OSError as exc:
                self._close_log()
                raise V6SandboxError(f"cannot start vantage6 HQ: {exc}") from exc
            with _live_lock:
                _live.add(self)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until ``GET /hq/health`` answers 200; V6SandboxError with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        with requests.Session() as http:
            http.trust_env = False
            while True:
                proc = self._proc
                if proc is None:
                    raise V6SandboxError("HQ has not been started")
                code = proc.poll()
                if code is not None:
                    self._forget()
                    raise V6SandboxError(f"vantage6 HQ exited with code {code} during start-up;"
                                         f" log tail:\n{self.log_tail()}")
                if self._port is None:
                    self._port = self._read_port()
                if self._port is not None:
                    with contextlib.suppress(requests.RequestException):
                        if http.get(self.api_url + "/health", timeout=2.0).status_code == 200:
                            return
                if time.monotonic() >= deadline:
                    self.stop()
                    raise V6SandboxError(f"vantage6 HQ did not answer {API_PATH}/health within "
                                         f"{timeout:.0f} s; log tail:\n{self.log_tail()}")
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

    def restart(self, *, timeout: float = 120.0) -> None:
        """Stop and start on the same data dir and port (the URL stays valid)."""
        if self._data_dir is None or self._port is None or self._identity is None:
            raise V6SandboxError("HQ was never started")
        data_dir, port, identity = self._data_dir, self._port, self._identity
        self.stop()
        self.start(data_dir, identity, port, timeout=timeout)

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
            raise V6SandboxError("vantage6 HQ bound a non-loopback address")
        return int(match.group("port"))

    def _forget(self) -> None:
        self._close_log()
        with _live_lock:
            _live.discard(self)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def _write_config(data_dir: Path) -> Path:
    # HQ signs container tokens with this secret: kept with the data, so they survive a
    # restart (outage tests).
    secret_file = data_dir / "jwt_secret"
    if not secret_file.exists():
        write_private(secret_file, secrets.token_hex(32))
    config = {
        "description": "dss-console vantage6 5.x sandbox",
        "port": 0,
        "api_path": API_PATH,
        "uri": f"sqlite:///{data_dir / 'hq.sqlite'}",
        "allow_drop_all": False,
        "jwt_secret_key": secret_file.read_text(encoding="utf-8").strip(),
        "directories": {"log": str(data_dir / "logs"), "data": str(data_dir)},
        "logging": {
            "level": "INFO", "file": "hq.log", "use_console": True, "backup_count": 1,
            "max_size": 4096, "datefmt": "%H:%M:%S",
            "format": "%(asctime)s - %(name)-14s - %(levelname)-8s - %(message)s",
            "loggers": [{"name": n, "level": "warning"} for n in
                        ("urllib3", "socketio.server", "engineio.server", "sqlalchemy.engine")],
        },
    }
    path = data_dir / "hq.yaml"
    # JSON is valid YAML, and the console's venv has no YAML writer.
    write_private(path, json.dumps(config, indent=1))
    return path
