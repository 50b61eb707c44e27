"""A server in a child process bound to 127.0.0.1: what every sandbox (the DSS one, vantage6
4.x and 5.x) does with its server.

The child prints ``<LISTENING_PREFIX> 127.0.0.1:<port>`` once its socket is bound (so port 0
works: the OS picks and the child says which). Its stdout and stderr go to
``<data_dir>/logs/<log_name>``, appended so a restarted server keeps its history; the offset
where this run began keeps an old run's LISTENING line from being taken for this one's. It is
ready once an HTTP probe answers. ``stop()`` sends SIGTERM, then SIGKILL after a grace period;
``restart()`` starts it again on the same data dir and port, so its URL stays valid (outage
tests). A subclass says how to run its server (:meth:`ServerProcess._command`) and names it
in error messages (:attr:`ServerProcess.what`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, ClassVar, TypeVar

import requests

BIND_HOST = "127.0.0.1"
POLL_INTERVAL = 0.05
LOG_TAIL_BYTES = 4000
_XDG_DIRS = ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME")

# Servers still running at interpreter exit are stopped here, so a test session or a CLI
# that forgets (or cannot reach) stop() does not leave servers behind.
_live: set[ServerProcess] = set()
_live_lock = threading.Lock()


@atexit.register
def _stop_live() -> None:
    with _live_lock:
        servers = list(_live)
    for server in servers:
        # Exit-time cleanup: one failure must not keep the others running.
        with contextlib.suppress(Exception):
            server.stop()


def child_environment(drop_prefixes: tuple[str, ...], extra: Mapping[str, str] | None = None,
                      *, private_dirs_in: Path | None = None) -> dict[str, str]:
    """This process's environment without the variables starting with ``drop_prefixes``,
    plus ``extra``; with ``private_dirs_in``, the XDG base dirs point inside that dir (where
    appdirs-style defaults must land instead of $HOME)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop_prefixes)}
    env.update(extra or {})
    # The log is a file, so without this the child's prints sit in a block buffer and the
    # log tail in an error message would be empty.
    env["PYTHONUNBUFFERED"] = "1"
    if private_dirs_in is not None:
        for name in _XDG_DIRS:
            env[name] = str(private_dirs_in / "xdg" / name.lower())
    return env


_Server = TypeVar("_Server", bound="ServerProcess")


class ServerProcess:
    """One server child on 127.0.0.1 (module docstring); the class attributes say which.
    As a context manager, it stops on leaving."""

    listening_prefix: ClassVar[str]
    # GET <url><probe_path> tells when it is ready: with probe_needs_ok only a 200 counts,
    # otherwise any HTTP answer (a server that requires login answers 401).
    probe_path: ClassVar[str]
    probe_needs_ok: ClassVar[bool] = True
    error_type: ClassVar[type[Exception]] = RuntimeError
    default_timeout: ClassVar[float] = 30.0
    # A session of its own: a terminal's Ctrl-C reaches the console, which stops the server.
    new_session: ClassVar[bool] = True

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_path: Path | None = None
        self._log_offset = 0
        self._port: int | None = None
        self._data_dir: Path | None = None
        self._lock = threading.RLock()

    # -- what a subclass says ---------------------------------------------------------------

    @property
    def what(self) -> str:
        """The server in error messages ("the vantage6 server")."""
        raise NotImplementedError

    @property
    def log_name(self) -> str:
        """The log file's name in ``<data_dir>/logs``."""
        raise NotImplementedError

    def _command(self, data_dir: Path, port: int) -> tuple[list[str], dict[str, str]]:
        """argv and environment that run the server on ``data_dir`` and ``port`` (0: any);
        may write the server's configuration into ``data_dir`` (it exists)."""
        raise NotImplementedError

    # -- properties -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise self.error_type(f"{self.what} has not been started")
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
    def data_dir(self) -> Path | None:
        return self._data_dir

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    # -- lifecycle --------------------------------------------------------------------------

    def _refuse_if_running(self) -> None:
        if self.running:
            raise self.error_type(f"{self.what} is already running at pid {self.pid}")

    def _launch(self, data_dir: Path, port: int, *, wait: bool = True,
                timeout: float | None = None) -> None:
        """Start the child; with ``wait``, return once it answers (:meth:`wait_ready`)."""
        with self._lock:
            self._refuse_if_running()
            self._close_log()
            data_dir = Path(data_dir).resolve()
            logs = data_dir / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            self._data_dir = data_dir
            self._port = None
            argv, env = self._command(data_dir, port)
            self._log_path = logs / self.log_name
            self._log = open(self._log_path, "ab")  # noqa: SIM115 - owned until stop()
            self._log_offset = self._log.tell()
            try:
                # The log file, not a pipe, takes the output: nobody has to drain it, so a
                # chatty server can never block on a full pipe.
                self._proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                    cwd=data_dir, env=env, start_new_session=self.new_session)
            except OSError as exc:
                self._close_log()
                raise self.error_type(f"cannot start {self.what}: {exc}") from exc
            with _live_lock:
                _live.add(self)
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the probe answers; the error type, with the log tail, otherwise."""
        timeout = self.default_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with requests.Session() as http:
            # A proxy from the environment must not see (or swallow) loopback traffic.
            http.trust_env = False
            while True:
                proc = self._proc
                if proc is None:
                    raise self.error_type(f"{self.what} has not been started")
                code = proc.poll()
                if code is not None:
                    self._forget()
                    raise self.error_type(f"{self.what} exited with code {code} during start-up;"
                                          f" log tail:\n{self.log_tail()}")
                if self._port is None:
                    self._port = self._read_port()
                if self._port is not None:
                    with contextlib.suppress(requests.RequestException):
                        answer = http.get(self.url + self.probe_path, timeout=2.0)
                        if answer.status_code == 200 or not self.probe_needs_ok:
                            return
                if time.monotonic() >= deadline:
                    self.stop()
                    raise self.error_type(
                        f"{self.what} did not answer {self.probe_path} within {timeout:.0f} s;"
                        f" log tail:\n{self.log_tail()}")
                time.sleep(POLL_INTERVAL)  # no event to wait on: the child is another process

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

    def restart(self, *, timeout: float | None = None) -> None:
        """Stop and start again on the same data dir and port (the URL stays valid)."""
        if self._data_dir is None or self._port is None:
            raise self.error_type(f"{self.what} was never started")
        data_dir, port = self._data_dir, self._port
        self.stop()
        self._launch(data_dir, port, timeout=timeout)

    def log_tail(self, max_bytes: int = LOG_TAIL_BYTES) -> str:
        """The end of this run's log (for error messages)."""
        if self._log_path is None:
            return ""
        try:
            with open(self._log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(self._log_offset, fh.tell() - max_bytes))
                return fh.read().decode("utf-8", errors="replace")
        except OSError as exc:
            return f"(log unreadable: {exc})"

    # -- internals --------------------------------------------------------------------------

    def _read_port(self) -> int | None:
        assert self._log_path is not None
        try:
            with open(self._log_path, "rb") as fh:
                fh.seek(self._log_offset)
                text = fh.read()
        except OSError:
            return None
        listening = re.compile(rb"^" + re.escape(self.listening_prefix.encode())
                               + rb" (?P<host>[\d.]+):(?P<port>\d+)\r?$", re.MULTILINE)
        match = listening.search(text)
        if match is None:
            return None
        host = match.group("host").decode()
        if host != BIND_HOST:
            raise self.error_type(f"{self.what} bound {host}, not the loopback address")
        return int(match.group("port"))

    def _forget(self) -> None:
        # The port is kept so restart() can reuse it and url stays meaningful in messages.
        self._close_log()
        with _live_lock:
            _live.discard(self)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self: _Server) -> _Server:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
