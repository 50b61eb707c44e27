"""Run a real itksnap-dss-server in a child process bound to 127.0.0.1.

Layout inside the data dir (shared by every server started on it)::

    <data_dir>/alfabis.sqlite3     the SQLite store
    <data_dir>/datastore/          ticket files, attachments, service clones
    <data_dir>/tmp/                the servers' TMPDIR
    <data_dir>/logs/<name>.log     each server's stdout+stderr
"""

from __future__ import annotations

import os
import site
import sys
from collections.abc import Sequence
from pathlib import Path

import dss_console
from dss_console.sandbox.serve import BIND_HOST, LISTENING_PREFIX
from dss_console.server_process import ServerProcess, child_environment

SQLITE_NAME = "alfabis.sqlite3"
DATASTORE_NAME = "datastore"


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


class DssServerProcess(ServerProcess):
    """One itksnap-dss-server child process on 127.0.0.1.

    ``start()`` returns once ``GET /api/services`` answers (any HTTP status: on a server
    that requires login it answers 401). ``stop()`` sends SIGTERM and kills after a grace
    period. Usable as a context manager; ``restart()`` brings it back on the same port.
    """

    listening_prefix = LISTENING_PREFIX
    probe_path = "/api/services"
    probe_needs_ok = False
    error_type = SandboxError
    default_timeout = 30.0
    new_session = False

    def __init__(self, name: str | None = None) -> None:
        super().__init__()
        self._name = name
        self._noauth = False

    @property
    def name(self) -> str:
        if self._name:
            return self._name
        return "admin" if self._noauth else "public"

    @property
    def what(self) -> str:
        return f"the {self.name} DSS server"

    @property
    def log_name(self) -> str:
        return f"{self.name}.log"

    @property
    def noauth(self) -> bool:
        return self._noauth

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
            self._refuse_if_running()
            self._noauth = noauth
        self._launch(data_dir, port, wait=wait, timeout=timeout)

    def _command(self, data_dir: Path, port: int) -> tuple[list[str], dict[str, str]]:
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
        if self._noauth:
            args.append("--noauth")
        env = child_environment(("ALFABIS_",))
        root = _package_root_for_child()
        if root is not None:
            paths = [root, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
            env["PYTHONPATH"] = os.pathsep.join(paths)
        return server_command(args), env

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        port = self._port if self._port is not None else "?"
        return f"<DssServerProcess {self.name} {BIND_HOST}:{port} {state}>"
