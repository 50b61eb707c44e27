"""Logging in and resuming sessions, shared by the CLI and the console window (Qt-free).

Also reads an existing ITK-SNAP (`itksnap-wt`) session from `~/.alfabis`, read-only: that
folder is ITK-SNAP's, and writing `~/.alfabis/server` would switch the user's ITK-SNAP to
another server.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from dss_console.credentials import SessionStore
from dss_console.dss import DssClient, NotLoggedInError, normalize_server_url
from dss_console.dss.transport import SESSION_COOKIE


@dataclass(frozen=True)
class LoggedIn:
    client: DssClient
    email: str


def login_with_token(server: str, token: str, store: SessionStore, *,
                     verify: bool | str = True) -> LoggedIn:
    """Exchange a one-time token for a session and remember the session (never the token)."""
    client = DssClient(normalize_server_url(server), verify=verify)
    try:
        email = client.login(token)
    except BaseException:
        client.close()
        raise
    store.save(client.server, client.session_id or "", email)
    return LoggedIn(client, email)


def resume_session(server: str, store: SessionStore, *,
                   verify: bool | str = True) -> LoggedIn | None:
    """The stored session for `server`, checked with the server; None if there is none or
    the server no longer knows it (then it is forgotten). Network errors propagate."""
    url = normalize_server_url(server)
    stored = store.load(url)
    if stored is None:
        return None
    client = DssClient(url, session_id=stored.session_id, verify=verify)
    try:
        email = client.whoami()
    except NotLoggedInError:
        client.close()
        store.delete(url)
        return None
    except BaseException:
        client.close()
        raise
    return LoggedIn(client, email)


def use_session(server: str, session_id: str, store: SessionStore, *,
                verify: bool | str = True) -> LoggedIn:
    """Adopt a session id obtained elsewhere (an ITK-SNAP cookie jar) after checking it."""
    client = DssClient(normalize_server_url(server), session_id=session_id, verify=verify)
    try:
        email = client.whoami()
    except BaseException:
        client.close()
        raise
    store.save(client.server, session_id, email)
    return LoggedIn(client, email)


def logout(logged_in: LoggedIn, store: SessionStore) -> None:
    logged_in.client.logout()
    store.delete(logged_in.client.server)
    logged_in.client.close()


def itksnap_session_id(server: str, home: Path | None = None) -> str | None:
    """The session cookie ITK-SNAP's `itksnap-wt` keeps for `server`, if any (read-only).

    itksnap-wt stores a Netscape cookie jar per server in ~/.alfabis/cookie_<md5(url)>.jar;
    the URL is hashed as the user typed it, so the usual spellings are tried.
    """
    folder = (home or Path.home()) / ".alfabis"
    url = normalize_server_url(server)
    for candidate in dict.fromkeys([url, url + "/", url.replace("https://", "http://"),
                                    url.replace("https://", "http://") + "/"]):
        jar = folder / f"cookie_{hashlib.md5(candidate.encode()).hexdigest()}.jar"
        value = _cookie_from_jar(jar)
        if value:
            return value
    return None


def _cookie_from_jar(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        # Netscape format; curl marks HttpOnly cookies with a "#HttpOnly_" prefix.
        if line.startswith("#HttpOnly_"):
            line = line[len("#HttpOnly_"):]
        elif line.startswith("#") or not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) >= 7 and fields[5] == SESSION_COOKIE and fields[6].strip():
            return fields[6].strip()
    return None


def itksnap_servers(home: Path | None = None) -> list[str]:
    """The server ITK-SNAP currently uses (~/.alfabis/server), for the login pane's list."""
    try:
        text = ((home or Path.home()) / ".alfabis" / "server").read_text().strip()
    except OSError:
        return []
    try:
        return [normalize_server_url(text)] if text else []
    except ValueError:
        return []
