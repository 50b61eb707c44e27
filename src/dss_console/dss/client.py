"""The DSS provider client: `DssClient(url).services.*`, `.tickets.*`, `login/whoami/logout`."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import requests

if TYPE_CHECKING:  # the workspace package is imported only when a result is exported
    from dss_console.workspace import Workspace

from dss_console.dss import errors
from dss_console.dss.models import (
    AvailableService,
    ClaimedTicket,
    LogLevel,
    ProviderService,
    RemoteFile,
    ServiceDetail,
    ServiceStats,
    ServiceTag,
    TicketStatus,
)
from dss_console.dss.transfers import (
    ProgressCallback,
    filename_from_content_disposition,
    multipart_upload_body,
    safe_file_name,
    stream_to_file,
)
from dss_console.dss.transport import (
    DEFAULT_TIMEOUT,
    SESSION_COOKIE,
    Transport,
    bad_reply,
    has_dss_cookie,
    not_dss_server,
    parse_csv_rows,
    parse_float,
    parse_int,
    parse_json_result,
    parse_plain,
    typed_field,
)

UPLOAD_TIMEOUT = (10.0, 600.0)  # the server copies a spooled upload before it answers
# Logging in is one small query on the server: half a minute without a reply means a hung
# server, and an operator at a login prompt should not wait the 60 s a big listing may need.
LOGIN_TIMEOUT = (10.0, 30.0)
AREAS = ("input", "results")


def _hash_list(hashes: str | Iterable[str]) -> str:
    items = [hashes] if isinstance(hashes, str) else list(hashes)
    parts = [p.strip() for item in items for p in item.split(",") if p.strip()]
    if not parts:
        raise ValueError("no service hash given")
    return ",".join(parts)


def _check_area(area: str) -> str:
    if area not in AREAS:
        raise ValueError(f"area must be one of {AREAS}, not {area!r}")
    return area


class DssClient:
    """A provider's view of one DSS server.

    `session_id` resumes a stored session; `verify` is True (system/certifi CAs), a CA-bundle
    path, or False (refused unless explicitly asked for). Thread-safe: each thread gets its
    own HTTP connection pool, all sharing the one session id.
    """

    def __init__(self, server_url: str, *, session_id: str | None = None,
                 verify: bool | str = True, timeout: tuple[float, float] = DEFAULT_TIMEOUT,
                 retries: int = 3, backoff: float = 0.5):
        self.transport = Transport(server_url, verify=verify, timeout=timeout, retries=retries,
                                   backoff=backoff, session_id=session_id)
        self.services = ServicesClient(self.transport)
        self.tickets = TicketsClient(self.transport)
        from dss_console.dss.user import AdminClient, UserClient

        # End-user and sysadmin calls (itksnap-wt's -dss-* and -dssa-*).
        self.user = UserClient(self.transport)
        self.admin = AdminClient(self.transport)

    @property
    def server(self) -> str:
        return self.transport.server

    @property
    def session_id(self) -> str | None:
        return self.transport.session_id

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> DssClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- authentication ---------------------------------------------------------------------
    def login(self, token: str) -> str:
        """Exchange a one-time token for a session; returns the account's e-mail.

        Sent without the current cookie, on a fresh connection: the server kills the session
        named by the cookie when a login fails, and a working session must survive a typo.
        Never retried: the token is consumed by the first successful attempt.
        """
        token = token.strip()
        if not token:
            raise errors.LoginFailedError("Could not log in: the token is empty")
        t = self.transport
        action = f"log in to {t.server}"
        http = t.new_http_session()
        try:
            try:
                response = t.request("POST", "/api/login", action=action,
                                     params={"format": "json"}, data={"token": token},
                                     authenticated=False, http=http, entry=True,
                                     timeout=LOGIN_TIMEOUT)
            except errors.NotLoggedInError as exc:
                raise errors.LoginFailedError(
                    f"Could not {action}: the token was refused. Tokens work once; get a new one "
                    f"from {t.server}/token and paste it whole", status=exc.status,
                    server_message=exc.server_message) from None
            except errors.ServerUnreachableError as exc:
                if not exc.request_may_have_arrived:
                    raise
                # The server may have taken the token before the reply was lost.
                spent = type(exc)(f"{exc}; the token may have been used: if logging in again "
                                  f"is refused, get a new one from {t.server}/token",
                                  status=exc.status, server_message=exc.server_message)
                spent.request_may_have_arrived = True
                raise spent from None
            email = _login_email(response, action, t.server)
            session_id = response.cookies.get(SESSION_COOKIE)
            if not session_id:
                raise errors.BadReplyError(
                    f"Could not {action}: the server accepted the token but set no session "
                    "cookie (is the server's cookie domain set for this address?)")
        finally:
            http.close()
        t.session_id = session_id
        return email

    def whoami(self) -> str:
        """The e-mail of the logged-in account; NotLoggedInError otherwise."""
        t = self.transport
        if not t.session_id:
            raise errors.NotLoggedInError(f"Not logged in to {t.server}: log in with a token "
                                          f"from {t.server}/token")
        action = f"check the login at {t.server}"
        response = t.request("GET", "/api/login", action=action, params={"format": "json"},
                             idempotent=True, entry=True, timeout=LOGIN_TIMEOUT)
        return _login_email(response, action, t.server)

    def probe(self) -> None:
        """Check that the address answers HTTP at all, with a harmless GET /api/login that
        carries neither cookie nor token (any status will do). Raises ServerUnreachableError
        (NotTlsError for an https:// port that speaks plain HTTP). Used to pick a scheme
        before a single-use token is sent."""
        t = self.transport
        response = t.request("GET", "/api/login", action=f"log in to {t.server}",
                             authenticated=False, timeout=LOGIN_TIMEOUT,
                             ok_statuses=range(100, 600))
        response.close()

    def logout(self) -> None:
        """End the session on the server (best effort) and forget it locally."""
        t = self.transport
        if t.session_id:
            # The local session is dropped regardless; an orphaned server session is harmless.
            with contextlib.suppress(errors.DssError):
                t.request("GET", "/logout", action="log out", ok_statuses=(200, 302, 303))
        t.session_id = None


def _login_email(response: requests.Response, action: str, server: str) -> str:
    """The e-mail of a /api/login reply. A 2xx that is not the DSS's JSON and lacks its
    cookie (a static site, another app) is not a DSS server, and is said so in one line."""
    try:
        result = parse_json_result(response, action, server)
        return typed_field(result, "email", str, response, action, server)
    except errors.BadReplyError:
        if has_dss_cookie(response):
            raise
        raise not_dss_server(response.status_code, "/api/login", action) from None


class ServicesClient:
    """Calls about services: what this account provides, what waits, claiming."""

    def __init__(self, transport: Transport):
        self._t = transport

    def provided(self) -> list[ProviderService]:
        """Services this account provides (one entry per service and provider)."""
        t = self._t
        action = "list the provider's services"
        response = t.request("GET", "/api/pro/services", action=action,
                             params={"format": "json"}, idempotent=True)
        rows = _result_list(response, action, t)
        return [ProviderService(
            name=typed_field(r, "name", str, response, action, t.server),
            version=typed_field(r, "version", str, response, action, t.server),
            githash=typed_field(r, "githash", str, response, action, t.server),
            provider=typed_field(r, "provider", str, response, action, t.server),
        ) for r in rows]

    def available(self, hashes: str | Iterable[str]) -> list[AvailableService]:
        """Services among `hashes` with ready tickets, in claim order. Claims nothing."""
        t = self._t
        action = "check for available tickets"
        response = t.request("POST", "/api/pro/services/available", action=action,
                             params={"format": "json"}, data={"services": _hash_list(hashes)},
                             idempotent=True)
        rows = _result_list(response, action, t)
        return [AvailableService(
            githash=typed_field(r, "service_githash", str, response, action, t.server),
            name=typed_field(r, "service_name", str, response, action, t.server),
            ready_count=typed_field(r, "ready_tickets", int, response, action, t.server),
        ) for r in rows]

    def claim(self, hashes: str | Iterable[str], provider: str,
              instance: str = "default") -> ClaimedTicket | None:
        """Claim the next ready ticket of the given services; None when nothing is ready.

        Never retried. A lost reply raises ClaimOutcomeUnknownError.
        """
        t = self._t
        action = "claim a ticket"
        response = t.request("POST", "/api/pro/services/claims", action=action,
                             params={"format": "json"},
                             data={"services": _hash_list(hashes), "provider": provider,
                                   "code": instance},
                             claim=True)
        # Nothing ready: the body is the four bytes `None`, even with format=json.
        if response.content.strip() in (b"None", b""):
            return None
        rows = _result_list(response, action, t)
        if not rows:
            return None
        row = rows[0]
        return ClaimedTicket(
            ticket_id=typed_field(row, "id", int, response, action, t.server),
            service_hash=typed_field(row, "service_githash", str, response, action, t.server))

    def stats(self, githash: str) -> ServiceStats:
        t = self._t
        action = f"read the statistics of service {githash}"
        response = t.request("GET", f"/api/services/{githash}/stats", action=action,
                             params={"format": "json"}, idempotent=True)
        rows = _result_list(response, action, t)
        if not rows:
            raise errors.BadReplyError(f"Could not {action}: the reply holds no statistics")
        r = rows[0]
        avg = r.get("avg_duration")
        return ServiceStats(
            n_success=typed_field(r, "n_success", int, response, action, t.server),
            n_failed=typed_field(r, "n_failed", int, response, action, t.server),
            avg_duration=None if avg is None or float(avg) < 0 else float(avg),
            last_heard_from=typed_field(r, "last_heard_from", float, response, action, t.server),
            queue_length=typed_field(r, "queue_length", int, response, action, t.server))

    def detail(self, githash: str) -> ServiceDetail:
        """The registered service.json (description and the input tags it expects)."""
        t = self._t
        action = f"read the description of service {githash}"
        response = t.request("GET", f"/api/services/{githash}/detail", action=action,
                             idempotent=True)
        doc = parse_json_result_or_document(response, action, t)
        tags = []
        for tag in doc.get("tags") or []:
            if isinstance(tag, dict) and tag.get("name"):
                tags.append(ServiceTag(name=str(tag["name"]), type=str(tag.get("type", "")),
                                       hint=str(tag.get("hint", "")),
                                       required=bool(tag.get("required", False))))
        return ServiceDetail(name=str(doc.get("name", "")), version=str(doc.get("version", "")),
                             shortdesc=str(doc.get("shortdesc", "")),
                             longdesc=str(doc.get("longdesc", "")), tags=tuple(tags), raw=doc)


class TicketsClient:
    """Calls about one claimed ticket. ``base="/api"`` gives the end user's view of the
    ticket's files (listing, download, input upload) with the same checks."""

    def __init__(self, transport: Transport, base: str = "/api/pro"):
        self._t = transport
        self._base = base

    def status(self, ticket_id: int) -> TicketStatus:
        t = self._t
        action = f"read the status of ticket {ticket_id}"
        response = t.request("GET", f"/api/pro/tickets/{int(ticket_id)}/status", action=action,
                             idempotent=True)
        word = parse_plain(response, action, t.server, "a status word")
        if not word or " " in word:
            raise errors.BadReplyError(f"Could not {action}: {word!r} is not a status word")
        return TicketStatus.parse(word)

    def files(self, ticket_id: int, area: str = "input") -> list[RemoteFile]:
        """Files in the ticket's input or results area (names checked, never interpreted)."""
        t = self._t
        action = f"list the {area} files of ticket {ticket_id}"
        response = t.request("GET", f"{self._base}/tickets/{int(ticket_id)}/files/"
                                    f"{_check_area(area)}", action=action, idempotent=True)
        out = []
        for row in parse_csv_rows(response, action, t.server, columns=2):
            try:
                index = int(row[0])
            except ValueError:
                raise errors.BadReplyError(f"Could not {action}: {row[0]!r} is not a file index"
                                           ) from None
            out.append(RemoteFile(index=index, name=row[1]))
        return out

    def inputs(self, ticket_id: int) -> list[RemoteFile]:
        return self.files(ticket_id, "input")

    def results(self, ticket_id: int) -> list[RemoteFile]:
        return self.files(ticket_id, "results")

    def download(self, ticket_id: int, remote: RemoteFile, dest_dir: str | Path, *,
                 area: str = "input", progress: ProgressCallback | None = None) -> Path:
        """Stream one file into dest_dir under the name the server sends (checked)."""
        t = self._t
        safe_file_name(remote.name)
        action = f"download {area} file {remote.name!r} of ticket {ticket_id}"
        response = t.request(
            "GET", f"{self._base}/tickets/{int(ticket_id)}/files/{_check_area(area)}/"
                   f"{remote.index}",
            action=action, idempotent=True, stream=True)
        sent = filename_from_content_disposition(response.headers.get("Content-Disposition"))
        name = sent if sent is not None else remote.name
        try:
            safe_file_name(name)
        except errors.UnsafeFileNameError:
            response.close()
            raise
        if name != remote.name:
            # Indices follow mtime order and shift when a file is re-uploaded.
            response.close()
            raise _IndexShifted(remote.name, name)
        return stream_to_file(response, Path(dest_dir), name, progress, action=action)

    def download_all(self, ticket_id: int, dest_dir: str | Path, *, area: str = "input",
                     progress: ProgressCallback | None = None) -> list[Path]:
        """Download every file of an area. Re-lists once if the server's order shifts."""
        dest = Path(dest_dir)
        # Listed first: an unknown or unclaimed ticket leaves no empty folder behind.
        listing = self.files(ticket_id, area)
        for remote in listing:
            safe_file_name(remote.name)  # refuse a hostile listing before writing anything
        created = _make_dirs(dest, f"download the {area} files of ticket {ticket_id}")
        try:
            return self._download_listed(ticket_id, listing, dest, area, progress)
        except BaseException:
            for folder in created:  # deepest first; only what this call made, if still empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise

    def _download_listed(self, ticket_id: int, listing: list[RemoteFile], dest: Path,
                         area: str, progress: ProgressCallback | None) -> list[Path]:
        paths: list[Path] = []
        for attempt in range(3):
            done = {p.name for p in paths}
            try:
                for remote in listing:
                    if remote.name not in done:
                        paths.append(self.download(ticket_id, remote, dest, area=area,
                                                   progress=progress))
                return paths
            except _IndexShifted:
                if attempt == 2:
                    raise errors.ServerError(
                        f"Could not download the {area} files of ticket {ticket_id}: the file "
                        "list kept changing during the download") from None
                listing = self.files(ticket_id, area)
        return paths  # pragma: no cover

    def download_inputs(self, ticket_id: int, dest_dir: str | Path, *,
                        progress: ProgressCallback | None = None) -> list[Path]:
        return self.download_all(ticket_id, dest_dir, area="input", progress=progress)

    def set_progress(self, ticket_id: int, value: float, start: float = 0.0,
                     end: float = 1.0) -> None:
        """Report progress `value` (0..1) of the chunk [start, end].

        The server stores one row per chunk start and answers 500 when the same start comes
        with a different end, so callers should keep to fixed chunks (the engine posts the
        total as the single chunk 0..1).
        """
        t = self._t
        action = f"report progress of ticket {ticket_id}"
        t.request("POST", f"/api/pro/tickets/{int(ticket_id)}/progress", action=action,
                  data={"chunk_start": repr(float(start)), "chunk_end": repr(float(end)),
                        "progress": repr(float(value))})

    def progress(self, ticket_id: int) -> float:
        t = self._t
        action = f"read the progress of ticket {ticket_id}"
        response = t.request("GET", f"/api/pro/tickets/{int(ticket_id)}/progress", action=action,
                             idempotent=True)
        return parse_float(response, action, t.server)

    def log(self, ticket_id: int, level: LogLevel | str, message: str) -> int:
        """Add a message to the ticket's log (seen by the user); returns the log entry id.
        Files attached since the previous message are filed under this one."""
        level = LogLevel(level)
        t = self._t
        action = f"send a {level.value} message for ticket {ticket_id}"
        response = t.request("POST", f"/api/pro/tickets/{int(ticket_id)}/{level.value}",
                             action=action, data={"message": message})
        return parse_int(response, action, t.server)

    def attach(self, ticket_id: int, description: str, path: str | Path,
               mime_type: str | None = None, *, name: str | None = None) -> int:
        """Attach a file; it is shown under the next log message. Returns the attachment id."""
        t = self._t
        path = Path(path)
        action = f"attach {path.name!r} to ticket {ticket_id}"
        fields = {"desc": description}
        if mime_type:
            fields["mime_type"] = mime_type
        with _open_for_upload(path, action) as handle:
            body, ctype = multipart_upload_body(fields, "myfile", name or path.name, handle,
                                                mime_type)
            response = t.request("POST", f"/api/pro/tickets/{int(ticket_id)}/attachments",
                                 action=action, data=body, headers={"Content-Type": ctype},
                                 timeout=UPLOAD_TIMEOUT)
        return parse_int(response, action, t.server)

    def upload_file(self, ticket_id: int, path: str | Path, *, name: str | None = None,
                    area: str = "results", progress: ProgressCallback | None = None) -> None:
        """Stream one file to the ticket's results area, stored as `name` (default: its own)."""
        t = self._t
        path = Path(path)
        upload_name = safe_file_name(name or path.name, source="the caller")
        action = f"upload {upload_name!r} to ticket {ticket_id}"
        with _open_for_upload(path, action) as handle:
            body, ctype = multipart_upload_body({}, "myfile", upload_name, handle,
                                                "application/octet-stream", progress)
            response = t.request(
                "POST", f"{self._base}/tickets/{int(ticket_id)}/files/{_check_area(area)}",
                action=action, data=body, headers={"Content-Type": ctype},
                timeout=UPLOAD_TIMEOUT)
        if parse_plain(response, action, t.server) != "success":
            raise errors.BadReplyError(f"Could not {action}: the server did not confirm it")

    def upload_results(self, ticket_id: int, workspace: str | Path | Workspace, *,
                       progress: ProgressCallback | None = None,
                       export_dir: str | Path | None = None, area: str = "results",
                       workspace_name: str | None = None) -> list[str]:
        """Export `workspace` as ITK-SNAP does (anonymised layer names, relocatable) and upload
        every file, the workspace last. Returns the uploaded names. `area="input"` with
        `workspace_name="ticket_%08d.itksnap"` submits a new ticket's inputs."""
        from dss_console.workspace import export_result_workspace

        with tempfile.TemporaryDirectory(prefix="dss-export-", dir=export_dir) as tmp:
            exported = export_result_workspace(workspace, tmp, int(ticket_id),
                                               workspace_name=workspace_name)
            total = sum(os.path.getsize(src) for _, src in exported.uploads)
            sent = 0
            names = []
            for name, source in exported.uploads:
                base = sent

                def report(done: int, _total: int | None, base: int = base) -> None:
                    if progress:
                        progress(base + done, total)

                self.upload_file(ticket_id, source, name=name, progress=report, area=area)
                sent += os.path.getsize(source)
                names.append(name)
        return names

    def set_status(self, ticket_id: int, status: TicketStatus | str) -> TicketStatus:
        status = TicketStatus(status)
        if status not in (TicketStatus.SUCCESS, TicketStatus.FAILED):
            raise ValueError("a provider can only set a ticket to success or failed")
        t = self._t
        action = f"mark ticket {ticket_id} as {status.value}"
        response = t.request("POST", f"/api/pro/tickets/{int(ticket_id)}/status", action=action,
                             data={"status": status.value})
        return TicketStatus.parse(parse_plain(response, action, t.server, "a status word"))

    def succeed(self, ticket_id: int) -> TicketStatus:
        return self.set_status(ticket_id, TicketStatus.SUCCESS)

    def fail(self, ticket_id: int, message: str) -> TicketStatus:
        """Tell the user why (an error log entry), then mark the ticket failed."""
        self.log(ticket_id, LogLevel.ERROR, message)
        return self.set_status(ticket_id, TicketStatus.FAILED)

    def fail_unless_finished(self, ticket_id: int, message: str) -> TicketStatus:
        """`fail`, for a ticket still open. The server would turn a finished ticket into a
        failed one (a user's success lost, an error logged under a result): a finished
        ticket stays as it is and this raises TicketFinishedError, changing nothing."""
        status = self.status(ticket_id)
        if status.is_terminal:
            raise errors.TicketFinishedError(
                f"ticket {ticket_id} is already {status.value}: a finished ticket cannot be "
                "failed (nothing was changed)")
        return self.fail(ticket_id, message)


class _IndexShifted(errors.ServerError):
    def __init__(self, expected: str, got: str):
        super().__init__(f"the server sent {got!r} where {expected!r} was listed")


@contextlib.contextmanager
def _open_for_upload(path: Path, action: str) -> Iterator[io.BufferedReader]:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise errors.TransferError(f"Could not {action}: cannot read {path} ({exc.strerror})"
                                   ) from None
    with handle:
        yield handle


def _result_list(response: requests.Response, action: str, t: Transport) -> list[dict]:
    result = parse_json_result(response, action, t.server)
    if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
        raise errors.BadReplyError(f"Could not {action}: the reply is not a list of records")
    return result


def parse_json_result_or_document(response: requests.Response, action: str,
                                  t: Transport) -> dict:
    """service detail is the bare service.json, other calls wrap in {"result": ...}."""
    try:
        doc = json.loads(response.content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise bad_reply(response, action, "JSON", t.server) from None
    if isinstance(doc, dict) and isinstance(doc.get("result"), dict):
        doc = doc["result"]
    if not isinstance(doc, dict):
        raise bad_reply(response, action, "a JSON object", t.server)
    return doc


def service_hashes(services: Sequence[ProviderService]) -> list[str]:
    """Distinct hashes in listing order (a service can appear once per provider)."""
    seen: dict[str, None] = {}
    for s in services:
        seen.setdefault(s.githash, None)
    return list(seen)


def _make_dirs(dest: Path, action: str) -> list[Path]:
    """Make dest and its missing parents; return what was made, deepest first, so a failed
    download can remove it again. A file in the way is said in words, not "File exists"."""
    missing: list[Path] = []
    folder = dest
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for path in (dest, *dest.parents):
        if path.exists():
            if not path.is_dir():
                raise errors.TransferError(
                    f"Could not {action}: {path} is a file, not a folder; name a folder to "
                    "download into (it is made if missing)")
            break
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise errors.TransferError(
            f"Could not {action}: cannot make the folder {dest} ({exc.strerror})") from None
    return missing
