"""The operator's decisions at the gates (docs/gate-plan.md §1.2–1.3): approve, reject,
release; what a waiting job is, for the one who decides; decisions not made in time; the
set of waiting jobs the engine keeps (its status's ``waiting``, the approval queue's bound).

:class:`GateDecisions` is mixed into :class:`~dss_console.engine.engine.Engine`; the
attributes and methods it declares are the engine's. A decision is a request (the window,
``dss-console approvals``) that starts a fresh execution of the job: a waiting job has no
thread, timer or server call of its own.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from dss_console.core.interfaces import HeldCall, OutcomeKind, RemoteState, Source
from dss_console.core.presentation import ApprovalView, Fact
from dss_console.engine.actions import EngineError
from dss_console.engine.endings import remote_status
from dss_console.engine.events import Event, EventBus, JobChanged, JobSnapshot, RulesEdited
from dss_console.engine.gate import (
    RULE_GATES,
    ApprovalRule,
    Decision,
    Gate,
    approved,
    decision_entry,
    inputs_digest,
    local_user,
    rule_entry,
    with_decision,
)
from dss_console.engine.journal import Journal
from dss_console.engine.ledger import LedgerEntry, utc_text
from dss_console.engine.settings import Settings
from dss_console.engine.states import WAITING, JobState
from dss_console.engine.workdirs import ENGINE_DIR, INPUT_DIR, find_input_workspace

if TYPE_CHECKING:
    from dss_console.core.command import JobPaths
    from dss_console.engine.jobs import JobContext, JobExecution
    from dss_console.engine.outbox import Outbox

VIAS_BY_HAND = ("window", "cli")


class GateDecisions:
    """The engine's side of the gate (the attributes are :class:`Engine`'s)."""

    settings: Settings
    source: Source
    journal: Journal
    events: EventBus
    outbox: Outbox
    instance: str
    noun: str
    _lock: threading.RLock
    _waiting: dict[int, tuple[JobState, str, float]]
    ctx: JobContext

    if TYPE_CHECKING:
        def _execution(self, job_id: int) -> JobExecution | None: ...
        def _live_executions(self) -> list[JobExecution]: ...
        def _finish_without_run(self, snap: JobSnapshot, state: JobState, reason: str, *,
                                kind: OutcomeKind | None = None,
                                drop_held: bool = False) -> None: ...
        def _launch(self, job_id: int, *, fresh_run: bool = False,
                    prefetch_only: bool = False, upload: Path | None = None,
                    follow: bool = False, restarted: bool = False,
                    decision: Decision | None = None) -> JobExecution: ...

    # -- the waiting set (kept from the engine's own events) ---------------------------------
    def _load_waiting(self) -> None:
        """Rebuilt from the journal at start (a restart keeps jobs waiting)."""
        jobs = self.journal.jobs(source=self.source.key, instance=self.instance, states=WAITING)
        with self._lock:
            self._waiting = {j.job_id: (j.state, j.service_hash, j.waiting_since or j.updated_at)
                             for j in jobs}

    def _track_waiting(self, event: Event) -> None:
        if not isinstance(event, JobChanged):
            return
        job = event.job
        if job.source != self.source.key or job.instance != self.instance:
            return
        with self._lock:
            if job.state.is_waiting:
                self._waiting[job.job_id] = (job.state, job.service_hash,
                                             job.waiting_since or job.updated_at)
            else:
                self._waiting.pop(job.job_id, None)

    def waiting_count(self) -> int:
        """Jobs waiting for the operator's decision (no journal query)."""
        with self._lock:
            return len(self._waiting)

    def waiting_for_approval(self, service_hash: str) -> int:
        """The service's approval queue: jobs waiting for approval, and those on their way
        to it (claimed, fetching inputs, not approved yet)."""
        with self._lock:
            waiting = sum(1 for state, key, _ in self._waiting.values()
                          if state is JobState.AWAITING_APPROVAL and key == service_hash)
        coming = 0
        for execution in self._live_executions():
            snap = self.journal.job(execution.job_id)
            if (snap.service_hash == service_hash and not execution.prefetch_only
                    and snap.state in (JobState.CLAIMED, JobState.DOWNLOADING)
                    and not approved(snap.decision, Gate.RUN)):
                coming += 1
        return waiting + coming

    def next_decision_deadline(self) -> float | None:
        """When the oldest waiting decision times out (epoch seconds); None: never."""
        timeout = self.settings.approval_timeout
        with self._lock:
            oldest = min((since for _, _, since in self._waiting.values()), default=None)
        return None if timeout is None or oldest is None else oldest + timeout

    # -- decisions ----------------------------------------------------------------------------
    def _waiting_job(self, job_id: int, states: Sequence[JobState], verb: str) -> JobSnapshot:
        snap = self.journal.job(job_id)
        if snap.source != self.source.key or snap.instance != self.instance:
            raise EngineError(f"{self.noun} {snap.ticket_id} is not this engine's")
        execution = self._execution(job_id)
        if execution is not None:
            # Its thread journaled the wait and is returning: a moment, not a busy job.
            execution.join(5.0)
            if execution.alive:
                raise EngineError(f"cannot {verb} {self.noun} {snap.ticket_id}: it is busy "
                                  f"({snap.state.value})")
            snap = self.journal.job(job_id)
        if snap.state not in states:
            wanted = " or ".join(s.value.replace("_", " ") for s in states)
            now = snap.state.value.replace("_", " ")
            raise EngineError(f"{self.noun} {snap.ticket_id} is {now}, not {wanted}")
        return snap

    def approve_job(self, job_id: int, via: str = "window") -> None:
        """Run a job waiting for approval (its inputs as they are now)."""
        snap = self._waiting_job(job_id, (JobState.AWAITING_APPROVAL,), "approve")
        decision = Decision(Gate.RUN, "approve", _via(via), user=local_user(), at=time.time(),
                            inputs_sha256=inputs_digest(Path(snap.workdir) / INPUT_DIR,
                                                        snap.details))
        self.journal.update_job(job_id, waiting_since=None,
                                decision=with_decision(snap.decision, decision),
                                ledger=[self._decision_entry(snap, decision)])
        self._launch(job_id)

    def release_job(self, job_id: int, via: str = "window") -> None:
        """Send a held result: its held calls go out in order, then the job ends."""
        snap = self._waiting_job(job_id, (JobState.AWAITING_RELEASE,), "release")
        try:
            status = remote_status(self.source, self.journal, job_id, snap.ticket_id)
        except Exception:
            status = None  # unreachable: the outbox delivers once it is back
        if status is not None and status.state is not RemoteState.OURS:
            why = self.source.not_retryable(status)
            self.journal.transition(job_id, JobState.CANCELLED, f"not released: {why}",
                                    check=False, drop_held=True, waiting_since=None,
                                    not_retryable=why)
            self.events.publish(JobChanged(job=self.journal.job(job_id)))
            raise EngineError(f"{self.noun} {snap.ticket_id} was not released: {why}")
        decision = Decision(Gate.RELEASE, "release", _via(via), user=local_user(),
                            at=time.time())
        items = self.journal.release(job_id, JobState.UPLOADING, "released by the operator",
                                     decision=with_decision(snap.decision, decision),
                                     ledger=[self._decision_entry(snap, decision)])
        self.outbox.announce(items)
        self.events.publish(JobChanged(job=self.journal.job(job_id)))
        self._launch(job_id)

    def reject_job(self, job_id: int, message: str, via: str = "window") -> None:
        """Fail a waiting job with the operator's message (its requester reads it); a held
        result stays here, as any failed job's work dir."""
        if not message.strip():
            raise EngineError(f"a rejection needs a message for the {self.source.words.job}'s "
                              "requester")
        snap = self._waiting_job(job_id, tuple(WAITING), "reject")
        gate = Gate.RUN if snap.state is JobState.AWAITING_APPROVAL else Gate.RELEASE
        decision = Decision(gate, "reject", _via(via), user=local_user(), at=time.time())
        self.journal.update_job(job_id, waiting_since=None,
                                decision=with_decision(snap.decision, decision),
                                ledger=[self._decision_entry(snap, decision)])
        reason = f"{self.source.words.rejected}: {message.strip()}"
        self._finish_without_run(self.journal.job(job_id), JobState.FAILED, reason,
                                 kind=OutcomeKind.REJECTED, drop_held=True)

    def expire_decisions(self, now: float | None = None) -> list[int]:
        """Fail the jobs whose decision waited longer than ``approval_timeout`` (one indexed
        query, from the scheduler's loop)."""
        timeout = self.settings.approval_timeout
        if timeout is None or not self.waiting_count():
            return []
        moment = time.time() if now is None else now
        expired = self.journal.jobs(source=self.source.key, instance=self.instance,
                                    states=WAITING, waiting_before=moment - timeout)
        for snap in expired:
            if self._execution(snap.job_id) is not None:
                continue
            gate = Gate.RUN if snap.state is JobState.AWAITING_APPROVAL else Gate.RELEASE
            decision = Decision(gate, "timeout", "timeout", at=moment)
            self.journal.update_job(snap.job_id, waiting_since=None,
                                    decision=with_decision(snap.decision, decision),
                                    ledger=[self._decision_entry(snap, decision)])
            self._finish_without_run(self.journal.job(snap.job_id), JobState.FAILED,
                                     self.source.words.decision_timed_out,
                                     drop_held=True)
        return [s.job_id for s in expired]

    def _decision_entry(self, snap: JobSnapshot, decision: Decision) -> LedgerEntry:
        return decision_entry(decision, self.source.requester(snap.details))

    # -- rules ("always approve this requester for this service") -------------------------
    def approval_rules(self) -> list[ApprovalRule]:
        return list(self.settings.approval_rules)

    def add_rule(self, rule: ApprovalRule, via: str = "window") -> ApprovalRule:
        """Apply a new rule now (the caller keeps it in the settings file); its ledger
        record names who added it. Returns it with its id and author."""
        problem = rule_problem(rule)
        if problem:
            raise EngineError(problem)
        made = replace(rule, id=rule.id or f"rule-{secrets.token_hex(4)}",
                       added_by=rule.added_by or local_user(),
                       added=rule.added or utc_text(time.time()))
        if any(r.rule_id == made.rule_id for r in self.settings.approval_rules):
            raise EngineError(f"a rule {made.rule_id!r} exists already")
        self._set_rules([*self.settings.approval_rules, made],
                        rule_entry(made, "added", local_user(), _via(via)))
        return made

    def revoke_rule(self, rule_id: str, via: str = "window") -> ApprovalRule:
        found = next((r for r in self.settings.approval_rules if r.rule_id == rule_id), None)
        if found is None:
            raise EngineError(f"no rule {rule_id!r} (see the rules listed)")
        self._set_rules([r for r in self.settings.approval_rules if r.rule_id != rule_id],
                        rule_entry(found, "revoked", local_user(), _via(via)))
        return found

    def _set_rules(self, rules: list[ApprovalRule], entry: LedgerEntry) -> None:
        self.settings = replace(self.settings, approval_rules=rules)
        self.ctx.approval_rules = list(rules)
        self.journal.queue_ledger([entry], source=self.source.key, instance=self.instance)
        # Whoever keeps the settings file saves them (a worker's host; a console's window).
        self.events.publish(RulesEdited(rules=tuple(rules)))

    def approve_always(self, job_id: int, *, until: str = "", any_requester: bool = False,
                       via: str = "window") -> ApprovalRule:
        """Approve a waiting job and add a rule approving its requester (or anyone) for its
        service from now on (the rule is added first: its id is in the ledger before the
        decision it makes possible)."""
        snap = self._waiting_job(job_id, (JobState.AWAITING_APPROVAL,), "approve")
        requester = self.source.requester(snap.details)
        rule = self.add_rule(ApprovalRule(
            service=snap.service_name or snap.service_hash, gate="run", until=until,
            requester="" if any_requester or requester is None else requester.key), via)
        self.approve_job(job_id, via)
        return rule

    # -- what the one who decides reads --------------------------------------------------------
    def waiting_jobs(self) -> list[ApprovalView]:
        """Every job waiting for a decision, oldest first, without its facts or preview."""
        jobs = self.journal.jobs(source=self.source.key, instance=self.instance, states=WAITING)
        return [self._approval_view(j, full=False) for j in
                sorted(jobs, key=lambda j: (j.waiting_since or 0, j.job_id))]

    def approval(self, job_id: int) -> ApprovalView:
        """What a waiting job is (its facts, the preview of a held result), computed now
        from local files: values marked local_only never leave this machine's operator."""
        snap = self.journal.job(job_id)
        if not snap.state.is_waiting:
            raise EngineError(f"{self.noun} {snap.ticket_id} is {snap.state.value}, not "
                              "waiting for a decision")
        return self._approval_view(snap, full=True)

    def _approval_view(self, snap: JobSnapshot, *, full: bool) -> ApprovalView:
        timeout = self.settings.approval_timeout
        gate = Gate.RUN if snap.state is JobState.AWAITING_APPROVAL else Gate.RELEASE
        facts: tuple[Fact, ...] = ()
        preview = None
        if full:
            paths = _job_paths(snap)
            if gate is Gate.RUN:
                facts = self.source.approval_facts(snap.ticket_id, paths, snap.details)
            else:
                held = [HeldCall(i.kind, i.payload) for i in self.journal.held_items(snap.job_id)]
                preview = self.source.release_preview(snap.ticket_id, paths, held)
        return ApprovalView(job_id=snap.job_id, ticket_id=snap.ticket_id,
                            service=snap.service_name or snap.service_hash, gate=gate.value,
                            waiting_since=snap.waiting_since,
                            requester=self.source.requester(snap.details), facts=facts,
                            preview=preview, deadline=None if timeout is None or
                            snap.waiting_since is None else snap.waiting_since + timeout)


def rule_problem(rule: ApprovalRule) -> str:
    """Why a rule cannot be kept, in words ("" when it can)."""
    if not rule.service.strip():
        return "a rule needs the service (its name or hash, or the vantage6 image)"
    if rule.gate not in RULE_GATES:
        return f'a rule\'s gate is "run", "release" or "both", not {rule.gate!r}'
    if rule.until:
        try:
            dt.date.fromisoformat(rule.until)
        except ValueError:
            return f"{rule.until!r} is not a date like 2027-06-30"
    return ""


def _via(via: str) -> str:
    if via not in VIAS_BY_HAND:
        raise EngineError(f'a decision comes via "window" or "cli", not {via!r}')
    return via


def _job_paths(snap: JobSnapshot) -> JobPaths:
    from dss_console.core.command import JobPaths

    workdir = Path(snap.workdir)
    input_dir = workdir / INPUT_DIR
    return JobPaths(ticket_id=snap.ticket_id, service_name=snap.service_name,
                    service_hash=snap.service_hash, workdir=workdir, input_dir=input_dir,
                    workspace=find_input_workspace(input_dir, snap.ticket_id),
                    result=workdir / "result.itksnap", engine_dir=workdir / ENGINE_DIR)
