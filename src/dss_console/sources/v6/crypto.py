"""Payload encryption compatible byte for byte with vantage6-common 4.15.2's cryptors.

Read from ``vantage6/common/encryption.py`` (4.15.2):

* ``RSACryptor`` (encrypted collaborations): a fresh 32-byte AES-256 key and 16-byte IV per
  message; the payload is AES-CTR encrypted, the key RSA-encrypted with PKCS#1 v1.5 for the
  receiving organization's public key; the text sent is ``b64(key) $ b64(iv) $ b64(payload)``.
  Public keys travel as base64 of the PEM (SubjectPublicKeyInfo). On decryption the official
  code also accepts what the web UI produces: an RSA-decrypted key that is itself base64 text,
  and an AES-decrypted payload that is base64 text of the real (JSON) payload.
* ``DummyCryptor`` (plain collaborations): the payload is only base64-encoded.

The organization's private key is a PEM file without password (the official node's
``RSACryptor.create_new_rsa_key`` writes TraditionalOpenSSL RSA-4096).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SEPARATOR = "$"
SHARED_KEY_LENGTH = 32
IV_LENGTH = 16


class CryptoError(ValueError):
    """A payload or key could not be used; the text never contains key material."""


class Cryptor(Protocol):
    def encrypt(self, data: bytes, public_key_b64: str | None) -> str: ...
    def decrypt(self, text: str) -> bytes: ...


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise CryptoError("not valid base64") from exc


class PlainCryptor:
    """A collaboration without encryption (the official ``DummyCryptor``): base64 only."""

    encrypted = False

    def encrypt(self, data: bytes, public_key_b64: str | None = None) -> str:
        return b64encode(data)

    def decrypt(self, text: str) -> bytes:
        return b64decode(text)


class RsaCryptor:
    """An encrypted collaboration, with this organization's private key."""

    encrypted = True

    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        self._private_key = private_key

    @classmethod
    def from_pem(cls, pem: bytes) -> RsaCryptor:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            # TypeError: the key is password-protected; the node's keys never are.
            raise CryptoError("not a usable PEM private key without password") from exc
        if not isinstance(key, rsa.RSAPrivateKey):
            raise CryptoError("the private key is not an RSA key")
        return cls(key)

    @classmethod
    def from_file(cls, path: Path) -> RsaCryptor:
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise CryptoError(f"cannot read the private key file {path}: "
                              f"{exc.strerror or exc}") from None
        return cls.from_pem(pem)

    @property
    def public_key_b64(self) -> str:
        """What the server stores as the organization's ``public_key``."""
        return public_key_b64(self._private_key)

    def matches(self, server_public_key_b64: str | None) -> bool:
        """True when the server's stored public key is this private key's."""
        if not server_public_key_b64:
            return False
        try:
            stored = b64decode(server_public_key_b64)
        except CryptoError:
            return False
        if stored == _public_pem(self._private_key):
            return True
        # The same key written another way (line ends, a web UI's upload): compare numbers.
        try:
            public = serialization.load_pem_public_key(stored)
        except (ValueError, TypeError):
            return False
        return (isinstance(public, rsa.RSAPublicKey)
                and public.public_numbers() == self._private_key.public_key().public_numbers())

    def encrypt(self, data: bytes, public_key_b64: str | None) -> str:
        return rsa_encrypt(data, public_key_b64)

    def decrypt(self, text: str) -> bytes:
        parts = text.split(SEPARATOR, 2)
        if len(parts) != 3:
            raise CryptoError("encrypted payload is not key$iv$message")
        enc_key, iv, message = (b64decode(p) for p in parts)
        try:
            shared = self._private_key.decrypt(enc_key, padding.PKCS1v15())
        except ValueError as exc:
            raise CryptoError("cannot decrypt the payload key: encrypted for another "
                              "organization's key?") from exc
        # The web UI encrypts the base64 text of the key (JavaScript cannot encrypt bytes).
        with contextlib.suppress(UnicodeDecodeError, CryptoError):
            shared = b64decode(shared.decode("utf-8"))
        if len(shared) != SHARED_KEY_LENGTH:
            # cryptography's PKCS#1 v1.5 uses implicit rejection: a wrong key yields random
            # bytes rather than an error, so the length is where a wrong key shows.
            raise CryptoError("cannot decrypt the payload key: encrypted for another "
                              "organization's key?")
        if len(iv) != IV_LENGTH:
            raise CryptoError(f"payload IV is {len(iv)} bytes, expected 16")
        decryptor = Cipher(algorithms.AES(shared), modes.CTR(iv)).decryptor()
        result = decryptor.update(message) + decryptor.finalize()
        # The UI also base64s the payload; the official code tries JSON first, then base64.
        try:
            json.loads(result.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            with contextlib.suppress(UnicodeDecodeError, binascii.Error, ValueError):
                result = base64.b64decode(result.decode("utf-8"))
        return result


def rsa_encrypt(data: bytes, public_key_b64: str | None) -> str:
    """Encrypt for the organization whose (base64 PEM) public key is given."""
    if not public_key_b64:
        raise CryptoError("the receiving organization has no public key on the server")
    try:
        public = serialization.load_pem_public_key(b64decode(public_key_b64))
    except (ValueError, CryptoError) as exc:
        raise CryptoError("the receiving organization's public key is unusable") from exc
    if not isinstance(public, rsa.RSAPublicKey):
        raise CryptoError("the receiving organization's public key is not an RSA key")
    shared = os.urandom(SHARED_KEY_LENGTH)
    iv = os.urandom(IV_LENGTH)
    encryptor = Cipher(algorithms.AES(shared), modes.CTR(iv)).encryptor()
    message = encryptor.update(data) + encryptor.finalize()
    enc_key = public.encrypt(shared, padding.PKCS1v15())
    return SEPARATOR.join([b64encode(enc_key), b64encode(iv), b64encode(message)])


def public_key_b64(private_key: rsa.RSAPrivateKey) -> str:
    return b64encode(_public_pem(private_key))


def _public_pem(private_key: rsa.RSAPrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )


def new_private_key_pem(bits: int = 4096) -> bytes:
    """A new organization key in the official node's format (PEM, TraditionalOpenSSL)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.TraditionalOpenSSL,
        encryption_algorithm=serialization.NoEncryption(),
    )
