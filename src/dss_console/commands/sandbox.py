"""`dss-console sandbox`: the real DSS middleware on 127.0.0.1 with demo data."""

from __future__ import annotations

import argparse
import shlex
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from dss_console.commands.errors import CliError

SANDBOX_DESCRIPTION = """\
Start the real DSS server (itksnap-dss-server) on 127.0.0.1 with a provider, a demo
service and demo tickets, print its URL and a fresh login token, and run until Ctrl-C.
Everything lives in a temporary folder unless --data is given.

Then, in another terminal:
  echo TOKEN | dss-console login --server URL --token-stdin
  dss-console pro services
"""


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("sandbox", help="run a local DSS server with demo tickets",
                         description=SANDBOX_DESCRIPTION,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--tickets", type=int, default=3, metavar="K",
                   help="number of demo tickets to queue (default: 3)")
    p.add_argument("--data", type=Path, metavar="DIR",
                   help="keep the server's database and files in DIR (default: a temporary "
                        "folder removed on exit)")
    p.set_defaults(handler=sandbox_command)


def worker_command_line(url: str, service_name: str, pace: float = 0.0) -> str:
    """The `dss-console worker` invocation that processes the sandbox's demo tickets."""
    from dss_console.resources.demo_service import demo_service_command

    return shlex.join(["dss-console", "worker", "--server", url, "--command",
                       f"{service_name}={demo_service_command(pace)}", "--exit-when-idle"])


class _Box(Protocol):
    def start(self) -> object: ...

    def stop(self) -> None: ...


def run_until_stopped(box: _Box, name: str, start_error: type[Exception],
                      show: Callable[[], None]) -> int:
    """Start ``box`` (the ``name`` sandbox), ``show()`` what it offers, run until Ctrl-C or
    SIGTERM, stop it."""
    stop = threading.Event()
    # SIGTERM as well as Ctrl-C, so a service manager or a test can stop it cleanly.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        box.start()
    except start_error as exc:
        box.stop()
        raise CliError(f"the {name} could not start: {exc}") from None
    try:
        show()
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    finally:
        box.stop()
    print(f"{name} stopped", flush=True)
    return 0


def sandbox_command(args: argparse.Namespace) -> int:
    try:
        from dss_console.sandbox import Sandbox
    except ImportError as exc:
        raise CliError("the sandbox needs the DSS server package: pip install "
                       f"'dss-console[sandbox]' ({exc})") from None
    from dss_console.sandbox import SandboxError

    if args.tickets < 0:
        raise CliError("--tickets must be 0 or more", code=2)
    box = Sandbox(data_dir=args.data, port=args.port, tickets=args.tickets)

    def show() -> None:
        token = box.fresh_token()
        print(f"DSS sandbox running at {box.url}", flush=True)
        print(f"  provider: {box.provider}    service: {box.service_name} {box.service_hash}")
        print(f"  ready tickets: {' '.join(str(t) for t in box.ticket_ids) or 'none'}")
        print(f"  login token (works once): {token}")
        # On standard input: a token in argv shows in every user's process list.
        print(f"  log in:  echo {token} | dss-console login --server {box.url} --token-stdin")
        print("  process the tickets with the demo service (an Otsu segmentation):")
        print(f"    {worker_command_line(box.url, box.service_name)}")
        print("Press Ctrl-C to stop.", flush=True)

    return run_until_stopped(box, "sandbox", SandboxError, show)
