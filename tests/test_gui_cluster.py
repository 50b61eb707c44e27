"""Cluster jobs in the console: the Runs on column and the detail pane's SLURM line, on real
widgets (offscreen), fed with engine snapshots."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6.QtWidgets")

from PySide6.QtCore import QModelIndex, Qt, QTimer
from PySide6.QtWidgets import QApplication

from dss_console.engine.events import JobSnapshot
from dss_console.engine.states import JobState
from dss_console.executors.slurm.details import describe
from dss_console.gui import tasks
from dss_console.gui.detail_pane import DetailPane, cluster_clock_text, format_span
from dss_console.gui.jobs_model import (
    JobFilterProxy,
    JobTableModel,
    cluster_times,
)
from dss_console.gui.queue_pane import QueuePane

from gui_columns import col
from test_engine import TAGS

NOW = time.time()


def snap(job_id: int, **changes: Any) -> JobSnapshot:
    base: dict[str, Any] = dict(
        job_id=job_id, source="dss", ticket_id=100 + job_id, service_hash="0123456789abcdef",
        service_name="Demo", state=JobState.RUNNING, progress=0.0, instance="host-a",
        reason=None, workdir=f"/work/ticket_{job_id}", exit_code=None,
        claimed_at=NOW - 600, started_at=NOW - 500, finished_at=None, updated_at=NOW,
        inputs_ready=True, attempt=1, owed=0)
    base.update(changes)
    if base.get("executor") == "slurm":
        # As the SLURM executor reports it (the snapshot carries its ExecutorDetails).
        base["execution"] = describe(base.pop("cluster_job", None),
                                     base.pop("cluster_state", None),
                                     base.pop("cluster_node", None),
                                     queued_at=base.pop("queued_at", None),
                                     running_at=base.pop("running_at", None))
    return JobSnapshot(**base)


def pending(job_id: int, cluster_job: str = "1234", **changes: Any) -> JobSnapshot:
    fields: dict[str, Any] = dict(executor="slurm", cluster_job=cluster_job,
                                  cluster_state="PENDING (Resources)", queued_at=NOW - 123)
    fields.update(changes)
    return snap(job_id, **fields)


def running(job_id: int, cluster_job: str = "1234", **changes: Any) -> JobSnapshot:
    fields: dict[str, Any] = dict(cluster_state="RUNNING", cluster_node="node7",
                                  running_at=NOW - 14)
    fields.update(changes)
    return pending(job_id, cluster_job, **fields)


def runs_on(model: Any, row: int, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
    return model.index(row, col("runs_on")).data(role)


# -- the ticket table -----------------------------------------------------------------------


def test_runs_on_says_local_or_the_cluster_job_its_state_and_node() -> None:
    model = JobTableModel()
    now = time.time()  # job 3's running clock counts from here
    model.set_jobs([
        snap(1),
        pending(2),
        running(3, "1235", queued_at=now - 123, running_at=now - 14),
        snap(4, executor="slurm", cluster_state="not submitted yet: the SLURM controller "
                                                "does not answer"),
        snap(5, executor="slurm", state=JobState.DOWNLOADING),
        running(6, "1236", state=JobState.SUCCEEDED, cluster_state="COMPLETED",
                finished_at=NOW),
    ])
    assert [runs_on(model, row) for row in range(6)] == [
        "local",
        "SLURM 1234 · PENDING (Resources)",
        "SLURM 1235 · RUNNING on node7",
        "SLURM · not submitted yet",
        "SLURM · not submitted yet",
        "SLURM 1236 · COMPLETED on node7",
    ]
    assert model.headerData(col("runs_on"), Qt.Orientation.Horizontal) == "Runs on"
    assert runs_on(model, 0, Qt.ItemDataRole.ToolTipRole) is None
    # The tooltip has it all, with the time in the queue and on the node.
    tip = runs_on(model, 2, Qt.ItemDataRole.ToolTipRole)
    assert tip.splitlines()[:3] == ["SLURM job 1235", "State: RUNNING", "Node: node7"]
    assert tip.splitlines()[3] in ("Pending 1:49, running 14 s", "Pending 1:49, running 15 s")
    assert "does not answer" in runs_on(model, 3, Qt.ItemDataRole.ToolTipRole)


def test_a_cluster_state_change_repaints_only_the_runs_on_cell() -> None:
    model = JobTableModel()
    model.set_jobs([snap(1), pending(2)])
    changed: list[tuple[int, int, int]] = []

    def record(top: QModelIndex, bottom: QModelIndex, _roles: list[int]) -> None:
        changed.append((top.row(), top.column(), bottom.column()))

    model.dataChanged.connect(record)
    # Same updated_at: a newer one also repaints Run time (an ended job's end time).
    model.update_jobs([pending(2, cluster_state="PENDING (Priority)")])
    assert changed == [(1, col("runs_on"), col("runs_on"))]
    assert runs_on(model, 1) == "SLURM 1234 · PENDING (Priority)"
    # Started on its node: its run time starts too.
    model.update_jobs([running(2)])
    assert changed[-1] == (1, col("run_time"), col("runs_on"))
    assert runs_on(model, 1) == "SLURM 1234 · RUNNING on node7"


def test_a_slurm_jobs_run_time_is_its_time_on_the_node_and_waiting_stands_out() -> None:
    model = JobTableModel()
    now = time.time()
    model.set_jobs([snap(1, started_at=now - 500), pending(2),
                    running(3, queued_at=now - 100, running_at=now - 14),
                    snap(4, executor="slurm", cluster_state="not submitted yet: the SLURM "
                                                         "controller does not answer")])

    def run_time(row: int) -> str:
        return model.index(row, col("run_time")).data()

    # Not the 500 s since Run: the job has waited in the queue all that time.
    assert run_time(1) == "—" and run_time(3) == "—"
    assert run_time(2) in ("14 s", "15 s")
    assert run_time(0) in ("8:20", "8:21")  # a local job: from Run
    changed: list[int] = []
    model.dataChanged.connect(lambda top, bottom, _roles: changed.extend(
        range(top.row(), bottom.row() + 1)))
    model.tick()
    assert sorted(changed) == [0, 2]  # a queued job's "—" does not tick

    colour = Qt.ItemDataRole.ForegroundRole
    waiting = {runs_on(model, row, colour).color().name() for row in (1, 3)}
    assert len(waiting) == 1  # pending and not submitted: one colour
    assert runs_on(model, 0, colour) is None and runs_on(model, 2, colour) is None


def test_runs_on_sorts_local_first_then_cluster_jobs_by_number() -> None:
    model = JobTableModel()
    model.set_jobs([pending(1, "1000"), snap(2), running(3, "999"), pending(4, "10001")])
    proxy = JobFilterProxy()
    proxy.setSourceModel(model)
    proxy.sort(col("runs_on"), Qt.SortOrder.AscendingOrder)
    # As text, "999" would come after "10001".
    assert [proxy.job_at(row).job_id for row in range(proxy.rowCount())] == [2, 3, 1, 4]


def test_the_filter_finds_a_slurm_job_by_id_node_and_state() -> None:
    model = JobTableModel()
    model.set_jobs([snap(1), pending(2, "5678"), running(3, "5679", cluster_node="gpu-3")])
    proxy = JobFilterProxy()
    proxy.setSourceModel(model)

    def shown(text: str) -> set[int]:
        proxy.set_text(text)
        return {proxy.job_at(row).job_id for row in range(proxy.rowCount())}

    assert shown("5678") == {2}  # a SLURM job id, not only a ticket number
    assert shown("102") == {2}  # the ticket number still works
    assert shown("gpu-3") == {3}
    assert shown("pending") == {2}
    assert shown("slurm") == {2, 3}
    assert shown("local") == {1}


def test_the_runs_on_column_shows_the_whole_text_in_the_window(qtbot: Any) -> None:
    pane = QueuePane()
    qtbot.addWidget(pane)
    pane.resize(1100, 300)
    pane.show()
    qtbot.waitExposed(pane)
    pane.update_jobs([snap(1)])  # fitted to "local"
    pane.update_jobs([pending(2, "123456", cluster_state="PENDING (ReqNodeNotAvail)")])
    view = pane.view
    assert view.columnWidth(col("runs_on")) >= view.sizeHintForColumn(col("runs_on"))
    # Every other column stays in view.
    last = view.columnViewportPosition(col("runs_on")) + view.columnWidth(col("runs_on"))
    assert last <= view.viewport().width()


def test_cluster_times_stop_when_the_engine_lost_track_or_the_job_ended() -> None:
    assert cluster_times(snap(1)) == (None, None)
    assert cluster_times(pending(1), now=NOW + 7) == (130, None)
    assert cluster_times(running(1), now=NOW + 6) == (109, 20)
    # Interrupted (the engine stopped): its clocks stop at its last update.
    assert cluster_times(running(1, state=JobState.INTERRUPTED), now=NOW + 600) == (109, 14)
    assert cluster_times(running(1, state=JobState.FAILED, finished_at=NOW - 4),
                         now=NOW + 600) == (109, 10)


def test_span_words() -> None:
    assert [format_span(s) for s in (0, 14.9, 123, 3900, 2 * 86400 + 3 * 3600 + 60)] == [
        "0 s", "14 s", "2 min 3 s", "1 h 5 min", "2 d 3 h"]
    assert cluster_clock_text(pending(1, state=JobState.CANCELLED, finished_at=NOW),
                              now=NOW) == "pending 2 min 3 s, did not run"


# -- the detail pane ------------------------------------------------------------------------


@pytest.fixture
def pane(qtbot: Any) -> DetailPane:
    pane = DetailPane()
    qtbot.addWidget(pane)
    pane.resize(900, 400)
    pane.show()
    qtbot.waitExposed(pane)
    return pane


def test_detail_pane_follows_a_slurm_job_from_pending_to_running_to_done(
        pane: DetailPane) -> None:
    now = [NOW]
    pane.clock = lambda: now[0]
    pane.show_job(pending(1))
    assert pane.cluster_row.isVisible()
    assert pane.cluster_label.text() == \
        "Runs on <b>SLURM job 1234</b> · PENDING (Resources)"
    assert pane.cluster_clock.text() == " · pending 2 min 3 s"
    assert pane.cluster_timer.isActive()

    now[0] += 60  # the timer's tick reads the clock again
    pane.cluster_timer.timeout.emit()
    assert pane.cluster_clock.text() == " · pending 3 min 3 s"

    pane.update_job(running(1, running_at=NOW + 60, updated_at=NOW + 60))
    assert pane.cluster_label.text() == "Runs on <b>SLURM job 1234</b> · RUNNING on node7"
    assert pane.cluster_clock.text() == " · pending 3 min 3 s, running 0 s"
    now[0] += 14
    pane.cluster_timer.timeout.emit()
    assert pane.cluster_clock.text() == " · pending 3 min 3 s, running 14 s"

    pane.update_job(running(1, running_at=NOW + 60, state=JobState.SUCCEEDED,
                            cluster_state="COMPLETED", finished_at=NOW + 80,
                            updated_at=NOW + 80))
    assert pane.cluster_label.text() == "Runs on <b>SLURM job 1234</b> · COMPLETED on node7"
    assert pane.cluster_clock.text() == " · pending 3 min 3 s, ran 20 s"
    assert not pane.cluster_timer.isActive()

    pane.show_job(snap(2))  # a local job: no cluster line, no clock
    assert not pane.cluster_row.isVisible()
    assert not pane.cluster_timer.isActive()
    pane.show_job(None)
    assert not pane.cluster_row.isVisible()


def test_detail_pane_says_why_a_job_is_not_submitted_yet(pane: DetailPane) -> None:
    pane.show_job(snap(1, executor="slurm", cluster_state="not submitted yet: the SLURM "
                                                         "controller does not answer"))
    assert pane.cluster_row.isVisible()
    assert pane.cluster_label.text() == ("Runs on <b>SLURM</b> · not submitted yet: the "
                                         "SLURM controller does not answer")
    assert pane.cluster_clock.text() == ""
    assert not pane.cluster_timer.isActive()  # nothing to count yet


def test_a_long_reason_from_slurm_does_not_widen_the_pane(pane: DetailPane) -> None:
    def minimum_width() -> int:
        # What the window's layout asks once the change's layout requests are delivered.
        QApplication.sendPostedEvents()
        return pane.minimumSizeHint().width()

    pane.show_job(snap(1))
    local_width = minimum_width()
    reason = "PENDING (ReqNodeNotAvail, UnavailableNodes:" + ",".join(
        f"gpu-node{n:02d}" for n in range(1, 13)) + ")"
    pane.show_job(pending(2, cluster_state=reason))
    assert pane.cluster_row.isVisible()
    assert minimum_width() == local_width
    assert reason in pane.cluster_label.toolTip()  # cut at the edge, whole in its tooltip


def test_the_clock_ticking_keeps_a_selection_of_the_job_id(pane: DetailPane) -> None:
    now = [NOW]
    pane.clock = lambda: now[0]
    pane.show_job(pending(1))
    pane.cluster_label.setSelection(len("Runs on "), len("SLURM job 1234"))
    assert pane.cluster_label.selectedText() == "SLURM job 1234"
    now[0] += 1
    pane.cluster_timer.timeout.emit()
    pane.update_job(pending(1, progress=0.1, updated_at=NOW + 1))  # same cluster state
    assert pane.cluster_label.selectedText() == "SLURM job 1234"


# -- the real window, the real engine process, a real single-node SLURM ---------------------

from settings_helpers import services_of  # noqa: E402
from test_gui_console import (  # noqa: E402
    WAIT_MS,
    Console,
    child_pids,
    event_loop_qt,  # noqa: F401 (fixture)
)

from slurm_cluster import SlurmCluster  # noqa: E402


@pytest.fixture
def slurm_console(qtbot: Any, event_loop_qt: Any, sandbox: Any,  # noqa: F811
                  slurm: SlurmCluster,
                  tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Console]:
    """A console window whose engine finds the test cluster as any SLURM client does
    (SLURM_CONF); as test_gui_console's make_console, but the session cluster's daemons
    (children of this process) are not the test's leftovers."""
    for name, value in slurm.env.items():
        monkeypatch.setenv(name, value)
    before = set(child_pids(set()))
    service = sandbox.register_service(f"GuiSlurm-{uuid.uuid4().hex[:8]}", "1.0.0", TAGS)
    console = Console(qtbot, sandbox, tmp_path, service, "sleep", "600")
    yield console
    if not console.window.closed:
        console.close()
    active = [t for t in console.window.findChildren(QTimer) if t.isActive()]
    assert not active, f"timers left running: {active}"
    qtbot.waitUntil(lambda: not tasks.pending_tasks(), timeout=15_000)
    tasks.shutdown_executor(wait=True)
    # The engine process the window started must be gone with the window.
    qtbot.waitUntil(lambda: not set(child_pids(before)), timeout=15_000)


def test_a_ticket_on_slurm_from_the_settings_dialog_to_the_table(
        slurm_console: Console, qtbot: Any, slurm: SlurmCluster) -> None:
    console = slurm_console
    window = console.window
    # The operator chooses SLURM in Settings…, before logging in (the engine starts then).
    window.settings_button.click()
    dialog = window.settings_dialog
    assert dialog is not None and dialog.select_service(console.service)
    editor = dialog.current_editor()
    assert editor is not None
    editor.executor_combo.setCurrentIndex(editor.executor_combo.findData("slurm"))
    editor.option_edits["sbatch_options"].setText(
        "--time=00:10:00 --comment='dss ticket {ticket}'")
    dialog.ok_button.click()
    qtbot.waitUntil(lambda: services_of(window.settings)[console.service].executor == "slurm",
                    timeout=WAIT_MS)
    console.login()
    job_id = console.claim_and_run()

    model = window.queue_pane.model
    node = slurm.node

    def runs_on_text() -> str:
        return runs_on(model, model.row_of(job_id))

    qtbot.waitUntil(lambda: runs_on_text().endswith(f"RUNNING on {node}"), timeout=WAIT_MS)
    job = model.job(job_id)
    assert job is not None and job.execution is not None and job.execution.ref is not None
    cluster_job = job.execution.ref
    assert runs_on_text() == f"SLURM {cluster_job} · RUNNING on {node}"
    # The sbatch options reached SLURM, their placeholder filled in.
    comment = slurm.run("squeue", "--noheader", "--jobs", cluster_job, "--format=%k")
    assert comment.stdout.strip() == f"dss ticket {job.ticket_id}"

    detail = window.detail_pane  # the new ticket is the selected one
    assert detail.job is not None and detail.job.job_id == job_id
    qtbot.waitUntil(lambda: detail.cluster_label.text() ==
                    f"Runs on <b>SLURM job {cluster_job}</b> · RUNNING on {node}",
                    timeout=WAIT_MS)
    qtbot.waitUntil(lambda: ", running " in detail.cluster_clock.text(), timeout=WAIT_MS)
    assert detail.cluster_timer.isActive()

    window.ask_confirm = lambda *_args, **_kw: True  # type: ignore[method-assign]
    window.queue_pane.buttons["cancel"].click()
    console.wait_state(job_id, JobState.CANCELLED)
    qtbot.waitUntil(lambda: runs_on_text() == f"SLURM {cluster_job} · CANCELLED on {node}",
                    timeout=WAIT_MS)
    assert slurm.job_state(cluster_job) == "CANCELLED"
    qtbot.waitUntil(lambda: ", ran " in detail.cluster_clock.text(), timeout=WAIT_MS)
    assert not detail.cluster_timer.isActive()


def test_the_detail_pane_marks_the_layer_files_found_missing(pane: DetailPane,
                                                             tmp_path: Path) -> None:
    # Which files are missing is found where the workspace is read (off the Qt thread); the
    # pane only marks them.
    from dss_console.workspace import Workspace
    from test_workspace import itksnap_workspace

    workspace = Workspace.load(itksnap_workspace(tmp_path))
    job = pending(1)
    pane.show_job(job)
    gone = workspace.layers[1].path
    pane.set_inputs(job.job_id, workspace, (), missing_files={gone})
    rows = [pane.inputs.topLevelItem(i) for i in range(pane.inputs.topLevelItemCount())]
    assert len(rows) == len(workspace.layers) >= 2
    assert [row.toolTip(4) for row in rows] == [
        "file not found" if layer.path == gone else "" for layer in workspace.layers]
