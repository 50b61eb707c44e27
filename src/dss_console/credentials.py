"""Session storage: the session cookie per server, never the token.

Secrets go to the OS keyring. Where no keyring backend works (a headless Linux box) they go
to a 0600 file in the user data dir, and `fallback_note` says so. A non-secret index file
remembers the servers used, their account e-mail and the last one logged in to.
Nothing here ever writes `~/.alfabis` (that would switch ITK-SNAP's own server).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dss_console import paths

KEYRING_SERVICE = "dss-console"
INDEX_FILE = "servers.json"
FALLBACK_FILE = "sessions.json"


@dataclass(frozen=True)
class StoredSession:
    server: str
    session_id: str
    email: str


class SessionStore:
    """Stores one session per normalised server URL."""

    def __init__(self, directory: Path | None = None, *, use_keyring: bool | None = None):
        self.directory = paths.ensure_private_dir(directory) if directory else paths.data_dir()
        if use_keyring is None:
            use_keyring = os.environ.get("DSS_CONSOLE_KEYRING", "").lower() not in ("0", "off",
                                                                                     "no")
        self._keyring = _working_keyring() if use_keyring else None
        self.fallback_note: str | None = None

    @property
    def uses_keyring(self) -> bool:
        return self._keyring is not None

    # -- public API -------------------------------------------------------------------------
    def save(self, server: str, session_id: str, email: str) -> None:
        stored_in = "file"
        if self._keyring is not None:
            try:
                self._keyring.set_password(KEYRING_SERVICE, server, session_id)
                stored_in = "keyring"
            except Exception:  # any backend failure (locked, D-Bus gone): fall back, loudly
                self._keyring = None
        if stored_in == "file":
            secrets = self._read_json(FALLBACK_FILE)
            secrets[server] = session_id
            self._write_json(FALLBACK_FILE, secrets)
            self._note_fallback()
        index = self._read_json(INDEX_FILE)
        servers = index.setdefault("servers", {})
        servers[server] = {"email": email, "store": stored_in}
        index["last"] = server
        self._write_json(INDEX_FILE, index)

    def load(self, server: str) -> StoredSession | None:
        entry = self._read_json(INDEX_FILE).get("servers", {}).get(server)
        if not entry:
            return None
        session_id = None
        if entry.get("store") == "keyring" and self._keyring is not None:
            with contextlib.suppress(Exception):
                session_id = self._keyring.get_password(KEYRING_SERVICE, server)
        if session_id is None:
            session_id = self._read_json(FALLBACK_FILE).get(server)
        if not session_id:
            return None
        return StoredSession(server=server, session_id=session_id, email=entry.get("email", ""))

    def delete(self, server: str) -> None:
        if self._keyring is not None:
            with contextlib.suppress(Exception):
                self._keyring.delete_password(KEYRING_SERVICE, server)
        secrets = self._read_json(FALLBACK_FILE)
        if secrets.pop(server, None) is not None:
            self._write_json(FALLBACK_FILE, secrets)
        index = self._read_json(INDEX_FILE)
        if server in index.get("servers", {}):
            index["servers"][server].pop("store", None)
            self._write_json(INDEX_FILE, index)

    def forget(self, server: str) -> None:
        """Delete the session and drop the server from the list of known servers."""
        self.delete(server)
        index = self._read_json(INDEX_FILE)
        if index.get("servers", {}).pop(server, None) is not None or index.get("last") == server:
            if index.get("last") == server:
                index.pop("last", None)
            self._write_json(INDEX_FILE, index)

    def last_server(self) -> str | None:
        return self._read_json(INDEX_FILE).get("last")

    def known_servers(self) -> list[str]:
        return list(self._read_json(INDEX_FILE).get("servers", {}))

    # -- files ------------------------------------------------------------------------------
    def _note_fallback(self) -> None:
        index = self._read_json(INDEX_FILE)
        if index.get("fallback_noted"):
            return
        index["fallback_noted"] = True
        self._write_json(INDEX_FILE, index)
        self.fallback_note = (
            "note: no working OS keyring here, so the session is kept in "
            f"{self.directory / FALLBACK_FILE} (readable by this user only)")

    def _read_json(self, name: str) -> dict[str, Any]:
        try:
            with open(self.directory / name, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_json(self, name: str, data: dict[str, Any]) -> None:
        # mkstemp creates the file 0600, and the rename means it is never half-written.
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=1, sort_keys=True)
            os.replace(tmp, self.directory / name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _working_keyring() -> Any | None:
    """The keyring backend, or None when only the 'fail' (or a plaintext) backend exists."""
    try:
        import keyring
        from keyring.backends import fail
    except Exception:
        return None
    try:
        backend = keyring.get_keyring()
    except Exception:
        return None
    if isinstance(backend, fail.Keyring):
        return None
    # keyrings.alt's plaintext file backends are not a keyring; our own 0600 file is no worse.
    if type(backend).__module__.startswith("keyrings.alt"):
        return None
    return backend
