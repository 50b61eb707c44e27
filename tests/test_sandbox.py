"""The real-server harness really works: servers, login, seeding, isolation, cleanup."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from dss_console.sandbox import DssServerProcess, Sandbox, SandboxError
from dss_console.sandbox.demo import DEMO_PROVIDER, DEMO_SERVICE_NAME, DEMO_SERVICE_VERSION
from dss_console.sandbox.server import server_command
from dss_console.workspace import MAIN_ROLE, Workspace
from sandbox_tickets import new_ready_ticket

TAGS = [{"name": "T2-MRI", "type": "MainImage", "hint": "T2 scan", "required": True}]

def http() -> requests.Session:
    """A client with its own cookie jar; never shared between the admin and public server."""
    session = requests.Session()
    session.trust_env = False
    return session


def login(url: str, token: str) -> requests.Session:
    session = http()
    response = session.post(f"{url}/api/login", data={"token": token}, timeout=10)
    assert response.status_code == 200, response.text
    return session


def csv_rows(text: str) -> list[list[str]]:
    return [row for row in csv.reader(io.StringIO(text)) if row]


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def process_gone(pid: int) -> bool:
    """True when pid no longer runs (a zombie nobody reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state == "Z"


def listening_addresses(port: int) -> set[str]:
    """Local addresses in LISTEN state on ``port``, from /proc/net/tcp{,6} (Linux)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:
                continue
            if len(address) == 8:
                found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
            else:
                found.add(f"ipv6:{address}")
    return found


# -- the shared sandbox ------------------------------------------------------------------


def test_both_servers_answer(sandbox: Sandbox) -> None:
    admin = http().get(f"{sandbox.admin_url}/api/services", timeout=10)
    assert admin.status_code == 200
    name, githash, version, _ = csv_rows(admin.text)[0]
    assert (name, githash, version) == (DEMO_SERVICE_NAME, sandbox.service_hash, "1.0.0")
    public = http().get(f"{sandbox.url}/api/services", timeout=10)
    assert public.status_code == 401
    assert sandbox.url != sandbox.admin_url


def test_public_server_requires_login(sandbox: Sandbox) -> None:
    response = http().get(f"{sandbox.url}/api/pro/services", timeout=10)
    assert response.status_code == 401
    assert response.text == "You are not logged in!"


def test_fresh_token_logs_in_exactly_once(sandbox: Sandbox, fresh_token: str) -> None:
    assert len(fresh_token) == 48
    response = http().post(f"{sandbox.url}/api/login", data={"token": fresh_token}, timeout=10)
    assert response.status_code == 200
    assert response.text.strip() == "logged in as test@example.com"

    again = http().post(f"{sandbox.url}/api/login", data={"token": fresh_token}, timeout=10)
    assert again.status_code == 401
    # The rotated token is the next fresh one.
    assert sandbox.fresh_token() != fresh_token


def test_logged_in_provider_sees_demo_service(sandbox: Sandbox, fresh_token: str) -> None:
    session = login(sandbox.url, fresh_token)
    response = session.get(f"{sandbox.url}/api/pro/services", params={"format": "json"})
    assert response.status_code == 200
    services = response.json()["result"]
    assert {
        "name": DEMO_SERVICE_NAME,
        "version": DEMO_SERVICE_VERSION,
        "githash": sandbox.service_hash,
        "provider": DEMO_PROVIDER,
    } in services
    assert sandbox.provider == DEMO_PROVIDER
    assert sandbox.service_name == DEMO_SERVICE_NAME


def test_ready_ticket_has_workspace_and_layer(
    sandbox: Sandbox, ready_ticket: int, tmp_path: Path
) -> None:
    assert sandbox.admin.ticket_status(ready_ticket) == "ready"
    assert ready_ticket in sandbox.ticket_ids
    files = sandbox.admin.input_files(ready_ticket)
    assert len(files) == 2
    assert files[0] == f"ticket_{ready_ticket:08d}.itksnap"
    assert files[1].startswith("layer_000_")
    assert files[1].endswith(".nii.gz")

    # Downloaded elsewhere, the workspace still finds its layer by tag (relocation).
    for index, name in enumerate(files):
        (tmp_path / name).write_bytes(sandbox.admin.download_file(ready_ticket, "input", index))
    workspace = Workspace.load(tmp_path / files[0])
    (layer,) = workspace.find_layers("T1-MRI")
    assert layer.role == MAIN_ROLE
    assert layer.path == tmp_path / files[1]
    # gzip magic: the layer is the real sample image, not a placeholder.
    assert layer.path.read_bytes()[:2] == b"\x1f\x8b"


def test_provider_can_claim_ready_ticket(sandbox: Sandbox, ready_ticket: int) -> None:
    session = login(sandbox.url, sandbox.fresh_token())
    available = session.post(
        f"{sandbox.url}/api/pro/services/available", data={"services": sandbox.service_hash}
    )
    assert csv_rows(available.text) == [[sandbox.service_hash, DEMO_SERVICE_NAME, "1"]]
    claim = session.post(
        f"{sandbox.url}/api/pro/services/claims",
        data={"services": sandbox.service_hash, "provider": DEMO_PROVIDER, "code": "test"},
    )
    assert csv_rows(claim.text) == [[str(ready_ticket), sandbox.service_hash, "claimed"]]
    listing = session.get(f"{sandbox.url}/api/pro/tickets/{ready_ticket}/files/input")
    assert [row[1] for row in csv_rows(listing.text)] == sandbox.admin.input_files(ready_ticket)


def test_ready_ticket_fixture_deletes_its_ticket(sandbox: Sandbox) -> None:
    # What the ready_ticket fixture runs; on its own, as tests run in any process and order.
    with new_ready_ticket(sandbox) as ticket_id:
        assert sandbox.admin.ticket_status(ticket_id) == "ready"
    assert sandbox.admin.ticket_status(ticket_id) == "deleted"
    with contextlib.suppress(RuntimeError), new_ready_ticket(sandbox) as ticket_id:
        raise RuntimeError("the test failed")
    assert sandbox.admin.ticket_status(ticket_id) == "deleted"


def test_second_user_logs_in_and_is_not_admin(sandbox: Sandbox) -> None:
    token = sandbox.add_user("other@example.com", provider_of=sandbox.provider)
    session = login(sandbox.url, token)
    assert session.get(f"{sandbox.url}/api/login").text.strip() == (
        "logged in as other@example.com"
    )
    services = csv_rows(session.get(f"{sandbox.url}/api/pro/services").text)
    assert [DEMO_SERVICE_NAME, DEMO_SERVICE_VERSION, sandbox.service_hash, DEMO_PROVIDER] in (
        services
    )
    admin_call = session.get(f"{sandbox.url}/api/admin/tickets")
    assert admin_call.status_code == 401
    assert admin_call.text == "Insufficient privileges"
    # Its next token is readable for a second login.
    assert login(sandbox.url, sandbox.fresh_token("other@example.com"))


def test_user_without_provider_sees_no_services(sandbox: Sandbox) -> None:
    session = login(sandbox.url, sandbox.add_user("nobody@example.com"))
    response = session.get(f"{sandbox.url}/api/pro/services")
    assert response.status_code == 200
    assert response.text == ""


def test_add_user_refuses_the_sysadmin(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxError):
        sandbox.add_user(sandbox.user_email)


def test_register_second_service_is_stable(sandbox: Sandbox) -> None:
    first = sandbox.register_service("SecondService", "2.0.0", TAGS, provider="otherlab")
    again = sandbox.register_service("SecondService", "2.0.0", TAGS, provider="otherlab")
    assert first == again != sandbox.service_hash
    ticket_id = sandbox.add_ticket(first)
    assert ticket_id in sandbox.ticket_ids
    sandbox.admin.delete_ticket(ticket_id)
    with pytest.raises(SandboxError, match="HTTP 400: A service with same name and version"):
        sandbox.register_service("SecondService", "2.0.0", [], provider="otherlab")
    # test@example.com is not a provider user of otherlab.
    session = login(sandbox.url, sandbox.fresh_token())
    hashes = [row[2] for row in csv_rows(session.get(f"{sandbox.url}/api/pro/services").text)]
    assert first not in hashes


def test_admin_errors_carry_status_and_body(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxError, match=r"HTTP 400: .*not available"):
        sandbox.admin.create_ticket("0" * 40)


def test_ticket_limit_is_raised(sandbox: Sandbox) -> None:
    with sqlite3.connect(sandbox.sqlite_path) as conn:
        (limit,) = conn.execute(
            "select max_tickets from user_tiers where tier = 'poweruser'"
        ).fetchone()
    assert limit > 10_000


def test_servers_bind_loopback_only(sandbox: Sandbox) -> None:
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs /proc/net/tcp")
    for server in (sandbox.public_server, sandbox.admin_server):
        assert listening_addresses(server.port) == {"127.0.0.1"}


def test_public_restart_keeps_url_and_sessions(sandbox: Sandbox) -> None:
    session = login(sandbox.url, sandbox.fresh_token())
    url, old_pid = sandbox.url, sandbox.public_server.pid
    sandbox.public_server.restart()
    assert sandbox.url == url
    assert sandbox.public_server.pid != old_pid
    # Sessions live in the shared SQLite store, so a restart does not log anyone out.
    assert session.get(f"{url}/api/login").status_code == 200


# -- lifecycle of a separate sandbox -------------------------------------------------


def test_sandbox_seeds_tickets_and_leaves_nothing_behind() -> None:
    started = time.monotonic()
    with Sandbox(tickets=2) as sb:
        elapsed = time.monotonic() - started
        assert len(sb.ticket_ids) == 2
        for ticket_id in sb.ticket_ids:
            assert sb.admin.ticket_status(ticket_id) == "ready"
            assert sb.admin.input_files(ticket_id)[0] == f"ticket_{ticket_id:08d}.itksnap"
        pids = [sb.public_server.pid, sb.admin_server.pid]
        ports = [sb.public_server.port, sb.admin_server.port]
        data_dir = sb.data_dir
        assert all(port_open(port) for port in ports)
    assert elapsed < 30
    assert all(pid is not None and process_gone(pid) for pid in pids)
    assert not any(port_open(port) for port in ports)
    assert not data_dir.exists()


def test_given_data_dir_is_kept_and_topped_up(tmp_path: Path) -> None:
    with Sandbox(data_dir=tmp_path, tickets=1) as sb:
        first = sb.ticket_ids
        service_hash = sb.service_hash
    assert (tmp_path / "alfabis.sqlite3").is_file()
    with Sandbox(data_dir=tmp_path, tickets=2) as sb:
        assert sb.service_hash == service_hash
        assert sb.ticket_ids[:1] == first
        assert len(sb.ticket_ids) == 2


def test_requested_port_in_use_fails_with_log(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        server = DssServerProcess()
        with pytest.raises(SandboxError, match="cannot listen"):
            server.start(tmp_path, port=port, noauth=True)
        assert not server.running


def test_server_context_manager_stops(tmp_path: Path) -> None:
    with DssServerProcess() as server:
        server.start(tmp_path, noauth=True)
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert http().get(f"{server.url}/api/token", timeout=10).status_code == 200
        pid = server.pid
    assert pid is not None and process_gone(pid)
    assert not server.running


def test_frozen_command_uses_hidden_verb(monkeypatch: pytest.MonkeyPatch) -> None:
    assert server_command(["--port", "0"])[1:3] == ["-m", "dss_console.sandbox.serve"]
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    frozen = server_command(["--port", "0"])
    assert frozen == [sys.executable, "_serve-sandbox-server", "--port", "0"]


_ORPHAN_SCRIPT = """
import os, sys
from pathlib import Path
from dss_console.sandbox import DssServerProcess
server = DssServerProcess()
server.start(Path(sys.argv[1]), noauth=True)
print(server.pid, server.port, flush=True)
if sys.argv[2] == "kill":
    os.kill(os.getpid(), 9)
# "exit": leave without stop(); the atexit hook must clean up.
"""


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_no_server_outlives_its_parent(tmp_path: Path, how: str) -> None:
    script = textwrap.dedent(_ORPHAN_SCRIPT)
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), how],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.stdout.strip(), result.stderr
    pid, port = (int(x) for x in result.stdout.split())
    assert wait_until(lambda: process_gone(pid)), f"server {pid} survived its parent ({how})"
    assert not port_open(port)
