"""Every `dss-console` verb against the real server, in process (fast) and as a real
console script where exit codes and stderr are the contract."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dss_console import connection
from dss_console.cli import main
from dss_console.sandbox import Sandbox
from dss_console.workspace import Workspace

from hostile_server import HostileServer, Reply


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Private XDG dirs, no keyring: what a headless provider box looks like."""
    for var, sub in (("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config"),
                     ("XDG_STATE_HOME", "state"), ("HOME", "home")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("DSS_CONSOLE_KEYRING", "off")
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def logged_in(home: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> Sandbox:
    code, out, _ = run(capsys, "login", "--server", sandbox.url, "--token", sandbox.fresh_token())
    assert code == 0, out
    return sandbox


def test_login_prints_email_and_notes_file_store_once(
        home: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(sandbox.fresh_token() + "\n"))
    code, out, err = run(capsys, "login", "--server", sandbox.url + "/", "--token-stdin")
    assert (code, out) == (0, "logged in as test@example.com\n")
    assert "no working OS keyring" in err
    session_file = home / "data" / "dss-console" / "sessions.json"
    assert session_file.stat().st_mode & 0o777 == 0o600
    assert (home / "data" / "dss-console").stat().st_mode & 0o777 == 0o700
    code, out, err = run(capsys, "login", "--server", sandbox.url, "--token",
                         sandbox.fresh_token())
    assert code == 0 and "keyring" not in err
    assert not (home / "home" / ".alfabis").exists()


def test_token_never_stored_and_session_not_printed(logged_in: Sandbox, home: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    token = logged_in.fresh_token()
    code, _, err = run(capsys, "login", "--server", logged_in.url, "--token", token)
    assert code == 0
    stored = "".join(p.read_text() for p in (home / "data").rglob("*.json"))
    assert token not in stored
    session_id = json.loads((home / "data" / "dss-console" / "sessions.json").read_text())
    assert list(session_id) == [logged_in.url]
    code, out, err = run(capsys, "pro", "status", "999999")
    assert session_id[logged_in.url] not in out + err


def test_used_token_fails_in_words(home: Path, sandbox: Sandbox,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    token = sandbox.fresh_token()
    assert run(capsys, "login", "--server", sandbox.url, "--token", token)[0] == 0
    code, out, err = run(capsys, "login", "--server", sandbox.url, "--token", token)
    assert code == 1 and out == ""
    assert err.startswith("dss-console: error: Could not log in") and "Tokens work once" in err
    assert err.count("\n") == 1


def test_services_and_available(logged_in: Sandbox, ready_ticket: int,
                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "pro", "services")
    box = logged_in
    assert code == 0
    assert f"{box.service_name} 1.0.0 {box.service_hash} {box.provider}" in out.splitlines()
    code, out, _ = run(capsys, "pro", "available", box.service_hash)
    assert (code, out) == (0, f"{box.service_hash} {box.service_name} 1\n")
    code, out, _ = run(capsys, "pro", "available", box.service_hash, "--json")
    assert json.loads(out) == [{"githash": box.service_hash, "name": box.service_name,
                                "ready_count": 1}]


def test_whole_ticket_through_the_cli(logged_in: Sandbox, ready_ticket: int, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    box = logged_in
    code, out, _ = run(capsys, "pro", "claim", box.service_hash, box.provider, "node7",
                       "--server", box.url)
    assert (code, out) == (0, f"{ready_ticket} {box.service_hash} claimed\n")
    tid = str(ready_ticket)

    code, out, _ = run(capsys, "pro", "download", tid, str(tmp_path / "in"))
    paths = [Path(p) for p in out.splitlines()]
    assert code == 0 and all(p.is_file() and p.parent == tmp_path / "in" for p in paths)
    workspace = next(p for p in paths if p.suffix == ".itksnap")
    assert Workspace.load(workspace).find_layers("T1-MRI")

    assert run(capsys, "pro", "progress", tid, "0", "1", "0.25") == (0, "", "")
    assert run(capsys, "pro", "log", tid, "warning", "Low contrast") == (0, "", "")
    qc = tmp_path / "qc.txt"
    qc.write_text("ok\n")
    assert run(capsys, "pro", "attach", tid, "QC", str(qc), "text/plain") == (0, "", "")
    assert run(capsys, "pro", "log", tid, "info", "QC attached") == (0, "", "")
    code, out, _ = run(capsys, "pro", "upload", tid, str(workspace))
    assert code == 0 and out.splitlines()[-1] == f"ticket_{ready_ticket:08d}_results.itksnap"
    assert sorted(box.admin.result_files(ready_ticket)) == sorted(out.splitlines())
    assert run(capsys, "pro", "status", tid) == (0, "claimed\n", "")
    assert run(capsys, "pro", "success", tid) == (0, "success\n", "")
    code, out, _ = run(capsys, "pro", "status", tid, "--json")
    assert json.loads(out) == {"ticket_id": ready_ticket, "status": "success"}
    detail = box.admin.ticket_detail(ready_ticket)
    assert detail["progress"] == 1.0
    messages = {(e["category"], e["message"]) for e in detail["log"]}
    assert {("warning", "Low contrast"), ("info", "QC attached")} <= messages


def test_fail_and_nothing_to_claim(logged_in: Sandbox, ready_ticket: int,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    box = logged_in
    assert run(capsys, "pro", "claim", box.service_hash, box.provider, "n")[0] == 0
    code, out, err = run(capsys, "pro", "claim", box.service_hash, box.provider, "n")
    assert (code, out) == (3, "")
    assert "no ticket is ready" in err
    assert run(capsys, "pro", "fail", str(ready_ticket), "Wrong modality") == (0, "failed\n", "")
    log = box.admin.ticket_detail(ready_ticket)["log"]
    assert ("error", "Wrong modality") in {(e["category"], e["message"]) for e in log}
    # A finished ticket stays as it is: failing it again changes nothing and says why.
    code, out, err = run(capsys, "pro", "fail", str(ready_ticket), "Again")
    assert (code, out) == (1, "") and "already failed" in err
    log = box.admin.ticket_detail(ready_ticket)["log"]
    assert ("error", "Again") not in {(e["category"], e["message"]) for e in log}


def test_fail_leaves_a_successful_ticket_alone(logged_in: Sandbox, ready_ticket: int,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    box = logged_in
    assert run(capsys, "pro", "claim", box.service_hash, box.provider, "n")[0] == 0
    assert run(capsys, "pro", "success", str(ready_ticket)) == (0, "success\n", "")
    code, out, err = run(capsys, "pro", "fail", str(ready_ticket), "Oops")
    assert (code, out) == (1, "") and "already success" in err
    assert box.admin.ticket_detail(ready_ticket)["status"] == "success"


@pytest.mark.parametrize(("argv", "needle"), [
    (["pro", "status", "987654"], "no such ticket"),
    (["pro", "progress", "987654", "0", "1", "0.5"], "not claimed by this account"),
    (["pro", "claim", "ab" * 20, "lab", "n"], "not a provider"),
    (["pro", "upload", "987654", "/nonexistent/ws.itksnap"], "Could not upload"),
    (["pro", "attach", "987654", "d", "/nonexistent/file.txt"], "cannot read"),
])
def test_server_and_local_errors_are_one_line(logged_in: Sandbox, argv: list[str], needle: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == ""
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_deleted_ticket(logged_in: Sandbox, ready_ticket: int,
                        capsys: pytest.CaptureFixture[str]) -> None:
    box = logged_in
    assert run(capsys, "pro", "claim", box.service_hash, box.provider, "n")[0] == 0
    box.admin.delete_ticket(ready_ticket)
    code, _, err = run(capsys, "pro", "log", str(ready_ticket), "info", "hello")
    assert code == 1 and "deleted by its owner" in err
    assert run(capsys, "pro", "status", str(ready_ticket)) == (0, "deleted\n", "")


def test_not_logged_in_and_logout(logged_in: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "logout") == (0, f"logged out of {logged_in.url}\n", "")
    code, _, err = run(capsys, "pro", "services")
    assert code == 1 and "not logged in" in err and "dss-console login" in err


def test_no_server_known(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "pro", "services")
    assert code == 1 and "no server given" in err


def test_usage_errors_exit_2(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["pro", "claim", "abc"], ["pro", "log", "1", "debug", "x"],
                 ["pro", "status", "x1"], ["login", "--server", "http://h"],
                 ["pro", "progress", "1", "0", "1", "1.5"],
                 ["pro", "progress", "1", "-0.1", "1", "0.5"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2, argv
    for argv in (["pro", "progress", "1", "0.5", "0.2", "0.1", "--server", "http://h"],

                 ["pro", "services", "--server", "ftp://h"]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and "error:" in err, argv


def cli(*argv: str, env: dict[str, str], stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("dss-console")
    return subprocess.run([str(exe), *argv], capture_output=True, text=True, env=env,
                          input=stdin, timeout=60)


@pytest.fixture
def cli_env(home: Path) -> dict[str, str]:
    return dict(os.environ)


def test_console_script_exit_codes(cli_env: dict[str, str], sandbox: Sandbox,
                                   closed_port_url: str) -> None:
    result = cli("login", "--server", sandbox.url, "--token-stdin", env=cli_env,
                 stdin=sandbox.fresh_token())
    assert (result.returncode, result.stdout) == (0, "logged in as test@example.com\n")
    result = cli("pro", "services", env=cli_env)
    assert result.returncode == 0 and sandbox.service_hash in result.stdout
    result = cli("pro", "services", "--server", closed_port_url, env=cli_env)
    assert result.returncode == 1 and "not logged in" in result.stderr
    result = cli("login", "--server", closed_port_url, "--token", "f" * 48, env=cli_env)
    assert result.returncode == 1
    assert result.stderr.strip().endswith("is unreachable (connection refused)")
    assert "Traceback" not in result.stderr
    result = cli("pro", "bogus", env=cli_env)
    assert result.returncode == 2 and "usage error" in result.stderr


def test_login_error_names_the_server_once(cli_env: dict[str, str],
                                           closed_port_url: str) -> None:
    result = cli("login", "--server", closed_port_url, "--token", "f" * 48, env=cli_env)
    assert result.returncode == 1
    assert result.stderr.count(closed_port_url) == 1, result.stderr
    assert "the server is unreachable (connection refused)" in result.stderr


def test_download_of_an_unknown_ticket_leaves_no_folder(logged_in: Sandbox, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    target = tmp_path / "new" / "in"
    code, out, err = run(capsys, "pro", "download", "999999", str(target))
    assert code == 1 and out == "" and "ticket 999999" in err
    assert not (tmp_path / "new").exists()


def test_download_into_a_file_says_so_in_words(logged_in: Sandbox, ready_ticket: int,
                                              tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    box = logged_in
    code, _, _ = run(capsys, "pro", "claim", box.service_hash, box.provider, "node7")
    assert code == 0
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("mine\n")
    code, out, err = run(capsys, "pro", "download", str(ready_ticket), str(in_the_way))
    assert code == 1 and out == ""
    assert f"{in_the_way} is a file, not a folder" in err and "File exists" not in err
    code, _, err = run(capsys, "pro", "download", str(ready_ticket), str(in_the_way / "sub"))
    assert code == 1 and f"{in_the_way} is a file, not a folder" in err
    assert in_the_way.read_text() == "mine\n"


def test_console_with_a_missing_named_settings_file_says_so(cli_env: dict[str, str],
                                                             tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "settings.toml"
    result = cli("--config", str(missing), env=dict(cli_env, QT_QPA_PLATFORM="offscreen"))
    assert result.returncode == 2, result
    assert f"--config names the settings file {missing}, which does not exist" in result.stderr
    assert not missing.parent.exists()


def test_verb_modules_do_not_import_the_cli_entry_point() -> None:
    """The verbs get CliError from commands.errors; importing cli.py from them was a circle
    (cli imports the verbs to build its parser)."""
    script = (
        "import sys\n"
        "import dss_console.commands.auth, dss_console.commands.pro\n"
        "import dss_console.commands.sandbox, dss_console.commands.context\n"
        "import dss_console.commands.worker\n"
        "assert 'dss_console.cli' not in sys.modules, 'a verb module imports dss_console.cli'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_login_to_a_web_server_that_is_not_dss(home: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with HostileServer() as server:  # answers like `python -m http.server` does to a POST
        server.routes["POST /api/login"] = Reply(
            501, b"<html><body><h1>Error response</h1><p>Error code: 501</p><p>Message: "
                 b"Unsupported method ('POST').</p></body></html>", {"Content-Type": "text/html"})
        code, out, err = run(capsys, "login", "--server", server.url, "--token", "f" * 48)
    assert (code, out) == (1, "")
    assert err == (f"dss-console: error: Could not log in to {server.url}: this does not look "
                   "like a DSS server (HTTP 501 for /api/login); check the address\n")


def test_login_without_scheme_to_the_local_server(home: Path, sandbox: Sandbox,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    address = sandbox.url.removeprefix("http://")
    code, out, err = run(capsys, "login", "--server", address, "--token", sandbox.fresh_token())
    assert (code, out) == (0, "logged in as test@example.com\n")
    assert f"{sandbox.url} (plain HTTP" in err
    assert run(capsys, "pro", "services")[0] == 0  # the http:// address was remembered


def test_login_to_a_silent_server_says_it_is_waiting(home: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def silent() -> Reply:
        release.wait(30)  # holds the reply back until the client has given up
        return Reply(503)

    monkeypatch.setattr(connection, "WAIT_NOTICE_AFTER", 0.05)
    monkeypatch.setattr("dss_console.dss.client.LOGIN_TIMEOUT", (5.0, 1.5))
    with HostileServer() as server:
        server.routes["POST /api/login"] = silent
        try:
            code, out, err = run(capsys, "login", "--server", server.url, "--token", "f" * 48)
        finally:
            release.set()
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert re.fullmatch(rf"dss-console: still waiting for {re.escape(server.url)}: no answer "
                        r"yet \(\d+ s\)", lines[0]), lines
    assert lines[-1].startswith(f"dss-console: error: Could not log in to {server.url}: ")
    assert "did not answer in time" in lines[-1] and "token may have been used" in lines[-1]
    assert "f" * 48 not in err
