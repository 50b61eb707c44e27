"""Serve vantage6-server 4.15.2 on 127.0.0.1 — run with the *sandbox venv's* Python.

This file is a standalone script (shipped as a resource, so a frozen bundle has it as a
file): it imports nothing from dss_console (the sandbox venv does
not have it) and everything from vantage6 (the console's venv does not have that). The
parent (``dss_console.v6.sandbox``) runs ``<venv>/bin/python v6_sandbox_server.py --config
FILE --exit-with-parent PID`` and reads the line ``V6_SERVER_LISTENING 127.0.0.1:<port>``.

Python 3.11 fix: 3.11 changed ``format()`` of mixed-in enums (``class Scope(str, Enum)``)
from the value (``glo``) to ``Scope.GLOBAL``; vantage6 4.15.2 builds permission attribute
names with ``f"{operation}_{scope}"`` and so answers 500 on ``POST /organization``
(vantage6#1722). Every str/int enum class defined in a ``vantage6.*`` module gets 3.10's
``__format__`` back; nothing else in the process changes. The fix is asserted at start.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import os
import sys
import threading
import time

LISTENING_PREFIX = "V6_SERVER_LISTENING"
BIND_HOST = "127.0.0.1"
ROOT_PASSWORD_ENV = "V6_SANDBOX_ROOT_PASSWORD"


def _value_format(self: enum.Enum, spec: str) -> str:
    return format(self.value, spec)


def apply_enum_fix() -> int:
    """Give vantage6's mixed-in enums their 3.10 formatting back; returns how many classes."""
    fixed = 0
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "vantage6" or name.startswith("vantage6.")):
            continue
        for value in list(vars(module).values()):
            if (isinstance(value, type) and issubclass(value, enum.Enum)
                    and issubclass(value, (str, int))
                    and value.__module__.startswith("vantage6")
                    and value.__dict__.get("__format__") is not _value_format):
                value.__format__ = _value_format  # type: ignore[method-assign]
                fixed += 1
    return fixed


def assert_enum_fix() -> None:
    from vantage6.server.model.rule import Operation, Scope

    got = f"{Operation.CREATE}_{Scope.GLOBAL}"
    if got != "c_glo":
        raise SystemExit(f"the Python 3.11 enum fix did not take effect: {got!r} != 'c_glo'")


def _watch_parent(parent: int) -> None:
    # The server must not outlive the console or test session that started it.
    while True:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the server's YAML configuration")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--exit-with-parent", type=int, default=None, metavar="PID")
    args = parser.parse_args(argv)

    # The root password arrives in the environment (never on the command line, where ps shows
    # it) and is handed to the server only as the bcrypt hash it accepts for a first start.
    password = os.environ.pop(ROOT_PASSWORD_ENV, "")
    if password:
        import bcrypt

        os.environ["V6_INIT_SUPER_PASS_HASHED"] = bcrypt.hashpw(
            password.encode("utf-8"), bcrypt.gensalt()).decode("ascii")

    # Importing vantage6.server monkey-patches the standard library for gevent; everything
    # below (sockets, threads) is gevent's from here on.
    import vantage6.server as v6server

    apply_enum_fix()
    assert_enum_fix()
    app = v6server.run_server(args.config, system_folders=False)
    # run_server imports the resource modules (and their enums) late: fix those too.
    apply_enum_fix()
    assert_enum_fix()

    from gevent import pywsgi
    from gevent import socket as gsocket

    listener = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_STREAM)
    listener.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_REUSEADDR, 1)
    listener.bind((BIND_HOST, args.port))
    listener.listen(128)
    port = listener.getsockname()[1]
    # pywsgi with the simple-websocket fallback: what flask-socketio's run() builds for
    # gevent without gevent-websocket, but on a socket bound here (port 0 works, no race).
    server = pywsgi.WSGIServer(listener, app.app, log=None)
    app.socketio.wsgi_server = server  # so socketio.stop() works as with run()

    if args.exit_with_parent is not None:
        threading.Thread(target=_watch_parent, args=(args.exit_with_parent,),
                         daemon=True).start()
    print(f"{LISTENING_PREFIX} {BIND_HOST}:{port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
