"""Compact JWS (RFC 7515) signed and checked with an RSA key, as Keycloak's realm tokens are.

Shared by the node's login (``auth.py`` checks the token it is given, as the official node
does through python-keycloak) and the stand-in (which signs them). Only RS256/384/512
(PKCS#1 v1.5), a ``kid`` in the header, and the checks HQ 5.0.3 and python-keycloak make
(signature with the realm's key, ``exp``). Built on ``cryptography``, the console's own
dependency, so neither adds one.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "RS256": hashes.SHA256, "RS384": hashes.SHA384, "RS512": hashes.SHA512}


class TokenError(ValueError):
    """A token that is malformed, wrongly signed or no longer valid; the message says which
    (never the token itself)."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_key() -> rsa.RSAPrivateKey:
    """A realm key: RSA-2048, what Keycloak generates for a new realm."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")


def load_private_pem(pem: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the realm key is not an RSA key")
    return key


def public_key_b64(key: rsa.RSAPublicKey) -> str:
    """The SubjectPublicKeyInfo in base64 without PEM armour: the ``public_key`` of
    ``GET /realms/{realm}``, which HQ and python-keycloak wrap in BEGIN/END lines."""
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def load_public_key_b64(text: str) -> rsa.RSAPublicKey:
    """A realm's ``public_key`` (base64 DER SubjectPublicKeyInfo, no armour) as a key;
    ValueError when it is not an RSA public key."""
    try:
        key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, TypeError) as exc:
        raise ValueError("the realm's public key is not a base64 RSA public key") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the realm's public key is not an RSA key")
    return key


def sign(claims: dict[str, Any], key: rsa.RSAPrivateKey, kid: str, alg: str = "RS256") -> str:
    header = {"alg": alg, "typ": "JWT", "kid": kid}
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + b64url(json.dumps(claims, separators=(",", ":")).encode()))
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), _HASHES[alg]())
    return signing_input + "." + b64url(signature)


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload without any check (to say *why* a token is refused, or for tests)."""
    try:
        payload = json.loads(b64url_decode(token.split(".")[1]))
    except (IndexError, ValueError) as exc:
        raise TokenError("the token is not a compact JWS") from exc
    if not isinstance(payload, dict):
        raise TokenError("the token's payload is not a JSON object")
    return payload


def verify(token: str, key: rsa.RSAPublicKey, *, now: float | None = None,
           leeway: float = 0.0) -> dict[str, Any]:
    """The claims of a token signed by ``key`` that has not expired; TokenError otherwise."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("the token is not a compact JWS")
    try:
        header = json.loads(b64url_decode(parts[0]))
        signature = b64url_decode(parts[2])
    except ValueError as exc:
        raise TokenError("the token's header or signature is not base64url JSON") from exc
    alg = header.get("alg") if isinstance(header, dict) else None
    if alg not in _HASHES:
        raise TokenError(f"unsupported token algorithm {alg!r}")
    try:
        key.verify(signature, (parts[0] + "." + parts[1]).encode("ascii"), padding.PKCS1v15(),
                   _HASHES[alg]())
    except InvalidSignature:
        raise TokenError("invalid token signature") from None
    claims = unverified_claims(token)
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)):
        raise TokenError("the token has no expiry")
    if (time.time() if now is None else now) > exp + leeway:
        raise TokenError("the token has expired")
    return claims
