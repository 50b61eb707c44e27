"""Run one job's command as a SLURM batch job, with the guarantees of a local run.

The job is submitted held, its id handed to ``on_submitted`` (the journal) and only then
released, so an engine that dies at any point finds the job again instead of running the
ticket twice. SLURM writes the command's stdout and stderr into the job's log on the shared
file system; this runner tails that file as it grows and relays ``@dss`` lines and the hook's
events file exactly as :class:`CommandRunner` does for a local child (the same parsing, the
same report queue). The job's state comes from the engine's :class:`ClusterMonitor` (one
``squeue`` for all jobs per poll). Stopping is ``scancel``.

How far the log and the events file were relayed is saved next to them
(``cluster-job.json``), so a runner that follows the job again after a restart goes on from
there: a report may be relayed twice after a crash, none is skipped.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dss_console.core.command import (
    CommandSpec,
    CommandStartError,
    JobPaths,
    command_environment,
    fill_in,
)
from dss_console.core.executor import StartError
from dss_console.core.output import (
    EVENTS_INTERVAL,
    READ_SIZE,
    LineState,
)
from dss_console.engine.protocol import ProtocolWarning, Report
from dss_console.executors.slurm.details import UNREACHABLE, describe
from dss_console.executors.slurm.tools import (
    ClusterJobState,
    ClusterMonitor,
    SlurmError,
    SlurmUnreachableError,
)
from dss_console.executors.supervised import SupervisedRun

log = logging.getLogger(__name__)

RESUME_FILE = "cluster-job.json"
BATCH_SCRIPT = "cluster-job.sh"
_TAIL_INTERVAL = 0.2
_SAVE_INTERVAL = 1.0
_SETTLE = 0.5  # after the job ended, the log must stop growing for this long (NFS lag)
CANCEL_REPORT_AFTER = 30.0  # a scancel not effective after grace + this is reported


class ClusterSubmitRefused(StartError):
    """sbatch refused the job (bad partition, over a limit): SLURM's words in the message.
    Every job of the service would be refused the same way."""

    configuration = True

    def __init__(self, slurm_message: str) -> None:
        super().__init__(f"the cluster refused the job: {slurm_message}")
        self.slurm_message = slurm_message


class ClusterUnreachable(StartError):
    """The controller did not answer the submission: nothing was submitted; try again (the
    message is the operator's note)."""

    retry_later = True


@dataclass(frozen=True)
class ResumePoint:
    """A submitted job, and how far its output was relayed."""

    job_id: str
    log_offset: int = 0
    events_offset: int = 0

    @classmethod
    def load(cls, engine_dir: Path, job_id: str) -> ResumePoint:
        """Where to go on for ``job_id``; from the start when nothing (or another job) was
        saved."""
        try:
            data = json.loads((engine_dir / RESUME_FILE).read_text(encoding="utf-8"))
            if str(data.get("job")) == job_id:
                return cls(job_id, int(data.get("log_offset", 0)),
                           int(data.get("events_offset", 0)))
        except (OSError, ValueError, TypeError, AttributeError):
            pass
        return cls(job_id)

    def save(self, engine_dir: Path) -> None:
        partial = engine_dir / f".{RESUME_FILE}.tmp"
        partial.write_text(json.dumps({"job": self.job_id, "log_offset": self.log_offset,
                                       "events_offset": self.events_offset}),
                           encoding="utf-8")
        os.replace(partial, engine_dir / RESUME_FILE)


def cluster_job_name(instance: str, job_id: int, attempt: int) -> str:
    """The SLURM job name of a journal job's attempt: found by name if its id never made
    it to the journal."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in instance)[:40]
    return f"dss-{safe}-{job_id}-{attempt}"


class SlurmRunner(SupervisedRun):
    """Runs one job's command once, as a SLURM batch job.

    ``start()`` submits (or, with ``resume``, follows an already submitted job) and returns
    the SLURM job id; ``wait()``, ``terminate()`` and the reports work as for a local run.
    ``on_state`` is called on the runner's supervisor thread whenever the job's state,
    reason or node changes.
    """

    def __init__(self, spec: CommandSpec, paths: JobPaths,
                 on_report: Callable[[Report], None], *, monitor: ClusterMonitor,
                 job_name: str, sbatch_options: Sequence[str] = (),
                 on_submitted: Callable[[str], None] | None = None,
                 on_state: Callable[[ClusterJobState], None] | None = None,
                 resume: ResumePoint | None = None, grace_period: float = 10.0,
                 log_name: str = "output.log", tail_lines: int = 200,
                 max_line_bytes: int = 64 * 1024, output_batch_interval: float = 0.1,
                 spill_bytes: int = 8 * 1024 * 1024) -> None:
        super().__init__(spec, paths, on_report, grace_period=grace_period, log_name=log_name,
                         writes_log=False, tail_lines=tail_lines,
                         max_line_bytes=max_line_bytes,
                         output_batch_interval=output_batch_interval, spill_bytes=spill_bytes,
                         on_events_relayed=self._relayed_events_at)
        self._monitor = monitor
        self._job_name = job_name
        self._sbatch_options = list(sbatch_options)
        self._on_submitted = on_submitted
        self._on_state = on_state
        self._resume = resume
        self.job_id: str | None = resume.job_id if resume else None

        # Under the lock too: the monitor's word.
        self._state: ClusterJobState | None = None  # the monitor's latest word
        self._problem: str | None = None
        self._state_seen: ClusterJobState | None = None  # the last one passed to on_state
        self._job_ended = threading.Event()
        self._cancel_sent_at: float | None = None
        self._kill_sent = False
        self._cancel_reported = False
        self._problem_reported = False
        self._relayed_log = resume.log_offset if resume else 0
        self._relayed_events = resume.events_offset if resume else 0
        self._saved: tuple[int, int] | None = None
        self._tailer: threading.Thread | None = None
        self._abandon = threading.Event()  # the tailer: stop even if the log still grows
        self._submitted = False

    # -- public API -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._submitted and not self._done.is_set()

    def start(self) -> str:
        """Submit the job (or follow the one in ``resume``); return its SLURM job id.
        ClusterSubmitRefused / ClusterUnreachable / CommandStartError in words."""
        if self._submitted:
            raise RuntimeError("a SlurmRunner runs its job once")
        if self._pre_start_stop is not None and self._resume is None:
            raise CommandStartError(f"stopped before it started: {self._pre_start_stop}")
        paths = self._paths
        try:
            self._channel.prepare(keep_events=self._resume is not None)
            if self._spec.setup is not None:
                self._spec.setup()
        except OSError as exc:
            raise CommandStartError(f"cannot prepare {paths.engine_dir}: "
                                    f"{exc.strerror or exc}") from None
        if self._resume is None:
            self.job_id = self._submit()
        else:
            self._relay.events_offset = self._resume.events_offset
        self._submitted = True
        self._started_at = time.monotonic()
        with self._lock:
            stop_requested = self._pre_start_stop
        self._start_threads()
        assert self.job_id is not None
        self._monitor.watch(self.job_id, self._cluster_said)
        if stop_requested is not None:
            self.terminate(stop_requested)
        return self.job_id

    # terminate(): the supervisor sends scancel at once (_stop_if_asked); SIGKILL to every
    # step after the grace; a job still not ended CANCEL_REPORT_AFTER seconds later is
    # reported.
    def _started(self) -> bool:
        return self._submitted

    def _ended(self) -> bool:
        return self._job_ended.is_set()

    def resume_point(self) -> ResumePoint | None:
        if self.job_id is None:
            return None
        return ResumePoint(self.job_id, self._relayed_log, self._relayed_events)

    # -- submitting -------------------------------------------------------------------------
    def _submit(self) -> str:
        paths = self._paths
        argv, cwd = self._argv_and_cwd()
        env = command_environment(self._spec)
        # The options' {ticket}-style fields, with the values the job's source gave.
        options = [fill_in(option, self._spec.option_values) for option in self._sbatch_options]
        script = Path(paths.engine_dir) / BATCH_SCRIPT
        try:
            # The log exists before the job does: the tailer opens it from the start.
            self.log_path.open("wb").close()
            script.write_text("#!/bin/sh\n"
                              f"# dss-console: ticket {paths.ticket_id}\n"
                              f"exec {shlex.join(argv)}\n", encoding="utf-8")
            os.chmod(script, 0o700)
        except OSError as exc:
            raise CommandStartError(f"cannot write the batch script or log in "
                                    f"{paths.engine_dir}: {exc.strerror or exc}") from None
        tools = self._monitor.tools
        try:
            job_id = tools.submit(script, [
                f"--job-name={self._job_name}", f"--chdir={cwd}",
                f"--output={self.log_path}", f"--error={self.log_path}", "--open-mode=append",
                "--export=ALL", *options], env)
        except SlurmUnreachableError as exc:
            raise ClusterUnreachable(f"{exc}; the job is submitted when it answers",
                                     details=describe(None, UNREACHABLE, None)) from None
        except SlurmError as exc:
            raise ClusterSubmitRefused(str(exc)) from None
        try:
            if self._on_submitted is not None:
                self._on_submitted(job_id)
            tools.release(job_id)
        except BaseException as exc:
            # Not journaled or not released: it must not run behind the engine's back.
            with contextlib.suppress(SlurmError):
                tools.cancel(job_id)
            if isinstance(exc, SlurmError):
                raise CommandStartError(f"SLURM job {job_id} could not be released: "
                                        f"{exc}") from None
            raise
        return job_id

    def _start_threads(self) -> None:
        tag = f"ticket {self._paths.ticket_id}"
        self._relay.start(f"dss-runner {tag} reports")
        self._tailer = threading.Thread(target=self._tail_log, daemon=True,
                                        name=f"dss-runner {tag} log")
        self._supervisor = threading.Thread(target=self._supervise, daemon=True,
                                            name=f"dss-runner {tag} supervisor")
        self._tailer.start()
        self._supervisor.start()

    # -- the monitor's word -----------------------------------------------------------------
    def _cluster_said(self, state: ClusterJobState | None, problem: str | None) -> None:
        with self._lock:
            if state is not None:
                self._state = state
                self._problem = None
            else:
                self._problem = problem
        self._wake.set()

    # -- the log, as SLURM writes it ------------------------------------------------------
    def _tail_log(self) -> None:
        state = LineState()
        offset = self._relayed_log
        settled_since: float | None = None
        try:
            while True:
                data = self._read_log_from(offset)
                if data:
                    offset += len(data)
                    self._relay.consume("stdout", state, data)
                    relayed = offset - len(state.buffer) - state.spilled
                    self._relay.mark(functools.partial(self._relayed_log_at, relayed))
                    settled_since = None
                    continue
                if self._job_ended.is_set():
                    # On a shared file system the last lines may show up a moment late.
                    now = time.monotonic()
                    settled_since = settled_since or now
                    if now - settled_since >= _SETTLE or self._abandon.is_set():
                        break
                elif self._abandon.is_set():
                    break
                self._abandon.wait(_TAIL_INTERVAL)
        except OSError as exc:
            self._relay.emit(ProtocolWarning(f"reading the cluster job's log failed: {exc}"))
        finally:
            self._relay.finish_stream("stdout", state)
            self._wake.set()

    def _read_log_from(self, offset: int) -> bytes:
        # Opened afresh each time: on NFS only an open() sees what the node appended.
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(offset)
                return handle.read(READ_SIZE)
        except FileNotFoundError:
            return b""

    def _relayed_log_at(self, offset: int) -> None:
        self._relayed_log = offset

    def _relayed_events_at(self, offset: int) -> None:
        self._relayed_events = offset

    def _save_resume_point(self) -> None:
        point = self.resume_point()
        if point is None or (point.log_offset, point.events_offset) == self._saved:
            return
        try:
            point.save(Path(self._paths.engine_dir))
            self._saved = (point.log_offset, point.events_offset)
        except OSError as exc:
            if self._saved is not None or not self._problem_reported:
                self._relay.emit(ProtocolWarning(f"cannot save how far the job's output was "
                                                 f"relayed: {exc}"))
                self._problem_reported = True

    # -- the supervisor -------------------------------------------------------------------
    def _supervise(self) -> None:
        try:
            self._watch_until_exit()
            self._wind_down()
        except Exception:  # a bug here must not leave wait() hanging or the job running
            log.exception("the cluster job supervisor failed")
            if self.job_id is not None:
                with contextlib.suppress(Exception):
                    self._monitor.tools.cancel(self.job_id)
            if not self._done.is_set():
                with contextlib.suppress(Exception):
                    self._abandon.set()
                    self._finish(returncode=None)

    def _watch_until_exit(self) -> None:
        next_events = next_save = 0.0
        while True:
            now = time.monotonic()
            if now >= next_events:
                self._relay.read_events()
                next_events = now + EVENTS_INTERVAL
            if now >= next_save:
                self._save_resume_point()
                next_save = now + _SAVE_INTERVAL
            self._stop_if_timed_out(now)
            self._stop_if_asked(now)
            with self._lock:
                state, problem = self._state, self._problem
            if problem and not self._problem_reported:
                self._problem_reported = True
                self._relay.emit(ProtocolWarning(
                    f"cannot ask SLURM about job {self.job_id}: {problem}; the job is kept "
                    "and asked again"))
            if state is not None and state.running:
                self._start_timeout_clock()
            if state is not None and state != self._state_seen:
                self._state_seen = state
                self._problem_reported = False
                if self._on_state is not None:
                    self._on_state(state)
            if state is not None and state.ended:
                break
            self._wake.wait(EVENTS_INTERVAL)
            self._wake.clear()
        with self._lock:
            self._ended_at = time.monotonic()
        self._job_ended.set()

    def _stop_if_asked(self, now: float) -> None:
        with self._lock:
            reason, kill_at = self._stop_reason, self._kill_at
        if reason is None or kill_at is None or self.job_id is None:
            return
        tools = self._monitor.tools
        try:
            if self._cancel_sent_at is None:
                # SLURM's own stop: TERM now, KILL after the cluster's KillWait; the job
                # ends CANCELLED, as accounting and the operator's squeue expect.
                tools.cancel(self.job_id)
                self._cancel_sent_at = now
            elif now >= kill_at and not self._kill_sent:
                tools.cancel(self.job_id, "KILL")  # our grace period is over
                self._kill_sent = True
        except SlurmError as exc:
            self._relay.emit(ProtocolWarning(f"scancel {self.job_id} failed: {exc}; "
                                             "trying again"))
            self._cancel_sent_at = None if not self._kill_sent else self._cancel_sent_at
        if self._kill_sent and not self._cancel_reported and \
                now >= kill_at + CANCEL_REPORT_AFTER:
            self._cancel_reported = True
            state = self._state.words() if self._state else "unknown"
            self._relay.emit(ProtocolWarning(
                f"scancel did not take effect: SLURM job {self.job_id} is still {state} "
                f"{self._grace + CANCEL_REPORT_AFTER:g} s after it was asked to stop"))

    def _start_timeout_clock(self) -> None:
        # The service's timeout is about run time: hours in the queue do not count.
        with self._lock:
            if self._timeout_at is None and self._spec.timeout is not None \
                    and self._spec.timeout > 0:
                self._timeout_at = time.monotonic() + self._spec.timeout

    def _wind_down(self) -> None:
        assert self.job_id is not None
        self._monitor.unwatch(self.job_id)
        tailer = self._tailer
        while tailer is not None and tailer.is_alive():
            self._relay.read_events()
            tailer.join(EVENTS_INTERVAL)
        state = self._state
        with self._lock:
            if state is not None and self._stop_reason is None:
                self._stop_reason = state.ended_how()
        returncode: int | None = None
        if state is not None and state.state in ("COMPLETED", "FAILED"):
            if state.exit_code is not None:
                returncode = state.exit_code
            elif state.signal is not None:
                returncode = -state.signal
        self._finish(returncode)
        self._save_resume_point()

    def _finish(self, returncode: int | None) -> None:
        tail, last_error = self._relay.finish()
        self._set_outcome(returncode, self._stop_reason, tail, last_error)
