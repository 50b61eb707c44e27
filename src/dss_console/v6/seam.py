"""The proposed neutral seam types (prototype): what ``engine/source.py`` should gain.

Kept here until the engine adopts them, so ``V6Source`` can be built and tested against the
real server now. They hold no vantage6 specifics; DSS maps onto them as noted.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path


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


class OutcomeKind(str, Enum):
    COMPLETED = "completed"        # the command succeeded and produced its result
    CRASHED = "crashed"            # the command ran and failed (non-zero exit, exception)
    START_FAILED = "start_failed"  # the command could not be started (missing binary…)
    FAILED = "failed"              # anything else: timeout, shutdown with on_shutdown=fail
    CANCELLED = "cancelled"        # the operator's Cancel/Fail (v6 has no such status:
                                   #   sent as "failed" with the reason in the log)
    NOT_ALLOWED = "not_allowed"    # v6: the image has no configured command (the allowlist)


@dataclass(frozen=True)
class Outcome:
    """How a job ended, handed to ``set_finished`` in one piece.

    v6 sends it as one ``PATCH /run`` (result + log + status + finished_at). DSS keeps its
    uploads before the status, so for DSS only ``success`` matters.
    """

    kind: OutcomeKind
    result: Path | None = None     # v6: OUTPUT_FILE; DSS: unused (uploads came before)
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
    ``remote_state`` says GONE)."""

    ticket_ids: tuple[int, ...]
    all: bool = False              # "kill every run on this node" (POST /kill/node)


@dataclass(frozen=True)
class Connection:
    """Push channel up or down (for the status bar; polling covers the gaps)."""

    connected: bool


SourceEvent = NewWork | WorkGone | Connection
