"""The SLURM executor: a job's command as a batch job on a cluster sharing the work root.

One :class:`ClusterMonitor` per executor (one ``squeue`` per poll for all of an engine's
jobs), made when the first job needs it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dss_console.core.command import CommandSpec
from dss_console.core.executor import (
    Executor,
    ExecutorDetails,
    JobRef,
    OptionValue,
    Recovery,
    RunCallbacks,
    RunHandle,
    RunOutcome,
    RunRequest,
    StartError,
)
from dss_console.engine.settings_reader import TableReader
from dss_console.executors.slurm import options as slurm_options
from dss_console.executors.slurm.details import NAME, describe
from dss_console.executors.slurm.runner import ResumePoint, SlurmRunner, cluster_job_name
from dss_console.executors.slurm.tools import (
    CLUSTER_POLL_INTERVAL,
    ClusterJobState,
    ClusterMonitor,
    SlurmError,
    SlurmTools,
    cluster_poll_interval,
)
from dss_console.isolation import (
    PolicyError,
    format_size,
    policy_from_table,
    sbatch_limit_options,
)

__all__ = ["SlurmExecutor"]


class _JobReports:
    """Turns the runner's word about its cluster job into details and notes for the core."""

    def __init__(self, callbacks: RunCallbacks, details: ExecutorDetails | None) -> None:
        self._callbacks = callbacks
        data = details.data if details is not None else {}
        job = data.get("cluster_job")
        node = data.get("cluster_node")
        self._job_id = job if isinstance(job, str) else None
        self._node = node if isinstance(node, str) else None
        self._queued_at = details.queued_at if details is not None else None
        self._running_at = details.running_at if details is not None else None
        self._last_note = ""

    def submitted(self, job_id: str) -> None:
        # Journaled before SLURM may run it (the runner releases it after this returns).
        self._job_id = job_id
        self._queued_at = time.time()
        self._callbacks.on_details(describe(job_id, "PENDING", None,
                                            queued_at=self._queued_at))
        self._callbacks.on_note("info", f"submitted as SLURM job {job_id}")

    def state(self, state: ClusterJobState) -> None:
        self._node = state.node or self._node
        if self._running_at is None and (state.running or state.started_at is not None):
            # A short job may end between two polls: SLURM's start time says when it ran.
            self._running_at = state.started_at or time.time()
        words = state.words()
        self._callbacks.on_details(describe(state.job_id, words, self._node,
                                            queued_at=self._queued_at,
                                            running_at=self._running_at))
        note = f"SLURM job {state.job_id}: {words}" + \
            (f" on {state.node}" if state.node and state.state != "PENDING" else "")
        if note != self._last_note:
            self._last_note = note
            self._callbacks.on_note("info", note)


class _SlurmRun(RunHandle):
    def __init__(self, runner: SlurmRunner) -> None:
        self._runner = runner

    def wait(self, timeout: float | None = None) -> RunOutcome | None:
        return self._runner.wait(timeout)

    def stop(self, reason: str, grace: float | None = None) -> None:
        self._runner.terminate(reason, grace)


class SlurmExecutor(Executor):
    name = NAME
    title = "SLURM cluster job (submitted with sbatch)"
    help = slurm_options.HELP
    dry_run_note = "on this computer, not as a cluster job"
    option_fields = (slurm_options.SBATCH_OPTIONS,)
    # A service's memory and CPU limits become --mem / --cpus-per-task where its
    # sbatch_options set neither; isolation on the cluster is the cluster's.
    policy_keys = ("memory", "cpus")

    @classmethod
    def check_policy_value(cls, key: str, value: object) -> None:
        try:
            policy_from_table({key: value}, "")
        except PolicyError as exc:
            raise ValueError(str(exc).removeprefix(f"{key}: ")) from None

    @classmethod
    def parse_options(cls, reader: TableReader, table: Mapping[str, Any],
                      where: str) -> dict[str, OptionValue]:
        return slurm_options.parse_options(reader, table, where)

    @classmethod
    def check_option(cls, name: str, value: OptionValue) -> None:
        slurm_options.check_option(name, value)

    @classmethod
    def option_note(cls, name: str, value: OptionValue) -> str | None:
        return slurm_options.option_note(name, value)

    def details(self) -> ExecutorDetails:
        return describe(None, None, None)

    def describe_options(self, options: Mapping[str, OptionValue]) -> str:
        # Isolation on the cluster is the cluster's: only the limits that become sbatch
        # options are this console's to say, as submitted (the operator's own --mem / -c win).
        given = options.get(slurm_options.SBATCH_OPTIONS.name)
        operator_options = list(given) if isinstance(given, list) else []
        try:
            policy = policy_from_table({k: v for k, v in options.items()
                                        if k in self.policy_keys}, "")
        except PolicyError as exc:
            return f"the service's limits are unusable: {exc}"
        added = dict(option.split("=", 1) for option in
                     sbatch_limit_options(policy, operator_options))
        words = []
        if "--mem" in added:
            words.append(f"memory {format_size(int(added['--mem'].removesuffix('M')) * 1024**2)}")
        elif policy.memory is not None:
            words.append("memory as its sbatch options say")
        if "--cpus-per-task" in added:
            cpus = int(added["--cpus-per-task"])
            words.append(f"{cpus} CPU{'' if cpus == 1 else 's'}")
        elif policy.cpus is not None:
            words.append("CPUs as its sbatch options say")
        return "on the cluster: " + (", ".join(words) if words
                                     else "its own isolation and limits")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._monitor: ClusterMonitor | None = None
        self._interval_problem: str | None = None  # a poll interval set wrong, in words

    def monitor(self) -> ClusterMonitor:
        """The one monitor of this executor's jobs (made when the first one needs it)."""
        with self._lock:
            if self._monitor is None:
                try:
                    interval = cluster_poll_interval()
                except ValueError as exc:
                    # New jobs wait for the fix (preflight says it); jobs already on the
                    # cluster are followed at the default pace meanwhile.
                    interval, self._interval_problem = CLUSTER_POLL_INTERVAL, str(exc)
                self._monitor = ClusterMonitor(SlurmTools(), interval)
            return self._monitor

    def preflight(self, spec: CommandSpec, workroot: Path) -> str | None:
        """Why a service's jobs cannot be submitted to SLURM from here: the client tools
        missing, or a work root the jobs cannot write (it must be on a file system the
        cluster's nodes share). The program is not looked for: it runs on a node."""
        missing = self.monitor().tools.missing()
        if missing is not None:
            return missing
        if self._interval_problem is not None:
            return self._interval_problem
        root = Path(workroot)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"the work root {root} cannot be created: {exc.strerror or exc}"
        if not os.access(root, os.W_OK | os.X_OK):
            return (f"the work root {root} is not writable; cluster jobs need a writable work "
                    "root on a file system shared with the cluster's nodes")
        return None

    def start(self, request: RunRequest, callbacks: RunCallbacks) -> RunHandle:
        return self._run(request, callbacks, None)

    def follow(self, request: RunRequest, callbacks: RunCallbacks,
               details: ExecutorDetails) -> RunHandle:
        job_id = details.data.get("cluster_job")
        if not isinstance(job_id, str) or not job_id:
            raise StartError("no SLURM job to follow")
        callbacks.on_note("info", f"following SLURM job {job_id} again after a restart")
        return self._run(request, callbacks, details)

    def _run(self, request: RunRequest, callbacks: RunCallbacks,
             details: ExecutorDetails | None) -> RunHandle:
        reports = _JobReports(callbacks, details)
        job_id = details.data.get("cluster_job") if details is not None else None
        resume = ResumePoint.load(request.paths.engine_dir, job_id) \
            if isinstance(job_id, str) else None
        given = request.options.get(slurm_options.SBATCH_OPTIONS.name)
        sbatch_options = list(given) if isinstance(given, list) else []
        try:
            policy = policy_from_table({k: v for k, v in request.options.items()
                                        if k in self.policy_keys}, "")
        except PolicyError as exc:
            raise StartError(f"the service's limits are unusable: {exc}") from None
        sbatch_options += sbatch_limit_options(policy, sbatch_options)
        runner = SlurmRunner(
            request.spec, request.paths, callbacks.on_report, monitor=self.monitor(),
            job_name=cluster_job_name(request.job.instance, request.job.job_id,
                                      request.job.attempt),
            sbatch_options=sbatch_options,
            on_submitted=reports.submitted, on_state=reports.state, resume=resume,
            grace_period=request.grace_period, log_name=request.log_name)
        runner.start()
        return _SlurmRun(runner)

    def recover(self, details: ExecutorDetails, job: JobRef, grace: float) -> Recovery:
        if details.data.get("cluster_job"):
            # Its cluster job ran on (or ended) without us: follow it, never rerun it.
            return Recovery(follow=True)
        return Recovery(notes=self._cancel_unjournaled(job))

    def _cancel_unjournaled(self, job: JobRef) -> tuple[str, ...]:
        """Stopped between sbatch and journaling the id: the job was submitted held and never
        released; find it by its name and cancel it before the ticket runs again."""
        tools = self.monitor().tools
        notes: list[str] = []
        try:
            for cluster_job in tools.find_by_name(cluster_job_name(job.instance, job.job_id,
                                                                   job.attempt)):
                tools.cancel(cluster_job)
                notes.append(f"cancelled SLURM job {cluster_job}, submitted but never started "
                             "by the previous run")
        except SlurmError as exc:
            notes.append(f"could not look for a SLURM job left by the previous run ({exc})")
        return tuple(notes)

    def close(self) -> None:
        with self._lock:
            monitor = self._monitor
        if monitor is not None:
            monitor.close()
