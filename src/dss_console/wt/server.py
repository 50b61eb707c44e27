"""Which DSS server and session `dss-console wt` uses: ``$ITKSNAP_WT_DSS_SERVER`` if set
(as in itksnap-wt), else the server last logged in to; the session is the one
`dss-console login` (or `wt -dss-auth`) stored, never ``~/.alfabis``."""

from __future__ import annotations

import argparse
import os

from dss_console.commands.context import logged_in_client as _logged_in_client
from dss_console.commands.errors import CliError
from dss_console.dss import DssClient

from .cmdline import WtError

__all__ = ["SERVER_VARIABLE", "logged_in_client", "server_override"]

SERVER_VARIABLE = "ITKSNAP_WT_DSS_SERVER"


def server_override() -> str | None:
    return os.environ.get(SERVER_VARIABLE) or None


def logged_in_client() -> DssClient:
    """A client resuming the stored session (the same lookup as `dss-console pro`)."""
    args = argparse.Namespace(server=server_override(), ca_bundle=None)
    try:
        return _logged_in_client(args)
    except CliError as exc:
        raise WtError(str(exc)) from None
