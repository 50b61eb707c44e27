"""A vantage6 node's runs and algorithms in the window: the node operator's words.

vantage6 has no cancelled state: Cancel and Fail both fail the run with the operator's
reason, which the researcher reads in the run's log. A run's result leaves with its end, so
there is no Upload result, and its inputs are not a workspace (no Open in ITK-SNAP).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dss_console.core.presentation import (
    GATE_ACTION_SPECS,
    ActionSpec,
    Cells,
    ColumnSpec,
    DialogSpec,
    Presentation,
    Summary,
    Words,
)

_REASON_REQUIRED = "The run {id} was not failed: a reason for the researcher is required."

PRESENTATION = Presentation(
    source="v6",
    title="vantage6 node",
    words=Words(job="run", jobs="runs", service="image", services="algorithms",
                requesters="researchers"),
    job_columns=(
        ColumnSpec("work", "Run", "The vantage6 run id (one task's run at this node's "
                   "organization)"),
        ColumnSpec("service", "Image", "The algorithm image the task asks for"),
        ColumnSpec("state", "State", "Where the job stands"),
        ColumnSpec("progress", "Progress", "Progress the command reported"),
        ColumnSpec("claimed", "Taken", "When this node took the run (local time)"),
        ColumnSpec("run_time", "Run time", "How long the command has run, from Run to its end "
                   "(— before it starts); not the time since the run was taken"),
        # No Instance column: one worker per node, and the room is the task's.
        ColumnSpec("task", "Task", "The vantage6 task this run belongs to: its id and name",
                   sort_cell="task_id"),
        ColumnSpec("requested_by", "Requested by",
                   "The organization and user that created the task"),
        ColumnSpec("databases", "Databases", "The database labels the task asked for (this "
                   "node's [v6.databases] give them a meaning)"),
        ColumnSpec("runs_on", "Runs on", "Where the command runs: a process on the node's "
                   "computer"),
    ),
    service_columns=(
        ColumnSpec("name", "Image", "The algorithm image exactly as researchers post it (only "
                   "images with a command in [v6.algorithms] run; others end “not allowed”)"),
        ColumnSpec("auto", "Auto", "Whether Auto mode starts this image's runs (needs a "
                   "command)"),
        ColumnSpec("ready", "Pending", "Runs of this image waiting for this node on the "
                   "server"),
        ColumnSpec("day", "Last 24 h", "Runs of this image this node completed / failed in the "
                   "last 24 hours"),
        ColumnSpec("command", "Command", "Whether [v6.algorithms] has a command for the image; "
                   "“paused”: auto starting is paused (hover for why)"),
    ),
    actions=(
        ActionSpec("run", "Run", "Ctrl+R", "Run the image's command on this run"),
        ActionSpec("cancel", "Cancel", "Ctrl+K",
                   "Stop the command and fail the run with your reason (vantage6 has no "
                   "cancelled state: the researcher sees a failed run)",
                   DialogSpec("reason", "Cancel run", "Why run {id} is failed (the researcher "
                              "reads this in the run's log; vantage6 has no cancelled state). "
                              "Its command is stopped first.",
                              required=_REASON_REQUIRED,
                              batch_title="Cancel runs",
                              batch_text="Why {count} {jobs} ({ids}) failed, for the "
                              "researchers (one reason for all):")),
        ActionSpec("fail", "Fail…", "Ctrl+Shift+F",
                   "Fail the run with a reason the researcher reads in its log",
                   DialogSpec("reason", "Fail run", "Why run {id} is failed (the researcher "
                              "reads this in the run's log; vantage6 has no cancelled state).",
                              required=_REASON_REQUIRED,
                              batch_title="Fail runs",
                              batch_text="Why {count} {jobs} ({ids}) failed, for the "
                              "researchers (one reason for all):")),
        ActionSpec("retry", "Retry run", "Ctrl+Shift+R",
                   "Run the command again from a clean work dir (only while the run is still "
                   "open on the server)",
                   DialogSpec("confirm", "Retry run", "Run run {id} again? It is still open on "
                              "the server; its work dir is emptied first (the logs of earlier "
                              "attempts are kept).",
                              batch_title="Retry runs",
                              batch_text="Run {count} {jobs} again ({ids})? Their work dirs "
                              "are emptied first (the logs of earlier runs are kept).")),
        *GATE_ACTION_SPECS,
        ActionSpec("workdir", "Open work dir", "Ctrl+O", "Open the run's work dir"),
        ActionSpec("copy", "Copy id", "Ctrl+Shift+C", "Copy the run id",
                   done_text="Copied run id {id}"),
    ),
    texts={
        # The operator's gate (the window's approval and release views).
        "approval_tab": "Before it runs",
        "release_tab": "Output to release",
        "waiting_title": "{count} decision(s) wait",
        "requester_label": "Researcher",
        "all_jobs": "All runs",
        "job_filter": "Filter: run, task, image, organization, database, reason",
        "claim_tip": "Start the next pending run of the selected images (Ctrl+N)",
        "commands_note": "Commands of a vantage6 node are the [v6.algorithms] tables of the "
                         "settings file",
        "inputs_tab": "Run",
        "select_job": "Select a run to see its output.",
        "blocked_run_tip": "The command cannot start; the run starts by itself as soon as it "
                           "can (fix the image's command in the settings file), or Fail… it",
        "no_work": "No run is pending for the selected images.",
        "quit_title": "Runs are in flight",
        "quit_running": "{count} run(s) still running or uploading.",
        "quit_stop": "Stop them now and run them again when the node starts (the runs stay "
                     "open on the server), or stop them and fail the runs (the researchers are "
                     "told \"the node shut down\")?",
        "quit_fail": "Stop and fail the runs",
        "services_summary": "{count} image(s); {commands} with a command ([v6.algorithms] in "
                            "the settings file).",
        "day_tip": "{done} completed, {failed} failed by this node in the last 24 hours",
        "retry_closed_tip": "Retry run is not possible: the run ended on the server, and a "
                            "finished vantage6 run cannot run again",
        # An image's "version" says how it runs (wrapper, command, no command).
        "service_label": "{name} · {version}",
    },
    inputs_view="summary",
)


def run_cells(details: Mapping[str, Any]) -> Cells:
    """The node's own columns of a run, from what the engine learnt at claim and fetch."""
    task_id, name = details.get("task_id"), details.get("task_name")
    task = "" if task_id is None else (f"{task_id} · {name}" if name else str(task_id))
    org = details.get("init_org") or (f"org {details['init_org_id']}"
                                      if details.get("init_org_id") is not None else "")
    user = details.get("init_user") or (f"user {details['init_user_id']}"
                                        if details.get("init_user_id") is not None else "")
    databases = ", ".join(str(label) for label in details.get("databases") or [])
    return {"task": task, "task_id": task_id if isinstance(task_id, int) else -1,
            "requested_by": " / ".join(part for part in (org, user) if part),
            "databases": databases}


def run_summary(image: str, details: Mapping[str, Any]) -> Summary:
    """A run's inputs for the operator: task, requester, databases, method and argument
    *names* (never their values; the engine keeps only names, sizes and a hash)."""
    cells = run_cells(details)
    rows: list[tuple[str, str]] = [("Image", image)]
    if details.get("task_id") is not None:
        rows.append(("Task", str(cells["task"])))
    if details.get("parent_id") is not None:
        rows.append(("Subtask of", f"task {details['parent_id']}"))
    rows.append(("Requested by", str(cells["requested_by"]) or "—"))
    rows.append(("Databases", str(cells["databases"]) or "none"))
    unknown = details.get("unknown_databases")
    if isinstance(unknown, list) and unknown:
        # Refused before it started: say which label this node lacks.
        rows.append(("Not on this node", ", ".join(str(label) for label in unknown)))
    summary = details.get("input_summary")
    if isinstance(summary, dict):
        if summary.get("format"):
            rows.append(("Input", f"{summary['format']}, {summary.get('bytes', 0)} bytes"))
        else:
            names = ", ".join(str(n) for n in summary.get("kwargs") or []) or "none"
            positional = summary.get("args") or 0
            rows.append(("Method", str(summary.get("method") or "—")))
            rows.append(("Arguments", names + (f"; {positional} positional" if positional
                                                else "")))
            rows.append(("Input size", f"{summary.get('bytes', 0)} bytes"))
    else:
        rows.append(("Input", "not fetched yet"))
    if details.get("input_sha256"):
        rows.append(("Input SHA-256", str(details["input_sha256"])))
    return Summary(tuple(rows), "Argument values and data are never shown or kept beyond the "
                                "run's work dir.")
