"""One exception hierarchy for everything that can go wrong talking to a DSS server.

Every message is a sentence an operator can act on. Messages never contain the token or
the session cookie: they are built from the HTTP status, the request path and the
server's (trimmed, de-HTMLed) reply text only.
"""

from __future__ import annotations


class DssError(Exception):
    """Base class: a DSS call failed. `str(err)` is a complete, human-readable sentence."""

    def __init__(self, message: str, *, status: int | None = None, server_message: str = ""):
        super().__init__(message)
        self.status = status
        self.server_message = server_message


class NotLoggedInError(DssError):
    """No valid session: never logged in, logged out, or the server forgot the session."""


class LoginFailedError(DssError):
    """A token login was refused (wrong token, or a token already used once)."""


class InsufficientPrivilegesError(DssError):
    """Logged in, but the account may not do this (e.g. an admin call)."""


class NotProviderError(DssError):
    """The account is not a provider user of (one of) the services named."""


class TicketNotFoundError(DssError):
    """The ticket does not exist, or belongs to a service this account does not provide."""


class TicketNotClaimedError(DssError):
    """The ticket was not claimed by this account (never claimed, or claimed by someone else)."""


class TicketFinishedError(DssError):
    """The ticket already ended (success, failed, timeout, deleted): it stays as it is."""


class TicketDeletedError(DssError):
    """The ticket was deleted by its owner; its files are gone."""


class ServerError(DssError):
    """The server answered with an error status that none of the specific classes covers."""


class NotDssServerError(ServerError):
    """The first call of a session (`/api/login`) was answered by something that is not a
    DSS server: another web server, a wrong path, a static site. Check the address."""


class BadReplyError(DssError):
    """The server answered 2xx but the body is not what the protocol promises
    (e.g. an HTML page from a proxy where CSV was expected)."""


class ServerUnreachableError(DssError):
    """No answer: connection refused, DNS failure, TLS failure, network drop or timeout.

    `request_may_have_arrived` is True when the request was sent (a read timeout, a dropped
    reply): a token in it may have been used. False when no connection was made."""

    request_may_have_arrived: bool = False


class ServerTimeoutError(ServerUnreachableError):
    """The server accepted the connection (or not) but did not answer in time."""


class TlsError(ServerUnreachableError):
    """The TLS handshake failed, usually an untrusted or mismatched certificate."""


class NotTlsError(ServerUnreachableError):
    """An https:// address whose port answers in plain HTTP (or something else that is not
    TLS). Not a TlsError: a CA bundle would not help, the scheme is wrong."""


class ClaimOutcomeUnknownError(ServerUnreachableError):
    """A claim request was sent but its reply was lost: a ticket may have been claimed.

    Claims are never retried blindly (a retried claim would strand a second ticket)."""


class UnsafeFileNameError(DssError):
    """The server named a file with a path, `..`, NUL or nothing at all; nothing was written."""


class TransferError(DssError):
    """A local file problem during a download or upload (disk full, unreadable file)."""
