"""The vantage6 audit: records from job snapshots, CSV/JSON, `dss-console v6 audit` on a real
journal, and the console's audit dialog on real Qt widgets."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from dss_console.commands.errors import CliError
from dss_console.commands.v6_audit import add_audit_parser
from dss_console.engine.engine import journal_path
from dss_console.engine.events import JobSnapshot
from dss_console.engine.journal import Journal
from dss_console.engine.states import JobState
from dss_console.sources.v6.audit import (
    CSV_FIELDS,
    audit_records,
    format_input,
    format_requester,
    load_journal_jobs,
    records_to_csv,
    records_to_json,
)

NOW = 1_760_000_000.0
SERVER = "https://v6.example.org/api"
OTHER = "https://other.example.org/api"
SHA = "ab" * 32


def details(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict(
        task_id=40, task_name="mean age", job_id=40, parent_id=None, init_org_id=2,
        init_org="research", init_user_id=7, init_user="alice", databases=["default"],
        collaboration_id=1, input_sha256=SHA,
        input_summary={"method": "central_mean", "kwargs": ["column"], "args": 0,
                       "bytes": 61})
    base.update(changes)
    return base


def snap(job_id: int, run_id: int, **changes: Any) -> JobSnapshot:
    base: dict[str, Any] = dict(
        job_id=job_id, source=f"{SERVER}#node-1", ticket_id=run_id,
        service_hash="harbor.example.org/algo/mean:1.0", service_name="mean",
        state=JobState.SUCCEEDED, progress=1.0, instance="host-a", reason=None,
        workdir=f"/secret/workroot/run_{run_id}", exit_code=0,
        claimed_at=NOW - 1000 + job_id, started_at=NOW - 900 + job_id,
        finished_at=NOW - 800 + job_id, updated_at=NOW - 800 + job_id, inputs_ready=True,
        attempt=1, owed=0, details=details())
    base.update(changes)
    return JobSnapshot(**base)


def dss_ticket(job_id: int) -> JobSnapshot:
    return snap(job_id, 500 + job_id, source="https://dss.example.org", details={})


# -- records ----------------------------------------------------------------------------


def test_records_keep_only_v6_runs_one_per_run_newest_first() -> None:
    old_try = snap(1, 10, state=JobState.FAILED, reason="command exited with code 1")
    jobs = [dss_ticket(2), old_try, snap(3, 11), snap(4, 10, attempt=2), snap(5, 12),
            snap(6, 10, source=f"{OTHER}#node-1")]
    records = audit_records(jobs, now=NOW)
    assert [(r.server, r.run_id) for r in records] == [
        (OTHER, 10), (SERVER, 12), (SERVER, 10), (SERVER, 11)]
    # The run's newest journal job speaks for it, whatever the order given.
    assert records[2].local_job == 4 and records[2].outcome == "completed"
    assert audit_records(reversed(jobs), now=NOW) == records
    assert audit_records([dss_ticket(1)]) == []


def test_record_fields_from_the_run_details() -> None:
    (record,) = audit_records([snap(1, 10, exit_code=0)], now=NOW)
    assert (record.run_id, record.task_id, record.task_name, record.job_id) == (
        10, 40, "mean age", 40)
    assert (record.init_org, record.init_org_id, record.init_user, record.init_user_id) == (
        "research", 2, "alice", 7)
    assert record.node_id == 1 and record.server == SERVER
    assert record.image == "harbor.example.org/algo/mean:1.0"
    assert record.databases == ("default",)
    assert (record.input_sha256, record.input_method, record.input_kwargs) == (
        SHA, "central_mean", ("column",))
    assert record.duration == 100.0 and not record.live
    assert record.outcome == record.outcome_text == "completed"
    assert format_requester(record) == "research / alice"
    assert format_input(record) == "central_mean(column)"


def test_outcome_in_words() -> None:
    cases = {
        "failed": snap(1, 1, state=JobState.FAILED, reason="command exited with code 2",
                       exit_code=2),
        "cancelled": snap(2, 2, state=JobState.CANCELLED, reason="cancelled by the operator"),
        "not allowed": snap(3, 3, state=JobState.FAILED, started_at=None,
                            reason="this image is not configured on this node (any more)"),
        "interrupted": snap(4, 4, state=JobState.INTERRUPTED, finished_at=None,
                            updated_at=NOW - 850),
        "running": snap(5, 5, state=JobState.RUNNING, finished_at=None, started_at=NOW - 30),
        "waiting": snap(6, 6, state=JobState.CLAIMED, started_at=None, finished_at=None),
        "recorded": snap(7, 7, state=JobState.FAILED,
                         details=details(outcome="crashed"), reason="exit 3"),
    }
    records = {r.run_id: r for r in audit_records(cases.values(), now=NOW)}
    assert records[1].outcome == "failed"
    assert records[1].outcome_text == "failed: command exited with code 2"
    assert records[1].exit_code == 2
    # vantage6 has no cancelled status: failed on the server; the state tells them apart.
    assert (records[2].outcome, records[2].state) == ("failed", "cancelled")
    assert records[3].outcome == "not allowed" and records[3].duration is None
    # Interrupted: the clock stops at the last update instead of counting on.
    assert records[4].outcome == "interrupted" and records[4].duration == 50.0 - 4
    assert not records[4].live
    assert records[5].outcome == "running" and records[5].live
    assert records[5].duration == 30.0 and records[5].duration_at(NOW + 10) == 40.0
    assert records[6].outcome == "waiting" and records[6].duration is None
    assert records[7].outcome == "crashed"


def test_input_before_fetch_and_not_json() -> None:
    before = snap(1, 1, details=details(input_sha256=None, input_summary=None))
    raw = snap(2, 2, details=details(input_summary={"format": "not JSON", "bytes": 9}))
    positional = snap(3, 3, details=details(
        input_summary={"method": "partial", "kwargs": ["a", "b"], "args": 2, "bytes": 40}))
    unnamed = snap(4, 4, details=details(init_org=None, init_user=None))
    empty = snap(5, 5, details={})
    a_list = snap(6, 6, details=details(input_summary={"format": "list", "bytes": 12}))
    records = {r.run_id: r for r in audit_records(
        [before, raw, positional, unnamed, empty, a_list], now=NOW)}
    assert format_input(records[6]) == "JSON list (12 bytes)"
    assert format_input(records[1]) == "—" and records[1].input_sha256 is None
    assert format_input(records[2]) == "not JSON (9 bytes)"
    assert format_input(records[3]) == "partial(2 positional, a, b)"
    assert format_requester(records[4]) == "org 2 / user 7"
    assert format_requester(records[5]) == "—" and records[5].task_id is None


def test_csv_has_every_field_and_no_secret_or_path() -> None:
    evil = snap(2, 11, details=details(task_name="=HYPERLINK(\"http://x\")",
                                       databases=["default", "extra"]))
    records = audit_records([snap(1, 10), evil], now=NOW)
    out = io.StringIO(newline="")
    records_to_csv(records, out, now=NOW)
    text = out.getvalue()
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert tuple(rows[0]) == CSV_FIELDS
    assert [row["run_id"] for row in rows] == ["11", "10"]
    assert rows[0]["task_name"].startswith("'=")  # shown by a spreadsheet, never evaluated
    assert rows[0]["databases"] == "default;extra"
    assert rows[1]["input_sha256"] == SHA and rows[1]["input_kwargs"] == "column"
    assert rows[1]["started_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                  time.gmtime(NOW - 899))
    assert rows[1]["duration_s"] == "100.0" and rows[1]["outcome"] == "completed"
    assert "/secret/workroot" not in text and "workdir" not in text


def test_json_lists_records_with_utc_times() -> None:
    running = snap(2, 11, state=JobState.RUNNING, finished_at=None, started_at=NOW - 5,
                   exit_code=None)
    out = io.StringIO()
    records_to_json(audit_records([snap(1, 10), running], now=NOW), out, now=NOW + 5)
    data = json.loads(out.getvalue())
    assert [row["run_id"] for row in data] == [11, 10]
    assert data[0]["duration_s"] == 10.0 and data[0]["outcome"] == "running"
    assert data[1]["databases"] == ["default"] and data[1]["init_user"] == "alice"
    assert data[1]["finished_at"].endswith("Z") and data[1]["exit_code"] == 0
    assert list(data[1]) == list(CSV_FIELDS)
    assert "/secret/workroot" not in out.getvalue()


# -- the journal and the command ------------------------------------------------------


def _journal(data: Path) -> Path:
    """A real journal: three v6 runs on two nodes of two servers, and one DSS ticket."""
    path = journal_path(data)
    journal = Journal(path)
    try:
        done = journal.create_job(source=f"{SERVER}#node-1", ticket_id=10,
                                  service_hash="harbor.example.org/algo/mean:1.0",
                                  service_name="mean", instance="host-a", workdir="/w/10",
                                  details=details())
        journal.transition(done, JobState.RUNNING)
        journal.transition(done, JobState.UPLOADING, exit_code=0)
        journal.transition(done, JobState.SUCCEEDED)
        failed = journal.create_job(source=f"{SERVER}#node-2", ticket_id=11,
                                    service_hash="harbor.example.org/algo/mean:1.0",
                                    service_name="mean", instance="host-a", workdir="/w/11",
                                    details=details(task_id=41, task_name="\x1b[31mred",
                                                    init_user="bob"))
        journal.transition(failed, JobState.RUNNING)
        journal.transition(failed, JobState.FAILED, "command exited with code 3", exit_code=3)
        old = journal.create_job(source=f"{OTHER}#node-1", ticket_id=12,
                                 service_hash="harbor.example.org/algo/old:1", service_name="old",
                                 instance="host-a", workdir="/w/12",
                                 details=details(task_id=1, task_name="old task"))
        journal.transition(old, JobState.FAILED, "this image is not configured on this node")
        journal.create_job(source="https://dss.example.org", ticket_id=99, service_hash="abc",
                           service_name="Demo", instance="host-a", workdir="/w/99")
    finally:
        journal.close()
    # Claimed 40 days ago (the journal has no call to change a claim time).
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE jobs SET claimed_at=claimed_at-40*86400 WHERE ticket_id=12")
    db.close()
    return path


def test_server_filter_takes_either_generations_api_path(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 5.x node records its runs under ``…/hq``: --server finds them by the server's root
    or its /hq URL, and a 4.x server's runs by its root or /api, never each other's host."""
    path = journal_path(tmp_path)
    journal = Journal(path)
    try:
        for ticket, source in ((20, "https://hq.example.org/hq#node-3"),
                               (21, f"{SERVER}#node-1")):
            journal.create_job(source=source, ticket_id=ticket, service_hash="img:1",
                               service_name="img", instance="host-a", workdir=f"/w/{ticket}",
                               details=details(task_id=ticket))
    finally:
        journal.close()
    data = ["--data-dir", str(tmp_path), "--json"]
    for server, expected in (("https://hq.example.org/hq", [20]),
                             ("https://hq.example.org/", [20]),
                             (SERVER, [21]), (SERVER.removesuffix("/api"), [21])):
        _, out, _ = _audit(capsys, *data, "--server", server)
        assert [row["run_id"] for row in json.loads(out)] == expected, server


def _audit(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="dss-console v6")
    add_audit_parser(parser.add_subparsers(dest="v6_verb"))
    args = parser.parse_args(["audit", *argv])
    code = args.handler(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_load_journal_jobs_reads_without_writing(tmp_path: Path) -> None:
    path = _journal(tmp_path)
    # A journal of an older version: no details column. Reading must not add it.
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE jobs DROP COLUMN details")
    db.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    jobs = load_journal_jobs(path)
    assert sorted(job.ticket_id for job in jobs) == [10, 11, 12]  # the DSS ticket is left out
    assert all(job.details == {} for job in jobs)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    db = sqlite3.connect(path)
    columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    db.close()
    assert "details" not in columns


def test_cli_json_csv_and_filters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _journal(tmp_path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    data = ["--data-dir", str(tmp_path)]

    code, out, _ = _audit(capsys, *data, "--json")
    rows = json.loads(out)
    assert code == 0 and [row["run_id"] for row in rows] == [11, 10, 12]  # newest claim first
    assert rows[1]["init_org"] == "research" and rows[1]["outcome"] == "completed"
    assert rows[0]["outcome"] == "failed" and rows[0]["exit_code"] == 3
    assert rows[2]["outcome"] == "not allowed"

    _, out, _ = _audit(capsys, *data, "--json", "--server", "https://v6.example.org")
    assert [row["run_id"] for row in json.loads(out)] == [11, 10]
    _, out, _ = _audit(capsys, *data, "--json", "--node", "2")
    assert [row["run_id"] for row in json.loads(out)] == [11]
    _, out, _ = _audit(capsys, *data, "--json", "--node", "1", "--server", OTHER)
    assert [row["run_id"] for row in json.loads(out)] == [12]
    _, out, _ = _audit(capsys, *data, "--json", "--since", "30")
    assert [row["run_id"] for row in json.loads(out)] == [11, 10]

    _, out, _ = _audit(capsys, *data, "--csv", "--since", "30")
    rows = list(csv.DictReader(io.StringIO(out, newline="")))
    assert [row["run_id"] for row in rows] == ["11", "10"]
    assert rows[0]["init_user"] == "bob" and rows[0]["reason"] == "command exited with code 3"
    assert rows[0]["task_name"] == "?[31mred" and "\x1b" not in out
    assert "/w/1" not in out
    # Read-only: the journal is as it was.
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_cli_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _journal(tmp_path)
    code, out, _ = _audit(capsys, "--data-dir", str(tmp_path))
    lines = out.splitlines()
    assert code == 0
    # Runs of several nodes: which node ran each comes first (a run id is per server).
    assert lines[0].split() == ["Node", "Run", "Task", "Requested", "by", "Image",
                                "Databases", "Input", "Outcome", "Started", "Duration",
                                "Reason"]
    assert lines[-1] == "3 runs"
    by_run = {line.split()[3]: line for line in lines[1:-1]}
    assert by_run["12"].startswith("other.example.org node 1 ")
    assert set(by_run) == {"10", "11", "12"}
    assert "research / alice" in by_run["10"] and "completed" in by_run["10"]
    assert f"central_mean(column) sha256:{SHA[:12]}" in by_run["10"]
    assert by_run["11"].rstrip().endswith("command exited with code 3")
    # A terminal escape sequence in a task name never reaches the terminal.
    assert "\x1b" not in out and "41 ?[31mred" in by_run["11"]
    assert "not allowed" in by_run["12"]

    _, out, _ = _audit(capsys, "--data-dir", str(tmp_path), "--node", "2")
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["Run", "Task"]  # one node: no Node column
    assert lines[1].split()[:2] == ["11", "41"] and lines[-1] == "1 run"


def test_cli_node_by_name_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from dss_console.credentials import StoredV6Node, V6CredentialStore

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    _journal(tmp_path)
    V6CredentialStore(use_keyring=False).save_node(StoredV6Node(
        server=SERVER, node="station", api_key="k", private_key_pem=None,
        info={"node_id": 2, "organization_id": 1}))
    _, out, _ = _audit(capsys, "--data-dir", str(tmp_path), "--json", "--node", "station")
    assert [row["run_id"] for row in json.loads(out)] == [11]
    assert "k" not in json.loads(out)[0].values()

    with pytest.raises(CliError, match="no node 'nowhere' logged in here") as error:
        _audit(capsys, "--data-dir", str(tmp_path), "--node", "nowhere")
    assert error.value.code == 2
    with pytest.raises(CliError, match="bad --server"):
        _audit(capsys, "--data-dir", str(tmp_path), "--server", "ftp://x")
    with pytest.raises(SystemExit):
        _audit(capsys, "--data-dir", str(tmp_path), "--since", "0")
    assert "above 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _audit(capsys, "--json", "--csv")


def test_cli_without_a_journal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _audit(capsys, "--data-dir", str(tmp_path / "none"))
    assert code == 0 and out == "no vantage6 runs recorded\n"
    assert "no journal at" in err
    assert not (tmp_path / "none").exists()  # nothing created
    code, out, _ = _audit(capsys, "--data-dir", str(tmp_path / "none"), "--json")
    assert code == 0 and json.loads(out) == []


# -- the dialog -------------------------------------------------------------------------


@pytest.fixture
def dialog(qtbot: Any) -> Any:
    pytest.importorskip("PySide6.QtWidgets")
    from dss_console.sources.v6.window.audit_view import AuditDialog

    view = AuditDialog()
    qtbot.addWidget(view)
    view.set_jobs([
        dss_ticket(1),
        snap(2, 10),
        snap(3, 11, state=JobState.FAILED, reason="command exited with code 2", exit_code=2,
             details=details(task_id=41, task_name="median", init_user="bob")),
        snap(4, 12, state=JobState.RUNNING, finished_at=None, exit_code=None,
             started_at=time.time() - 5, details=details(task_id=42, init_org="hospital")),
    ])
    return view


def _column(view: Any, column: int) -> list[str]:
    proxy = view.proxy
    return [proxy.index(row, column).data() for row in range(proxy.rowCount())]


def test_dialog_rows_sort_and_tooltips(dialog: Any) -> None:
    from PySide6.QtCore import Qt

    from dss_console.sources.v6.window.audit_view import AuditColumn

    assert not dialog.isModal()
    assert dialog.model.rowCount() == 3  # the DSS ticket is not a vantage6 run
    # Newest first: sorted by Started, descending.
    assert _column(dialog, AuditColumn.RUN) == ["12", "11", "10"]
    assert _column(dialog, AuditColumn.REQUESTER) == ["hospital / alice", "research / bob",
                                                      "research / alice"]
    assert _column(dialog, AuditColumn.OUTCOME) == ["running", "failed", "completed"]
    assert _column(dialog, AuditColumn.DURATION)[1:] == ["1:40", "1:40"]
    inputs = _column(dialog, AuditColumn.INPUT)
    assert inputs[0] == f"central_mean(column) · {SHA[:12]}…"
    tip = dialog.proxy.index(0, AuditColumn.INPUT).data(Qt.ItemDataRole.ToolTipRole)
    assert f"SHA-256 {SHA}" in tip and "Keyword arguments: column" in tip
    tip = dialog.proxy.index(1, AuditColumn.OUTCOME).data(Qt.ItemDataRole.ToolTipRole)
    assert "failed: command exited with code 2" in tip and "Exit code 2" in tip

    dialog.table.sortByColumn(int(AuditColumn.TASK), Qt.SortOrder.AscendingOrder)
    assert _column(dialog, AuditColumn.TASK) == ["40 mean age", "41 median", "42 mean age"]
    dialog.table.sortByColumn(int(AuditColumn.RUN), Qt.SortOrder.DescendingOrder)
    assert _column(dialog, AuditColumn.RUN) == ["12", "11", "10"]
    assert dialog.status.text() == "3 runs"

    # Once a second: only the Duration cell of the run under way is repainted.
    changed: list[tuple[int, int, int, int]] = []
    dialog.model.dataChanged.connect(lambda top, bottom, _roles: changed.append(
        (top.row(), bottom.row(), top.column(), bottom.column())))
    dialog.model.tick()
    live = dialog.model.row_of((f"{SERVER}#node-1", 12))
    assert changed == [(live, live, AuditColumn.DURATION, AuditColumn.DURATION)]


def test_dialog_filter_and_updates(dialog: Any) -> None:
    from dss_console.sources.v6.window.audit_view import AuditColumn

    dialog.filter_edit.setText("BOB")
    assert _column(dialog, AuditColumn.RUN) == ["11"]
    dialog.filter_edit.setText(SHA)  # the full digest matches, though the cell shows less
    assert len(_column(dialog, AuditColumn.RUN)) == 3
    dialog.filter_edit.setText("mean 42")  # every word; a number is an id
    assert _column(dialog, AuditColumn.RUN) == ["12"]
    dialog.filter_edit.setText("exited")  # the reason
    assert _column(dialog, AuditColumn.RUN) == ["11"]
    assert dialog.status.text() == "3 runs, 1 shown"
    dialog.filter_edit.clear()

    row = dialog.model.row_of((f"{SERVER}#node-1", 12))
    done = snap(4, 12, state=JobState.SUCCEEDED, updated_at=time.time() + 1)
    stale = snap(4, 12, state=JobState.RUNNING, finished_at=None, updated_at=time.time() - 60)
    dialog.update_jobs([done, dss_ticket(9)])
    dialog.update_jobs([stale])  # read before the last change: must not undo it
    assert dialog.model.row_of((f"{SERVER}#node-1", 12)) == row
    assert dialog.model.record_at(row).outcome == "completed"
    dialog.update_jobs([snap(5, 13)])
    assert dialog.model.rowCount() == 4 and _column(dialog, AuditColumn.RUN)[0] == "13"


def test_dialog_exports_the_rows_shown(dialog: Any, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "audit.csv"
    monkeypatch.setattr(dialog, "_ask_save_path", lambda: target)
    dialog.filter_edit.setText("mean age")
    assert dialog.export_csv() == target
    rows = list(csv.DictReader(target.open(encoding="utf-8", newline="")))
    assert [row["run_id"] for row in rows] == ["12", "10"]  # filtered, in the view's order
    assert rows[1]["input_sha256"] == SHA and "/secret/workroot" not in target.read_text()
    assert f"Exported 2 runs to {target}" in dialog.status.text()

    monkeypatch.setattr(dialog, "_ask_save_path", lambda: None)  # the user cancelled
    assert dialog.export_csv() is None

    from dss_console.sources.v6.window import audit_view

    warnings: list[str] = []
    monkeypatch.setattr(audit_view.QMessageBox, "warning",
                        lambda _parent, _title, text: warnings.append(text))
    monkeypatch.setattr(dialog, "_ask_save_path", lambda: tmp_path / "missing" / "a.csv")
    assert dialog.export_csv() is None
    assert len(warnings) == 1 and "Cannot write" in warnings[0]


def test_dialog_has_a_reason_column_and_escape_closes_it(dialog: Any, qtbot: Any) -> None:
    from PySide6.QtCore import Qt

    from dss_console.sources.v6.window.audit_view import AuditColumn

    title = dialog.model.headerData(int(AuditColumn.REASON), Qt.Orientation.Horizontal)
    assert title == "Reason"
    assert _column(dialog, AuditColumn.REASON) == ["", "command exited with code 2", ""]
    dialog.filter_edit.setText("zzz")
    for widget in (dialog.filter_edit, dialog.table):
        dialog.show()
        qtbot.waitUntil(dialog.isVisible)
        dialog.activateWindow()
        widget.setFocus()
        qtbot.keyClick(widget, Qt.Key.Key_Escape)
        qtbot.waitUntil(lambda: not dialog.isVisible(), timeout=5000)


def test_cli_node_column_shows_the_node_name(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The Node column names the node (as the run recorded it, else as `v6 login` stored
    it), not '127.0.0.1:42227 node 2'."""
    from dss_console.credentials import StoredV6Node, V6CredentialStore

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    journal = Journal(journal_path(tmp_path))
    try:
        for run_id, source, extra in ((20, f"{SERVER}#node-1", {"node": "station-a"}),
                                      (21, f"{OTHER}#node-5", {})):
            journal.create_job(source=source, ticket_id=run_id, service_hash="img:1",
                               service_name="img", instance="host-a", workdir="/w",
                               details=details(**extra))
    finally:
        journal.close()
    V6CredentialStore(use_keyring=False).save_node(StoredV6Node(
        server=OTHER, node="station-b", api_key="k", private_key_pem=None,
        info={"node_id": 5, "organization_id": 1}))
    _, out, _ = _audit(capsys, "--data-dir", str(tmp_path))
    by_run = {line.split()[1]: line for line in out.splitlines()[1:-1]}
    assert by_run["20"].startswith("station-a ")
    assert by_run["21"].startswith("station-b ")
    assert "node 1" not in out and "node 5" not in out


def test_cli_json_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """`v6 audit --json | head -c 100` ends without 'error: Broken pipe'."""
    import os
    import subprocess
    import sys

    journal = Journal(journal_path(tmp_path))
    try:
        for run_id in range(400):  # far more than a pipe's buffer
            journal.create_job(source=f"{SERVER}#node-1", ticket_id=run_id,
                               service_hash="img:1", service_name="img", instance="host-a",
                               workdir="/w", details=details())
    finally:
        journal.close()
    exe = Path(sys.executable).with_name("dss-console")
    reader, writer = os.pipe()
    proc = subprocess.Popen([str(exe), "v6", "audit", "--json", "--data-dir", str(tmp_path)],
                            stdout=writer, stderr=subprocess.PIPE, text=True)
    os.close(writer)
    with os.fdopen(reader, "rb") as head:
        assert head.read(100)  # `head -c 100`: read a little, then go away
    _, err = proc.communicate(timeout=60)
    assert "Broken pipe" not in err and "Traceback" not in err, err
    assert proc.returncode == 0
