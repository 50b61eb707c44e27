"""Serve vantage6 HQ 5.0.3 on 127.0.0.1 — run with the *5.x sandbox venv's* Python (3.13).

A standalone script (shipped as a resource, so a frozen bundle has it as a file): it imports
nothing from dss_console (the 5.x venv does not have it) and everything from vantage6 (the
console's venv does not have that). The parent (``dss_console.sources.v6x5.hq_process``) runs
``<venv>/bin/python hq_script.py --config FILE --port N --exit-with-parent PID`` with the
``KEYCLOAK_*`` variables in the environment (secrets never on the command line) and reads the
line ``V6X5_HQ_LISTENING 127.0.0.1:<port>``.

What the official container does, in one process: ``run_hq`` (reads the realm's public key
from the identity server first, and exits if it cannot), ``ensure_db_initialized`` (default
roles, root organization and user, its Keycloak id), then the gevent server — on a socket
bound here, so port 0 works without a race.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time

LISTENING_PREFIX = "V6X5_HQ_LISTENING"
BIND_HOST = "127.0.0.1"


def _watch_parent(parent: int) -> None:
    # HQ must not outlive the console or test session that started it.
    while True:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="HQ's configuration (JSON is YAML)")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--exit-with-parent", type=int, default=None, metavar="PID")
    args = parser.parse_args(argv)

    # Importing vantage6.hq monkey-patches the standard library for gevent; everything below
    # (sockets, threads) is gevent's from here on.
    import vantage6.hq as hq

    app = hq.run_hq(args.config, system_folders=False)
    app.ensure_db_initialized()

    from gevent import pywsgi
    from gevent import socket as gsocket

    listener = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_STREAM)
    listener.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_REUSEADDR, 1)
    listener.bind((BIND_HOST, args.port))
    listener.listen(128)
    port = listener.getsockname()[1]
    # pywsgi with the simple-websocket fallback: what flask-socketio's run() builds for
    # gevent without gevent-websocket (HQ asks for gevent_uwsgi and falls back to this).
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
