"""Run a real itksnap-dss-server in a child process bound to 127.0.0.1.

Layout inside the data dir (shared by every server started on it)::

    <data_dir>/alfabis.sqlite3     the SQLite store
    <data_dir>/datastore/          ticket files, attachments, service clones
    <data_dir>/tmp/                the servers' TMPDIR
    <data_dir>/logs/<name>.log     each server's stdout+stderr
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import site
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

import requests

import dss_console
from dss_console.sandbox.serve import BIND_HOST, LISTENING_PREFIX

SQLITE_NAME = "alfabis.sqlite3"
DATASTORE_NAME = "datastore"

_LISTENING_RE = re.compile(
    rb"^" + re.escape(LISTENING_PREFIX.encode()) + rb" (?P<host>[\d.]+):(?P<port>\d+)\r?$",
    re.MULTILINE,
)
_POLL_INTERVAL = 0.05
_LOG_TAIL_BYTES = 4000


class SandboxError(RuntimeError):
    """The sandbox server or its seeding failed."""


def sqlite_path_for(data_dir: Path) -> Path:
    return Path(data_dir) / SQLITE_NAME


def datastore_root_for(data_dir: Path) -> Path:
    return Path(data_dir) / DATASTORE_NAME


def server_command(args: Sequence[str]) -> list[str]:
    """argv that starts the serve entry point with ``args``.

    A frozen (PyInstaller) executable has no ``-m``; it dispatches a hidden CLI verb to
    :func:`dss_console.sandbox.serve.serve_main` instead.
    """
    if getattr(sys, "frozen", False):
        return [sys.executable, "_serve-sandbox-server", *args]
    return [sys.executable, "-m", "dss_console.sandbox.serve", *args]


def _package_root_for_child() -> str | None:
    """The directory holding dss_console, when the child would not find it on its own.

    The child must import this very dss_console even when the parent found it through a
    sys.path tweak (a source checkout, a test runner's rootdir). A site-packages install
    needs nothing, and putting site-packages on PYTHONPATH would rank it above the stdlib.
    """
    if getattr(sys, "frozen", False):
        return None
    root = Path(dss_console.__file__).resolve().parent.parent
    site_dirs = [*site.getsitepackages(), site.getusersitepackages()]
    if any(Path(d).resolve() == root for d in site_dirs if d):
        return None
    return str(root)


# Servers still running at interpreter exit are stopped here, so a test session or a CLI
# that forgets (or cannot reach) stop() does not leave servers behind.
_live_servers: set[DssServerProcess] = set()
_live_lock = threading.Lock()


def _stop_live_servers() -> None:
    with _live_lock:
        servers = list(_live_servers)
    for server in servers:
        # Exit-time cleanup: one failure must not keep the others running.
        with contextlib.suppress(Exception):
            server.stop()


atexit.register(_stop_live_servers)


class DssServerProcess:
    """One itksnap-dss-server child process on 127.0.0.1.

    ``start()`` returns once ``GET /api/services`` answers (any HTTP status: on a server
    that requires login it answers 401). ``stop()`` sends SIGTERM and kills after a grace
    period. Usable as a context manager; ``restart()`` brings it back on the same port.
    """

    def __init__(self, name: str | None = None) -> None:
        self._name = name
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._log_path: Path | None = None
        self._log_offset = 0
        self._port: int | None = None
        self._data_dir: Path | None = None
        self._noauth = False
        self._lock = threading.RLock()

    # -- properties ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        if self._name:
            return self._name
        return "admin" if self._noauth else "public"

    @property
    def port(self) -> int:
        if self._port is None:
            raise SandboxError(f"server {self.name!r} has not been started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{BIND_HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def noauth(self) -> bool:
        return self._noauth

    @property
    def data_dir(self) -> Path | None:
        return self._data_dir

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    # -- lifecycle ----------------------------------------------------------------------

    def start(
        self,
        data_dir: Path,
        port: int = 0,
        noauth: bool = False,
        *,
        wait: bool = True,
        timeout: float = 30.0,
    ) -> None:
        """Launch the server on ``data_dir``'s store; port 0 picks a free port.

        With ``wait=False`` only the process is launched; call :meth:`wait_ready` later
        (lets a caller overlap the start-up of several servers with other work).
        """
        with self._lock:
            if self.running:
                raise SandboxError(f"server {self.name!r} is already running at pid {self.pid}")
            self._close_log()
            data_dir = Path(data_dir).resolve()
            data_dir.mkdir(parents=True, exist_ok=True)
            self._data_dir = data_dir
            self._noauth = noauth
            self._port = None

            logs = data_dir / "logs"
            logs.mkdir(exist_ok=True)
            self._log_path = logs / f"{self.name}.log"
            # Appending keeps the history of a restarted server; the offset makes sure a
            # LISTENING line from the previous run is not mistaken for this one's.
            self._log_file = open(self._log_path, "ab")  # noqa: SIM115 - owned until stop()
            self._log_offset = self._log_file.tell()

            args = [
                "--port",
                str(port),
                "--sqlite-path",
                str(sqlite_path_for(data_dir)),
                "--datastore-root",
                str(datastore_root_for(data_dir)),
                "--tmp-dir",
                str(data_dir / "tmp"),
                "--exit-with-parent",
                str(os.getpid()),
            ]
            if noauth:
                args.append("--noauth")

            env = {k: v for k, v in os.environ.items() if not k.startswith("ALFABIS_")}
            root = _package_root_for_child()
            if root is not None:
                paths = [root, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
                env["PYTHONPATH"] = os.pathsep.join(paths)
            # The log is a file, so without this the child's prints sit in a block buffer
            # and the log tail in an error message would be empty.
            env["PYTHONUNBUFFERED"] = "1"
            try:
                # The log file, not a pipe, takes the output: nobody has to drain it, so a
                # chatty server can never block on a full pipe.
                self._proc = subprocess.Popen(
                    server_command(args),
                    stdin=subprocess.DEVNULL,
                    stdout=self._log_file,
                    stderr=subprocess.STDOUT,
                    cwd=data_dir,
                    env=env,
                )
            except OSError as exc:
                self._close_log()
                raise SandboxError(f"cannot launch the {self.name} DSS server: {exc}") from exc
            with _live_lock:
                _live_servers.add(self)
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the server answers HTTP; SandboxError (with log tail) otherwise."""
        deadline = time.monotonic() + timeout
        with requests.Session() as http:
            # A proxy from the environment must not see (or swallow) loopback traffic.
            http.trust_env = False
            while True:
                proc = self._proc
                if proc is None:
                    raise SandboxError(f"server {self.name!r} has not been started")
                code = proc.poll()
                if code is not None:
                    self._forget()
                    raise SandboxError(
                        f"the {self.name} DSS server exited with code {code} during start-up;"
                        f" log tail:\n{self.log_tail()}"
                    )
                if self._port is None:
                    self._port = self._read_listening_port()
                if self._port is not None:
                    try:
                        http.get(f"{self.url}/api/services", timeout=2.0)
                        return
                    except requests.RequestException:
                        pass
                if time.monotonic() >= deadline:
                    self.stop()
                    raise SandboxError(
                        f"the {self.name} DSS server did not answer within {timeout:.0f} s;"
                        f" log tail:\n{self.log_tail()}"
                    )
                time.sleep(_POLL_INTERVAL)

    def terminate(self) -> None:
        """Send SIGTERM without waiting (stop several servers at once, then stop() each)."""
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                proc.terminate()

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Idempotent."""
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

    def restart(self, *, timeout: float = 30.0) -> None:
        """Stop and start again on the same data dir and port (simulates an outage)."""
        if self._data_dir is None or self._port is None:
            raise SandboxError(f"server {self.name!r} was never started")
        data_dir, port, noauth = self._data_dir, self._port, self._noauth
        self.stop()
        self.start(data_dir, port=port, noauth=noauth, timeout=timeout)

    def log_tail(self, max_bytes: int = _LOG_TAIL_BYTES) -> str:
        """The end of this run's log (for error messages)."""
        if self._log_path is None:
            return ""
        try:
            with open(self._log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                start = max(self._log_offset, fh.tell() - max_bytes)
                fh.seek(start)
                return fh.read().decode("utf-8", errors="replace")
        except OSError as exc:
            return f"(log unreadable: {exc})"

    # -- internals ----------------------------------------------------------------------

    def _read_listening_port(self) -> int | None:
        assert self._log_path is not None
        try:
            with open(self._log_path, "rb") as fh:
                fh.seek(self._log_offset)
                text = fh.read()
        except OSError:
            return None
        match = _LISTENING_RE.search(text)
        if match is None:
            return None
        if match.group("host").decode() != BIND_HOST:
            raise SandboxError(f"server {self.name!r} bound {match.group('host')!r}, not loopback")
        return int(match.group("port"))

    def _forget(self) -> None:
        # The port is kept so restart() can reuse it and url stays meaningful in messages.
        self._close_log()
        with _live_lock:
            _live_servers.discard(self)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> DssServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        port = self._port if self._port is not None else "?"
        return f"<DssServerProcess {self.name} {BIND_HOST}:{port} {state}>"
