"""The seam between the engine and where jobs come from (docs/plugin-plan.md §2).

The engine calls a :class:`Source` (claim, fetch inputs, report, upload, finish, status) and
sees its failures only as the four kinds of :class:`Failure`. A source plug-in subclasses
:class:`Source`: the abstract methods are what every source does; the others have a default
body, so the engine calls them on any source and never asks ``getattr`` (the DSS source is
``dss_console.sources.dss.source.DssSource``, the vantage6 node
``dss_console.sources.v6.source.V6Source``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from dss_console.core.presentation import (
    Cells,
    Fact,
    Presentation,
    Preview,
    PreviewFile,
    Requester,
    ServiceFigures,
    Summary,
)

if TYPE_CHECKING:
    from dss_console.core.command import CommandSpec, JobPaths
    from dss_console.engine.settings import ServiceCommand, Settings

ProgressFn = Callable[[int, int | None], None]  # bytes so far, total (None: unknown)

# Bytes of an output's tail a server's log keeps when the source does not say.
SHARED_LOG_LIMIT = 256 * 1024


class Failure(str, Enum):
    """How a failed server call is handled. A ``str`` enum: the channel sends the value as
    an error's ``kind``, and the window compares it with these members."""

    TRANSIENT = "transient"    # retry later
    LOGGED_OUT = "logged_out"  # pause until the operator logs in again
    GONE = "gone"              # the work went away: stop working on it
    REFUSED = "refused"        # this call will never work


# By their old module-level names, for callers that compare a channel's error kind.
TRANSIENT, LOGGED_OUT, GONE, REFUSED = (Failure.TRANSIENT, Failure.LOGGED_OUT, Failure.GONE,
                                        Failure.REFUSED)


class RemoteState(str, Enum):
    """Where a job stands on the server, in words every source shares; the engine compares
    only these.

    DSS: ``claimed`` → OURS, ``success`` → SUCCEEDED, ``failed`` → FAILED,
    deleted/unclaimed/other provider → GONE. v6: not finished → OURS, ``completed`` →
    SUCCEEDED, crashed/failed/start failed/not allowed → FAILED, ``killed by user`` or 404
    → GONE.
    """

    OURS = "ours"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    GONE = "gone"


@dataclass(frozen=True)
class RemoteStatus:
    """A job's state on the server, with the server's own words for what the operator
    reads ("deleted", "killed by user")."""

    state: RemoteState
    words: str
    # DSS: this console failed the ticket itself, so its claimant may still turn it into a
    # success. Set by the engine from its journal (the source cannot know).
    failed_by_us: bool = False


class OutcomeKind(str, Enum):
    COMPLETED = "completed"        # the command succeeded and produced its result
    CRASHED = "crashed"            # the command ran and failed (non-zero exit, exception)
    START_FAILED = "start_failed"  # the command could not be started (missing binary…)
    FAILED = "failed"              # anything else: timeout, shutdown with on_shutdown=fail
    CANCELLED = "cancelled"        # the operator's Cancel/Fail (v6 has no such status:
    #                                sent as "failed" with the reason in the log)
    NOT_ALLOWED = "not_allowed"    # v6: the image has no configured command (the allowlist)
    KILLED = "killed"              # v6: killed on the server for the whole node
    REJECTED = "rejected"          # the operator rejected it at a gate (engine/gate.py): DSS
    #                                `failed`, v6 `failed` with the message in the run's log


@dataclass(frozen=True)
class Outcome:
    """How a job ended, handed to ``set_finished`` in one piece (v6: one ``PATCH /run``
    with result + log + status + finished_at; DSS: the status call)."""

    kind: OutcomeKind
    result: Path | None = None     # v6: OUTPUT_FILE
    output: Path | None = None     # the command's combined output (its tail becomes the log)
    reason: str = ""               # one line for the operator and the server log

    @property
    def success(self) -> bool:
        return self.kind is OutcomeKind.COMPLETED


@dataclass(frozen=True)
class NewWork:
    """Push: the server has new work (engine: wake the claim loop now)."""


@dataclass(frozen=True)
class WorkGone:
    """Push: the researcher killed these runs (engine: stop their processes now, as when
    the status check says they are gone)."""

    ticket_ids: tuple[int, ...]
    all: bool = False              # "kill every run on this node" (POST /kill/node)


@dataclass(frozen=True)
class Connection:
    """Push channel up or down (polling covers the gaps)."""

    connected: bool


@dataclass(frozen=True)
class LedgerNote:
    """Push: a source's own step, taken outside any job's transitions, that the ledger
    records. ``kind`` names the step, ``data`` its facts as JSON values: ids, hashes,
    sizes — never a path, a file name or a value from the data. A source may give a note
    again after a crash (at least once): the same facts, so a reader can tell a repeat."""

    kind: str
    data: Mapping[str, Any]


SourceEvent = NewWork | WorkGone | Connection | LedgerNote


@dataclass(frozen=True)
class SourceService:
    name: str
    service_hash: str
    version: str = ""


@dataclass(frozen=True)
class ClaimedWork:
    ticket_id: int
    service_hash: str
    details: dict[str, Any] = field(default_factory=dict, hash=False)  # see JobSnapshot


@dataclass(frozen=True)
class Refusal:
    """Work a source ended before claiming it, and why (in the requester's words)."""

    run_id: int
    image: str
    outcome: OutcomeKind   # NOT_ALLOWED (image not configured) | FAILED (unknown database)
    reason: str
    details: dict[str, Any]
    note: str = ""           # the operator's one line (status bar, log)
    not_retryable: str = ""  # why the job cannot run again, journaled with it


# A server call the core queues in the outbox: (kind, payload). Core kinds: progress, log,
# attach, upload, active, output, and finish, the one call that ends a job with its Outcome
# (engine/calls.py builds and recognises it; engine/outbox.py performs them all).
OutboxCall = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Rules:
    """How a source's jobs behave where sources differ, named by the behaviour (the core asks
    these, never which kind of source it has). docs/plugin-plan.md §2."""

    # A job whose service has no command (any more): keep it claimed and wait for the
    # settings ("block"), or end it at once as not allowed ("refuse").
    unconfigured: Literal["block", "refuse"]
    # A command that cannot be prepared or started: "block" (kept, service paused) or
    # "fail" (ended START_FAILED: its requester waits for an answer).
    start_failure: Literal["block", "fail"]
    # The claimant may turn its own `failed` into a success (retry of a job it failed).
    rescue_own_failure: bool
    # The command may finish the job on the server itself (ASHS scripts): a finished status
    # while it runs waits for it to exit, and exit 0 without a result asks the server.
    command_may_finish: bool
    # Each life of a job fetches its inputs again (a fresh container token per process).
    refetch_on_restart: bool
    # Seconds between updates of the server's log from the command's output; None: never.
    output_interval: float | None
    # A job stopped by a shutdown stays open (True) or fails (False); None: as the core's
    # `on_shutdown` setting says.
    leave_open_on_shutdown: bool | None
    # A job claimed by hand whose command did not run yet waits for Run again after a
    # shutdown (else it runs again at the next start, like any job left open).
    shutdown_keeps_manual_claims: bool
    # The operator may hand over a result file for a job ("Upload result…").
    operator_result: bool


@dataclass(frozen=True)
class JobWords:
    """What the core writes about a source's jobs, in the words its requesters and
    operators use."""

    job: str               # "ticket" | "run"
    cancelled: str         # the operator's cancel, before its message
    shut_down: str         # a job failed by a shutdown
    left_open: str         # a job left open by a shutdown (the operator reads it)
    gone: str              # the job is no longer the worker's on the server
    unconfigured: str      # its service has no command here (any more)
    start_failed: str      # what the requester reads when its command could not start
    killed: str            # not retryable: killed on the server
    no_operator_result: str  # refused operator result (rules.operator_result False)
    # The operator's gate (engine/gate.py): what the requester reads while the job waits
    # for approval / for its result's release, the prefix of the operator's rejection, and
    # why a decision not made in time failed it.
    awaiting_approval: str = "waiting for the provider's approval before it runs"
    awaiting_release: str = "finished; the result waits for the provider's review"
    rejected: str = "rejected by the provider"
    decision_timed_out: str = "the provider made no decision in time"


@dataclass(frozen=True)
class Ending:
    """How a job ends without its result, for ``Source.failure_calls``."""

    kind: OutcomeKind      # the outcome for a source that reports one (FAILED, CRASHED, …)
    reason: str            # what the requester reads; "" when `told`
    told: bool             # the reason already reached the requester (the command said it)
    # A redacted file of the output's last lines, or None when the service keeps its output
    # here (made on demand: only a source that sends it asks).
    tail_file: Callable[[], Path | None]
    # A redacted copy of the output log's tail for the server's log, or None (on demand).
    shared_output: Callable[[], Path | None]


class ResultRejected(Exception):
    """The command's result cannot be delivered (``Source.result_calls``): ``reason`` for
    the operator (may name local paths), ``user_reason`` for the requester."""

    def __init__(self, reason: str, user_reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.user_reason = user_reason


@dataclass(frozen=True)
class HeldCall:
    """A call held for release, as ``release_preview`` reads it: its kind and payload."""

    kind: str
    payload: Mapping[str, Any]


def file_digest(path: Path) -> tuple[int, str]:
    """A file's size and SHA-256 (read in blocks)."""
    import hashlib

    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def default_preview(held: Sequence[HeldCall]) -> Preview:
    """The held calls' files and messages (what ``release_preview`` shows by default)."""
    files: list[PreviewFile] = []
    messages: list[str] = []
    for call in held:
        path = call.payload.get("path")
        if isinstance(path, str) and call.kind in ("upload", "attach"):
            try:
                size, sha = file_digest(Path(path))
            except OSError:
                continue
            role = "result" if call.kind == "upload" else "attachment"
            name = str(call.payload.get("name") or call.payload.get("description") or
                       Path(path).name)
            files.append(PreviewFile(name=name, size=size, sha256=sha, role=role))
        elif call.kind == "log" and isinstance(call.payload.get("message"), str):
            messages.append(f"{call.payload.get('level', 'info')}: {call.payload['message']}")
    return Preview(files=tuple(files), messages=tuple(messages))


def _nothing() -> Path | None:
    return None


NO_FILE: Callable[[], Path | None] = _nothing


class Source(ABC):
    """Where jobs come from. ``key`` names the source in the journal (opaque to the engine);
    ``kind`` names its settings plug-in (``Settings.plugins[kind]``, plugins.py); ``words``
    and ``rules`` are how its jobs read and behave where sources differ."""

    key: str
    kind: ClassVar[str]
    words: ClassVar[JobWords]

    @property
    @abstractmethod
    def rules(self) -> Rules: ...
    # The window's face of this source (words, columns, actions), sent in the channel's info.
    presentation: ClassVar[Presentation]

    # -- what every source does ------------------------------------------------------------
    @abstractmethod
    def services(self) -> list[SourceService]: ...

    @abstractmethod
    def available(self, service_hashes: Sequence[str]) -> dict[str, int]: ...

    @abstractmethod
    def claim(self, service_hashes: Sequence[str], provider: str,
              instance: str) -> ClaimedWork | None: ...

    @abstractmethod
    def fetch_inputs(self, ticket_id: int, dest: Path,
                     progress: ProgressFn | None = None) -> list[Path]: ...

    @abstractmethod
    def remote_status(self, ticket_id: int) -> RemoteStatus: ...

    @abstractmethod
    def send_progress(self, ticket_id: int, value: float) -> None: ...

    @abstractmethod
    def send_log(self, ticket_id: int, level: str, message: str) -> None: ...

    @abstractmethod
    def send_attachment(self, ticket_id: int, description: str, path: Path,
                        mime_type: str | None) -> None: ...

    @abstractmethod
    def send_result_file(self, ticket_id: int, path: Path, name: str) -> None: ...

    @abstractmethod
    def set_finished(self, ticket_id: int, outcome: Outcome) -> None: ...

    @abstractmethod
    def classify(self, error: BaseException) -> Failure: ...

    @abstractmethod
    def not_retryable(self, status: RemoteStatus) -> str:
        """Why a job with this server status cannot be processed here again, in words."""

    @abstractmethod
    def default_provider(self) -> str:
        """Who claims, when the settings name no provider (ValueError in words)."""

    # -- the command and how a job ends --------------------------------------------------
    @abstractmethod
    def preflight_spec(self, key: str, command: ServiceCommand) -> CommandSpec | None:
        """What to check before claiming for a service (is its program there); None: nothing
        can be checked before the job starts. StartError in words: no job of it can start
        (a command the source cannot build)."""

    @abstractmethod
    def command_spec(self, ticket_id: int, command: ServiceCommand, paths: JobPaths,
                     nice: int) -> CommandSpec:
        """The job's command as its executor runs it: exact argv, environment, working
        directory. StartError says why it cannot start, another exception why it cannot be
        prepared (both handled as ``rules.start_failure`` says)."""

    def missing_inputs(self, paths: JobPaths) -> str | None:
        """Why the fetched inputs cannot run (the job fails), or None."""
        return None

    @abstractmethod
    def result_path(self, paths: JobPaths) -> Path:
        """The file a command that succeeded leaves as its result."""

    @abstractmethod
    def missing_result(self, result: Path) -> str:
        """Why a command that exited 0 failed: it left no result at ``result``."""

    @abstractmethod
    def result_calls(self, ticket_id: int, result: Path, export_dir: Path,
                     shared_output: Callable[[], Path | None]) -> list[OutboxCall]:
        """The calls that deliver a result and end the job as a success (each ``final``).
        ``export_dir``: the job's own place for what must be prepared first (not made yet;
        emptied by whoever uses it). Raises
        :class:`ResultRejected`."""

    @abstractmethod
    def failure_calls(self, ending: Ending) -> list[OutboxCall]:
        """The calls that end the job without its result."""

    def started_calls(self) -> list[OutboxCall]:
        """Calls when the job's command started."""
        return []

    def restarted_calls(self) -> list[OutboxCall]:
        """Calls when a job runs again after the worker stopped while it ran."""
        return []

    def rescue_calls(self) -> list[OutboxCall]:
        """Calls when the claimant retries a job it failed itself (rules.rescue_own_failure)."""
        return []

    def left_open_calls(self, rerun: bool) -> list[OutboxCall]:
        """Calls when a shutdown leaves a job open (``rerun``: the next start runs it again)."""
        return []

    def killed_remotely(self, ticket_id: int) -> bool:
        """The job that went away was killed on the server (as last seen; told once)."""
        return False

    def configured_services(self) -> list[SourceService]:
        """Services claimable as soon as the settings name them, before the next services
        refresh lists them."""
        return []

    def shares_output_tail(self, settings: Settings) -> bool:
        """Whether a service that does not say shares its output's tail (redacted)."""
        return settings.send_output_tail

    # -- what only some sources do: defaults the engine may call on any ---------------------
    def claim_subtask(self, service_hashes: Sequence[str], provider: str,
                      instance: str) -> ClaimedWork | None:
        """Work that must start even when every slot is taken (a v6 subtask: its parent
        holds a slot and waits for it). None: the source has no such work."""
        return None

    def refuse_unconfigured(self) -> list[Refusal]:
        """Each poll: end work this node will not run (the v6 allowlist)."""
        return []

    def run_details(self, ticket_id: int) -> dict[str, Any] | None:
        """What fetching the inputs learnt about the job (journaled); None: nothing."""
        return None

    def ledger_details(self, details: Mapping[str, Any]) -> dict[str, Any]:
        """What of a job's journaled details the ledger keeps: a whitelist of ids, the names
        of who asked, labels, hashes and counts (JSON values). Never argument values, local
        paths, file names or host names. Default: nothing."""
        return {}

    def mark_active(self, ticket_id: int) -> None:
        """The job's command started (v6: the run becomes ``active``)."""
        return None

    def send_output(self, ticket_id: int, output: Path) -> None:
        """The server's log of the job follows this (redacted) output copy."""
        return None

    def private_values(self) -> tuple[dict[str, str], dict[str, str]]:
        """The source's own secrets an output may show, for the redactor: variables
        (name → value) and values (placeholder → value)."""
        return {}, {}

    def log_limit(self) -> int:
        """Bytes of an output's tail the server's log may take."""
        return SHARED_LOG_LIMIT

    def update_settings(self, settings: Settings) -> None:
        """New settings (the engine's, as the operator saved them)."""
        return None

    def use_session(self, session_id: str) -> None:
        """Go on with a new login session (the operator logged in again after an expiry)."""
        raise NotImplementedError(f"a {self.kind} source takes no session from the console")

    def watch(self, notify: Callable[[SourceEvent], None]) -> None:
        """Start pushing events (v6's socket); polling stays the backstop."""
        return None

    def close(self) -> None:
        return None

    # -- how the window shows a job (called per snapshot sent: cheap, no server call) ---------
    def job_cells(self, service_key: str, details: Mapping[str, Any]) -> Cells:
        """Values of the presentation's own job columns, from what the engine journaled."""
        return {}

    def service_figures(self, service_keys: Sequence[str]) -> dict[str, ServiceFigures] | None:
        """The server's own figures per service (a DSS server counts every provider's work);
        a service left out is not known now. None: the engine counts its own jobs and asks
        ``available`` for the work waiting."""
        return None

    # -- the operator's gate (engine/gate.py; local data, no server call) ---------------------
    def requester(self, details: Mapping[str, Any]) -> Requester | None:
        """Who asked for the job, from what the engine journaled; None: the source's API
        names nobody (rules then match by service only)."""
        return None

    def approval_facts(self, ticket_id: int, paths: JobPaths,
                       details: Mapping[str, Any]) -> tuple[Fact, ...]:
        """What the operator reads before approving, from the fetched inputs. Values marked
        ``local_only`` are never journaled, logged or sent."""
        return ()

    def release_preview(self, ticket_id: int, paths: JobPaths,
                        held: Sequence[HeldCall]) -> Preview:
        """What a held result would send: by default the held calls' files (name, size,
        SHA-256) and log messages."""
        return default_preview(held)

    def waiting_calls(self, gate: str) -> list[OutboxCall]:
        """Calls when a job begins to wait at ``gate`` ("run" | "release"): the requester
        reads that it waits (a log line in the source's words)."""
        text = self.words.awaiting_approval if gate == "run" else self.words.awaiting_release
        return [("log", {"level": "info", "message": text})]

    def job_summary(self, service_key: str, details: Mapping[str, Any]) -> Summary | None:
        """The inputs as the engine learnt them, for a presentation whose inputs_view is
        "summary"; None: nothing to show."""
        return None
