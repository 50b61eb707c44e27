"""What the operator does to jobs by hand: claim the next ticket, run, retry, cancel or fail
a job, upload a result picked by hand. These block on the network; call them off the GUI thread.

:class:`OperatorActions` is mixed into :class:`~dss_console.engine.engine.Engine`; the
attributes and methods it declares are the engine's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dss_console.core.interfaces import OutcomeKind, RemoteState, Source
from dss_console.engine.endings import remote_status
from dss_console.engine.events import EventBus, JobChanged, JobSnapshot
from dss_console.engine.gate import Decision, Gate, local_user
from dss_console.engine.journal import Journal
from dss_console.engine.pauses import ServicePauses
from dss_console.engine.settings import ServiceCommand
from dss_console.engine.states import JobState

if TYPE_CHECKING:
    from dss_console.core.interfaces import SourceService
    from dss_console.engine.jobs import JobExecution
    from dss_console.engine.scheduler import ServiceView


class EngineError(Exception):
    """An operation the engine refuses, in words (e.g. "ticket 12 is running")."""



class OperatorActions:
    """The engine's manual operations (the attributes are :class:`Engine`'s)."""

    source: Source
    journal: Journal
    events: EventBus
    pauses: ServicePauses
    noun: str
    _services: list[SourceService]
    _claiming: bool

    if TYPE_CHECKING:
        def refresh_services(self) -> list[ServiceView]: ...
        def command_for(self, service_hash: str) -> ServiceCommand | None: ...
        def _service_name(self, service_hash: str) -> str: ...
        def _claim(self, hashes: list[str], *, run: bool) -> JobSnapshot | None: ...
        def _execution(self, job_id: int) -> JobExecution | None: ...
        def _finish_without_run(self, snap: JobSnapshot, state: JobState, reason: str, *,
                                kind: OutcomeKind | None = None,
                                drop_held: bool = False) -> None: ...
        def _launch(self, job_id: int, *, fresh_run: bool = False,
                    prefetch_only: bool = False, upload: Path | None = None,
                    follow: bool = False, restarted: bool = False,
                    decision: Decision | None = None) -> JobExecution: ...

    # -- manual operations (block on the network) -------------------------------------------
    def claim_next(self, service_hashes: Sequence[str] | None = None, *,
                   run: bool = False) -> JobSnapshot | None:
        """Claim the next ready ticket of these services (default: all with a command).
        The inputs are fetched at once; with `run` the command starts right after."""
        if not self._services:
            self.refresh_services()
        hashes = list(service_hashes or [s.service_hash for s in self._services
                                         if self.command_for(s.service_hash)])
        if not hashes:
            raise EngineError("no service to claim for: configure a command for a service, "
                              "or choose the services to claim from")
        # A paused service claims nothing, by hand either: its next ticket would only fail
        # or block like the last ones.
        paused = {h: why for h in hashes if (why := self.pauses.reason(h))}
        hashes = [h for h in hashes if h not in paused]
        if not hashes:
            name, why = next((self._service_name(h) or h[:10], why) for h, why in paused.items())
            raise EngineError(f"service {name} is paused ({why}); resume it to claim again")
        if not self._claiming:
            raise EngineError("the console is shutting down; no more claims")
        return self._claim(hashes, run=run)


    def run_job(self, job_id: int) -> None:
        snap = self._job_without_execution(job_id, "run")
        if snap.state.is_waiting:
            raise EngineError(f"{self.noun} {snap.ticket_id} waits for the operator's decision: "
                              "approve, release or reject it")
        if snap.state not in (JobState.CLAIMED, JobState.INTERRUPTED, JobState.BLOCKED):
            raise EngineError(f"ticket {snap.ticket_id} is {snap.state.value}; use Retry run")
        # The operator's Run is the operator's approval: no second click at the gate.
        self._launch(job_id, fresh_run=snap.state is JobState.INTERRUPTED,
                     decision=Decision(Gate.RUN, "approve", "window", user=local_user()))

    def retry_job(self, job_id: int) -> None:
        """Run the command again from a clean work dir, if the ticket is still ours."""
        snap = self._job_without_execution(job_id, "retry")
        if snap.state not in (JobState.FAILED, JobState.CANCELLED, JobState.INTERRUPTED):
            raise EngineError(f"ticket {snap.ticket_id} is {snap.state.value}; only failed, "
                              "cancelled or interrupted jobs can be retried")
        if snap.not_retryable:
            raise EngineError(f"ticket {snap.ticket_id} cannot be retried: {snap.not_retryable}")
        status = remote_status(self.source, self.journal, job_id, snap.ticket_id)
        # `failed` is a rescue only when this console failed it and the source lets the
        # claimant turn its own failure into a success (remote_status says).
        if status.state is not RemoteState.OURS and not status.failed_by_us:
            why = self.source.not_retryable(status)
            self.journal.update_job(job_id, not_retryable=why)
            self.events.publish(JobChanged(job=self.journal.job(job_id)))
            raise EngineError(f"{self.noun} {snap.ticket_id} cannot be retried: {why}")
        self._launch(job_id, fresh_run=True)

    def cancel_job(self, job_id: int, message: str | None = None) -> None:
        """Stop the command (if any) and fail the ticket as cancelled by the provider."""
        execution = self._execution(job_id)
        if execution is not None and execution.cancel(message):
            return
        snap = self.journal.job(job_id)
        if snap.state.is_terminal:
            raise EngineError(f"ticket {snap.ticket_id} is already {snap.state.value}")
        reason = self.source.words.cancelled + (f": {message}" if message else "")
        self._finish_without_run(snap, JobState.CANCELLED, reason)

    def fail_job(self, job_id: int, message: str) -> None:
        """Fail the ticket with the operator's message (stopping its command first)."""
        if not message.strip():
            raise EngineError("a failure needs a message for the user")
        execution = self._execution(job_id)
        if execution is not None and execution.fail_with(message):
            return
        snap = self.journal.job(job_id)
        if snap.state is JobState.SUCCEEDED:
            raise EngineError(f"ticket {snap.ticket_id} already succeeded")
        self._finish_without_run(snap, JobState.FAILED, message)

    def upload_result(self, job_id: int, workspace: str | Path) -> None:
        """Upload a result workspace the operator picked, then mark the ticket a success."""
        snap = self._job_without_execution(job_id, "upload a result for")
        if not self.source.rules.operator_result:
            raise EngineError(self.source.words.no_operator_result)
        if snap.state is JobState.SUCCEEDED:
            raise EngineError(f"ticket {snap.ticket_id} already succeeded")
        if self.journal.pending_final(job_id):
            raise EngineError(f"ticket {snap.ticket_id} is still sending a result")
        if snap.state is JobState.AWAITING_APPROVAL:
            raise EngineError(f"ticket {snap.ticket_id} waits for approval; approve or "
                              "reject it first")
        path = Path(workspace)
        if not path.is_file():
            raise EngineError(f"{path} is not a file")
        # A result the operator hands over is the operator's release (recorded so).
        self._launch(job_id, upload=path,
                     decision=Decision(Gate.RELEASE, "release", "window", user=local_user()))

    def _job_without_execution(self, job_id: int, verb: str) -> JobSnapshot:
        snap = self.journal.job(job_id)
        if self._execution(job_id) is not None:
            raise EngineError(f"cannot {verb} ticket {snap.ticket_id}: it is busy "
                              f"({snap.state.value})")
        return snap

