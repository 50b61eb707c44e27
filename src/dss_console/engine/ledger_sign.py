"""Signing the ledger (opt-in: ``sign_ledger = true``): each record carries an Ed25519
signature (``sig``) over its canonical bytes without ``sig``, so a copy can be checked
elsewhere with the public key alone, and a file rewritten with its chain re-hashed fails.

The private key lives in the OS keyring (service ``dss-console-ledger``, one key per data
dir), never in a file beside the ledger it protects: whoever could rewrite the one could
rewrite the other. No keyring: signing is refused in words and records are written unsigned.
The public key is written beside the ledgers (``signing.pub``, PEM) and named in the chain
(the ``ledger`` record, or a ``signing`` record when signing begins later).
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from dss_console.engine.ledger import canonical, ledger_dir

KEYRING_SERVICE = "dss-console-ledger"
PUBLIC_KEY_FILE = "signing.pub"
_PREFIX = "ed25519:"


class SigningUnavailable(Exception):
    """Signing was asked for and cannot be done (the words say why)."""


def keyring_user(data_dir: Path) -> str:
    return hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:16]


def signing_key(data_dir: Path, *, create: bool = True) -> Ed25519PrivateKey:
    """The data dir's signing key from the keyring (made and stored there the first time)."""
    if os.environ.get("DSS_CONSOLE_KEYRING", "").lower() in ("0", "off", "no", "false"):
        raise SigningUnavailable("the keyring is switched off (DSS_CONSOLE_KEYRING): the "
                                 "ledger's signing key has nowhere safe to live")
    import keyring
    from keyring.errors import KeyringError

    user = keyring_user(data_dir)
    try:
        stored = keyring.get_password(KEYRING_SERVICE, user)
        if stored is None and create:
            raw = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                serialization.NoEncryption())
            keyring.set_password(KEYRING_SERVICE, user, base64.b64encode(raw).decode())
            # Read back: a keyring that drops what it is given keeps no key.
            stored = keyring.get_password(KEYRING_SERVICE, user)
    except (KeyringError, RuntimeError) as exc:
        raise SigningUnavailable(f"no keyring to keep the ledger's signing key ({exc})") \
            from None
    if stored is None:
        raise SigningUnavailable("the keyring did not keep the ledger's signing key")
    try:
        return Ed25519PrivateKey.from_private_bytes(base64.b64decode(stored))
    except ValueError:
        raise SigningUnavailable("the keyring's ledger signing key is not an Ed25519 key") \
            from None


def public_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """``ed25519:<base64 of the raw public key>``: how the chain names its key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _PREFIX + base64.b64encode(raw).decode()


def fingerprint(text: str) -> str:
    """``ed25519:9c1e4b2a…``: a short name for a public key."""
    raw = base64.b64decode(text.removeprefix(_PREFIX))
    return f"{_PREFIX}{hashlib.sha256(raw).hexdigest()[:12]}…"


def signer(key: Ed25519PrivateKey) -> Callable[[bytes], dict[str, str]]:
    """For the writer: a record's canonical bytes → the fields that sign them."""
    return lambda data: {"sig": base64.b64encode(key.sign(data)).decode()}


def write_public_key(data_dir: Path, key: Ed25519PrivateKey) -> Path:
    path = ledger_dir(data_dir) / PUBLIC_KEY_FILE
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    if not path.exists() or path.read_bytes() != pem:
        fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
    return path


def read_public_key(given: str) -> str:
    """``--public-key K``: a PEM file, or the ``ed25519:…`` text the chain names."""
    if given.startswith(_PREFIX):
        _public(given)  # a bad one fails here, in words
        return given
    try:
        data = Path(given).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the public key {given}: {exc.strerror or exc}") \
            from None
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise ValueError(f"{given} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{given} is not an Ed25519 public key")
    return public_text(key)


def _public(text: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text.removeprefix(_PREFIX)))
    except ValueError:
        raise ValueError(f"not an Ed25519 public key: {text[:40]}") from None


def signature_problem(public: str, record: dict[str, Any]) -> str | None:
    """None when ``record``'s signature holds under ``public``, else why not."""
    sig = record.get("sig")
    if not isinstance(sig, str):
        return "it carries no signature"
    body = {key: value for key, value in record.items() if key != "sig"}
    try:
        _public(public).verify(base64.b64decode(sig), canonical(body))
    except (InvalidSignature, ValueError):
        return "its signature does not hold"
    return None
