"""The vantage6 proxy for a sandbox without network: a unix socket bound into the sandbox
and a relay inside it that listens on the sandbox's own loopback.

``--unshare-net`` gives the sandbox a loopback of its own, so ``127.0.0.1:PORT`` no longer
reaches the worker's subtask proxy. Outside, :class:`SocketForwarder` listens on a unix
socket in a private directory and forwards each connection to ``127.0.0.1:PORT``; the
directory is shown in the sandbox at :data:`SANDBOX_SOCKET_DIR`. Inside, :func:`relay_argv`
starts this module first: it listens on ``127.0.0.1:PORT`` (the same port, so the
algorithm's ``HOST``/``PORT`` stay as they are), forwards each connection to the socket,
runs the command as its child and exits with its status. Nothing else on the host's
loopback (the DSS server's port, any other service) becomes reachable; the proxy's token
check stays the gate.

    python -I -m dss_console.isolation.relay PORT SOCKET -- COMMAND...
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from dss_console.isolation.sandbox import Bind

SANDBOX_SOCKET_DIR = "/run/dss-proxy"
SOCKET_NAME = "proxy.sock"
_CHUNK = 64 * 1024


def relay_argv(port: int, argv: Sequence[str], python: str | None = None) -> list[str]:
    """``argv`` behind the in-sandbox relay for the proxy on ``port``."""
    return [python or sys.executable, "-I", "-m", "dss_console.isolation.relay", str(port),
            f"{SANDBOX_SOCKET_DIR}/{SOCKET_NAME}", "--", *argv]


class SocketForwarder:
    """A unix socket (in a new 0700 directory) forwarding to ``127.0.0.1:port``; ``bind``
    is what to hand to ``wrap(extra_binds=…)``. One per run; ``close()`` removes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.directory = Path(tempfile.mkdtemp(prefix="dss-proxy-"))
        self.path = self.directory / SOCKET_NAME
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(self.path))
        self._server.listen(64)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="dss-proxy-socket",
                                        daemon=True)
        self._thread.start()

    @property
    def bind(self) -> Bind:
        return Bind(str(self.directory), writable=True, target=SANDBOX_SOCKET_DIR)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            _pair(client, lambda: socket.create_connection(("127.0.0.1", self.port)))

    def close(self) -> None:
        self._closed.set()
        # shutdown() wakes the accept() that close() alone would leave blocked.
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self._thread.join(timeout=5)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> SocketForwarder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pair(client: socket.socket, connect: Callable[[], socket.socket]) -> None:
    def run() -> None:
        try:
            upstream = connect()
        except OSError:
            client.close()
            return
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join()
        upstream.close()
        client.close()

    threading.Thread(target=run, daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(_CHUNK):
            sink.sendall(data)
    # Half-close: the other direction may still carry the response.
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def main(args: Sequence[str]) -> int:
    if len(args) < 4 or args[2] != "--":
        print("usage: relay PORT SOCKET -- COMMAND...", file=sys.stderr)
        return 2
    port, path, command = int(args[0]), args[1], list(args[3:])
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)  # listening before the command starts: its first call finds us

    def connect() -> socket.socket:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(path)
        return upstream

    def accept() -> None:
        while True:
            client, _ = listener.accept()
            _pair(client, connect)

    threading.Thread(target=accept, daemon=True).start()
    try:
        child = subprocess.Popen(command)
    except OSError as exc:
        print(f"cannot start {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127

    def forward(signum: int, _frame: FrameType | None) -> None:
        # The relay must outlive its command: bwrap ends the sandbox when it exits.
        child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    code = child.wait()
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
