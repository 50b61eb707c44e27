"""The gates inside one job's execution (docs/gate-plan.md §1.2): the run gate between the
inputs and the command, the release gate between the result's calls and their sending.

:class:`JobGates` is mixed into :class:`~dss_console.engine.jobs.JobExecution`; at a gate
without a decision the job is journaled as waiting and its thread returns: nothing runs,
polls or waits for it until a decision starts a new execution (engine/decisions.py).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from dss_console.core.interfaces import OutboxCall, Source
from dss_console.engine.events import JobSnapshot
from dss_console.engine.gate import (
    ApprovalRule,
    Decision,
    Gate,
    approved,
    awaiting_entry,
    decision_entry,
    gates,
    inputs_digest,
    local_user,
    matching_rule,
    with_decision,
)
from dss_console.engine.settings import ServiceCommand
from dss_console.engine.states import JobState

if TYPE_CHECKING:
    from collections.abc import Sequence

    from dss_console.core.command import JobPaths
    from dss_console.engine.jobs import JobContext
    from dss_console.engine.ledger import LedgerEntry


class JobGates:
    """The gate steps of one job; the attributes are :class:`JobExecution`'s."""

    ctx: JobContext
    job_id: int
    command: ServiceCommand | None
    source: Source
    # The operator's own decision that started this execution (Run by hand, an operator's
    # result): recorded when the job reaches that gate instead of waiting there.
    operator_decision: Decision | None

    if TYPE_CHECKING:
        @property
        def snapshot(self) -> JobSnapshot: ...
        def paths(self) -> JobPaths: ...
        def _transition(self, state: JobState, reason: str | None = None,
                        calls: list[OutboxCall] | None = None, *, check: bool = True,
                        drop_final: bool = False, hold: bool = False,
                        drop_held: bool = False, release_held: bool = False,
                        ledger: Sequence[LedgerEntry] = (), **fields: object) -> None: ...
        def _put(self, calls: list[OutboxCall]) -> None: ...

    def _gated(self, gate: Gate) -> bool:
        return self.command is not None and gate in gates(self.command.approve)

    def holds_reports(self) -> bool:
        """What the command reports that would leave (log lines, attachments, the output's
        copy) is held for the release gate, unless the release was decided already."""
        if not self._gated(Gate.RELEASE):
            return False
        snap = self.snapshot
        if approved(snap.decision, Gate.RELEASE):
            return False
        own = self.operator_decision
        if own is not None and own.gate is Gate.RELEASE:
            return False
        return self._matching_rule(snap, Gate.RELEASE) is None

    def _decide_by_rule_or_operator(self, snap: JobSnapshot, gate: Gate,
                                    digest: str = "") -> Decision | None:
        """The decision this gate gets without waiting: the operator's own (Run by hand),
        else a rule's; None: it waits for a person."""
        own = self.operator_decision
        if own is not None and own.gate is gate:
            return Decision(gate, own.verdict, own.via, user=own.user, at=time.time(),
                            inputs_sha256=digest)
        rule = self._matching_rule(snap, gate)
        if rule is None:
            return None
        verdict = "approve" if gate is Gate.RUN else "release"
        return Decision(gate, verdict, "rule", user=rule.added_by or local_user(),
                        rule=rule.rule_id, at=time.time(), inputs_sha256=digest)

    def _matching_rule(self, snap: JobSnapshot, gate: Gate) -> ApprovalRule | None:
        requester = self.source.requester(snap.details)
        keys = [snap.service_name, snap.service_hash,
                self.command.key if self.command is not None else ""]
        return matching_rule(self.ctx.approval_rules, keys,
                             requester.key if requester is not None else None, gate)

    def _record(self, snap: JobSnapshot, decision: Decision) -> None:
        self.ctx.journal.update_job(
            self.job_id, decision=with_decision(snap.decision, decision),
            ledger=[decision_entry(decision, self.source.requester(snap.details))])

    def _pass_run_gate(self) -> bool:
        """True: the command may run now. False: the job waits for approval (journaled)."""
        if not self._gated(Gate.RUN):
            return True
        snap = self.snapshot
        digest = inputs_digest(self.paths().input_dir, snap.details)
        record = snap.decision.get(Gate.RUN.value)
        if approved(snap.decision, Gate.RUN):
            bound = record.get("inputs_sha256") if isinstance(record, dict) else None
            if not bound or bound == digest:
                return True
            self._await(Gate.RUN, "inputs changed since approval; approve again",
                        decision={k: v for k, v in snap.decision.items()
                                  if k != Gate.RUN.value})
            return False
        decided = self._decide_by_rule_or_operator(snap, Gate.RUN, digest)
        if decided is not None:
            self._record(snap, decided)
            return True
        self._await(Gate.RUN, "waiting for the operator's approval")
        return False

    def _await(self, gate: Gate, reason: str, **fields: Any) -> None:
        state = JobState.AWAITING_APPROVAL if gate is Gate.RUN else JobState.AWAITING_RELEASE
        requester = self.source.requester(self.snapshot.details)
        self._transition(state, reason, calls=self.source.waiting_calls(gate.value),
                         check=False, waiting_since=time.time(),
                         ledger=[awaiting_entry(gate, requester)], **fields)

    def _hold_for_release(self, calls: list[OutboxCall]) -> bool:
        """True: the result's calls were held for the operator's release (journaled; the job
        waits). False: they go now (no release gate, or it was decided)."""
        if not self._gated(Gate.RELEASE):
            return False
        snap = self.snapshot
        if approved(snap.decision, Gate.RELEASE):
            return False
        decided = self._decide_by_rule_or_operator(snap, Gate.RELEASE)
        if decided is not None:
            self._record(snap, decided)
            return False
        # The requester reads that the result waits (sent now); the result's own calls are
        # held in the same transaction as the state.
        self._put(self.source.waiting_calls(Gate.RELEASE.value))
        self._transition(JobState.AWAITING_RELEASE, "the result waits for the operator's "
                         "release", calls=calls, hold=True, progress=1.0,
                         waiting_since=time.time(),
                         ledger=[awaiting_entry(Gate.RELEASE,
                                                self.source.requester(snap.details))])
        return True
