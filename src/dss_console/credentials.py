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


# -- vantage6 nodes ---------------------------------------------------------------------------

V6_KEYRING_SERVICE = "dss-console-v6"
V6_INDEX_FILE = "v6-nodes.json"
V6_FALLBACK_FILE = "v6-secrets.json"


@dataclass(frozen=True)
class StoredV6Node:
    """A vantage6 node this machine logged in as: one API key = one node = one
    collaboration (and, when it is encrypted, one organization private key)."""

    server: str                # the API URL, ending in /api (4.x) or /hq (5.x)
    node: str                  # the node's name on the server
    api_key: str
    private_key_pem: bytes | None
    info: dict[str, Any]       # non-secret: ids and names of node, organization, collaboration
    # A 5.x node's authentication server (Keycloak) and realm; None: a 4.x node.
    auth_url: str | None = None
    realm: str | None = None


class V6CredentialStore(SessionStore):
    """API key and private key per (server, node): keyring, else a 0600 file.

    Separate files from the DSS sessions (``v6-nodes.json`` index, ``v6-secrets.json``
    fallback), so neither store can disturb the other. A 4096-bit PEM is larger than some
    keyrings accept (Windows: 2.5 KB); such a failure falls back to the file, as any other.
    """

    def save_node(self, node: StoredV6Node) -> None:
        entry_key = _v6_key(node.server, node.node)
        secrets = {"api_key": node.api_key,
                   "private_key": node.private_key_pem.decode("ascii")
                   if node.private_key_pem else ""}
        stored_in = "file"
        if self._keyring is not None:
            try:
                for name, value in secrets.items():
                    self._keyring.set_password(V6_KEYRING_SERVICE, f"{entry_key}#{name}", value)
                stored_in = "keyring"
            except Exception:  # any backend failure (locked, too large): fall back, loudly
                self._keyring = None
        fallback = self._read_json(V6_FALLBACK_FILE)
        if stored_in == "file":
            fallback[entry_key] = secrets
            self.fallback_note = (
                "note: no working OS keyring here, so the node's API key and private key are "
                f"kept in {self.directory / V6_FALLBACK_FILE} (readable by this user only)")
        else:
            fallback.pop(entry_key, None)
        self._write_json(V6_FALLBACK_FILE, fallback)
        index = self._read_json(V6_INDEX_FILE)
        entry: dict[str, Any] = {"server": node.server, "node": node.node, "store": stored_in,
                                 "info": node.info}
        if node.auth_url is not None:
            entry.update(auth_url=node.auth_url, realm=node.realm)
        index.setdefault("nodes", {})[entry_key] = entry
        index["last"] = entry_key
        self._write_json(V6_INDEX_FILE, index)

    def load_node(self, server: str | None = None, node: str | None = None
                  ) -> StoredV6Node | None:
        """The stored node matching server and/or name; the last one logged in to when both
        are None; None when nothing (or more than one) matches."""
        entry_key = self.find_node(server, node)
        if entry_key is None:
            return None
        entry = self._read_json(V6_INDEX_FILE)["nodes"][entry_key]
        secrets: dict[str, str] | None = None
        if entry.get("store") == "keyring" and self._keyring is not None:
            with contextlib.suppress(Exception):
                api_key = self._keyring.get_password(V6_KEYRING_SERVICE, f"{entry_key}#api_key")
                pem = self._keyring.get_password(V6_KEYRING_SERVICE, f"{entry_key}#private_key")
                if api_key:
                    secrets = {"api_key": api_key, "private_key": pem or ""}
        if secrets is None:
            secrets = self._read_json(V6_FALLBACK_FILE).get(entry_key)
        if not secrets or not secrets.get("api_key"):
            return None
        pem_text = secrets.get("private_key") or ""
        return StoredV6Node(server=entry["server"], node=entry["node"],
                            api_key=secrets["api_key"],
                            private_key_pem=pem_text.encode("ascii") if pem_text else None,
                            info=dict(entry.get("info") or {}),
                            auth_url=entry.get("auth_url"), realm=entry.get("realm"))

    def find_node(self, server: str | None = None, node: str | None = None) -> str | None:
        index = self._read_json(V6_INDEX_FILE)
        nodes = index.get("nodes", {})
        if server is None and node is None:
            last = index.get("last")
            return last if last in nodes else None
        matches = [k for k, e in nodes.items()
                   if (server is None or e.get("server") == server)
                   and (node is None or e.get("node") == node)]
        return matches[0] if len(matches) == 1 else None

    def delete_node(self, server: str, node: str) -> bool:
        entry_key = _v6_key(server, node)
        if self._keyring is not None:
            for name in ("api_key", "private_key"):
                with contextlib.suppress(Exception):
                    self._keyring.delete_password(V6_KEYRING_SERVICE, f"{entry_key}#{name}")
        fallback = self._read_json(V6_FALLBACK_FILE)
        if fallback.pop(entry_key, None) is not None:
            self._write_json(V6_FALLBACK_FILE, fallback)
        index = self._read_json(V6_INDEX_FILE)
        known = index.get("nodes", {}).pop(entry_key, None) is not None
        if index.get("last") == entry_key:
            index.pop("last", None)
        self._write_json(V6_INDEX_FILE, index)
        return known

    def v6_nodes(self) -> list[dict[str, Any]]:
        """Non-secret index entries: server, node, store, info."""
        return list(self._read_json(V6_INDEX_FILE).get("nodes", {}).values())


def _v6_key(server: str, node: str) -> str:
    return f"{server}#{node}"
