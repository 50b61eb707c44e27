"""Limits for a command's whole process tree, and which one it hit, in words.

A job gets its own control group ("cgroup") below the worker's own: cgroup v2 when this
process may manage its subtree (a delegated one: ``systemd-run --user --scope -p
Delegate=yes``, a systemd service with ``Delegate=yes``, a container's), else cgroup v1 when
its memory/pids/cpu hierarchies are writable (root). The command joins it before it execs
(:meth:`Limits.prefix`), so every descendant is counted, and after the end the cgroup's
own counters say what happened: an OOM kill (memory.events / memory.oom_control), a refused
fork (pids.events). With neither, ``prlimit`` sets per-process limits (RLIMIT_AS,
RLIMIT_NPROC) and :attr:`Limits.note` says how much weaker that is.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dss_console.isolation.policy import Policy, format_size

Kind = Literal["cgroup2", "cgroup1", "prlimit", "none"]
GROUP = "dss-console"  # the worker's jobs' cgroups gather under this one
SUPERVISOR = "dss-console-worker"  # cgroup v2: the worker itself moves here (no internal
#                                    processes in a cgroup that hands out controllers)
CPU_PERIOD_US = 100_000
# The command joins the cgroup(s) before it execs: its first fork is already counted.
_JOIN = ('while [ "$1" != -- ]; do echo $$ >"$1" || exit 126; shift; done; shift; '
         'exec "$@"')


@dataclass(frozen=True)
class Support:
    """How limits can be enforced here; ``note`` is for the operator when it is weak."""

    kind: Kind
    note: str


def probe_limits() -> Support:
    """The best way to enforce limits on this machine, tried for real (a test cgroup)."""
    v2 = _v2_domain(create=False)
    if isinstance(v2, Path):
        return Support("cgroup2", "")
    v1 = _v1_bases()
    if isinstance(v1, dict):
        return Support("cgroup1", "")
    why = f"{v2}; {v1}"
    return Support("prlimit", "no usable cgroup (" + why + "): limits are per process only — "
                   "memory counts each process's address space, the process limit counts "
                   "all of this user's processes (and does not bind root), no CPU limit")


class Limits:
    """One job's limits. ``prefix()`` goes before the command line (and before bwrap);
    ``end_reason()`` after it ended; ``close()`` ends stragglers and removes the cgroup."""

    def __init__(self, policy: Policy, name: str, *, timeout: float | None = None,
                 support: Support | None = None) -> None:
        self.policy = policy
        self.timeout = timeout
        self.support = support or probe_limits()
        # A job without limits still gets a cgroup where one is possible: it is how the
        # command's TERM reaches it past bwrap (signal_command) and how stragglers end.
        self.kind: Kind = self.support.kind
        self.note = self.support.note if policy.has_limits else ""
        self._dirs: dict[str, Path] = {}  # controller ("" for v2) -> this job's cgroup
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]
        self.name = f"{safe}-{os.getpid()}-{time.monotonic_ns()}"
        try:
            if self.kind == "cgroup2":
                self._make_v2()
            elif self.kind == "cgroup1":
                self._make_v1()
        except OSError:
            self.close()  # nothing half-made stays behind
            raise

    @classmethod
    def leftover(cls, name: str) -> Limits | None:
        """The cgroup(s) of a job a previous worker left (after a crash), found by its
        :attr:`name`, for :meth:`close`; None when nothing of it is left here."""
        if "/" in name or name in ("", ".", ".."):
            return None
        found: dict[str, Path] = {}
        domain = _v2_domain(create=False)
        if isinstance(domain, Path) and (domain / GROUP / name).is_dir():
            found[""] = domain / GROUP / name
        bases = _v1_bases()
        if isinstance(bases, dict):
            found.update({controller: base / GROUP / name for controller, base in bases.items()
                          if (base / GROUP / name).is_dir()})
        if not found:
            return None
        limits = cls.__new__(cls)
        limits.policy, limits.timeout = Policy(), None
        limits.support = Support("none", "")
        limits.kind, limits.note, limits.name = "none", "", name
        limits._dirs = found
        return limits

    # -- setting up --------------------------------------------------------------------

    def _make_v2(self) -> None:
        domain = _v2_domain(create=True)
        if not isinstance(domain, Path):
            raise OSError(f"cgroup v2 is not usable: {domain}")
        group = domain / GROUP
        group.mkdir(exist_ok=True)
        enabled = _read(group / "cgroup.subtree_control").split()
        wanted = [c for c in ("memory", "pids", "cpu") if c in
                  _read(group / "cgroup.controllers").split() and c not in enabled]
        if wanted:
            _write(group / "cgroup.subtree_control", " ".join("+" + c for c in wanted))
        job = group / self.name
        job.mkdir()
        self._dirs[""] = job
        policy = self.policy
        if policy.memory is not None:
            _write(job / "memory.max", str(policy.memory))
            if (job / "memory.swap.max").exists():
                _write(job / "memory.swap.max", "0")  # the limit is on memory, not swap
        if policy.processes is not None:
            _write(job / "pids.max", str(policy.processes))
        if policy.cpus is not None and (job / "cpu.max").exists():
            _write(job / "cpu.max", f"{math.ceil(policy.cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}")

    def _make_v1(self) -> None:
        bases = _v1_bases()
        if not isinstance(bases, dict):
            raise OSError(f"cgroup v1 is not usable: {bases}")
        policy = self.policy
        # pids always: it holds the job's processes for signal_command() and close().
        wanted = {"memory": policy.memory is not None, "pids": True,
                  "cpu": policy.cpus is not None}
        for controller, base in bases.items():
            if not wanted.get(controller):
                continue
            job = base / GROUP / self.name
            job.mkdir(parents=True)
            self._dirs[controller] = job
        if "memory" in self._dirs and policy.memory is not None:
            job = self._dirs["memory"]
            _write(job / "memory.limit_in_bytes", str(policy.memory))
            if (job / "memory.memsw.limit_in_bytes").exists():
                # memory + swap: the same number, so swap is no way around the limit.
                _write(job / "memory.memsw.limit_in_bytes", str(policy.memory))
        if "pids" in self._dirs and policy.processes is not None:
            _write(self._dirs["pids"] / "pids.max", str(policy.processes))
        if "cpu" in self._dirs and policy.cpus is not None:
            job = self._dirs["cpu"]
            _write(job / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(job / "cpu.cfs_quota_us", str(math.ceil(policy.cpus * CPU_PERIOD_US)))

    def prefix(self) -> list[str]:
        """Words to put before the command line: join the cgroup(s), or set rlimits."""
        if self._dirs:
            procs = [str(d / "cgroup.procs") for d in self._dirs.values()]
            return ["/bin/sh", "-c", _JOIN, "dss-limits", *procs, "--"]
        if self.kind == "prlimit":
            words = ["prlimit"]
            if self.policy.memory is not None:
                words.append(f"--as={self.policy.memory}")
            if self.policy.processes is not None:
                words.append(f"--nproc={self.policy.processes}")
            return [*words, "--"] if len(words) > 1 else []
        return []

    # -- after the end -----------------------------------------------------------------

    def end_reason(self, *, timed_out: bool = False) -> str | None:
        """Which limit the command hit, in words for the operator and the end user alike
        (no paths, no host detail); None when it hit none that can be told."""
        if timed_out and self.timeout is not None:
            return f"ran past its time limit: {_duration(self.timeout)}"
        if self.policy.memory is not None and self._oom_kills() > 0:
            return f"ran out of memory: limit {format_size(self.policy.memory)}"
        if self.policy.processes is not None and self._fork_refusals() > 0:
            return f"hit its process limit: {self.policy.processes} processes"
        return None

    def peak_memory(self) -> int | None:
        """The tree's peak memory in bytes (for the Run detail), before close(); None where
        the cgroup does not keep it (no memory limit under v1, kernels before 5.19)."""
        memory = self._dirs.get("memory") or self._dirs.get("")
        for name in ("memory.max_usage_in_bytes", "memory.peak"):
            if memory is not None and _read(memory / name).strip().isdigit():
                return int(_read(memory / name))
        return None

    def _oom_kills(self) -> int:
        if "" in self._dirs:
            return _field(self._dirs[""] / "memory.events", "oom_kill")
        if "memory" in self._dirs:
            return _field(self._dirs["memory"] / "memory.oom_control", "oom_kill")
        return 0

    def _fork_refusals(self) -> int:
        job = self._dirs.get("") or self._dirs.get("pids")
        return _field(job / "pids.events", "max") if job is not None else 0

    def signal_command(self, sig: int) -> int:
        """Send ``sig`` to every process of the job but bwrap itself; the count reached.

        bwrap does not forward signals: a SIGTERM to it ends it, and its
        ``--die-with-parent`` then SIGKILLs the command without the grace period a TERM
        promises. Through the cgroup the command gets the TERM itself."""
        reached = 0
        for job in list(self._dirs.values())[:1]:  # each controller holds the same tree
            for pid in _read(job / "cgroup.procs").split():
                try:
                    if os.path.basename(os.readlink(f"/proc/{pid}/exe")) == "bwrap":
                        continue
                    os.kill(int(pid), sig)
                    reached += 1
                except (ProcessLookupError, FileNotFoundError, PermissionError):
                    pass
        return reached

    # -- cleaning up -------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """SIGKILL whatever is left in the job's cgroup, then remove it. Idempotent."""
        deadline = time.monotonic() + timeout
        for job in list(self._dirs.values()):
            while job.exists():
                pids = _read(job / "cgroup.procs").split()
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
                try:
                    job.rmdir()
                except OSError:
                    # Killed processes leave the cgroup when they are reaped, not at once.
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        self._dirs.clear()

    def __enter__(self) -> Limits:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- finding cgroups ----------------------------------------------------------------------


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(fstype, mount root, mount point, options) of every cgroup mount we can see."""
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        point = fields[4].replace("\\040", " ")
        found.append((tail[0], fields[3], point, set(tail[2].split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """This process's cgroup per controller ("" for v2), from /proc/self/cgroup."""
    paths: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return paths
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                paths[controller] = parts[2]
    return paths


def _located(root: str, point: str, own: str) -> Path:
    if own == root or own.startswith(root.rstrip("/") + "/"):
        own = own[len(root.rstrip("/")):]
    return Path(point) / own.lstrip("/")


def _v2_domain(*, create: bool) -> Path | str:
    """The cgroup v2 directory this worker may hand out (its own, or its parent when it
    already moved itself to the SUPERVISOR leaf), or why there is none."""
    mount = next((m for m in _mounts() if m[0] == "cgroup2"), None)
    own = _own_paths().get("")
    if mount is None or own is None:
        return "no cgroup v2 hierarchy"
    here = _located(mount[1], mount[2], own)
    domain = here.parent if here.name == SUPERVISOR else here
    controllers = _read(domain / "cgroup.controllers").split()
    missing = [c for c in ("memory", "pids") if c not in controllers]
    if missing:
        return f"cgroup v2 has no {' or '.join(missing)} controller here"
    if not os.access(domain, os.W_OK) or not os.access(domain / "cgroup.subtree_control",
                                                        os.W_OK):
        return f"cgroup v2: {domain} is not delegated to this user"
    if not create or here.name == SUPERVISOR:
        return domain
    try:
        # The "no internal processes" rule: a cgroup that hands controllers to its children
        # holds no process itself, so this one moves to a leaf first (once).
        leaf = domain / SUPERVISOR
        leaf.mkdir(exist_ok=True)
        _write(leaf / "cgroup.procs", str(os.getpid()))
    except OSError as exc:
        return f"cgroup v2: cannot move this worker to a leaf cgroup ({exc.strerror})"
    return domain


def _v1_bases() -> dict[str, Path] | str:
    """Writable cgroup v1 memory/pids/cpu directories (this process's own), or why not."""
    own = _own_paths()
    bases: dict[str, Path] = {}
    for fstype, root, point, options in _mounts():
        if fstype != "cgroup":
            continue
        for controller in ("memory", "pids", "cpu"):
            if controller in options and controller in own:
                bases[controller] = _located(root, point, own[controller])
    missing = [c for c in ("memory", "pids") if c not in bases]
    if missing:
        return f"no cgroup v1 {' or '.join(missing)} hierarchy"
    for controller, base in bases.items():
        probe = base / GROUP
        try:
            probe.mkdir(exist_ok=True)
        except OSError as exc:
            return f"cgroup v1 {controller} is not writable ({exc.strerror})"
    return bases


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _field(path: Path, key: str) -> int:
    for line in _read(path).splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == key and words[1].isdigit():
            return int(words[1])
    return 0


def _duration(seconds: float) -> str:
    rest, parts = int(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, rest = divmod(rest, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts) or f"{seconds:g}s"
