"""DSS provider client: speaks the protocol and nothing else (no jobs, no Qt)."""

from dss_console.dss.client import DssClient, ServicesClient, TicketsClient, service_hashes
from dss_console.dss.errors import (
    BadReplyError,
    ClaimOutcomeUnknownError,
    DssError,
    InsufficientPrivilegesError,
    LoginFailedError,
    NotDssServerError,
    NotLoggedInError,
    NotProviderError,
    NotTlsError,
    ServerError,
    ServerTimeoutError,
    ServerUnreachableError,
    TicketDeletedError,
    TicketNotClaimedError,
    TicketNotFoundError,
    TlsError,
    TransferError,
    UnsafeFileNameError,
)
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
from dss_console.dss.transfers import safe_file_name
from dss_console.dss.transport import normalize_server_url

__all__ = [
    "AvailableService", "BadReplyError", "ClaimOutcomeUnknownError", "ClaimedTicket",
    "DssClient", "DssError", "InsufficientPrivilegesError", "LogLevel", "LoginFailedError",
    "NotDssServerError", "NotLoggedInError", "NotProviderError", "NotTlsError",
    "ProviderService", "RemoteFile", "ServerError", "ServerTimeoutError",
    "ServerUnreachableError", "ServiceDetail", "ServiceStats", "ServiceTag", "ServicesClient",
    "TicketDeletedError", "TicketNotClaimedError", "TicketNotFoundError", "TicketStatus",
    "TicketsClient", "TlsError", "TransferError", "UnsafeFileNameError", "normalize_server_url",
    "safe_file_name", "service_hashes",
]
