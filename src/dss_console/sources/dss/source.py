"""A DSS server as the engine's job source, through the provider client."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dss_console.core.interfaces import (
    ClaimedWork,
    Failure,
    Outcome,
    ProgressFn,
    RemoteState,
    RemoteStatus,
    Source,
    SourceService,
)
from dss_console.core.presentation import ServiceFigures
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
from dss_console.sources.dss.presentation import PRESENTATION

_STATES = {TicketStatus.CLAIMED: RemoteState.OURS, TicketStatus.SUCCESS: RemoteState.SUCCEEDED,
           TicketStatus.FAILED: RemoteState.FAILED}


class DssSource(Source):
    """A DSS server, through the provider client."""

    kind = "dss"
    presentation = PRESENTATION

    def __init__(self, client: DssClient) -> None:
        self.client = client
        self.key = client.server

    def close(self) -> None:
        # Drops the client's connections only: a later call opens new ones.
        self.client.close()

    def services(self) -> list[SourceService]:
        seen: dict[str, SourceService] = {}
        for s in self.client.services.provided():
            seen.setdefault(s.githash, SourceService(s.name, s.githash, s.version))
        return list(seen.values())

    def service_figures(self, service_keys: Sequence[str]) -> dict[str, ServiceFigures]:
        figures: dict[str, ServiceFigures] = {}
        for key in service_keys:
            try:
                stats = self.client.services.stats(key)
            except DssError:
                continue  # not known now: the window keeps showing "—"
            figures[key] = ServiceFigures(
                ready=stats.queue_length, done=stats.n_success, failed=stats.n_failed,
                lines=(f"Last heard from a provider: {_duration(stats.last_heard_from)} ago",
                       # The server's figure: from claim to success, unlike a job's run time.
                       "Average time from claim to success (last 24 h): "
                       f"{_duration(stats.avg_duration)}"))
        return figures

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
                     progress: ProgressFn | None = None) -> list[Path]:
        return self.client.tickets.download_inputs(ticket_id, dest, progress=progress)

    def remote_status(self, ticket_id: int) -> RemoteStatus:
        status = self.client.tickets.status(ticket_id)
        # `claimed` counts as ours; anything neither claimed nor finished (deleted, ready
        # again, timed out) is gone.
        return RemoteStatus(_STATES.get(status, RemoteState.GONE), status.value)

    def not_retryable(self, status: RemoteStatus) -> str:
        words = status.words
        if words == "deleted":
            return "the ticket was deleted on the server"
        if words == "success":
            return "the ticket was finished on the server by someone else"
        if words == "failed":
            return "the ticket was failed on the server by someone else"
        if words == "ready":
            return "the ticket was resubmitted on the server and will be claimed as a new job"
        return f"the ticket is {words} on the server"

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

    def set_finished(self, ticket_id: int, outcome: Outcome) -> None:
        # DSS knows two ends: every outcome but COMPLETED fails the ticket (the reason went
        # ahead as a log message).
        self.client.tickets.set_status(
            ticket_id, TicketStatus.SUCCESS if outcome.success else TicketStatus.FAILED)

    def classify(self, error: BaseException) -> Failure:
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


def classify_dss_error(error: BaseException) -> Failure:
    if isinstance(error, NotLoggedInError):
        return Failure.LOGGED_OUT
    if isinstance(error, TicketDeletedError | TicketNotClaimedError | TicketNotFoundError):
        return Failure.GONE
    if isinstance(error, ClaimOutcomeUnknownError):
        return Failure.TRANSIENT
    if isinstance(error, ServerUnreachableError):
        return Failure.TRANSIENT
    if isinstance(error, ServerError) and (error.status or 0) >= 500:
        return Failure.TRANSIENT
    if isinstance(error, BadReplyError):
        return Failure.TRANSIENT  # a proxy's error page; the next attempt may pass
    if isinstance(error, TransferError | UnsafeFileNameError | DssError | OSError):
        return Failure.REFUSED
    return Failure.REFUSED


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
