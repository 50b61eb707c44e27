"""The log view's file work: a job's whole output is in its log file on disk (the
runner's), and the view holds only its end.

Reading the tail, searching and copying the file run on a small private thread pool
(``Background``), never on the Qt thread. Lines read back are shown as the live view
showed them (``render_lines``), and ``Seam`` drops live items that repeat a freshly loaded
tail.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from dss_console.engine.protocol import (
    AttachReport,
    MessageReport,
    ProgressReport,
    parse_dss_line,
)

NOTE_PREFIX = "▸ "  # the engine's and the console's notes, apart from the command's output

_TAIL_CHUNK = 256 * 1024
# A log made of a few endless lines (a progress bar redrawn with \r) must not be read
# whole just to find max_blocks line breaks.
_TAIL_MAX_BYTES = 32 * 1024 * 1024
_COPY_CHUNK = 1024 * 1024
# The runner cuts live lines at 64 KiB; lines read from disk get the same bound, since a
# multi-megabyte line makes QPlainTextEdit's layout crawl.
_MAX_LINE_CHARS = 64 * 1024
# How many of a loaded tail's last lines (and messages) may still arrive live after it was
# read (see Seam): the live stream lags the file by up to a few batches.
_SEAM_ITEMS = 5000


# -- @dss lines read back from disk --------------------------------------------------------

_HIDDEN = ("", "")  # an @dss line the live view does not show (progress)


def _render_dss(text: str) -> tuple[str, str] | None:
    """How the live view showed an ``@dss`` line of the log file: the engine turned it into
    a message (a note), a console note, or nothing (progress). None: not an @dss line.

    The log file keeps the command's raw stdout; live, the runner parses these lines and
    the view shows what they meant. Without this a reloaded log shows raw @dss lines.
    """
    report = parse_dss_line(text, None)
    if report is None:
        return None
    if isinstance(report, ProgressReport):
        return _HIDDEN
    if isinstance(report, MessageReport):
        return f"note:{report.level}", NOTE_PREFIX + report.text
    if isinstance(report, AttachReport):
        return "note:info", f"{NOTE_PREFIX}(console) attachment: {report.description} " \
                            f"({report.path.name})"
    return "note:warning", f"{NOTE_PREFIX}(console) @dss line not understood: {text}"


def render_lines(lines: list[str]) -> list[tuple[str, str]]:
    """Items for lines read from the log file. The file does not say which stream a line
    came from (the runner writes stdout and stderr into one file, untagged), so output
    lines are shown as stdout; error/warning-looking lines are still coloured."""
    items: list[tuple[str, str]] = []
    for text in lines:
        rendered = _render_dss(text)
        if rendered is None:
            items.append(("stdout", text))
        elif rendered is not _HIDDEN:
            items.append(rendered)
    return items


# -- file work, on the pool ---------------------------------------------------------------


class Cancelled(Exception):
    pass


@dataclass(frozen=True)
class Tail:
    lines: list[str]
    truncated: bool  # the file holds more than these lines


@dataclass(frozen=True)
class Matches:
    needle: str
    count: int  # matching lines in the whole file
    first: list[tuple[int, str]]  # (line number from 1, text), the first few


_MAX_MATCHES_LISTED = 20
_MATCH_SHOWN_CHARS = 160


def search_file(path: Path, needle: str, cancel: threading.Event) -> Matches:
    """Every line of ``path`` holding ``needle`` (case-insensitive, as the view's find).
    Read in bounded pieces, so an endless line (a progress bar redrawn with \\r) does not
    have to fit in memory; a match across two pieces of such a line may be missed."""
    wanted = needle.casefold()
    count = 0
    first: list[tuple[int, str]] = []
    number = 1  # the line the next piece belongs to
    counted = 0  # the last line counted as a match
    pieces = 0
    with open(path, "rb") as file:
        while piece := file.readline(_MAX_LINE_CHARS * 4):
            pieces += 1
            if pieces % 10_000 == 0 and cancel.is_set():
                raise Cancelled
            text = piece.decode("utf-8", "replace")
            if counted != number and wanted in text.casefold():
                counted = number
                count += 1
                if len(first) < _MAX_MATCHES_LISTED:
                    shown = text.rstrip("\r\n")
                    if len(shown) > _MATCH_SHOWN_CHARS:
                        shown = shown[:_MATCH_SHOWN_CHARS] + "…"
                    first.append((number, shown))
            if piece.endswith(b"\n"):
                number += 1
    return Matches(needle, count, first)


def read_tail(path: Path, max_lines: int, cancel: threading.Event) -> Tail:
    """The last ``max_lines`` lines of ``path``, reading backwards so a huge log costs only
    its end (at most _TAIL_MAX_BYTES of it)."""
    chunks: list[bytes] = []
    newlines = 0
    with open(path, "rb") as file:
        end = file.seek(0, os.SEEK_END)
        position = end
        # One line break more than max_lines: the piece before it may be a partial line.
        while position > 0 and newlines <= max_lines and end - position < _TAIL_MAX_BYTES:
            if cancel.is_set():
                raise Cancelled
            step = min(_TAIL_CHUNK, position)
            position -= step
            file.seek(position)
            chunk = file.read(step)
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
    data = b"".join(reversed(chunks))
    del chunks
    if data.endswith(b"\n"):
        data = data[:-1]
    pieces = data.split(b"\n")
    del data
    truncated = position > 0
    if truncated:
        pieces.pop(0)
    if len(pieces) > max_lines:
        pieces = pieces[-max_lines:]
        truncated = True
    lines = []
    for raw in pieces:
        text = raw.decode("utf-8", "replace")
        if text.endswith("\r"):
            text = text[:-1]
        if len(text) > _MAX_LINE_CHARS:
            text = f"{text[:_MAX_LINE_CHARS]} … [line truncated, {len(raw)} bytes]"
        lines.append(text)
    return Tail(lines, truncated)


def copy_file(source: Path, target: Path, cancel: threading.Event) -> Path:
    """Copy in chunks (so a shutdown can stop it) to a temporary name beside ``target``,
    then rename: a failed or cancelled copy never leaves a truncated file under the name
    the user chose, nor clobbers an existing one."""
    partial = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.part")
    try:
        with open(source, "rb") as reader, open(partial, "xb") as writer:
            while chunk := reader.read(_COPY_CHUNK):
                if cancel.is_set():
                    raise Cancelled
                writer.write(chunk)
        os.replace(partial, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        if isinstance(exc, OSError) and exc.filename == str(partial):
            # Name the file the user chose, not our temporary one.
            raise OSError(exc.errno, exc.strerror, str(target)) from exc
        raise
    return target


class _Relay(QObject):
    # (request id, (ok, result or exception)). Emitted on a pool thread; the auto
    # connection queues it to the view's thread.
    finished = Signal(int, object)


class Background:
    """The view's file work. Plain Python (no Qt parent) so it outlives the widget's C++
    side until ``close`` has cancelled and joined every worker: the widget's ``destroyed``
    signal calls ``close``, so no thread outlives the view."""

    def __init__(self) -> None:
        self.relay = _Relay()
        self._executor: ThreadPoolExecutor | None = None
        self._cancels: dict[int, threading.Event] = {}
        self._ids = itertools.count(1)
        self._closed = False

    def submit(self, func: Callable[..., Any], *args: Any) -> int | None:
        """Run ``func(*args, cancel_event)`` on the pool; None once closed."""
        if self._closed:
            return None
        if self._executor is None:
            # Two workers: a save is not queued behind a slow tail read.
            self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="logview")
        request = next(self._ids)
        cancel = threading.Event()
        self._cancels[request] = cancel
        relay = self.relay

        def run() -> None:
            try:
                outcome: tuple[bool, Any] = (True, func(*args, cancel))
            except Exception as exc:
                outcome = (False, exc)
            relay.finished.emit(request, outcome)

        self._executor.submit(run)
        return request

    def forget(self, request: int) -> None:
        self._cancels.pop(request, None)

    def cancel(self, request: int) -> None:
        cancel = self._cancels.pop(request, None)
        if cancel is not None:
            cancel.set()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(RuntimeError):
            self.relay.finished.disconnect()
        for cancel in self._cancels.values():
            cancel.set()
        self._cancels.clear()
        if self._executor is not None:
            # Workers check their cancel flag between chunks, so this join is short.
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


# -- where a loaded tail meets the live stream ---------------------------------------------

_OUTPUT, _MESSAGE = "output", "message"


def item_kind(stream: str, text: str) -> str | None:
    """Which live sequence an item belongs to: output lines and messages travel apart
    (messages are not batched), so each is matched against the file on its own. Console
    notes ("(console) …") are never matched: their live wording is not on disk."""
    if not stream.startswith("note:"):
        return _OUTPUT
    if text.startswith(f"{NOTE_PREFIX}(console)"):
        return None
    return _MESSAGE


def seams_of(from_disk: Sequence[tuple[str, str]]) -> dict[str, Seam]:
    """A Seam per kind of item for the end of a tail just read (``render_lines``' items)."""
    seams: dict[str, Seam] = {}
    for kind in (_OUTPUT, _MESSAGE):
        seen = [text for stream, text in from_disk[-_SEAM_ITEMS:]
                if item_kind(stream, text) == kind]
        if seen:
            seams[kind] = Seam(seen)
    return seams


class Seam:
    """The last items of one kind read from disk, which the live stream may still deliver.

    The runner writes a line to the log before publishing it (and before publishing the
    message an @dss line stands for), and the live stream reaches the view a batch or two
    later; so after a view loads a running job's tail, the first live items may already be
    in it: during the load and for a moment after. The live stream delivers, in order, the
    items not yet delivered when the view started listening: the first live item either is
    on disk (then those after it follow the disk's order up to its end) or is new.
    """

    def __init__(self, disk: list[str]) -> None:
        self._disk = disk
        self._at: int | None = None  # the disk index the next live item should repeat

    @property
    def done(self) -> bool:
        return not self._disk or (self._at is not None and self._at >= len(self._disk))

    def take(self, text: str) -> bool:
        """True: ``text`` repeats the disk (drop it); False: it is new (show it)."""
        if self.done:
            return False
        if self._at is None:
            # The latest occurrence: with repeated lines, rather show a line twice than
            # drop a new one.
            for index in range(len(self._disk) - 1, -1, -1):
                if self._disk[index] == text:
                    self._at = index + 1
                    return True
        elif self._disk[self._at] == text:
            self._at += 1
            return True
        self._disk = []  # not the disk's continuation: everything from here on is new
        return False


def describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        where = f" ({error.filename})" if error.filename else ""
        return f"{error.strerror}{where}"
    return str(error) or type(error).__name__

