"""What every executor does with a command's output, whatever runs the command.

* :class:`ProgressChannel`: the engine's files a command reports its progress through (the
  events file the hook appends to, the hook script, the abort file that makes the hook fail
  once the job is being stopped). A source tells its command where they are (DSS: the
  ``DSS_*`` variables); executors prepare them and relay what arrives.
* :class:`OutputRelay`: the command's output turned into reports. Bytes arrive in pieces
  (a pipe, a log file growing on a shared file system); they are split into lines, written
  whole to the log when the relay keeps it, ``@dss`` lines on stdout parsed into typed reports
  (engine/protocol.py), everything else passed on in batches. The hook's events file is read
  from where it was left. One dispatcher thread is the only caller of ``on_report``, so
  reports arrive in order and a slow consumer never blocks the readers.

An executor owns the threads that feed the relay (pipe readers, a log tailer) and the one
that decides when the command ended; it composes these classes, it does not subclass them.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dss_console.core.executor import RunOutcome
from dss_console.engine.hook import HOOK_SCRIPT_NAME, write_hook_script
from dss_console.engine.protocol import (
    MessageReport,
    OutputReport,
    ProtocolWarning,
    Report,
    parse_dss_line,
    parse_hook_args,
)

__all__ = [
    "ABORT_FILE",
    "EVENTS_FILE",
    "EVENTS_INTERVAL",
    "READ_SIZE",
    "LineState",
    "OutputRelay",
    "ProgressChannel",
    "format_seconds",
    "outcome_of",
    "timed_out_reason",
]

log = logging.getLogger(__name__)

EVENTS_FILE = "events.jsonl"
ABORT_FILE = "abort"

READ_SIZE = 64 * 1024  # one read of a pipe or of a log being tailed
EVENTS_INTERVAL = 0.2  # how often the events file is read while the command runs
_BATCH_LINES = 1000
_BATCH_BYTES = 1024 * 1024
_MERGE_LINES = 10_000  # queued batches are delivered together up to this many lines
_LINE_OVERHEAD = 100  # rough bytes of memory per queued line besides its text
# Output queued for on_report but not yet delivered. Past this, the live view skips lines
# (counted in OutputReport.skipped) instead of holding a slow consumer's backlog in memory
# or slowing the command down; the log file still has every byte.
_MAX_BACKLOG_BYTES = 16 * 1024 * 1024
_EVENTS_READ_SIZE = 1024 * 1024


def format_seconds(seconds: float) -> str:
    return f"{seconds:g}"


def timed_out_reason(timeout: float) -> str:
    """The stop reason of a command that ran past its service's timeout."""
    return f"timed out after {format_seconds(timeout)} s"


def outcome_of(returncode: int | None, *, stop_reason: str | None, tail: list[str],
               last_error: str | None, duration: float, log_path: Path) -> RunOutcome:
    """A run's outcome from its wait status (negative: the signal that ended it)."""
    exit_code = sig = None
    if returncode is not None:
        if returncode < 0:
            sig = -returncode
        else:
            exit_code = returncode
    return RunOutcome(exit_code=exit_code, signal=sig, stop_reason=stop_reason,
                      last_error=last_error, tail=tail, duration=duration, log_path=log_path)


# -- the engine's files -----------------------------------------------------------------


class ProgressChannel:
    """The files in a job's engine dir through which its command reports progress and is
    told to stop: events (appended by the hook), the hook script, the abort file. Their
    paths follow from the engine dir alone, so a source can name them in the command's
    environment before anything is written."""

    def __init__(self, engine_dir: Path) -> None:
        self.engine_dir = Path(engine_dir)
        self.events_path = self.engine_dir / EVENTS_FILE
        self.abort_path = self.engine_dir / ABORT_FILE
        self.hook_path = self.engine_dir / HOOK_SCRIPT_NAME  # written by prepare()

    def prepare(self, *, keep_events: bool = False) -> Path:
        """Make the engine dir private, remove an earlier run's abort file, write the hook
        script; return its path. ``keep_events``: a command followed again (a cluster job
        after a restart) may have reported meanwhile, and that is still to be relayed.
        Raises OSError."""
        engine_dir = self.engine_dir
        engine_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.name == "posix":
            os.chmod(engine_dir, 0o700)
        with contextlib.suppress(FileNotFoundError):
            self.abort_path.unlink()  # left by an earlier run
        flags = os.O_WRONLY | os.O_CREAT | (0 if keep_events else os.O_TRUNC)
        fd = os.open(self.events_path, flags, 0o600)
        os.close(fd)
        self.hook_path = write_hook_script(engine_dir, self.events_path, self.abort_path)
        return self.hook_path

    def write_abort(self, reason: str) -> None:
        # Written whole, then renamed: the hook must never read half a reason.
        partial = self.abort_path.with_name(f".{ABORT_FILE}.tmp")
        try:
            partial.write_text(reason + "\n", encoding="utf-8", errors="replace")
            os.replace(partial, self.abort_path)
        except OSError as exc:
            log.warning("cannot write the abort file %s: %s", self.abort_path, exc)


# -- the relay --------------------------------------------------------------------------


class LineState:
    """A stream's bytes after its last newline. A line longer than the spill threshold is
    written to the log in pieces; only its head is kept for the report."""

    __slots__ = ("buffer", "head", "spilled")

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.spilled = 0  # bytes of the current line already written to the log
        self.head = b""  # its first max_line_bytes, once spilled


class _Marker:
    pass


_END = _Marker()  # the last item of the report queue
_TICK = _Marker()  # a batch has started: the dispatcher must flush it in time


@dataclass(frozen=True)
class _Mark:
    """Queued after the reports of a piece of input: once the dispatcher reaches it, those
    reports were handed on, and ``done`` records how far the input was relayed."""

    done: Callable[[], None]


@dataclass
class _Batch:
    lines: list[tuple[str, str]]
    skipped: int
    size: int  # what it counts against the backlog


_Item = Report | _Batch | _Mark | _Marker


class OutputRelay:
    """One run's output and hook events turned into reports, in order.

    ``on_report`` is called from the relay's dispatcher thread, one report at a time, in
    order per channel (stdout; the hook's events file). It may be slow; it must not wait
    for the run (the dispatcher is what the run's end waits for).

    ``writes_log``: whether the relay writes what it is fed to ``log_path`` (a local child's
    pipes) or only reads a log someone else writes (SLURM). ``on_events_relayed``: called on
    the dispatcher thread with the events file's offset up to which every event was handed
    on (to resume there after a restart).
    """

    def __init__(self, on_report: Callable[[Report], None], *, workdir: Path,
                 log_path: Path, events_path: Path, writes_log: bool = True,
                 tail_lines: int = 200, max_line_bytes: int = 64 * 1024,
                 output_batch_interval: float = 0.1, spill_bytes: int = 8 * 1024 * 1024,
                 on_events_relayed: Callable[[int], None] | None = None) -> None:
        self._on_report = on_report
        self._workdir = Path(workdir)
        self.log_path = log_path
        self.events_path = events_path
        self._writes_log = writes_log
        self._max_line = max(1, max_line_bytes)
        self._interval = max(0.001, output_batch_interval)
        self._spill = max(spill_bytes, self._max_line)
        self._on_events_relayed = on_events_relayed

        self._log_lock = threading.Lock()
        self._log_file: io.FileIO | None = None
        self._log_failed = False

        # Everything that orders reports: the pending output batch, the queue, the tail.
        self._out_lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._batch: list[tuple[str, str]] = []
        self._batch_size = 0
        self._batch_started = 0.0
        self._backlog = 0  # size of the output queued, not yet delivered
        self._skipped = 0  # output lines not queued since the last batch (backlog too long)
        self._tail: deque[str] = deque(maxlen=max(0, tail_lines))
        self._last_error: str | None = None

        self.events_offset = 0  # read this far; set before start() to resume
        self._events_partial = b""
        self._events_failed = False
        self._dispatcher: threading.Thread | None = None

    # -- life ---------------------------------------------------------------------------
    def open_log(self) -> None:
        """Create the log this relay writes (raises OSError)."""
        self._log_file = open(self.log_path, "wb", buffering=0)  # noqa: SIM115

    def start(self, name: str) -> None:
        """Start the dispatcher thread (raises RuntimeError when no thread can start)."""
        self._dispatcher = threading.Thread(target=self._dispatch, daemon=True, name=name)
        self._dispatcher.start()

    def is_dispatcher(self, thread: threading.Thread) -> bool:
        return thread is self._dispatcher

    def abort(self) -> None:
        """The run could not be watched: end the dispatcher without a final read."""
        self._queue.put(_END)
        self.close_log()

    def finish(self) -> tuple[list[str], str | None]:
        """Read the events file a last time, deliver everything still queued and close the
        log; (the output's tail, the text of the last ``error`` message)."""
        self.read_events(final=True)
        with self._out_lock:
            self._flush_batch_locked()
            self._queue.put(_END)
        if self._dispatcher is not None and self._dispatcher is not threading.current_thread():
            self._dispatcher.join()
        self.close_log()
        with self._out_lock:
            return list(self._tail), self._last_error

    def close_log(self) -> None:
        with self._log_lock:
            if self._log_file is not None:
                with contextlib.suppress(OSError):
                    self._log_file.close()
            self._log_file = None

    # -- feeding ------------------------------------------------------------------------
    def consume(self, stream: str, state: LineState, data: bytes) -> None:
        """Bytes of ``stream`` ("stdout" or "stderr") as they came."""
        buffer = state.buffer
        newline = data.rfind(b"\n")
        if newline < 0:
            buffer += data
        else:
            cut = len(buffer) + newline + 1
            buffer += data
            complete = bytes(buffer[:cut])
            del buffer[:cut]
            # Whole lines at a time, so the other stream's lines never land mid-line.
            self._write_log(complete)
            first_spilled, first_head = state.spilled, state.head
            state.spilled, state.head = 0, b""
            plain = not first_spilled and not (stream == "stdout" and b"@dss" in complete)
            if not (plain and self._take_plain_chunk(stream, complete)):
                lines = complete.split(b"\n")
                lines.pop()
                self._take_lines(stream, lines, first_spilled, first_head)
        self._spill_if_endless(state)

    def finish_stream(self, stream: str, state: LineState) -> None:
        """The stream ended: its last line, even without a newline."""
        rest = bytes(state.buffer)
        state.buffer.clear()
        if rest:
            self._write_log(rest)
        if rest or state.spilled:
            self._take_lines(stream, [rest], state.spilled, state.head)

    def mark(self, done: Callable[[], None]) -> None:
        """Call ``done`` on the dispatcher once every report queued so far was handed on."""
        self._queue.put(_Mark(done))

    def emit(self, report: Report) -> None:
        with self._out_lock:
            self._emit_locked(report)

    def _spill_if_endless(self, state: LineState) -> None:
        buffer = state.buffer
        if len(buffer) > self._spill:
            # An endless line (a progress bar redrawn with \r, a binary dump): keep memory
            # flat. The price: the other stream's lines may land inside it in the log.
            self._write_log(bytes(buffer))
            if not state.spilled:
                state.head = bytes(buffer[: self._max_line])
            state.spilled += len(buffer)
            buffer.clear()

    def _take_plain_chunk(self, stream: str, complete: bytes) -> bool:
        """Whole lines without a report among them (the usual case, and all of a flood):
        decoded and queued as one chunk, not line by line in Python. False when a line is
        too long for that (the per-line path truncates it)."""
        if len(complete) > self._max_line and \
                max(map(len, complete.split(b"\n"))) > self._max_line:
            return False
        text = complete.decode("utf-8", "replace")
        texts = text.split("\n")
        texts.pop()
        if "\r" in text:
            texts = [t[:-1] if t.endswith("\r") else t for t in texts]
        size = len(text) + _LINE_OVERHEAD * len(texts)
        now = time.monotonic()
        with self._out_lock:
            self._tail.extend(texts)
            if self._backlog + self._batch_size + size >= _MAX_BACKLOG_BYTES:
                self._skipped += len(texts)
                return True
            if not self._batch:
                self._batch_started = now
                self._queue.put(_TICK)  # wakes the dispatcher to time this batch
            self._batch.extend(zip(itertools.repeat(stream), texts))
            self._batch_size += size
            if len(self._batch) >= _BATCH_LINES or self._batch_size >= _BATCH_BYTES:
                self._flush_batch_locked()
        return True

    def _line_text(self, raw: bytes, spilled: int, head: bytes) -> tuple[str, bool]:
        """(text for reports, whether it may be an @dss line)."""
        size = spilled + len(raw)
        if size > self._max_line:
            start = head if spilled else raw[: self._max_line]
            text = start[: self._max_line].decode("utf-8", "replace")
            return f"{text} … [line truncated, {size} bytes]", False
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        return raw.decode("utf-8", "replace"), True

    def _take_lines(self, stream: str, lines: list[bytes], first_spilled: int,
                    first_head: bytes) -> None:
        workdir = self._workdir
        items: list[tuple[str, Report | None]] = []
        for index, raw in enumerate(lines):
            if index == 0 and first_spilled:
                text, parseable = self._line_text(raw, first_spilled, first_head)
            elif len(raw) <= self._max_line:
                text = (raw[:-1] if raw.endswith(b"\r") else raw).decode("utf-8", "replace")
                parseable = True
            else:
                text, parseable = self._line_text(raw, 0, b"")
            report = None
            if parseable and stream == "stdout" and raw.startswith(b"@dss"):
                report = parse_dss_line(text, workdir)
            items.append((text, report))
        now = time.monotonic()
        with self._out_lock:
            tail = self._tail
            for text, report in items:
                tail.append(text)
                if report is not None:
                    self._emit_locked(report)
                elif self._backlog + self._batch_size >= _MAX_BACKLOG_BYTES:
                    self._skipped += 1
                else:
                    if not self._batch:
                        self._batch_started = now
                        self._queue.put(_TICK)  # wakes the dispatcher to time this batch
                    self._batch.append((stream, text))
                    self._batch_size += len(text) + _LINE_OVERHEAD
                    if len(self._batch) >= _BATCH_LINES or self._batch_size >= _BATCH_BYTES:
                        self._flush_batch_locked()

    def _write_log(self, data: bytes) -> None:
        if not self._writes_log:
            return
        with self._log_lock:
            if self._log_failed or self._log_file is None:
                return
            try:
                view = memoryview(data)
                while view:
                    written = self._log_file.write(view)
                    view = view[written or 0:]
            except OSError as exc:
                self._log_failed = True
                failure = exc
            else:
                return
        self.emit(ProtocolWarning(f"cannot write the command's log {self.log_path}: "
                                  f"{failure}; the output is no longer kept on disk"))

    # -- the report queue ---------------------------------------------------------------
    def _emit_locked(self, report: Report) -> None:
        # Lines printed before a report are delivered before it.
        self._flush_batch_locked()
        if isinstance(report, MessageReport) and report.level == "error":
            self._last_error = report.text
        self._queue.put(report)

    def _flush_batch_locked(self) -> None:
        if not self._batch and not self._skipped:
            return
        self._queue.put(_Batch(self._batch, self._skipped, self._batch_size))
        self._backlog += self._batch_size
        self._batch = []
        self._batch_size = 0
        self._skipped = 0

    def _flush_if_due(self) -> None:
        with self._out_lock:
            if (self._batch or self._skipped) and \
                    time.monotonic() - self._batch_started >= self._interval:
                self._flush_batch_locked()

    def _dispatch(self) -> None:
        wait = self._interval / 2
        while True:
            # Unlocked peek: a batch started after it puts a _TICK, which ends the wait.
            pending = bool(self._batch or self._skipped)
            try:
                items = [self._queue.get(timeout=wait if pending else None)]
            except queue.Empty:
                self._flush_if_due()
                continue
            # Take everything queued: the readers can outrun this thread between two GIL
            # switches, so one wake-up must be able to deliver a whole backlog.
            with contextlib.suppress(queue.Empty):
                while len(items) < _MERGE_LINES:
                    items.append(self._queue.get_nowait())
            if self._deliver(items):
                return
            self._flush_if_due()

    def _deliver(self, items: list[_Item]) -> bool:
        """Hand items to on_report, consecutive batches merged into one OutputReport.
        True when the end marker was among them."""
        lines: list[tuple[str, str]] = []
        skipped = size = 0
        for item in items:
            if isinstance(item, _Batch):
                if lines and len(lines) + len(item.lines) > _MERGE_LINES:
                    self._deliver_output(lines, skipped, size)
                    lines, skipped, size = [], 0, 0
                lines.extend(item.lines)
                skipped += item.skipped
                size += item.size
                continue
            if item is _TICK:
                continue
            if isinstance(item, _Mark):
                item.done()
                continue
            if lines or skipped:
                self._deliver_output(lines, skipped, size)
                lines, skipped, size = [], 0, 0
            if item is _END:
                return True
            if not isinstance(item, _Marker):
                self._call(item)
        if lines or skipped:
            self._deliver_output(lines, skipped, size)
        return False

    def _deliver_output(self, lines: list[tuple[str, str]], skipped: int, size: int) -> None:
        self._call(OutputReport(lines=tuple(lines), skipped=skipped))
        with self._out_lock:
            self._backlog -= size

    def _call(self, report: Report) -> None:
        try:
            self._on_report(report)
        except Exception:  # a consumer's bug must not stop the delivery of the rest
            log.exception("on_report failed for %s", type(report).__name__)

    # -- the events file ----------------------------------------------------------------
    def read_events(self, final: bool = False) -> None:
        """Relay what the hook appended since the last read (``final``: also a last line
        without its newline, the trace of a writer that died mid-line)."""
        self._read_events(final)
        if self._on_events_relayed is not None:
            relayed = self.events_offset - len(self._events_partial)
            callback = self._on_events_relayed
            self.mark(lambda: callback(relayed))

    def _read_events(self, final: bool) -> None:
        # Opened afresh every time: on NFS only an open() is sure to see what another host
        # appended (close-to-open consistency); a handle kept open may see stale data.
        if self._events_failed:
            return
        chunks = [self._events_partial]
        try:
            with open(self.events_path, "rb") as handle:
                handle.seek(self.events_offset)
                while True:
                    data = handle.read(_EVENTS_READ_SIZE)
                    if not data:
                        break
                    chunks.append(data)
                    self.events_offset += len(data)
        except OSError as exc:
            self._events_failed = True
            self.emit(ProtocolWarning(f"cannot read the hook's events file: {exc}; hook "
                                      "calls are no longer relayed"))
            return
        lines = b"".join(chunks).split(b"\n")
        self._events_partial = lines.pop()
        if final and self._events_partial.strip():
            lines.append(self._events_partial)  # a writer died mid-line: say so
            self._events_partial = b""
        for raw in lines:
            if raw.strip():
                self.emit(self._event_report(raw))

    def _event_report(self, raw: bytes) -> Report:
        try:
            record = json.loads(raw)
            args = record["args"]
            if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
                raise TypeError("args is not a list of strings")
            cwd = record.get("cwd")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            shown = raw[:200].decode("utf-8", "replace")
            return ProtocolWarning(f"bad line in the hook's events file ({exc}): {shown!r}")
        return parse_hook_args(args, self._workdir,
                               cwd=Path(cwd) if isinstance(cwd, str) and cwd else None)
