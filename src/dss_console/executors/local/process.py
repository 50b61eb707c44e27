"""Run one job's command as a child process on this machine, and relay what it reports.

The command runs in its own process group (its own session) so that a stop reaches
everything it started. On POSIX it starts behind a gate: a tiny shell that waits for one line
on its stdin before it execs the command, so that the executor can journal the pid first
(``start(hold=True)``, then ``release()``). If the engine dies before, the shell reads end of
file and exits without having run anything of the command: a restart never misses a command
that runs. Its stdout and stderr are kept whole in one log file on disk; the
output relay (core/output.py) turns ``@dss`` lines and hook calls into typed reports.

Threads per run, all ended before ``wait()`` returns an outcome:

* two readers (stdout, stderr): feed the relay (which writes the log and parses lines);
* a supervisor: tails the events file, enforces the timeout and the kill deadline, and
  notices the exit; it reaps the command only after signalling what is left of its group,
  so the group id cannot belong to a reused pid when it is signalled (where os.waitid
  exists, i.e. Linux, and macOS from Python 3.13; elsewhere a tiny window remains);
* the relay's dispatcher: the only caller of ``on_report``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from dss_console.core.command import (
    CommandSpec,
    CommandStartError,
    JobPaths,
    check_program,
    command_environment,
)
from dss_console.core.output import (
    EVENTS_INTERVAL,
    READ_SIZE,
    LineState,
    format_seconds,
)
from dss_console.engine.protocol import ProtocolWarning, Report
from dss_console.executors.local.contain import Containment
from dss_console.executors.supervised import SupervisedRun

try:
    import select

    _HAVE_POLL = hasattr(select, "poll")
except ImportError:  # pragma: no cover - every supported platform has select
    _HAVE_POLL = False

__all__ = ["STOPPED_AT_GATE", "CommandRunner", "lower_session_weight"]

log = logging.getLogger(__name__)

_SUPERVISOR_TICK = 0.05
_POLL_MS = 250
_WAITID = hasattr(os, "waitid") and hasattr(os, "WNOWAIT")
_GROUPS = hasattr(os, "killpg")
_SIGKILL = getattr(signal, "SIGKILL", signal.SIGTERM)  # Windows has no SIGKILL

# The start gate. The pipe is the shell's stdin rather than a passed fd: dash cannot name an
# fd above 9, and the command's stdin was /dev/null anyway (and is again once it runs).
# "$@" is exec'd as it is, never parsed by the shell. Exit 111: the gate closed without a go.
_GATE_ARGV = ("/bin/sh", "-c",
              'IFS= read -r go && [ "$go" = go ] || exit 111; exec "$@" </dev/null',
              "dss-start")
_GO = b"go\n"
STOPPED_AT_GATE = "stopped before it started"


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


class CommandRunner(SupervisedRun):
    """Runs one job's command once. See the module docstring for the threads.

    ``on_report`` is called from the relay's dispatcher thread, one report at a time,
    in order per channel (stdout; the hook's events file). It may be slow; it must not
    call ``wait()`` (the dispatcher is what ``wait()`` waits for).
    """

    def __init__(self, spec: CommandSpec, paths: JobPaths,
                 on_report: Callable[[Report], None], *,
                 tail_lines: int = 200, max_line_bytes: int = 64 * 1024,
                 output_batch_interval: float = 0.1, grace_period: float = 10.0,
                 log_name: str = "output.log", drain_timeout: float = 2.0,
                 spill_bytes: int = 8 * 1024 * 1024,
                 containment: Containment | None = None) -> None:
        super().__init__(spec, paths, on_report, grace_period=grace_period, log_name=log_name,
                         tail_lines=tail_lines, max_line_bytes=max_line_bytes,
                         output_batch_interval=output_batch_interval, spill_bytes=spill_bytes)
        # The run's sandbox and limits (executors/local/contain.py); None: runs as it is.
        self._containment = containment
        self._drain_timeout = drain_timeout
        # Under the lock too: the process, the kill, reaped.
        self._popen: subprocess.Popen[bytes] | None = None
        self._killed = False
        self._exited = False  # the command was seen to exit (maybe not reaped yet)
        self._reaped = False
        self._gate: int | None = None  # the gate's write end while the command waits at it
        self._gated = False  # it started behind the gate (POSIX)
        self._let_go = False  # the gate said go: the command may have run

        self._readers: list[threading.Thread] = []
        self._abandon = threading.Event()  # readers: stop even without EOF

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

    def start(self, *, hold: bool = False) -> int:
        """Start the command; return its pid. Raises CommandStartError in words.

        ``hold``: the command waits at its gate until ``release()`` (the caller journals
        the pid and group meanwhile); without it, it is let go at once."""
        if self._popen is not None:
            raise RuntimeError("a CommandRunner runs its command once")
        if self._pre_start_stop is not None:
            raise CommandStartError(f"stopped before it started: {self._pre_start_stop}")
        paths = self._paths
        argv, cwd = self._argv_and_cwd()
        try:
            self._channel.prepare()
            if self._spec.setup is not None:
                self._spec.setup()
        except OSError as exc:
            raise CommandStartError(f"cannot prepare {paths.engine_dir}: "
                                    f"{exc.strerror or exc}") from None
        env = command_environment(self._spec)
        check_program(argv[0], cwd, env)
        program = argv[0]
        if self._containment is not None:
            if self._spec.nice and self._containment.policy.sandboxed:
                # The sandboxed command is in a session of its own (bwrap --new-session),
                # out of reach of the group's priority set below: nice starts it lower.
                argv = ["nice", "-n", str(self._spec.nice), *argv]
            argv, env = self._containment.command(
                argv, env, cwd, Path(paths.workdir),
                [] if self._spec.writable_inputs else [Path(paths.input_dir)],
                loopback_port=self._spec.loopback_port,
                runtime_paths=self._spec.runtime_paths)
        try:
            self._relay.open_log()
        except OSError as exc:
            raise CommandStartError(f"cannot create the log {self.log_path}: "
                                    f"{exc.strerror or exc}") from None
        gate_read: int | None = None
        try:
            # Explicit pipes and DEVNULL: a GUI app (frozen or not) may have no usable
            # stdin/stdout of its own to inherit.
            if os.name == "posix":
                # Outermost, before the limits' cgroup join and bwrap (which all exec in
                # place): the pid journaled is the group's leader and the gate's alike.
                # Both ends are close-on-exec; only the child's stdin copy outlives the
                # exec, so no other child holds the write end open past the engine's death.
                gate_read, self._gate = os.pipe()
                self._gated = True
                popen = subprocess.Popen([*_GATE_ARGV, *argv], stdin=gate_read,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         cwd=cwd, env=env, bufsize=0, close_fds=True,
                                         start_new_session=True)
            else:
                popen = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, cwd=cwd, env=env, bufsize=0, close_fds=True,
                    creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0))
        except OSError as exc:
            self._relay.close_log()
            self._close_gate()
            raise _start_error(exc, program) from None
        finally:
            if gate_read is not None:
                os.close(gate_read)
        self._started_at = time.monotonic()
        sandboxed = self._containment is not None and self._containment.policy.sandboxed
        if self._spec.nice and not sandboxed:  # a sandboxed one was started with nice
            _lower_priority(popen.pid, self._spec.nice)
        with self._lock:
            self._popen = popen
            if self._spec.timeout is not None and self._spec.timeout > 0:
                self._timeout_at = self._started_at + self._spec.timeout
            stop_requested = self._pre_start_stop  # terminate() raced with start()
        try:
            self._start_threads(popen)
        except RuntimeError as exc:  # cannot start a thread: do not leave it running
            self._close_gate()  # it never runs
            self._signal_group(_SIGKILL)
            self._abandon.set()
            self._relay.abort()
            popen.wait()
            raise CommandStartError(f"cannot watch the command: {exc}") from None
        if stop_requested is not None:
            self.terminate(stop_requested)
        if not hold:
            self.release()
        return popen.pid

    def release(self) -> None:
        """Let the command run: it waits at its gate since ``start(hold=True)``. One that
        was stopped meanwhile is not let go (it ends without having run). Idempotent; a
        no-op where there is no gate (Windows)."""
        with self._lock:
            gate, self._gate = self._gate, None
            go = gate is not None and self._stop_reason is None
            if go:
                self._let_go = True
        if gate is None:
            return
        try:
            if go:
                os.write(gate, _GO)
        except OSError:  # the gate's shell is gone already (killed): nothing ran
            pass
        finally:
            os.close(gate)

    def _close_gate(self) -> None:
        """Close the gate without a go: the command ends without running (exit 111)."""
        with self._lock:
            gate, self._gate = self._gate, None
        if gate is not None:
            os.close(gate)

    def _started(self) -> bool:
        return self._popen is not None

    def _ended(self) -> bool:
        return self._exited

    def _stop_locked(self) -> None:
        """terminate(): the command and everything in its process group get SIGTERM now
        (the hook already fails: abort file), SIGKILL at the kill deadline."""
        # A sandboxed command gets the TERM itself through its cgroup: a TERM to bwrap
        # would end it, and its --die-with-parent would SIGKILL the command at once,
        # without the grace period. The group's KILL at the deadline still ends it all.
        containment = self._containment
        if (containment is not None and containment.policy.sandboxed and not self._reaped
                and containment.signal_command(signal.SIGTERM) > 0):
            return
        self._signal_group_locked(signal.SIGTERM)

    # -- set-up -------------------------------------------------------------------------
    def _start_threads(self, popen: subprocess.Popen[bytes]) -> None:
        tag = f"ticket {self._paths.ticket_id}"
        assert popen.stdout is not None and popen.stderr is not None
        self._readers = [
            threading.Thread(target=self._read_stream, args=("stdout", popen.stdout),
                             name=f"dss-runner {tag} stdout", daemon=True),
            threading.Thread(target=self._read_stream, args=("stderr", popen.stderr),
                             name=f"dss-runner {tag} stderr", daemon=True),
        ]
        self._supervisor = threading.Thread(target=self._supervise, daemon=True,
                                            name=f"dss-runner {tag} supervisor")
        self._relay.start(f"dss-runner {tag} reports")
        for reader in self._readers:
            reader.start()
        self._supervisor.start()

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
        state = LineState()
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
                data = os.read(fd, READ_SIZE)
                if not data:
                    break
                self._relay.consume(stream, state, data)
        except OSError as exc:
            self._relay.emit(ProtocolWarning(f"reading the command's {stream} failed: {exc}"))
        finally:
            self._relay.finish_stream(stream, state)
            with contextlib.suppress(OSError):
                pipe.close()
            self._wake.set()

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
                self._relay.read_events()
                next_events = now + EVENTS_INTERVAL
            self._check_deadlines(now)
            self._wake.wait(_SUPERVISOR_TICK)
            self._wake.clear()
        with self._lock:
            self._exited = True
            self._ended_at = time.monotonic()

    def _check_deadlines(self, now: float) -> None:
        self._stop_if_timed_out(now)
        with self._lock:
            kill_due = self._kill_at is not None and now >= self._kill_at and not self._killed
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
            self._relay.read_events()
            self._join_readers(min(deadline, time.monotonic() + EVENTS_INTERVAL))
        lingering = self._readers_alive()
        self._signal_group(_SIGKILL)
        if lingering and not stopping:
            self._relay.emit(ProtocolWarning(
                "the command exited but processes it started kept its output open for "
                f"{format_seconds(self._drain_timeout)} s; they were killed"))
        if not self._join_readers(time.monotonic() + 1.0):
            # Someone outside the group (setsid, a daemon) holds the pipes.
            self._abandon.set()
            self._join_readers(time.monotonic() + 1.0 + _POLL_MS / 1000)
            self._relay.emit(ProtocolWarning(
                "a process outside the command's process group keeps its output open; "
                "stopped reading it"))
        with self._lock:
            self._reaped = True
        returncode = self._popen.wait() if self._popen is not None else None
        self._finish(returncode)

    def _finish(self, returncode: int | None) -> None:
        self._close_gate()  # it ended at its gate: let nothing linger
        tail, last_error = self._relay.finish()
        stop_reason = self._stop_reason
        if stop_reason is None and self._gated and not self._let_go:
            # Its gate closed without a go (exit 111): the command itself never ran, so
            # this is not the command failing.
            stop_reason = STOPPED_AT_GATE
        if self._containment is not None:
            # A limit it hit is why it ended, before what its exit code says ("ran out of
            # memory: limit 8 GiB", not "killed by signal 9"). A command that succeeded
            # despite a refused fork succeeded.
            if stop_reason is None and returncode != 0:
                stop_reason = self._containment.end_reason()
            try:
                self._containment.close()
            except OSError as exc:  # its processes outlived 10 s of SIGKILL: say so
                log.warning("could not remove the limits of %s: %s", self.log_path, exc)
        self._set_outcome(returncode, stop_reason, tail, last_error)
