"""Times and durations as the console and the CLI show them (Qt-free: both use it)."""

from __future__ import annotations

import time


def format_elapsed(seconds: float | None) -> str:
    """'42 s', '5:03', '1:02:03'; '—' when the job has not started."""
    if seconds is None:
        return "—"
    total = int(seconds)
    if total < 60:
        return f"{total} s"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_claimed(at: float | None, now: float | None = None) -> str:
    """Local time: '14:03:27' today, '2026-11-20 14:03' another day, '' when unknown."""
    if at is None:
        return ""
    local = time.localtime(at)
    today = time.localtime(time.time() if now is None else now)
    if local[:3] == today[:3]:
        return time.strftime("%H:%M:%S", local)
    return time.strftime("%Y-%m-%d %H:%M", local)
