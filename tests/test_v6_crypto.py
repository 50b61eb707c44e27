"""Payload crypto: ours against vantage6-common 4.15.2's RSACryptor/DummyCryptor, both ways.

The official code runs in the sandbox venv (a subprocess); no vantage6 package is imported
into the test process.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from dss_console.sources.v6 import crypto

from v6_fixtures import SERVER_TEST_TIMEOUT, run_official

pytestmark = pytest.mark.timeout(SERVER_TEST_TIMEOUT)

PAYLOAD = json.dumps({"method": "column_mean", "kwargs": {"column": "age"},
                      "note": "ünïcode ✓ " + "x" * 5000}).encode()


@pytest.fixture(scope="module")
def key_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, crypto.RsaCryptor]:
    # 2048 bits keeps the module fast; the format is the same as the node's 4096-bit keys.
    pem = crypto.new_private_key_pem(2048)
    path = tmp_path_factory.mktemp("keys") / "org.pem"
    path.write_bytes(pem)
    os.chmod(path, 0o600)
    return path, crypto.RsaCryptor.from_pem(pem)


def test_ours_to_official_rsa(v6_python: Path, key_pair: tuple[Path, crypto.RsaCryptor]) -> None:
    path, ours = key_pair
    text = ours.encrypt(PAYLOAD, ours.public_key_b64)
    assert text.count("$") == 2
    code = (
        "import sys, pathlib; from vantage6.common.encryption import RSACryptor\n"
        f"c = RSACryptor(pathlib.Path({str(path)!r}))\n"
        "sys.stdout.buffer.write(c.decrypt_str_to_bytes(sys.stdin.read()))\n"
        "assert c.verify_public_key(sys.argv[1] if len(sys.argv) > 1 else c.public_key_str)\n")
    out = run_official(v6_python, code, stdin=text)
    assert out.encode() == PAYLOAD


def test_official_to_ours_rsa(v6_python: Path, key_pair: tuple[Path, crypto.RsaCryptor]) -> None:
    path, ours = key_pair
    code = (
        "import sys, pathlib; from vantage6.common.encryption import RSACryptor\n"
        f"c = RSACryptor(pathlib.Path({str(path)!r}))\n"
        "print(c.public_key_str)\n"
        "print(c.encrypt_bytes_to_str(sys.stdin.buffer.read(), c.public_key_str))\n")
    public, text = run_official(v6_python, code, stdin=PAYLOAD.decode()).splitlines()
    # The public key format (base64 of the SubjectPublicKeyInfo PEM) is the same string.
    assert public == ours.public_key_b64
    assert ours.matches(public)
    assert ours.decrypt(text) == PAYLOAD


def test_plain_both_ways(v6_python: Path) -> None:
    plain = crypto.PlainCryptor()
    code = (
        "import sys; from vantage6.common.encryption import DummyCryptor\n"
        "c = DummyCryptor()\n"
        "data = c.decrypt(sys.stdin.readline().strip())\n"
        "print(c.encrypt_bytes_to_str(data, None))\n")
    echoed = run_official(v6_python, code, stdin=plain.encrypt(PAYLOAD) + "\n").strip()
    assert plain.decrypt(echoed) == PAYLOAD


def test_ui_variant_is_accepted(key_pair: tuple[Path, crypto.RsaCryptor]) -> None:
    """The web UI encrypts the base64 text of the AES key and of the payload."""
    _path, ours = key_pair
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    shared, iv = os.urandom(32), os.urandom(16)
    enc = Cipher(algorithms.AES(shared), modes.CTR(iv)).encryptor()
    body = enc.update(base64.b64encode(b'{"a": 1}')) + enc.finalize()
    public = serialization.load_pem_public_key(base64.b64decode(ours.public_key_b64))
    key = public.encrypt(base64.b64encode(shared), padding.PKCS1v15())  # type: ignore[union-attr]
    text = "$".join(base64.b64encode(p).decode() for p in (key, iv, body))
    assert ours.decrypt(text) == b'{"a": 1}'


def test_errors_carry_no_key_material(key_pair: tuple[Path, crypto.RsaCryptor]) -> None:
    _path, ours = key_pair
    other = crypto.RsaCryptor.from_pem(crypto.new_private_key_pem(2048))
    text = other.encrypt(b"{}", other.public_key_b64)
    with pytest.raises(crypto.CryptoError) as info:
        ours.decrypt(text)
    assert "another organization" in str(info.value)
    for bad in ("nope", "a$b", "!!!$!!!$!!!"):
        with pytest.raises(crypto.CryptoError):
            ours.decrypt(bad)
    with pytest.raises(crypto.CryptoError, match="no public key"):
        ours.encrypt(b"{}", None)
    with pytest.raises(crypto.CryptoError, match="PEM private key"):
        crypto.RsaCryptor.from_pem(b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n")
