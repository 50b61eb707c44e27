"""A vantage6 5.x node as the family's second member (docs/v6-5x-plan.md §2).

`dss-console v6 login` probes the server (``GET <server>/hq/version``) and, for 5.x, logs the
node in here; `dss-console worker --source v6` (the family) or ``--source v6x5`` runs a stored
5.x node (:class:`~dss_console.sources.v6x5.source.V6x5Source`). The 4.x plug-in's parts
that do not depend on the server's generation are inherited. In the window, the family's
login pane shows the 4.x form first and swaps to this one (its auth server, realm and node
name added) once the server answers as 5.x (gui/login_pane.py); the window's engine gets the
keys on its stdin, as for 4.x.
Imported whenever `v6 login` runs: the client and crypto load only inside the calls.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import html
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from dss_console.core.presentation import unbroken_html
from dss_console.core.source_plugin import (
    ConnectError,
    LoginCall,
    LoginField,
    LoginForm,
    LoginInputError,
    Submit,
)
from dss_console.sources.v6.plugin import V6Plugin

if TYPE_CHECKING:
    from dss_console.core.interfaces import Source
    from dss_console.credentials import StoredV6Node, V6CredentialStore
    from dss_console.engine.settings import Settings
    from dss_console.sources.v6x5.login import HqNodeLogin

__all__ = ["PLUGIN", "V6x5Plugin"]

_V6_FIELDS = {field.name: field for field in V6Plugin.login_form.fields}


class V6x5Plugin(V6Plugin):
    name = "v6x5"
    title = "vantage6 5.x node (API key)"
    family = "v6"
    server_major = "5"
    probe_says = "/hq/version (vantage6 5.x)"
    worker = dataclasses.replace(
        V6Plugin.worker, choice="a vantage6 5.x server's runs for one node (--source v6 "
                                "picks it from the stored login)")
    # The 4.x form's fields by the same names (the window keeps their values when it swaps
    # forms), plus what a 5.x node's login needs besides its API key.
    login_form = LoginForm(
        fields=(
            _V6_FIELDS["server"],
            LoginField("auth_url", "Auth server", "url", "https://auth.v6.example.org",
                       tip="The server's authentication server (Keycloak): vantage6 5.x "
                           "nodes log in there"),
            LoginField("realm", "Realm", "text", "vantage6",
                       tip="The Keycloak realm of the vantage6 server (empty: vantage6)"),
            LoginField("node", "Node name", "text", "the node's name on the server",
                       tip="A 5.x node logs in as the client NAME-node-client, so the API "
                           "key alone does not name it"),
            dataclasses.replace(_V6_FIELDS["api_key"],
                                tip="The node's API key (its Keycloak client secret)"),
            _V6_FIELDS["private_key"]),
        about="the runs a vantage6 5.x server sends to this node",
    )

    def owns(self, credential: object) -> bool:
        from dss_console.sources.v6x5.login import HqNodeLogin

        return isinstance(credential, HqNodeLogin)

    def add_worker_arguments(self, parser: argparse.ArgumentParser) -> None:
        # --node is the family's option: the 4.x member adds it, unless it is not there.
        if not any("--node" in action.option_strings for action in parser._actions):
            super().add_worker_arguments(parser)

    def connect(self, options: argparse.Namespace, settings: Settings,
                handover: str | None) -> Source:
        """The stored 5.x node (`dss-console v6 login`), or the one a console handed over
        (its keys, auth server and realm on stdin)."""
        if handover is None:
            return super().connect(options, settings, handover)
        from dss_console.credentials import StoredV6Node

        keys = _hq_keys(handover)
        if not options.server or not options.node:
            raise ConnectError("--for-console --source v6x5 needs --server and --node", code=2)
        try:
            server = self.server_url(options.server)
        except ValueError as exc:
            raise ConnectError(str(exc), code=2) from None
        pem = keys.get("private_key") or ""
        stored = StoredV6Node(server=server, node=options.node, api_key=keys["api_key"],
                              private_key_pem=pem.encode("ascii") if pem else None, info={},
                              auth_url=keys["auth_url"], realm=keys.get("realm") or "")
        return self.connect_stored(stored, options, settings)

    def handover(self, credential: object, settings: str) -> str:
        # As 4.x's (the settings with the keys: the first poll knows the allowlist), plus
        # where the node logs in; on the engine's stdin, never its command line.
        login = _hq_login(credential)
        return json.dumps({"api_key": login.api_key, "auth_url": login.auth_url,
                           "realm": login.realm,
                           "private_key": (login.private_key_pem or b"").decode("ascii"),
                           "settings": settings})

    def engine_argv(self, credential: object) -> Sequence[str]:
        return ("--node", _hq_login(credential).identity.name)

    def engine_key(self, credential: object) -> str:
        return _hq_login(credential).source_key

    def server(self, credential: object) -> str:
        return _hq_login(credential).server

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
                verify=options.ca_bundle or settings.ca_bundle or True,
                # The worker's --data-dir keeps the sessions too (its journal's neighbours).
                data_root=getattr(options, "data_dir", None))
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
        """The window's login: a token from the auth server, then HQ; the keys are
        remembered as `v6 login` remembers them (keyring, else a private file)."""
        from dss_console.sources.v6x5.auth import DEFAULT_REALM, normalise_auth_url

        try:
            url = self.server_url(values.get("server", ""))
        except ValueError as exc:
            raise LoginInputError(f"Check the server address: {exc}.") from None
        api_key = values.get("api_key", "")
        if not api_key.strip():
            raise LoginInputError("Paste the node's API key first (HQ showed it when the "
                                  "node was registered).")
        if not values.get("auth_url", "").strip():
            raise LoginInputError("Give the auth server's address: a vantage6 5.x node logs "
                                  "in through the server's Keycloak.")
        try:
            auth_url = normalise_auth_url(values.get("auth_url", ""))
        except ValueError as exc:
            raise LoginInputError(f"Check the auth server's address: {exc}.") from None
        node = values.get("node", "").strip()
        if not node:
            raise LoginInputError("Give the node's name: a vantage6 5.x node logs in as the "
                                  "client NAME-node-client.")
        realm = values.get("realm", "").strip() or DEFAULT_REALM
        key_file = values.get("private_key", "").strip() or None
        nodes = _hq_nodes(store)
        return LoginCall(
            submit(lambda: _login(url, auth_url, realm, node, api_key, key_file, nodes,
                                  verify)),
            url, f"Logging in to {url} as node {node} (through {auth_url})…", late=_drop)

    def start_resume(self, server: str, store: object, verify: bool | str,
                     submit: Submit) -> LoginCall:
        nodes = _hq_nodes(store)  # the node logged in last, when it is a 5.x one
        return LoginCall(submit(lambda: _resume(nodes, verify)), "the vantage6 server",
                         "Logging the vantage6 5.x node in again…", late=_drop,
                         nothing_stored="Log in with the node's API key.")

    def who(self, credential: object, *, expired: bool = False) -> str:
        login = _hq_login(credential)
        who = login.identity
        return (f"Node <b>{html.escape(who.name)}</b> of <b>"
                f"{html.escape(who.organization_name)}</b> on <b>{unbroken_html(login.server)}"
                f"</b> (vantage6 5.x, realm {html.escape(login.realm)}) · collaboration <b>"
                f"{html.escape(who.collaboration_name)}</b> "
                f"({'encrypted' if who.encrypted else 'not encrypted'})")

    def logout(self, credential: object, store: object, *, borrowed: bool) -> str:
        login = _hq_login(credential)
        with contextlib.suppress(OSError):
            _hq_nodes(store).delete_node(login.server, login.identity.name)
        return (f"Logged out node {login.identity.name} of {login.server}: its API key and "
                "private key are forgotten here.")

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


def _login(server: str, auth_url: str, realm: str, node: str, api_key: str,
           key_file: str | None, store: V6CredentialStore, verify: bool | str) -> HqNodeLogin:
    """Blocking: log the node in and remember its keys (V6LoginError says why not)."""
    from dss_console.sources.v6.login import read_private_key
    from dss_console.sources.v6x5.login import login_hq_node, remember_hq_node

    pem = read_private_key(key_file) if key_file else None
    result = login_hq_node(server, auth_url, node, api_key, pem, realm=realm, verify=verify)
    remember_hq_node(result, store)
    return result


def _resume(store: V6CredentialStore, verify: bool | str) -> HqNodeLogin | None:
    """Blocking: log in again as the node logged in last, if it is a 5.x node (None:
    there is none, or it is a 4.x one: the family's 4.x member resumes that)."""
    from dss_console.sources.v6x5.login import login_hq_node

    stored = store.load_node()
    if stored is None or stored.auth_url is None:
        return None
    return login_hq_node(stored.server, stored.auth_url, stored.node, stored.api_key,
                         stored.private_key_pem, realm=stored.realm or "", verify=verify)


def _drop(late: object) -> None:
    """A login that came back after Cancel: its keys are stored, it holds no connection."""


def _hq_keys(handover: str) -> dict[str, str]:
    """The node's keys and auth server from the console that started this engine."""
    try:
        keys = json.loads(handover or "{}")
    except ValueError:
        keys = {}
    if not isinstance(keys, dict) or not keys.get("api_key") or not keys.get("auth_url"):
        raise ConnectError("--for-console --source v6x5 needs the node's keys and auth "
                           "server on stdin", code=2)
    return keys


def _hq_nodes(store: object) -> V6CredentialStore:
    from dss_console.credentials import V6CredentialStore

    if not isinstance(store, V6CredentialStore):
        raise TypeError(f"the vantage6 plug-ins keep their nodes' keys in a "
                        f"V6CredentialStore, not in a {type(store).__name__}")
    return store


def _hq_login(credential: object) -> HqNodeLogin:
    from dss_console.sources.v6x5.login import HqNodeLogin

    if not isinstance(credential, HqNodeLogin):
        raise TypeError(f"not a vantage6 5.x node login: {type(credential).__name__}")
    return credential


PLUGIN = V6x5Plugin()
