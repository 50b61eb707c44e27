"""The jobs table model, its filter proxy and the progress delegate, on real Qt views."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

pytest.importorskip("PySide6.QtWidgets")

from PySide6.QtCore import QItemSelectionModel, QModelIndex, Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QTableView

from dss_console.core.presentation import JobView
from dss_console.engine.events import JobSnapshot
from dss_console.engine.states import JobState
from dss_console.engine.views import unavailable_actions
from dss_console.gui.jobs_model import (
    JobFilterProxy,
    JobTableModel,
    ProgressDelegate,
    format_claimed,
    format_elapsed,
)
from dss_console.sources.dss.presentation import PRESENTATION as DSS_PRESENTATION

from gui_columns import DSS_COLUMNS, col

NOW = time.time()


def snap(job_id: int, **changes: Any) -> JobSnapshot:
    base: dict[str, Any] = dict(
        job_id=job_id, source="dss", ticket_id=100 + job_id, service_hash="0123456789abcdef",
        service_name="Demo", state=JobState.RUNNING, progress=0.0, instance="host-a",
        reason=None, workdir=f"/work/ticket_{job_id}", exit_code=None,
        claimed_at=NOW - 600, started_at=NOW - 500, finished_at=None, updated_at=NOW,
        inputs_ready=True, attempt=1, owed=0)
    base.update(changes)
    job = JobSnapshot(**base)
    # As the engine sends it over the channel: with its view (the actions it would refuse).
    view = JobView(unavailable=unavailable_actions(DSS_PRESENTATION, job, ended_is_final=False),
                   log_file=f"{job.workdir}/.dss/output.log")
    return dataclasses.replace(job, view=view)


class Recorder:
    """Counts a model's structural signals and keeps dataChanged's arguments."""

    def __init__(self, model: JobTableModel) -> None:
        self.resets = 0
        self.inserted: list[tuple[int, int]] = []
        self.changed: list[tuple[int, int, int, int, list[int]]] = []
        model.modelReset.connect(self._reset)
        model.rowsInserted.connect(self._inserted)
        model.dataChanged.connect(self._changed)

    def _reset(self) -> None:
        self.resets += 1

    def _inserted(self, _parent: QModelIndex, first: int, last: int) -> None:
        self.inserted.append((first, last))

    def _changed(self, top: QModelIndex, bottom: QModelIndex, roles: list[int]) -> None:
        self.changed.append((top.row(), bottom.row(), top.column(), bottom.column(),
                             list(roles)))


@pytest.fixture
def model(qtbot: Any) -> JobTableModel:
    model = JobTableModel()
    model.set_jobs([snap(1), snap(2), snap(3)])
    return model


def cell(model: Any, row: int, column: int, role: int = Qt.ItemDataRole.DisplayRole
         ) -> Any:
    return model.index(row, int(column)).data(role)


def test_update_changes_one_row_in_place_and_keeps_the_selection(qtbot: Any,
                                                                  model: JobTableModel
                                                                  ) -> None:
    view = QTableView()
    qtbot.addWidget(view)
    view.setModel(model)
    view.selectionModel().select(model.index(1, 0), QItemSelectionModel.SelectionFlag.Select
                                 | QItemSelectionModel.SelectionFlag.Rows)
    recorder = Recorder(model)

    model.update_jobs([snap(2, progress=0.5)])

    assert recorder.resets == 0 and recorder.inserted == []
    # Only the progress cell of that row moved.
    assert [c[:4] for c in recorder.changed] == [(1, 1, col("progress"), col("progress"))]
    assert cell(model, 1, col("progress")) == "50%"
    assert [index.row() for index in view.selectionModel().selectedRows()] == [1]

    # A reason shows in every cell's tooltip: the whole row changes.
    model.update_jobs([snap(2, progress=0.5, state=JobState.FAILED, reason="boom")])
    assert recorder.changed[-1][:4] == (1, 1, 0, len(DSS_COLUMNS) - 1)
    assert recorder.resets == 0


def test_an_identical_snapshot_emits_nothing(model: JobTableModel) -> None:
    recorder = Recorder(model)
    model.update_jobs([snap(1), snap(2)])
    assert recorder.changed == [] and recorder.inserted == [] and recorder.resets == 0


def test_new_jobs_are_inserted_in_one_batch_and_the_last_snapshot_wins(
        model: JobTableModel) -> None:
    recorder = Recorder(model)
    model.update_jobs([snap(4), snap(1, progress=0.2), snap(5), snap(4, progress=0.9)])

    assert recorder.resets == 0
    assert recorder.inserted == [(3, 4)]
    assert model.rowCount() == 5
    assert model.row_of(4) == 3 and model.row_of(5) == 4 and model.row_of(99) is None
    assert model.job(4) is not None and model.job(4).progress == 0.9  # type: ignore[union-attr]
    assert model.job_at(0).progress == 0.2
    assert cell(model, 3, col("work"), JobTableModel.JobRole).job_id == 4
    assert cell(model, 3, col("work"), JobTableModel.JobIdRole) == 4


def test_remove_job_keeps_the_index_consistent(model: JobTableModel) -> None:
    assert model.remove_job(2)
    assert not model.remove_job(2)
    assert [model.job_at(row).job_id for row in range(model.rowCount())] == [1, 3]
    assert model.row_of(3) == 1
    model.update_jobs([snap(3, progress=1.0)])
    assert cell(model, 1, col("progress")) == "100%"


def test_sorting_uses_numbers_and_times_not_display_strings(qtbot: Any) -> None:
    model = JobTableModel()
    yesterday = NOW - 86_400 - 3_600
    model.set_jobs([
        snap(1, ticket_id=9, claimed_at=NOW - 60),
        snap(2, ticket_id=10, claimed_at=yesterday),
        snap(3, ticket_id=100, claimed_at=NOW - 7200),
    ])
    proxy = JobFilterProxy()
    proxy.setSourceModel(model)

    def tickets() -> list[int]:
        return [proxy.job_at(row).ticket_id for row in range(proxy.rowCount())]

    proxy.sort(col("work"), Qt.SortOrder.AscendingOrder)
    assert tickets() == [9, 10, 100]  # as strings: "10" < "100" < "9"
    proxy.sort(col("work"), Qt.SortOrder.DescendingOrder)
    assert tickets() == [100, 10, 9]

    # Yesterday's "2026-..." would sort after today's "14:..." as a string.
    proxy.sort(col("claimed"), Qt.SortOrder.AscendingOrder)
    assert tickets() == [10, 100, 9]

    # Dynamic sort: an update re-sorts the rows it moves.
    proxy.sort(col("progress"), Qt.SortOrder.DescendingOrder)
    model.update_jobs([snap(3, ticket_id=100, claimed_at=NOW - 7200, progress=0.7)])
    assert tickets()[0] == 100


def test_filter_by_state_and_text(model: JobTableModel) -> None:
    model.update_jobs([
        snap(1, state=JobState.FAILED, reason="Command exited with code 3", instance="node-7"),
        snap(2, state=JobState.SUCCEEDED, finished_at=NOW, service_name="ASHS-PMC"),
        snap(4, state=JobState.CLAIMED, started_at=None, instance="node-9"),
    ])
    proxy = JobFilterProxy()
    proxy.setSourceModel(model)

    def shown() -> set[int]:
        return {proxy.job_at(row).job_id for row in range(proxy.rowCount())}

    assert shown() == {1, 2, 3, 4}
    proxy.set_states({JobState.FAILED, JobState.SUCCEEDED})
    assert shown() == {1, 2}
    proxy.set_text("ashs")  # service name, any case
    assert shown() == {2}
    proxy.set_states(None)
    proxy.set_text("EXITED code")  # every word, in the reason
    assert shown() == {1}
    proxy.set_text("node")  # instance
    assert shown() == {1, 4}
    proxy.set_text("104")  # ticket number
    assert shown() == {4}
    proxy.set_text("running")  # state word
    assert shown() == {3}
    proxy.set_text("")
    assert shown() == {1, 2, 3, 4}

    # Rows that change state enter and leave the filter by themselves.
    proxy.set_states({JobState.RUNNING})
    assert shown() == {3}
    model.update_jobs([snap(3, state=JobState.UPLOADING), snap(4, state=JobState.RUNNING,
                                                               instance="node-9")])
    assert shown() == {4}


def test_tick_touches_only_the_elapsed_cells_of_unfinished_jobs() -> None:
    model = JobTableModel()
    model.set_jobs([
        snap(1),  # running
        snap(2, state=JobState.SUCCEEDED, finished_at=NOW),
        snap(3),  # running
        snap(4),  # running
        snap(5, state=JobState.CLAIMED, started_at=None),  # not started
        snap(6, state=JobState.INTERRUPTED),  # found after a crash: not running
        snap(7, state=JobState.DOWNLOADING),
    ])
    recorder = Recorder(model)
    model.tick()

    rows = set()
    for top, bottom, left, right, _roles in recorder.changed:
        assert left == right == col("run_time")
        rows.update(range(top, bottom + 1))
    assert rows == {0, 2, 3, 6}
    assert len(recorder.changed) == 3  # adjacent rows 2 and 3 share one signal
    assert recorder.resets == 0


def test_display_text_and_formatting(model: JobTableModel) -> None:
    model.update_jobs([snap(1, started_at=time.time() - 3723, service_name="")])
    assert cell(model, 0, col("work")) == "101"
    assert cell(model, 0, col("service")) == "01234567"  # no name: the hash, short
    assert cell(model, 0, col("state")) == "running"
    assert cell(model, 0, col("run_time")) in ("1:02:03", "1:02:04")
    assert cell(model, 0, col("instance")) == "host-a"
    assert model.headerData(col("claimed"), Qt.Orientation.Horizontal) == "Claimed"

    assert format_elapsed(None) == "—"
    assert format_elapsed(42.7) == "42 s"
    assert format_elapsed(303) == "5:03"
    assert format_elapsed(3723) == "1:02:03"
    noon = time.mktime((2026, 11, 20, 12, 0, 0, 0, 0, -1))
    claimed = time.mktime((2026, 11, 20, 14, 3, 27, 0, 0, -1))
    assert format_claimed(claimed, now=noon) == "14:03:27"
    assert format_claimed(claimed, now=noon + 86_400) == "2026-11-20 14:03"
    assert format_claimed(None) == ""

    # An interrupted job has no end time; its elapsed must not keep counting. (A model of
    # its own: an update older than the row it replaces is ignored.)
    interrupted = JobTableModel()
    interrupted.set_jobs([snap(2, state=JobState.INTERRUPTED, started_at=NOW - 100,
                               updated_at=NOW - 40)])
    assert cell(interrupted, 0, col("run_time")) == "1:00"
    assert cell(model, 2, col("run_time"), JobTableModel.SortRole) >= 499


def test_tooltip_tells_the_reason_and_owed_calls(model: JobTableModel) -> None:
    assert cell(model, 0, col("state"), Qt.ItemDataRole.ToolTipRole) is None
    model.update_jobs([snap(1, state=JobState.FAILED, reason="Command exited with code 2",
                            owed=3)])
    tip = cell(model, 0, col("state"), Qt.ItemDataRole.ToolTipRole)
    assert "Command exited with code 2" in tip and "3 server calls owed" in tip
    model.update_jobs([snap(2, owed=1)])
    assert cell(model, 1, col("work"), Qt.ItemDataRole.ToolTipRole) == "1 server call owed"
    assert "0123456789abcdef" in cell(model, 1, col("service"), Qt.ItemDataRole.ToolTipRole)


def test_state_colours_differ(model: JobTableModel) -> None:
    model.update_jobs([snap(1, state=JobState.FAILED), snap(2, state=JobState.SUCCEEDED),
                       snap(3, state=JobState.CLAIMED, started_at=None)])
    failed = cell(model, 0, col("state"), Qt.ItemDataRole.ForegroundRole).color()
    succeeded = cell(model, 1, col("state"), Qt.ItemDataRole.ForegroundRole).color()
    assert failed != succeeded
    assert cell(model, 2, col("state"), Qt.ItemDataRole.ForegroundRole) is None
    assert cell(model, 0, col("work"), Qt.ItemDataRole.ForegroundRole) is None


def test_progress_delegate_paints_a_bar(qtbot: Any) -> None:
    model = JobTableModel()
    model.set_jobs([snap(1, progress=0.0), snap(2, progress=1.0)])
    proxy = JobFilterProxy()
    proxy.setSourceModel(model)
    view = QTableView()
    qtbot.addWidget(view)
    view.setModel(proxy)
    delegate = ProgressDelegate(view)
    view.setItemDelegateForColumn(col("progress"), delegate)
    view.resize(900, 200)
    view.show()
    qtbot.waitExposed(view)

    image = view.viewport().grab().toImage()
    highlight = view.palette().color(QPalette.ColorRole.Highlight)

    def bar_pixels(row: int) -> int:
        """Pixels across the cell's middle in the colour of a progress bar's chunk."""
        rect = view.visualRect(proxy.index(row, col("progress")))
        assert not rect.isEmpty()
        count = 0
        for x in range(rect.left() + 3, rect.right() - 3):
            colour = QColor(image.pixel(x, rect.center().y()))
            if (abs(colour.red() - highlight.red()) + abs(colour.green() - highlight.green())
                    + abs(colour.blue() - highlight.blue())) < 90:
                count += 1
        return count

    assert bar_pixels(0) == 0  # 0%: no chunk
    assert bar_pixels(1) > 20  # 100%: the chunk fills the cell
    assert proxy.index(1, col("progress")).data() == "100%"


# -- the blocked state, the Failed filter, what the columns say --------------------------


def test_a_blocked_job_has_its_own_colour_bold_and_does_not_tick(
        model: JobTableModel) -> None:
    model.update_jobs([snap(1, state=JobState.BLOCKED,
                            reason="the command cannot start: command not found: seg"),
                       snap(2, state=JobState.FAILED), snap(3, state=JobState.INTERRUPTED)])
    colours = {cell(model, row, col("state"), Qt.ItemDataRole.ForegroundRole).color().name()
               for row in range(3)}
    assert len(colours) == 3  # blocked is neither failed nor interrupted
    assert cell(model, 0, col("state"), Qt.ItemDataRole.FontRole).bold()
    assert cell(model, 1, col("state"), Qt.ItemDataRole.FontRole) is None
    assert "command not found" in cell(model, 0, col("state"), Qt.ItemDataRole.ToolTipRole)
    recorder = Recorder(model)
    model.tick()
    assert all(top != 0 for top, *_ in recorder.changed)  # its command is not running


def test_state_filters_place_blocked_and_cancelled_jobs(qtbot: Any) -> None:
    from dss_console.gui.queue_pane import QueuePane

    pane = QueuePane()
    qtbot.addWidget(pane)
    pane.set_jobs([snap(1, state=JobState.BLOCKED), snap(2, state=JobState.CANCELLED),
                   snap(3, state=JobState.FAILED), snap(4, state=JobState.CLAIMED),
                   snap(5, state=JobState.SUCCEEDED)])

    def shown(label: str) -> set[int]:
        pane.state_filter.setCurrentText(label)
        return {pane.proxy.job_at(row).job_id for row in range(pane.proxy.rowCount())}

    assert shown("Failed") == {2, 3}  # cancelled tickets are failed on the server
    assert shown("Waiting to run") == {1, 4}
    assert shown("Needs attention") == {1, 2, 3}
    assert shown("In progress") == {1, 4}
    assert shown("Running") == set()


def test_actions_for_blocked_failed_and_not_retryable_jobs(qtbot: Any) -> None:
    from dss_console.gui.queue_pane import QueuePane

    pane = QueuePane()
    qtbot.addWidget(pane)
    pane.set_jobs([snap(1, state=JobState.BLOCKED), snap(2, state=JobState.FAILED),
                   snap(3, state=JobState.CANCELLED,
                        not_retryable="the ticket was deleted on the server"),
                   snap(4, state=JobState.FAILED, not_retryable="finished by someone else")])

    def enabled(job_id: int) -> set[str]:
        pane.select_job(job_id)
        return {name for name, button in pane.buttons.items() if button.isEnabled()}

    blocked = enabled(1)
    assert {"fail", "cancel"} <= blocked and "run" not in blocked and "retry" not in blocked
    assert "runs by itself" in pane.buttons["run"].toolTip()
    failed = enabled(2)
    assert "fail" not in failed and "cancel" not in failed  # already failed on the server
    assert {"retry", "upload"} <= failed
    assert pane.buttons["retry"].toolTip().startswith("Run the command again")
    gone = enabled(3)
    assert "retry" not in gone and "fail" not in gone
    assert pane.buttons["retry"].toolTip() == \
        "Retry run is not possible: the ticket was deleted on the server"
    assert not pane.actions_["retry"].isEnabled()
    assert "retry" not in enabled(4)
    assert "finished by someone else" in pane.buttons["retry"].toolTip()


def test_the_state_column_fits_every_state_not_just_the_first(qtbot: Any) -> None:
    from dss_console.gui.queue_pane import QueuePane

    pane = QueuePane()
    qtbot.addWidget(pane)
    pane.resize(900, 300)
    pane.show()
    pane.set_jobs([])
    pane.update_jobs([snap(1, state=JobState.CLAIMED, started_at=None)])  # fits "claimed"
    for state in (JobState.SUCCEEDED, JobState.INTERRUPTED, JobState.BLOCKED):
        pane.update_jobs([snap(1, state=state)])
        view = pane.view
        assert view.columnWidth(col("state")) >= view.sizeHintForColumn(col("state")), state


def test_a_new_service_name_widens_its_column(qtbot: Any) -> None:
    from dss_console.gui.queue_pane import QueuePane

    pane = QueuePane()
    qtbot.addWidget(pane)
    pane.resize(900, 300)
    pane.show()
    pane.update_jobs([snap(1, service_name="Demo")])  # fitted to "Demo"
    pane.update_jobs([snap(2, service_name="BrokenSegmentation")])
    view = pane.view
    assert view.columnWidth(col("service")) >= view.sizeHintForColumn(col("service"))


def test_run_time_says_what_it_measures(model: JobTableModel) -> None:
    title = model.headerData(col("run_time"), Qt.Orientation.Horizontal)
    tip = model.headerData(col("run_time"), Qt.Orientation.Horizontal,
                           Qt.ItemDataRole.ToolTipRole)
    assert title == "Run time"
    assert "from Run" in tip and "not the time since the claim" in tip
