"""Signed ledgers (issue 20, part 6, opt-in `sign_ledger = true`) against a real Secret
Service: gnome-keyring-daemon on a private D-Bus session bus. A copy verifies elsewhere with
the public key; a file rewritten with its chain re-hashed fails its signatures; with no
keyring, signing is refused in words and the jobs go on."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dss_console.engine.ledger import GENESIS, canonical, ledger_path, line_hash
from dss_console.sandbox import Sandbox
from test_ledger import EXE_AUDIT, assert_chained
from test_worker_cli import Worker

from test_engine import TAGS, command


@pytest.fixture
def secret_service(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A session bus and an unlocked gnome-keyring on it, for this test only: the env of
    processes that should use it."""
    if shutil.which("gnome-keyring-daemon") is None:
        pytest.fail("gnome-keyring-daemon is not installed: ./dev.sh test installs it "
                    "(apt package gnome-keyring)")
    home = tmp_path / "keyring-home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_CONFIG_HOME=str(tmp_path / "config"),
               XDG_RUNTIME_DIR=str(tmp_path / "run"))
    env.pop("DSS_CONSOLE_KEYRING", None)
    (tmp_path / "run").mkdir(mode=0o700)
    bus = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address=1"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           env=env, start_new_session=True)
    assert bus.stdout is not None
    env["DBUS_SESSION_BUS_ADDRESS"] = bus.stdout.readline().strip()
    keyring_daemon = subprocess.run(
        ["gnome-keyring-daemon", "--unlock", "--components=secrets", "--daemonize"],
        input="test-password\n", capture_output=True, text=True, env=env, timeout=30)
    assert keyring_daemon.returncode == 0, keyring_daemon.stderr
    daemon_pid = next((int(line.split("=", 1)[1]) for line in
                       keyring_daemon.stdout.splitlines()
                       if line.startswith("GNOME_KEYRING_PID=")), None)
    try:
        yield env
    finally:
        if daemon_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(daemon_pid, signal.SIGTERM)
        bus.terminate()
        bus.wait(10)


def _run_worker(env: dict[str, str], sandbox: Sandbox, tmp_path: Path,
                sign: bool = True) -> tuple[Worker, int]:
    service = sandbox.register_service(f"LedgerSign-{uuid.uuid4().hex[:8]}", "1.0.0", TAGS)
    ticket = sandbox.add_ticket(service)
    settings = tmp_path / "settings.toml"
    settings.write_text(f"sign_ledger = {'true' if sign else 'false'}\n")
    login = subprocess.run([str(EXE_AUDIT), "login", "--server", sandbox.url, "--token",
                            sandbox.fresh_token()], env=env, capture_output=True, text=True,
                           timeout=60)
    assert login.returncode == 0, login.stderr
    worker = Worker(env, "--config", str(settings), "--command",
                    f"{service}={command('success')}", "--workdir", str(tmp_path / "work"),
                    "--poll-interval", "0.2", "--instance", "ci-sign", "--exit-when-idle")
    try:
        assert worker.finish(timeout=120) == 0, "\n".join(worker.lines)
    finally:
        worker.kill()
    return worker, ticket


def _audit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE_AUDIT), "audit", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_a_copy_verifies_with_the_public_key_and_a_rehashed_rewrite_fails(
        secret_service: dict[str, str], sandbox: Sandbox, tmp_path: Path) -> None:
    env = secret_service
    _worker, ticket = _run_worker(env, sandbox, tmp_path)
    data = Path(env["XDG_DATA_HOME"]) / "dss-console"
    path = ledger_path(data, sandbox.url)
    found = assert_chained(path)
    assert found[0]["data"]["signing"].startswith("ed25519:")
    assert all(isinstance(r.get("sig"), str) for r in found)
    public = data / "ledger" / "signing.pub"
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert not any(name.endswith((".key", ".pem")) for name in os.listdir(data / "ledger"))
    done = _audit(env, "verify")
    assert done.returncode == 0 and "signed by ed25519:" in done.stdout, done.stdout

    # Elsewhere: a copy and the public key, no journal, no keyring.
    elsewhere = dict(os.environ, DSS_CONSOLE_KEYRING="off")
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(path.read_bytes())
    done = _audit(elsewhere, "verify", "--file", str(copy), "--public-key", str(public))
    assert done.returncode == 0 and "signed by ed25519:" in done.stdout, done.stdout

    # Rewritten: a record's outcome changed and the whole chain re-hashed after it.
    records = [json.loads(line) for line in copy.read_bytes().splitlines()]
    end = next(i for i, r in enumerate(records) if r["kind"] == "end"
               and r["job"]["id"] == ticket)
    records[end]["data"]["outcome"] = "crashed"
    prev = GENESIS
    lines = []
    for record in records:
        record["prev"] = prev
        line = canonical(record)
        prev = line_hash(line)
        lines.append(line)
    copy.write_bytes(b"".join(line + b"\n" for line in lines))
    done = _audit(elsewhere, "verify", "--file", str(copy), "--public-key", str(public))
    assert done.returncode == 1, done.stdout
    assert f"record {end + 1} was changed (its signature does not hold)" in done.stdout
    # A chain re-signed with another key does not pass for this one.
    other = tmp_path / "other.jsonl"
    other_records = [json.loads(line) for line in path.read_bytes().splitlines()]
    other_records[0]["data"]["signing"] = "ed25519:" + "A" * 43 + "="
    other.write_bytes(b"".join(canonical(r) + b"\n" for r in other_records))
    done = _audit(elsewhere, "verify", "--file", str(other), "--public-key", str(public))
    assert done.returncode == 1 and "names a signing key other than" in done.stdout


def test_no_keyring_no_signing_in_words(sandbox: Sandbox, tmp_path: Path) -> None:
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_CONFIG_HOME=str(tmp_path / "config"), DSS_CONSOLE_KEYRING="off")
    worker, ticket = _run_worker(env, sandbox, tmp_path)
    assert worker.saw("the ledger is not signed although sign_ledger = true"), \
        "\n".join(worker.lines)
    assert sandbox.admin.ticket_status(ticket) == "success"
    found = assert_chained(ledger_path(tmp_path / "data" / "dss-console", sandbox.url))
    assert found[0]["data"]["signing"] is None and not any("sig" in r for r in found)
