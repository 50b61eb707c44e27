"""A vantage6 5.x node as the family's second member (docs/v6-5x-plan.md §2).

`dss-console v6 login` probes the server (``GET <server>/hq/version``) and, for 5.x, logs the
node in here; `dss-console worker --source v6` (the family) or ``--source v6x5`` runs a stored
5.x node (:class:`~dss_console.sources.v6x5.source.V6x5Source`). The 4.x plug-in's parts
that do not depend on the server's generation are inherited. Not yet: the window's login of a
5.x node (plan step 7; a console's handed-over keys are refused in words).
Imported whenever `v6 login` runs: the client and crypto load only inside the calls.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

from dss_console.core.source_plugin import ConnectError, LoginCall, LoginInputError, Submit
from dss_console.sources.v6.plugin import V6Plugin

if TYPE_CHECKING:
    from dss_console.core.interfaces import Source
    from dss_console.credentials import StoredV6Node
    from dss_console.engine.settings import Settings

__all__ = ["PLUGIN", "V6x5Plugin"]

# Plan step 7 brings the 5.x login into the window (the login pane's form swap).
_NOT_IN_WINDOW = ("A vantage6 5.x node logs in from the command line for now: dss-console v6 "
                  "login --server URL --auth-url URL --node NAME --api-key-stdin, then "
                  "dss-console worker --source v6 --server URL --node NAME.")


class V6x5Plugin(V6Plugin):
    name = "v6x5"
    title = "vantage6 5.x node (API key)"
    family = "v6"
    server_major = "5"
    probe_says = "/hq/version (vantage6 5.x)"
    worker = dataclasses.replace(
        V6Plugin.worker, choice="a vantage6 5.x server's runs for one node (--source v6 "
                                "picks it from the stored login)")

    def add_worker_arguments(self, parser: argparse.ArgumentParser) -> None:
        # --node is the family's option: the 4.x member adds it, unless it is not there.
        if not any("--node" in action.option_strings for action in parser._actions):
            super().add_worker_arguments(parser)

    def connect(self, options: argparse.Namespace, settings: Settings,
                handover: str | None) -> Source:
        if handover is not None:
            raise ConnectError("a console's vantage6 5.x node is not supported yet: run it "
                               "with `dss-console worker --source v6 --server URL --node NAME` "
                               "after `dss-console v6 login`", code=2)
        return super().connect(options, settings, handover)

    def connect_stored(self, stored: StoredV6Node, options: argparse.Namespace,
                       settings: Settings) -> Source:
        """Log in as a stored 5.x node: a token from its auth server, then HQ."""
        from dss_console.sources.v6.client import V6Error, V6NotLoggedInError
        from dss_console.sources.v6.node_keys import V6KeyError
        from dss_console.sources.v6.settings import v6_settings
        from dss_console.sources.v6x5.source import V6x5Source

        if stored.auth_url is None:
            raise ConnectError(f"node {stored.node!r} of {stored.server} is a vantage6 4.x "
                               "node", code=2)
        try:
            return V6x5Source.connect_hq(
                stored.server, stored.api_key, v6_settings(settings),
                auth_url=stored.auth_url, node=stored.node, realm=stored.realm or "",
                private_key_pem=stored.private_key_pem,
                verify=options.ca_bundle or settings.ca_bundle or True)
        except V6NotLoggedInError:
            raise ConnectError(f"the authentication server no longer accepts the API key of "
                               f"node {stored.node!r}: log in again (dss-console v6 login "
                               f"--server {stored.server} --auth-url {stored.auth_url} --node "
                               f"{stored.node} --api-key-stdin)") from None
        except V6KeyError as exc:
            raise ConnectError(str(exc)) from None
        except V6Error as exc:
            raise ConnectError(f"cannot reach {stored.server}: {exc}") from None

    def start_login(self, values: Mapping[str, str], store: object,
                    verify: bool | str, submit: Submit) -> LoginCall:
        # The form's own words first (a missing value), then why not here yet.
        try:
            self.server_url(values.get("server", ""))
        except ValueError as exc:
            raise LoginInputError(f"Check the server address: {exc}.") from None
        if not values.get("api_key", "").strip():
            raise LoginInputError("Paste the node's API key first (HQ showed it when the "
                                  "node was registered).")
        raise LoginInputError(_NOT_IN_WINDOW)

    def start_resume(self, server: str, store: object, verify: bool | str,
                     submit: Submit) -> LoginCall:
        raise LoginInputError(_NOT_IN_WINDOW)

    def login_again(self, source: Source) -> str:
        from dss_console.sources.v6x5.source import V6x5Source

        if isinstance(source, V6x5Source):
            return (f"dss-console v6 login --server {source.client.api_url} --auth-url "
                    f"{source.client.auth_url} --node {source.identity.name} --api-key-stdin")
        return super().login_again(source)

    def serves(self, server: str, verify: bool | str) -> bool:
        """Whether ``GET <server>/hq/version`` names a 5.x HQ. ConnectError when nothing
        answers."""
        from dss_console.sources.v6.client import (
            V6UnreachableError,
            normalise_server_url,
            server_major_version,
        )
        from dss_console.sources.v6x5.client import API_PATH

        url = server.strip().rstrip("/")
        try:
            return server_major_version(normalise_server_url(url, API_PATH),
                                        verify) == self.server_major
        except V6UnreachableError as exc:
            raise ConnectError(f"cannot reach {url}: {exc}") from None

    def server_url(self, text: str) -> str:
        """The server address as typed, as HQ's API URL (…/hq); ValueError says what is
        wrong."""
        from dss_console.sources.v6.client import normalise_server_url
        from dss_console.sources.v6x5.client import API_PATH

        return normalise_server_url(text, API_PATH)

    def owns_stored(self, stored: object) -> bool:
        """A stored node of a 5.x server (its authentication server stored beside it)."""
        from dss_console.credentials import StoredV6Node

        return isinstance(stored, StoredV6Node) and stored.auth_url is not None

    def check_stored(self, stored: object, verify: bool | str) -> str:
        """`v6 status`'s words for what HQ says of a stored node now."""
        from dss_console.credentials import StoredV6Node
        from dss_console.sources.v6.client import V6Error
        from dss_console.sources.v6.login import short_error
        from dss_console.sources.v6x5.client import HqNodeClient

        if not isinstance(stored, StoredV6Node) or stored.auth_url is None:
            raise TypeError("not a stored vantage6 5.x node")
        try:
            with HqNodeClient(stored.server, auth_url=stored.auth_url, node=stored.node,
                              realm=stored.realm or "", verify=verify) as client:
                client.login(stored.api_key)
                runs = client.open_runs()
        except V6Error as exc:
            return short_error(exc)
        pending = sum(1 for r in runs if r.status == "pending")
        return f"key accepted; {len(runs)} open run(s), {pending} pending"

    def cli_login(self, args: argparse.Namespace, api_key: str,
                  store: object) -> tuple[list[str], list[str]]:
        """`dss-console v6 login` for a 5.x server: (lines to print, warnings). ConnectError
        says why not, in words, never with the key."""
        from dss_console.credentials import V6CredentialStore
        from dss_console.sources.v6.login import V6LoginError, read_private_key
        from dss_console.sources.v6x5.auth import DEFAULT_REALM
        from dss_console.sources.v6x5.login import (
            describe_hq_node,
            login_hq_node,
            remember_hq_node,
        )

        if not isinstance(store, V6CredentialStore):
            raise TypeError(f"the vantage6 plug-ins keep their nodes' keys in a "
                            f"V6CredentialStore, not in a {type(store).__name__}")
        missing = [flag for flag, value in (("--auth-url URL", args.auth_url),
                                            ("--node NAME", args.node)) if not value]
        if missing:
            raise ConnectError(
                f"{args.server} is a vantage6 5.x server: give {' and '.join(missing)}. Its "
                "nodes log in through its authentication server (Keycloak, --auth-url) as "
                "the client NAME-node-client (--node NAME), so the API key alone does not "
                "name the node, unlike 4.x", code=2)
        try:
            pem = read_private_key(args.private_key) if args.private_key is not None else None
            if args.replace_public_key and pem is None:
                raise ConnectError("--replace-public-key needs --private-key FILE", code=2)
            login = login_hq_node(args.server, args.auth_url, args.node, api_key, pem,
                                  realm=args.realm or DEFAULT_REALM,
                                  verify=args.ca_bundle or True,
                                  replace_public_key=args.replace_public_key)
        except V6LoginError as exc:
            raise ConnectError(str(exc)) from None
        warnings = []
        if args.replace_public_key and login.uploaded_public_key:
            warnings.append(f"warning: replaced organization "
                            f"{login.identity.organization_name!r}'s public key on HQ: its "
                            "other nodes (and tasks already encrypted for the old key) can no "
                            "longer decrypt until they use this key")
        remember_hq_node(login, store)
        return describe_hq_node(login), warnings


PLUGIN = V6x5Plugin()
