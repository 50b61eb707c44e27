"""A DSS server's tickets and services in the window: the provider's words."""

from __future__ import annotations

from dss_console.core.presentation import (
    GATE_ACTION_SPECS,
    ActionSpec,
    ColumnSpec,
    DialogSpec,
    Presentation,
    Words,
)

RUN_TIME_TIP = ("How long the command has run, from Run to its end (— before it starts); not "
                "the time since the claim. A SLURM job's from when it started on its node: its "
                "time in the cluster's queue is not run time")
RUNS_ON_TIP = ("Where the command runs: local (a process on the engine's computer) or a SLURM "
               "cluster job, with its id, its state in the cluster's queue and its node")

PRESENTATION = Presentation(
    source="dss",
    title="ITK-SNAP DSS",
    words=Words(job="ticket", jobs="tickets", service="service", services="services",
                requesters="users"),
    job_columns=(
        ColumnSpec("work", "Ticket", "The DSS ticket number"),
        ColumnSpec("service", "Service", "The service the ticket asks for"),
        ColumnSpec("state", "State", "Where the job stands"),
        ColumnSpec("progress", "Progress", "Progress the command reported"),
        ColumnSpec("claimed", "Claimed", "When the ticket was claimed (local time)"),
        # "Run time", not "Elapsed": the Services pane's average runs from claim to finish,
        # and two durations side by side must say what each one measures.
        ColumnSpec("run_time", "Run time", RUN_TIME_TIP),
        ColumnSpec("instance", "Instance", "The provider instance that claimed the ticket"),
        ColumnSpec("runs_on", "Runs on", RUNS_ON_TIP),
    ),
    service_columns=(
        ColumnSpec("name", "Service", "Service name and version (hover for its hash, when a "
                   "provider was last heard from, and the average time from claim to success)"),
        ColumnSpec("auto", "Auto", "Whether Auto mode claims this service's tickets (needs a "
                   "command; greyed while Auto mode is off)"),
        ColumnSpec("ready", "Ready", "Tickets waiting in the server's queue"),
        ColumnSpec("day", "Last 24 h", "Tickets that succeeded / failed in the last 24 hours "
                   "(server's count)"),
        ColumnSpec("command", "Command", "Whether this console has a command for the service; "
                   "“paused”: auto claiming is paused (hover for why)"),
    ),
    actions=(
        ActionSpec("run", "Run", "Ctrl+R", "Run the service command on this ticket"),
        ActionSpec("cancel", "Cancel", "Ctrl+K",
                   "Stop the command and fail the ticket as cancelled",
                   DialogSpec("confirm", "Cancel ticket", "Stop ticket {id} and fail it on the "
                              "server as cancelled by the provider?",
                              batch_title="Cancel tickets",
                              batch_text="Stop {count} {jobs} ({ids}) and fail them on the "
                              "server as cancelled by the provider?")),
        ActionSpec("fail", "Fail…", "Ctrl+Shift+F", "Fail the ticket with a message for the user",
                   DialogSpec("reason", "Fail ticket",
                              "Message for the user of ticket {id} (why it failed):",
                              required="Ticket {id} was not failed: a message for its user is "
                              "required (they read it on their ticket).",
                              batch_title="Fail tickets",
                              batch_text="Why {count} {jobs} ({ids}) failed, for the users "
                              "(one reason for all):")),
        ActionSpec("upload", "Upload result…", "Ctrl+U",
                   "Upload a result workspace from disk and mark the ticket a success",
                   DialogSpec("file", "Upload result", "Result workspace for ticket {id}",
                              file_filter="ITK-SNAP workspace (*.itksnap)",
                              confirm_text="Upload {picked} as the result of ticket {id} and "
                              "mark it a success?",
                              # The server lets the claimant turn its own failure into a
                              # success; the user's log keeps the failure.
                              confirm_text_failed="Ticket {id} was already {state} by this "
                              "console{earlier}, and its user has seen that failure. Upload "
                              "{picked} as its result and mark it a success? The user will "
                              "then see the earlier failure followed by the success.")),
        ActionSpec("retry", "Retry run", "Ctrl+Shift+R",
                   "Run the command again from a clean work dir",
                   DialogSpec("confirm", "Retry run", "Run ticket {id} again? Its work dir is "
                              "emptied first (the logs of earlier runs are kept).",
                              batch_title="Retry runs",
                              batch_text="Run {count} {jobs} again ({ids})? Their work dirs "
                              "are emptied first (the logs of earlier runs are kept).")),
        *GATE_ACTION_SPECS,
        ActionSpec("workdir", "Open work dir", "Ctrl+O", "Open the ticket's work dir"),
        ActionSpec("open_inputs", "Open in ITK-SNAP", "Ctrl+I",
                   "Open the input workspace in ITK-SNAP", program="itksnap"),
        ActionSpec("copy", "Copy id", "Ctrl+Shift+C", "Copy the ticket id",
                   done_text="Copied {id}"),
    ),
    texts={
        # The operator's gate (the window's approval and release views).
        "approval_tab": "Before it runs",
        "release_tab": "Result to release",
        "waiting_title": "{count} decision(s) wait",
        "requester_label": "Requested by",
        "all_jobs": "All tickets",
        "job_filter": "Filter: ticket, service, instance, reason, SLURM job or node",
        "claim_tip": "Claim the next ready ticket of the selected services and download its "
                     "inputs (Ctrl+N)",
        "inputs_tab": "Input workspace",
        "select_job": "Select a ticket to see its output.",
        "blocked_run_tip": "The command cannot start; the ticket runs by itself as soon as it "
                           "can (fix the service's command in Settings…), or Fail… it",
        "no_work": "No ticket is ready for the selected services.",
        "quit_title": "Jobs are running",
        "quit_running": "{count} job(s) still running or uploading.",
        "quit_stop": "Stop them now and run them again when the console starts (the tickets "
                     "stay claimed; the users are told the provider is restarting), or stop "
                     "them and fail their tickets (the users are told \"provider shut down\")?",
        "quit_fail": "Stop and fail them",
        "services_summary": "{count} service(s); {commands} with a command.",
        "day_tip": "{done} succeeded, {failed} failed in the last 24 hours",
        "service_label": "{name} {version}",
    },
    inputs_view="workspace",
    features=frozenset({"service_editor"}),
)
