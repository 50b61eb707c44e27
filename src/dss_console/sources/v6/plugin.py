"""A vantage6 4.x node as the composition roots see it (core.source_plugin.SourcePlugin).

Imported whenever the command line is built (the worker's options and help): the client, the
crypto and the source are imported only by ``connect``.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dss_console.core.presentation import unbroken_html
from dss_console.core.source_plugin import (
    ConnectError,
    LoginCall,
    LoginField,
    LoginForm,
    LoginInputError,
    LoginStores,
    Submit,
    WorkerTexts,
)

if TYPE_CHECKING:
    from dss_console.core.interfaces import Source
    from dss_console.core.presentation import Words
    from dss_console.credentials import StoredV6Node, V6CredentialStore
    from dss_console.engine.settings import Settings
    from dss_console.sources.v6.login import NodeLogin

__all__ = ["PLUGIN", "V6Plugin"]

WORKER_HELP = """\
As a vantage6 4.x node (--source v6): log the node in once, then run the worker for it:
  dss-console v6 login --server https://v6.example.org --api-key-stdin [--private-key FILE]
  dss-console worker --source v6 --server https://v6.example.org --node NAME
The images it runs, and how, are the [v6.algorithms."IMAGE"] tables of the settings file
(python + package for the official wrapper, or a command with the placeholders {run} {task}
{image} {workdir} {input} {output} {token} {tmp}); [v6.databases.LABEL] name the data. A
run of an image not configured there is answered "not allowed". Each run's command gets
exactly the vantage6 node's environment (not this worker's), in its own process group;
there is NO container isolation unless the command adds it (apptainer, podman, systemd-run).
Subtask runs start even when every slot is taken (their parent holds one and waits for
them). A researcher's kill stops the command at once. At shutdown, runs in flight stay
open on the server and run again at the next start ([v6] on_shutdown = "leave", the
default) or are failed (on_shutdown = "fail"). One worker per node.
"""


class V6Plugin:
    name = "v6"
    title = "vantage6 node (API key)"
    # The vantage6 family (plugins.SOURCE_FAMILIES): this member serves 4.x servers.
    family = "v6"
    server_major = "4"
    probe_says = "/api/version (vantage6 4.x)"
    worker = WorkerTexts(
        help=WORKER_HELP,
        choice="a vantage6 4.x server's runs for one node, see below",
        role="node {provider}",
        service="image {name}",  # an image is its own name
        not_taken="run",
        no_command="no image has a command configured: nothing will be run (add "
                   '[v6.algorithms."IMAGE"] tables to the settings file)',
        # `pro` is a DSS verb: the run stays open for the fixed command.
        blocked="run {id} is blocked and stays open: {reason}. Fix its [v6.algorithms] "
                "command and start the worker again",
    )
    login_form = LoginForm(
        fields=(
            LoginField("server", "Server", "url", "https://v6.example.org",
                       tip="The vantage6 server this node belongs to"),
            LoginField("api_key", "API key", "secret", "paste the node's API key"),
            LoginField("private_key", "Private key", "file", "the organization's private key "
                       "(PEM), for an encrypted collaboration",
                       tip="The organization's private key",
                       file_filter="PEM private key (*.pem);;All files (*)")),
        about="the runs a vantage6 server sends to this node",
    )
    # A node's key does not expire (no session to hand over): a login is a new engine.
    renews_credential = False

    def owns(self, credential: object) -> bool:
        from dss_console.sources.v6.login import NodeLogin

        return isinstance(credential, NodeLogin)

    def words(self) -> Words:
        from dss_console.sources.v6.presentation import PRESENTATION

        return PRESENTATION.words

    def add_worker_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--node", metavar="NAME",
                            help="v6: the node to work as, as logged in with `dss-console v6 "
                                 "login` (may be left out when one node is stored for the "
                                 "server)")

    def handover_settings(self, handover: str) -> str | None:
        # The console's settings come with the keys, so the engine's first poll already
        # knows the images this node runs (the allowlist): arriving later over the
        # channel, they lost a race against that poll, which refused the runs.
        text = _keys(handover).get("settings")
        return text if isinstance(text, str) and text else None

    def connect(self, options: argparse.Namespace, settings: Settings,
                handover: str | None) -> Source:
        """Log in as the stored vantage6 node (``dss-console v6 login`` stored its keys), or
        with the keys a console handed over."""
        from dss_console.credentials import StoredV6Node, V6CredentialStore
        from dss_console.sources.v6.client import normalise_server_url

        keys = _keys(handover) if handover is not None else None
        store = V6CredentialStore()
        try:
            server = normalise_server_url(options.server) if options.server else None
        except ValueError as exc:
            raise ConnectError(str(exc), code=2) from None
        stored: StoredV6Node | None
        if keys is not None and server:
            pem = keys.get("private_key") or ""
            stored = StoredV6Node(server=server, node=options.node or "",
                                  api_key=keys["api_key"],
                                  private_key_pem=pem.encode("ascii") if pem else None, info={})
        else:
            stored = store.load_node(server, options.node) if (server or options.node) \
                else None
            if stored is None and options.server:
                stored = self._family_stored(store, options.server, options.node)
        if stored is None:
            known = [n for n in store.v6_nodes() if server is None or n["server"] == server]
            listed = ", ".join(f"{n['node']} ({n['server']})" for n in known) or "none"
            where = server or "a vantage6 server"
            if known and not options.node:
                raise ConnectError(f"several nodes are logged in for {where} ({listed}): "
                                   "choose one with --node NAME", code=2)
            who = "node " + repr(options.node) if options.node else "a node"
            raise ConnectError(f"not logged in as {who} of {where} (logged in here: {listed})."
                               f" Log in first: dss-console v6 login --server "
                               f"{server or 'URL'} --api-key-stdin [--private-key FILE]")
        if not self.owns_stored(stored):
            # Another generation's node (plugins.SOURCE_FAMILIES): --source v6 names the
            # family, and the stored login says which member runs it.
            from dss_console import plugins

            for name in plugins.SOURCE_FAMILIES.get(self.family, ()):
                member: Any = plugins.family_plugin(name)
                if member is not self and member.owns_stored(stored):
                    source: Source = member.connect_stored(stored, options, settings)
                    return source
            raise ConnectError(f"node {stored.node!r} of {stored.server} was logged in for "
                               "another vantage6 server version, which this console does "
                               "not run", code=2)
        return self.connect_stored(stored, options, settings)

    def _family_stored(self, store: V6CredentialStore, server: str,
                       node: str | None) -> StoredV6Node | None:
        """A node stored under another family member's API URL for the same server (a
        later generation names its API otherwise: ``…/hq``)."""
        from dss_console import plugins

        for name in plugins.SOURCE_FAMILIES.get(self.family, ()):
            member: Any = plugins.family_plugin(name)
            try:
                url = member.server_url(server)
            except ValueError:
                continue
            found = store.load_node(url, node)
            if found is not None:
                return found
        return None

    def connect_stored(self, stored: StoredV6Node, options: argparse.Namespace,
                       settings: Settings) -> Source:
        """Log in as a stored (or handed over) 4.x node."""
        from dss_console.sources.v6.client import V6Error, V6NotLoggedInError
        from dss_console.sources.v6.settings import v6_settings
        from dss_console.sources.v6.source import V6KeyError, V6Source

        try:
            return V6Source.connect(stored.server, stored.api_key, v6_settings(settings),
                                    private_key_pem=stored.private_key_pem,
                                    verify=options.ca_bundle or settings.ca_bundle or True)
        except V6NotLoggedInError:
            raise ConnectError(f"{stored.server} no longer accepts the API key of node "
                               f"{stored.node!r}: log in again (dss-console v6 login --server "
                               f"{stored.server} --api-key-stdin)") from None
        except V6KeyError as exc:
            raise ConnectError(str(exc)) from None
        except V6Error as exc:
            raise ConnectError(f"cannot reach {stored.server}: {exc}") from None

    def login_again(self, source: Source) -> str:
        from dss_console.sources.v6.source import V6Source

        server = source.client.api_url if isinstance(source, V6Source) else source.key
        return f"dss-console v6 login --server {server} --api-key-stdin"

    def handover(self, credential: object, settings: str) -> str:
        # With the keys the settings: the engine's first poll must know the images this
        # node runs, or it refuses their runs "not allowed" before the settings arrive.
        login = _node_login(credential)
        return json.dumps({"api_key": login.api_key,
                           "private_key": (login.private_key_pem or b"").decode("ascii"),
                           "settings": settings})

    def engine_argv(self, credential: object) -> Sequence[str]:
        return ("--node", _node_login(credential).identity.name)

    def engine_key(self, credential: object) -> str:
        return _node_login(credential).source_key  # one engine per node

    def server(self, credential: object) -> str:
        return _node_login(credential).server

    server_setting = False  # the node's server is stored with its keys

    def close(self, credential: object) -> None:
        return None  # each call of a node's login is its own connection

    def required_tags(self, credential: object, service: str) -> tuple[str, ...] | None:
        return None  # a run's input is the data a database label names, not tagged files

    # -- the family: which server generation, and `dss-console v6 login` -------------------
    def serves(self, server: str, verify: bool | str) -> bool:
        """Whether ``GET <server>/api/version`` names a 4.x server (a URL given with another
        generation's API path gets ``…/that/api/version``, which no server answers).
        ConnectError when nothing answers."""
        from dss_console.sources.v6.client import (
            API_PATH,
            V6UnreachableError,
            normalise_server_url,
            server_major_version,
        )

        url = server.strip().rstrip("/")
        api_url = normalise_server_url(url, API_PATH)
        try:
            return server_major_version(api_url, verify) == self.server_major
        except V6UnreachableError as exc:
            raise ConnectError(f"cannot reach {url}: {exc}") from None

    def owns_stored(self, stored: object) -> bool:
        """A stored node of a 4.x server (no authentication server beside its key)."""
        from dss_console.credentials import StoredV6Node

        return isinstance(stored, StoredV6Node) and stored.auth_url is None

    def check_stored(self, stored: object, verify: bool | str) -> str:
        """`v6 status`'s words for what the server says of a stored node now."""
        from dss_console.credentials import StoredV6Node
        from dss_console.sources.v6.client import V6Error, V6NodeClient
        from dss_console.sources.v6.login import short_error

        if not isinstance(stored, StoredV6Node):
            raise TypeError(f"not a stored vantage6 node: {type(stored).__name__}")
        try:
            with V6NodeClient(stored.server, verify=verify) as client:
                client.login(stored.api_key)
                runs = client.open_runs()
        except V6Error as exc:
            return short_error(exc)
        pending = sum(1 for r in runs if r.status == "pending")
        return f"key accepted; {len(runs)} open run(s), {pending} pending"

    def cli_login(self, args: argparse.Namespace, api_key: str,
                  store: object) -> tuple[list[str], list[str]]:
        """`dss-console v6 login` for a 4.x server: (lines to print, warnings). ConnectError
        says why not, in words, never with the key."""
        from dss_console.sources.v6.login import (
            V6LoginError,
            describe_node,
            login_node,
            read_private_key,
            remember_node,
        )

        nodes = _nodes(store)
        if getattr(args, "auth_url", None) or getattr(args, "realm", None):
            raise ConnectError(f"--auth-url and --realm are not used by a vantage6 4.x server "
                               f"({args.server}): its nodes log in with the API key alone",
                               code=2)
        try:
            pem = read_private_key(args.private_key) if args.private_key is not None else None
            if args.replace_public_key and pem is None:
                raise ConnectError("--replace-public-key needs --private-key FILE", code=2)
            login = login_node(args.server, api_key, pem, verify=args.ca_bundle or True,
                               replace_public_key=args.replace_public_key)
        except V6LoginError as exc:
            raise ConnectError(str(exc)) from None
        node = getattr(args, "node", None)
        if node and node != login.identity.name:
            raise ConnectError(f"this API key is node {login.identity.name!r} on "
                               f"{login.server}, not {node!r}: nothing stored", code=2)
        warnings = []
        if args.replace_public_key and login.uploaded_public_key:
            warnings.append(f"warning: replaced organization "
                            f"{login.identity.organization_name!r}'s public key on the "
                            "server: its other nodes (and tasks already encrypted for the old "
                            "key) can no longer decrypt until they use this key")
        remember_node(login, nodes)
        return describe_node(login), warnings

    # -- the window's login pane ----------------------------------------------------------
    def login_store(self, where: LoginStores) -> object:
        from dss_console.credentials import V6CredentialStore

        return V6CredentialStore(where.directory, use_keyring=where.use_keyring)

    def server_url(self, text: str) -> str:
        from dss_console.sources.v6.client import normalise_server_url

        return normalise_server_url(text)

    def start_login(self, values: Mapping[str, str], store: object,
                    verify: bool | str, submit: Submit) -> LoginCall:
        """The node's keys are remembered (keyring, else a private file) for the engine and
        the next start."""
        server, api_key = values.get("server", ""), values.get("api_key", "")
        key_file = values.get("private_key", "").strip() or None
        try:
            url = self.server_url(server)
        except ValueError as exc:
            raise LoginInputError(f"Check the server address: {exc}.") from None
        if not api_key.strip():
            raise LoginInputError("Paste the node's API key first (the server showed it when "
                                  "the node was registered).")
        nodes = _nodes(store)
        return LoginCall(submit(lambda: _login(server, api_key, key_file, nodes, verify)), url,
                         f"Logging in to {url} as a node…", late=_drop)

    def start_resume(self, server: str, store: object, verify: bool | str,
                     submit: Submit) -> LoginCall:
        nodes = _nodes(store)  # the node logged in last: one node per window
        return LoginCall(submit(lambda: _resume(nodes, verify)), "the vantage6 server",
                         "Logging the vantage6 node in again…", late=_drop,
                         nothing_stored="Log in with the node's API key.")

    def start_borrowed(self, server: str, store: object, verify: bool | str,
                       submit: Submit) -> LoginCall:
        raise LoginInputError("A vantage6 node logs in with its own API key.")

    def login_error(self, error: Exception) -> str | None:
        from dss_console.sources.v6.login import V6LoginError

        if isinstance(error, V6LoginError):
            return f"{str(error)[:1].upper()}{str(error)[1:]}."
        # e.g. the keys could not be stored: say so, in words
        return f"Logging in failed: {error}"

    def resume_error(self, error: Exception) -> str | None:
        from dss_console.sources.v6.login import V6LoginError

        if isinstance(error, V6LoginError):
            return f"Could not log the node in again: {error}. Log in again, or try later."
        return None

    def who(self, credential: object, *, expired: bool = False) -> str:
        login = _node_login(credential)  # a node's key does not expire
        who = login.identity
        return (f"Node <b>{html.escape(who.name)}</b> of <b>"
                f"{html.escape(who.organization_name)}</b> on <b>{unbroken_html(login.server)}"
                f"</b> · collaboration <b>{html.escape(who.collaboration_name)}</b> "
                f"({'encrypted' if who.encrypted else 'not encrypted'})")

    def renew(self, old: object, new: object) -> bool:
        return False  # no session: a login is a new engine

    def logout(self, credential: object, store: object, *, borrowed: bool) -> str:
        """A node's API key does not expire: logging out here forgets it (and the private
        key), as `dss-console v6 logout` does."""
        login = _node_login(credential)
        with contextlib.suppress(OSError):
            _nodes(store).delete_node(login.server, login.identity.name)
        return (f"Logged out node {login.identity.name} of {login.server}: its API key and "
                "private key are forgotten here.")

    def store_note(self, store: object) -> str | None:
        return _nodes(store).fallback_note


def _login(server: str, api_key: str, key_file: str | None, store: V6CredentialStore,
           verify: bool | str) -> NodeLogin:
    """Blocking: log the node in and remember its keys (V6LoginError says why not)."""
    from dss_console.sources.v6.login import login_node, read_private_key, remember_node

    pem = read_private_key(key_file) if key_file else None
    result = login_node(server, api_key, pem, verify=verify)
    remember_node(result, store)
    return result


def _resume(store: V6CredentialStore, verify: bool | str) -> NodeLogin | None:
    """Blocking: log in again as the node logged in last (None: there is none)."""
    from dss_console.sources.v6.login import login_node

    stored = store.load_node()
    if stored is None or not PLUGIN.owns_stored(stored):
        return None  # another generation's node: its family member resumes it
    return login_node(stored.server, stored.api_key, stored.private_key_pem, verify=verify)


def _drop(late: object) -> None:
    """A node login that came back after Cancel: its keys are stored (as any login's), the
    login itself holds no connection."""


def _keys(handover: str) -> dict[str, str]:
    """The node's keys from the console that started this engine (a JSON line on stdin:
    never on the command line or in the environment)."""
    try:
        keys = json.loads(handover or "{}")
    except ValueError:
        keys = {}
    if not isinstance(keys, dict) or not keys.get("api_key"):
        raise ConnectError("--for-console --source v6 needs the node's keys on stdin", code=2)
    return keys


def _nodes(store: object) -> V6CredentialStore:
    from dss_console.credentials import V6CredentialStore

    if not isinstance(store, V6CredentialStore):
        raise TypeError(f"the vantage6 plug-in keeps its nodes' keys in a V6CredentialStore, "
                        f"not in a {type(store).__name__}")
    return store


def _node_login(credential: object) -> NodeLogin:
    from dss_console.sources.v6.login import NodeLogin

    if not isinstance(credential, NodeLogin):
        raise TypeError(f"not a vantage6 node login: {type(credential).__name__}")
    return credential


PLUGIN = V6Plugin()
