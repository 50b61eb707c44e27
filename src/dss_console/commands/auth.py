"""`dss-console login` and `dss-console logout`."""

from __future__ import annotations

import argparse
import sys

from dss_console.commands.context import (
    note,
    resolve_server,
    say_waiting,
    session_store,
    verify_option,
)
from dss_console.commands.errors import CliError
from dss_console.connection import login_with_token
from dss_console.dss import DssClient


def add_parsers(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    login = verbs.add_parser(
        "login", parents=[common], help="log in to a DSS server with a one-time token",
        description="Log in with a one-time token. Get one by opening <server>/token in a "
                    "browser (signed in as a provider user). A token works exactly once; the "
                    "session it opens is remembered (in the OS keyring, or a private file "
                    "where there is none) and used by later commands.")
    source = login.add_mutually_exclusive_group(required=True)
    source.add_argument("--token", help="the token (visible in the process list; prefer "
                                        "--token-stdin)")
    source.add_argument("--token-stdin", action="store_true",
                        help="read the token from standard input")
    login.set_defaults(handler=login_command)

    logout = verbs.add_parser("logout", parents=[common], help="end the session with a server",
                              description="End the session on the server and forget it here.")
    logout.set_defaults(handler=logout_command)


def login_command(args: argparse.Namespace) -> int:
    if not args.server:
        raise CliError("login needs --server URL (e.g. --server https://dss.itksnap.org)",
                       code=2)
    store = session_store()
    server = resolve_server(args, store)
    token = sys.stdin.readline().strip() if args.token_stdin else args.token
    if not token:
        raise CliError("no token given: paste the token from "
                       f"{server}/token", code=2)
    # The address as typed: without a scheme, a local plain-HTTP server is found (once, with
    # harmless probes) instead of failing on https://.
    logged_in = login_with_token(args.server, token, store, verify=verify_option(args),
                                 on_waiting=say_waiting)
    logged_in.client.close()
    email = logged_in.email
    if logged_in.client.server != server:
        note(f"using {logged_in.client.server} (plain HTTP: that port does not speak https://; "
             "write http:// in the address to skip the check)")
    note(store.fallback_note)
    print(f"logged in as {email}")
    return 0


def logout_command(args: argparse.Namespace) -> int:
    store = session_store()
    server = resolve_server(args, store)
    stored = store.load(server)
    if stored is not None:
        with DssClient(server, session_id=stored.session_id, verify=verify_option(args)) as c:
            c.logout()
    store.delete(server)
    print(f"logged out of {server}")
    return 0
