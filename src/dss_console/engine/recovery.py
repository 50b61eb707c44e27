"""Crash recovery: what becomes, at start, of this instance's jobs a previous run left
unfinished (resumed, followed where their command ran on, or interrupted and then failed or
run again, as the settings say).

:class:`StartupRecovery` is mixed into :class:`~dss_console.engine.engine.Engine`; the attributes
and methods it declares are the engine's.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from dss_console.core.executor import Executor, ExecutorDetails, JobRef, Recovery
from dss_console.core.interfaces import OutcomeKind, Source
from dss_console.engine.events import EngineNotice, EventBus, JobChanged, JobSnapshot
from dss_console.engine.gate import Gate, approved
from dss_console.engine.journal import Journal, command_forgotten
from dss_console.engine.settings import Settings
from dss_console.engine.states import JobState

if TYPE_CHECKING:
    from dss_console.engine.jobs import JobContext, JobExecution


class StartupRecovery:
    """The engine's start-up recovery (the attributes are :class:`Engine`'s)."""

    settings: Settings
    source: Source
    journal: Journal
    events: EventBus
    executors: Mapping[str, Executor]
    ctx: JobContext
    instance: str
    noun: str

    if TYPE_CHECKING:
        def _finish_without_run(self, snap: JobSnapshot, state: JobState, reason: str, *,
                                kind: OutcomeKind | None = None,
                                drop_held: bool = False) -> None: ...
        def _launch(self, job_id: int, *, fresh_run: bool = False,
                    prefetch_only: bool = False, upload: Path | None = None,
                    follow: bool = False, restarted: bool = False) -> JobExecution: ...

    def recover(self, *, run_claimed: bool = False) -> list[int]:
        """Handle this instance's jobs left unfinished by a previous run."""
        resumed = []
        mine = [j for j in self.journal.jobs(source=self.source.key)
                if j.instance == self.instance and not j.state.is_terminal]
        for snap in mine:
            if snap.state is JobState.AWAITING_APPROVAL and snap.waiting_since is None \
                    and approved(snap.decision, Gate.RUN):
                # Approved, then stopped before its command started (the approve commits
                # its decision first): the approval stands, it runs now.
                self._launch(snap.job_id)
                resumed.append(snap.job_id)
                continue
            if snap.state.is_waiting:
                # Waiting for a decision: nothing ran or left, nothing runs or leaves until
                # someone decides (its held calls stay held). Only shown again.
                self.events.publish(JobChanged(job=snap))
                continue
            if snap.state is JobState.UPLOADING:
                self._launch(snap.job_id)
                resumed.append(snap.job_id)
                continue
            if snap.state is JobState.BLOCKED:
                self._launch(snap.job_id)  # the settings may have been fixed meanwhile
                resumed.append(snap.job_id)
                continue
            if snap.state is JobState.CLAIMED:
                if run_claimed:
                    self._launch(snap.job_id)
                    resumed.append(snap.job_id)
                continue
            recovery = self._recover_command(snap)
            if recovery.follow:
                self._launch(snap.job_id, follow=True)
                resumed.append(snap.job_id)
                continue
            was = snap.state.value
            if snap.state is not JobState.INTERRUPTED:
                self.journal.transition(snap.job_id, JobState.INTERRUPTED,
                                        f"dss-console stopped while the job was {was}",
                                        check=False, **command_forgotten())
            for note in recovery.notes:
                self.events.publish(EngineNotice(
                    level="warning", job_id=snap.job_id,
                    text=f"{self.noun} {snap.ticket_id}: {note}"))
            self.events.publish(JobChanged(job=self.journal.job(snap.job_id)))
            if self.settings.interrupted == "fail":
                self._finish_without_run(
                    self.journal.job(snap.job_id), JobState.FAILED,
                    "the provider restarted while this ticket was being processed")
            else:
                self._launch(snap.job_id, fresh_run=True, restarted=True)
            resumed.append(snap.job_id)
        return resumed

    def _recover_command(self, snap: JobSnapshot) -> Recovery:
        """Ask the job's executor what became of its command: follow it (it ran on without
        us), or it cleaned up what was left (a process group, a held cluster job)."""
        executor = self.executors.get(snap.executor)
        if executor is None:
            return Recovery()
        return executor.recover(snap.execution or ExecutorDetails(snap.executor),
                                JobRef(snap.instance, snap.job_id, snap.attempt),
                                grace=self.ctx.grace_period)
