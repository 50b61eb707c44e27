"""DssClient against the real DSS middleware (public, auth-required server of the sandbox)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from dss_console import connection
from dss_console.credentials import SessionStore
from dss_console.dss import (
    DssClient,
    LoginFailedError,
    LogLevel,
    NotDssServerError,
    NotLoggedInError,
    NotProviderError,
    ServerError,
    ServerUnreachableError,
    TicketDeletedError,
    TicketNotClaimedError,
    TicketNotFoundError,
    TicketStatus,
)
from dss_console.sandbox import Sandbox
from dss_console.workspace import Workspace


def test_login_whoami_logout(sandbox: Sandbox, fresh_token: str) -> None:
    client = DssClient(sandbox.url)
    assert client.login(fresh_token) == "test@example.com"
    assert client.whoami() == "test@example.com"
    session_id = client.session_id
    assert session_id and len(session_id) == 40
    client.logout()
    assert client.session_id is None
    with pytest.raises(NotLoggedInError):
        client.whoami()
    # The server forgot the session too: reusing the old id is refused.
    stale = DssClient(sandbox.url, session_id=session_id)
    with pytest.raises(NotLoggedInError, match="log in again"):
        stale.services.provided()


def test_used_token_is_refused_and_working_session_survives(sandbox: Sandbox,
                                                             client: DssClient,
                                                             fresh_token: str) -> None:
    other = DssClient(sandbox.url)
    other.login(fresh_token)
    with pytest.raises(LoginFailedError, match="Tokens work once") as info:
        client.login(fresh_token)  # already used by `other`
    assert info.value.status == 401
    assert fresh_token not in str(info.value)
    # The failed login was sent without the cookie, so the server did not kill our session.
    assert client.whoami() == "test@example.com"


def test_not_logged_in(sandbox: Sandbox) -> None:
    with pytest.raises(NotLoggedInError) as info:
        DssClient(sandbox.url).services.provided()
    assert info.value.status == 401
    assert "You are not logged in" in info.value.server_message
    with pytest.raises(NotLoggedInError):
        DssClient(sandbox.url, session_id="0" * 40).tickets.status(1)


def test_trailing_slash_is_normalised(sandbox: Sandbox, client: DssClient) -> None:
    again = DssClient(sandbox.url + "//", session_id=client.session_id)
    assert again.server == sandbox.url
    assert again.whoami() == "test@example.com"


def test_services_list_stats_detail(sandbox: Sandbox, client: DssClient) -> None:
    services = client.services.provided()
    demo = [s for s in services if s.githash == sandbox.service_hash]
    assert len(demo) == 1
    assert demo[0].name == sandbox.service_name
    assert demo[0].provider == sandbox.provider
    stats = client.services.stats(sandbox.service_hash)
    assert stats.n_success >= 0 and stats.queue_length >= 0
    detail = client.services.detail(sandbox.service_hash)
    assert detail.name == sandbox.service_name
    assert "T1-MRI" in detail.required_tags


def test_available_claim_and_nothing_left(sandbox: Sandbox, client: DssClient,
                                          ready_ticket: int) -> None:
    available = client.services.available([sandbox.service_hash])
    assert [(a.githash, a.name) for a in available] == [(sandbox.service_hash,
                                                         sandbox.service_name)]
    assert available[0].ready_count == 1
    claimed = client.services.claim(sandbox.service_hash, sandbox.provider, "pytest")
    assert claimed is not None
    assert (claimed.ticket_id, claimed.service_hash) == (ready_ticket, sandbox.service_hash)
    assert client.tickets.status(ready_ticket) is TicketStatus.CLAIMED
    assert client.services.claim(sandbox.service_hash, sandbox.provider, "pytest") is None
    assert client.services.available(sandbox.service_hash) == []
    log = sandbox.admin.ticket_detail(ready_ticket)["log"]
    assert any("instance pytest" in entry["message"] for entry in log)


def test_claim_foreign_and_unknown_service(sandbox: Sandbox, client: DssClient,
                                           foreign_service: str) -> None:
    with pytest.raises(NotProviderError) as info:
        client.services.claim([sandbox.service_hash, foreign_service], sandbox.provider, "x")
    assert info.value.status == 401
    assert foreign_service in str(info.value)
    with pytest.raises(NotProviderError):
        client.services.available("ab" * 20)


def test_unknown_ticket(client: DssClient) -> None:
    with pytest.raises(TicketNotFoundError, match="no such ticket"):
        client.tickets.status(987654)
    with pytest.raises(TicketNotClaimedError):
        client.tickets.inputs(987654)


def test_full_ticket_flow(sandbox: Sandbox, client: DssClient, claimed_ticket: int,
                          tmp_path: Path) -> None:
    tid = claimed_ticket
    listing = client.tickets.inputs(tid)
    assert f"ticket_{tid:08d}.itksnap" in [f.name for f in listing]
    seen: list[tuple[int, int | None]] = []
    paths = client.tickets.download_inputs(tid, tmp_path / "in",
                                           progress=lambda d, t: seen.append((d, t)))
    assert sorted(p.name for p in paths) == sorted(f.name for f in listing)
    assert max(done for done, _ in seen) == max(p.stat().st_size for p in paths)
    assert not list((tmp_path / "in").glob(".dss-part-*"))
    workspace = Workspace.load(tmp_path / "in" / f"ticket_{tid:08d}.itksnap")
    main = workspace.find_layers("T1-MRI")
    assert main and main[0].path.exists()

    client.tickets.set_progress(tid, 0.5)
    assert client.tickets.progress(tid) == pytest.approx(0.5)
    qc = tmp_path / "qc.txt"
    qc.write_text("volume 123 ml\n")
    attachment_id = client.tickets.attach(tid, "QC report", qc, "text/plain")
    log_id = client.tickets.log(tid, LogLevel.INFO, "Segmentation done")
    assert attachment_id > 0 and log_id > 0

    names = client.tickets.upload_results(tid, workspace.path)
    assert names[-1] == f"ticket_{tid:08d}_results.itksnap"
    assert all(n.startswith("layer_000_") for n in names[:-1])
    assert sorted(sandbox.admin.result_files(tid)) == sorted(names)
    assert sorted(f.name for f in client.tickets.results(tid)) == sorted(names)
    layer_bytes = sandbox.admin.download_file(
        tid, "results", sandbox.admin.result_files(tid).index(names[0]))
    assert re.fullmatch(r"layer_000_[0-9a-f]{64}\.nii\.gz", names[0]), names[0]
    assert layer_bytes == workspace.layers[0].path.read_bytes()

    assert client.tickets.succeed(tid) is TicketStatus.SUCCESS
    assert client.tickets.status(tid) is TicketStatus.SUCCESS
    assert TicketStatus.SUCCESS.is_terminal
    entries = sandbox.admin.ticket_detail(tid)["log"]
    done = [e for e in entries if e["message"] == "Segmentation done"]
    assert done and done[0]["category"] == "info"
    assert [a["description"] for a in done[0]["attachments"]] == ["QC report"]


def test_fail_sends_error_then_status(sandbox: Sandbox, client: DssClient,
                                      claimed_ticket: int) -> None:
    assert client.tickets.fail(claimed_ticket, "Image is not a brain") is TicketStatus.FAILED
    assert sandbox.admin.ticket_status(claimed_ticket) == "failed"
    errors = [e for e in sandbox.admin.ticket_detail(claimed_ticket)["log"]
              if e["category"] == "error"]
    assert [e["message"] for e in errors] == ["Image is not a brain"]


def test_ticket_deleted_while_claimed(sandbox: Sandbox, client: DssClient,
                                      claimed_ticket: int) -> None:
    sandbox.admin.delete_ticket(claimed_ticket)
    with pytest.raises(TicketDeletedError, match="deleted by its owner"):
        client.tickets.set_progress(claimed_ticket, 0.3)
    with pytest.raises(TicketDeletedError):
        client.tickets.log(claimed_ticket, "info", "still there?")
    status = client.tickets.status(claimed_ticket)
    assert status is TicketStatus.DELETED and status.is_terminal


def test_not_your_ticket(sandbox: Sandbox, claimed_ticket: int) -> None:
    colleague = DssClient(sandbox.url)
    colleague.login(sandbox.add_user(f"colleague{time.monotonic_ns()}@example.com",
                                     provider_of=sandbox.provider))
    # Same provider: may read the status, may not act on a ticket someone else claimed.
    assert colleague.tickets.status(claimed_ticket) is TicketStatus.CLAIMED
    with pytest.raises(TicketNotClaimedError, match="not claimed by this account"):
        colleague.tickets.set_progress(claimed_ticket, 0.1)
    with pytest.raises(TicketNotClaimedError):
        colleague.tickets.succeed(claimed_ticket)


def test_user_without_provider_role(sandbox: Sandbox) -> None:
    stranger = DssClient(sandbox.url)
    stranger.login(sandbox.add_user(f"stranger{time.monotonic_ns()}@example.com"))
    assert stranger.services.provided() == []
    with pytest.raises(NotProviderError):
        stranger.services.claim(sandbox.service_hash, sandbox.provider, "x")


def test_server_down_fails_fast_with_words(closed_port_url: str) -> None:
    client = DssClient(closed_port_url, session_id="s" * 40, retries=1, backoff=0.01)
    started = time.monotonic()
    with pytest.raises(ServerUnreachableError, match=r"unreachable \(connection refused") as info:
        client.services.provided()
    assert time.monotonic() - started < 5
    assert "s" * 40 not in str(info.value)


def test_schemeless_loopback_address_logs_in_over_plain_http(sandbox: Sandbox, fresh_token: str,
                                                             tmp_path: Path) -> None:
    """`127.0.0.1:PORT` means the local server: https:// is tried first (a harmless GET), and
    when that port speaks plain HTTP the one login POST goes there."""
    store = SessionStore(tmp_path, use_keyring=False)
    result = connection.login_with_token(sandbox.url.removeprefix("http://"), fresh_token, store)
    assert (result.client.server, result.email) == (sandbox.url, "test@example.com")
    resumed = connection.resume_session(sandbox.url, store)
    assert resumed is not None and resumed.email == "test@example.com"


def test_the_real_servers_own_500_on_login_is_not_called_foreign(sandbox: Sandbox) -> None:
    # The one 500 the real server gives on /api/login: a POST without a token field.
    with DssClient(sandbox.url) as client, pytest.raises(ServerError,
                                                         match="internal error") as info:
        client.transport.request("POST", "/api/login", action="log in", data={},
                                 authenticated=False, entry=True)
    assert not isinstance(info.value, NotDssServerError)


def test_login_attempt_resolves_to_the_session(sandbox: Sandbox, fresh_token: str,
                                               tmp_path: Path) -> None:
    store = SessionStore(tmp_path, use_keyring=False)
    attempt = connection.start_login(sandbox.url, fresh_token, store)
    logged_in = attempt.future.result(timeout=30)
    assert logged_in.email == "test@example.com" and attempt.join(10)
    assert store.load(sandbox.url) is not None
    assert attempt.cancel() is False
    logged_in.client.close()


def test_sessions_of_ended_threads_are_released(client: DssClient) -> None:
    """The engine runs each job on a thread of its own; a worker that ran for months kept one
    HTTP session (and its pooled socket) per job ever run."""
    import gc
    import threading

    import requests

    def live_sessions() -> int:
        gc.collect()
        return sum(isinstance(o, requests.Session) for o in gc.get_objects())

    client.services.provided()
    before = live_sessions()
    for _ in range(30):
        job = threading.Thread(target=client.services.provided)
        job.start()
        job.join()
    # The last thread's session stays until a new thread asks; none of the others.
    assert live_sessions() - before <= 1
