"""A DSS server as the engine's job source, through the provider client."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from dss_console.core.command import CommandSpec, JobPaths
from dss_console.core.interfaces import (
    ClaimedWork,
    Ending,
    Failure,
    HeldCall,
    JobWords,
    OutboxCall,
    Outcome,
    OutcomeKind,
    ProgressFn,
    RemoteState,
    RemoteStatus,
    ResultRejected,
    Rules,
    Source,
    SourceService,
    default_preview,
)
from dss_console.core.presentation import Fact, Preview, ServiceFigures
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
from dss_console.engine import redact
from dss_console.engine.calls import finish_call
from dss_console.engine.settings import ServiceCommand
from dss_console.engine.workdirs import make_private_dir
from dss_console.sources.dss.command import command_spec, preflight_spec
from dss_console.sources.dss.presentation import PRESENTATION
from dss_console.timefmt import format_elapsed

# A ticket stopped by a shutdown with on_shutdown = "resume": what the operator reads, and
# the one line each end user reads then and when it runs again (fixed words, no detail).
LEFT_CLAIMED = ("dss-console stopped while the ticket was in flight; the ticket stays claimed "
                "on the server and runs again when dss-console starts")
RESTARTING_NOTE = "The provider is restarting; processing will resume."
RESTARTED_NOTE = "Processing restarted after the provider restarted."
CANCEL_REASON = "cancelled by the provider"
SHUTDOWN_REASON = "provider shut down"
RETRY_NOTE = "The provider is processing this ticket again (retried by the provider)"
USER_EXPORT_FAILED = ("the provider's result could not be prepared for upload; the provider "
                      "has been notified")

WORDS = JobWords(
    job="ticket", cancelled=CANCEL_REASON, shut_down=SHUTDOWN_REASON, left_open=LEFT_CLAIMED,
    gone="the ticket is no longer ours on the server",
    unconfigured="no command is configured for this service",
    start_failed=("the provider could not start this ticket's command; the provider has been "
                  "notified"),
    killed="the ticket was killed on the server",
    no_operator_result="")

# A ticket's command is the provider's configuration: one that cannot run blocks (the ticket
# stays claimed); ASHS-style scripts finish the ticket themselves; the claimant may turn its
# own `failed` into a success.
RULES = Rules(unconfigured="block", start_failure="block", rescue_own_failure=True,
              command_may_finish=True, refetch_on_restart=False, output_interval=None,
              leave_open_on_shutdown=None, shutdown_keeps_manual_claims=True,
              operator_result=True)

_STATES = {TicketStatus.CLAIMED: RemoteState.OURS, TicketStatus.SUCCESS: RemoteState.SUCCEEDED,
           TicketStatus.FAILED: RemoteState.FAILED}


class DssSource(Source):
    """A DSS server, through the provider client."""

    kind = "dss"
    words = WORDS
    rules = RULES
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
                lines=(f"Last heard from a provider: {format_elapsed(stats.last_heard_from)} ago",
                       # The server's figure: from claim to success, unlike a job's run time.
                       "Average time from claim to success (last 24 h): "
                       f"{format_elapsed(stats.avg_duration)}"))
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

    # -- the command: a template from [services], expanded for the ticket (command.py) ------
    def preflight_spec(self, key: str, command: ServiceCommand) -> CommandSpec | None:
        return preflight_spec(command)

    def command_spec(self, ticket_id: int, command: ServiceCommand, paths: JobPaths,
                     nice: int) -> CommandSpec:
        return command_spec(command, paths, nice=nice)

    def approval_facts(self, ticket_id: int, paths: JobPaths,
                       details: Mapping[str, Any]) -> tuple[Fact, ...]:
        """The service, the ticket and its input files (count and size; their names may
        carry a patient's: the workspace inspector and ITK-SNAP show them locally)."""
        files = [p for p in paths.input_dir.rglob("*") if p.is_file()] \
            if paths.input_dir.is_dir() else []
        size = sum(p.stat().st_size for p in files)
        return (Fact("Service", paths.service_name or paths.service_hash),
                Fact("Ticket", str(ticket_id)),
                Fact("Input files", f"{len(files)} files, {size / 1e6:.1f} MB"))

    def release_preview(self, ticket_id: int, paths: JobPaths,
                        held: Sequence[HeldCall]) -> Preview:
        """The export's files as they would be uploaded (scrambled names): the workspace,
        its layers, the attachments; sizes and SHA-256. Open in ITK-SNAP shows them."""
        found = default_preview(held)
        files = tuple(replace(f, role="layer") if f.role == "result"
                      and not f.name.endswith(".itksnap") else f for f in found.files)
        return replace(found, files=files)

    def missing_inputs(self, paths: JobPaths) -> str | None:
        if paths.workspace is None:
            return "the ticket has no ITK-SNAP workspace (.itksnap) among its inputs"
        return None

    # -- how a ticket ends ---------------------------------------------------------------
    def result_path(self, paths: JobPaths) -> Path:
        return paths.result

    def missing_result(self, result: Path) -> str:
        return f"the command finished without a result workspace (expected {result.name})"

    def result_calls(self, ticket_id: int, result: Path, export_dir: Path,
                     shared_output: Callable[[], Path | None]) -> list[OutboxCall]:
        """Export the result workspace (layers renamed), upload it file by file, then one
        log line, progress 1 and the end call (`success` on the server)."""
        from dss_console.workspace import WorkspaceError, export_result_workspace

        shutil.rmtree(export_dir, ignore_errors=True)
        make_private_dir(export_dir)
        try:
            exported = export_result_workspace(result, export_dir, ticket_id, copy_layers=True)
        except WorkspaceError as exc:
            raise ResultRejected(f"the result workspace could not be exported: {exc}",
                                 USER_EXPORT_FAILED) from exc
        calls: list[OutboxCall] = [("upload", {"path": str(path), "name": name, "final": True})
                                   for name, path in exported.uploads]
        calls.append(("log", {"level": "info", "final": True,
                              "message": f"Processing finished; result uploaded "
                                         f"({len(exported.uploads)} files)"}))
        calls.append(("progress", {"value": 1.0, "final": True}))
        calls.append(finish_call(OutcomeKind.COMPLETED, status="success", final=True))
        return calls

    def failure_calls(self, ending: Ending) -> list[OutboxCall]:
        """The output's tail attached (when shared), the reason as an error message (unless
        the command said it already), then the end call (`failed` on the server, whatever
        the outcome: DSS has no other word)."""
        calls: list[OutboxCall] = []
        tail_file = ending.tail_file()
        if tail_file is not None:
            calls.append(("attach", {"description": redact.TAIL_DESCRIPTION,
                                     "path": str(tail_file), "mime_type": "text/plain"}))
        if not ending.told:
            calls.append(("log", {"level": "error", "message": ending.reason}))
        elif tail_file is not None:  # an attachment is shown with the next log message
            calls.append(("log", {"level": "info", "message": redact.TAIL_NOTE}))
        calls.append(finish_call(ending.kind, reason=ending.reason, status="failed"))
        return calls

    def restarted_calls(self) -> list[OutboxCall]:
        return [("log", {"level": "info", "message": RESTARTED_NOTE})]

    def rescue_calls(self) -> list[OutboxCall]:
        return [("log", {"level": "info", "message": RETRY_NOTE})]

    def left_open_calls(self, rerun: bool) -> list[OutboxCall]:
        # Promise the user a resumption only when the next start keeps it.
        return [("log", {"level": "info", "message": RESTARTING_NOTE})] if rerun else []

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

