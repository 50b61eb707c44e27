"""The operator's gate below the engine (issue 20 §1, §3): states, the journal's held calls
and decisions (an older journal opens with its jobs), settings and rules."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from dss_console.engine.gate import ApprovalRule, Gate, gates, matching_rule
from dss_console.engine.journal import DROPPED, HELD, PENDING, SCHEMA, Journal
from dss_console.engine.settings import SettingsError, load_settings, save_settings
from dss_console.engine.states import ALLOWED, TERMINAL, WAITING, JobState, check_transition


def test_states_allow_the_gates() -> None:
    for before in (JobState.CLAIMED, JobState.DOWNLOADING, JobState.INTERRUPTED,
                   JobState.BLOCKED, JobState.FAILED, JobState.CANCELLED):
        check_transition(before, JobState.AWAITING_APPROVAL)
    assert ALLOWED[JobState.AWAITING_APPROVAL] == {
        JobState.DOWNLOADING, JobState.RUNNING, JobState.BLOCKED, JobState.FAILED,
        JobState.CANCELLED}
    check_transition(JobState.RUNNING, JobState.AWAITING_RELEASE)
    assert ALLOWED[JobState.AWAITING_RELEASE] == {JobState.UPLOADING, JobState.FAILED,
                                                  JobState.CANCELLED}
    for state in WAITING:
        assert state.is_waiting and not state.is_active and state not in TERMINAL
    with pytest.raises(Exception, match="awaiting_release to running"):
        check_transition(JobState.AWAITING_RELEASE, JobState.RUNNING)


def _job(journal: Journal) -> int:
    return journal.create_job(source="s", ticket_id=7, service_hash="h", service_name="n",
                              instance="i", workdir="/w")


def test_held_calls_wait_in_order_until_released(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    job = _job(journal)
    journal.transition(job, JobState.RUNNING)
    journal.enqueue(job, "log", {"level": "info", "message": "one", "ticket": 7}, held=True)
    journal.transition(job, JobState.AWAITING_RELEASE, calls=[
        ("upload", {"path": "/r", "name": "r", "final": True, "ticket": 7}),
        ("finish", {"outcome": "completed", "reason": "", "final": True, "ticket": 7})],
        hold=True, waiting_since=123.0)
    snap = journal.job(job)
    assert snap.owed == 0 and snap.waiting_since == 123.0
    assert journal.jobs_with_pending() == [] and journal.next_pending(job) is None
    assert [i.state for i in journal.outbox_items(job)] == [HELD] * 3
    released = journal.release(job, JobState.UPLOADING, "released")
    assert [i.kind for i in released] == ["log", "upload", "finish"]
    assert [i.state for i in journal.outbox_items(job)] == [PENDING] * 3
    assert journal.job(job).waiting_since is None
    assert journal.next_pending(job).kind == "log"  # type: ignore[union-attr]
    with pytest.raises(Exception, match="uploading to uploading"):
        journal.release(job, JobState.UPLOADING)


def test_a_rejected_release_drops_what_was_held(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    job = _job(journal)
    journal.transition(job, JobState.RUNNING)
    journal.transition(job, JobState.AWAITING_RELEASE, calls=[("upload", {"ticket": 7})],
                       hold=True)
    journal.transition(job, JobState.FAILED, "rejected", calls=[("finish", {"ticket": 7})],
                       drop_held=True)
    assert [(i.kind, i.state) for i in journal.outbox_items(job)] == [
        ("upload", DROPPED), ("finish", PENDING)]


def test_an_older_journal_opens_with_its_jobs(tmp_path: Path) -> None:
    """A journal of the version before the gate (no waiting_since, decision, held calls,
    ledger tables) opens, keeps its jobs and calls, and can hold a job at a gate."""
    path = tmp_path / "old.sqlite3"
    old_schema = SCHEMA.split("CREATE TABLE IF NOT EXISTS ledger_queue")[0]
    with sqlite3.connect(path) as db:
        db.executescript(old_schema)
        for column in ("details TEXT", "execution TEXT"):
            db.execute(f"ALTER TABLE jobs ADD COLUMN {column}")
        db.execute("INSERT INTO jobs (source, ticket_id, service_hash, service_name, "
                   "instance, state, workdir, updated_at, claimed_at) VALUES "
                   "('s', 41, 'h', 'n', 'i', 'claimed', '/w', 1.0, 1.0)")
        db.execute("INSERT INTO outbox (job_id, kind, payload, created_at) VALUES "
                   "(1, 'log', '{\"level\": \"info\", \"message\": \"m\", \"ticket\": 41}', 1.0)")
    journal = Journal(path)
    (snap,) = journal.jobs()
    assert snap.ticket_id == 41 and snap.owed == 1
    assert snap.waiting_since is None and snap.decision == {}
    journal.transition(snap.job_id, JobState.AWAITING_APPROVAL, waiting_since=5.0,
                       decision={"run": {"verdict": "approve"}})
    assert journal.jobs(states=WAITING, waiting_before=6.0)[0].decision == {
        "run": {"verdict": "approve"}}
    assert journal.jobs(states=WAITING, waiting_before=4.0) == []


def test_rules_match_service_requester_gate_and_date() -> None:
    today = dt.date(2027, 1, 10)
    rules = [ApprovalRule(service="avg", requester="user:7@org:3", gate="run",
                          until="2027-01-09", id="old"),
             ApprovalRule(service="avg", requester="user:7@org:3", gate="both", id="alice"),
             ApprovalRule(service="seg", id="anyone")]
    assert matching_rule(rules, ["avg"], "user:7@org:3", Gate.RUN, today).id == "alice"
    assert matching_rule(rules, ["avg"], "user:8@org:3", Gate.RUN, today) is None
    assert matching_rule(rules, ["x", "seg"], None, Gate.RUN, today).id == "anyone"
    assert matching_rule(rules, ["seg"], None, Gate.RELEASE, today) is None
    assert gates("both") == {Gate.RUN, Gate.RELEASE} and gates("none") == frozenset()


def test_a_saved_rule_keeps_the_files_comments(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text("# my worker\nconcurrency = 2  # two at a time\n\n"
                    '[services."Seg"]\ncommand = "seg {workspace} {result}"  # keep me\n'
                    'approve = "both"\n')
    settings = load_settings(path)
    assert settings.command_for("Seg", "0" * 40).approve == "both"  # type: ignore[union-attr]
    rule = ApprovalRule(service="Seg", gate="both", until="2027-06-30", id="r1")
    save_settings(dataclasses.replace(settings, approval_rules=[rule],
                                      approval_timeout=7200.0, approval_queue=3), path)
    text = path.read_text()
    assert "# my worker" in text and "# two at a time" in text and "# keep me" in text
    assert 'approval_timeout = "2h"' in text and "[[approval_rules]]" in text
    assert "until = 2027-06-30" in text  # a TOML date, as an operator writes one
    again = load_settings(path)
    assert again.approval_rules == [rule] and again.approval_queue == 3
    assert again.approval_bound == 3
    save_settings(dataclasses.replace(again, approval_rules=[]), path)
    assert "[[approval_rules]]" not in path.read_text() and "# keep me" in path.read_text()


@pytest.mark.parametrize(("text", "words"), [
    ('[services."S"]\ncommand = "x {result}"\napprove = "maybe"\n',
     'services."S".approve: must be "none" | "run" | "release" | "both"'),
    ("[[approval_rules]]\ngate = \"run\"\n", "approval_rules[0]: missing 'service'"),
    ('[[approval_rules]]\nservice = "S"\nuntil = "next week"\n',
     "approval_rules[0].until: 'next week' is not a date"),
    ('[[approval_rules]]\nservice = "S"\ngate = "always"\n', "approval_rules[0].gate"),
    ('[[approval_rules]]\nservice = "S"\nid = "a"\n[[approval_rules]]\nservice = "T"\n'
     'id = "a"\n', "two rules have the id 'a'"),
    ('approval_queue = 0\n', "approval_queue: must be at least 1"),
    ('approval_timeout = "soon"\n', "approval_timeout"),
    ('[v6.algorithms."img"]\ncommand = "run {input} {output}"\napprove = "yes"\n',
     'v6.algorithms.img.approve'),
])
def test_gate_settings_errors_name_the_key(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    with pytest.raises(SettingsError) as caught:
        load_settings(path)
    assert words in str(caught.value), str(caught.value)
