"""The operator's gate (issue 20; docs/gate-plan.md §1): which gates a service's jobs pass
(``approve = "none" | "run" | "release" | "both"``), the rules that decide by themselves,
and how a decision is recorded.

A gated job waits in AWAITING_APPROVAL (before its command runs) or AWAITING_RELEASE (before
its result leaves) with no thread, timer or server call of its own: a decision arrives as a
request (the window, ``dss-console approvals``) and starts a fresh execution of the job
(engine/decisions.py). Nothing here names a source or an executor.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from dss_console.core.presentation import Requester
from dss_console.engine.ledger import LedgerEntry, LedgerValue

APPROVE_CHOICES = ("none", "run", "release", "both")
VERDICTS = ("approve", "reject", "release", "timeout")
VIAS = ("window", "cli", "rule", "timeout")
RULE_GATES = ("run", "release", "both")


class Gate(str, Enum):
    RUN = "run"          # before the command runs (its inputs fetched, to be inspected)
    RELEASE = "release"  # before anything of its result leaves


def gates(approve: str) -> frozenset[Gate]:
    """The gates a service's ``approve`` setting puts its jobs through."""
    return {"none": frozenset(), "run": frozenset({Gate.RUN}),
            "release": frozenset({Gate.RELEASE}),
            "both": frozenset({Gate.RUN, Gate.RELEASE})}.get(approve, frozenset())


@dataclass(frozen=True)
class ApprovalRule:
    """"Always approve this requester for this service" (``[[approval_rules]]``).

    ``service``: a service's name or key as the settings name it (a vantage6 image);
    ``requester``: a requester's key (``user:7@org:3``), or "" for anyone (a source whose
    provider API names no requester, DSS, matches by service only); ``gate``: "run",
    "release" or "both"; ``until``: the last day it holds (ISO date), or "" for always."""

    service: str
    requester: str = ""
    gate: str = "run"
    until: str = ""
    id: str = ""         # stable, named by every decision it makes; derived when not given
    added_by: str = ""
    added: str = ""      # when (UTC, ISO)

    @property
    def rule_id(self) -> str:
        if self.id:
            return self.id
        text = f"{self.service}\0{self.requester}\0{self.gate}\0{self.until}".encode()
        return "rule-" + hashlib.sha256(text).hexdigest()[:8]

    def covers(self, gate: Gate) -> bool:
        return self.gate in ("both", gate.value)

    def valid_on(self, today: dt.date) -> bool:
        if not self.until:
            return True
        try:
            return today <= dt.date.fromisoformat(self.until)
        except ValueError:
            return False

    def describe(self) -> str:
        who = f"requester {self.requester}" if self.requester else "any requester"
        until = f" until {self.until}" if self.until else ""
        return f"{self.rule_id}: {self.gate} of {self.service} for {who}{until}"


def matching_rule(rules: Iterable[ApprovalRule], service_keys: Iterable[str],
                  requester: str | None, gate: Gate,
                  today: dt.date | None = None) -> ApprovalRule | None:
    """The first rule that decides this gate of a job of the service (named by any of
    ``service_keys``: its name, its key) for this requester (None: the source names none;
    only a rule for anyone matches), valid today."""
    day = today or dt.date.today()
    keys = {k for k in service_keys if k}
    for rule in rules:
        if rule.service not in keys or not rule.covers(gate) or not rule.valid_on(day):
            continue
        if rule.requester and rule.requester != (requester or ""):
            continue
        return rule
    return None


def local_user() -> str:
    """Who decided: the local account running the engine (the channel admits only it)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return "unknown"


@dataclass(frozen=True)
class Decision:
    """One decision at one gate: ``verdict`` approve | reject | release | timeout; ``via``
    window | cli | rule | timeout; ``rule``: the rule's id when a rule decided."""

    gate: Gate
    verdict: str
    via: str
    user: str = ""
    rule: str = ""
    message: str = ""
    at: float = 0.0
    inputs_sha256: str = ""

    def record(self) -> dict[str, Any]:
        """As journaled (job.decision[gate]); the message stays in the job's reason."""
        return {"verdict": self.verdict, "via": self.via, "user": self.user,
                "rule": self.rule or None, "at": self.at or time.time(),
                **({"inputs_sha256": self.inputs_sha256} if self.inputs_sha256 else {})}


def with_decision(decisions: Mapping[str, Any], decision: Decision) -> dict[str, Any]:
    """The job's decisions with this one recorded under its gate."""
    return {**decisions, decision.gate.value: decision.record()}


def approved(decisions: Mapping[str, Any], gate: Gate) -> bool:
    """Whether the job's journaled decisions let it through ``gate``."""
    record = decisions.get(gate.value)
    return isinstance(record, Mapping) and record.get("verdict") in ("approve", "release")


def inputs_digest(input_dir: Path, details: Mapping[str, Any]) -> str:
    """What an approval binds to: the source's own hash of the inputs where it journaled
    one (``input_sha256``: a vantage6 run's input; its container token changes with every
    fetch), else the SHA-256 of the fetched files (names and contents, in name order)."""
    given = details.get("input_sha256")
    if isinstance(given, str) and given:
        return given
    digest = hashlib.sha256()
    if input_dir.is_dir():
        for path in sorted(p for p in input_dir.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(input_dir)).encode() + b"\0")
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
            digest.update(b"\0")
    return digest.hexdigest()



# -- what the ledger records of the gate (engine/ledger.py; journal first: each entry is
# queued in the transaction of the step it records). Never a message or an argument value.
def _requester(requester: Requester | None) -> dict[str, LedgerValue] | None:
    if requester is None:
        return None
    return {"key": requester.key, "user": requester.user, "org": requester.org}


def awaiting_entry(gate: Gate, requester: Requester | None) -> LedgerEntry:
    return LedgerEntry("awaiting", data={"gate": gate.value}, requester=_requester(requester))


def decision_entry(decision: Decision, requester: Requester | None) -> LedgerEntry:
    data: dict[str, LedgerValue] = {"gate": decision.gate.value, "verdict": decision.verdict}
    if decision.inputs_sha256:
        data["inputs_sha256"] = decision.inputs_sha256
    return LedgerEntry("decision", data=data, requester=_requester(requester),
                       by={"user": decision.user or None, "via": decision.via,
                           "rule": decision.rule or None})


def rule_entry(rule: ApprovalRule, change: str, user: str, via: str) -> LedgerEntry:
    """A rule ``added`` or ``revoked`` (bound to no job: the caller names the source)."""
    return LedgerEntry("rule", data={"change": change, "rule": rule.rule_id,
                                     "gate": rule.gate, "requester": rule.requester or None,
                                     "until": rule.until or None},
                       by={"user": user, "via": via, "rule": rule.rule_id},
                       service={"name": rule.service})
