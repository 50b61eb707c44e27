"""What a local run (:class:`~dss_console.executors.local.process.CommandRunner`) and a SLURM
job's run (:class:`~dss_console.executors.slurm.runner.SlurmRunner`) share: the job's progress
channel and output relay, a supervisor thread whose last act is to set the outcome, ``wait()``
for that outcome, and ``terminate()``'s bookkeeping (the first stop reason kept, the abort
file, the kill deadline, the service's timeout).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dss_console.core.command import CommandSpec, CommandStartError, JobPaths
from dss_console.core.executor import RunOutcome
from dss_console.core.output import OutputRelay, ProgressChannel, outcome_of, timed_out_reason
from dss_console.engine.protocol import Report


class SupervisedRun:
    """One job's command, run once; a subclass starts it and supervises it."""

    def __init__(self, spec: CommandSpec, paths: JobPaths, on_report: Callable[[Report], None],
                 *, grace_period: float, log_name: str, **relay_options: Any) -> None:
        self._spec = spec
        self._paths = paths
        self._grace = grace_period
        self._channel = ProgressChannel(Path(paths.engine_dir))
        self.log_path = Path(paths.engine_dir) / log_name
        self.events_path = self._channel.events_path
        self.abort_path = self._channel.abort_path
        self._relay = OutputRelay(on_report, workdir=Path(paths.workdir),
                                  log_path=self.log_path, events_path=self.events_path,
                                  **relay_options)
        self._lock = threading.Lock()  # stop reason, deadlines (and a subclass's state)
        self._started_at = 0.0
        self._ended_at: float | None = None
        self._timeout_at: float | None = None
        self._kill_at: float | None = None
        self._stop_reason: str | None = None
        self._pre_start_stop: str | None = None
        self._supervisor: threading.Thread | None = None
        self._wake = threading.Event()  # supervisor: look now
        self._done = threading.Event()
        self._outcome: RunOutcome | None = None

    # -- what a subclass says ---------------------------------------------------------------
    def _started(self) -> bool:
        raise NotImplementedError

    def _ended(self) -> bool:
        """The command (or job) was seen to end: too late to stop it."""
        raise NotImplementedError

    def _stop_locked(self) -> None:
        """terminate()'s own act, under the lock, once the stop is recorded (or nothing: the
        supervisor acts on the stop reason)."""

    # -- public API -------------------------------------------------------------------------
    @property
    def hook_path(self) -> Path:
        return self._channel.hook_path

    def wait(self, timeout: float | None = None) -> RunOutcome | None:
        """The outcome once the command ended and everything it reported was delivered;
        None if that has not happened within ``timeout`` seconds."""
        if not self._started():
            raise RuntimeError("the command was not started")
        if self._relay.is_dispatcher(threading.current_thread()):
            raise RuntimeError("wait() called from on_report would wait for itself")
        if not self._done.wait(timeout):
            return None
        # Setting _done is the supervisor's last act: once it has returned, no thread of
        # this run is left.
        supervisor = self._supervisor
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join()
        return self._outcome

    def terminate(self, reason: str, grace: float | None = None) -> None:
        """Stop it (see the subclass's ``_stop_locked``), killed after ``grace`` seconds
        (default: the grace period). Returns at once; idempotent (the first reason is kept);
        before the start, the start stops it."""
        grace = self._grace if grace is None else grace
        with self._lock:
            if not self._started():
                self._pre_start_stop = self._pre_start_stop or reason
                return
            if self._stop_reason is not None or self._ended():
                return
            self._stop_reason = reason
            self._channel.write_abort(reason)
            self._kill_at = time.monotonic() + max(0.0, grace)
            self._stop_locked()
        self._wake.set()

    def _argv_and_cwd(self) -> tuple[list[str], Path]:
        """The command's argv and working directory; CommandStartError when it cannot run."""
        argv = list(self._spec.argv)
        if not argv or not argv[0]:
            raise CommandStartError("empty command")
        cwd = Path(self._spec.cwd) if self._spec.cwd is not None else Path(self._paths.workdir)
        if not cwd.is_dir():
            raise CommandStartError(f"the working directory {cwd} does not exist")
        return argv, cwd

    # -- for the supervisor -----------------------------------------------------------------
    def _stop_if_timed_out(self, now: float) -> None:
        with self._lock:
            timed_out = (self._timeout_at is not None and now >= self._timeout_at
                         and self._stop_reason is None)
        if timed_out:
            assert self._spec.timeout is not None
            self.terminate(timed_out_reason(self._spec.timeout))

    def _set_outcome(self, returncode: int | None, stop_reason: str | None, tail: list[str],
                     last_error: str | None) -> None:
        ended = self._ended_at if self._ended_at is not None else time.monotonic()
        self._outcome = outcome_of(returncode, stop_reason=stop_reason, tail=tail,
                                   last_error=last_error, duration=ended - self._started_at,
                                   log_path=self.log_path)
        self._done.set()
