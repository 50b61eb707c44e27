"""Containing a local job's command: its service's policy (docs/isolation-plan.md) turned
into a bubblewrap sandbox and limits for its whole process tree.

One :class:`Containment` per run. :class:`Host` is the engine-wide part: whether a sandbox
can run here and how limits can be enforced, each found once (a real, tiny sandbox; a
test cgroup) and kept for every later job.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from dss_console.core.command import CommandStartError
from dss_console.core.executor import OptionValue, StartError
from dss_console.isolation import (
    Bind,
    Limits,
    Policy,
    PolicyError,
    Support,
    policy_from_table,
    probe,
    probe_limits,
    runtime_binds,
    wrap,
)
from dss_console.isolation.relay import SocketForwarder, relay_argv

__all__ = ["Containment", "Host", "SandboxUnavailable", "check_policy_value", "policy_of",
           "sandbox_problem"]


def check_policy_value(key: str, value: object) -> None:
    """ValueError in words when ``value`` cannot be the isolation or limit key ``key``."""
    try:
        policy_from_table({key: value}, "")
    except PolicyError as exc:
        message, prefix = str(exc), f"{key}: "
        raise ValueError(message[len(prefix):] if message.startswith(prefix)
                         else message) from None


class SandboxUnavailable(StartError):
    """The service says "sandbox" and no sandbox can run here: every job would be refused
    the same way, so the engine keeps the job and pauses the service with the reason
    (never runs it uncontained)."""

    configuration = True


def policy_of(options: Mapping[str, OptionValue], where: str = "") -> Policy:
    """The policy of a request's options (the settings reader already checked them)."""
    try:
        return policy_from_table(options, where)
    except PolicyError as exc:
        raise SandboxUnavailable(f"the service's isolation settings are unusable: {exc}") \
            from None


def sandbox_problem(policy: Policy, host: Host) -> str | None:
    """Why a command under ``policy`` cannot run here (it asks for a sandbox this machine
    cannot start), in words naming the fix; None when it can."""
    if not policy.sandboxed:
        return None
    problem = host.sandbox_problem()
    return None if problem is None else f"its isolation is \"sandbox\" and {problem}"


class Host:
    """What this machine allows, found once per engine (per executor) and cached."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sandbox_checked = False
        self._sandbox_problem: str | None = None
        self._support: Support | None = None

    def sandbox_problem(self) -> str | None:
        """Why no sandbox can run here, in words naming the fix; None when one can."""
        with self._lock:
            if not self._sandbox_checked:
                self._sandbox_problem = probe()
                self._sandbox_checked = True
            return self._sandbox_problem

    def limits_support(self) -> Support:
        with self._lock:
            if self._support is None:
                self._support = probe_limits()
            return self._support


class Containment:
    """One run's sandbox and limits: ``command()`` before the start, ``signal_command()``
    for a stop, ``end_reason()`` after the end, then ``close()``."""

    def __init__(self, policy: Policy, host: Host, name: str, *, timeout: float | None,
                 private_dirs: Sequence[Path]) -> None:
        self.policy = policy
        self._private_dirs = tuple(private_dirs)
        problem = sandbox_problem(policy, host)
        if problem is not None:
            raise SandboxUnavailable(problem)
        self.limits: Limits | None = None
        self._forwarder: SocketForwarder | None = None
        # A sandboxed job gets a cgroup even without limits: it is how a stop's TERM reaches
        # the command past bwrap (which does not forward signals) and how stragglers end.
        if policy.has_limits or policy.sandboxed:
            support = host.limits_support()
            if support.kind in ("cgroup2", "cgroup1") or policy.has_limits:
                try:
                    self.limits = Limits(policy, name, timeout=timeout, support=support)
                except OSError as exc:
                    raise CommandStartError(f"cannot set the job's limits: "
                                            f"{exc.strerror or exc}") from None

    @staticmethod
    def needed(policy: Policy) -> bool:
        """Whether a run under ``policy`` is contained at all (else it runs as before)."""
        return policy.sandboxed or policy.has_limits

    def command(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path,
                workdir: Path, inputs: Sequence[Path], *, loopback_port: int | None = None,
                runtime_paths: Sequence[str] = ()) -> tuple[list[str], dict[str, str]]:
        """The command line and environment that run ``argv`` contained. ``loopback_port``:
        reachable on the sandbox's own 127.0.0.1 even without network (relayed through a
        unix socket, isolation/relay.py); ``runtime_paths``: shown read-only."""
        words, environment = list(argv), dict(env)
        if self.policy.sandboxed:
            binds = [*runtime_binds(), *(Bind(path) for path in runtime_paths)]
            if loopback_port is not None and not self.policy.network:
                try:
                    self._forwarder = SocketForwarder(loopback_port)
                except OSError as exc:
                    raise CommandStartError(f"cannot relay port {loopback_port} into the "
                                            f"sandbox: {exc.strerror or exc}") from None
                binds.append(self._forwarder.bind)
                words = relay_argv(loopback_port, words)
            words, environment = wrap(words, environment, workdir, inputs, self.policy,
                                      binds, hidden=self._private_dirs, cwd=cwd)
        prefix = self.limits.prefix() if self.limits is not None else []
        return prefix + words, environment

    def signal_command(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` to the command's processes (past bwrap); how many it reached."""
        return self.limits.signal_command(sig) if self.limits is not None else 0

    def end_reason(self) -> str | None:
        """The limit the command hit, in words with no local detail; None when none."""
        return self.limits.end_reason() if self.limits is not None else None

    def close(self) -> None:
        """End what is left of the job's tree and remove its cgroup. Idempotent."""
        if self._forwarder is not None:
            self._forwarder.close()
            self._forwarder = None
        if self.limits is not None:
            self.limits.close()
