"""The seam between the engine and where jobs come from.

The engine calls a `JobSource` (claim, fetch inputs, report, upload, finish, status) and sees
its failures only as four kinds: transient (retry later), logged out (pause until the
operator logs in again), ticket gone (stop working on it), refused (this call will never
work). The DSS specifics live in `DssSource` alone; the vantage6 node is
`dss_console.v6.source.V6Source` (``kind = "v6"``), which speaks the same words through
``remote_status`` and takes the neutral types below (``RemoteState``, ``Outcome``, the push
events) where DSS has no equivalent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from dss_console.dss import (
    BadReplyError,
    ClaimOutcomeUnknownError,
    DssClient,
    DssError,
    LogLevel,
    NotLoggedInError,
    ServerError,
    ServerUnreachableError,
    TicketDeletedError,
    TicketNotClaimedError,
    TicketNotFoundError,
    TicketStatus,
    TransferError,
    UnsafeFileNameError,
)

TRANSIENT = "transient"
LOGGED_OUT = "logged_out"
GONE = "gone"
REFUSED = "refused"


# -- neutral seam types (both sources) --------------------------------------------------


class RemoteState(str, Enum):
    """Where a job stands on the server, in words both sources share.

    DSS: ``claimed`` → OURS, ``success`` → SUCCEEDED, ``failed`` → FAILED,
    deleted/unclaimed/other provider → GONE. v6: not finished → OURS, ``completed`` →
    SUCCEEDED, crashed/failed/start failed/not allowed → FAILED, ``killed by user`` or 404
    → GONE.
    """

    OURS = "ours"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    GONE = "gone"


# The DSS status words the engine compares (``remote_status``), for a source that thinks in
# RemoteState: the five call sites stay the same for both sources.
STATUS_WORD = {RemoteState.OURS: "claimed", RemoteState.SUCCEEDED: "success",
               RemoteState.FAILED: "failed", RemoteState.GONE: "deleted"}


class OutcomeKind(str, Enum):
    COMPLETED = "completed"        # the command succeeded and produced its result
    CRASHED = "crashed"            # the command ran and failed (non-zero exit, exception)
    START_FAILED = "start_failed"  # the command could not be started (missing binary…)
    FAILED = "failed"              # anything else: timeout, shutdown with on_shutdown=fail
    CANCELLED = "cancelled"        # the operator's Cancel/Fail (v6 has no such status:
    #                                sent as "failed" with the reason in the log)
    NOT_ALLOWED = "not_allowed"    # v6: the image has no configured command (the allowlist)
    KILLED = "killed"              # v6: killed on the server for the whole node


@dataclass(frozen=True)
class Outcome:
    """How a job ended, handed to ``set_finished`` in one piece (v6: one ``PATCH /run``
    with result + log + status + finished_at)."""

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


SourceEvent = NewWork | WorkGone | Connection


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


class JobSource(Protocol):
    key: str  # stable identity of the source in the journal (the server URL)
    kind: str  # "dss" | "v6": which job profile the engine uses (engine/profiles.py)

    def services(self) -> list[SourceService]: ...
    def available(self, service_hashes: Sequence[str]) -> dict[str, int]: ...
    def claim(self, service_hashes: Sequence[str], provider: str,
              instance: str) -> ClaimedWork | None: ...
    def fetch_inputs(self, ticket_id: int, dest: Path,
                     progress: Callable[[int, int | None], None] | None = None) -> list[Path]: ...
    def remote_status(self, ticket_id: int) -> str: ...
    def send_progress(self, ticket_id: int, value: float) -> None: ...
    def send_log(self, ticket_id: int, level: str, message: str) -> None: ...
    def send_attachment(self, ticket_id: int, description: str, path: Path,
                        mime_type: str | None) -> None: ...
    def send_result_file(self, ticket_id: int, path: Path, name: str) -> None: ...
    def set_finished(self, ticket_id: int, success: bool) -> None: ...
    def classify(self, error: BaseException) -> str: ...


class DssSource:
    """A DSS server, through the provider client."""

    kind = "dss"

    def __init__(self, client: DssClient):
        self.client = client
        self.key = client.server

    def services(self) -> list[SourceService]:
        seen: dict[str, SourceService] = {}
        for s in self.client.services.provided():
            seen.setdefault(s.githash, SourceService(s.name, s.githash, s.version))
        return list(seen.values())

    def available(self, service_hashes: Sequence[str]) -> dict[str, int]:
        if not service_hashes:
            return {}
        return {a.githash: a.ready_count for a in self.client.services.available(service_hashes)}

    def claim(self, service_hashes: Sequence[str], provider: str,
              instance: str) -> ClaimedWork | None:
        claimed = self.client.services.claim(list(service_hashes), provider, instance)
        if claimed is None:
            return None
        return ClaimedWork(claimed.ticket_id, claimed.service_hash)

    def fetch_inputs(self, ticket_id: int, dest: Path,
                     progress: Callable[[int, int | None], None] | None = None) -> list[Path]:
        return self.client.tickets.download_inputs(ticket_id, dest, progress=progress)

    def remote_status(self, ticket_id: int) -> str:
        status = self.client.tickets.status(ticket_id)
        return status.value if status is not TicketStatus.UNKNOWN else "unknown"

    def send_progress(self, ticket_id: int, value: float) -> None:
        # Always the whole ticket as one chunk: the server answers 500 when a chunk start
        # comes back with a different end, so local chunks are summed before sending.
        self.client.tickets.set_progress(ticket_id, value, 0.0, 1.0)

    def send_log(self, ticket_id: int, level: str, message: str) -> None:
        self.client.tickets.log(ticket_id, LogLevel(level), message)

    def send_attachment(self, ticket_id: int, description: str, path: Path,
                        mime_type: str | None) -> None:
        self.client.tickets.attach(ticket_id, description, path, mime_type)

    def send_result_file(self, ticket_id: int, path: Path, name: str) -> None:
        self.client.tickets.upload_file(ticket_id, path, name=name)

    def set_finished(self, ticket_id: int, success: bool) -> None:
        self.client.tickets.set_status(ticket_id,
                                       TicketStatus.SUCCESS if success else TicketStatus.FAILED)

    def classify(self, error: BaseException) -> str:
        return classify_dss_error(error)

    def use_session(self, session_id: str) -> None:
        """Go on with a new session (the operator logged in again after an expiry)."""
        self.client.transport.session_id = session_id

    def default_provider(self) -> str:
        """The provider to name in claims when none is configured: the one provider this
        account belongs to. ValueError (in words) when it belongs to none or several."""
        providers = sorted({s.provider for s in self.client.services.provided()})
        if len(providers) == 1:
            return providers[0]
        if not providers:
            raise ValueError("this account provides no services on the server")
        raise ValueError(f"this account belongs to several providers ({', '.join(providers)}):"
                         " choose one (--provider NAME, or provider in the settings)")


def classify_dss_error(error: BaseException) -> str:
    if isinstance(error, NotLoggedInError):
        return LOGGED_OUT
    if isinstance(error, TicketDeletedError | TicketNotClaimedError | TicketNotFoundError):
        return GONE
    if isinstance(error, ClaimOutcomeUnknownError):
        return TRANSIENT
    if isinstance(error, ServerUnreachableError):
        return TRANSIENT
    if isinstance(error, ServerError) and (error.status or 0) >= 500:
        return TRANSIENT
    if isinstance(error, BadReplyError):
        return TRANSIENT  # a proxy's error page; the next attempt may pass
    if isinstance(error, TransferError | UnsafeFileNameError | DssError | OSError):
        return REFUSED
    return REFUSED
