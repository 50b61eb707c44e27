"""Session storage: keyring when one works, a private file otherwise; never the token."""

from __future__ import annotations

import json
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.errors import PasswordSetError

from dss_console.credentials import SessionStore


class MemoryKeyring(KeyringBackend):
    """An in-process keyring backend, standing in for the desktop's secret service."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.secrets.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.secrets[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.secrets.pop((service, username), None)


class BrokenKeyring(MemoryKeyring):
    def set_password(self, service: str, username: str, password: str) -> None:
        raise PasswordSetError("the collection is locked")


@pytest.fixture
def memory_keyring() -> MemoryKeyring:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


def test_keyring_holds_the_secret_file_holds_only_the_index(tmp_path: Path,
                                                            memory_keyring: MemoryKeyring) -> None:
    store = SessionStore(tmp_path, use_keyring=True)
    assert store.uses_keyring
    store.save("https://dss.example.org", "a" * 40, "me@lab.org")
    assert memory_keyring.secrets == {("dss-console", "https://dss.example.org"): "a" * 40}
    assert not (tmp_path / "sessions.json").exists()
    assert "a" * 40 not in (tmp_path / "servers.json").read_text()
    assert store.fallback_note is None
    loaded = store.load("https://dss.example.org")
    assert loaded is not None and (loaded.session_id, loaded.email) == ("a" * 40, "me@lab.org")
    assert store.last_server() == "https://dss.example.org"
    store.delete("https://dss.example.org")
    assert memory_keyring.secrets == {}
    assert store.load("https://dss.example.org") is None


def test_broken_keyring_falls_back_to_private_file(tmp_path: Path) -> None:
    previous = keyring.get_keyring()
    keyring.set_keyring(BrokenKeyring())
    try:
        store = SessionStore(tmp_path, use_keyring=True)
        store.save("https://dss.example.org", "b" * 40, "me@lab.org")
    finally:
        keyring.set_keyring(previous)
    assert store.fallback_note and "readable by this user only" in store.fallback_note
    secrets = tmp_path / "sessions.json"
    assert json.loads(secrets.read_text()) == {"https://dss.example.org": "b" * 40}
    assert secrets.stat().st_mode & 0o777 == 0o600
    assert SessionStore(tmp_path, use_keyring=False).load("https://dss.example.org")


def test_fallback_note_only_once(tmp_path: Path) -> None:
    first = SessionStore(tmp_path, use_keyring=False)
    first.save("http://a", "1" * 40, "a@x")
    assert first.fallback_note
    second = SessionStore(tmp_path, use_keyring=False)
    second.save("http://b", "2" * 40, "b@x")
    assert second.fallback_note is None
    assert sorted(second.known_servers()) == ["http://a", "http://b"]


def test_corrupt_files_read_as_empty(tmp_path: Path) -> None:
    (tmp_path / "servers.json").write_text("{not json")
    store = SessionStore(tmp_path, use_keyring=False)
    assert store.load("http://a") is None and store.last_server() is None
    store.save("http://a", "1" * 40, "a@x")
    assert store.load("http://a") is not None
