"""Logging in and resuming sessions, shared by the CLI and the console window (Qt-free).

Also reads an existing ITK-SNAP (`itksnap-wt`) session from `~/.alfabis`, read-only: that
folder is ITK-SNAP's, and writing `~/.alfabis/server` would switch the user's ITK-SNAP to
another server.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from dss_console.credentials import SessionStore
from dss_console.dss import (
    DssClient,
    DssError,
    NotLoggedInError,
    NotTlsError,
    normalize_server_url,
)
from dss_console.dss.transport import SESSION_COOKIE

# A healthy server answers a login in well under a second; after this long, say we wait.
WAIT_NOTICE_AFTER = 3.0
WAIT_NOTICE_EVERY = 10.0

WaitingCallback = Callable[[str, float], None]
"""`on_waiting(url, seconds)`: no answer from `url` for `seconds` yet. Called on a helper
thread (marshal to the GUI thread yourself), WAIT_NOTICE_AFTER s into a call, then every
WAIT_NOTICE_EVERY s until the call ends."""


@dataclass(frozen=True)
class LoggedIn:
    client: DssClient
    email: str


class LoginCancelledError(DssError):
    """The operator cancelled a login. `token_sent` says whether the token may be spent."""

    def __init__(self, server: str, *, token_sent: bool):
        if token_sent:
            message = ("Login cancelled; the token may have been used: if logging in again is "
                       f"refused, get a new one from {server}/token")
        else:
            message = "Login cancelled; the token was not sent, so it still works"
        super().__init__(message)
        self.token_sent = token_sent


def plain_http_fallback_allowed(host: str) -> bool:
    """Whether a scheme-less address may fall back to plain http://: only when the address
    itself is local (loopback, private or link-local IP, localhost). A name could resolve
    anywhere, and a token must not travel unencrypted because https:// happened to fail."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def resolve_server_url(server: str, *, verify: bool | str = True,
                       on_waiting: WaitingCallback | None = None,
                       cancel: threading.Event | None = None) -> str:
    """The URL to use for an address as the user typed it (ValueError if malformed).

    A scheme the user wrote is kept. Without one, https:// is meant; for a local address
    (see plain_http_fallback_allowed) whose port answers in plain HTTP, http:// is used
    instead. That is found out with harmless GETs (no token, no cookie), so a single-use
    token is never sent twice. A public name is not probed: if it has no TLS, the login
    itself fails before sending anything and says to write http:// explicitly.
    """
    url = normalize_server_url(server)
    if "://" in server or not plain_http_fallback_allowed(urlsplit(url).hostname or ""):
        return url
    try:
        _probe(url, verify, on_waiting, cancel)
    except NotTlsError:
        plain = "http://" + url.removeprefix("https://")
        _probe(plain, verify, on_waiting, cancel)
        return plain
    return url


def _probe(url: str, verify: bool | str, on_waiting: WaitingCallback | None,
           cancel: threading.Event | None) -> None:
    with DssClient(url, verify=verify, retries=0) as client, \
            waiting_notices(url, on_waiting, cancel):
        client.probe()


@contextlib.contextmanager
def waiting_notices(url: str, on_waiting: WaitingCallback | None,
                    cancel: threading.Event | None = None) -> Iterator[None]:
    """Call `on_waiting` (see WaitingCallback) while the body runs; stops when the body ends
    or `cancel` is set, and never after this returns."""
    if on_waiting is None:
        yield
        return
    done = threading.Event()
    started = time.monotonic()

    def notify() -> None:
        delay = WAIT_NOTICE_AFTER
        while not done.wait(delay):
            if cancel is not None and cancel.is_set():
                return
            # A notice that cannot be shown (closed stderr...) must not disturb the call.
            with contextlib.suppress(Exception):
                on_waiting(url, time.monotonic() - started)
            delay = WAIT_NOTICE_EVERY

    thread = threading.Thread(target=notify, name="dss-waiting-notices", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def login_with_token(server: str, token: str, store: SessionStore, *,
                     verify: bool | str = True, on_waiting: WaitingCallback | None = None,
                     cancel: threading.Event | None = None) -> LoggedIn:
    """Exchange a one-time token for a session and remember the session (never the token).

    `server` may be the address as typed (see resolve_server_url); the URL used is
    `result.client.server`. `cancel`, set from any thread, is checked before the token is
    sent and again when the reply is in: a session that arrives after it is logged out and
    never stored. Setting it does not interrupt a request in flight (see LoginAttempt for a
    login the caller can stop waiting for at once). Raises LoginCancelledError then.
    """
    return _login(server, token, store, verify, on_waiting, cancel or threading.Event(),
                  threading.Event(), threading.Lock(), None)


def _login(server: str, token: str, store: SessionStore, verify: bool | str,
           on_waiting: WaitingCallback | None, cancel: threading.Event,
           sending: threading.Event, lock: threading.Lock,
           deliver: Callable[[LoggedIn], None] | None) -> LoggedIn:
    if cancel.is_set():
        raise LoginCancelledError(server, token_sent=False)
    url = resolve_server_url(server, verify=verify, on_waiting=on_waiting, cancel=cancel)
    client = DssClient(url, verify=verify)
    try:
        with lock:
            if cancel.is_set():
                raise LoginCancelledError(url, token_sent=False)
            sending.set()
        with waiting_notices(url, on_waiting, cancel):
            email = client.login(token)
        with lock:  # commit and deliver as one step, so a cancel lands wholly before or after
            late = cancel.is_set()
            if not late:
                store.save(client.server, client.session_id or "", email)
                logged_in = LoggedIn(client, email)
                if deliver is not None:
                    deliver(logged_in)
        if late:
            with contextlib.suppress(DssError):
                client.logout()
            raise LoginCancelledError(url, token_sent=True)
    except BaseException:
        client.close()
        raise
    return logged_in


class LoginAttempt:
    """A token login on its own thread, for a caller that must be able to stop waiting
    (the login pane's Cancel). `start_login(...)` is `LoginAttempt(...).start()`.

    `future` resolves to LoggedIn, or to the error (DssError for anything the server or
    network did). `cancel()` resolves it at once with LoginCancelledError (its `token_sent`
    says whether the token may be spent) and returns False if the login had already ended.
    The HTTP request itself cannot be interrupted: the thread ends by itself with the reply
    or the login timeout, and a session that arrives after cancel() is logged out and never
    stored. In asyncio: `await asyncio.wrap_future(attempt.future)`.
    """

    def __init__(self, server: str, token: str, store: SessionStore, *,
                 verify: bool | str = True, on_waiting: WaitingCallback | None = None):
        self.server = server
        self.future: Future[LoggedIn] = Future()
        self._cancel = threading.Event()
        self._sending = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, args=(server, token, store, verify, on_waiting),
            name="dss-login", daemon=True)

    def _run(self, server: str, token: str, store: SessionStore, verify: bool | str,
             on_waiting: WaitingCallback | None) -> None:
        try:
            _login(server, token, store, verify, on_waiting, self._cancel, self._sending,
                   self._lock, self.future.set_result)
        except BaseException as exc:  # handed to whoever awaits the future
            with self._lock:
                if not self.future.done():
                    self.future.set_exception(exc)

    def start(self) -> LoginAttempt:
        self._thread.start()
        return self

    def cancel(self) -> bool:
        with self._lock:
            if self.future.done():
                return False
            self._cancel.set()
            self.future.set_exception(
                LoginCancelledError(self.server, token_sent=self._sending.is_set()))
            return True

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread (e.g. before quitting); True if it has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


def start_login(server: str, token: str, store: SessionStore, *, verify: bool | str = True,
                on_waiting: WaitingCallback | None = None) -> LoginAttempt:
    """`login_with_token` on its own thread; see LoginAttempt."""
    return LoginAttempt(server, token, store, verify=verify, on_waiting=on_waiting).start()


def resume_session(server: str, store: SessionStore, *, verify: bool | str = True,
                   on_waiting: WaitingCallback | None = None) -> LoggedIn | None:
    """The stored session for `server`, checked with the server; None if there is none or
    the server no longer knows it (then it is forgotten). Network errors propagate, and an
    address that is not a DSS server is NotDssServerError (the session is kept)."""
    url = normalize_server_url(server)
    stored = store.load(url)
    if stored is None:
        return None
    client = DssClient(url, session_id=stored.session_id, verify=verify)
    try:
        with waiting_notices(url, on_waiting):
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
