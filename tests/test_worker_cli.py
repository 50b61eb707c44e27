"""`dss-console worker` as a provider runs it: a real process, real signals, SIGKILL."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dss_console.executors.local.executor import TEST_HOOK_FREEZE_BEFORE_JOURNAL
from dss_console.sandbox import Sandbox
from dss_console.sources.dss.source import RESTARTED_NOTE, RESTARTING_NOTE

from test_engine import TAGS, command
from waiting import end_session, process_gone, wait_for

EXE = Path(sys.executable).with_name("dss-console")


class Worker:
    """A worker process whose output lines are collected as they come."""

    def __init__(self, env: dict[str, str], *args: str):
        self.proc = subprocess.Popen([str(EXE), "worker", *args], env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def saw(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def wait_line(self, text: str, timeout: float = 30) -> None:
        wait_for(lambda: self.saw(text) or self.proc.poll() is not None, timeout,
                 what=f"worker output {text!r}")
        assert self.saw(text), "\n".join(self.lines)

    def finish(self, timeout: float = 60) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGQUIT)  # a hang's stacks would help; then report
            raise AssertionError(f"the worker did not exit within {timeout:.0f} s; its "
                                 "output:\n" + "\n".join(self.lines)) from None
        self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def worker_env(tmp_path: Path, sandbox: Sandbox) -> Iterator[dict[str, str]]:
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_CONFIG_HOME=str(tmp_path / "config"), DSS_CONSOLE_KEYRING="off")
    subprocess.run([str(EXE), "login", "--server", sandbox.url, "--token",
                    sandbox.fresh_token()], env=env, check=True, capture_output=True)
    yield env


@pytest.fixture
def service(sandbox: Sandbox) -> str:
    return sandbox.register_service(f"WorkerTest-{uuid.uuid4().hex[:8]}", "1.0.0", TAGS)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.kill()


def args_for(service: str, tmp_path: Path, mode: str, *extra: str) -> list[str]:
    return ["--command", f"{service}={command(mode, *extra)}", "--workdir", str(tmp_path / "work"),
            "--poll-interval", "0.2", "--instance", "ci-node"]


def pids_of(tmp_path: Path, ticket: int) -> list[int]:
    pid_file = next((tmp_path / "work").glob(f"*/ticket_{ticket:08d}")) / "pids.txt"
    return [int(p) for p in pid_file.read_text().split()]


def test_exit_when_idle_processes_queue(sandbox: Sandbox, worker_env: dict[str, str],
                                        service: str, tmp_path: Path,
                                        workers: list[Worker]) -> None:
    tickets = [sandbox.add_ticket(service) for _ in range(2)]
    worker = Worker(worker_env, *args_for(service, tmp_path, "success"), "--exit-when-idle",
                    "--concurrency", "2")
    workers.append(worker)
    assert worker.finish() == 0, "\n".join(worker.lines)
    assert [sandbox.admin.ticket_status(t) for t in tickets] == ["success", "success"]
    assert worker.saw(f"ticket {tickets[0]}") and worker.saw("succeeded")
    assert worker.saw("worker stopped")


def test_every_claim_gets_a_line_and_jobs_are_named_by_ticket(
        sandbox: Sandbox, worker_env: dict[str, str], service: str, tmp_path: Path,
        workers: list[Worker]) -> None:
    tickets = [sandbox.add_ticket(service) for _ in range(4)]
    worker = Worker(worker_env, *args_for(service, tmp_path, "success"), "--exit-when-idle",
                    "--concurrency", "2")
    workers.append(worker)
    assert worker.finish() == 0, "\n".join(worker.lines)
    output = "\n".join(worker.lines)
    for ticket in tickets:
        claimed = [line for line in worker.lines if f"ticket {ticket} (" in line
                   and line.endswith(": claimed")]
        assert len(claimed) == 1, output
        assert claimed[0] == next(line for line in worker.lines
                                  if f"ticket {ticket} " in line), output  # the first line
    # A job is named as the server names it: "job N" (the journal's id) means nothing to
    # the operator; a SLURM job says so.
    assert not re.search(r"(?<!SLURM )\bjob \d", output), output


def test_printer_names_a_job_it_has_not_seen_by_its_ticket(tmp_path: Path) -> None:
    """After a restart the outbox delivers calls of jobs whose state this run never printed;
    the journal's job id ("job 2") is not what the operator knows them by."""
    import io

    from dss_console.commands.worker import EventPrinter
    from dss_console.engine.events import CallDelivered, JobMessage
    from dss_console.engine.journal import Journal

    journal = Journal(tmp_path / "journal.sqlite")
    try:
        journal.create_job(source="s", ticket_id=7, service_hash="h", service_name="S",
                           instance="i", workdir=str(tmp_path))
        job_id = journal.create_job(source="s", ticket_id=21, service_hash="h",
                                    service_name="S", instance="i", workdir=str(tmp_path))
        for noun in ("ticket", "run"):
            out = io.StringIO()
            printer = EventPrinter(out, noun=noun, lookup=journal.job)
            printer(JobMessage(job_id=job_id, level="info", text="following SLURM job 5"))
            printer(CallDelivered(job_id=job_id, item_id=1, kind="finish",
                                  summary="status failed", state="failed", error="gone"))
            # The end call not sent (the job had ended on the server) is said; other calls
            # only when they fail.
            printer(CallDelivered(job_id=job_id, item_id=2, kind="finish",
                                  summary="run end: crashed", state="skipped",
                                  error=f"not sent: the {noun} is already failed"))
            printer(CallDelivered(job_id=job_id, item_id=3, kind="log", summary="info: hi",
                                  state="delivered"))
            printer(CallDelivered(job_id=job_id, item_id=4, kind="finish",
                                  summary="status success", state="delivered"))
            printer(JobMessage(job_id=999, level="info", text="hello"))
            lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
            assert lines == [f"{noun} 21: info: following SLURM job 5",
                             f"{noun} 21: server call status failed failed: gone",
                             f"{noun} 21: server call run end: crashed skipped: not sent: "
                             f"the {noun} is already failed",
                             f"a {noun}: info: hello"]
    finally:
        journal.close()


def test_max_tickets(sandbox: Sandbox, worker_env: dict[str, str], service: str,
                     tmp_path: Path, workers: list[Worker]) -> None:
    first, second = sandbox.add_ticket(service), sandbox.add_ticket(service)
    worker = Worker(worker_env, *args_for(service, tmp_path, "success"), "--max-tickets", "1")
    workers.append(worker)
    assert worker.finish() == 0, "\n".join(worker.lines)
    assert sandbox.admin.ticket_status(first) == "success"
    assert sandbox.admin.ticket_status(second) == "ready"
    sandbox.admin.delete_ticket(second)


def _log(sandbox: Sandbox, ticket: int) -> list[tuple[str, str]]:
    return [(e["category"], e["message"]) for e in sandbox.admin.ticket_detail(ticket)["log"]]


def test_sigterm_stops_the_command_and_the_next_start_runs_the_ticket_again(
        sandbox: Sandbox, worker_env: dict[str, str], service: str, tmp_path: Path,
        workers: list[Worker]) -> None:
    """A graceful stop (systemd restart, upgrade) is like a crash for the user's ticket: it
    stays claimed, the user reads one line, and the next start runs it again."""
    ticket = sandbox.add_ticket(service)
    worker = Worker(worker_env, *args_for(service, tmp_path, "sleep", "300"))
    workers.append(worker)
    worker.wait_line(": running")
    pids = wait_for(lambda: _try_pids(tmp_path, ticket), 20, what="the command's pids")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.finish() == 0, "\n".join(worker.lines)
    wait_for(lambda: all(process_gone(p) for p in pids), 10, what="command gone")
    assert sandbox.admin.ticket_status(ticket) == "claimed"
    log = _log(sandbox, ticket)
    assert log.count(("info", RESTARTING_NOTE)) == 1, log
    assert not any(category == "error" or "shut down" in message or "failed" in message
                   for category, message in log), log
    again = Worker(worker_env, *args_for(service, tmp_path, "success"), "--exit-when-idle")
    workers.append(again)
    assert again.finish() == 0, "\n".join(again.lines)
    assert sandbox.admin.ticket_status(ticket) == "success"
    messages = [message for _, message in _log(sandbox, ticket)]
    # The user reads why the steps start again, once, before they do.
    assert messages.count(RESTARTED_NOTE) == 1, messages
    assert messages.index(RESTARTING_NOTE) < messages.index(RESTARTED_NOTE) \
        < messages.index("Affine registration done")


def test_sigterm_with_on_shutdown_fail_fails_running_ticket_and_stops_command(
        sandbox: Sandbox, worker_env: dict[str, str], service: str, tmp_path: Path,
        workers: list[Worker]) -> None:
    config = tmp_path / "settings.toml"
    config.write_text('on_shutdown = "fail"\n')
    ticket = sandbox.add_ticket(service)
    worker = Worker(worker_env, *args_for(service, tmp_path, "sleep", "300"), "--config",
                    str(config))
    workers.append(worker)
    worker.wait_line(f"ticket {ticket} ")
    worker.wait_line(": running")
    pids = wait_for(lambda: _try_pids(tmp_path, ticket), 20, what="the command's pids")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.finish() == 0, "\n".join(worker.lines)
    assert sandbox.admin.ticket_status(ticket) == "failed"
    log = sandbox.admin.ticket_detail(ticket)["log"]
    assert ("error", "provider shut down") in {(e["category"], e["message"]) for e in log}
    assert RESTARTING_NOTE not in {e["message"] for e in log}
    wait_for(lambda: all(process_gone(p) for p in pids), 10, what="command gone")


def test_drain_lets_running_job_finish(sandbox: Sandbox, worker_env: dict[str, str],
                                       service: str, tmp_path: Path,
                                       workers: list[Worker]) -> None:
    ticket = sandbox.add_ticket(service)
    go = tmp_path / "go"
    worker = Worker(worker_env, *args_for(service, tmp_path, "wait-file", str(go)), "--drain")
    workers.append(worker)
    worker.wait_line(": running")
    worker.proc.send_signal(signal.SIGINT)
    worker.wait_line("letting running jobs finish")
    extra = sandbox.add_ticket(service)  # must not be claimed while draining
    go.write_text("go")
    assert worker.finish() == 0, "\n".join(worker.lines)
    assert sandbox.admin.ticket_status(ticket) == "success"
    assert sandbox.admin.ticket_status(extra) == "ready"
    sandbox.admin.delete_ticket(extra)


def test_sigkill_mid_job_then_restart_finishes_ticket(sandbox: Sandbox,
                                                      worker_env: dict[str, str], service: str,
                                                      tmp_path: Path,
                                                      workers: list[Worker]) -> None:
    ticket = sandbox.add_ticket(service)
    first = Worker(worker_env, *args_for(service, tmp_path, "sleep", "300"))
    workers.append(first)
    first.wait_line(": running")
    pids = wait_for(lambda: _try_pids(tmp_path, ticket), 20, what="the command's pids")
    first.proc.send_signal(signal.SIGKILL)
    first.finish()
    assert sandbox.admin.ticket_status(ticket) == "claimed"
    # The restarted worker (command fixed in the meantime) recovers the ticket.
    second = Worker(worker_env, *args_for(service, tmp_path, "success"), "--exit-when-idle")
    workers.append(second)
    assert second.finish() == 0, "\n".join(second.lines)
    assert sandbox.admin.ticket_status(ticket) == "success"
    assert second.saw("interrupted") and second.saw("stopped the command left running")
    wait_for(lambda: all(process_gone(p) for p in pids), 10, what="the orphaned command gone")
    messages = [message for _, message in _log(sandbox, ticket)]
    assert messages.count(RESTARTED_NOTE) == 1, messages
    assert messages.index(RESTARTED_NOTE) < messages.index("Affine registration done")
    assert RESTARTING_NOTE not in messages  # nobody could say so: it was killed


def _frozen(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except (OSError, IndexError):
        return False


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _at_gate(pid: int) -> bool:
    try:
        return b"dss-start" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="Linux /proc")
def test_sigkill_between_start_and_journal_runs_the_ticket_once(
        sandbox: Sandbox, worker_env: dict[str, str], service: str, tmp_path: Path,
        workers: list[Worker]) -> None:
    """Killed after its command was forked and before its pid was journaled: the command
    waited at its gate, so nothing of it ran and nothing is left for the restart to miss."""
    ticket = sandbox.add_ticket(service)
    # The test hook freezes the worker (SIGSTOP) exactly in that gap.
    first = Worker(dict(worker_env, **{TEST_HOOK_FREEZE_BEFORE_JOURNAL: "1"}),
                   *args_for(service, tmp_path, "sleep", "300"))
    workers.append(first)
    wait_for(lambda: _frozen(first.proc.pid) or first.proc.poll() is not None, 30,
             what="the worker frozen between its command's start and the journal")
    gates = _children(first.proc.pid)
    assert len(gates) == 1, gates
    # Its exec may still be completing (the command line shows once it is).
    wait_for(lambda: _at_gate(gates[0]), 10, interval=0.01,
             what="the command waiting at its gate")
    first.proc.send_signal(signal.SIGKILL)
    first.finish()
    wait_for(lambda: all(process_gone(pid) for pid in gates), 10,
             what="the gate to close with the worker")
    assert _try_pids(tmp_path, ticket) is None  # the command never ran
    assert sandbox.admin.ticket_status(ticket) == "claimed"
    second = Worker(worker_env, *args_for(service, tmp_path, "success"), "--exit-when-idle")
    workers.append(second)
    assert second.finish() == 0, "\n".join(second.lines)
    assert sandbox.admin.ticket_status(ticket) == "success"
    assert second.saw("interrupted"), "\n".join(second.lines)
    assert not second.saw("stopped the command left running"), "\n".join(second.lines)
    messages = [message for _, message in _log(sandbox, ticket)]
    assert messages.count("Affine registration done") == 1, messages  # it ran once


def test_second_worker_with_same_instance_is_refused(sandbox: Sandbox,
                                                     worker_env: dict[str, str],
                                                     service: str, tmp_path: Path,
                                                     workers: list[Worker]) -> None:
    first = Worker(worker_env, *args_for(service, tmp_path, "success"))
    workers.append(first)
    first.wait_line("polling every")
    second = Worker(worker_env, *args_for(service, tmp_path, "success"))
    workers.append(second)
    assert second.finish() == 1
    assert second.saw("already running") and second.saw("different instance code")


def test_worker_help_and_bad_settings(worker_env: dict[str, str], tmp_path: Path) -> None:
    result = subprocess.run([str(EXE), "worker", "--help"], capture_output=True, text=True,
                            env=worker_env, timeout=30)
    assert result.returncode == 0
    for flag in ("--server", "--provider", "--instance", "--command", "--workdir",
                 "--concurrency", "--poll-interval", "--exit-when-idle", "--max-tickets",
                 "--drain", "--config", "{workspace}", "on_shutdown", "processing will resume"):
        assert flag in result.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("poll_intervall = 3\n")
    result = subprocess.run([str(EXE), "worker", "--config", str(bad)], capture_output=True,
                            text=True, env=worker_env, timeout=30)
    assert result.returncode == 2 and "poll_intervall" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_named_settings_file_must_exist(worker_env: dict[str, str], tmp_path: Path,
                                          service: str) -> None:
    """A typo'd --config (or $DSS_CONSOLE_CONFIG) must not run on the defaults."""
    missing = tmp_path / "setings.toml"
    result = subprocess.run([str(EXE), "worker", *args_for(service, tmp_path, "success"),
                             "--config", str(missing), "--exit-when-idle"],
                            capture_output=True, text=True, env=worker_env, timeout=60)
    assert result.returncode == 2, result
    assert f"--config names the settings file {missing}, which does not exist" in result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    result = subprocess.run([str(EXE), "worker", *args_for(service, tmp_path, "success"),
                             "--exit-when-idle"], capture_output=True, text=True, timeout=60,
                            env=dict(worker_env, DSS_CONSOLE_CONFIG=str(missing)))
    assert result.returncode == 2 and "$DSS_CONSOLE_CONFIG names" in result.stderr, result
    assert not missing.exists()


def _try_pids(tmp_path: Path, ticket: int) -> list[int] | None:
    try:
        return pids_of(tmp_path, ticket)
    except (StopIteration, OSError, ValueError):
        return None


def test_two_workers_share_a_data_dir_and_queue(sandbox: Sandbox, worker_env: dict[str, str],
                                                service: str, tmp_path: Path,
                                                workers: list[Worker]) -> None:
    """Two real workers, one journal (same user, same machine), distinct instance codes:
    each ticket is processed once and no call is sent twice."""
    tickets = [sandbox.add_ticket(service) for _ in range(6)]
    common = ["--command", f"{service}={command('slow-report', '3', '0.1')}",
              "--workdir", str(tmp_path / "work"), "--poll-interval", "0.2",
              "--exit-when-idle"]
    for instance in ("node-a", "node-b"):
        workers.append(Worker(worker_env, *common, "--instance", instance))
    for worker in workers:
        assert worker.finish(timeout=120) == 0, "\n".join(worker.lines)
    for ticket in tickets:
        assert sandbox.admin.ticket_status(ticket) == "success"
        log = [m for e in sandbox.admin.ticket_detail(ticket)["log"] for m in [e["message"]]]
        assert [m for m in log if m.startswith("step ")] == ["step 1 of 3", "step 2 of 3",
                                                             "step 3 of 3"]
        assert sum(m.startswith("Ticket claimed") for m in log) == 1
    assert any(w.saw(": succeeded") for w in workers)


def test_interrupted_fail_policy_after_sigkill(sandbox: Sandbox, worker_env: dict[str, str],
                                               service: str, tmp_path: Path,
                                               workers: list[Worker]) -> None:
    config = tmp_path / "settings.toml"
    config.write_text('interrupted = "fail"\n')
    ticket = sandbox.add_ticket(service)
    first = Worker(worker_env, *args_for(service, tmp_path, "sleep", "300"), "--config",
                   str(config))
    workers.append(first)
    first.wait_line(": running")
    pids = wait_for(lambda: _try_pids(tmp_path, ticket), 20, what="the command's pids")
    first.proc.send_signal(signal.SIGKILL)
    first.finish()
    second = Worker(worker_env, *args_for(service, tmp_path, "success"), "--config",
                    str(config), "--exit-when-idle")
    workers.append(second)
    assert second.finish() == 0, "\n".join(second.lines)
    assert sandbox.admin.ticket_status(ticket) == "failed"
    log = {(e["category"], e["message"]) for e in sandbox.admin.ticket_detail(ticket)["log"]}
    assert ("error", "the provider restarted while this ticket was being processed") in log
    wait_for(lambda: all(process_gone(p) for p in pids), 10, what="the orphaned command gone")


def test_worker_stops_in_words_when_the_session_is_gone(sandbox: Sandbox,
                                                        worker_env: dict[str, str],
                                                        service: str, tmp_path: Path,
                                                        workers: list[Worker]) -> None:
    ticket = sandbox.add_ticket(service)
    go = tmp_path / "go"
    # A slow poll: web.py saves a session at the end of every request, so a request in
    # flight while the session is killed brings it back; fewer requests, fewer such races.
    worker = Worker(worker_env, *args_for(service, tmp_path, "wait-file", str(go)),
                    "--poll-interval", "30")
    workers.append(worker)
    worker.wait_line(": running")
    worker.wait_line("waiting for the go signal")
    sessions = json.loads((tmp_path / "data" / "dss-console" / "sessions.json").read_text())
    # The session ends on the server (an admin, an expiry): every call now gets 401.
    end_session(sandbox.url, sessions[sandbox.url])
    go.write_text("go")
    assert worker.finish() == 1, "\n".join(worker.lines)
    assert worker.saw("no longer accepts this session") and worker.saw("dss-console login")
    assert sandbox.admin.ticket_status(ticket) == "claimed"  # nothing could be sent...
    owed = subprocess.run([str(EXE), "login", "--server", sandbox.url, "--token",
                           sandbox.fresh_token()], env=worker_env, capture_output=True)
    assert owed.returncode == 0
    again = Worker(worker_env, *args_for(service, tmp_path, "success"), "--exit-when-idle")
    workers.append(again)
    assert again.finish() == 0, "\n".join(again.lines)
    assert sandbox.admin.ticket_status(ticket) in ("success", "failed")  # ...until now


def test_a_command_that_cannot_start_fails_no_ticket_and_exits_1_when_idle(
        sandbox: Sandbox, worker_env: dict[str, str], service: str, tmp_path: Path,
        workers: list[Worker]) -> None:
    ticket = sandbox.add_ticket(service)
    worker = Worker(worker_env, "--command", f"{service}=no-such-program-dss {{workspace}}",
                    "--workdir", str(tmp_path / "work"), "--poll-interval", "0.2",
                    "--instance", "ci-node", "--exit-when-idle")
    workers.append(worker)
    assert worker.finish() == 1, "\n".join(worker.lines)
    paused = [line for line in worker.lines if "PAUSED service" in line]
    assert paused and "command not found: no-such-program-dss" in paused[0]
    assert sandbox.admin.ticket_status(ticket) == "ready"
    sandbox.admin.delete_ticket(ticket)


def test_a_blocked_ticket_runs_when_the_settings_file_is_fixed(
        sandbox: Sandbox, worker_env: dict[str, str], service: str, tmp_path: Path,
        workers: list[Worker]) -> None:
    config = tmp_path / "settings.toml"
    broken = f'[services."{service}"]\ncommand = {json.dumps(command("success"))}\n'
    config.write_text(broken + 'cwd = "no-such-directory"\n')
    ticket = sandbox.add_ticket(service)
    worker = Worker(worker_env, "--config", str(config), "--workdir", str(tmp_path / "work"),
                    "--poll-interval", "0.2", "--instance", "ci-node")
    workers.append(worker)
    worker.wait_line("PAUSED service")
    worker.wait_line(": blocked")
    assert sandbox.admin.ticket_status(ticket) == "claimed"
    config.write_text(broken)
    worker.wait_line("settings reloaded")
    wait_for(lambda: sandbox.admin.ticket_status(ticket) == "success", 60,
             what="the blocked ticket to succeed")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.finish() == 0, "\n".join(worker.lines)
    assert worker.saw("resumed service")


def test_a_stop_with_interrupted_fail_promises_no_resumption(
        sandbox: Sandbox, worker_env: dict[str, str], service: str, tmp_path: Path,
        workers: list[Worker]) -> None:
    """interrupted = "fail" fails what a restart finds: the stop must not tell the user that
    processing will resume; the next start fails the ticket."""
    config = tmp_path / "settings.toml"
    config.write_text('interrupted = "fail"\n')
    ticket = sandbox.add_ticket(service)
    worker = Worker(worker_env, *args_for(service, tmp_path, "sleep", "300"), "--config",
                    str(config))
    workers.append(worker)
    worker.wait_line(": running")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.finish() == 0, "\n".join(worker.lines)
    assert sandbox.admin.ticket_status(ticket) == "claimed"
    again = Worker(worker_env, *args_for(service, tmp_path, "success"), "--config",
                   str(config), "--exit-when-idle")
    workers.append(again)
    assert again.finish() == 0, "\n".join(again.lines)
    assert sandbox.admin.ticket_status(ticket) == "failed"
    messages = [message for _, message in _log(sandbox, ticket)]
    assert RESTARTING_NOTE not in messages and RESTARTED_NOTE not in messages, messages


def test_event_printer_remembers_a_bounded_number_of_jobs() -> None:
    """A worker prints for months: what its printer keeps per job must not grow with them."""
    import io

    from dss_console.commands.worker import EventPrinter
    from dss_console.engine.events import JobChanged, JobMessage, JobSnapshot
    from dss_console.engine.states import JobState

    def snap(job_id: int, state: JobState, progress: float) -> JobSnapshot:
        return JobSnapshot(job_id=job_id, source="dss", ticket_id=100 + job_id,
                           service_hash="0123456789abcdef", service_name="Demo", state=state,
                           progress=progress, instance="a", reason=None, workdir="/w",
                           exit_code=None, claimed_at=None, started_at=None, finished_at=None,
                           updated_at=0.0, inputs_ready=True, attempt=1, owed=0)

    out = io.StringIO()
    printer = EventPrinter(out)
    for job_id in range(1, 5001):
        printer(JobChanged(job=snap(job_id, JobState.RUNNING, 0.5)))
        printer(JobChanged(job=snap(job_id, JobState.SUCCEEDED, 1.0)))
    memories = (printer._tickets, printer._states, printer._progress)
    assert all(len(memory) <= 1000 for memory in memories), [len(m) for m in memories]
    # The newest jobs are still told by their ticket, and a state is printed once.
    printer(JobMessage(job_id=5000, level="info", text="late word", local=False))
    assert out.getvalue().splitlines()[-1].endswith("ticket 5100: info: late word")
    printer(JobChanged(job=snap(5000, JobState.SUCCEEDED, 1.0)))
    assert "late word" in out.getvalue().splitlines()[-1]
