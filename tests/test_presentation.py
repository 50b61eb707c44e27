"""Every source's Presentation is something the window can render: known texts, templates
whose fields exist, no column or action listed twice, cells for its own columns."""

from __future__ import annotations

import dataclasses

import pytest

from dss_console import plugins
from dss_console.core.presentation import (
    CORE_JOB_COLUMNS,
    ActionSpec,
    DialogSpec,
    JobView,
    Presentation,
    cell_columns,
    presentation_problems,
)
from dss_console.engine.events import JobSnapshot
from dss_console.engine.states import JobState
from dss_console.sources.dss.presentation import PRESENTATION as DSS
from dss_console.sources.v6.presentation import PRESENTATION as V6
from dss_console.sources.v6.presentation import run_cells, run_summary
from dss_console.sources.v6x5.presentation import PRESENTATION as V6X5

PRESENTATIONS = {"dss": DSS, "v6": V6, "v6x5": V6X5}


def test_the_registry_names_every_presentation() -> None:
    assert {name: plugins.presentation(name) for name in plugins.SOURCE_PRESENTATIONS} \
        == PRESENTATIONS


@pytest.mark.parametrize("name", sorted(PRESENTATIONS))
def test_a_presentation_has_no_problems(name: str) -> None:
    presentation = PRESENTATIONS[name]
    assert presentation.source == name
    assert presentation_problems(presentation) == []
    assert {"run", "retry", "cancel", "fail"} <= {a.name for a in presentation.actions}
    assert "work" in {c.id for c in presentation.job_columns}


def test_the_check_finds_a_bad_template_an_unknown_text_and_a_twice_listed_action() -> None:
    bad = dataclasses.replace(
        DSS, texts={**DSS.texts, "no_such_text": "x"},
        actions=(*DSS.actions, ActionSpec("fail", "Fail", "", "x",
                                          DialogSpec("reason", "Fail {tiket}", "x"))))
    problems = presentation_problems(bad)
    assert "unknown text 'no_such_text'" in problems
    assert "action 'fail' listed twice" in problems
    assert any("bad template field 'tiket'" in p for p in problems)


def test_texts_fill_in_the_words() -> None:
    assert V6.text("select_job") == "Select a run to see its output."
    fail = DSS.action("fail")
    assert fail is not None and fail.dialog is not None
    assert fail.dialog.required.format(id=12) == (
        "Ticket 12 was not failed: a message for its user is required (they read it on their "
        "ticket).")
    assert DSS.text("no_such_text") == ""


def test_the_node_fills_every_column_of_its_own() -> None:
    cells = run_cells({"task_id": 12, "task_name": "mean", "init_org": "research",
                       "init_user_id": 4, "databases": ["default", "images"]})
    assert cells == {"task": "12 · mean", "task_id": 12, "requested_by": "research / user 4",
                     "databases": "default, images"}
    own: list[str] = [c.id for c in cell_columns(V6)]
    assert own and all(column in cells for column in own)
    assert all(c.sort_cell in cells for c in cell_columns(V6) if c.sort_cell)
    assert cell_columns(DSS) == ()
    assert all(isinstance(p, Presentation) for p in PRESENTATIONS.values())
    assert set(CORE_JOB_COLUMNS) >= {c.id for c in DSS.job_columns}


@pytest.mark.parametrize("name", sorted(PRESENTATIONS))
def test_a_presentation_crosses_the_engine_channel_unchanged(name: str) -> None:
    from dss_console.engine import wire

    presentation = PRESENTATIONS[name]
    message = wire.loads(wire.dumps({"info": {"presentation": presentation}}))
    assert message["info"]["presentation"] == presentation


def test_a_job_view_crosses_the_channel_with_its_snapshot() -> None:
    from dss_console.engine import wire

    details = {"task_id": 7, "task_name": "mean", "init_org": "research", "init_user_id": 2,
               "databases": ["default"], "input_summary": {"method": "mean",
                                                          "kwargs": ["column"], "bytes": 40}}
    view = JobView(cells=run_cells(details), summary=run_summary("img:1", details),
                   unavailable={"run": "", "retry": "Retry run is not possible: gone"})
    job = JobSnapshot(job_id=1, source="s", ticket_id=7, service_hash="img:1",
                      service_name="img", state=JobState.FAILED, progress=0.0, instance="i",
                      reason=None, workdir="w", exit_code=1, claimed_at=None,
                      started_at=None, finished_at=None, updated_at=0.0, inputs_ready=True,
                      attempt=1, owed=0, details=details, view=view)
    back = wire.loads(wire.dumps({"job": job}))["job"]
    assert back.view == view and back.view.summary is not None
    assert ("Method", "mean") in back.view.summary.fields
