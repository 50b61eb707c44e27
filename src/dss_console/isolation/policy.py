"""What a command may touch and use: the settings' words turned into a :class:`Policy`.

The keys are the same in a ``[services."NAME"]`` table, a ``[v6.algorithms."IMAGE"]`` table
and the ``[defaults]`` table every entry inherits from::

    isolation = "sandbox"        # "none" | "sandbox"
    network = false              # sandbox: no network (a v6 algorithm with subtasks still
                                 #   reaches the local proxy)
    memory = "8G"                # bytes, or 512M, 8G, 1.5G (binary units: G = GiB)
    cpus = 2                     # cores (a fraction is allowed: 0.5)
    processes = 256              # processes and threads of the whole tree
    read_only = ["/opt/ashs"]    # extra paths the sandbox shows read-only
    read_write = ["/scratch"]    # ... and read-write

Parsing is strict like the rest of the settings file: a bad value raises
:class:`PolicyError` naming the dotted key and saying what would be right.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, TypeVar

T = TypeVar("T")
Isolation = Literal["none", "sandbox"]
ISOLATION_MODES: tuple[Isolation, ...] = ("none", "sandbox")
POLICY_KEYS = ("isolation", "network", "memory", "cpus", "processes", "read_only", "read_write")
# Below this a Python interpreter cannot even start; a typo ("8" for "8G") should not pass.
MIN_MEMORY = 16 * 1024**2

_SIZE_RE = re.compile(r"(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[kmgt]?)(?:i?b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE_HINT = "use bytes or a size such as 512M, 8G, 1.5G"


class PolicyError(ValueError):
    """A setting that cannot become a policy; the text names the key and the fix."""


@dataclass(frozen=True)
class Policy:
    """How one service's or algorithm's commands run. None: no limit of that kind."""

    isolation: Isolation = "none"
    network: bool = False  # a sandbox has no network unless the settings allow it
    memory: int | None = None  # bytes
    cpus: float | None = None
    processes: int | None = None
    read_only: tuple[str, ...] = ()
    read_write: tuple[str, ...] = ()

    @property
    def sandboxed(self) -> bool:
        return self.isolation == "sandbox"

    @property
    def has_limits(self) -> bool:
        return self.memory is not None or self.cpus is not None or self.processes is not None

    def describe(self) -> str:
        """One line for the window: how this service's commands are contained."""
        if self.sandboxed:
            words = ["sandbox", "with network" if self.network else "no network"]
        else:
            words = ["no isolation"]
        words.extend(self.limit_words())
        return ", ".join(words)

    def limit_words(self) -> list[str]:
        """The limits as the Run / ticket detail shows them: ["memory 8 GiB", "2 CPUs"]."""
        words = []
        if self.memory is not None:
            words.append(f"memory {format_size(self.memory)}")
        if self.cpus is not None:
            words.append(f"{_number(self.cpus)} CPU{'' if self.cpus == 1 else 's'}")
        if self.processes is not None:
            words.append(f"{self.processes} processes")
        return words


def policy_from_table(table: Mapping[str, object], where: str,
                      base: Policy | None = None) -> Policy:
    """The policy of one settings table (``where`` is its dotted name, for errors), on top of
    ``base`` (the ``[defaults]`` table's policy, or the kind's own default). Keys that are
    not policy keys are left to the table's owner."""
    policy = base or Policy()

    def name(key: str) -> str:
        return f"{where}.{key}" if where else key

    if "isolation" in table:
        value = table["isolation"]
        if value == "none" or value == "sandbox":
            policy = replace(policy, isolation=value)
        else:
            raise PolicyError(f"{name('isolation')}: {value!r} is not an isolation mode "
                              f"(use \"none\" or \"sandbox\")")
    if "network" in table:
        value = table["network"]
        if not isinstance(value, bool):
            raise PolicyError(f"{name('network')}: {value!r} is not true or false")
        policy = replace(policy, network=value)
    if "memory" in table:
        policy = replace(policy, memory=_checked(name("memory"), parse_memory, table["memory"]))
    if "cpus" in table:
        policy = replace(policy, cpus=_checked(name("cpus"), parse_cpus, table["cpus"]))
    if "processes" in table:
        policy = replace(policy, processes=_checked(name("processes"), parse_processes,
                                                    table["processes"]))
    if "read_only" in table:
        policy = replace(policy, read_only=_checked(name("read_only"), parse_paths,
                                                    table["read_only"]))
    if "read_write" in table:
        policy = replace(policy, read_write=_checked(name("read_write"), parse_writable_paths,
                                                     table["read_write"]))
    return policy


def _checked(name: str, parse: Callable[[object], T], value: object) -> T:
    try:
        return parse(value)
    except ValueError as exc:
        raise PolicyError(f"{name}: {exc}") from None


def parse_size(value: object) -> int:
    """Bytes from an integer or ``"512M"``, ``"8G"``, ``"1.5G"``, ``"8GiB"`` (binary units)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{value!r} is not a size ({_SIZE_HINT})")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value!r} is not a size ({_SIZE_HINT})")
        return value
    match = _SIZE_RE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a size ({_SIZE_HINT})")
    return int(float(match["n"]) * _SIZE_UNITS[match["unit"].lower()])


def parse_memory(value: object) -> int:
    size = parse_size(value)
    if size < MIN_MEMORY:
        raise ValueError(f"{value!r} is less than {format_size(MIN_MEMORY)}, too little for "
                         f"any command ({_SIZE_HINT})")
    return size


def parse_cpus(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is not a number of CPUs (use e.g. 2 or 0.5)")
    if not math.isfinite(value) or value < 0.01:
        raise ValueError(f"{value!r} is not a number of CPUs (at least 0.01)")
    return float(value)


def parse_processes(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not a whole number of processes")
    # bwrap and the command's own interpreter already count; fewer could not start anything.
    if value < 8:
        raise ValueError(f"{value!r} processes are too few to start a command (at least 8)")
    return value


def parse_writable_paths(value: object) -> tuple[str, ...]:
    paths = parse_paths(value)
    if "/" in paths:
        raise ValueError("\"/\" read-write would give the command the whole file system")
    return paths


def parse_paths(value: object) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{value!r} is not a list of paths (use e.g. [\"/opt/ashs\"])")
    paths = []
    for raw in value:
        path = os.path.normpath(os.path.expanduser(raw))
        if not os.path.isabs(path):
            raise ValueError(f"{raw!r} is not an absolute path")
        paths.append(path)
    return tuple(paths)


def format_size(size: int) -> str:
    """Bytes as an operator reads them: "8 GiB", "512 MiB", "1.5 GiB", "900 bytes"."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            return f"{_number(round(size / factor, 1))} {unit}"
    return f"{size} bytes"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# -- SLURM ----------------------------------------------------------------------------------

_MEM_OPTIONS = ("--mem", "--mem-per-cpu", "--mem-per-gpu")
_CPU_OPTIONS = ("--cpus-per-task", "-c")


def sbatch_limit_options(policy: Policy, operator_options: Sequence[str]) -> list[str]:
    """sbatch options for the policy's limits that the operator's ``sbatch_options`` do not
    already set (theirs win). On the cluster, isolation is the cluster's: only limits map."""
    def given(names: tuple[str, ...]) -> bool:
        for option in operator_options:
            for name in names:
                if option == name or option.startswith(name + "=") or (
                        len(name) == 2 and option.startswith(name) and option != name[:1]):
                    return True
        return False

    added = []
    if policy.memory is not None and not given(_MEM_OPTIONS):
        # sbatch's unit is MiB; rounding up never gives the job less than the operator said.
        added.append(f"--mem={-(-policy.memory // 1024**2)}M")
    if policy.cpus is not None and not given(_CPU_OPTIONS):
        added.append(f"--cpus-per-task={math.ceil(policy.cpus)}")
    return added
