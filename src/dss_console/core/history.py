"""A service's recent history, as the ledger's figures give it (issue 20, part 7).

Plain data shared by the engine (which computes it from the ledger's index) and the window
(which draws it); no Qt, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bar:
    """Jobs that ended in one hour or one day."""

    succeeded: int
    failed: int


@dataclass(frozen=True)
class ServiceHistory:
    """Jobs per hour over the last day and per day over the last month, for one service.

    ``hours`` holds 24 bars and ``days`` 30, oldest first; the last bar ends at the time the
    figures were computed. Medians are run seconds of the jobs that ended in the window (None
    when none did).
    """

    service: str  # the name the services pane shows
    hours: tuple[Bar, ...]
    days: tuple[Bar, ...]
    median_run_s_day: float | None
    median_run_s_month: float | None
