"""One job from its current state to the end: fetch inputs, run the command, relay what it
reports, then upload and succeed, or fail with a reason (how it ends: engine/endings.py).
Runs on its own thread.

Every decision is written to the journal (with the server calls it implies, in the same
transaction) before it is acted on.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dss_console import paths as platform_paths
from dss_console.core.command import CommandSpec, JobPaths
from dss_console.core.executor import (
    Executor,
    ExecutorDetails,
    JobRef,
    RunCallbacks,
    RunHandle,
    RunOutcome,
    RunRequest,
    StartError,
)
from dss_console.core.interfaces import (
    Failure,
    OutcomeKind,
    RemoteState,
    Source,
)
from dss_console.engine.endings import JobEndings, remote_status
from dss_console.engine.events import EventBus, JobMessage, JobOutput, JobSnapshot
from dss_console.engine.gate import ApprovalRule, Decision
from dss_console.engine.gate_job import JobGates
from dss_console.engine.journal import Journal, command_forgotten, execution_fields
from dss_console.engine.ledger_records import inputs_entry
from dss_console.engine.outbox import Outbox
from dss_console.engine.protocol import (
    AttachReport,
    MessageReport,
    OutputReport,
    ProgressReport,
    ProgressTracker,
    ProtocolWarning,
    Report,
    resolve_attachment,
)
from dss_console.engine.settings import ServiceCommand
from dss_console.engine.states import JobState
from dss_console.engine.workdirs import (
    clean_workdir,
    make_private_dir,
    output_log_name,
)

PROGRESS_SEND_INTERVAL = 0.5

# What the end user reads when the provider's side went wrong: the local detail (paths,
# PATH, host names) stays in the journal, the local log and the console.
USER_DOWNLOAD_FAILED = ("the provider could not download this ticket's inputs; the provider "
                        "has been notified")
USER_INTERNAL_ERROR = ("the provider's software met an internal error; the provider has "
                       "been notified")


@dataclass
class JobContext:
    """What every job of one engine shares."""

    journal: Journal
    outbox: Outbox
    source: Source
    events: EventBus
    status_interval: float = 5.0
    grace_period: float = 10.0
    retry_interval: float = 5.0
    # The engine's ears: a command of a service started; a job blocked (its command cannot
    # start) with the reason.
    command_nice: int = 0  # a command's nice value unless its service sets one
    # What runs a job's command, by the name its service's `executor` setting gives.
    executors: Mapping[str, Executor] = field(default_factory=dict)
    on_started: Callable[[JobSnapshot], None] | None = None
    on_blocked: Callable[[JobSnapshot, str], None] | None = None
    # Jobs in flight at shutdown: keep them open on the server and run them again at the next
    # start ("resume") or fail them ("fail"), unless the source's rules decide.
    on_shutdown: str = "resume"
    shutdown_choice: str | None = None  # the operator's, at quit: wins over the settings
    interrupted: str = "rerun"  # what the next start does with it: "rerun" | "fail"
    # Whether a failure sends the output's tail (redacted) when the service does not say.
    send_output_tail: bool = False
    workroot: Path | None = None  # redacted from what is sent, with the job's own work dir
    # The rules that approve by themselves (settings' [[approval_rules]], engine/gate.py).
    approval_rules: list[ApprovalRule] = field(default_factory=list)


# Stops that are someone's decision about the job (the operator's Fail or Cancel, the work
# taken away on the server): one that came too late for the job's own checks is still acted
# on when its thread ends. A shutdown is not: the job stays as it is, for the next start.
DECIDED_STOPS = ("fail", "cancel", "gone")


class StopRequest:
    """Why a job was asked to stop, if it was. Closed when the job's thread is done with it:
    a request after that is refused (the caller ends the job itself), so none is lost
    between the thread's last check and its end."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.kind: str | None = None  # fail | cancel | shutdown | gone
        self.event = threading.Event()
        self._lock = threading.Lock()
        self._closed = False

    def set(self, kind: str, reason: str) -> bool:
        """False when the job's thread has closed the request (nothing will act on it)."""
        with self._lock:
            if self._closed:
                return False
            if self.kind is None:
                self.kind, self.reason = kind, reason
        self.event.set()
        return True

    def close(self) -> str | None:
        """Take no more requests; the kind of the one taken, if any."""
        with self._lock:
            self._closed = True
            return self.kind


class JobExecution(JobEndings, JobGates):
    """Drives one job on a thread. `cancel`, `shutdown` and `ticket_gone` may come from any
    thread."""

    def __init__(self, ctx: JobContext, job_id: int, command: ServiceCommand | None, *,
                 fresh_run: bool = False, prefetch_only: bool = False,
                 upload: Path | None = None, follow: bool = False,
                 restarted: bool = False, decision: Decision | None = None,
                 on_finished: Callable[[int], None] | None = None):
        self.ctx = ctx
        self.job_id = job_id
        self.command = command
        self.fresh_run = fresh_run
        self.prefetch_only = prefetch_only  # manual claim: fetch inputs, then wait for Run
        self.upload = upload  # a result workspace the operator picked
        # Restarted while its command ran on without the engine (a cluster job): follow
        # that command, do not run again.
        self.follow = follow
        # Run again because dss-console stopped (crashed or was stopped) while it ran: the
        # user is told before the steps repeat.
        self.restarted = restarted
        self.on_finished = on_finished
        self.operator_decision = decision
        self.stop = StopRequest()
        self._handle: RunHandle | None = None
        self._tracker = ProgressTracker()
        self._progress_lock = threading.Lock()  # reports arrive on the runner's thread
        self._progress_to_send: float | None = None
        self._highest_progress = 0.0
        self._last_progress_sent = 0.0
        # A retry of a ticket this console failed: the server keeps it `failed` until the
        # rerun sends `success`, so `failed` still means "ours" while it runs.
        self.rescuing = False
        # How the job's end is told when the stop itself decides it (a node-wide kill).
        self._end_as: OutcomeKind | None = None
        # How the command itself ended, for the service's failure breaker: succeeded |
        # failed (the command's own failure, not the operator's or a shutdown) | None.
        self.command_result: str | None = None
        self._finished_remotely_at: float | None = None
        self.source = ctx.source
        self._last_output_sent = 0.0
        self._holding = False  # the command's reports are held for the release gate
        self._thread = threading.Thread(target=self._main, name=f"job-{job_id}", daemon=True)

    # -- control ----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def cancel(self, message: str | None = None) -> bool:
        """False when the job's thread has ended meanwhile: the caller ends the job."""
        reason = self.source.words.cancelled + (f": {message}" if message else "")
        return self._request_stop("cancel", reason)

    def fail_with(self, message: str) -> bool:
        """False when the job's thread has ended meanwhile: the caller ends the job."""
        return self._request_stop("fail", message)

    def shutdown(self) -> None:
        self._request_stop("shutdown", self.source.words.shut_down)

    def killed_on_node(self, detail: str) -> None:
        """Everything of this worker was killed on the server (a vantage6 ``POST
        /kill/node/tasks``). The server leaves such jobs open: stop the command and end the
        job "killed by user", as the official node does."""
        self._end_as = OutcomeKind.KILLED
        self._request_stop("cancel", f"killed on the server ({detail})")

    def ticket_gone(self, detail: str, *, killed: bool = False) -> bool:
        """The server took the work back. ``killed`` (or the source saw it killed there)
        records that outcome, so the audit says so rather than "failed". False when the
        job's thread has ended meanwhile: the caller ends the job."""
        if killed or self.source.killed_remotely(self.snapshot.ticket_id):
            snap = self.snapshot
            self.ctx.journal.update_job(self.job_id, details={
                **snap.details, "outcome": OutcomeKind.KILLED.value})
            return self._request_stop("gone", f"killed by user on the server ({detail})")
        return self._request_stop("gone", f"{self.source.words.gone} ({detail})")

    def _request_stop(self, kind: str, reason: str) -> bool:
        if not self.stop.set(kind, reason):
            return False
        handle = self._handle
        if handle is not None:
            handle.stop(reason)
        return True

    # -- the job ----------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            self._run()
            self._act_on_a_late_stop()
        except Exception as exc:  # a bug must fail the ticket in words, not strand it
            import traceback

            detail = traceback.format_exc(limit=3)
            self._local_note("error", f"internal error: {exc}\n{detail}")
            with contextlib.suppress(Exception):
                if not self.ctx.journal.job(self.job_id).state.is_terminal:
                    self._fail(f"internal error in dss-console: {exc}",
                               user_reason=USER_INTERNAL_ERROR)
        finally:
            if self.on_finished:
                self.on_finished(self.job_id)

    def _act_on_a_late_stop(self) -> None:
        """A Fail, Cancel or the work taken away that arrived after the job's last check (say
        between its download and its wait for Run) ends the job now, as it would have then."""
        late = self.stop.close()
        if late in DECIDED_STOPS and not self.ctx.journal.job(self.job_id).state.is_terminal:
            self._stopped_before_run()

    def _run(self) -> None:
        snap = self.ctx.journal.job(self.job_id)
        if snap.state is JobState.UPLOADING:
            self._finish_upload()  # resumed after a restart: the command already finished
            return
        if self.upload is not None:
            self._upload(self.upload)
            return
        if self.follow:
            self._execute(follow=snap.execution or ExecutorDetails(snap.executor))
            return
        if self.prefetch_only:
            make_private_dir(Path(snap.workdir))
            if self._download():
                if self.stop.kind:
                    self._stopped_before_run()
                else:
                    self._transition(JobState.CLAIMED, "inputs downloaded; waiting to run")
            return
        if self.fresh_run and not self._still_ours(announce=not self.restarted):
            return
        if snap.state is JobState.AWAITING_APPROVAL and not self._still_ours(announce=False):
            return  # the work went away while it waited for the operator
        if self.restarted:
            self._put(self.source.restarted_calls())
        if snap.state is JobState.BLOCKED and not self._still_ours(announce=False):
            return  # e.g. the operator failed it from the command line meanwhile
        if self.command is None:
            if self.source.rules.unconfigured == "refuse":  # the allowlist says no
                self._fail(self.source.words.unconfigured, outcome=OutcomeKind.NOT_ALLOWED)
            else:
                self._block(self.source.words.unconfigured)
            return
        workdir = make_private_dir(Path(snap.workdir))
        if self.source.rules.refetch_on_restart and not self.fresh_run:
            # Each life of a run needs its own container token (and the source's memory of
            # the run): fetch again rather than trust files from an earlier process.
            self.ctx.journal.update_job(self.job_id, inputs_ready=0)
        if self.fresh_run:
            clean_workdir(workdir)
            # The earlier attempt's end goes: kept, it would stop this attempt's clock at 0 s.
            self.ctx.journal.update_job(self.job_id, inputs_ready=0, finished_at=None,
                                        attempt=snap.attempt + (1 if snap.started_at else 0))
        if not self.ctx.journal.job(self.job_id).inputs_ready and not self._download():
            return
        if self.stop.kind:
            self._stopped_before_run()
            return
        if not self._pass_run_gate():
            return  # it waits for the operator's decision: no thread waits with it
        self._execute()

    def _download(self) -> bool:
        paths = self.paths()
        self._transition(JobState.DOWNLOADING)
        next_warning = 0.0
        while True:
            if self.stop.kind:
                self._stopped_before_run()
                return False
            shutil.rmtree(paths.input_dir, ignore_errors=True)
            make_private_dir(paths.input_dir)
            try:
                self.ctx.source.fetch_inputs(self.snapshot.ticket_id, paths.input_dir)
            except Exception as exc:
                kind = self.ctx.source.classify(exc)
                if kind is Failure.GONE:
                    self._transition(JobState.CANCELLED, f"the ticket went away: {exc}")
                    return False
                if kind is Failure.REFUSED:
                    self._fail(f"could not download the ticket's inputs: {exc}",
                               user_reason=USER_DOWNLOAD_FAILED)
                    return False
                if time.monotonic() >= next_warning:
                    note = "log in again" if kind is Failure.LOGGED_OUT else "retrying"
                    self._local_note("warning", f"download failed ({exc}); {note}")
                    next_warning = time.monotonic() + 60
                self.stop.event.wait(self.ctx.retry_interval)
                continue
            details = self.ctx.source.run_details(self.snapshot.ticket_id)
            # The ledger names the inputs by SHA-256 and size (hashed here, on the job's
            # thread; the writer's fsync is not).
            entry = inputs_entry(paths.input_dir, self.ctx.source.ledger_details(
                details if details is not None else self.snapshot.details))
            if details is not None:  # what the fetch learnt (e.g. an input's hash, summary)
                self.ctx.journal.update_job(self.job_id, inputs_ready=1, details=details,
                                            ledger=[entry])
            else:
                self.ctx.journal.update_job(self.job_id, inputs_ready=1, ledger=[entry])
            return True

    def _still_ours(self, *, announce: bool) -> bool:
        """Before re-running: is the ticket still claimed, or failed by this console (which
        the server lets its claimant turn into success)? An unreachable server gets the
        benefit of the doubt: the running command is checked again every few seconds."""
        snap = self.snapshot
        try:
            status = remote_status(self.ctx.source, self.ctx.journal, self.job_id,
                                   snap.ticket_id)
        except Exception:
            return True
        if status.state is RemoteState.OURS:
            return True
        if status.failed_by_us:
            self.rescuing = True
            if announce:
                self._put(self.source.rescue_calls())
            return True
        why = self.ctx.source.not_retryable(status)
        self._transition(JobState.CANCELLED, f"not run again: {why}", check=False,
                         not_retryable=why)
        return False

    def _execute(self, follow: ExecutorDetails | None = None) -> None:
        """Run the command (``follow``: what its executor journaled of a command that
        outlived the engine)."""
        assert self.command is not None or follow is not None
        paths = self.paths()
        missing = self.source.missing_inputs(paths) if follow is None else None
        if missing is not None:
            self._fail(missing)
            return
        if follow is None:
            with contextlib.suppress(OSError):
                paths.result.unlink()
        name = follow.executor if follow is not None else \
            (self.command.executor if self.command is not None else "local")
        spec = self._spec(paths, following=follow is not None)
        if spec is None:
            return
        executor = self.ctx.executors.get(name)
        if executor is None:
            self._block(f"no executor named {name!r} in this engine")
            return
        snap = self.snapshot
        request = RunRequest(spec=spec, paths=paths, log_name=self._log_name(),
                             job=JobRef(snap.instance, self.job_id, snap.attempt),
                             grace_period=self.ctx.grace_period,
                             options=executor.own_options(self.command.executor_options())
                             if self.command is not None else {},
                             private_dirs=self._private_dirs())
        if follow is None:
            # The isolation and limits it runs under, as its executor words them, kept with
            # the run: the detail shows what applied, whatever the settings say later.
            fields: dict[str, Any] = execution_fields(executor.details(), reset=True)
            limits = executor.describe_options(request.options)
            if limits:
                fields["details"] = {**snap.details, "limits": limits}
            self._transition(JobState.RUNNING, exit_code=None, finished_at=None, **fields)
        else:
            # The run began before the restart: keep its start, so its run time is real.
            began = snap.started_at if snap.started_at is not None else time.time()
            self._transition(JobState.RUNNING, "following its command again", check=False,
                             started_at=began)
        self._holding = self.holds_reports()
        handle = self._start(executor, request, follow)
        if handle is None:
            return
        if self.ctx.on_started:
            self.ctx.on_started(self.snapshot)
        self._handle = handle
        self._put(self.source.started_calls())
        if self.stop.kind:  # asked to stop while starting
            handle.stop(self.stop.reason or self.source.words.shut_down)
        outcome = self._watch(handle)
        self._handle = None
        self._send_progress(force=True)
        self.ctx.journal.update_job(self.job_id, exit_code=outcome.exit_code)
        self._decide(outcome, paths)

    def _spec(self, paths: JobPaths, *, following: bool = False) -> CommandSpec | None:
        """The job's command as its source builds it; None when it cannot be prepared (the
        job ended or blocked, recorded). ``following``: the command already runs (it
        outlived the engine), so it is never refused now: the executor finds it by what it
        journaled, and a command edited into one that cannot be built meanwhile must not
        orphan it (a blocked job forgets its command, and would run it a second time)."""
        command = self.command
        if command is None:  # following a command whose service lost its settings
            return CommandSpec(argv=("true",), display="true")
        nice = self.ctx.command_nice if command.nice is None else command.nice
        try:
            return self.source.command_spec(self.snapshot.ticket_id, command, paths, nice)
        except Exception as exc:
            if following:  # the service's next job finds the problem (preflight pauses it)
                return CommandSpec(argv=("true",), display="true", timeout=command.timeout,
                                   nice=nice)
            if not isinstance(exc, StartError):
                self._start_failed(f"the command cannot be prepared: {exc}")
            elif self.stop.kind:
                self._stopped_before_run()
            else:  # in words, as if the executor had refused it
                self._start_failed(f"the command cannot start: {exc}")
            return None

    def _start_failed(self, reason: str) -> None:
        """The command cannot be prepared or started: keep the job and pause the service
        (the provider's configuration), or end it at once (its requester waits for an
        answer; the engine's preflight pauses the service before claiming more)."""
        if self.source.rules.start_failure == "fail":
            self.command_result = "failed"
            self._fail(reason, user_reason=self.source.words.start_failed,
                       outcome=OutcomeKind.START_FAILED)
        else:
            self._block(reason)

    def _private_dirs(self) -> tuple[Path, ...]:
        """What a contained command must not see: the console's data and config dirs (the
        journal, the stored session, the settings) and the work root (other jobs)."""
        found = [platform_paths.data_dir(), platform_paths.config_dir()]
        if self.ctx.workroot is not None:
            found.append(Path(self.ctx.workroot))
        return tuple(found)

    def _log_name(self) -> str:
        return output_log_name(self.snapshot.attempt)

    def _output_log(self) -> Path:
        return self.paths().engine_dir / self._log_name()

    def _callbacks(self) -> RunCallbacks:
        return RunCallbacks(on_report=self._on_report, on_details=self._record_execution,
                            on_note=self._local_note)

    def _record_execution(self, details: ExecutorDetails) -> None:
        # Journaled before the executor lets the command run (a restart finds it again).
        self.ctx.journal.record_execution(self.job_id, details)
        self._publish()

    def _start(self, executor: Executor, request: RunRequest,
               follow: ExecutorDetails | None) -> RunHandle | None:
        """Start (or follow) the command; None when the job ended instead (blocked, failed
        or stopped), already recorded."""
        next_warning = 0.0
        callbacks = self._callbacks()
        while True:
            try:
                if follow is not None:
                    return executor.follow(request, callbacks, follow)
                return executor.start(request, callbacks)
            except StartError as exc:
                if exc.retry_later:
                    # Nothing was started: keep the ticket and try again, never fail it.
                    if time.monotonic() >= next_warning:
                        self._local_note("warning", str(exc))
                        next_warning = time.monotonic() + 60
                    if exc.details is not None:
                        self._record_execution(exc.details)
                    if self.stop.event.wait(self.ctx.retry_interval):
                        self._stopped_before_run()
                        return None
                    continue
                if self.stop.kind:
                    self._stopped_before_run()
                elif exc.configuration:
                    # Options the executor refuses (a typo'd partition) are the provider's
                    # configuration, like a command that cannot start: every ticket would
                    # be refused the same way. Keep it claimed and pause the service.
                    self._block(str(exc))
                else:
                    self._start_failed(f"the command cannot start: {exc}")
                return None

    def _watch(self, handle: RunHandle) -> RunOutcome:
        next_check = time.monotonic() + self.ctx.status_interval
        while True:
            outcome = handle.wait(timeout=0.25)
            if outcome is not None:
                return outcome
            self._send_progress()
            self._send_output()
            if time.monotonic() >= next_check and not self.stop.kind:
                next_check = time.monotonic() + self.ctx.status_interval
                self._check_still_claimed()

    def _check_still_claimed(self) -> None:
        try:
            status = self.ctx.source.remote_status(self.snapshot.ticket_id)
        except Exception:
            return  # an unreachable server is not a reason to kill a running command
        if status.state is RemoteState.OURS or (status.state is RemoteState.FAILED
                                                and self.rescuing):
            return
        if (status.state in (RemoteState.FAILED, RemoteState.SUCCEEDED)
                and self.source.rules.command_may_finish):
            # Most likely the command finished the ticket itself (ASHS scripts do) and is
            # about to exit: let it end in its own words, within the grace period.
            now = time.monotonic()
            if self._finished_remotely_at is None:
                self._finished_remotely_at = now
                self._local_note("info", f"the ticket is now {status.words} on the server; "
                                         "waiting for the command to exit")
            if now - self._finished_remotely_at < self.ctx.grace_period:
                return
        self.ctx.journal.update_job(self.job_id,
                                    not_retryable=self.ctx.source.not_retryable(status))
        self.ticket_gone(f"status: {status.words}")

    def _send_output(self) -> None:
        """When the source's log follows the output (rules.output_interval) and the service
        shares its output's tail: a redacted copy, made now; one such call pending at a
        time."""
        interval = self.source.rules.output_interval
        if interval is None or not self._shares_tail() or self._holding:
            return
        now = time.monotonic()
        if now - self._last_output_sent < interval:
            return
        self._last_output_sent = now
        if any(i.kind == "output" and i.state == "pending"
               for i in self.ctx.journal.outbox_items(self.job_id)):
            return
        shared = self._shared_output()
        if shared is not None:
            self.ctx.outbox.put(self.job_id, self.snapshot.ticket_id, "output",
                                path=str(shared))

    def _block(self, reason: str) -> None:
        """The provider's configuration keeps the command from starting: not the user's
        failed segmentation. Keep the ticket claimed and wait for the command to be fixed."""
        self._local_note("error", f"{reason}. The ticket stays claimed: fix the service's "
                                  "command in the settings and it runs, or fail the ticket.")
        self._transition(JobState.BLOCKED, reason, check=False, started_at=None,
                         **command_forgotten())
        if self.ctx.on_blocked:
            self.ctx.on_blocked(self.snapshot, reason)

    # -- reports from the command -----------------------------------------------------------
    def _on_report(self, report: Report) -> None:
        held = self._holding  # what would leave waits for the release gate
        if isinstance(report, OutputReport):
            self.ctx.events.publish(JobOutput(job_id=self.job_id, lines=report.lines,
                                              skipped=report.skipped))
        elif isinstance(report, ProgressReport):
            with self._progress_lock:
                self._progress_to_send = self._tracker.update(report)
        elif isinstance(report, MessageReport):
            self.ctx.events.publish(JobMessage(job_id=self.job_id, level=report.level,
                                               text=report.text))
            self._send_progress(force=True)  # keep progress and messages in order
            self.ctx.outbox.put(self.job_id, self.snapshot.ticket_id, "log", held=held,
                                level=report.level, message=report.text)
        elif isinstance(report, AttachReport):
            try:
                kept = self._keep_attachment(report.path)
            except (OSError, ValueError) as exc:
                self._local_note("warning", f"attachment {report.description!r} not sent: {exc}")
                return
            self.ctx.outbox.put(self.job_id, self.snapshot.ticket_id, "attach", held=held,
                                description=report.description, path=str(kept),
                                mime_type=report.mime_type)
            self._local_note("info", f"attachment queued: {report.description} "
                                     f"({report.path.name})")
        elif isinstance(report, ProtocolWarning):
            self._local_note("warning", report.text)

    def _keep_attachment(self, path: Path) -> Path:
        """Copy an attachment aside: the command may overwrite or delete it before the
        outbox sends it, and a rerun empties the work dir."""
        paths = self.paths()
        path = resolve_attachment(str(path), paths.workdir)  # again: it may have been swapped
        folder = make_private_dir(paths.engine_dir / "attachments")
        target = folder / f"{len(list(folder.iterdir())) + 1:04d}_{path.name}"
        shutil.copyfile(path, target)
        return target

    def _send_progress(self, force: bool = False) -> None:
        now = time.monotonic()
        # Held while queueing too: the job thread and the runner's thread both send, and an
        # older value must never be queued after a newer one.
        with self._progress_lock:
            value = self._progress_to_send
            if value is None:
                return
            if not force and now - self._last_progress_sent < PROGRESS_SEND_INTERVAL:
                return
            self._progress_to_send = None
            self._last_progress_sent = now
            # The hook's events arrive up to 0.2 s after stdout's; a late, older value must
            # not make the user's progress bar jump back.
            value = max(value, self._highest_progress)
            self._highest_progress = value
            self.ctx.journal.update_job(self.job_id, progress=value)
            self.ctx.outbox.put(self.job_id, self.snapshot.ticket_id, "progress", value=value)
        self._publish()
