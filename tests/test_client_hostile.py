"""The client against a misbehaving peer: hostile names, HTML pages, 502s, dropped replies."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from dss_console.dss import (
    BadReplyError,
    ClaimOutcomeUnknownError,
    DssClient,
    LoginFailedError,
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
    assert list(tmp_path.rglob("*")) == [tmp_path / "work", target]  # empty folders only
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
        client_for(hostile).services.list()
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
        client_for(hostile).services.list()


def test_session_cookie_sent_but_never_in_errors(hostile: HostileServer) -> None:
    hostile.routes["GET /api/pro/services"] = Reply(500, b"internal server error")
    with pytest.raises(ServerError) as info:
        client_for(hostile, retries=0).services.list()
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
