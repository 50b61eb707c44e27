"""Shared plumbing of the verbs that talk to a server: which server, which session."""

from __future__ import annotations

import argparse
import os
import sys

from dss_console.commands.errors import PROG, CliError
from dss_console.credentials import SessionStore
from dss_console.dss import DssClient, normalize_server_url


def session_store() -> SessionStore:
    return SessionStore()


def resolve_server(args: argparse.Namespace, store: SessionStore) -> str:
    raw = getattr(args, "server", None) or store.last_server()
    if not raw:
        raise CliError("no server given: pass --server URL, or log in first with "
                       "`dss-console login --server URL --token-stdin`")
    try:
        return normalize_server_url(raw)
    except ValueError as exc:
        raise CliError(f"bad --server: {exc}", code=2) from None


def verify_option(args: argparse.Namespace) -> bool | str:
    bundle = getattr(args, "ca_bundle", None)
    return bundle if bundle else True


def logged_in_client(args: argparse.Namespace) -> DssClient:
    """A client for the chosen server, resuming the stored session."""
    store = session_store()
    server = resolve_server(args, store)
    stored = store.load(server)
    if stored is None:
        raise CliError(f"not logged in to {server}: run `dss-console login --server {server} "
                       "--token-stdin` with a token from "
                       f"{server}/token")
    return DssClient(server, session_id=stored.session_id, verify=verify_option(args))


def note(message: str | None) -> None:
    if message:
        print(message, file=sys.stderr)


def say_waiting(url: str, seconds: float) -> None:
    """`on_waiting` for the connection calls: one line on stderr while a server is silent."""
    print(f"{PROG}: still waiting for {url}: no answer yet ({seconds:.0f} s)", file=sys.stderr,
          flush=True)


def require_named_settings(flag_value: str | None, *, env_too: bool) -> None:
    """A settings file the operator named (--config, and for a worker $DSS_CONSOLE_CONFIG)
    must exist: a typo must not run on the defaults. Only the default path may be missing
    (a console makes it when settings are first saved)."""
    from dss_console import paths
    from dss_console.engine.settings import CONFIG_ENV, SETTINGS_FILE_NAME, settings_path

    if flag_value:
        named = "--config"
    elif env_too and os.environ.get(CONFIG_ENV):
        named = f"${CONFIG_ENV}"
    else:
        return
    path = settings_path(flag_value)
    if path.exists():
        return
    raise CliError(f"{named} names the settings file {path}, which does not exist; check the "
                   f"path, or leave {named} out to use the default settings file "
                   f"({paths.config_dir() / SETTINGS_FILE_NAME})", code=2)
