"""The local executor: a job's command as a child process in its own process group."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Mapping
from pathlib import Path

from dss_console.core.command import CommandSpec, preflight
from dss_console.core.executor import (
    DetailValue,
    Executor,
    ExecutorDetails,
    JobRef,
    OptionField,
    OptionValue,
    Recovery,
    RunCallbacks,
    RunHandle,
    RunOutcome,
    RunRequest,
)
from dss_console.executors.local.contain import (
    Containment,
    Host,
    SandboxUnavailable,
    check_policy_value,
    policy_of,
    sandbox_problem,
)
from dss_console.executors.local.process import CommandRunner
from dss_console.executors.local.recover import kill_orphaned_group, process_identity
from dss_console.isolation import POLICY_KEYS, Limits

__all__ = ["LocalExecutor"]

LEFTOVER_STOPPED = "stopped the command left running by the previous run"
# The window's words when this machine enforces limits with prlimit only (no usable cgroup).
WEAK_LIMITS = "limits per process only: no usable cgroup here, no CPU limit"


class _LocalRun(RunHandle):
    def __init__(self, runner: CommandRunner, callbacks: RunCallbacks) -> None:
        self._runner = runner
        self._callbacks = callbacks
        self._ended = False

    def wait(self, timeout: float | None = None) -> RunOutcome | None:
        outcome = self._runner.wait(timeout)
        if outcome is not None and not self._ended:
            self._ended = True
            # Its group is gone: nothing for a restart to stop.
            self._callbacks.on_details(ExecutorDetails(LocalExecutor.name, label="local",
                                                       data={"pid": None, "pgid": None,
                                                             "cgroup": None}))
        return outcome

    def stop(self, reason: str, grace: float | None = None) -> None:
        self._runner.terminate(reason, grace)


# Test hook, read by tests/test_worker_cli.py only: the engine stops itself (SIGSTOP) between
# starting a command and journaling it, so that a test can kill it exactly there.
TEST_HOOK_FREEZE_BEFORE_JOURNAL = "DSS_CONSOLE_TEST_HOOK_FREEZE_BEFORE_JOURNAL"


def _test_hook_freeze_before_journal() -> None:
    if os.environ.get(TEST_HOOK_FREEZE_BEFORE_JOURNAL) == "1" and hasattr(signal, "SIGSTOP"):
        # To this thread: a SIGSTOP to the process is taken by its main thread, and this
        # one would run on (journal, release) until the whole process stops.
        signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)


def _int(value: DetailValue) -> int | None:
    return value if isinstance(value, int) else None


class LocalExecutor(Executor):
    name = "local"
    title = "Local process (on the engine's computer)"
    # isolation, network, memory, cpus, processes, read_only, read_write: a sandbox and
    # limits for the command's whole tree (docs/isolation-plan.md).
    policy_keys = POLICY_KEYS
    policy_fields = (
        OptionField("isolation", "Is&olation", "choice",
                    "sandbox: the command sees the system read-only, its work dir, its inputs "
                    "and an empty HOME; not the console's files, other jobs or the network "
                    "(bubblewrap). none: it runs as the worker's user, with everything that "
                    "user can reach.", choices=("none", "sandbox")),
        OptionField("network", "&Network in the sandbox", "switch",
                    "Whether a sandboxed command may use the network (off: none at all)"),
        OptionField("memory", "Memor&y limit", "value",
                    "The most memory the command's whole process tree may use: bytes or "
                    "512M, 8G, 1.5G (G = GiB); past it the job ends, said in words",
                    placeholder="8G"),
        OptionField("cpus", "CP&Us", "value",
                    "CPU share of the command's tree (0.5 allowed): over it, it runs slower",
                    placeholder="2"),
        OptionField("processes", "P&rocesses", "value",
                    "The most processes and threads of the command's tree", placeholder="256"),
        OptionField("read_only", "Rea&d-only paths", "words",
                    "Extra paths the sandbox shows read-only (the tools the command needs)",
                    placeholder="/opt/ashs"),
        OptionField("read_write", "Writable pat&hs", "words",
                    "Extra paths the sandbox shows writable", placeholder="/scratch/lab"),
    )

    @classmethod
    def check_policy_value(cls, key: str, value: object) -> None:
        check_policy_value(key, value)

    def __init__(self) -> None:
        # Whether a sandbox can run here and how limits are enforced: found once.
        self.host = Host()

    def preflight(self, spec: CommandSpec, workroot: Path) -> str | None:
        return preflight(spec)

    def options_problem(self, options: Mapping[str, OptionValue]) -> str | None:
        try:
            policy = policy_of(options)
        except SandboxUnavailable as exc:
            return str(exc)
        return sandbox_problem(policy, self.host)

    def describe_options(self, options: Mapping[str, OptionValue]) -> str:
        try:
            policy = policy_of(options)
        except SandboxUnavailable as exc:
            return str(exc)
        words = policy.describe()
        if policy.has_limits and self.host.limits_support().kind == "prlimit":
            # Without a cgroup the limits bind each process, not the tree (isolation/limits.py).
            words += f" ({WEAK_LIMITS})"
        return words

    def start(self, request: RunRequest, callbacks: RunCallbacks) -> RunHandle:
        policy = policy_of(request.options)
        containment = None
        if Containment.needed(policy):
            # A sandbox that cannot run here raises SandboxUnavailable: the service pauses.
            containment = Containment(
                policy, self.host, f"{request.job.instance}-{request.job.job_id}",
                timeout=request.spec.timeout, private_dirs=request.private_dirs)
        runner = CommandRunner(request.spec, request.paths, callbacks.on_report,
                               grace_period=request.grace_period, log_name=request.log_name,
                               containment=containment)
        try:
            pid = runner.start(hold=True)  # it waits at its gate until journaled
        except BaseException:
            if containment is not None:
                containment.close()
            raise
        # Journaled so that a restart after a crash stops what is left of its group. Only
        # then may the command run: if the engine dies before, the gate closes with it and
        # nothing of the command ran (process.py).
        data: dict[str, DetailValue] = {"pid": pid, "pgid": runner.pgid,
                                        "proc_start": process_identity(pid)}
        if containment is not None and containment.limits is not None:
            data["cgroup"] = containment.limits.name  # what a restart removes after a crash
        _test_hook_freeze_before_journal()
        try:
            callbacks.on_details(ExecutorDetails(self.name, label="local", data=data))
        except BaseException:
            # Not journaled: a restart could not find it, so it must not run at all.
            runner.terminate("its start could not be recorded")
            runner.release()  # closes the gate without a go: it ends unrun
            runner.wait()
            raise
        runner.release()
        return _LocalRun(runner, callbacks)

    def recover(self, details: ExecutorDetails, job: JobRef, grace: float) -> Recovery:
        data = details.data
        proc_start = data.get("proc_start")
        killed = kill_orphaned_group(_int(data.get("pgid")), _int(data.get("pid")),
                                     proc_start if isinstance(proc_start, str) else None,
                                     grace=grace)
        cgroup = data.get("cgroup")
        leftover = Limits.leftover(cgroup) if isinstance(cgroup, str) and cgroup else None
        if leftover is not None:
            # What outlived the sandbox's group (it should be nothing), and the cgroup itself.
            with contextlib.suppress(OSError):
                leftover.close()
        return Recovery(notes=(LEFTOVER_STOPPED,) if killed else ())
