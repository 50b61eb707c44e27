"""The client against a misbehaving peer: hostile names, HTML pages, 502s, dropped replies."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from dss_console import connection
from dss_console.credentials import SessionStore
from dss_console.dss import (
    BadReplyError,
    ClaimOutcomeUnknownError,
    DssClient,
    LoginFailedError,
    NotDssServerError,
    NotTlsError,
    RemoteFile,
    ServerError,
    ServerUnreachableError,
    TlsError,
    UnsafeFileNameError,
    safe_file_name,
)

from hostile_server import HostileServer, Reply

SESSION = "c0ffee" * 6 + "abcd"  # 40 characters, like a real session id
HTML = b"<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"


@pytest.fixture
def hostile() -> HostileServer:
    with HostileServer() as server:
        yield server


def client_for(server: HostileServer, **kwargs: object) -> DssClient:
    return DssClient(server.url, session_id=SESSION, backoff=0.01, **kwargs)


@pytest.mark.parametrize("name", ["../x", "..", ".", "/etc/passwd", "a/b", "a\\b", "c:evil",
                                  "", "nul\x00byte", "..\\..\\win.txt"])
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(UnsafeFileNameError, match="nothing was written"):
        safe_file_name(name)


@pytest.mark.parametrize("name", ["ticket_00000001.itksnap", "NA", "007", "a,b \"q\".txt",
                                  ".hidden", "layer_000_x.nii.gz", "ü.nii"])
def test_plain_names_pass(name: str) -> None:
    assert safe_file_name(name) == name


@pytest.mark.parametrize("listed", ["../x", "/tmp/abs.txt"])
def test_hostile_listing_writes_nothing(hostile: HostileServer, tmp_path: Path,
                                        listed: str) -> None:
    hostile.routes["GET /api/pro/tickets/7/files/input"] = Reply(
        200, f"0,ok.txt\r\n1,{listed}\r\n".encode(), {"Content-Type": "text/csv"})
    hostile.routes["GET /api/pro/tickets/7/files/input/0"] = Reply(
        200, b"ok", {"Content-Disposition": 'attachment; filename="ok.txt"'})
    target = tmp_path / "work" / "in"
    with pytest.raises(UnsafeFileNameError, match=r"path separator|absolute|directory"):
        client_for(hostile).tickets.download_inputs(7, target)
    assert list(tmp_path.rglob("*")) == []  # refused before the folder is made
    assert not any(p.endswith("/0") for _, p, _h in hostile.requests)  # refused before fetching


@pytest.mark.parametrize("sent", ["../x", "/etc/abs.txt", "..", "sub/evil"])
def test_hostile_content_disposition_writes_nothing(hostile: HostileServer, tmp_path: Path,
                                                    sent: str) -> None:
    hostile.routes["GET /api/pro/tickets/7/files/input/0"] = Reply(
        200, b"payload", {"Content-Disposition": f'attachment; filename="{sent}"'})
    dest = tmp_path / "in"
    dest.mkdir()
    with pytest.raises(UnsafeFileNameError):
        client_for(hostile).tickets.download(7, RemoteFile(0, "ok.txt"), dest)
    assert list(tmp_path.rglob("*")) == [dest]
    assert not Path("/etc/abs.txt").exists()


def test_unescaped_quote_in_name_is_kept(hostile: HostileServer, tmp_path: Path) -> None:
    hostile.routes["GET /api/pro/tickets/7/files/input/0"] = Reply(
        200, b"q", {"Content-Disposition": 'attachment; filename="q"uote.txt"'})
    path = client_for(hostile).tickets.download(7, RemoteFile(0, 'q"uote.txt'), tmp_path)
    assert path == tmp_path / 'q"uote.txt' and path.read_bytes() == b"q"


def test_html_where_csv_expected(hostile: HostileServer) -> None:
    hostile.routes["GET /api/pro/tickets/7/files/input"] = Reply(
        200, b"<html><body>Please sign in</body></html>", {"Content-Type": "text/html"})
    with pytest.raises(BadReplyError, match=r"not CSV \(got text/html: 'Please sign in'"):
        client_for(hostile).tickets.inputs(7)


def test_html_where_json_expected(hostile: HostileServer) -> None:
    hostile.routes["GET /api/pro/services"] = Reply(200, HTML, {})
    with pytest.raises(BadReplyError, match="not JSON") as info:
        client_for(hostile).services.provided()
    assert "proxy" in str(info.value)


def test_502_is_retried_for_reads_then_reported(hostile: HostileServer) -> None:
    hostile.routes["GET /api/pro/tickets/7/status"] = Reply(502, HTML,
                                                            {"Content-Type": "text/html"})
    with pytest.raises(ServerError, match="proxy in front of it is unavailable") as info:
        client_for(hostile, retries=2).tickets.status(7)
    assert info.value.status == 502
    assert "Bad Gateway" in info.value.server_message
    assert len(hostile.requests) == 3


def test_502_then_recovery(hostile: HostileServer) -> None:
    replies = iter([Reply(502, HTML), Reply(200, b"claimed")])
    hostile.routes["GET /api/pro/tickets/7/status"] = lambda: next(replies)
    assert client_for(hostile).tickets.status(7).value == "claimed"


def test_claim_reply_lost_is_not_retried(hostile: HostileServer) -> None:
    hostile.routes["POST /api/pro/services/claims"] = Reply(
        200, b"1,abc,claimed\r\n", {"Content-Type": "text/csv"}, drop_after=3)
    with pytest.raises(ClaimOutcomeUnknownError, match="may have been claimed"):
        client_for(hostile, retries=3).services.claim("ab" * 20, "lab", "node1")
    assert [r[:2] for r in hostile.requests] == [("POST", "/api/pro/services/claims")]


def test_claim_502_is_not_retried(hostile: HostileServer) -> None:
    hostile.routes["POST /api/pro/services/claims"] = Reply(502, HTML)
    with pytest.raises(ServerError):
        client_for(hostile, retries=3).services.claim("ab" * 20, "lab", "node1")
    assert len(hostile.requests) == 1


def test_login_is_never_retried_and_sends_no_cookie(hostile: HostileServer) -> None:
    hostile.routes["POST /api/login"] = Reply(502, HTML)
    client = client_for(hostile, retries=3)
    with pytest.raises(ServerError):
        client.login("f" * 48)
    assert len(hostile.requests) == 1
    assert "Cookie" not in hostile.requests[0][2]
    assert client.session_id == SESSION  # a failed login keeps the working session


def test_login_401_is_a_login_failure(hostile: HostileServer) -> None:
    # A real DSS answers a refused token with a bare 401 (it kills the session, so no cookie).
    hostile.routes["POST /api/login"] = Reply(401, b"unauthorized", {"Content-Type": "text/html"})
    with pytest.raises(LoginFailedError, match="token was refused"):
        client_for(hostile).login("f" * 48)


def test_download_dropped_midway_leaves_no_partial_file(hostile: HostileServer,
                                                        tmp_path: Path) -> None:
    hostile.routes["GET /api/pro/tickets/7/files/input/0"] = Reply(
        200, b"x" * 100_000, {"Content-Disposition": 'attachment; filename="big.nii"'},
        drop_after=10_000)
    with pytest.raises(ServerUnreachableError, match="dropped"):
        client_for(hostile, retries=0).tickets.download(7, RemoteFile(0, "big.nii"), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_read_timeout_is_reported(hostile: HostileServer) -> None:
    def slow() -> Reply:
        time.sleep(2)  # the peer being slow is the point of this test, not synchronisation
        return Reply(200, b"claimed")

    hostile.routes["GET /api/pro/tickets/7/status"] = slow
    client = client_for(hostile, retries=0, timeout=(2.0, 0.3))
    with pytest.raises(ServerUnreachableError, match="did not answer in time"):
        client.tickets.status(7)


def test_redirect_is_reported_not_followed(hostile: HostileServer) -> None:
    hostile.routes["GET /api/pro/services"] = Reply(
        301, b"", {"Location": "https://dss.example.org/api/pro/services"})
    with pytest.raises(ServerError, match=r"redirects to 'https://dss\.example\.org"):
        client_for(hostile).services.provided()


def test_session_cookie_sent_but_never_in_errors(hostile: HostileServer) -> None:
    hostile.routes["GET /api/pro/services"] = Reply(500, b"internal server error")
    with pytest.raises(ServerError) as info:
        client_for(hostile, retries=0).services.provided()
    assert hostile.requests[0][2]["Cookie"] == f"webpy_session_id={SESSION}"
    assert SESSION not in str(info.value) and SESSION not in repr(info.value)
    assert "HTTP 500" in str(info.value)


def test_tls_verification_is_on(tmp_path: Path) -> None:
    import ssl

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    with HostileServer() as server:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server._server.socket = context.wrap_socket(server._server.socket, server_side=True)
        server.routes["GET /api/pro/tickets/7/status"] = Reply(200, b"claimed")
        https_url = server.url.replace("http://", "https://")
        with pytest.raises(TlsError, match="certificate not trusted"):
            DssClient(https_url, session_id=SESSION, retries=0).tickets.status(7)
        trusted = DssClient(https_url, session_id=SESSION, verify=str(cert))
        assert trusted.tickets.status(7).value == "claimed"


# -- the first call of a session against something that is not a DSS server -----------------

# What `python -m http.server` answers to a POST, and what nginx serves for 404 and 405.
HTTP_SERVER_501 = (b'<!DOCTYPE HTML>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
                   b"<title>Error response</title>\n</head>\n<body>\n<h1>Error response</h1>\n"
                   b"<p>Error code: 501</p>\n<p>Message: Unsupported method ('POST').</p>\n"
                   b"<p>Error code explanation: 501 - Server does not support this operation."
                   b"</p>\n</body>\n</html>\n")
NGINX_PAGE = ("<html>\r\n<head><title>{0}</title></head>\r\n<body>\r\n<center><h1>{0}</h1>"
              "</center>\r\n<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n")
DSS_COOKIE = {"Set-Cookie": f"webpy_session_id={SESSION}; HttpOnly; Path=/"}


@pytest.mark.parametrize(("status", "page"), [
    (501, HTTP_SERVER_501),
    (405, NGINX_PAGE.format("405 Not Allowed").encode()),
    (404, NGINX_PAGE.format("404 Not Found").encode()),
    (500, b"<html><body><b>Fatal error</b>: Uncaught Error in /var/www/index.php</body></html>"),
    (200, NGINX_PAGE.format("Welcome to nginx!").encode()),
])
def test_login_to_another_web_server_says_so_in_one_line(hostile: HostileServer, status: int,
                                                         page: bytes) -> None:
    hostile.routes["POST /api/login"] = Reply(status, page, {"Content-Type": "text/html"})
    with pytest.raises(NotDssServerError) as info:
        DssClient(hostile.url).login("f" * 48)
    message = str(info.value)
    assert message == (f"Could not log in to {hostile.url}: this does not look like a DSS "
                       f"server (HTTP {status} for /api/login); check the address")
    assert info.value.status == status


def test_resume_against_another_web_server_says_so(hostile: HostileServer,
                                                   tmp_path: Path) -> None:
    hostile.routes["GET /api/login"] = Reply(404, NGINX_PAGE.format("404 Not Found").encode(),
                                             {"Content-Type": "text/html"})
    store = SessionStore(tmp_path, use_keyring=False)
    store.save(hostile.url, SESSION, "a@example.com")
    with pytest.raises(NotDssServerError, match=r"not look like a DSS server \(HTTP 404 for "
                                                r"/api/login\)"):
        connection.resume_session(hostile.url, store)
    assert store.load(hostile.url) is not None  # a wrong address is no reason to forget it


def test_a_dss_servers_own_500_is_not_called_foreign(hostile: HostileServer) -> None:
    # The real server's unhandled exceptions carry its session cookie, like every reply of it.
    hostile.routes["POST /api/login"] = Reply(500, b"internal server error",
                                              {"Content-Type": "text/html", **DSS_COOKIE})
    with pytest.raises(ServerError, match="internal error") as info:
        DssClient(hostile.url).login("f" * 48)
    assert not isinstance(info.value, NotDssServerError)


def test_later_calls_keep_their_own_words(hostile: HostileServer) -> None:
    """Only the entry call (/api/login) judges whether this is a DSS server: a logged-in
    client's 500 or 404 is the server's own failure."""
    hostile.routes["GET /api/pro/services"] = Reply(500, b"internal server error")
    with pytest.raises(ServerError, match="internal error") as info:
        client_for(hostile, retries=0).services.provided()
    assert not isinstance(info.value, NotDssServerError)


# -- addresses without a scheme ----------------------------------------------------------------

def dss_like_login(hostile: HostileServer) -> None:
    hostile.routes["GET /api/login"] = Reply(401, b"You are not logged in!", DSS_COOKIE)
    hostile.routes["POST /api/login"] = Reply(200, b'{"result": {"email": "a@example.com"}}',
                                              DSS_COOKIE)


def test_https_to_a_plain_http_server_says_use_http(hostile: HostileServer) -> None:
    dss_like_login(hostile)
    https_url = hostile.url.replace("http://", "https://")
    with pytest.raises(NotTlsError) as info:
        DssClient(https_url, retries=0).login("f" * 48)
    message = str(info.value)
    assert "does not speak TLS" in message and hostile.url in message
    assert "CA bundle" not in message and not isinstance(info.value, TlsError)
    assert hostile.requests == []  # the handshake failed: the token never left


def test_schemeless_loopback_address_falls_back_to_http_and_sends_the_token_once(
        hostile: HostileServer, tmp_path: Path) -> None:
    dss_like_login(hostile)
    address = hostile.url.removeprefix("http://")
    store = SessionStore(tmp_path, use_keyring=False)
    result = connection.login_with_token(address, "f" * 48, store)
    assert (result.client.server, result.email) == (hostile.url, "a@example.com")
    assert [r[:2] for r in hostile.requests] == [("GET", "/api/login"), ("POST", "/api/login")]
    assert "Cookie" not in hostile.requests[0][2]
    assert store.load(hostile.url) is not None


@pytest.mark.parametrize(("typed", "url"), [
    ("dss.itksnap.org", "https://dss.itksnap.org"),  # public: never downgraded, no probe
    ("https://127.0.0.1:1", "https://127.0.0.1:1"),  # a scheme the user wrote is kept as is
    ("http://Example.org/", "http://example.org"),
])
def test_addresses_that_need_no_probe(typed: str, url: str) -> None:
    assert connection.resolve_server_url(typed) == url


@pytest.mark.parametrize(("host", "allowed"), [
    ("127.0.0.1", True), ("localhost", True), ("::1", True), ("10.1.2.3", True),
    ("192.168.0.7", True), ("dss.itksnap.org", False), ("8.8.8.8", False),
    ("lab-server", False),  # a name could resolve anywhere: the user writes http:// for it
])
def test_plain_http_fallback_only_for_local_addresses(host: str, allowed: bool) -> None:
    assert connection.plain_http_fallback_allowed(host) is allowed


# -- a server that never answers ---------------------------------------------------------------

def test_login_reports_waiting_and_a_clear_timeout(hostile: HostileServer, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def silent() -> Reply:
        release.wait(30)  # holds the reply back until the test is done with it
        return Reply(503)

    hostile.routes["POST /api/login"] = silent
    monkeypatch.setattr(connection, "WAIT_NOTICE_AFTER", 0.05)
    monkeypatch.setattr("dss_console.dss.client.LOGIN_TIMEOUT", (5.0, 1.5))
    notices: list[tuple[str, float]] = []
    store = SessionStore(tmp_path, use_keyring=False)
    try:
        with pytest.raises(ServerUnreachableError) as info:
            connection.login_with_token(hostile.url, "f" * 48, store,
                                        on_waiting=lambda url, s: notices.append((url, s)))
    finally:
        release.set()
    assert notices and notices[0][0] == hostile.url and notices[0][1] >= 0.05
    message = str(info.value)
    assert "did not answer in time" in message and "token may have been used" in message
    assert "f" * 48 not in message


def test_login_cancelled_before_the_token_is_sent_keeps_it(hostile: HostileServer,
                                                          tmp_path: Path) -> None:
    dss_like_login(hostile)
    cancel = threading.Event()
    cancel.set()
    store = SessionStore(tmp_path, use_keyring=False)
    with pytest.raises(connection.LoginCancelledError, match="not sent"):
        connection.login_with_token(hostile.url.removeprefix("http://"), "f" * 48, store,
                                    cancel=cancel)
    assert ("POST", "/api/login") not in [r[:2] for r in hostile.requests]


def test_login_cancelled_while_waiting_stores_nothing(hostile: HostileServer,
                                                     tmp_path: Path) -> None:
    """Cancel pressed while the POST was in flight: the late session is logged out and not
    stored, and the error says the token may be spent."""
    cancel = threading.Event()

    def late() -> Reply:
        cancel.set()  # the operator gives up while the server is still working
        return Reply(200, b'{"result": {"email": "a@example.com"}}', DSS_COOKIE)

    hostile.routes["POST /api/login"] = late
    hostile.routes["GET /logout"] = Reply(200, b"", DSS_COOKIE)
    store = SessionStore(tmp_path, use_keyring=False)
    with pytest.raises(connection.LoginCancelledError, match="token may have been used"):
        connection.login_with_token(hostile.url, "f" * 48, store, cancel=cancel)
    assert store.load(hostile.url) is None
    assert ("GET", "/logout") in [r[:2] for r in hostile.requests]


def test_login_attempt_cancel_returns_at_once_and_the_late_session_is_dropped(
        hostile: HostileServer, tmp_path: Path) -> None:
    """The API behind the login pane's Cancel: the future resolves on cancel(), not when
    the silent server finally answers; that late answer is logged out, never stored."""
    arrived, release = threading.Event(), threading.Event()

    def slow() -> Reply:
        arrived.set()
        release.wait(30)  # the server sits on the token until the test lets it answer
        return Reply(200, b'{"result": {"email": "a@example.com"}}', DSS_COOKIE)

    hostile.routes["POST /api/login"] = slow
    hostile.routes["GET /logout"] = Reply(200, b"", DSS_COOKIE)
    store = SessionStore(tmp_path, use_keyring=False)
    attempt = connection.start_login(hostile.url, "f" * 48, store)
    try:
        assert arrived.wait(10)
        assert attempt.cancel() is True
        with pytest.raises(connection.LoginCancelledError) as info:
            attempt.future.result(timeout=0)
        assert info.value.token_sent is True
    finally:
        release.set()
    assert attempt.join(10)
    assert store.load(hostile.url) is None
    assert ("GET", "/logout") in [r[:2] for r in hostile.requests]
    assert attempt.cancel() is False  # already over
