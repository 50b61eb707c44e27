"""What the window shows for a source, as data the source plug-in declares.

The window learns a source's words, columns, actions and dialogs from the engine (the
channel's ``info``), and renders them; it never asks which kind of source it serves. A new
source is a new :class:`Presentation`, not a branch in gui/.

Templates in texts and dialogs use ``str.format`` fields: ``{job}`` / ``{Job}`` (the noun,
lower-case / capitalised), ``{jobs}``, ``{id}`` (the job's number on the server), ``{ids}``
and ``{count}`` (a batch), ``{reason}``, ``{requesters}``, ``{picked}`` (a chosen file).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

# The job columns every source has; their values come from the core's JobSnapshot fields. A
# source adds its own columns under other ids, valued by `Presentation.cells`.
CORE_JOB_COLUMNS = ("work", "service", "state", "progress", "claimed", "run_time", "instance",
                    "runs_on")
# What the window does by itself (no engine call): open the work dir, copy the id, open the
# inputs in a viewer program.
LOCAL_ACTIONS = ("workdir", "copy", "open_inputs")


def unbroken_html(text: str) -> str:
    """``text`` escaped for the window's rich-text labels, never broken across lines there (a
    server's address, which a wrapping label would otherwise break after its ``http://``):
    Qt's line breaking ignores CSS ``white-space`` there, so a word joiner (U+2060, not
    shown) follows each character after which Unicode allows a break inside an address."""
    joined = "".join(c + "\u2060" if c in "/:.-?&=" else c for c in text)
    return html.escape(joined.replace(" ", "\u00a0"))


@dataclass(frozen=True)
class Words:
    """Nouns, lower-case singular/plural; the window capitalises them where a title needs it."""

    job: str = "job"
    jobs: str = "jobs"
    service: str = "service"
    services: str = "services"
    requesters: str = "users"  # who reads what the operator writes (a failure's reason)


@dataclass(frozen=True)
class ColumnSpec:
    id: str
    title: str
    tip: str
    # A source's own column sorts by this cell's value (a number sorts 9 before 10);
    # "" = by the column's own cell, as text.
    sort_cell: str = ""


@dataclass(frozen=True)
class DialogSpec:
    """What the window asks before it performs an action.

    ``confirm``: yes/no; ``reason``: a text the requester reads (``required`` is said when it
    is left empty); ``file``: a file to hand over (``file_filter``), then ``confirm_text``.
    """

    kind: Literal["confirm", "reason", "file"]
    title: str
    text: str
    required: str = ""
    file_filter: str = ""
    confirm_text: str = ""
    # ``file``: the confirmation when the job already failed here (the requester saw that).
    confirm_text_failed: str = ""
    # A batch (several selected jobs): the same dialog in plural words; "" = no batch form.
    batch_title: str = ""
    batch_text: str = ""


@dataclass(frozen=True)
class ActionSpec:
    """A button of the jobs pane. Core actions: run, retry, cancel, fail, upload; window-local
    ones: LOCAL_ACTIONS."""

    name: str
    label: str
    shortcut: str
    tip: str
    dialog: DialogSpec | None = None
    # The program a local action starts (found on PATH), e.g. "itksnap" for open_inputs.
    program: str = ""
    done_text: str = ""  # the status bar's words after a local action (copy)


@dataclass(frozen=True)
class Presentation:
    """A source's face in the window. ``source`` is the plug-in's name, for the window's
    memory of the last login form only."""

    source: str
    title: str  # the login form's choice: "ITK-SNAP DSS", "vantage6 node"
    words: Words
    job_columns: tuple[ColumnSpec, ...]
    service_columns: tuple[ColumnSpec, ...]
    actions: tuple[ActionSpec, ...]
    # Named texts the panes show (see TEXT_KEYS): filter hints, tooltips, notes.
    texts: Mapping[str, str] = field(default_factory=dict)
    # "workspace": the inputs are a workspace the window can inspect; "summary": the engine
    # gives a summary (names, sizes, hashes) and the window shows that.
    inputs_view: Literal["workspace", "summary"] = "workspace"
    # What the window may offer for this source: "service_editor" (the engine's services get
    # their commands in the Settings dialog's service editor, the [services] tables). A
    # source's own widgets (settings tab, views, sandbox) come from gui.source_window.
    features: frozenset[str] = frozenset()

    def action(self, name: str) -> ActionSpec | None:
        return next((a for a in self.actions if a.name == name), None)

    def text(self, key: str, **fields: object) -> str:
        """A named text with the words filled in (missing keys read as "")."""
        template = self.texts.get(key, "")
        return template.format(**self.word_fields(), **fields) if template else ""

    def word_fields(self) -> dict[str, str]:
        w = self.words
        return {"job": w.job, "Job": w.job.capitalize(), "jobs": w.jobs,
                "Jobs": w.jobs.capitalize(), "service": w.service, "services": w.services,
                "Services": w.services.capitalize(), "requesters": w.requesters}


# The texts a presentation may name (a test checks every presentation's keys are among these).
TEXT_KEYS = frozenset({
    "all_jobs",          # the state filter's first entry
    "job_filter",        # the jobs filter's placeholder
    "claim_tip",         # the Claim next button's tooltip
    "commands_note",     # why the service editor is not the place for this source's commands
    "inputs_tab",        # the detail pane's inputs tab title
    "select_job",        # the detail pane before a job is selected
    "blocked_run_tip",   # why Run is off for a blocked job
    "no_work",           # the status bar when Claim next found nothing
    "service_label",     # a service's name with its version: {name}, {version}
    "retry_closed_tip",  # why Retry is off for a job whose end the server already holds
    "quit_title",        # the question at quit while jobs run: its title,
    "quit_running",      # what runs ({count}),
    "quit_stop",         # what stopping does to the jobs and their requesters,
    "quit_fail",         # and the button that stops and fails them
    "services_summary",  # under the services list: {count} listed, {commands} with a command
    "day_tip",           # a service's last-24-h cell: {done} succeeded, {failed} failed
    "approval_tab",      # the detail pane's tab of what a job waiting for approval is
    "release_tab",       # ... and of what a held result would send
    "waiting_title",     # the window's title while decisions wait: {count}
    "requester_label",   # the label of who asked for the work
})

# The core actions of the operator's gate (engine/decisions.py), offered by state
# (engine/views.unavailable_actions): approve (AWAITING_APPROVAL), release
# (AWAITING_RELEASE), reject (both; a reason the requester reads).
GATE_ACTIONS = ("approve", "reject", "release")


# The gate's buttons in every source's words (a source lists them with its own actions).
GATE_ACTION_SPECS = (
    ActionSpec("approve", "Approve", "Ctrl+Shift+A",
               "Run this {job}: its inputs were fetched and wait for your approval",
               DialogSpec("confirm", "Approve {job}", "Run {job} {id} now?",
                          batch_title="Approve {jobs}",
                          batch_text="Run {count} {jobs} ({ids}) now?")),
    ActionSpec("reject", "Reject…", "Ctrl+Shift+J",
               "Fail this waiting {job} with a message its {requesters} read; a held result "
               "stays here",
               DialogSpec("reason", "Reject {job}",
                          "Message for the {requesters} of {job} {id} (why it is rejected):",
                          required="{Job} {id} was not rejected: a message for its "
                          "{requesters} is required.",
                          batch_title="Reject {jobs}",
                          batch_text="Why {count} {jobs} ({ids}) are rejected, for their "
                          "{requesters} (one reason for all):")),
    ActionSpec("release", "Release", "Ctrl+Shift+L",
               "Send this {job}'s result, held for your review, and finish it",
               DialogSpec("confirm", "Release result", "Send the result of {job} {id} to its "
                          "{requesters} now?",
                          batch_title="Release results",
                          batch_text="Send the results of {count} {jobs} ({ids}) now?")),
)


def presentation_problems(p: Presentation) -> list[str]:
    """What makes a presentation unusable by the window (checked by the contract tests)."""
    problems = [f"unknown text {key!r}" for key in p.texts if key not in TEXT_KEYS]
    ids = [c.id for c in p.job_columns]
    problems += [f"job column {i!r} listed twice" for i in set(ids) if ids.count(i) > 1]
    names = [a.name for a in p.actions]
    problems += [f"action {n!r} listed twice" for n in set(names) if names.count(n) > 1]
    for a in p.actions:
        if a.name == "open_inputs" and not a.program:
            problems.append("open_inputs names no program")
        try:
            for template in (a.tip, *(_dialog_texts(a.dialog))):
                template.format(**p.word_fields(), id=1, ids="1", count=1, reason="",
                                picked="", state="", earlier="")
        except (KeyError, IndexError, ValueError) as exc:
            problems.append(f"action {a.name!r}: bad template field {exc}")
    return problems


def _dialog_texts(dialog: DialogSpec | None) -> tuple[str, ...]:
    if dialog is None:
        return ()
    return (dialog.title, dialog.text, dialog.required, dialog.confirm_text,
            dialog.confirm_text_failed, dialog.batch_title, dialog.batch_text)


def cell_columns(p: Presentation) -> tuple[ColumnSpec, ...]:
    """The source's own job columns (valued by the engine's per-job cells)."""
    return tuple(c for c in p.job_columns if c.id not in CORE_JOB_COLUMNS)


CellValue = str | int
Cells = Mapping[str, CellValue]


@dataclass(frozen=True)
class Summary:
    """What a job's inputs are, for the window's inputs tab when they are not a workspace:
    (label, value) rows, and a note under them."""

    fields: tuple[tuple[str, str], ...]
    note: str = ""


@dataclass(frozen=True)
class JobView:
    """One job as its source presents it, sent with each snapshot: the values of the
    source's own columns, the inputs' summary (``inputs_view`` "summary"), and the engine
    actions that cannot be done now, each with why ("" when the job's state says it and the
    action's own tooltip serves)."""

    cells: Cells = field(default_factory=dict)
    summary: Summary | None = None
    unavailable: Mapping[str, str] = field(default_factory=dict)
    # Where the engine keeps the job's files, for the window to open and read: this
    # attempt's output log and the fetched inputs ("" when not known).
    log_file: str = ""
    inputs_dir: str = ""
    # How the job's command is contained, in its executor's words ("sandbox, no network,
    # memory 8 GiB, 2 CPUs"; "" when not known): the detail's "Limits" line.
    limits: str = ""


@dataclass(frozen=True)
class Requester:
    """Who asked for the work, as the source knows it: ``key`` is stable (rules match it),
    ``user`` / ``org`` the names shown."""

    key: str
    user: str | None = None
    org: str | None = None

    def words(self) -> str:
        shown = " @ ".join(x for x in (self.user, self.org) if x)
        return f"{shown} ({self.key})" if shown else self.key


@dataclass(frozen=True)
class Fact:
    """One line of what a job waiting for approval is (label, value). ``local_only``: the
    value is shown to this machine's operator only (an argument's value, a database path):
    never journaled, logged, exported or sent; ``warning``: something the operator should
    know before approving (a database label this node lacks)."""

    label: str
    value: str
    local_only: bool = False
    warning: str = ""


@dataclass(frozen=True)
class PreviewFile:
    """A file that would leave at release: its name (shown locally only), size, SHA-256
    and role (layer | result | attachment | log)."""

    name: str
    size: int
    sha256: str
    role: str


@dataclass(frozen=True)
class Preview:
    """What a held result would send: its files, a readable text (a JSON output, at most
    64 KiB), a table (at most 50 rows) and the held log messages. Local only."""

    files: tuple[PreviewFile, ...] = ()
    text: str = ""
    rows: tuple[tuple[str, ...], ...] = ()
    messages: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApprovalView:
    """A job waiting at a gate as the operator reviews it (the channel's ``approval``):
    computed on demand from local files, never journaled. ``gate``: "run" | "release";
    ``waiting_since`` and ``deadline`` (when ``approval_timeout`` fails it; None: never):
    epoch seconds."""

    job_id: int
    ticket_id: int
    service: str
    gate: str
    waiting_since: float | None
    requester: Requester | None = None
    facts: tuple[Fact, ...] = ()
    preview: Preview | None = None
    deadline: float | None = None


@dataclass(frozen=True)
class ServiceFigures:
    """One service's figures in the services pane: work waiting for it on the server (None:
    not known), jobs that succeeded and failed in the last 24 h, and lines for its tooltip."""

    ready: int | None = None
    done: int = 0
    failed: int = 0
    lines: tuple[str, ...] = ()
