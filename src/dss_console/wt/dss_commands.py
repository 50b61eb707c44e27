"""The DSS commands: provider (-dssp-*), user (-dss-*) and admin (-dssa-*).

Output follows WorkspaceTool.cxx: CSV replies printed as FormattedTable rows with the
command's prefix, single-word replies as one prefixed line, -dssp-tickets-set-progress's
"success" and upload/creation notes without a prefix.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from dss_console.dss import DssError, LogLevel
from dss_console.workspace import WorkspaceError

from .cmdline import EXIT_NOTHING_TO_CLAIM, ArgReader, WtError
from .context import RunContext
from .injob import job_ticket, report_to_job
from .table import format_table, parse_csv

__all__ = ["DSS_COMMANDS"]

Handler = Callable[[RunContext, ArgReader], None]
TERMINAL = ("failed", "success", "timeout", "deleted")
WAIT_POLL_SECONDS = 5.0  # -dss-tickets-wait's pace while nothing fails (as itksnap-wt)


def _table(ctx: RunContext, rows: list[list[str]]) -> None:
    for line in format_table(rows, ctx.prefix):
        ctx.raw(line)


def _csv(ctx: RunContext, text: str) -> None:
    _table(ctx, parse_csv(text))


def _ticket(args: ArgReader) -> int:
    return args.read_int("a ticket id")


# -- provider ------------------------------------------------------------------------------
def dssp_services_list(ctx: RunContext, args: ArgReader) -> None:
    services = ctx.client().services.provided()
    _table(ctx, [[s.name, s.version, s.githash, s.provider] for s in services])


def claim_poll_interval(timeout: float) -> float:
    # itksnap-wt retries every 30 s (so a timeout under 30 s means one try); a pace of 1-5 s
    # makes the timeout mean what its help says, at one cheap query per provider.
    return min(5.0, max(1.0, timeout / 20.0))


def dssp_services_claim(ctx: RunContext, args: ArgReader) -> None:
    hashes = args.read_string("a comma-separated list of service hashes")
    provider = args.read_string("a provider name")
    instance = args.read_string("an instance id")
    timeout = float(args.read_int("a timeout in seconds")) if args.optional_count() else 0.0
    deadline = time.monotonic() + timeout
    client = ctx.client()
    while True:
        try:
            ticket = client.services.claim(hashes, provider, instance)
        except ValueError as exc:
            raise WtError(str(exc)) from None
        if ticket is not None:
            _table(ctx, [[str(ticket.ticket_id), ticket.service_hash, "claimed"]])
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise WtError("Timed out waiting for available tickets", code=EXIT_NOTHING_TO_CLAIM)
        time.sleep(min(claim_poll_interval(timeout), left))


def dssp_tickets_download(ctx: RunContext, args: ArgReader) -> None:
    ticket = _ticket(args)
    directory = args.read_string("an output directory")
    paths = ctx.client().tickets.download_inputs(ticket, directory)
    if not paths:
        raise WtError(f"empty or invalid list of files for ticket {ticket}")
    for path in paths:
        ctx.emit(os.path.abspath(path))


def dssp_tickets_fail(ctx: RunContext, args: ArgReader) -> None:
    ticket = _ticket(args)
    message = args.read_string("a message")
    ctx.emit(ctx.client().tickets.fail_unless_finished(ticket, message).value)


def dssp_tickets_success(ctx: RunContext, args: ArgReader) -> None:
    ticket = _ticket(args)
    if ticket == job_ticket() and os.environ.get("DSS_RESULT_WORKSPACE"):
        # The engine marks its own ticket `success` once the command exits 0 with a result,
        # after everything the command reported: sending it now would overtake those.
        ctx.emit("success")
        return
    ctx.emit(ctx.client().tickets.succeed(ticket).value)


def dssp_tickets_status(ctx: RunContext, args: ArgReader) -> None:
    ctx.emit(ctx.client().tickets.status(_ticket(args)).value)


def dssp_tickets_set_progress(ctx: RunContext, args: ArgReader) -> None:
    ticket = _ticket(args)
    start, end, value = args.read_float(), args.read_float(), args.read_float()
    for name, number in (("chunk start", start), ("chunk end", end), ("progress", value)):
        if not 0.0 <= number <= 1.0:
            raise WtError(f"{name} {number:g} is outside [0, 1] (all three are fractions)")
    if start > end:
        raise WtError(f"chunk start {start:g} is after chunk end {end:g}")
    if ticket == job_ticket():
        report_to_job(["progress", repr(start), repr(end), repr(value)])
    else:
        ctx.client().tickets.set_progress(ticket, value, start, end)
    ctx.info("success")  # the server's reply, printed without a prefix by itksnap-wt


def dssp_tickets_log(ctx: RunContext, args: ArgReader) -> None:
    ticket = _ticket(args)
    kind = args.read_string("a message type (info, warning or error)")
    message = args.read_string("a message")
    if kind not in ("info", "warning", "error"):
        raise WtError(f"message type must be info, warning or error, not {kind!r}")
    if ticket == job_ticket():
        report_to_job([kind, message])
    else:
        ctx.client().tickets.log(ticket, LogLevel(kind), message)


def dssp_tickets_attach(ctx: RunContext, args: ArgReader) -> None:
    ticket = _ticket(args)
    description = args.read_string("a description")
    filename = args.read_existing_file()
    mime = args.read_string("a MIME type") if args.optional_count() else None
    if ticket == job_ticket():
        report_to_job(["attach", description, os.path.abspath(filename)] + ([mime] if mime else []))
    else:
        ctx.client().tickets.attach(ticket, description, filename, mime)


def dssp_tickets_upload(ctx: RunContext, args: ArgReader) -> None:
    ticket = _ticket(args)
    result = os.environ.get("DSS_RESULT_WORKSPACE")
    if ticket == job_ticket() and result:
        # Inside the job: hand the result to the engine, which exports and uploads it
        # through its journaled outbox (in order, across outages) when the command ends.
        ctx.ws.require_loaded()
        ctx.ws.copy().save(result)
        ctx.info(f"Result workspace for ticket {ticket} written to {result}")
        return
    workspace = ctx.ws.as_workspace()
    try:
        names = ctx.client().tickets.upload_results(ticket, workspace)
    except WorkspaceError as exc:
        raise WtError(f"could not upload the workspace: {exc}") from None
    ctx.info(f"Exported workspace to {names[-1]}")
    for name in names:
        ctx.info(f"Upload {name}")


# -- user ----------------------------------------------------------------------------------
def dss_auth(ctx: RunContext, args: ArgReader) -> None:
    """Log in with a token read from standard input; the session goes to dss-console's
    credential store (keyring or private file), never to ~/.alfabis."""
    from dss_console.commands.context import session_store
    from dss_console.connection import login_with_token

    url = args.read_string("a server URL")
    ctx.raw(f"Paste this link into your browser to obtain a token:  {url.rstrip('/')}/token")
    ctx.out.write("  Enter the token: ")
    ctx.flush()
    words = ctx.stdin.readline().split()
    if not words:
        raise WtError("no token given on standard input")
    logged_in = login_with_token(url, words[0], session_store())
    logged_in.client.close()
    ctx.raw(f"Success: logged in as {logged_in.email}")


def dss_services_list(ctx: RunContext, args: ArgReader) -> None:
    _csv(ctx, ctx.client().user.services_csv())


def dss_services_detail(ctx: RunContext, args: ArgReader) -> None:
    service = args.read_string("a service hash")
    try:
        text = ctx.client().user.service_detail_text(service)
    except ValueError as exc:
        raise WtError(str(exc)) from None
    ctx.emit_lines(text.splitlines())


def dss_tickets_create(ctx: RunContext, args: ArgReader) -> None:
    service = args.read_string("a service name or hash")
    workspace = ctx.ws.as_workspace()
    user = ctx.client().user
    ticket = user.create_ticket(service)
    ctx.info(f"Created new ticket ({ticket})")
    try:
        user.files.upload_results(ticket, workspace, area="input",
                                  workspace_name=f"ticket_{ticket:08d}.itksnap")
    except WorkspaceError as exc:
        raise WtError(f"could not upload the workspace: {exc}") from None
    ctx.info(f"Changed ticket status to ({user.mark_ready(ticket)})")
    ctx.emit(str(ticket))


def dss_tickets_list(ctx: RunContext, args: ArgReader) -> None:
    _csv(ctx, ctx.client().user.tickets_csv())


def dss_tickets_log(ctx: RunContext, args: ArgReader) -> None:
    """Log rows without the id and attachment-count columns, unprefixed (PrintTicketLog),
    each followed by its attachments as ``  @ URL : DESCRIPTION``."""
    ticket = _ticket(args)
    user = ctx.client().user
    rows = user.log_rows(ticket)
    shown = [False, True, True, False, True]
    for row, line in zip(rows, format_table(rows, "", shown), strict=True):
        ctx.raw(line)
        if int(row[3] or 0) > 0:
            for attachment in user.log_attachment_rows(int(row[0])):
                ctx.raw(f"  @ {attachment[3]} : {attachment[1]}")


def dss_tickets_progress(ctx: RunContext, args: ArgReader) -> None:
    ctx.emit(ctx.client().user.progress_text(_ticket(args)))


def dss_tickets_wait(ctx: RunContext, args: ArgReader) -> None:
    ticket = _ticket(args)
    timeout = float(args.read_int("a timeout in seconds")) if args.optional_count() else 10000.0
    user = ctx.client().user
    deadline = time.monotonic() + timeout
    last_log, progress, status, failures = 0, 0.0, "", 0
    while time.monotonic() < deadline and failures < 5:
        try:
            detail = user.detail(ticket, last_log)
        except DssError:
            failures += 1
        else:
            failures = 0
            progress = float(detail.get("progress") or progress)
            status = str(detail.get("status") or "")
            for entry in detail.get("log") or []:
                last_log = int(entry.get("id", last_log))
                ctx.raw(f"{entry.get('atime', '')!s:>20} {entry.get('category', '')!s:>10} "
                        f"{entry.get('message', '')}")
                for attachment in entry.get("attachments") or []:
                    ctx.raw(f"  @ {attachment.get('url', '')} : "
                            f"{attachment.get('description', '')}")
        bar = "".join("#" if i <= progress * 78 else " " for i in range(78))
        ctx.raw(f"{bar} {int(100 * progress):3d}% ")
        if status in TERMINAL:
            ctx.raw(f"Ticket completed with status: {status}")
            return
        ctx.flush()
        time.sleep(min(WAIT_POLL_SECONDS if failures == 0 else 10.0,
                       max(0.0, deadline - time.monotonic())))
    raise WtError(f"timed out waiting for ticket {ticket}")


def dss_tickets_download(ctx: RunContext, args: ArgReader) -> None:
    ticket = _ticket(args)
    directory = args.read_string("an output directory")
    paths = ctx.client().user.download_results(ticket, directory)
    if not paths:
        raise WtError(f"empty or invalid list of files for ticket {ticket}")
    for path in paths:
        ctx.emit(os.path.abspath(path))


def dss_tickets_delete(ctx: RunContext, args: ArgReader) -> None:
    ctx.emit(ctx.client().user.delete(_ticket(args)))


# -- admin ---------------------------------------------------------------------------------
def _admin_reply(ctx: RunContext, text: str) -> None:
    ctx.emit(text.strip())


def dssa_providers_list(ctx: RunContext, args: ArgReader) -> None:
    _csv(ctx, ctx.client().admin.providers_csv())


def dssa_providers_add(ctx: RunContext, args: ArgReader) -> None:
    _admin_reply(ctx, ctx.client().admin.add_provider(args.read_string("a provider name")))


def dssa_providers_delete(ctx: RunContext, args: ArgReader) -> None:
    name = args.read_string("a provider name")
    _admin_reply(ctx, _checked(lambda: ctx.client().admin.delete_provider(name)))


def dssa_providers_users_list(ctx: RunContext, args: ArgReader) -> None:
    name = args.read_string("a provider name")
    _csv(ctx, _checked(lambda: ctx.client().admin.provider_users_csv(name)))


def dssa_providers_users_add(ctx: RunContext, args: ArgReader) -> None:
    name, email = args.read_string("a provider name"), args.read_string("an e-mail address")
    _admin_reply(ctx, _checked(lambda: ctx.client().admin.add_provider_user(name, email)))


def dssa_providers_users_delete(ctx: RunContext, args: ArgReader) -> None:
    name, user_id = args.read_string("a provider name"), args.read_int("a numeric user id")
    _admin_reply(ctx, _checked(lambda: ctx.client().admin.delete_provider_user(name, user_id)))


def dssa_providers_services_list(ctx: RunContext, args: ArgReader) -> None:
    name = args.read_string("a provider name")
    _csv(ctx, _checked(lambda: ctx.client().admin.provider_services_csv(name)))


def dssa_providers_services_add(ctx: RunContext, args: ArgReader) -> None:
    name, repo = args.read_string("a provider name"), args.read_string("a git repository")
    ref = args.read_string("a git ref")
    _admin_reply(ctx, _checked(lambda: ctx.client().admin.add_provider_service(name, repo, ref)))


def dssa_providers_services_delete(ctx: RunContext, args: ArgReader) -> None:
    name, githash = args.read_string("a provider name"), args.read_string("a service hash")
    _admin_reply(ctx, _checked(
        lambda: ctx.client().admin.delete_provider_service(name, githash)))


def _checked(call: Callable[[], str]) -> str:
    try:
        return call()
    except ValueError as exc:
        raise WtError(str(exc)) from None


DSS_COMMANDS: dict[str, Handler] = {}
for _names, _handler in (
    (("-dssp-services-list",), dssp_services_list),
    (("-dssp-services-claim",), dssp_services_claim),
    (("-dssp-tickets-download",), dssp_tickets_download),
    (("-dssp-tickets-fail",), dssp_tickets_fail),
    (("-dssp-tickets-success",), dssp_tickets_success),
    (("-dssp-tickets-status",), dssp_tickets_status),
    (("-dssp-tickets-set-progress",), dssp_tickets_set_progress),
    (("-dssp-tickets-log",), dssp_tickets_log),
    (("-dssp-tickets-attach",), dssp_tickets_attach),
    (("-dssp-tickets-upload",), dssp_tickets_upload),
    (("-dss-auth",), dss_auth),
    (("-dss-services-list",), dss_services_list),
    (("-dss-services-detail",), dss_services_detail),
    (("-dss-tickets-create", "-dss-ticket-create"), dss_tickets_create),
    (("-dss-tickets-list", "-dtl"), dss_tickets_list),
    (("-dss-tickets-log", "-dt-log"), dss_tickets_log),
    (("-dss-tickets-progress",), dss_tickets_progress),
    (("-dss-tickets-wait",), dss_tickets_wait),
    (("-dss-tickets-download",), dss_tickets_download),
    (("-dss-tickets-delete", "-dt-del"), dss_tickets_delete),
    (("-dssa-providers-list",), dssa_providers_list),
    (("-dssa-providers-add",), dssa_providers_add),
    (("-dssa-providers-delete",), dssa_providers_delete),
    (("-dssa-providers-users-list",), dssa_providers_users_list),
    (("-dssa-providers-users-add",), dssa_providers_users_add),
    (("-dssa-providers-users-delete",), dssa_providers_users_delete),
    (("-dssa-providers-services-list",), dssa_providers_services_list),
    (("-dssa-providers-services-add",), dssa_providers_services_add),
    (("-dssa-providers-services-delete",), dssa_providers_services_delete),
):
    for _name in _names:
        DSS_COMMANDS[_name] = _handler
