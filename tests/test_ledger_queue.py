"""The ledger's journal-first queue (issue 20, part 6): a step's record is queued in the same
transaction as the step, or not at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dss_console.engine.journal import Journal
from dss_console.engine.ledger import LedgerEntry, LedgerHead, canonical, ledger_path
from dss_console.engine.states import JobState, TransitionError

SOURCE = "https://dss.example.org#node-3"


def new_job(journal: Journal, ledger: tuple[LedgerEntry, ...] = ()) -> int:
    return journal.create_job(source=SOURCE, ticket_id=12, service_hash="abc",
                              service_name="seg", instance="i1", workdir="/w/t12",
                              ledger=ledger)


def test_a_transition_queues_its_records_with_the_job_filled_in(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    woken: list[int] = []
    journal.on_ledger_queued(lambda: woken.append(1))
    job = new_job(journal, ledger=(LedgerEntry("claim", {"task": 4}),))
    journal.transition(job, JobState.DOWNLOADING,
                       ledger=[LedgerEntry("decision", {"gate": "run"},
                                           by={"user": "jdoe", "via": "cli", "rule": None})])
    rows = journal.queued_ledger(SOURCE)
    assert [r.body["kind"] for r in rows] == ["claim", "decision"]
    assert rows[0].body["job"] == {"local": job, "id": 12, "attempt": 1}
    assert rows[0].body["service"] == {"name": "seg", "key": "abc"}
    assert rows[0].body["instance"] == "i1" and rows[0].body["source"] == SOURCE
    assert rows[1].body["by"] == {"user": "jdoe", "via": "cli", "rule": None}
    assert rows[0].id < rows[1].id and len(woken) == 2


def test_a_refused_transition_queues_nothing(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    job = new_job(journal)
    with pytest.raises(TransitionError):
        journal.transition(job, JobState.SUCCEEDED, ledger=[LedgerEntry("end")])
    with pytest.raises(ValueError):  # not JSON: refused in the step's own transaction
        journal.transition(job, JobState.DOWNLOADING,
                           ledger=[LedgerEntry("inputs", {"x": float("nan")})])
    assert journal.queued_ledger(SOURCE) == []
    assert journal.job(job).state is JobState.CLAIMED


def test_records_without_a_transition_and_the_head(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    job = new_job(journal)
    journal.queue_ledger([LedgerEntry("delivered", job=job),
                          LedgerEntry("rule", {"added": "r1"}, service={"name": "seg"})],
                         source=SOURCE, instance="i1")
    rows = journal.queued_ledger(SOURCE)
    assert rows[0].body["job"]["local"] == job
    assert "job" not in rows[1].body and rows[1].body["service"] == {"name": "seg"}
    journal.ledger_written(SOURCE, [rows[0].id], LedgerHead(1, "h", 10))
    assert [r.id for r in journal.queued_ledger(SOURCE)] == [rows[1].id]
    assert journal.ledger_head(SOURCE) == LedgerHead(1, "h", 10)
    assert journal.queued_ledger_count(SOURCE) == 1


def test_canonical_bytes_and_where_the_file_is(tmp_path: Path) -> None:
    assert canonical({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()
    assert json.loads(canonical({"b": [1, 2]})) == {"b": [1, 2]}
    path = ledger_path(tmp_path, SOURCE)
    assert path.parent == tmp_path / "ledger"
    assert path.name.startswith("dss.example.org-") and path.suffix == ".jsonl"
    assert ledger_path(tmp_path, SOURCE + "x") != path
