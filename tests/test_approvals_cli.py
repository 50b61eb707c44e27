"""`dss-console approvals` against a running worker process (issue 20 §4): every verb, its
exit codes, JSON without local-only values. Real DSS server, real worker, real channel."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from dss_console.engine.remote import RemoteEngine, find_engine
from dss_console.sandbox import Sandbox
from test_worker_cli import EXE, Worker, service, worker_env, workers  # noqa: F401 (fixtures)

from test_engine import command
from waiting import wait_for


def approvals(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), "approvals", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def waiting(env: dict[str, str]) -> list[dict[str, Any]]:
    result = approvals(env, "list", "--json")
    if result.returncode == 1 and "no engine runs" in result.stderr:
        return []  # the worker's channel is not open yet
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def wait_waiting(env: dict[str, str], ticket: int, gate: str) -> dict[str, Any]:
    return wait_for(lambda: next((row for row in waiting(env) if row["id"] == ticket
                                  and row["gate"] == gate), None), 60,
                    what=f"ticket {ticket} waiting at the {gate} gate")


def test_approvals_cli_against_a_running_worker(
        sandbox: Sandbox, tmp_path: Path,
        worker_env: dict[str, str],  # noqa: F811 (the fixture imported above)
        service: str,  # noqa: F811
        workers: list[Worker]) -> None:  # noqa: F811
    env = worker_env
    config = tmp_path / "settings.toml"
    config.write_text('# the provider\'s own words, kept when a rule is saved\n'
                      f'[services."{service}"]\ncommand = {json.dumps(command("success"))}\n'
                      'approve = "both"\n')
    first, second = sandbox.add_ticket(service), sandbox.add_ticket(service)
    worker = Worker(env, "--config", str(config), "--workdir", str(tmp_path / "work"),
                    "--poll-interval", "0.2", "--instance", "ci-node")
    workers.append(worker)
    row = wait_waiting(env, first, "run")
    assert row["service"].startswith("WorkerTest-") and row["engine"] == sandbox.url
    worker.wait_line(f"dss-console approvals show {first}")
    # concurrency 1: one job waits for approval, the next is not claimed meanwhile
    assert [r["id"] for r in waiting(env)] == [first]
    assert sandbox.admin.ticket_status(second) == "ready"

    shown = approvals(env, "show", str(first))
    assert shown.returncode == 0, shown.stderr
    assert "waits for approval" in shown.stdout and "Input files" in shown.stdout
    # Refusals in words (1), usage (2).
    refused = approvals(env, "release", str(first))
    assert refused.returncode == 1 and "not awaiting release" in refused.stderr, refused.stderr
    assert approvals(env, "approve", "99999999").returncode == 1
    assert approvals(env, "reject", str(first), "--message", " ").returncode == 2
    assert approvals(env, "approve").returncode == 2
    assert approvals(env, "list", "--data-dir", str(tmp_path / "elsewhere")).returncode == 1

    approved = approvals(env, "approve", str(first))
    assert approved.returncode == 0, approved.stderr
    assert "approved" in approved.stdout
    wait_waiting(env, first, "release")
    assert sandbox.admin.ticket_status(first) == "claimed"
    assert sandbox.admin.result_files(first) == []  # held: nothing left
    held = approvals(env, "show", str(first), "--json")
    assert held.returncode == 0, held.stderr
    preview = json.loads(held.stdout)["preview"]
    assert preview["files"] and all(set(f) == {"role", "size", "sha256"}
                                    for f in preview["files"])
    with_values = approvals(env, "show", str(first), "--with-values")
    assert "(shown here only)" in with_values.stdout
    released = approvals(env, "release", str(first))
    assert released.returncode == 0, released.stderr
    wait_for(lambda: sandbox.admin.ticket_status(first) == "success", 60,
             what="the released ticket to succeed")
    assert sandbox.admin.result_files(first)

    wait_waiting(env, second, "run")
    rejected = approvals(env, "reject", str(second), "--message", "Wrong modality: a knee")
    assert rejected.returncode == 0, rejected.stderr
    wait_for(lambda: sandbox.admin.ticket_status(second) == "failed", 60,
             what="the rejected ticket to fail")
    log = sandbox.admin.ticket_detail(second).get("log") or []
    assert any("Wrong modality: a knee" in str(entry["message"]) for entry in log)
    again = approvals(env, "approve", str(second))
    assert again.returncode == 1 and "not waiting for a decision" in again.stderr

    # "Always": the decision adds a rule (kept in the settings file with its comments); the
    # next ticket runs without waiting for approval, its result still waits for release.
    third = sandbox.add_ticket(service)
    wait_waiting(env, third, "run")
    always = approvals(env, "approve", str(third), "--always", "--until", "2099-12-31")
    assert always.returncode == 0, always.stderr
    assert "rule rule-" in always.stdout and "until 2099-12-31" in always.stdout
    text = config.read_text()
    assert text.startswith("# the provider's own words") and "until = 2099-12-31" in text
    assert approvals(env, "approve", str(third), "--until", "2099-12-31").returncode == 2
    wait_waiting(env, third, "release")
    assert approvals(env, "release", str(third)).returncode == 0
    fourth = sandbox.add_ticket(service)
    wait_waiting(env, fourth, "release")  # approved by the rule
    data = tmp_path / "data" / "dss-console"
    remote = RemoteEngine(wait_for(lambda: find_engine(data, sandbox.url, "ci-node"), 30,
                                   what="the worker's channel"))
    try:
        (rule,) = remote.approval_rules()
        assert rule.added_by and rule.added and rule.until == "2099-12-31"
        assert remote.revoke_rule(rule.rule_id).rule_id == rule.rule_id
        assert "[[approval_rules]]" not in config.read_text()
        assert remote.approval_rules() == []
    finally:
        remote.close()
    assert approvals(env, "release", str(fourth)).returncode == 0
    wait_for(lambda: sandbox.admin.ticket_status(fourth) == "success", 60,
             what="the fourth ticket to succeed")

    journal = next((tmp_path / "data").rglob("journal.sqlite3"))
    with sqlite3.connect(journal) as db:
        decisions = [json.loads(text) for (text,) in
                     db.execute("SELECT decision FROM jobs WHERE decision IS NOT NULL")]
    vias = {(gate, record["verdict"], record["via"]) for d in decisions
            for gate, record in d.items()}
    assert {("run", "approve", "cli"), ("release", "release", "cli"),
            ("run", "reject", "cli"), ("run", "approve", "rule")} <= vias


def test_a_worker_killed_while_a_decision_waits_still_waits_after_restart(
        sandbox: Sandbox, tmp_path: Path,
        worker_env: dict[str, str],  # noqa: F811 (the fixture imported above)
        service: str,  # noqa: F811
        workers: list[Worker]) -> None:  # noqa: F811
    """SIGKILL at either gate: the next worker shows the job waiting where it was; nothing
    ran or left meanwhile, and a decision then goes on from there. The worker runs without
    XDG_RUNTIME_DIR (cron, systemd) and the SSH session has its own: approvals finds it."""
    worker_env = {k: v for k, v in worker_env.items() if k != "XDG_RUNTIME_DIR"}
    session = tmp_path / "session-runtime"
    session.mkdir(mode=0o700)
    env = dict(worker_env, XDG_RUNTIME_DIR=str(session))
    config = tmp_path / "settings.toml"
    config.write_text(f'[services."{service}"]\ncommand = {json.dumps(command("success"))}\n'
                      'approve = "both"\n')
    args = ("--config", str(config), "--workdir", str(tmp_path / "work"), "--poll-interval",
            "0.2", "--instance", "ci-node")
    ticket = sandbox.add_ticket(service)

    def start() -> Worker:
        started = Worker(worker_env, *args)
        workers.append(started)
        return started

    def transitions() -> list[str]:
        journal = next((tmp_path / "data").rglob("journal.sqlite3"))
        with sqlite3.connect(journal) as db:
            return [state for (state,) in db.execute("SELECT state FROM transitions ORDER BY id")]

    first = start()
    wait_waiting(env, ticket, "run")
    first.kill()
    second = start()
    second.wait_line("worker ")  # it started (and recovered) before it is asked
    assert wait_waiting(env, ticket, "run")
    assert "running" not in transitions()
    assert sandbox.admin.ticket_status(ticket) == "claimed"
    assert approvals(env, "approve", str(ticket)).returncode == 0
    wait_waiting(env, ticket, "release")
    second.kill()
    third = start()
    third.wait_line("worker ")
    assert wait_waiting(env, ticket, "release")
    assert transitions().count("running") == 1  # not run again
    assert sandbox.admin.result_files(ticket) == []
    assert sandbox.admin.ticket_status(ticket) == "claimed"
    assert approvals(env, "release", str(ticket)).returncode == 0
    wait_for(lambda: sandbox.admin.ticket_status(ticket) == "success", 60,
             what="the released ticket to succeed")
    assert transitions().count("running") == 1


def test_an_idle_worker_says_what_waits_for_a_decision(
        sandbox: Sandbox, tmp_path: Path,
        worker_env: dict[str, str],  # noqa: F811 (the fixture imported above)
        service: str,  # noqa: F811
        workers: list[Worker]) -> None:  # noqa: F811
    config = tmp_path / "settings.toml"
    config.write_text(f'[services."{service}"]\ncommand = {json.dumps(command("success"))}\n'
                      'approve = "run"\n')
    ticket = sandbox.add_ticket(service)
    worker = Worker(worker_env, "--config", str(config), "--workdir", str(tmp_path / "work"),
                    "--poll-interval", "0.2", "--instance", "ci-node", "--exit-when-idle")
    workers.append(worker)
    assert worker.finish() == 1, "\n".join(worker.lines)
    assert worker.saw(f"ticket {ticket} waits for the operator's approval"), worker.lines
    assert sandbox.admin.ticket_status(ticket) == "claimed"  # still ours, still waiting


def test_an_approval_binds_to_the_inputs_it_was_given(
        sandbox: Sandbox, tmp_path: Path,
        worker_env: dict[str, str],  # noqa: F811 (the fixture imported above)
        service: str,  # noqa: F811
        workers: list[Worker]) -> None:  # noqa: F811
    """Approved, then the worker dies while the command runs and the ticket's inputs change
    on the server: the rerun fetches them again and asks for approval again."""
    env = worker_env
    config = tmp_path / "settings.toml"
    config.write_text(f'[services."{service}"]\n'
                      f'command = {json.dumps(command("sleep", "600"))}\napprove = "run"\n')
    args = ("--config", str(config), "--workdir", str(tmp_path / "work"), "--poll-interval",
            "0.2", "--instance", "ci-node")
    ticket = sandbox.add_ticket(service)
    first = Worker(env, *args)
    workers.append(first)
    wait_waiting(env, ticket, "run")
    assert approvals(env, "approve", str(ticket)).returncode == 0
    wait_for(lambda: any(line.startswith(f"ticket {ticket} (") and ": running" in line
                         for line in (x.split(" ", 1)[-1] for x in list(first.lines))), 30,
             what="the command running")
    first.kill()
    extra = tmp_path / "second-look.txt"
    extra.write_text("the requester added a file\n")
    sandbox.admin.upload_input(ticket, extra)
    second = Worker(env, *args)
    workers.append(second)
    wait_waiting(env, ticket, "run")
    shown = approvals(env, "show", str(ticket))
    assert shown.returncode == 0
    journal = next((tmp_path / "data").rglob("journal.sqlite3"))
    with sqlite3.connect(journal) as db:
        (reason,) = db.execute("SELECT reason FROM jobs").fetchone()
    assert "inputs changed since approval" in reason
    assert approvals(env, "reject", str(ticket), "--message", "changed inputs").returncode == 0
    wait_for(lambda: sandbox.admin.ticket_status(ticket) == "failed", 60,
             what="the rejected ticket to fail")
