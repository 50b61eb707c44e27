"""How a job ends: the decision after its command (or a stop) and the server calls it
implies — the source's own calls (``Source.result_calls`` / ``failure_calls``), queued with
the job's transition in one journal transaction, then waited for.

:class:`JobEndings` is mixed into :class:`~dss_console.engine.jobs.JobExecution`, which drives
the job (inputs, command, reports) on its thread; the helpers every part of a job uses
(snapshot, transition, notes, paths) live here with the endings.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from dss_console.core.command import JobPaths
from dss_console.core.executor import RunOutcome
from dss_console.core.interfaces import (
    Ending,
    OutboxCall,
    OutcomeKind,
    RemoteState,
    RemoteStatus,
    ResultRejected,
    Source,
)
from dss_console.engine import redact
from dss_console.engine.calls import (
    details_with_outcome,
    is_end_call,
    is_failure_call,
    is_success_call,
)
from dss_console.engine.events import JobChanged, JobMessage, JobSnapshot
from dss_console.engine.gate import Decision, Gate
from dss_console.engine.journal import Journal, command_forgotten
from dss_console.engine.ledger import LedgerEntry
from dss_console.engine.ledger_records import upload_entry
from dss_console.engine.settings import ServiceCommand
from dss_console.engine.states import JobState
from dss_console.engine.workdirs import (
    ENGINE_DIR,
    INPUT_DIR,
    find_input_workspace,
    make_private_dir,
)

if TYPE_CHECKING:
    from dss_console.engine.jobs import JobContext, StopRequest


class JobEndings:
    """The endings of one job; the attributes are :class:`JobExecution`'s."""

    ctx: JobContext
    job_id: int
    command: ServiceCommand | None
    source: Source
    stop: StopRequest
    prefetch_only: bool
    rescuing: bool
    command_result: str | None
    _end_as: OutcomeKind | None
    operator_decision: Decision | None

    if TYPE_CHECKING:
        def _output_log(self) -> Path: ...
        def _hold_for_release(self, calls: list[OutboxCall]) -> bool: ...

    # -- helpers ----------------------------------------------------------------------------
    @property
    def snapshot(self) -> JobSnapshot:
        return self.ctx.journal.job(self.job_id)

    def _publish(self) -> None:
        self.ctx.events.publish(JobChanged(job=self.ctx.journal.job(self.job_id)))

    def _transition(self, state: JobState, reason: str | None = None,
                    calls: list[OutboxCall] | None = None, *, check: bool = True,
                    drop_final: bool = False, hold: bool = False, drop_held: bool = False,
                    release_held: bool = False, ledger: Sequence[LedgerEntry] = (),
                    **fields: object) -> None:
        snap = self.ctx.journal.job(self.job_id)
        payload_calls = [(kind, {**payload, "ticket": snap.ticket_id})
                         for kind, payload in (calls or [])]
        details = details_with_outcome(snap.details, payload_calls)
        if details is not None:
            fields["details"] = details
        items = self.ctx.journal.transition(self.job_id, state, reason, calls=payload_calls,
                                            check=check, drop_final=drop_final, hold=hold,
                                            drop_held=drop_held, release_held=release_held,
                                            ledger=ledger, **fields)
        if items:
            self.ctx.outbox.announce(items)
        self._publish()

    def _put(self, calls: list[OutboxCall]) -> None:
        """Queue calls the source gave (outside a transition)."""
        if not calls:
            return
        ticket = self.snapshot.ticket_id
        for kind, payload in calls:
            self.ctx.outbox.put(self.job_id, ticket, kind, **payload)

    def _local_note(self, level: str, text: str) -> None:
        self.ctx.events.publish(JobMessage(job_id=self.job_id, level=level, text=text,
                                           local=True))

    def paths(self) -> JobPaths:
        snap = self.ctx.journal.job(self.job_id)
        workdir = Path(snap.workdir)
        input_dir = workdir / INPUT_DIR
        return JobPaths(ticket_id=snap.ticket_id, service_name=snap.service_name,
                        service_hash=snap.service_hash, workdir=workdir, input_dir=input_dir,
                        workspace=find_input_workspace(input_dir, snap.ticket_id),
                        result=workdir / "result.itksnap", engine_dir=workdir / ENGINE_DIR)

    # -- stopped before the command ran; left open by a shutdown ----------------------------
    def _stopped_before_run(self) -> None:
        if self.stop.kind == "gone":
            self._transition(JobState.CANCELLED, self.stop.reason)
        elif self.stop.kind == "cancel":
            self._fail(self.stop.reason or self.source.words.cancelled, state=JobState.CANCELLED)
        elif self.stop.kind == "fail":
            self._fail(self.stop.reason or "failed by the provider")
        elif self._leave_open():
            self._left_open()
        else:
            self._fail(self.stop.reason or self.source.words.shut_down)

    def _leave_open(self) -> bool:
        """A job stopped by a shutdown stays open on the server and runs again at the next
        start, as after a crash, unless `on_shutdown = "fail"` (or the source's own rule:
        `[v6] on_shutdown` for a node)."""
        if self.stop.kind != "shutdown":
            return False
        if self.ctx.shutdown_choice is not None:
            return self.ctx.shutdown_choice == "resume"
        leave = self.source.rules.leave_open_on_shutdown
        return self.ctx.on_shutdown == "resume" if leave is None else leave

    def _left_open(self) -> None:
        """Record a job left open by a shutdown: INTERRUPTED, which the next start runs
        again (engine.recover), exactly as after a crash."""
        if self.prefetch_only and self.source.rules.shutdown_keeps_manual_claims:
            # Claimed by hand and not run yet: it waits for Run again, as it did.
            self._transition(JobState.CLAIMED, "stopped while its inputs were downloaded; "
                             "they are downloaded again", check=False, inputs_ready=0)
            return
        # The command was stopped (a cluster job cancelled): the next start must run the
        # job again, not follow that command.
        calls = self.source.left_open_calls(rerun=self.ctx.interrupted != "fail")
        self._transition(JobState.INTERRUPTED, self.source.words.left_open, check=False,
                         calls=calls, **command_forgotten())

    # -- endings ----------------------------------------------------------------------------
    def _decide(self, outcome: RunOutcome, paths: JobPaths) -> None:
        tail = outcome.tail
        if self.stop.kind == "gone":
            self.ctx.journal.drop_pending(self.job_id, self.stop.reason or "ticket gone")
            self._transition(JobState.CANCELLED, self.stop.reason)
            return
        if self._leave_open():
            self._left_open()
            return
        if self.stop.kind == "shutdown":
            self._fail(self.stop.reason or self.source.words.shut_down, tail)
            return
        if self.stop.kind == "cancel":
            self._fail(self.stop.reason or self.source.words.cancelled, tail,
                       state=JobState.CANCELLED)
            return
        if self.stop.kind == "fail":
            self._fail(self.stop.reason or "failed by the provider", tail,
                       outcome=OutcomeKind.CANCELLED)
            return
        # From here on the command itself decided: its failures count for the breaker.
        self.command_result = "failed"
        if outcome.stop_reason:  # timeout
            self._fail(f"the command {outcome.stop_reason}", tail)
            return
        if outcome.exit_code == 0:
            result = self.source.result_path(paths)
            if result.is_file():
                self.command_result = "succeeded"
                self._deliver(result)
            elif self.source.rules.command_may_finish and self._finished_by_command():
                self.command_result = "succeeded"
                self._transition(JobState.SUCCEEDED, "the command uploaded its result and "
                                                     "finished the ticket itself", check=False)
            else:
                self._fail(self.source.missing_result(result), tail,
                           outcome=OutcomeKind.CRASHED)
            return
        # The command's own last `@dss error` already reached the user: not a second time.
        told = outcome.last_error is not None
        if outcome.exit_code is not None:
            self._fail(outcome.last_error or f"command exited with code {outcome.exit_code}",
                       tail, outcome=OutcomeKind.CRASHED, told=told)
            return
        self._fail(outcome.last_error or f"command was killed by signal {outcome.signal}", tail,
                   outcome=OutcomeKind.CRASHED, told=told)

    def _finished_by_command(self) -> bool:
        try:
            status = self.ctx.source.remote_status(self.snapshot.ticket_id)
            return status.state is RemoteState.SUCCEEDED
        except Exception:
            return False  # unknown: the failure path asks again before it sends anything

    def _fail(self, reason: str, tail: list[str] | None = None, *,
              state: JobState = JobState.FAILED, user_reason: str | None = None,
              outcome: OutcomeKind | None = None, told: bool = False) -> None:
        """Tell the user why (`user_reason` when `reason` carries local detail; nothing when
        `told`: it is the command's own error message, already sent), with the output's
        tail attached if the service shares it (redacted), then mark the ticket failed —
        unless the ticket is already finished (the command may have failed it itself)."""
        snap = self.snapshot
        current: RemoteStatus | None
        try:
            current = self.ctx.source.remote_status(snap.ticket_id)
        except Exception:
            current = None  # decided again by the outbox just before sending `failed`
        if current is not None and current.state is RemoteState.FAILED and self.rescuing:
            current = None  # our own earlier failure: say how the retry ended
        if current is not None and current.state is RemoteState.SUCCEEDED:
            # The command (an itksnap-wt script) delivered its result and finished the
            # ticket itself: that is how the ticket ended, whatever went wrong here after.
            self._transition(JobState.SUCCEEDED, f"the ticket was already success on the "
                                                 f"server; nothing sent (here: {reason})",
                             check=False)
            return
        if current is not None and current.state is not RemoteState.OURS:
            self._transition(state, f"{reason} (the ticket was already {current.words} on "
                                    "the server; nothing sent)", check=False)
            return
        kind = outcome or self._end_as or (
            OutcomeKind.CANCELLED if state is JobState.CANCELLED else OutcomeKind.FAILED)
        # Messages held for a release that will not come never left: the reason must.
        held = bool(self.ctx.journal.held_items(self.job_id))
        told = told and not held
        lines = tail or []
        calls = self.source.failure_calls(Ending(
            kind=kind, reason="" if told else user_reason or reason, told=told,
            tail_file=lambda: self._write_tail(lines) if lines and self._shares_tail() else None,
            shared_output=self._shared_output))
        self._transition(state, reason, calls=calls, check=False, drop_final=True,
                         drop_held=held)

    def _stop_during_upload(self) -> None:
        """Cancel, fail or a vanished ticket while the result phase is in flight."""
        if any(is_success_call(i) and i.state == "delivered"
               for i in self.ctx.journal.outbox_items(self.job_id)):
            self._transition(JobState.SUCCEEDED, "the result had already been delivered")
            return
        if self.stop.kind == "gone":
            self.ctx.journal.drop_pending(self.job_id, self.stop.reason or "ticket gone")
            self._transition(JobState.CANCELLED, self.stop.reason, check=False)
        elif self.stop.kind == "cancel":
            self._fail(self.stop.reason or self.source.words.cancelled, state=JobState.CANCELLED)
        else:
            self._fail(self.stop.reason or "failed by the provider")

    def _write_tail(self, tail: list[str]) -> Path:
        folder = make_private_dir(self.paths().engine_dir / "attachments")
        name = f"output-tail-{int(time.time() * 1000)}{redact.SHARED_SUFFIX}"
        return redact.write_shared(folder / name, "\n".join(self._redactor().lines(tail)) + "\n")

    # -- what of the output may go to the server (engine/redact.py) -------------------------
    def _shares_tail(self) -> bool:
        """Raw output stays here unless the service (or the settings' default) opts in."""
        own = self.command.send_output_tail if self.command is not None else None
        return self.ctx.send_output_tail if own is None else own

    def _redactor(self) -> redact.Redactor:
        snap = self.snapshot
        extra_env, values = self.ctx.source.private_values()
        return redact.job_redactor(workdir=snap.workdir, workroot=self.ctx.workroot,
                                   command_env=self.command.env if self.command else {},
                                   extra_env=extra_env, values=values,
                                   node=snap.execution.host if snap.execution else None)

    def _shared_output(self) -> Path | None:
        """A redacted copy of the output's tail for the server's log, or None when the
        service does not share it (the source sends no other file)."""
        if not self._shares_tail():
            return None
        return redact.shared_tail(self._output_log(), self.ctx.source.log_limit(),
                                  self._redactor())

    def _upload(self, result: Path) -> None:
        """A result the operator picked: delivered as the command's would be."""
        self._deliver(result)

    def _deliver(self, result: Path) -> None:
        """Queue the calls that deliver the result and end the job (the source's), then
        wait for them."""
        try:
            calls = self.source.result_calls(self.snapshot.ticket_id, result,
                                             self.paths().engine_dir / "export",
                                             self._shared_output)
        except ResultRejected as exc:
            self.command_result = "failed"
            self._fail(exc.reason, user_reason=exc.user_reason)
            return
        if self._hold_for_release(calls):
            return  # the result waits for the operator's release: no thread waits with it
        # Whatever an earlier result held goes when this one is the operator's (it replaces
        # it); released by a rule, what the command reported while held goes first.
        own = self.operator_decision
        replaces = own is not None and own.gate is Gate.RELEASE
        upload = upload_entry(calls)
        self._transition(JobState.UPLOADING, None, calls=calls, progress=1.0,
                         drop_held=replaces, release_held=not replaces,
                         ledger=[upload] if upload is not None else [])
        self._finish_upload()

    def _finish_upload(self) -> None:
        journal = self.ctx.journal
        while not journal.job(self.job_id).state.is_terminal:
            if self.ctx.outbox.wait_job(self.job_id, timeout=1.0):
                break
            if self.stop.kind == "shutdown":
                # The result phase stays queued in the journal and resumes on the next start.
                self._local_note("warning", "stopped while the result was being uploaded; "
                                            "the upload resumes when dss-console starts again")
                return
            if self.stop.kind in ("cancel", "fail", "gone"):
                self._stop_during_upload()
                return
        snap = journal.job(self.job_id)
        if snap.state.is_terminal:
            return
        if self.stop.kind == "gone":
            self._transition(JobState.CANCELLED, self.stop.reason, check=False)
            return
        ends = [i for i in journal.outbox_items(self.job_id) if is_end_call(i)]
        last = ends[-1] if ends else None
        if last and is_success_call(last) and last.state == "delivered":
            self._transition(JobState.SUCCEEDED, None)
        else:
            reason = snap.reason or (last.last_error if last else None) or \
                "the result could not be delivered"
            self._transition(JobState.FAILED, reason)


def failed_here(journal: Journal, job_id: int) -> bool:
    """Did this console deliver (or queue) an end other than success for the job's ticket?"""
    return any(is_failure_call(i) and i.state in ("delivered", "pending")
               for i in journal.outbox_items(job_id))


def remote_status(source: Source, journal: Journal, job_id: int,
                  ticket_id: int) -> RemoteStatus:
    """The job's state on the server, ``failed_by_us`` from the journal (the source cannot
    know which console failed it) where the source lets a claimant rescue its own failure."""
    status = source.remote_status(ticket_id)
    if (status.state is RemoteState.FAILED and source.rules.rescue_own_failure
            and failed_here(journal, job_id)):
        return replace(status, failed_by_us=True)
    return status
