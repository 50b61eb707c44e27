"""Child-process entry point: serve one itksnap-dss-server instance on 127.0.0.1.

Run as ``python -m dss_console.sandbox.serve --port N --sqlite-path P --datastore-root D
[--noauth]``, or call :func:`serve_main` (a frozen bundle reaches it through a hidden CLI
verb, because ``python -m`` does not exist there).

The server configures itself from ``sys.argv`` when ``itksnap_dss_server.app`` is imported,
so each process can host exactly one server and every setting must be in place before that
import. Its own ``--server`` mode binds 0.0.0.0, so the WSGI app is served here with cheroot
on the loopback interface only.

Once the socket is bound, ``DSS_SERVER_LISTENING 127.0.0.1:<port>`` is printed as the first
line on stdout (the server's import-time messages go to stderr); the parent reads it to learn
the port (``--port 0`` picks a free one). With stdout and stderr in one file, look for the
prefix rather than the first line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LISTENING_PREFIX = "DSS_SERVER_LISTENING"
BIND_HOST = "127.0.0.1"

# How often the main thread wakes up to notice a dead parent or a dead serve thread.
_WATCH_INTERVAL = 0.5
# Grace period cheroot gives in-flight requests on shutdown.
_SHUTDOWN_TIMEOUT = 3
_FREE_PORT_ATTEMPTS = 5
_SELECT_INTERVAL = 0.1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dss_console.sandbox.serve",
        description="Serve itksnap-dss-server on 127.0.0.1 (sandbox / test harness).",
    )
    parser.add_argument("--port", type=int, required=True, help="TCP port; 0 picks a free one")
    parser.add_argument("--sqlite-path", required=True, type=Path)
    parser.add_argument("--datastore-root", required=True, type=Path)
    parser.add_argument(
        "--noauth",
        action="store_true",
        help="every request is logged in as the sysadmin test@example.com (admin instance)",
    )
    parser.add_argument(
        "--tmp-dir",
        type=Path,
        default=None,
        help="TMPDIR for the server (upload spool, git clones); default: <datastore-root>/../tmp",
    )
    parser.add_argument(
        "--exit-with-parent",
        type=int,
        default=None,
        metavar="PID",
        help="exit when the process PID is no longer our parent (POSIX only)",
    )
    parser.add_argument("--threads", type=int, default=10, help="cheroot worker threads")
    return parser


def _server_argv(args: argparse.Namespace) -> list[str]:
    # An empty cookie domain makes the session cookie host-only; the server's default
    # (Domain=dss.itksnap.org) would never be sent back to 127.0.0.1.
    argv = [
        "itksnap-dss-server",
        "--sqlite-path",
        str(args.sqlite_path),
        "--datastore-root",
        str(args.datastore_root),
        "--cookie-domain",
        "",
    ]
    if args.noauth:
        argv.append("--noauth")
    return argv


def _isolate_environment(tmp_dir: Path) -> None:
    # ALFABIS_* variables are the server's fallbacks for its flags; ALFABIS_NOAUTH in
    # particular would silently turn the public instance into a logged-in-as-admin one.
    for name in [n for n in os.environ if n.startswith("ALFABIS_")]:
        del os.environ[name]
    tmp_dir.mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = str(tmp_dir)
    # tempfile caches its directory on first use; make sure uploads and the git clones
    # left behind by service registration land in the sandbox, not in the system /tmp.
    tempfile.tempdir = str(tmp_dir)


def _parent_gone(parent_pid: int | None) -> bool:
    if parent_pid is None or os.name != "posix":
        return False
    # On POSIX an orphan is re-parented (to init or a subreaper), so a changed ppid means
    # the parent died without stopping us (e.g. it was SIGKILLed and its atexit never ran).
    return os.getppid() != parent_pid


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((BIND_HOST, 0))
        return int(probe.getsockname()[1])


def _listen(args: argparse.Namespace, application: Any) -> Any:
    """A prepared (bound, listening) cheroot server, or None after printing why not."""
    from cheroot import wsgi

    # cheroot sets SO_REUSEADDR only for an explicit port. A server first bound to port 0
    # could then not be restarted on the same port while its old connections linger in
    # TIME_WAIT, so "any port" is resolved here and cheroot always gets a concrete one.
    # Another process may take the probed port before we bind it: try a few.
    attempts = _FREE_PORT_ATTEMPTS if args.port == 0 else 1
    error: OSError | None = None
    for _ in range(attempts):
        port = args.port or _free_port()
        server = wsgi.Server(
            (BIND_HOST, port),
            application,
            numthreads=args.threads,
            server_name="dss-console-sandbox",
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
        )
        # cheroot's stop() waits for its select loop, which sleeps up to this long; the
        # default 0.5 s made every stop (and every test using a fresh server) slower.
        server.expiration_interval = _SELECT_INTERVAL
        try:
            server.prepare()
            return server
        except OSError as exc:
            error = exc
    print(f"cannot listen on {BIND_HOST}:{args.port}: {error}", file=sys.stderr, flush=True)
    return None


def serve_main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGTERM/SIGINT (or the watched parent disappears).

    Returns the process exit code.
    """
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    if args.port < 0 or args.port > 65535:
        print(f"invalid port {args.port}", file=sys.stderr)
        return 2

    if "itksnap_dss_server.app" in sys.modules:
        # Its configuration was frozen by an earlier import; serving it again would
        # silently ignore our flags.
        print("itksnap_dss_server.app is already imported in this process", file=sys.stderr)
        return 2

    stop_requested = threading.Event()

    def _request_stop(signum: int, _frame: object) -> None:
        stop_requested.set()

    # Installed before the (slow) server import so an early SIGTERM is still a clean exit.
    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    # Threads started from here on (cheroot's workers) inherit a mask that blocks these
    # signals, so the kernel delivers them to the main thread and interrupts its wait at
    # once instead of at the next watch tick.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)

    sqlite_path = args.sqlite_path.resolve()
    datastore_root = args.datastore_root.resolve()
    tmp_dir = (args.tmp_dir or datastore_root.parent / "tmp").resolve()
    args.sqlite_path, args.datastore_root = sqlite_path, datastore_root
    datastore_root.mkdir(parents=True, exist_ok=True)
    _isolate_environment(tmp_dir)

    saved_argv = sys.argv
    sys.argv = _server_argv(args)
    try:
        # The import prints start-up chatter ("initializing new SQLite database"); sent to
        # stderr, it cannot precede the LISTENING line on stdout.
        with contextlib.redirect_stdout(sys.stderr):
            from itksnap_dss_server import app as dss_app
    finally:
        sys.argv = saved_argv

    # Only the WSGI function is served: app.run()'s StaticMiddleware (which the server's own
    # --server mode has to disable) is never involved, /static/ goes to the app's route.
    server = _listen(args, dss_app.application)
    if server is None:
        return 1

    host, port = server.bind_addr[:2]
    print(f"{LISTENING_PREFIX} {host}:{port}", flush=True)

    serve_error: list[BaseException] = []

    def _serve() -> None:
        try:
            server.serve()
        except BaseException as exc:
            serve_error.append(exc)
        finally:
            stop_requested.set()

    thread = threading.Thread(target=_serve, name="cheroot-serve", daemon=True)
    thread.start()
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
    try:
        while not stop_requested.wait(_WATCH_INTERVAL):
            if _parent_gone(args.exit_with_parent):
                print("parent process is gone; shutting down", file=sys.stderr, flush=True)
                break
    finally:
        server.stop()
        thread.join(_SHUTDOWN_TIMEOUT + 2.0)

    if serve_error:
        print(f"server loop failed: {serve_error[0]!r}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(serve_main())
