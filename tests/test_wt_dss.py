"""`dss-console wt -dss*`: provider, user and admin commands against the real sandbox
server, run as real processes (exit codes and stderr are the contract)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dss_console.sandbox import Sandbox
from dss_console.sandbox.seed import make_service_repo
from dss_console.workspace import Workspace

from test_engine import TAGS

EXE = Path(sys.executable).with_name("dss-console")


def wt(env: dict[str, str], *argv: str, stdin: str | None = None, cwd: Path | None = None,
       timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), "wt", *argv], env=env, input=stdin, text=True,
                          capture_output=True, timeout=timeout, cwd=cwd)


def ok(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert (result.returncode, result.stderr) == (0, ""), result
    return result.stdout.splitlines()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wt-home")


@pytest.fixture(scope="module")
def env(sandbox: Sandbox, home: Path) -> Iterator[dict[str, str]]:
    """Logged in with `wt -dss-auth`, token on standard input, as itksnap-wt reads it."""
    env = dict(os.environ, HOME=str(home / "home"), XDG_DATA_HOME=str(home / "data"),
               XDG_CONFIG_HOME=str(home / "config"), DSS_CONSOLE_KEYRING="off")
    env.pop("ITKSNAP_WT_DSS_SERVER", None)
    for name in ("DSS_TICKET_ID", "DSS_EVENTS", "DSS_RESULT_WORKSPACE"):
        env.pop(name, None)
    token = sandbox.fresh_token()
    result = wt(env, "-dss-auth", sandbox.url, stdin=token + "\n")
    lines = ok(result)
    assert lines == [f"Paste this link into your browser to obtain a token:  {sandbox.url}/token",
                     "  Enter the token: Success: logged in as test@example.com"]
    assert token not in result.stdout + result.stderr
    yield env


@pytest.fixture
def service(sandbox: Sandbox) -> str:
    """A service of its own, so "the next ticket" is this test's."""
    return sandbox.register_service(f"WtTest-{uuid.uuid4().hex[:8]}", "1.0.0", TAGS)


def test_session_kept_in_the_credential_store_not_alfabis(env: dict[str, str], home: Path,
                                                         sandbox: Sandbox) -> None:
    assert not (home / "home" / ".alfabis").exists()
    data = home / "data"
    stored = {str(p.relative_to(data)) for p in data.rglob("*") if p.is_file()}
    assert stored, "no session stored"
    # `dss-console pro` finds the same session.
    pro = subprocess.run([str(EXE), "pro", "services"], env=env, capture_output=True, text=True)
    assert pro.returncode == 0 and sandbox.service_hash in pro.stdout


def test_provider_ticket_round_trip(env: dict[str, str], sandbox: Sandbox, service: str,
                                   tmp_path: Path) -> None:
    ticket = sandbox.add_ticket(service)
    lines = ok(wt(env, "-dssp-services-list"))
    row = next(line for line in lines if service in line)
    assert row.startswith("1> ") and row.split()[1:] == [row.split()[1], "1.0.0", service,
                                                          sandbox.provider]
    claim = ok(wt(env, "-dssp-services-claim", service, sandbox.provider, "node1"))
    assert claim == [f"1> {ticket}  {service}  claimed  "]
    files = ok(wt(env, "-P", "-dssp-tickets-download", str(ticket), str(tmp_path / "in")))
    workspace = next(f for f in files if f.endswith(".itksnap"))
    assert Path(workspace).parent == tmp_path / "in"
    t1 = ok(wt(env, "-P", "-i", workspace, "-llf", "T1-MRI"))
    assert len(t1) == 1 and Path(t1[0]).is_file()
    (tmp_path / "qc.txt").write_text("quality ok\n")
    lines = ok(wt(env, "-dssp-tickets-set-progress", str(ticket), "0", "0.5", "1",
                  "-dssp-tickets-log", str(ticket), "info", "half way",
                  "-dssp-tickets-attach", str(ticket), "QC report", str(tmp_path / "qc.txt"),
                  "text/plain", "-dssp-tickets-log", str(ticket), "warning", "with attachment",
                  "-dssp-tickets-status", str(ticket)))
    assert lines == ["success", "5> claimed"]
    result = tmp_path / "result.itksnap"
    ok(wt(env, "-i", workspace, "-las", t1[0], "-psn", "Result", "-o", str(result)))
    lines = ok(wt(env, "-i", str(result), "-dssp-tickets-upload", str(ticket),
                  "-dssp-tickets-success", str(ticket)))
    assert lines[-1] == "3> success"
    assert sandbox.admin.ticket_status(ticket) == "success"
    names = sandbox.admin.result_files(ticket)
    assert names[-1] == f"ticket_{ticket:08d}_results.itksnap" and len(names) == 3
    detail = sandbox.admin.ticket_detail(ticket)
    messages = [entry["message"] for entry in detail["log"]]
    assert "half way" in messages and "with attachment" in messages
    attached = next(e for e in detail["log"] if e["message"] == "with attachment")
    assert [a["description"] for a in attached["attachments"]] == ["QC report"]
    # The user's view: log, progress, results download, as ITK-SNAP's DSS dialog shows it.
    log = ok(wt(env, "-dss-tickets-log", str(ticket)))
    assert any(line.split()[1:3] == ["info", "half"] for line in log)
    assert any(line.startswith("  @ ") and line.endswith(" : QC report") for line in log)
    progress = ok(wt(env, "-dss-tickets-progress", str(ticket)))
    assert progress == ["1> 0.5"]  # chunk 0..0.5 done; the raw sum, as the server reports
    downloaded = ok(wt(env, "-dss-tickets-download", str(ticket), str(tmp_path / "out")))
    ws = Workspace.load(next(line[3:] for line in downloaded if line.endswith(".itksnap")))
    assert [la.nickname for la in ws.layers] == ["T1", "Result"]
    assert all(la.path.parent == tmp_path / "out" for la in ws.layers)
    wait = ok(wt(env, "-dss-tickets-wait", str(ticket), "30"))
    assert wait[-1] == "Ticket completed with status: success"


def test_claim_nothing_exits_1_and_waits_with_a_timeout(env: dict[str, str], sandbox: Sandbox,
                                                       service: str) -> None:
    nothing = wt(env, "-dssp-services-claim", service, sandbox.provider, "node1")
    assert (nothing.returncode, nothing.stdout) == (1, "")
    assert nothing.stderr == ("dss-console wt: -dssp-services-claim (command 1): Timed out "
                              "waiting for available tickets\n")
    proc = subprocess.Popen([str(EXE), "wt", "-dssp-services-claim", service, sandbox.provider,
                             "node1", "20"], env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        # The ticket appears while the command waits; it must take it, well before 20 s.
        adder = threading.Timer(1.0, lambda: created.append(sandbox.add_ticket(service)))
        created: list[int] = []
        adder.start()
        out, err = proc.communicate(timeout=30)
        adder.join()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (proc.returncode, err) == (0, "")
    assert out == f"1> {created[0]}  {service}  claimed  \n"
    fail = ok(wt(env, "-dssp-tickets-fail", str(created[0]), "no brain found"))
    assert fail == ["1> failed"]
    assert sandbox.admin.ticket_status(created[0]) == "failed"


def test_in_job_reports_for_the_jobs_ticket_go_to_the_events_file(
        env: dict[str, str], sandbox: Sandbox, service: str, tmp_path: Path) -> None:
    mine, other = sandbox.add_ticket(service), sandbox.add_ticket(service)
    for _ in range(2):
        ok(wt(env, "-dssp-services-claim", service, sandbox.provider, "node1"))
    events = tmp_path / "events.jsonl"
    events.touch()
    (tmp_path / "plot.png").write_bytes(b"png")
    job_env = dict(env, DSS_TICKET_ID=str(mine), DSS_EVENTS=str(events),
                   DSS_RESULT_WORKSPACE=str(tmp_path / "result.itksnap"))
    lines = ok(wt(job_env, "-dssp-tickets-log", str(mine), "info", "Affine done",
                  "-dssp-tickets-set-progress", str(mine), "0", "1", "0.25",
                  "-dssp-tickets-attach", str(mine), "Plot", str(tmp_path / "plot.png"),
                  "-dssp-tickets-log", str(other), "info", "for the other ticket",
                  cwd=tmp_path))
    assert lines == ["success"]
    recorded = [json.loads(line)["args"] for line in events.read_text().splitlines()]
    assert recorded == [["info", "Affine done"], ["progress", "0.0", "1.0", "0.25"],
                        ["attach", "Plot", str(tmp_path / "plot.png")]]
    mine_log = [e["message"] for e in sandbox.admin.ticket_detail(mine)["log"]]
    other_log = [e["message"] for e in sandbox.admin.ticket_detail(other)["log"]]
    assert "Affine done" not in mine_log and "for the other ticket" in other_log
    # Upload and success for the job's own ticket are left to the engine (in order).
    workspace = ok(wt(env, "-P", "-dssp-tickets-download", str(mine), str(tmp_path / "in")))
    ws_file = next(f for f in workspace if f.endswith(".itksnap"))
    lines = ok(wt(job_env, "-i", ws_file, "-dssp-tickets-upload", str(mine),
                  "-dssp-tickets-success", str(mine)))
    assert lines[-1] == "3> success"
    assert Workspace.load(tmp_path / "result.itksnap").layers[0].tags == ("T1-MRI",)
    assert sandbox.admin.ticket_status(mine) == "claimed"
    assert sandbox.admin.result_files(mine) == []
    # The job's abort file stops a report, as $DSS_HOOK does.
    abort = tmp_path / "abort"
    abort.write_text("ticket deleted")
    stopped = wt(dict(job_env, DSS_ABORT_FILE=str(abort)), "-dssp-tickets-log", str(mine),
                 "info", "late")
    assert stopped.returncode == 255 and "no longer being processed" in stopped.stderr
    for ticket in (mine, other):
        sandbox.admin.delete_ticket(ticket)


def test_user_commands_submit_a_ticket_from_a_workspace(env: dict[str, str], sandbox: Sandbox,
                                                        service: str, tmp_path: Path) -> None:
    listing = ok(wt(env, "-dss-services-list"))
    assert any(line.startswith("1> ") and service in line for line in listing)
    detail = ok(wt(env, "-dss-services-detail", service))
    assert json.loads("\n".join(line[3:] for line in detail))["version"] == "1.0.0"
    source = sandbox.add_ticket(service)
    ok(wt(env, "-dssp-services-claim", service, sandbox.provider, "node1"))
    files = ok(wt(env, "-P", "-dssp-tickets-download", str(source), str(tmp_path / "in")))
    ws_file = next(f for f in files if f.endswith(".itksnap"))
    created = ok(wt(env, "-i", ws_file, "-dss-tickets-create", service))
    ticket = int(created[-1].removeprefix("2> "))
    assert created[0] == f"Created new ticket ({ticket})"
    assert created[1] == "Changed ticket status to (ready)"
    assert sandbox.admin.ticket_status(ticket) == "ready"
    inputs = sandbox.admin.input_files(ticket)
    assert inputs[-1] == f"ticket_{ticket:08d}.itksnap" and len(inputs) == 2
    tickets = ok(wt(env, "-dss-tickets-list"))
    row = next(line.split() for line in tickets if line.split()[1] == str(ticket))
    assert row[0] == "1>" and row[3] == "ready" and row[2].startswith("WtTest-")
    deleted = ok(wt(env, "-dss-tickets-delete", str(ticket)))
    assert deleted == ["1> deleted"]
    sandbox.admin.delete_ticket(source)


def test_admin_commands(env: dict[str, str], sandbox: Sandbox, tmp_path: Path) -> None:
    name = f"lab{uuid.uuid4().hex[:6]}"
    repo = tmp_path / "repo"
    make_service_repo(repo, f"AdminSvc-{name}", "3.0.0", "admin test", [])
    lines = ok(wt(env, "-dssa-providers-add", name, "-dssa-providers-list",
                  "-dssa-providers-users-add", name, sandbox.user_email,
                  "-dssa-providers-users-list", name,
                  "-dssa-providers-services-add", name, str(repo), "master",
                  "-dssa-providers-services-list", name))
    assert lines[0] == "1> success"
    assert f"2> {name}" in [line.rstrip() for line in lines]
    assert f"3> Added user {sandbox.user_email} to provider {name}" in lines
    user_row = next(line for line in lines if line.startswith("4> "))
    user_id = user_row.split()[1]
    githash = next(line for line in lines if line.startswith("5> "))[3:]
    assert len(githash) == 40
    service_row = next(line for line in lines if line.startswith("6> "))
    assert service_row.split()[1:4] == [f"AdminSvc-{name}", "3.0.0", githash]
    lines = ok(wt(env, "-dssa-providers-services-delete", name, githash,
                  "-dssa-providers-users-delete", name, user_id,
                  "-dssa-providers-services-list", name, "-dssa-providers-delete", name))
    assert lines[0] == "1> success" and not any(line.startswith("3> ") for line in lines)


def test_server_override_and_not_logged_in(env: dict[str, str], closed_port_url: str,
                                           tmp_path: Path) -> None:
    result = wt(dict(env, ITKSNAP_WT_DSS_SERVER=closed_port_url), "-dssp-services-list")
    assert result.returncode == 255 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("dss-console wt: -dssp-services-list (command 1): ")
    assert f"not logged in to {closed_port_url}" in result.stderr
    fresh = dict(env, XDG_DATA_HOME=str(tmp_path / "nobody"))
    result = wt(fresh, "-dssp-tickets-status", "1")
    assert result.returncode == 255 and "no server given" in result.stderr


@pytest.fixture
def claimed(env: dict[str, str], sandbox: Sandbox, service: str) -> int:
    ticket = sandbox.add_ticket(service)
    ok(wt(env, "-dssp-services-claim", service, sandbox.provider, "node1"))
    return ticket


def test_upload_without_a_workspace_says_none_was_loaded(env: dict[str, str], sandbox: Sandbox,
                                                         claimed: int, tmp_path: Path) -> None:
    result = wt(env, "-dssp-tickets-upload", str(claimed), cwd=tmp_path)
    assert result.returncode == 255 and result.stdout == "", result
    assert "no workspace loaded: read one with -i WORKSPACE" in result.stderr
    assert "workspace.itksnap" not in result.stderr  # no made-up file name
    assert sandbox.admin.result_files(claimed) == []


def test_set_progress_takes_fractions_of_a_chunk_in_order(env: dict[str, str],
                                                          sandbox: Sandbox,
                                                          claimed: int) -> None:
    for start, end, value in (("0", "1", "1.5"), ("0", "1", "-0.1"), ("0", "2", "0.5"),
                              ("0.6", "0.4", "0.5")):
        result = wt(env, "-dssp-tickets-set-progress", str(claimed), start, end, value)
        assert result.returncode == 255 and result.stdout == "", (start, end, value, result)
        assert "outside [0, 1]" in result.stderr or "is after chunk end" in result.stderr
    assert sandbox.admin.ticket_detail(claimed)["progress"] == 0.0
    assert ok(wt(env, "-dssp-tickets-set-progress", str(claimed), "0", "1", "1")) == ["success"]


def test_a_finished_ticket_cannot_be_failed(env: dict[str, str], sandbox: Sandbox,
                                           claimed: int) -> None:
    assert ok(wt(env, "-dssp-tickets-success", str(claimed))) == ["1> success"]
    result = wt(env, "-dssp-tickets-fail", str(claimed), "too late")
    assert result.returncode == 255 and result.stdout == "", result
    assert f"ticket {claimed} is already success: a finished ticket cannot be failed" \
        in result.stderr
    assert sandbox.admin.ticket_status(claimed) == "success"
    assert "too late" not in [e["message"] for e in sandbox.admin.ticket_detail(claimed)["log"]]
