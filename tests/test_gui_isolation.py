"""Issue 19 in the window: each service's row says how its command is contained, and a job's
detail says the limits it runs under, in its executor's words.

Real widgets against the real DSS server and engine (the console fixture of
test_gui_console.py), the job run by the real sandbox (bubblewrap) with a real cgroup."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt

import test_gui_console
from dss_console.engine.settings import ServiceCommand
from dss_console.engine.states import JobState
from dss_console.gui.services_pane import COMMAND_COLUMN, SERVICE_COLUMN
from settings_helpers import services_of
from test_gui_console import WAIT_MS
from test_isolation_wiring import needs_cgroups

from test_engine import command

event_loop_qt = test_gui_console.event_loop_qt
make_console = test_gui_console.make_console

TESTS = Path(__file__).parent


@needs_cgroups
def test_a_sandboxed_service_shows_its_isolation_and_its_job_the_limits(
        make_console, qtbot) -> None:
    console = make_console()
    window = console.window
    # The test's own service script is shown read-only: a command's program must be visible.
    services_of(window.settings)[console.service] = ServiceCommand(
        key=console.service, command=command("success"),
        options={"isolation": "sandbox", "memory": "64M", "read_only": [str(TESTS)]})
    console.login()
    pane = window.services_pane
    row = pane.all_hashes().index(console.service)
    table = pane.table
    qtbot.waitUntil(lambda: "Isolation: sandbox" in table.item(row, SERVICE_COLUMN).toolTip(),
                    timeout=WAIT_MS)
    for column in (SERVICE_COLUMN, COMMAND_COLUMN):
        tip = table.item(row, column).toolTip()
        assert "Isolation: sandbox, no network, memory 64 MiB" in tip, tip
    # A service without a command has nothing to contain: no isolation line.
    demo = next(r for r in range(table.rowCount())
                if table.item(r, SERVICE_COLUMN).text() == "DemoSegmentation 1.0.0")
    assert "Isolation" not in table.item(demo, SERVICE_COLUMN).toolTip()

    job_id = console.claim()
    detail = window.detail_pane
    qtbot.waitUntil(lambda: "Limits: sandbox" in detail.header.text(), timeout=WAIT_MS)
    window.queue_pane.buttons["run"].click()
    console.wait_state(job_id, JobState.SUCCEEDED, JobState.FAILED)
    job = window.engine.job(job_id)
    assert job.state is JobState.SUCCEEDED, job.reason
    # Kept with the run when its command started: what applied, whatever the settings say
    # later.
    assert job.details.get("limits") == "sandbox, no network, memory 64 MiB", job.details
    # The limits it ran under: in the detail's header and the Runs on cell's tooltip.
    qtbot.waitUntil(lambda: detail.job is not None and detail.job.job_id == job_id
                    and detail.job.state is JobState.SUCCEEDED, timeout=WAIT_MS)
    header = detail.header.text()
    assert "Limits: sandbox, no network, memory 64 MiB" in header, header
    model = window.queue_pane.model
    runs_on = model.column_of("runs_on")
    tip = model.index(model.row_of(job_id), runs_on).data(Qt.ItemDataRole.ToolTipRole)
    assert "Limits: sandbox, no network, memory 64 MiB" in tip, tip
