"""A node's organization keys: whether an encrypted collaboration can be served with the
private key given, and the public key the organization registered on the server.

Moved out of ``source.py`` (a module's size cap); ``source.py`` re-exports the names.
"""

from __future__ import annotations

from dss_console.sources.v6 import crypto
from dss_console.sources.v6.client import NodeIdentity, V6NodeClient


class V6KeyError(ValueError):
    """The collaboration is encrypted and no usable private key was given (in words)."""


class V6KeyMismatchError(V6KeyError):
    """The private key is not the one whose public key the organization registered."""


def key_mismatch_message(identity: NodeIdentity) -> str:
    return (f"this private key does not match the public key organization "
            f"{identity.organization_name!r} registered on the server: it is another "
            "organization's key, or an old one. Give the organization's key; to replace the "
            "registered public key on purpose, log in again with --replace-public-key (other "
            "nodes of this organization, and researchers' tasks already encrypted for the "
            "old key, then stop decrypting)")


def check_public_key(client: V6NodeClient, identity: NodeIdentity,
                     cryptor: crypto.RsaCryptor, *, replace: bool = False) -> bool:
    """Upload our public key when the organization has none (as the official node does);
    refuse (V6KeyMismatchError) when it has another one, unless ``replace``. True when
    uploaded."""
    current = client.organization_public_key(identity.organization_id)
    if cryptor.matches(current):
        return False
    if current and not replace:
        raise V6KeyMismatchError(key_mismatch_message(identity))
    client.upload_public_key(identity.organization_id, cryptor.public_key_b64)
    return True


def make_cryptor(identity: NodeIdentity, private_key_pem: bytes | None
                 ) -> crypto.PlainCryptor | crypto.RsaCryptor:
    if not identity.encrypted:
        return crypto.PlainCryptor()
    if not private_key_pem:
        raise V6KeyError(f"collaboration {identity.collaboration_name!r} is encrypted: this "
                         "node needs its organization's private key (--private-key FILE)")
    try:
        return crypto.RsaCryptor.from_pem(private_key_pem)
    except crypto.CryptoError as exc:
        raise V6KeyError(f"the private key cannot be used: {exc}") from None
