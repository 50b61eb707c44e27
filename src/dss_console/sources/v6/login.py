"""Logging a vantage6 node in: check its API key (and its organization's private key) against
the server and remember both. One function for ``dss-console v6 login`` and the window's
login page; Qt-free, blocking (the window runs it off its thread).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dss_console.credentials import StoredV6Node, V6CredentialStore
from dss_console.sources.v6 import crypto
from dss_console.sources.v6.client import (
    NodeIdentity,
    V6Error,
    V6NotLoggedInError,
    normalise_server_url,
)
from dss_console.sources.v6.settings import V6Settings
from dss_console.sources.v6.source import V6KeyError, V6KeyMismatchError, V6Source, check_public_key


class V6LoginError(Exception):
    """The node could not log in; the message says why, in words (never the key)."""


@dataclass(frozen=True)
class NodeLogin:
    """A node that logged in: where, who, and whether its public key was uploaded."""

    server: str  # the API URL, ending in /api
    identity: NodeIdentity
    api_key: str
    private_key_pem: bytes | None
    uploaded_public_key: bool

    @property
    def source_key(self) -> str:
        """The key its engine serves under (V6Source.key): one engine per node."""
        return f"{self.server}#node-{self.identity.node_id}"

    def __repr__(self) -> str:  # the keys stay out of tracebacks and logs
        return (f"NodeLogin(server={self.server!r}, node={self.identity.name!r}, "
                f"node_id={self.identity.node_id})")


def read_private_key(path: Path | str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise V6LoginError(f"cannot read the private key {path}: {exc.strerror or exc}") \
            from None


def login_node(server: str, api_key: str, private_key_pem: bytes | None = None, *,
               verify: bool | str = True, replace_public_key: bool = False) -> NodeLogin:
    """Log in with the node's API key, learn who it is, check the private key (required when
    the collaboration is encrypted) and upload its public key when the organization has
    none, as the official node does at start. A key that does not match the organization's
    registered public key is refused unless ``replace_public_key`` (the operator's explicit
    choice: other nodes of the organization then stop decrypting)."""
    try:
        server = normalise_server_url(server)
    except ValueError as exc:
        raise V6LoginError(str(exc)) from None
    api_key = api_key.strip()
    if not api_key:
        raise V6LoginError("no API key given (the node's API key, as the server printed it "
                           "when the node was created)")
    try:
        source = V6Source.connect(server, api_key, V6Settings(), private_key_pem=private_key_pem,
                                  verify=verify, upload_public_key=False)
    except V6NotLoggedInError as exc:
        raise V6LoginError(f"{server} did not accept this API key "
                           f"({exc.__class__.__name__}: {short_error(exc)})") from None
    except V6KeyError as exc:
        raise V6LoginError(str(exc)) from None
    except V6Error as exc:
        raise V6LoginError(f"cannot log in to {server}: {short_error(exc)}") from None
    uploaded = False
    try:
        who = source.identity
        if isinstance(source.cryptor, crypto.RsaCryptor):
            uploaded = check_public_key(source.client, who, source.cryptor,
                                        replace=replace_public_key)
        elif private_key_pem is not None:
            # Kept anyway (the collaboration may become encrypted): it must be usable.
            crypto.RsaCryptor.from_pem(private_key_pem)
    except V6KeyMismatchError as exc:
        raise V6LoginError(str(exc)) from None
    except (V6Error, ValueError) as exc:
        raise V6LoginError(f"logged in, but the key check failed: {short_error(exc)}") \
            from None
    finally:
        source.close()
    return NodeLogin(server=server, identity=who, api_key=api_key,
                     private_key_pem=private_key_pem, uploaded_public_key=uploaded)


def remember_node(login: NodeLogin, store: V6CredentialStore) -> None:
    who = login.identity
    info = {"node_id": who.node_id, "organization_id": who.organization_id,
            "organization": who.organization_name, "collaboration_id": who.collaboration_id,
            "collaboration": who.collaboration_name, "encrypted": who.encrypted}
    store.save_node(StoredV6Node(server=login.server, node=who.name, api_key=login.api_key,
                                 private_key_pem=login.private_key_pem, info=info))


def describe_node(login: NodeLogin) -> list[str]:
    """Who logged in, in the lines `v6 login` prints and the window shows."""
    who = login.identity
    lines = [f"logged in to {login.server} as node {who.name!r} (id {who.node_id})",
             f"  organization:  {who.organization_name} (id {who.organization_id})",
             f"  collaboration: {who.collaboration_name} (id {who.collaboration_id}), "
             f"{'encrypted' if who.encrypted else 'not encrypted'}"]
    if login.uploaded_public_key:
        lines.append("  uploaded this private key's public key to the organization (the "
                     "server had none, or --replace-public-key replaced it)")
    return lines


def short_error(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
