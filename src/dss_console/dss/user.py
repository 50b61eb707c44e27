"""The DSS end-user and admin calls (``/api/services``, ``/api/tickets``, ``/api/admin``).

Replies are handed back as the server's own text or rows: the callers (``dss-console wt``)
print them in itksnap-wt's layout. Files of a user's ticket go through a
:class:`TicketsClient` on the ``/api`` base, so names are checked exactly as for providers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from dss_console.dss import errors
from dss_console.dss.transport import (
    Transport,
    bad_reply,
    parse_csv_rows,
    parse_int,
    parse_plain,
)

__all__ = ["AdminClient", "UserClient"]


def _segment(value: str, what: str) -> str:
    """One URL path segment; the server's routes only match word characters and '-'."""
    if not value or "/" in value or value in (".", ".."):
        raise ValueError(f"{value!r} is not a valid {what}")
    return quote(value, safe="")


def _text(response: Any, action: str, t: Transport) -> str:
    try:
        return response.content.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_reply(response, action, "text", t.server) from None


class UserClient:
    """What ITK-SNAP's DSS dialog does: list services, submit and follow tickets."""

    def __init__(self, transport: Transport):
        self._t = transport
        from dss_console.dss.client import TicketsClient

        # Same file listing, download and upload code as the provider side, on /api.
        self.files = TicketsClient(transport, base="/api")

    def services_csv(self) -> str:
        """``name,githash,version,shortdesc`` rows of all current services."""
        action = "list the services"
        response = self._t.request("GET", "/api/services", action=action, idempotent=True)
        return _text(response, action, self._t)

    def service_detail_text(self, githash: str) -> str:
        action = f"read the description of service {githash}"
        response = self._t.request("GET", f"/api/services/{_segment(githash, 'service')}/detail",
                                   action=action, idempotent=True)
        return _text(response, action, self._t)

    def create_ticket(self, service: str) -> int:
        """A new ticket (status ``init``) for a service given by git hash or by name."""
        field = ("githash" if len(service) == 40
                 and all(c in "0123456789abcdef" for c in service) else "name")
        action = f"create a ticket for service {service}"
        response = self._t.request("POST", "/api/tickets", action=action, data={field: service})
        return parse_int(response, action, self._t.server)

    def mark_ready(self, ticket_id: int) -> str:
        action = f"mark ticket {ticket_id} ready"
        response = self._t.request("POST", f"/api/tickets/{int(ticket_id)}/status",
                                   action=action, data={"status": "ready"})
        return parse_plain(response, action, self._t.server)

    def tickets_csv(self) -> str:
        """``id,service,status`` of the user's tickets (deleted ones excluded)."""
        action = "list your tickets"
        response = self._t.request("GET", "/api/tickets", action=action, idempotent=True)
        return _text(response, action, self._t)

    def log_rows(self, ticket_id: int, since: int = 0) -> list[list[str]]:
        """``id,atime,category,attachments,message`` log rows after log id ``since``."""
        action = f"read the log of ticket {ticket_id}"
        response = self._t.request("GET", f"/api/tickets/{int(ticket_id)}/log", action=action,
                                   params={"since": str(int(since))}, idempotent=True)
        return parse_csv_rows(response, action, self._t.server, columns=5)

    def log_attachment_rows(self, log_id: int) -> list[list[str]]:
        """``id,description,mime_type,url`` of a log entry's attachments."""
        action = f"read the attachments of log entry {log_id}"
        response = self._t.request("GET", f"/api/tickets/logs/{int(log_id)}/attachments",
                                   action=action, idempotent=True)
        return parse_csv_rows(response, action, self._t.server, columns=4)

    def progress_text(self, ticket_id: int) -> str:
        action = f"read the progress of ticket {ticket_id}"
        response = self._t.request("GET", f"/api/tickets/{int(ticket_id)}/progress",
                                   action=action, idempotent=True)
        return parse_plain(response, action, self._t.server)

    def detail(self, ticket_id: int, since: int = 0) -> dict[str, Any]:
        """Status, progress and log entries after ``since`` (the dialog's polling call)."""
        action = f"read the details of ticket {ticket_id}"
        response = self._t.request("GET", f"/api/tickets/{int(ticket_id)}/detail",
                                   action=action, params={"since": str(int(since))},
                                   idempotent=True)
        try:
            doc = json.loads(response.content.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise bad_reply(response, action, "JSON", self._t.server) from None
        result = doc.get("result") if isinstance(doc, dict) else None
        if not isinstance(result, dict):
            raise errors.BadReplyError(f"Could not {action}: the reply holds no details")
        return result

    def delete(self, ticket_id: int) -> str:
        action = f"delete ticket {ticket_id}"
        response = self._t.request("GET", f"/api/tickets/{int(ticket_id)}/delete",
                                   action=action)
        return parse_plain(response, action, self._t.server)

    def download_results(self, ticket_id: int, dest_dir: str | Path) -> list[Path]:
        return self.files.download_all(ticket_id, dest_dir, area="results")


class AdminClient:
    """The sysadmin calls of ``/api/admin`` (providers, their users and services)."""

    def __init__(self, transport: Transport):
        self._t = transport

    def _call(self, method: str, path: str, action: str,
              data: dict[str, str] | None = None) -> str:
        response = self._t.request(method, path, action=action, data=data,
                                   idempotent=method == "GET")
        return _text(response, action, self._t)

    def providers_csv(self) -> str:
        return self._call("GET", "/api/admin/providers", "list the providers")

    def add_provider(self, name: str) -> str:
        return self._call("POST", "/api/admin/providers", f"add provider {name}",
                          {"name": name})

    def delete_provider(self, name: str) -> str:
        # The server routes deletions as GET (itksnap-wt's POST gets 405 from it).
        return self._call("GET", f"/api/admin/providers/{_segment(name, 'provider')}/delete",
                          f"delete provider {name}")

    def provider_users_csv(self, provider: str) -> str:
        return self._call("GET", f"/api/admin/providers/{_segment(provider, 'provider')}/users",
                          f"list the users of provider {provider}")

    def add_provider_user(self, provider: str, email: str) -> str:
        return self._call("POST", f"/api/admin/providers/{_segment(provider, 'provider')}/users",
                          f"add {email} to provider {provider}", {"email": email})

    def delete_provider_user(self, provider: str, user_id: int) -> str:
        return self._call(
            "GET", f"/api/admin/providers/{_segment(provider, 'provider')}/users/"
                   f"{int(user_id)}/delete", f"remove user {user_id} from provider {provider}")

    def provider_services_csv(self, provider: str) -> str:
        return self._call("GET",
                          f"/api/admin/providers/{_segment(provider, 'provider')}/services",
                          f"list the services of provider {provider}")

    def add_provider_service(self, provider: str, repo: str, ref: str) -> str:
        return self._call("POST",
                          f"/api/admin/providers/{_segment(provider, 'provider')}/services",
                          f"add a service to provider {provider}", {"repo": repo, "ref": ref})

    def delete_provider_service(self, provider: str, githash: str) -> str:
        return self._call(
            "GET", f"/api/admin/providers/{_segment(provider, 'provider')}/services/"
                   f"{_segment(githash, 'service hash')}/delete",
            f"remove service {githash} from provider {provider}")
