"""Typed results of DSS provider calls."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class TicketStatus(str, enum.Enum):
    """Ticket states as the server names them."""

    INIT = "init"
    READY = "ready"
    CLAIMED = "claimed"
    SUCCESS = "success"
    FAILED = "failed"
    TIMEOUT = "timeout"
    DELETED = "deleted"
    UNKNOWN = "unknown"  # a word this client does not know (a newer server)

    @property
    def is_terminal(self) -> bool:
        """True when no provider work can follow (the ticket is finished or gone)."""
        return self in (TicketStatus.SUCCESS, TicketStatus.FAILED, TicketStatus.TIMEOUT,
                        TicketStatus.DELETED)

    @classmethod
    def parse(cls, word: str) -> TicketStatus:
        try:
            return cls(word.strip().lower())
        except ValueError:
            return cls.UNKNOWN


class LogLevel(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class ProviderService:
    """A service this account provides (one row per service and provider)."""

    name: str
    version: str
    githash: str
    provider: str


@dataclass(frozen=True)
class AvailableService:
    """A service with tickets waiting, in the order the server would serve claims."""

    githash: str
    name: str
    ready_count: int


@dataclass(frozen=True)
class ClaimedTicket:
    ticket_id: int
    service_hash: str


@dataclass(frozen=True)
class RemoteFile:
    """A file in a ticket's input or results area. `index` is only valid until the next upload."""

    index: int
    name: str


@dataclass(frozen=True)
class ServiceStats:
    n_success: int
    n_failed: int
    avg_duration: float | None  # seconds per successful ticket; None when no success in 24 h
    last_heard_from: float      # seconds since a provider last polled or claimed
    queue_length: int


@dataclass(frozen=True)
class ServiceTag:
    name: str
    type: str = ""
    hint: str = ""
    required: bool = False


@dataclass(frozen=True)
class ServiceDetail:
    """The service's `service.json` as registered (name, version, tags the inputs must carry)."""

    name: str
    version: str
    shortdesc: str
    longdesc: str
    tags: tuple[ServiceTag, ...]
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def required_tags(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tags if t.required)
