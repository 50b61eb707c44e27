"""What a sandbox costs per command start: `python3 -c pass`, plain vs in bwrap + a cgroup.

    .venv/bin/python benchmarks/isolation.py [--runs 20]

Each run times start → exit of the whole command line from this process (fork/exec, bwrap's
namespaces and mounts, joining the job's cgroup, Python's own start-up), and for the sandbox
also creating and removing the job's cgroup (Limits(...) and close()), as an executor would
per job. Prints the medians side by side (plain, bwrap alone, bwrap + cgroup) and what the
sandbox adds. Target: <= 0.2 s added.
Needs bwrap; without a usable cgroup the limits fall back to prlimit (printed).

Measured (issue 19; 2 cores, load average 5-6 from other work; bwrap 0.8.0, cgroup v1, root):
plain 0.034 / 0.039 s, bwrap alone 0.063 / 0.062 s, bwrap + cgroup (create, join, remove of
memory, pids and cpu groups) 0.088 / 0.102 s: +0.053 / +0.063 s a start (target <= 0.2).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dss_console.isolation import (
    Limits,
    Policy,
    parse_size,
    probe,
    probe_limits,
    runtime_binds,
    wrap,
)

SUPPORT = probe_limits()  # once per engine, as the executor would
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def _run(argv: list[str], env: dict[str, str]) -> None:
    subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, check=True,
                   start_new_session=True)


def plain(workdir: Path) -> float:
    started = time.perf_counter()
    _run([PYTHON, "-c", "pass"], dict(os.environ))
    return time.perf_counter() - started


def sandboxed(workdir: Path, policy: Policy, *, cgroup: bool = True) -> float:
    started = time.perf_counter()
    argv, env = wrap([PYTHON, "-c", "pass"], os.environ, workdir, [], policy, runtime_binds())
    if not cgroup:
        _run(argv, env)
        return time.perf_counter() - started
    limits = Limits(policy, "bench", support=SUPPORT)
    try:
        _run([*limits.prefix(), *argv], env)
    finally:
        limits.close()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    why = probe()
    if why is not None:
        print(why, file=sys.stderr)
        return 1
    support = SUPPORT
    policy = Policy("sandbox", False, memory=parse_size("8G"), cpus=2, processes=256)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "job"
        workdir.mkdir()
        plain(workdir), sandboxed(workdir, policy)  # warm the page cache, not counted
        without: list[float] = []
        bwrap_only: list[float] = []
        with_: list[float] = []
        for _ in range(args.runs):  # interleaved: machine load hits all alike
            without.append(plain(workdir))
            bwrap_only.append(sandboxed(workdir, policy, cgroup=False))
            with_.append(sandboxed(workdir, policy))
    a, c, b = (statistics.median(x) for x in (without, bwrap_only, with_))
    print(f"{args.runs} runs of `{PYTHON} -c pass`, median seconds (limits: {support.kind})")
    print(f"{'plain':>10} {'bwrap':>10} {'bwrap+cg':>10} {'added':>10}")
    print(f"{a:10.3f} {c:10.3f} {b:10.3f} {b - a:10.3f}   target: added <= 0.200")
    return 0 if b - a <= 0.2 else 2


if __name__ == "__main__":
    raise SystemExit(main())
