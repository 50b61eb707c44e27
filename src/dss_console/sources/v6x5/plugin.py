"""A vantage6 5.x node as the family's second member (docs/v6-5x-plan.md §2).

For now its login only: `dss-console v6 login` probes the server (``GET <server>/hq/version``)
and, for 5.x, logs the node in here. It is in ``plugins.LOGIN_ONLY_SOURCES``, not yet in
``plugins.SOURCES``: the worker and the window take it once its runs work (plan step 5).
Imported whenever `v6 login` runs: the client and crypto load only inside the calls.
"""

from __future__ import annotations

import argparse

from dss_console.core.source_plugin import ConnectError

__all__ = ["PLUGIN", "V6x5Plugin"]


class V6x5Plugin:
    name = "v6x5"
    title = "vantage6 5.x node (API key)"
    family = "v6"
    server_major = "5"
    probe_says = "/hq/version (vantage6 5.x)"

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
