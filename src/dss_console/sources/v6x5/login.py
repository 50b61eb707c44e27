"""Logging a vantage6 5.x node in: a token from the server's Keycloak for
``{node}-node-client`` with the API key as secret, ``GET /hq/node/me``, the organization's
private key checked as 4.x checks it, and HQ's blob store refused (this node keeps results in
HQ's database only). Qt-free, blocking; for ``dss-console v6 login`` (and the window's login
once the 5.x node joins it).
"""

from __future__ import annotations

from dataclasses import dataclass

from dss_console.credentials import StoredV6Node, V6CredentialStore
from dss_console.sources.v6 import crypto
from dss_console.sources.v6.client import (
    NodeIdentity,
    V6Error,
    V6NotLoggedInError,
    normalise_server_url,
)
from dss_console.sources.v6.login import V6LoginError, short_error
from dss_console.sources.v6.source import (
    V6KeyError,
    V6KeyMismatchError,
    check_public_key,
    make_cryptor,
)
from dss_console.sources.v6x5.auth import DEFAULT_REALM, node_client_id, normalise_auth_url
from dss_console.sources.v6x5.client import API_PATH, HqNodeClient


@dataclass(frozen=True)
class HqNodeLogin:
    """A 5.x node that logged in: where, through which auth server, who."""

    server: str  # the API URL, ending in /hq
    auth_url: str
    realm: str
    identity: NodeIdentity
    api_key: str
    private_key_pem: bytes | None
    uploaded_public_key: bool

    @property
    def source_key(self) -> str:
        """The key its engine serves under: one engine per node, as 4.x."""
        return f"{self.server}#node-{self.identity.node_id}"

    def __repr__(self) -> str:  # the keys stay out of tracebacks and logs
        return (f"HqNodeLogin(server={self.server!r}, auth_url={self.auth_url!r}, "
                f"node={self.identity.name!r}, node_id={self.identity.node_id})")


def login_hq_node(server: str, auth_url: str, node: str, api_key: str,
                  private_key_pem: bytes | None = None, *, realm: str = DEFAULT_REALM,
                  verify: bool | str = True, replace_public_key: bool = False) -> HqNodeLogin:
    """Log the node in and learn who it is; V6LoginError says why not, in words (never the
    API key or a token)."""
    try:
        server = normalise_server_url(server, API_PATH)
        auth_url = normalise_auth_url(auth_url)
    except ValueError as exc:
        raise V6LoginError(str(exc)) from None
    api_key, node, realm = api_key.strip(), node.strip(), (realm or DEFAULT_REALM).strip()
    if not api_key:
        raise V6LoginError("no API key given (the node's API key, as HQ showed it when the "
                           "node was created)")
    if not node:
        raise V6LoginError("no node name given: a vantage6 5.x node logs in as the client "
                           "NAME-node-client, so its name is needed beside the API key")
    client = HqNodeClient(server, auth_url=auth_url, node=node, realm=realm, verify=verify)
    uploaded = False
    try:
        try:
            client.login(api_key)
            who = client.whoami()
        except V6NotLoggedInError as exc:
            raise V6LoginError(f"node {node!r} could not log in to {server}: "
                               f"{short_error(exc)}") from None
        if who.name != node:  # the client is someone else's: say so rather than store it
            raise V6LoginError(f"client {node_client_id(node)!r} is node {who.name!r} on "
                               f"{server}, not {node!r}")
        if client.blob_store_enabled():
            raise V6LoginError(f"{server} keeps results in a blob store (Azure), which this "
                               "node does not support: results would not reach the "
                               "researcher")
        cryptor = make_cryptor(who, private_key_pem)
        if isinstance(cryptor, crypto.RsaCryptor):
            uploaded = check_public_key(client, who, cryptor, replace=replace_public_key)
        elif private_key_pem is not None:
            # Kept anyway (the collaboration may become encrypted): it must be usable.
            crypto.RsaCryptor.from_pem(private_key_pem)
    except (V6KeyError, V6KeyMismatchError) as exc:
        raise V6LoginError(str(exc)) from None
    except V6LoginError:
        raise
    except (V6Error, ValueError) as exc:
        raise V6LoginError(f"cannot log in to {server}: {short_error(exc)}") from None
    finally:
        client.close()
    return HqNodeLogin(server=server, auth_url=auth_url, realm=realm, identity=who,
                       api_key=api_key, private_key_pem=private_key_pem,
                       uploaded_public_key=uploaded)


def remember_hq_node(login: HqNodeLogin, store: V6CredentialStore) -> None:
    """Stored as a 4.x node is, with the auth server and realm beside it (not secret)."""
    who = login.identity
    info = {"node_id": who.node_id, "organization_id": who.organization_id,
            "organization": who.organization_name, "collaboration_id": who.collaboration_id,
            "collaboration": who.collaboration_name, "encrypted": who.encrypted}
    store.save_node(StoredV6Node(server=login.server, node=who.name, api_key=login.api_key,
                                 private_key_pem=login.private_key_pem, info=info,
                                 auth_url=login.auth_url, realm=login.realm))


def describe_hq_node(login: HqNodeLogin) -> list[str]:
    """Who logged in, in the lines `v6 login` prints."""
    who = login.identity
    lines = [f"logged in to {login.server} (vantage6 5.x) as node {who.name!r} "
             f"(id {who.node_id})",
             f"  authentication: {login.auth_url} (realm {login.realm})",
             f"  organization:  {who.organization_name} (id {who.organization_id})",
             f"  collaboration: {who.collaboration_name} (id {who.collaboration_id}), "
             f"{'encrypted' if who.encrypted else 'not encrypted'}"]
    if login.uploaded_public_key:
        lines.append("  uploaded this private key's public key to the organization (HQ had "
                     "none, or --replace-public-key replaced it)")
    return lines
