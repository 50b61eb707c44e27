"""Run one job's command and relay what it reports.

The command is a template split into argv with shlex, never run through a shell. It runs
in its own process group (its own session) so that a stop reaches everything it started.
Its stdout and stderr are kept whole in one log file on disk; ``@dss`` lines on stdout and
hook calls (an events file) become typed reports; everything else is passed on in batches.

Threads per run, all ended before ``wait()`` returns an outcome:

* two readers (stdout, stderr): write the log, parse lines, queue reports;
* a supervisor: tails the events file, enforces the timeout and the kill deadline, and
  notices the exit; it reaps the command only after signalling what is left of its group,
  so the group id cannot belong to a reused pid when it is signalled (where os.waitid
  exists, i.e. Linux, and macOS from Python 3.13; elsewhere a tiny window remains);
* a dispatcher: the only caller of ``on_report``, so reports arrive in order and a slow
  consumer never blocks the pipes.
"""

from __future__ import annotations

import contextlib
import errno
import io
import itertools
import json
import logging
import os
import queue
import re
import shlex
import shutil
import signal
import string
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from dss_console.engine.hook import write_hook_script
from dss_console.engine.protocol import (
    MessageReport,
    OutputReport,
    ProtocolWarning,
    Report,
    parse_dss_line,
    parse_hook_args,
)

try:
    import select

    _HAVE_POLL = hasattr(select, "poll")
except ImportError:  # pragma: no cover - every supported platform has select
    _HAVE_POLL = False

__all__ = [
    "PLACEHOLDERS",
    "CommandRunner",
    "CommandSpec",
    "CommandStartError",
    "JobPaths",
    "RunOutcome",
    "check_template",
    "command_environment",
    "expand_command",
    "preflight",
]

log = logging.getLogger(__name__)

PLACEHOLDERS = ("ticket", "service", "service_hash", "workdir", "inputs", "workspace", "result")

SHIM_DIR = "bin"  # in the engine dir: where the itksnap-wt shim goes
SHIM_DIR_PROGRAM = "itksnap-wt"
EVENTS_FILE = "events.jsonl"
ABORT_FILE = "abort"

_READ_SIZE = 64 * 1024
_BATCH_LINES = 1000
_BATCH_BYTES = 1024 * 1024
_MERGE_LINES = 10_000  # queued batches are delivered together up to this many lines
_LINE_OVERHEAD = 100  # rough bytes of memory per queued line besides its text
# Output queued for on_report but not yet delivered. Past this, the live view skips lines
# (counted in OutputReport.skipped) instead of holding a slow consumer's backlog in memory
# or slowing the command down; the log file still has every byte.
_MAX_BACKLOG_BYTES = 16 * 1024 * 1024
_EVENTS_INTERVAL = 0.2
_SUPERVISOR_TICK = 0.05
_POLL_MS = 250
_EVENTS_READ_SIZE = 1024 * 1024
_WAITID = hasattr(os, "waitid") and hasattr(os, "WNOWAIT")
_GROUPS = hasattr(os, "killpg")
_SIGKILL = getattr(signal, "SIGKILL", signal.SIGTERM)  # Windows has no SIGKILL


# -- public types -----------------------------------------------------------------------


@dataclass(frozen=True)
class CommandSpec:
    """How to run a service's command."""

    template: str  # e.g. "bash /opt/ashs/service_ashs.sh {ticket} {workdir} {workspace} {result}"
    timeout: float | None = None  # seconds
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None  # default: the work dir; relative: inside the work dir
    nice: int = 0  # added to the command's CPU niceness (its whole process group)
    itksnap_wt: bool = False  # an `itksnap-wt` (dss-console wt) first on the command's PATH
    # A source that builds the command itself (vantage6): run exactly this argv with exactly
    # this environment — no template, no os.environ, no DSS_* variables (the official v6
    # wrapper base32-decodes every variable it sees). `template` is then only for display.
    argv: Sequence[str] | None = None
    exact_env: Mapping[str, str] | None = None


@dataclass(frozen=True)
class JobPaths:
    ticket_id: int
    service_name: str
    service_hash: str
    workdir: Path  # {workdir}
    input_dir: Path  # {inputs}
    workspace: Path | None  # {workspace}: the input .itksnap; None expands to ""
    result: Path  # {result}: the result .itksnap the command must write
    engine_dir: Path  # the engine's own files: events, hook script, abort file, logs


@dataclass(frozen=True)
class RunOutcome:
    exit_code: int | None  # None when a signal ended it (then `signal` is set)
    signal: int | None
    stop_reason: str | None  # None if it ended by itself; else why it was stopped
    last_error: str | None  # text of the last `error` message (either channel)
    tail: list[str]  # the last output lines, both streams, in arrival order
    duration: float
    log_path: Path


class CommandStartError(Exception):
    """The command could not be started; the message says why in words."""


# -- templates and environment ----------------------------------------------------------


def _placeholder_values(paths: JobPaths) -> dict[str, str]:
    return {
        "ticket": str(paths.ticket_id),
        "service": paths.service_name,
        "service_hash": paths.service_hash,
        "workdir": str(paths.workdir),
        "inputs": str(paths.input_dir),
        "workspace": "" if paths.workspace is None else str(paths.workspace),
        "result": str(paths.result),
    }


def _split(template: str) -> list[str]:
    try:
        words = shlex.split(template, posix=True)
    except ValueError as exc:
        raise CommandStartError(f"cannot split the command into words: {exc} "
                                f"(check the quotes in {template!r})") from None
    if not words:
        raise CommandStartError("empty command")
    return words


def _expand_word(word: str, values: Mapping[str, str]) -> str:
    # str.format's brace rules, so the settings check (string.Formatter) and the runner
    # agree on what is a placeholder; but no attribute access, index or format spec.
    try:
        parts = list(string.Formatter().parse(word))
    except ValueError as exc:
        raise CommandStartError(f"bad braces in {word!r} ({exc}); write {{{{ and }}}} for "
                                "literal braces") from None
    out = []
    for literal, name, spec, conversion in parts:
        out.append(literal)
        if name is None:
            continue
        if name not in values:
            known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise CommandStartError(f"unknown placeholder {{{name}}} in {word!r} (known: "
                                    f"{known}; write {{{{ and }}}} for literal braces)")
        if spec or conversion:
            raise CommandStartError(f"placeholder {{{name}}} in {word!r} takes no format "
                                    "spec or conversion")
        out.append(values[name])
    return "".join(out)


def expand_command(template: str, paths: JobPaths) -> list[str]:
    """The argv of a command template: split into words first, then placeholders are
    replaced inside each word, so a value with spaces stays one word."""
    values = _placeholder_values(paths)
    argv = [_expand_word(word, values) for word in _split(template)]
    if not argv[0]:
        raise CommandStartError("empty command (the program name expands to nothing)")
    return argv


def check_template(template: str) -> None:
    """Raise CommandStartError if a template cannot be expanded (for settings dialogs)."""
    dummy = dict.fromkeys(PLACEHOLDERS, "x")
    for word in _split(template):
        _expand_word(word, dummy)


def preflight(spec: CommandSpec) -> str | None:
    """Why a command cannot start on any ticket (a bad template, a program that is not on
    PATH or not executable), in words; None when it may start. Checked before claiming, so
    a broken configuration claims nothing. What depends on the ticket (the working
    directory, a program path relative to it) is found when the job starts."""
    try:
        check_template(spec.template)
        program = _split(spec.template)[0]
    except CommandStartError as exc:
        return str(exc)
    if "{" in program or (spec.itksnap_wt and program == SHIM_DIR_PROGRAM):
        return None
    if os.sep in program or (os.altsep and os.altsep in program):
        if not os.path.isabs(program):
            return None
        try:
            _check_program(program, Path("/"), {})
        except CommandStartError as exc:
            return str(exc)
        return None
    search = str(spec.env.get("PATH", os.environ.get("PATH", os.defpath)))
    if shutil.which(program, path=search) is None:
        return f"command not found: {program} (not on the command's PATH)"
    return None


_ENGINE_VARIABLES = (
    "DSS_TICKET_ID", "DSS_SERVICE_NAME", "DSS_SERVICE_HASH", "DSS_WORKDIR", "DSS_INPUT_DIR",
    "DSS_INPUT_WORKSPACE", "DSS_RESULT_WORKSPACE", "DSS_EVENTS", "DSS_HOOK", "DSS_ABORT_FILE",
)


def command_environment(paths: JobPaths, spec: CommandSpec, hook_path: Path,
                        events_path: Path, abort_path: Path,
                        base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The command's environment: ``base`` (default: ours) + the service's ``env`` + the
    job's DSS_* variables (which win over both)."""
    env = dict(os.environ if base is None else base)
    # Our own settings variables are no business of the command's (and a future one might
    # carry something private).
    for name in [n for n in env if n.startswith("DSS_CONSOLE_")]:
        del env[name]
    if base is None and getattr(sys, "frozen", False):
        _undo_bundle_library_path(env)
    job_vars = {
        "DSS_TICKET_ID": str(paths.ticket_id),
        "DSS_SERVICE_NAME": paths.service_name,
        "DSS_SERVICE_HASH": paths.service_hash,
        "DSS_WORKDIR": str(paths.workdir),
        "DSS_INPUT_DIR": str(paths.input_dir),
        "DSS_INPUT_WORKSPACE": "" if paths.workspace is None else str(paths.workspace),
        "DSS_RESULT_WORKSPACE": str(paths.result),
        "DSS_EVENTS": str(events_path),
        "DSS_HOOK": str(hook_path),
        "DSS_ABORT_FILE": str(abort_path),
    }
    # `${DSS_HOOK}` in a service's env value means the job's hook (ASHS_HOOK_SCRIPT needs it);
    # nothing else is expanded, there being no shell.
    env.update({str(k): _DSS_REFERENCE.sub(lambda m: job_vars.get(m[1] or m[2], m[0]), str(v))
                for k, v in spec.env.items()})
    env.update(job_vars)
    if spec.itksnap_wt:
        # After the service's env, so a PATH set there still finds the shim first.
        shim_dir = str(hook_path.parent / SHIM_DIR)
        env["PATH"] = os.pathsep.join(p for p in (shim_dir, env.get("PATH", "")) if p)
    return env


_DSS_REFERENCE = re.compile(r"\$\{(DSS_[A-Z_]+)\}|\$(DSS_[A-Z_]+)")


def _undo_bundle_library_path(env: dict[str, str]) -> None:
    # A PyInstaller bundle points the loader at its own libraries and keeps the original in
    # *_ORIG; the command (bash, ITK tools...) must get the machine's, not ours.
    for name in ("LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH"):
        original = env.pop(name + "_ORIG", None)
        if original is not None:
            env[name] = original
        else:
            env.pop(name, None)


# -- starting ---------------------------------------------------------------------------


def _check_program(program: str, cwd: Path, env: Mapping[str, str]) -> None:
    """Refuse a program that cannot run, with words, before the OS says ENOENT."""
    if os.sep in program or (os.altsep and os.altsep in program):
        path = Path(cwd, program)  # relative to the child's cwd, like exec after chdir
        if not path.exists():
            raise CommandStartError(f"command not found: {program} (no such file)")
        if path.is_dir():
            raise CommandStartError(f"not executable: {program} is a directory")
        if not os.access(path, os.X_OK):
            raise CommandStartError(f"not executable: {program} (no execute permission; "
                                    "chmod +x it, or run it with bash/python in the command)")
        return
    search = env.get("PATH", os.defpath)
    if shutil.which(program, path=search) is None:
        hint = f"; for the file in {cwd}, write ./{program}" if Path(cwd, program).exists() \
            else ""
        raise CommandStartError(f"command not found: {program} (not on the command's PATH: "
                                f"{search}{hint})")


def _start_error(exc: OSError, program: str) -> CommandStartError:
    code = exc.errno
    if code == errno.ENOENT:
        return CommandStartError(f"command not found: {program}")
    if code in (errno.EACCES, errno.EPERM):
        return CommandStartError(f"not executable: {program} (permission denied)")
    if code == errno.ENOEXEC:
        return CommandStartError(f"not executable: {program} is not a program this system "
                                 "can run (a script needs a #! first line)")
    if code == errno.ENOTDIR:
        return CommandStartError(f"not executable: {program} (a part of its path is not a "
                                 "directory)")
    if code == errno.E2BIG:
        return CommandStartError("the command line or environment is too long")
    if code == getattr(errno, "ETXTBSY", None):
        return CommandStartError(f"not executable: {program} is being written right now")
    return CommandStartError(f"cannot start {program}: {exc.strerror or exc}")


def _lower_priority(pgid: int, nice: int) -> None:
    """Lower the priority of the command's whole process group: what it already forked is
    in the group, what it forks later inherits the priority. Best effort: a platform
    without it, or a command that already exited, runs as it is."""
    if not hasattr(os, "setpriority"):
        return
    with contextlib.suppress(OSError):
        current = os.getpriority(os.PRIO_PROCESS, 0)
        target = min(19, current + nice)
        os.setpriority(os.PRIO_PGRP, pgid, target)
        lower_session_weight(pgid, target)


def lower_session_weight(pid: int, nice: int) -> None:
    """With Linux's scheduler autogroups (the default on desktops), each session gets an
    equal share of the CPU whatever its processes' nice values: a command in a session of its
    own would get as much as the console. The autogroup's own nice value lowers that share.
    Best effort: nothing to do elsewhere, or when autogroups are off."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/autogroup", "w") as group:
        group.write(str(nice))


def _format_seconds(seconds: float) -> str:
    return f"{seconds:g}"


# -- the runner -------------------------------------------------------------------------


class _LineState:
    """A stream's bytes after its last newline. A line longer than the spill threshold is
    written to the log in pieces; only its head is kept for the report."""

    __slots__ = ("buffer", "head", "spilled")

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.spilled = 0  # bytes of the current line already written to the log
        self.head = b""  # its first max_line_bytes, once spilled


_END = object()  # the last item of the report queue
_TICK = object()  # a batch has started: the dispatcher must flush it in time


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


class CommandRunner:
    """Runs one job's command once. See the module docstring for the threads.

    ``on_report`` is called from the runner's dispatcher thread, one report at a time,
    in order per channel (stdout; the hook's events file). It may be slow; it must not
    call ``wait()`` (the dispatcher is what ``wait()`` waits for).
    """

    def __init__(self, spec: CommandSpec, paths: JobPaths,
                 on_report: Callable[[Report], None], *,
                 tail_lines: int = 200, max_line_bytes: int = 64 * 1024,
                 output_batch_interval: float = 0.1, grace_period: float = 10.0,
                 log_name: str = "output.log", drain_timeout: float = 2.0,
                 spill_bytes: int = 8 * 1024 * 1024) -> None:
        self._spec = spec
        self._paths = paths
        self._on_report = on_report
        self._max_line = max(1, max_line_bytes)
        self._interval = max(0.001, output_batch_interval)
        self._grace = grace_period
        self._drain_timeout = drain_timeout
        self._spill = max(spill_bytes, self._max_line)
        self.log_path = Path(paths.engine_dir) / log_name
        self.events_path = Path(paths.engine_dir) / EVENTS_FILE
        self.abort_path = Path(paths.engine_dir) / ABORT_FILE
        self.hook_path: Path | None = None

        self._lock = threading.Lock()  # process state: stop, kill deadline, reaped
        self._popen: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._ended_at: float | None = None
        self._timeout_at: float | None = None
        self._kill_at: float | None = None
        self._killed = False
        self._exited = False  # the command was seen to exit (maybe not reaped yet)
        self._reaped = False
        self._stop_reason: str | None = None
        self._pre_start_stop: str | None = None

        self._log_lock = threading.Lock()
        self._log_file: io.FileIO | None = None
        self._log_failed = False

        # Everything that orders reports: the pending output batch, the queue, the tail.
        self._out_lock = threading.Lock()
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._batch: list[tuple[str, str]] = []
        self._batch_size = 0
        self._batch_started = 0.0
        self._backlog = 0  # size of the output queued, not yet delivered
        self._skipped = 0  # output lines not queued since the last batch (backlog too long)
        self._tail: deque[str] = deque(maxlen=max(0, tail_lines))
        self._last_error: str | None = None

        self._events_offset = 0
        self._events_partial = b""
        self._events_failed = False

        self._readers: list[threading.Thread] = []
        self._supervisor: threading.Thread | None = None
        self._dispatcher: threading.Thread | None = None
        self._abandon = threading.Event()  # readers: stop even without EOF
        self._wake = threading.Event()  # supervisor: look now
        self._done = threading.Event()
        self._outcome: RunOutcome | None = None

    # -- public API ---------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def pgid(self) -> int | None:
        # start_new_session makes the command the leader of a new group with its own pid.
        if self._popen is None or not _GROUPS:
            return None
        return self._popen.pid

    @property
    def running(self) -> bool:
        """True from start() until the outcome is ready."""
        return self._popen is not None and not self._done.is_set()

    def start(self) -> int:
        """Start the command; return its pid. Raises CommandStartError in words."""
        if self._popen is not None:
            raise RuntimeError("a CommandRunner runs its command once")
        if self._pre_start_stop is not None:
            raise CommandStartError(f"stopped before it started: {self._pre_start_stop}")
        paths = self._paths
        if self._spec.argv is not None:
            argv = list(self._spec.argv)
            if not argv or not argv[0]:
                raise CommandStartError("empty command")
        else:
            argv = expand_command(self._spec.template, paths)
        cwd = Path(paths.workdir, self._spec.cwd) if self._spec.cwd else Path(paths.workdir)
        if not cwd.is_dir():
            raise CommandStartError(f"the working directory {cwd} does not exist")
        try:
            self._prepare_engine_dir()
        except OSError as exc:
            raise CommandStartError(f"cannot prepare {paths.engine_dir}: "
                                    f"{exc.strerror or exc}") from None
        assert self.hook_path is not None
        if self._spec.exact_env is not None:
            env = dict(self._spec.exact_env)
        else:
            env = command_environment(paths, self._spec, self.hook_path, self.events_path,
                                      self.abort_path)
        _check_program(argv[0], cwd, env)
        try:
            self._log_file = open(self.log_path, "wb", buffering=0)  # noqa: SIM115
        except OSError as exc:
            raise CommandStartError(f"cannot create the log {self.log_path}: "
                                    f"{exc.strerror or exc}") from None
        kwargs: dict[str, object] = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True
        else:
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
        try:
            # Explicit pipes and DEVNULL: a GUI app (frozen or not) may have no usable
            # stdin/stdout of its own to inherit.
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=cwd, env=env, bufsize=0,
                                     close_fds=True, **kwargs)  # type: ignore[call-overload]
        except OSError as exc:
            self._close_files()
            raise _start_error(exc, argv[0]) from None
        self._started_at = time.monotonic()
        if self._spec.nice:
            _lower_priority(popen.pid, self._spec.nice)
        with self._lock:
            self._popen = popen
            if self._spec.timeout is not None and self._spec.timeout > 0:
                self._timeout_at = self._started_at + self._spec.timeout
            stop_requested = self._pre_start_stop  # terminate() raced with start()
        try:
            self._start_threads(popen)
        except RuntimeError as exc:  # cannot start a thread: do not leave it running
            self._signal_group(_SIGKILL)
            self._abandon.set()
            self._queue.put(_END)
            popen.wait()
            self._close_files()
            raise CommandStartError(f"cannot watch the command: {exc}") from None
        if stop_requested is not None:
            self.terminate(stop_requested)
        return popen.pid

    def wait(self, timeout: float | None = None) -> RunOutcome | None:
        """The outcome once the command ended and everything it reported was delivered;
        None if that has not happened within ``timeout`` seconds."""
        if not self._has_started():
            raise RuntimeError("the command was not started")
        if threading.current_thread() is self._dispatcher:
            raise RuntimeError("wait() called from on_report would wait for itself")
        if not self._done.wait(timeout):
            return None
        # Setting _done is the supervisor's last act: once it has returned, no thread of
        # this run is left.
        supervisor = self._supervisor
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join()
        return self._outcome

    def _has_started(self) -> bool:
        return self._popen is not None

    def terminate(self, reason: str, grace: float | None = None) -> None:
        """Stop the command and everything in its process group: the hook starts failing
        (abort file), SIGTERM now, SIGKILL after ``grace`` seconds (default: the grace
        period). Returns at once; idempotent (the first reason is kept)."""
        grace = self._grace if grace is None else grace
        with self._lock:
            if self._popen is None:
                self._pre_start_stop = self._pre_start_stop or reason
                return
            if self._stop_reason is not None or self._exited:
                return
            self._stop_reason = reason
            self._write_abort_file(reason)
            self._kill_at = time.monotonic() + max(0.0, grace)
            self._signal_group_locked(signal.SIGTERM)
        self._wake.set()

    # -- set-up -------------------------------------------------------------------------
    def _prepare_engine_dir(self, *, keep_events: bool = False) -> None:
        engine_dir = Path(self._paths.engine_dir)
        engine_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.name == "posix":
            os.chmod(engine_dir, 0o700)
        with contextlib.suppress(FileNotFoundError):
            self.abort_path.unlink()  # left by an earlier run
        # Kept when following a command again (a cluster job after a restart): what it
        # reported meanwhile is still to be relayed.
        flags = os.O_WRONLY | os.O_CREAT | (0 if keep_events else os.O_TRUNC)
        fd = os.open(self.events_path, flags, 0o600)
        os.close(fd)
        self.hook_path = write_hook_script(engine_dir, self.events_path, self.abort_path)
        if self._spec.itksnap_wt:
            from dss_console.wt.shim import write_shim

            write_shim(engine_dir / SHIM_DIR)

    def _start_threads(self, popen: subprocess.Popen[bytes]) -> None:
        tag = f"ticket {self._paths.ticket_id}"
        assert popen.stdout is not None and popen.stderr is not None
        self._readers = [
            threading.Thread(target=self._read_stream, args=("stdout", popen.stdout),
                             name=f"dss-runner {tag} stdout", daemon=True),
            threading.Thread(target=self._read_stream, args=("stderr", popen.stderr),
                             name=f"dss-runner {tag} stderr", daemon=True),
        ]
        self._dispatcher = threading.Thread(target=self._dispatch, daemon=True,
                                            name=f"dss-runner {tag} reports")
        self._supervisor = threading.Thread(target=self._supervise, daemon=True,
                                            name=f"dss-runner {tag} supervisor")
        self._dispatcher.start()
        for reader in self._readers:
            reader.start()
        self._supervisor.start()

    def _write_abort_file(self, reason: str) -> None:
        # Written whole, then renamed: the hook must never read half a reason.
        partial = self.abort_path.with_name(f".{ABORT_FILE}.tmp")
        try:
            partial.write_text(reason + "\n", encoding="utf-8", errors="replace")
            os.replace(partial, self.abort_path)
        except OSError as exc:
            log.warning("cannot write the abort file %s: %s", self.abort_path, exc)

    # -- signals ------------------------------------------------------------------------
    def _signal_group(self, sig: int) -> None:
        with self._lock:
            self._signal_group_locked(sig)

    def _signal_group_locked(self, sig: int) -> None:
        popen = self._popen
        if popen is None or self._reaped:
            return  # once reaped, the group id may name someone else's processes
        if _GROUPS:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, sig)
        else:  # Windows: the command itself only
            with contextlib.suppress(OSError):
                if sig == signal.SIGTERM:
                    popen.terminate()
                else:
                    popen.kill()

    # -- reading the pipes --------------------------------------------------------------
    def _read_stream(self, stream: str, pipe: BinaryIO) -> None:
        fd = pipe.fileno()
        state = _LineState()
        poller = None
        if _HAVE_POLL:
            poller = select.poll()
            poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        try:
            while True:
                # Polling with a timeout lets the supervisor abandon a pipe that a process
                # outside the group keeps open after the command exited.
                if poller is not None:
                    if self._abandon.is_set():
                        break
                    if not poller.poll(_POLL_MS):
                        continue
                data = os.read(fd, _READ_SIZE)
                if not data:
                    break
                self._consume(stream, state, data)
        except OSError as exc:
            self._emit(ProtocolWarning(f"reading the command's {stream} failed: {exc}"))
        finally:
            self._finish_stream(stream, state)
            with contextlib.suppress(OSError):
                pipe.close()
            self._wake.set()

    def _consume(self, stream: str, state: _LineState, data: bytes) -> None:
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

    def _spill_if_endless(self, state: _LineState) -> None:
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

    def _finish_stream(self, stream: str, state: _LineState) -> None:
        rest = bytes(state.buffer)
        state.buffer.clear()
        if rest:
            self._write_log(rest)
        if rest or state.spilled:
            self._take_lines(stream, [rest], state.spilled, state.head)

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
        workdir = Path(self._paths.workdir)
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
        self._emit(ProtocolWarning(f"cannot write the command's log {self.log_path}: "
                                   f"{failure}; the output is no longer kept on disk"))

    # -- the report queue ---------------------------------------------------------------
    def _emit(self, report: Report) -> None:
        with self._out_lock:
            self._emit_locked(report)

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

    def _deliver(self, items: list[object]) -> bool:
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
            self._call(item)  # type: ignore[arg-type]
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
    def _read_events(self, final: bool = False) -> None:
        # Opened afresh every time: on NFS only an open() is sure to see what another host
        # appended (close-to-open consistency); a handle kept open may see stale data.
        if self._events_failed:
            return
        chunks = [self._events_partial]
        try:
            with open(self.events_path, "rb") as handle:
                handle.seek(self._events_offset)
                while True:
                    data = handle.read(_EVENTS_READ_SIZE)
                    if not data:
                        break
                    chunks.append(data)
                    self._events_offset += len(data)
        except OSError as exc:
            self._events_failed = True
            self._emit(ProtocolWarning(f"cannot read the hook's events file: {exc}; hook "
                                       "calls are no longer relayed"))
            return
        lines = b"".join(chunks).split(b"\n")
        self._events_partial = lines.pop()
        if final and self._events_partial.strip():
            lines.append(self._events_partial)  # a writer died mid-line: say so
            self._events_partial = b""
        for raw in lines:
            if raw.strip():
                self._emit(self._event_report(raw))

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
        return parse_hook_args(args, Path(self._paths.workdir),
                               cwd=Path(cwd) if isinstance(cwd, str) and cwd else None)

    # -- the supervisor -----------------------------------------------------------------
    def _command_exited(self) -> bool:
        popen = self._popen
        assert popen is not None
        if not _WAITID:
            return popen.poll() is not None
        try:
            # WNOWAIT: leave it a zombie, so its pid (= the group id) cannot be reused
            # while the rest of the group is being signalled.
            result = os.waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped behind our back (SIGCHLD ignored?)
            return True
        return result is not None

    def _supervise(self) -> None:
        try:
            self._watch_until_exit()
            self._wind_down()
        except Exception:  # a bug here must not leave wait() hanging or the command running
            log.exception("the command supervisor failed")
            with contextlib.suppress(Exception):
                self._signal_group(_SIGKILL)
            if not self._done.is_set():
                with contextlib.suppress(Exception):
                    self._finish(returncode=None)

    def _watch_until_exit(self) -> None:
        next_events = 0.0
        while not self._command_exited():
            now = time.monotonic()
            if now >= next_events:
                self._read_events()
                next_events = now + _EVENTS_INTERVAL
            self._check_deadlines(now)
            self._wake.wait(_SUPERVISOR_TICK)
            self._wake.clear()
        with self._lock:
            self._exited = True
            self._ended_at = time.monotonic()

    def _check_deadlines(self, now: float) -> None:
        with self._lock:
            timed_out = (self._timeout_at is not None and now >= self._timeout_at
                         and self._stop_reason is None)
            kill_due = self._kill_at is not None and now >= self._kill_at and not self._killed
        if timed_out:
            assert self._spec.timeout is not None
            self.terminate(f"timed out after {_format_seconds(self._spec.timeout)} s")
        if kill_due:
            with self._lock:
                self._killed = True
                self._signal_group_locked(_SIGKILL)

    def _readers_alive(self) -> bool:
        return any(reader.is_alive() for reader in self._readers)

    def _join_readers(self, deadline: float) -> bool:
        for reader in self._readers:
            reader.join(max(0.0, deadline - time.monotonic()))
        return not self._readers_alive()

    def _wind_down(self) -> None:
        # The command exited. What it started may still be running: give it until the
        # drain timeout (or, when stopping, the kill deadline) to close the pipes, then
        # kill whatever is left in the group. A finished job leaves nothing behind.
        with self._lock:
            stopping = self._stop_reason is not None
            kill_at = self._kill_at
        if stopping and kill_at is not None:
            deadline = kill_at
        else:
            deadline = time.monotonic() + self._drain_timeout
        while self._readers_alive() and time.monotonic() < deadline:
            self._read_events()
            self._join_readers(min(deadline, time.monotonic() + _EVENTS_INTERVAL))
        lingering = self._readers_alive()
        self._signal_group(_SIGKILL)
        if lingering and not stopping:
            self._emit(ProtocolWarning(
                "the command exited but processes it started kept its output open for "
                f"{_format_seconds(self._drain_timeout)} s; they were killed"))
        if not self._join_readers(time.monotonic() + 1.0):
            # Someone outside the group (setsid, a daemon) holds the pipes.
            self._abandon.set()
            self._join_readers(time.monotonic() + 1.0 + _POLL_MS / 1000)
            self._emit(ProtocolWarning(
                "a process outside the command's process group keeps its output open; "
                "stopped reading it"))
        with self._lock:
            self._reaped = True
        returncode = self._popen.wait() if self._popen is not None else None
        self._finish(returncode)

    def _finish(self, returncode: int | None) -> None:
        self._read_events(final=True)
        with self._out_lock:
            self._flush_batch_locked()
            self._queue.put(_END)
        if self._dispatcher is not None and self._dispatcher is not threading.current_thread():
            self._dispatcher.join()
        self._close_files()
        ended = self._ended_at if self._ended_at is not None else time.monotonic()
        exit_code = sig = None
        if returncode is not None:
            if returncode < 0:
                sig = -returncode
            else:
                exit_code = returncode
        with self._out_lock:
            tail = list(self._tail)
            last_error = self._last_error
        self._outcome = RunOutcome(exit_code=exit_code, signal=sig,
                                   stop_reason=self._stop_reason, last_error=last_error,
                                   tail=tail, duration=ended - self._started_at,
                                   log_path=self.log_path)
        self._done.set()

    def _close_files(self) -> None:
        with self._log_lock:
            if self._log_file is not None:
                with contextlib.suppress(OSError):
                    self._log_file.close()
            self._log_file = None
