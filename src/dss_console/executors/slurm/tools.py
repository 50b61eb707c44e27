"""The SLURM cluster as seen by the engine: its command-line tools, and one monitor per engine
that asks the controller about all of this engine's jobs with a single ``squeue`` call per
poll.

The tools are found on PATH and reach the cluster through the environment (``SLURM_CONF``)
as any user's would. Nothing here decides what a job means for its ticket: that is the
runner's and the job's business (slurm_runner.py, jobs.py).
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CLUSTER_POLL_INTERVAL = 2.0  # seconds between two squeue calls of one engine, by default
# What an operator sets it with: one monitor serves every SLURM service of the engine, so it
# is the engine's setting, not a service's. Below the minimum, squeue would load the
# controller for nothing.
POLL_INTERVAL_VARIABLE = "DSS_CONSOLE_SLURM_POLL_INTERVAL"
MIN_CLUSTER_POLL_INTERVAL = 0.2
TOOL_TIMEOUT = 30.0  # a controller that does not answer within this is unreachable

# States after which the job will not run again (squeue's long names).
ENDED_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
    "PREEMPTED", "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED", "UNKNOWN",
})
UNKNOWN = "UNKNOWN"  # our word for a job the controller forgot and no accounting recalls

# What an operator reads when a job ends in a state other than a plain exit.
_ENDED_WORDS = {
    "CANCELLED": "was cancelled on the cluster",
    "TIMEOUT": "hit its time limit on the cluster",
    "OUT_OF_MEMORY": "ran out of memory on the cluster",
    "NODE_FAIL": "lost its node on the cluster",
    "PREEMPTED": "was preempted on the cluster",
    "BOOT_FAIL": "could not boot its cluster node",
    "DEADLINE": "missed its deadline on the cluster",
    "REVOKED": "was revoked on the cluster",
    "SPECIAL_EXIT": "ended in a special exit state on the cluster",
}

# Messages of the client tools that mean "the controller is not there right now".
_UNREACHABLE = re.compile(
    r"unable to contact slurm controller|connection refused|connect failure|"
    r"socket timed out|communication connection failure|slurm_load_jobs error: "
    r"(?!invalid job id)|zero bytes were transmitted|timed out", re.IGNORECASE)


def cluster_poll_interval(environ: Mapping[str, str] | None = None) -> float:
    """Seconds between two ``squeue`` calls: ``$DSS_CONSOLE_SLURM_POLL_INTERVAL``, else
    :data:`CLUSTER_POLL_INTERVAL`. ValueError in words for a value that is not one."""
    text = (os.environ if environ is None else environ).get(POLL_INTERVAL_VARIABLE, "").strip()
    if not text:
        return CLUSTER_POLL_INTERVAL
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (MIN_CLUSTER_POLL_INTERVAL <= seconds < math.inf):
        raise ValueError(f"${POLL_INTERVAL_VARIABLE} is {text!r}: it must be a number of "
                         f"seconds, {MIN_CLUSTER_POLL_INTERVAL:g} or more (unset: "
                         f"{CLUSTER_POLL_INTERVAL:g})")
    return seconds


class SlurmError(Exception):
    """A SLURM tool refused or failed; the message is SLURM's own, trimmed."""


class SlurmUnreachableError(SlurmError):
    """The controller did not answer: try again later, never fail a ticket for it."""


class SlurmToolMissingError(SlurmError):
    """sbatch/squeue/scancel is not on PATH."""


@dataclass(frozen=True)
class ClusterJobState:
    """One job as the controller (or accounting) last described it."""

    job_id: str
    state: str  # squeue's long name, e.g. PENDING, RUNNING, COMPLETED; UNKNOWN if forgotten
    reason: str = ""  # why pending (Resources, Priority, JobHeldUser, PartitionDown, ...)
    node: str = ""
    exit_status: int | None = None  # a wait status: exit code << 8 | signal
    started_at: float | None = None  # when it started running (epoch), once it has

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES

    @property
    def running(self) -> bool:
        return self.state in ("RUNNING", "COMPLETING")

    @property
    def exit_code(self) -> int | None:
        if self.exit_status is None or self.exit_status & 0x7F:
            return None
        return self.exit_status >> 8

    @property
    def signal(self) -> int | None:
        if self.exit_status is None:
            return None
        return (self.exit_status & 0x7F) or None

    def words(self) -> str:
        """The state as the console shows it: ``PENDING (Resources)``, ``RUNNING``."""
        if self.state == "PENDING" and self.reason and self.reason != "None":
            return f"PENDING ({self.reason})"
        return self.state

    def ended_how(self) -> str | None:
        """Why the job ended, in words, when that was not its command's own exit."""
        if self.state == UNKNOWN:
            return (f"ended, but SLURM no longer knows job {self.job_id} and keeps no "
                    "accounting, so its exit status is unknown")
        words = _ENDED_WORDS.get(self.state)
        if words is None:
            return None
        return f"{words} (SLURM job {self.job_id}: {self.state})"


def _clean_message(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # sbatch repeats itself ("error: invalid partition" then "Batch job submission failed:
    # Invalid partition name specified"); the last line is the one that says what failed.
    last = lines[-1] if lines else "no message"
    return re.sub(r"^(sbatch|squeue|scancel|scontrol|sacct): error: ", "", last)


def _timestamp(text: str) -> float | None:
    """SLURM's local ISO time (2026-11-30T01:41:35) as epoch seconds; None for N/A."""
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


class SlurmTools:
    """sbatch, squeue, scancel, scontrol and sacct, with bounded waits and errors in words."""

    def __init__(self, env: Mapping[str, str] | None = None,
                 timeout: float = TOOL_TIMEOUT) -> None:
        self.env = dict(os.environ if env is None else env)
        self.timeout = timeout
        self.calls: dict[str, int] = {}  # tool name -> times run (for the benchmark)
        self._accounting: bool | None = None

    def missing(self) -> str | None:
        """Why jobs cannot be submitted from here, or None."""
        for tool in ("sbatch", "squeue", "scancel"):
            if shutil.which(tool, path=self.env.get("PATH")) is None:
                return (f"{tool} is not on PATH: install the SLURM client tools on this "
                        "machine (Debian/Ubuntu: slurm-client) or add them to PATH")
        return None

    def _run(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
             ) -> subprocess.CompletedProcess[str]:
        tool = argv[0]
        self.calls[tool] = self.calls.get(tool, 0) + 1
        try:
            return subprocess.run(list(argv), capture_output=True, text=True, errors="replace",
                                  timeout=self.timeout, stdin=subprocess.DEVNULL,
                                  env=dict(self.env if env is None else env))
        except FileNotFoundError:
            raise SlurmToolMissingError(f"{tool} is not on PATH") from None
        except subprocess.TimeoutExpired:
            raise SlurmUnreachableError(f"{tool} did not answer within "
                                        f"{self.timeout:g} s") from None
        except OSError as exc:
            raise SlurmError(f"{tool} could not run: {exc.strerror or exc}") from None

    def _failed(self, tool: str, result: subprocess.CompletedProcess[str]) -> SlurmError:
        message = _clean_message(result.stderr or result.stdout)
        if _UNREACHABLE.search(result.stderr or ""):
            return SlurmUnreachableError(f"the SLURM controller cannot be reached ({message})")
        return SlurmError(message)

    # -- submitting and stopping ------------------------------------------------------------
    def submit(self, script: Path, options: Sequence[str], env: Mapping[str, str]) -> str:
        """Submit ``script`` held (``--hold``): nothing runs until :meth:`release`, so the
        caller can journal the id first. Returns the job id."""
        result = self._run(["sbatch", "--parsable", "--hold", *options, str(script)], env)
        if result.returncode != 0:
            raise self._failed("sbatch", result)
        job_id = result.stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise SlurmError(f"sbatch answered {result.stdout.strip()[:80]!r}, not a job id")
        return job_id

    def release(self, job_id: str) -> None:
        result = self._run(["scontrol", "release", job_id])
        if result.returncode != 0:
            raise self._failed("scontrol", result)

    def cancel(self, job_id: str, signal_name: str | None = None) -> None:
        argv = ["scancel"]
        if signal_name:
            # --full: the batch shell and every step, not only the steps.
            argv += [f"--signal={signal_name}", "--full"]
        result = self._run([*argv, job_id])
        if result.returncode != 0 and "already completing or completed" not in result.stderr \
                and "Invalid job id" not in result.stderr:
            raise self._failed("scancel", result)

    def find_by_name(self, name: str) -> list[str]:
        """Ids of this user's jobs named ``name`` that have not ended."""
        result = self._run(["squeue", "--noheader", f"--name={name}", "--format=%i"])
        if result.returncode != 0:
            raise self._failed("squeue", result)
        return [line.strip() for line in result.stdout.splitlines() if line.strip()]

    # -- asking about jobs ------------------------------------------------------------------
    def queue_states(self, job_ids: Sequence[str]) -> dict[str, ClusterJobState]:
        """One squeue call for all ``job_ids``; jobs the controller no longer knows are
        absent from the answer."""
        if not job_ids:
            return {}
        result = self._run(["squeue", "--noheader", "--states=all", f"--jobs={','.join(job_ids)}",
                            "--Format=JobID:|,State:|,Reason:|,NodeList:|,exit_code:|,"
                            "StartTime:|"])
        if result.returncode != 0:
            if "Invalid job id" in result.stderr:
                return {}  # none of them is known any more
            raise self._failed("squeue", result)
        states: dict[str, ClusterJobState] = {}
        for line in result.stdout.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) < 6 or not parts[0]:
                continue
            job_id, state, reason, node, status, start = parts[:6]
            state = state.split()[0] if state else UNKNOWN
            states[job_id] = ClusterJobState(
                job_id=job_id, state=state, reason=reason,
                node="" if node in ("", "(null)") else node,
                exit_status=int(status) if status.isdigit() else None,
                # A pending job's StartTime is only the scheduler's guess.
                started_at=None if state == "PENDING" else _timestamp(start))
        return states

    def accounting_state(self, job_id: str) -> ClusterJobState | None:
        """A forgotten job's end from accounting (sacct), or None when the cluster keeps no
        accounting or has no record of it."""
        if self._accounting is False:
            return None
        result = self._run(["sacct", "--noheader", "--parsable2", "--allocations",
                            f"--jobs={job_id}", "--format=JobID,State,ExitCode,NodeList"])
        if result.returncode != 0:
            if "accounting storage is disabled" in result.stderr.lower():
                self._accounting = False
                return None
            raise self._failed("sacct", result)
        self._accounting = True
        for line in result.stdout.splitlines():
            parts = line.split("|")
            if len(parts) >= 4 and parts[0] == job_id:
                code, _, sig = parts[2].partition(":")
                status = (int(code) << 8 | int(sig or 0)) if code.isdigit() else None
                return ClusterJobState(job_id=job_id, state=parts[1].split()[0] or UNKNOWN,
                                       node=parts[3], exit_status=status)
        return None


Listener = Callable[[ClusterJobState | None, str | None], None]


class ClusterMonitor:
    """Follows the cluster jobs of one engine: every ``interval`` seconds one ``squeue`` for
    all of them; ``sacct`` once for a job the controller forgot. Listeners are called on the
    monitor's thread with (state, None), or (None, problem) while the controller cannot be
    asked; they must be quick."""

    def __init__(self, tools: SlurmTools, interval: float = CLUSTER_POLL_INTERVAL) -> None:
        self.tools = tools
        self.interval = interval
        self._lock = threading.Lock()
        self._listeners: dict[str, Listener] = {}
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.polls = 0

    def watch(self, job_id: str, listener: Listener) -> None:
        with self._lock:
            self._listeners[job_id] = listener
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._loop, name="dss-cluster-monitor",
                                                daemon=True)
                self._thread.start()
        self._wake.set()

    def unwatch(self, job_id: str) -> None:
        with self._lock:
            self._listeners.pop(job_id, None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(TOOL_TIMEOUT + 5)

    def _loop(self) -> None:
        next_poll = time.monotonic()
        while True:
            with self._lock:
                if self._closed:
                    return
                listeners = dict(self._listeners)
            if listeners and time.monotonic() >= next_poll:
                next_poll = time.monotonic() + self.interval
                self._poll(listeners)
            wait = max(0.0, next_poll - time.monotonic()) if listeners else None
            self._wake.wait(wait)
            self._wake.clear()

    def _poll(self, listeners: dict[str, Listener]) -> None:
        self.polls += 1
        try:
            states = self.tools.queue_states(sorted(listeners, key=int))
        except SlurmError as exc:
            for listener in listeners.values():
                self._tell(listener, None, str(exc))
            return
        for job_id, listener in listeners.items():
            state = states.get(job_id)
            if state is None:
                state = self._forgotten(job_id)
                if state is None:
                    continue  # accounting could not be asked now: next poll
            self._tell(listener, state, None)

    def _forgotten(self, job_id: str) -> ClusterJobState | None:
        try:
            found = self.tools.accounting_state(job_id)
        except SlurmError as exc:
            log.warning("sacct for job %s failed: %s", job_id, exc)
            return None
        return found or ClusterJobState(job_id=job_id, state=UNKNOWN)

    @staticmethod
    def _tell(listener: Listener, state: ClusterJobState | None, problem: str | None) -> None:
        try:
            listener(state, problem)
        except Exception:  # one job's bug must not blind the others
            log.exception("a cluster job listener failed")
