"""HTTP plumbing for the DSS client: sessions per thread, timeouts, retries, error mapping.

The session cookie is held here and sent as an explicit header. Response cookies are never
stored automatically: the server sets a cookie on every reply (errors included), and a
failed login kills the session named by the request's cookie, so only `login` decides
which session id the client uses.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3

from dss_console import __version__
from dss_console.dss import errors

SESSION_COOKIE = "webpy_session_id"
DEFAULT_TIMEOUT = (10.0, 60.0)  # (connect, read) seconds
RETRY_STATUSES = frozenset({502, 503, 504})
_MAX_ERROR_BODY = 64 * 1024
# Statuses a DSS server never gives for /api/login, whose route takes GET and POST: another
# web server, or a DSS under a different path (its 404), answers at this address.
_FOREIGN_ENTRY_STATUSES = frozenset({404, 405, 501})
# What OpenSSL (1.1 and 3.x wordings) reports when an https:// port answers in plain HTTP.
_NOT_TLS_MARKERS = ("WRONG_VERSION_NUMBER", "wrong version number", "record layer failure",
                    "UNKNOWN_PROTOCOL", "unknown protocol", "HTTP_REQUEST", "http request",
                    "packet length too long")


def normalize_server_url(url: str) -> str:
    """Canonical form of a server URL: scheme and host lower-cased, no trailing slash.

    A bare host name gets https://, as users copy `dss.itksnap.org` from ITK-SNAP.
    """
    text = url.strip()
    if not text:
        raise ValueError("the server URL is empty")
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"the server URL must start with http:// or https://, not {parts.scheme}://")
    if not parts.hostname:
        raise ValueError(f"the server URL {url!r} has no host name")
    if parts.query or parts.fragment:
        raise ValueError(f"the server URL {url!r} must not carry a query or fragment")
    netloc = parts.netloc.lower()
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme.lower(), netloc, path, "", ""))


class _RejectAllCookies(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


_TAG_RE = re.compile(r"<[^>]+>")
_SPACE_RE = re.compile(r"\s+")


def reply_text(body: bytes, content_type: str = "", limit: int = 200) -> str:
    """The server's message in one trimmed line: HTML tags stripped, whitespace collapsed."""
    text = body.decode("utf-8", errors="replace")
    if "html" in content_type.lower() or text.lstrip()[:1] == "<":
        text = re.sub(r"(?is)<(script|style)[^>]*>.*?</\1>", " ", text)
        text = _TAG_RE.sub(" ", text)
    text = _SPACE_RE.sub(" ", text).strip()
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def error_for_status(status: int, message: str, action: str, server: str) -> errors.DssError:
    """Turn an HTTP error reply into the matching exception, with a sentence saying what failed."""
    said = f"the server said {message!r} (HTTP {status})" if message else f"HTTP {status}"
    low = message.lower()
    kwargs: dict[str, Any] = {"status": status, "server_message": message}
    if status == 401:
        if "not a provider" in low:
            return errors.NotProviderError(f"Could not {action}: this account is not a provider "
                                           f"of that service; {said}", **kwargs)
        if "privileges" in low:
            return errors.InsufficientPrivilegesError(
                f"Could not {action}: this account lacks the privileges; {said}", **kwargs)
        return errors.NotLoggedInError(
            f"Could not {action}: not logged in{_to(action, server)}, or the session expired; "
            "log in "
            f"again with a new token from {server}/token ({said})", **kwargs)
    if status == 400:
        if "has been deleted" in low:
            return errors.TicketDeletedError(
                f"Could not {action}: the ticket has been deleted by its owner; {said}", **kwargs)
        if "has not been claimed" in low:
            return errors.TicketNotClaimedError(
                f"Could not {action}: the ticket is not claimed by this account; {said}", **kwargs)
        if "not found for user" in low:
            return errors.TicketNotFoundError(
                f"Could not {action}: no such ticket among this account's services; {said}",
                **kwargs)
        return errors.ServerError(f"Could not {action}: the server refused the request; {said}",
                                  **kwargs)
    if status == 404:
        return errors.ServerError(f"Could not {action}: {_who(action, server)} has no such "
                                  "address (HTTP 404); "
                                  "is this a DSS server of a compatible version?", **kwargs)
    if status in RETRY_STATUSES:
        return errors.ServerError(f"Could not {action}: the server or a proxy in front of it is "
                                  f"unavailable; {said}", **kwargs)
    if status >= 500:
        return errors.ServerError(f"Could not {action}: the server failed with an internal error; "
                                  f"{said}", **kwargs)
    return errors.ServerError(f"Could not {action}: unexpected reply; {said}", **kwargs)


def has_dss_cookie(response: requests.Response) -> bool:
    """Whether a reply carries the DSS session cookie. The real server (web.py) sets it on
    every reply, errors included; the one exception is a refused login, which kills the
    session and answers a bare 401."""
    return f"{SESSION_COOKIE}=" in response.headers.get("Set-Cookie", "")


def foreign_entry_reply(response: requests.Response) -> bool:
    """Whether an error reply to /api/login (the first call of every session) comes from
    something other than a DSS server. 401 is the server refusing a token; 502-504 are a proxy
    whose DSS is down. Anything else without the DSS cookie is another web server's page."""
    status = response.status_code
    if status in _FOREIGN_ENTRY_STATUSES:
        return True
    if status < 400 or status == 401 or status in RETRY_STATUSES:
        return False
    return not has_dss_cookie(response)


def not_dss_server(status: int, path: str, action: str,
                   server_message: str = "") -> errors.NotDssServerError:
    """One line, no page text: the page of another web server says nothing useful here."""
    return errors.NotDssServerError(
        f"Could not {action}: this does not look like a DSS server (HTTP {status} for {path}); "
        "check the address", status=status, server_message=server_message)


def _may_have_arrived(exc: requests.RequestException) -> bool:
    """Whether a failed request may have reached the server (it timed out or dropped after
    sending). False only when the connection itself never opened."""
    if isinstance(exc, requests.exceptions.ConnectTimeout | requests.exceptions.SSLError):
        return False
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = exc.args[0] if exc.args else None
        reason = getattr(reason, "reason", reason)
        return not isinstance(reason, urllib3.exceptions.NewConnectionError)
    return True


def _unreachable(exc: requests.RequestException, action: str, server: str,
                 claim: bool = False) -> errors.DssError:
    error = _unreachable_error(exc, action, server, claim)
    if isinstance(error, errors.ServerUnreachableError):
        error.request_may_have_arrived = _may_have_arrived(exc)
    return error


def _unreachable_error(exc: requests.RequestException, action: str, server: str,
                       claim: bool) -> errors.DssError:
    if isinstance(exc, requests.exceptions.SSLError) and any(m in str(exc)
                                                             for m in _NOT_TLS_MARKERS):
        plain = "http://" + server.removeprefix("https://")
        return errors.NotTlsError(
            f"Could not {action}: {_who(action, server)} does not speak TLS on that port; if "
            f"it serves plain HTTP, use {plain} (unencrypted: only on a trusted network)")
    if isinstance(exc, requests.exceptions.SSLError):
        return errors.TlsError(
            f"Could not {action}: TLS verification of {_who(action, server)} failed "
            f"({_short_reason(exc)}); "
            "if the server uses a private certificate authority, pass its CA bundle")
    if claim:
        return errors.ClaimOutcomeUnknownError(
            f"Could not {action}: the reply from {_who(action, server)} was lost "
            f"({_short_reason(exc)}); a "
            "ticket may have been claimed. It was not retried, so at most one ticket is affected")
    if isinstance(exc, requests.exceptions.Timeout):
        return errors.ServerTimeoutError(
            f"Could not {action}: {_who(action, server)} did not answer in time "
            f"({_short_reason(exc)})")
    return errors.ServerUnreachableError(
        f"Could not {action}: {_who(action, server)} is unreachable ({_short_reason(exc)})")


def _who(action: str, server: str) -> str:
    """The server by its address, unless the action already named it ("log in to URL"):
    one error line says the address once."""
    return "the server" if server in action else server


def _to(action: str, server: str) -> str:
    return "" if server in action else f" to {server}"


def _short_reason(exc: BaseException) -> str:
    text = str(exc)
    for needle, reason in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "host name not found"),
        ("nodename nor servname", "host name not found"),
        ("Temporary failure in name resolution", "host name not found"),
        ("No route to host", "no route to host"),
        ("Network is unreachable", "network unreachable"),
        ("CERTIFICATE_VERIFY_FAILED", "certificate not trusted"),
        ("hostname mismatch", "certificate does not match the host name"),
        ("Connection reset", "connection reset"),
        ("Connection aborted", "connection dropped"),
        ("RemoteDisconnected", "connection closed by the server"),
        ("IncompleteRead", "connection dropped mid-reply"),
        ("ConnectTimeout", "connect timed out"),
        ("Read timed out", "read timed out"),
        ("timed out", "timed out"),
    ):
        if needle in text:
            return reason
    return type(exc).__name__


class Transport:
    """Sends requests to one DSS server. Safe to use from several threads at once."""

    def __init__(self, server_url: str, *, verify: bool | str = True,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT, retries: int = 3,
                 backoff: float = 0.5, session_id: str | None = None):
        self.server = normalize_server_url(server_url)
        self.verify = verify
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._session_id = session_id
        self._lock = threading.Lock()
        self._local = threading.local()
        # The thread each session belongs to: the engine runs every job on a thread of its
        # own, so sessions of threads that have ended are closed and dropped as new ones come
        # (kept, they held ~17 KiB and a pooled socket per ticket, for months).
        self._sessions: dict[threading.Thread, requests.Session] = {}

    # -- session id -------------------------------------------------------------------------
    @property
    def session_id(self) -> str | None:
        with self._lock:
            return self._session_id

    @session_id.setter
    def session_id(self, value: str | None) -> None:
        with self._lock:
            self._session_id = value

    def _http(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self.new_http_session()
            self._local.session = session
            with self._lock:
                ended = [t for t in self._sessions if not t.is_alive()]
                finished = [self._sessions.pop(t) for t in ended]
                self._sessions[threading.current_thread()] = session
            for old in finished:
                old.close()  # its thread is gone: nobody else uses it
        return session

    def new_http_session(self) -> requests.Session:
        session = requests.Session()
        session.cookies = requests.cookies.RequestsCookieJar(policy=_RejectAllCookies())
        session.verify = self.verify
        session.headers["User-Agent"] = f"dss-console/{__version__}"
        adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=4, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.close()
        self._local = threading.local()

    def url(self, path: str) -> str:
        return self.server + path

    # -- requests ---------------------------------------------------------------------------
    def request(self, method: str, path: str, *, action: str,
                params: Mapping[str, str] | None = None,
                data: Any = None, headers: Mapping[str, str] | None = None,
                idempotent: bool = False, stream: bool = False, claim: bool = False,
                authenticated: bool = True, http: requests.Session | None = None,
                timeout: tuple[float, float] | None = None,
                ok_statuses: Iterable[int] = (200,), entry: bool = False) -> requests.Response:
        """One request, retried with back-off only when `idempotent`.

        Errors become `DssError`s whose message starts with "Could not <action>". `entry`
        marks the first call of a session (/api/login): an error reply that no DSS server
        gives there becomes NotDssServerError. Later calls keep the server's own words.
        """
        send_headers = dict(headers or {})
        sid = self.session_id if authenticated else None
        if sid:
            send_headers["Cookie"] = f"{SESSION_COOKIE}={sid}"
        attempts = 1 + (self.retries if idempotent else 0)
        ok = set(ok_statuses)
        session = http or self._http()
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = session.request(
                    method, self.url(path), params=params, data=data, headers=send_headers,
                    timeout=timeout or self.timeout, stream=stream, allow_redirects=False,
                    # Per request: requests lets REQUESTS_CA_BUNDLE override a session's verify.
                    verify=self.verify)
            except requests.exceptions.SSLError as exc:
                raise _unreachable(exc, action, self.server) from None
            except requests.RequestException as exc:
                if last:
                    raise _unreachable(exc, action, self.server, claim=claim) from None
                self._sleep_before_retry(attempt)
                continue
            if response.status_code in ok:
                return response
            if response.status_code in RETRY_STATUSES and not last:
                response.close()
                self._sleep_before_retry(attempt)
                continue
            raise self.error_from_response(response, action, entry=entry, path=path)
        raise AssertionError("unreachable")  # pragma: no cover

    def _sleep_before_retry(self, attempt: int) -> None:
        time.sleep(self.backoff * (2 ** attempt))

    def error_from_response(self, response: requests.Response, action: str, *,
                            entry: bool = False, path: str = "") -> errors.DssError:
        if response.is_redirect:
            target = response.headers.get("Location", "")
            response.close()
            return errors.ServerError(
                f"Could not {action}: the server redirects to {target!r} (HTTP "
                f"{response.status_code}); use that address as the server URL",
                status=response.status_code)
        body = read_limited(response, _MAX_ERROR_BODY)
        message = reply_text(body, response.headers.get("Content-Type", ""))
        if entry and foreign_entry_reply(response):
            return not_dss_server(response.status_code, path, action, message)
        return error_for_status(response.status_code, message, action, self.server)


def read_limited(response: requests.Response, limit: int) -> bytes:
    """Read at most `limit` bytes of a (possibly streamed) body, then release the connection."""
    try:
        # requests has no public "was this body streamed" flag; a body already read is sliced.
        if not getattr(response, "_content_consumed", True):
            chunks, size = [], 0
            for chunk in response.iter_content(8192):
                chunks.append(chunk)
                size += len(chunk)
                if size >= limit:
                    break
            return b"".join(chunks)[:limit]
        return (response.content or b"")[:limit]
    except requests.RequestException:
        return b""
    finally:
        response.close()


# -- reply parsing ----------------------------------------------------------------------------

def bad_reply(response: requests.Response, action: str, expected: str,
               server: str) -> errors.BadReplyError:
    ctype = response.headers.get("Content-Type", "") or "no content type"
    snippet = reply_text(response.content or b"", ctype, limit=80)
    return errors.BadReplyError(
        f"Could not {action}: the reply is not {expected} (got {ctype}: {snippet!r}); is "
        f"{server} a DSS server, or is a proxy or login page in the way?",
        status=response.status_code, server_message=snippet)


def _reply_body_text(response: requests.Response, action: str, expected: str,
                     server: str) -> str:
    ctype = response.headers.get("Content-Type", "").lower()
    if "html" in ctype:
        raise bad_reply(response, action, expected, server)
    try:
        text = response.content.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_reply(response, action, expected, server) from None
    if text.lstrip().startswith("<"):
        raise bad_reply(response, action, expected, server)
    return text


def parse_json_result(response: requests.Response, action: str, server: str) -> Any:
    """The `result` member of a `{"result": ...}` JSON reply."""
    text = _reply_body_text(response, action, "JSON", server)
    try:
        document = json.loads(text)
    except ValueError:
        raise bad_reply(response, action, "JSON", server) from None
    if not isinstance(document, dict) or "result" not in document:
        raise bad_reply(response, action, "a JSON result object", server)
    return document["result"]


def parse_csv_rows(response: requests.Response, action: str, server: str,
                   columns: int) -> list[list[str]]:
    """Header-less CSV as lists of strings (never numbers: a file named `NA` stays `NA`)."""
    import csv
    import io

    text = _reply_body_text(response, action, "CSV", server)
    rows = []
    try:
        for row in csv.reader(io.StringIO(text, newline="")):
            if not row:
                continue
            if len(row) < columns:
                raise bad_reply(response, action, f"CSV with {columns} columns", server)
            rows.append(row)
    except csv.Error:
        raise bad_reply(response, action, "CSV", server) from None
    return rows


def parse_plain(response: requests.Response, action: str, server: str,
                expected: str = "plain text") -> str:
    return _reply_body_text(response, action, expected, server).strip()


def parse_int(response: requests.Response, action: str, server: str) -> int:
    text = parse_plain(response, action, server, "a number")
    try:
        return int(text)
    except ValueError:
        raise bad_reply(response, action, "a number", server) from None


def parse_float(response: requests.Response, action: str, server: str) -> float:
    text = parse_plain(response, action, server, "a number")
    try:
        return float(text)
    except ValueError:
        raise bad_reply(response, action, "a number", server) from None


def typed_field(row: Mapping[str, Any], name: str, kind: Callable[[Any], Any],
                response: requests.Response, action: str, server: str) -> Any:
    try:
        return kind(row[name])
    except (KeyError, TypeError, ValueError):
        raise bad_reply(response, action, f"a record with a valid {name!r}", server) from None
