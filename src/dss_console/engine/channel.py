"""The engine's local channel: how console windows talk to an engine running in another
process (the headless worker, or the engine a console started in the background).

A Unix domain socket in a private per-user directory (0700, the socket itself 0600), named
after the data dir, server and instance the engine serves — one engine per triple, as the
instance lock says. A peer must be the same user (checked with SO_PEERCRED where the OS has
it) and must first present the token the engine wrote to a 0600 file beside the socket.

Messages are lines of JSON (`wire`): requests `{"id", "op", "args"}`, replies `{"id", "ok",
"result" | "error"}`, and pushed events `{"event": ...}`. Output lines reach a peer only for
the jobs it watches, and at most `output_rate` lines a second per job: the rest is counted in
`JobOutput.skipped` (every line is in the log file on disk anyway), so a chatty job never
floods a window.

Qt-free.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import queue
import secrets
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dss_console.engine import wire
from dss_console.engine.events import Event, JobOutput
from dss_console.paths import write_private

log = logging.getLogger(__name__)

# 2: the hello names the engine's "role" (was "kind") and carries its source's presentation;
# job snapshots carry their view.
# 3: the operator's gate: waiting_jobs, approval, approve_job, reject_job, release_job;
# EngineStatus.waiting; the states awaiting_approval and awaiting_release.
PROTOCOL_VERSION = 3
HELLO_TIMEOUT = 5.0
OUTPUT_RATE = 2000  # lines per second per watched job, per peer
MAX_QUEUED = 20_000  # messages queued for a peer that does not read: then it is dropped
MAX_LINE = 64 * 1024 * 1024


@dataclass(frozen=True)
class ChannelPaths:
    socket: Path
    token: Path
    info: Path


# engine-<20 hex>.sock is 36 characters: what is left of the ~100 a socket path may have.
SOCKET_DIR_MAX = 60


def runtime_dir() -> Path:
    """A private directory for sockets: $XDG_RUNTIME_DIR/dss-console, else one in the temp
    dir owned by this user (refused if someone else owns it)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    uid = os.getuid() if hasattr(os, "getuid") else 0
    if base and os.path.isdir(base):
        path = Path(base) / "dss-console"
    else:
        path = Path(tempfile.gettempdir()) / f"dss-console-{uid}"
    if len(str(path)) > SOCKET_DIR_MAX and os.path.isdir("/tmp"):
        # A socket's path has a hard limit (108 bytes on Linux, 104 on macOS): a long
        # TMPDIR (macOS's /var/folders/…, a job scheduler's) would leave no room for it.
        path = Path("/tmp") / f"dss-console-{uid}"
    path.mkdir(mode=0o700, exist_ok=True)
    st = path.stat()
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise ChannelError(f"{path} belongs to another user; set XDG_RUNTIME_DIR to a private "
                           "directory")
    os.chmod(path, 0o700)
    return path


def channel_paths(data_dir: Path, server: str, instance: str) -> ChannelPaths:
    key = f"{Path(data_dir).resolve()}\0{server}\0{instance}".encode()
    # Hashed: a socket path must stay under ~100 bytes whatever the data dir is.
    name = "engine-" + hashlib.sha256(key).hexdigest()[:20]
    folder = runtime_dir()
    return ChannelPaths(folder / f"{name}.sock", folder / f"{name}.token",
                        folder / f"{name}.json")


class ChannelError(Exception):
    """The channel cannot be set up or used; the message says why."""


def peer_uid(conn: socket.socket) -> int | None:
    """The user id of the process on the other end, where the OS tells (Linux)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    creds = conn.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


class EngineChannel:
    """Serves one engine to the windows that attach. `handlers` maps an operation name to
    a callable taking the request's arguments; what it returns (or raises, in words) is the
    reply."""

    def __init__(self, paths: ChannelPaths, handlers: dict[str, Callable[..., Any]],
                 subscribe: Callable[[Callable[[Event], None]], Callable[[], None]], *,
                 info: dict[str, Any] | None = None, output_rate: int = OUTPUT_RATE,
                 error_kind: Callable[[BaseException], str] | None = None):
        self.paths = paths
        self.handlers = handlers
        self.info = dict(info or {})
        self.output_rate = output_rate
        self.error_kind = error_kind or (lambda exc: type(exc).__name__)
        self._subscribe = subscribe
        self._unsubscribe: Callable[[], None] | None = None
        self._token = secrets.token_hex(32)
        self._listener: socket.socket | None = None
        self._peers: set[_Peer] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="channel-request")
        self._accept_thread = threading.Thread(target=self._accept, name="channel",
                                               daemon=True)
        self._closed = threading.Event()
        self.on_close: list[Callable[[], None]] = []  # run when the channel closes

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Listen. The caller holds the instance lock, so a socket file left at this path
        belongs to an engine that died: it is replaced."""
        with contextlib.suppress(FileNotFoundError):
            self.paths.socket.unlink()
        write_private(self.paths.token, self._token)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is created 0600: no window with more
        try:
            listener.bind(str(self.paths.socket))
        finally:
            os.umask(old_umask)
        listener.listen(16)
        self._listener = listener
        write_private(self.paths.info, json.dumps({**self.info, "pid": os.getpid(),
                                                    "started": time.time()}))
        self._unsubscribe = self._subscribe(self._on_event)
        self._accept_thread.start()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for callback in self.on_close:
            callback()
        if self._unsubscribe:
            self._unsubscribe()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        for path in (self.paths.socket, self.paths.token, self.paths.info):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with self._lock:
            peers = list(self._peers)
        for peer in peers:
            peer.close("the engine stopped")
        self._accept_thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def peer_count(self) -> int:
        with self._lock:
            return sum(1 for p in self._peers if p.authenticated)

    def broadcast(self, message: dict[str, Any]) -> None:
        with self._lock:
            peers = list(self._peers)
        for peer in peers:
            if peer.authenticated:
                peer.send(message)

    # -- internals --------------------------------------------------------------------------
    def _accept(self) -> None:
        assert self._listener is not None
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            peer = _Peer(self, conn)
            with self._lock:
                self._peers.add(peer)
            peer.start()

    def _forget(self, peer: _Peer) -> None:
        with self._lock:
            self._peers.discard(peer)

    def _on_event(self, event: Event) -> None:
        with self._lock:
            peers = list(self._peers)
        for peer in peers:
            if peer.authenticated:
                peer.offer(event)

    def _check_token(self, token: object) -> bool:
        return isinstance(token, str) and hmac.compare_digest(token, self._token)


class _Peer:
    """One attached window: a reader (requests), a writer (replies and events)."""

    def __init__(self, channel: EngineChannel, conn: socket.socket):
        self.channel = channel
        self.conn = conn
        self.authenticated = False
        self._out: queue.Queue[bytes | None] = queue.Queue()
        self._watched: set[int] = set()
        self._budget: dict[int, tuple[float, float]] = {}  # job -> (tokens, last refill)
        self._skipped: dict[int, int] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._reader = threading.Thread(target=self._read, name="channel-peer", daemon=True)
        self._writer = threading.Thread(target=self._write, name="channel-peer-out",
                                        daemon=True)

    def start(self) -> None:
        self._reader.start()
        self._writer.start()

    def close(self, why: str) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        log.debug("channel peer closed: %s", why)
        self._out.put(None)
        with contextlib.suppress(OSError):
            self.conn.shutdown(socket.SHUT_RDWR)
        self.channel._forget(self)

    def send(self, message: dict[str, Any]) -> None:
        if self._closed:
            return
        if self._out.qsize() > MAX_QUEUED:
            self.close("the window does not read its messages")
            return
        try:
            self._out.put(wire.dumps(message))
        except (wire.WireError, ValueError) as exc:
            log.warning("channel: cannot send %s: %s", message.get("op"), exc)

    def offer(self, event: Event) -> None:
        if isinstance(event, JobOutput):
            rated = self._rated(event)
            if rated is None:
                return
            event = rated
        self.send({"event": event})

    def _rated(self, event: JobOutput) -> JobOutput | None:
        job = event.job_id
        with self._lock:
            if job not in self._watched:
                return None
            now = time.monotonic()
            rate = self.channel.output_rate
            tokens, last = self._budget.get(job, (float(rate), now))
            tokens = min(float(rate), tokens + (now - last) * rate)
            lines = event.lines
            skipped = self._skipped.pop(job, 0) + event.skipped
            if len(lines) > tokens:
                keep = int(tokens)
                skipped += len(lines) - keep
                lines = lines[len(lines) - keep:] if keep else ()
            self._budget[job] = (tokens - len(lines), now)
            if not lines:
                self._skipped[job] = skipped
                return None
        return JobOutput(job_id=job, lines=tuple(lines), skipped=skipped, at=event.at)

    def _read(self) -> None:
        stream = self.conn.makefile("rb")
        try:
            self.conn.settimeout(HELLO_TIMEOUT)
            if not self._hello(stream.readline(MAX_LINE)):
                return
            self.conn.settimeout(None)
            for line in stream:
                self._request(line)
        except OSError:
            pass
        finally:
            self.close("the window went away")

    def _hello(self, line: bytes) -> bool:
        uid = peer_uid(self.conn)
        if uid is not None and hasattr(os, "getuid") and uid != os.getuid():
            self._refuse("this engine belongs to another user")
            return False
        try:
            message = wire.loads(line)
        except wire.WireError:
            self._refuse("expected a hello")
            return False
        if message.get("op") != "hello" or not self.channel._check_token(message.get("token")):
            self._refuse("not allowed: the engine's token is missing or wrong")
            return False
        self.authenticated = True
        self.send({"id": message.get("id"), "ok": True,
                   "result": {**self.channel.info, "version": PROTOCOL_VERSION,
                              "pid": os.getpid()}})
        return True

    def _refuse(self, why: str) -> None:
        with contextlib.suppress(OSError):
            self.conn.sendall(wire.dumps({"ok": False, "error": why, "kind": "refused"}))
        self.close(why)

    def _request(self, line: bytes) -> None:
        try:
            message = wire.loads(line)
        except wire.WireError as exc:
            self.send({"ok": False, "error": str(exc), "kind": "protocol"})
            return
        request_id = message.get("id")
        op = message.get("op")
        args = message.get("args") or {}
        if op == "watch":
            with self._lock:
                self._watched = {int(j) for j in args.get("job_ids", [])}
            self.send({"id": request_id, "ok": True, "result": None})
            return
        handler = self.channel.handlers.get(str(op))
        if handler is None or not isinstance(args, dict):
            self.send({"id": request_id, "ok": False, "error": f"unknown operation {op!r}",
                       "kind": "protocol"})
            return
        self.channel._pool.submit(self._run, request_id, handler, args)

    def _run(self, request_id: object, handler: Callable[..., Any],
             args: dict[str, Any]) -> None:
        try:
            result = handler(**args)
        except Exception as exc:
            self.send({"id": request_id, "ok": False, "error": str(exc),
                       "kind": self.channel.error_kind(exc)})
            return
        self.send({"id": request_id, "ok": True, "result": result})

    def _write(self) -> None:
        while True:
            try:
                data = self._out.get(timeout=0.5)
            except queue.Empty:
                self._flush_skipped()
                continue
            if data is None:
                break
            try:
                self.conn.sendall(data)
            except OSError:
                break
        self.close("the window went away")
        with contextlib.suppress(OSError):
            self.conn.close()

    def _flush_skipped(self) -> None:
        """Lines skipped on a job that went quiet are still announced."""
        with self._lock:
            pending = {job: n for job, n in self._skipped.items() if n}
            self._skipped.clear()
        for job, n in pending.items():
            self.send({"event": JobOutput(job_id=job, lines=(), skipped=n)})
