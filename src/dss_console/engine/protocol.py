"""What a running command tells the engine, as typed reports.

A command reports the same verbs two ways (design.md, "How a command reports"):

* a stdout line ``@dss VERB ARGS...`` whose rest is split like a POSIX shell would;
* the hook (``"$DSS_HOOK" VERB ARGS...``), with the argument order of ASHS's hook script,
  which appends one JSON line per call to the job's events file.

Verbs: ``progress VALUE`` or ``progress START END VALUE`` (a chunk, as itksnap-wt has it),
``info|warning|error MESSAGE...`` and ``attach DESCRIPTION FILE [MIME-TYPE]``.

Nothing here raises on bad input from a command: a malformed line becomes a
``ProtocolWarning`` that the operator sees (it is never sent to the server).
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "MESSAGE_LEVELS",
    "AttachReport",
    "MessageReport",
    "OutputReport",
    "ProgressReport",
    "ProgressTracker",
    "ProtocolWarning",
    "Report",
    "parse_dss_line",
    "parse_hook_args",
    "resolve_attachment",
]

MESSAGE_LEVELS = ("info", "warning", "error")

# A line is an @dss line only when the marker stands alone as the first word, so output
# like "@dssfoo" or an e-mail address stays ordinary output.
_DSS_LINE = re.compile(r"@dss(?:\s|$)")
# type/subtype with optional parameters ("text/plain; charset=utf-8").
_MIME_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(?:\s*;[^\x00-\x1f]*)?")
_SHOWN_CHARS = 200  # how much of an offending line a warning quotes


@dataclass(frozen=True)
class ProgressReport:
    """Progress ``value`` (0..1) of the chunk ``[start, end]`` of the whole job (0..1)."""

    start: float
    end: float
    value: float


@dataclass(frozen=True)
class MessageReport:
    """A log message for the ticket's user; ``level`` is one of MESSAGE_LEVELS."""

    level: str
    text: str


@dataclass(frozen=True)
class AttachReport:
    """A file to attach to the ticket's log. ``path`` was resolved and checked: a regular
    file inside the work dir (at the time of the report; the command may still change it),
    except from a line read back without a work dir (``parse_dss_line``): then it is the
    path as the command wrote it."""

    description: str
    path: Path
    mime_type: str | None


@dataclass(frozen=True)
class OutputReport:
    """Ordinary output lines, batched: ``((stream, text), ...)`` with stream "stdout" or
    "stderr" and text without its line end.

    ``skipped`` counts lines left out of the live reports because the consumer fell behind
    (they are all in the log file on disk)."""

    lines: tuple[tuple[str, str], ...]
    skipped: int = 0


@dataclass(frozen=True)
class ProtocolWarning:
    """Something the command sent that the engine could not use; for the operator only."""

    text: str


Report = ProgressReport | MessageReport | AttachReport | OutputReport | ProtocolWarning


# -- parsing ----------------------------------------------------------------------------


def _shown(text: str) -> str:
    if len(text) > _SHOWN_CHARS:
        text = text[:_SHOWN_CHARS] + "…"
    return repr(text)


def parse_dss_line(line: str, workdir: Path | None) -> Report | None:
    """The report an ``@dss`` stdout line stands for; None when the line is not one.

    A line is an @dss line when it starts with ``@dss`` followed by white space (a bare
    ``@dss`` is treated as a malformed one). Never raises: anything malformed becomes a
    ProtocolWarning that says what was wrong.

    ``workdir`` None: the line is read back from a log after the fact (the console's log
    view), so an attachment's file is not looked for: the work dir may have been emptied
    since, and only the report's words are wanted.
    """
    if not line.startswith("@dss"):  # most lines: no regex, no strip
        return None
    text = line.rstrip("\r\n")
    if not _DSS_LINE.match(text):
        return None
    try:
        words = shlex.split(text[4:], posix=True)
    except ValueError as exc:
        return ProtocolWarning(f"@dss line not understood ({exc}): {_shown(text)}")
    return _parse_words(words, workdir, None, f"@dss line {_shown(text)}")


def parse_hook_args(args: Sequence[str], workdir: Path, cwd: Path | None = None) -> Report:
    """The report of one hook call (its arguments, ASHS order). ``cwd`` is where the hook
    ran: relative attachment paths still resolve against the work dir, but a warning can
    then point out the mix-up."""
    words = [str(arg) for arg in args]
    shown = _shown(" ".join(shlex.quote(word) for word in words))
    return _parse_words(words, workdir, cwd, f"hook call {shown}")


def _parse_words(words: list[str], workdir: Path | None, cwd: Path | None, origin: str
                 ) -> Report:
    if not words:
        return ProtocolWarning(f"{origin}: no verb (expected progress, info, warning, error "
                               "or attach)")
    verb, args = words[0].lower(), words[1:]
    if verb == "progress":
        return _parse_progress(args, origin)
    if verb in MESSAGE_LEVELS:
        message = " ".join(args)
        if not message.strip():
            return ProtocolWarning(f"{origin}: {verb} needs a message")
        return MessageReport(level=verb, text=message)
    if verb == "attach":
        return _parse_attach(args, workdir, cwd, origin)
    return ProtocolWarning(f"{origin}: unknown verb {words[0]!r} (expected progress, info, "
                           "warning, error or attach)")


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value))


def _parse_progress(args: list[str], origin: str) -> Report:
    if len(args) not in (1, 3):
        return ProtocolWarning(f"{origin}: progress takes VALUE or START END VALUE "
                               f"(got {len(args)} argument{'s' if len(args) != 1 else ''})")
    numbers = [_number(arg) for arg in args]
    bad = [arg for arg, number in zip(args, numbers, strict=True) if number is None]
    if bad:
        return ProtocolWarning(f"{origin}: progress needs finite numbers, not {bad[0]!r}")
    values = [n for n in numbers if n is not None]
    start, end, value = (0.0, 1.0, values[0]) if len(values) == 1 else values
    if start > end:
        return ProtocolWarning(f"{origin}: progress chunk starts after it ends "
                               f"({start:g} > {end:g})")
    # Out-of-range values are common rounding noise (1.0000001); the server would store
    # them unchecked and show a total above 100 %.
    return ProgressReport(start=_clamp(start), end=_clamp(end), value=_clamp(value))


def _parse_attach(args: list[str], workdir: Path | None, cwd: Path | None, origin: str
                  ) -> Report:
    if len(args) not in (2, 3):
        return ProtocolWarning(f"{origin}: attach takes DESCRIPTION FILE [MIME-TYPE] "
                               f"(got {len(args)} argument{'s' if len(args) != 1 else ''})")
    description, path_text = args[0], args[1]
    mime_type = args[2] if len(args) == 3 and args[2] else None
    if not description.strip():
        return ProtocolWarning(f"{origin}: attach needs a description")
    if mime_type is not None and not _MIME_TYPE.fullmatch(mime_type):
        return ProtocolWarning(f"{origin}: {mime_type!r} is not a MIME type (like text/plain)")
    if workdir is None:  # read back from a log: the path as written (see parse_dss_line)
        if not path_text:
            return ProtocolWarning(f"{origin}: attachment refused: empty file name")
        return AttachReport(description=description, path=Path(path_text), mime_type=mime_type)
    try:
        path = resolve_attachment(path_text, workdir, cwd)
    except ValueError as exc:
        return ProtocolWarning(f"{origin}: attachment refused: {exc}")
    return AttachReport(description=description, path=path, mime_type=mime_type)


def resolve_attachment(path_text: str, workdir: Path, cwd: Path | None = None) -> Path:
    """The real path of an attachment: relative paths are taken against the work dir (not
    against ``cwd``, where the caller happened to be), symlinks are resolved, and the result
    must be a regular file inside the work dir. ValueError says why not.

    ``cwd`` only improves the message when a relative path exists there but not in the work
    dir. The check is about a path at one moment: whoever reads the file later should open
    it once and read from that handle.
    """
    if not path_text:
        raise ValueError("empty file name")
    if "\x00" in path_text:
        raise ValueError(f"file name {path_text!r} contains a NUL character")
    root = Path(workdir).resolve()
    given = Path(path_text)
    candidate = given if given.is_absolute() else root / given
    try:
        real = candidate.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop before 3.13
        raise ValueError(f"{path_text}: cannot resolve the path ({exc})") from None
    if real != root and root not in real.parents:
        raise ValueError(f"{path_text} is outside the work dir ({root})")
    if not real.exists():
        hint = ""
        if cwd is not None and not given.is_absolute():
            elsewhere = Path(cwd) / given
            if Path(cwd).resolve() != root and elsewhere.is_file():
                hint = (f"; it exists relative to {cwd}, where the hook was called, but "
                        "relative paths are taken against the work dir: pass an absolute path")
        raise ValueError(f"{path_text}: no such file in the work dir ({root}){hint}")
    if not real.is_file():
        raise ValueError(f"{path_text} is not a regular file")
    return real


# -- progress ---------------------------------------------------------------------------


class ProgressTracker:
    """The job's total progress from chunk reports, as the DSS server computes it.

    The server keeps one value per chunk start and answers sum((end-start)*value); a chunk
    with the same start but another end makes it fail with a 500, so the engine keeps the
    chunks here and only ever posts the total as the single chunk 0..1. Not thread-safe:
    one consumer updates it.
    """

    def __init__(self) -> None:
        self._chunks: dict[float, tuple[float, float]] = {}  # start -> (end, value)

    def update(self, report: ProgressReport) -> float:
        """Apply one report and return the new total (clamped to 0..1).

        The same start replaces the earlier chunk (even with another end). A value of 0
        removes every chunk lying inside [start, end], which is how itksnap-wt resets the
        progress of a stage.
        """
        start, end = report.start, report.end
        if report.value == 0:
            self._chunks = {s: (e, v) for s, (e, v) in self._chunks.items()
                            if not (s >= start and e <= end)}
        else:
            self._chunks[start] = (end, report.value)
        return self.total

    @property
    def total(self) -> float:
        return _clamp(sum((end - start) * value for start, (end, value) in self._chunks.items()))
