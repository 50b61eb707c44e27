"""SLURM executor benchmark: the real `dss-console worker --executor SERVICE=slurm` against a
local real DSS server and a real single-node SLURM (started here, as the tests do; needs
root and Debian's slurmctld slurmd slurm-client munge).

    .venv/bin/python benchmarks/slurm.py [--latency-tickets 10] [--batch-tickets 20]

(a) latency   one ticket at a time on an idle cluster: ticket marked ready -> the job's
              command running on the node (its first act writes a time stamp), worker
              --poll-interval 1 (target <= 3 s median).
(b) batch     N tickets ready at once, a no-op command, --concurrency 8: tickets per minute,
              ready -> running (median, max; the node has as many CPUs as this machine, so
              later jobs wait for a CPU, PENDING (Resources)), and the worker's calls of each
              SLURM tool per minute (target: at most one status call per poll for all jobs).

The tools are counted by wrappers put first on the worker's PATH that log their name and
exec the real tool.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from engine import EXE, TAGS, WorkerRun, _upload_demo_inputs

from slurm_cluster import SlurmCluster, missing_tools

TOOLS = ("sbatch", "squeue", "scancel", "scontrol", "sacct")
STAMP = ("import os, shutil, sys, time, glob\n"
         "open(os.path.join(sys.argv[3], os.environ['DSS_TICKET_ID']), 'w')"
         ".write(repr(time.time()))\n"
         "for f in glob.glob(os.path.join(os.environ['DSS_INPUT_DIR'], '*')):\n"
         "    shutil.copy(f, os.environ['DSS_WORKDIR'])\n"
         "shutil.copyfile(sys.argv[1], sys.argv[2])\n")


def counting_tools(folder: Path, log: Path) -> None:
    folder.mkdir()
    for tool in TOOLS:
        real = shutil.which(tool)
        if real is None:
            continue
        wrapper = folder / tool
        wrapper.write_text(f"#!/bin/sh\necho {tool} >> {shlex.quote(str(log))}\n"
                           f"exec {shlex.quote(real)} \"$@\"\n")
        wrapper.chmod(0o755)


def counts(log: Path) -> dict[str, int]:
    found: dict[str, int] = {}
    if log.exists():
        for line in log.read_text().split():
            found[line] = found.get(line, 0) + 1
    return found


def wait_stamp(stamp: Path, run: WorkerRun, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while not stamp.exists() or not stamp.read_text():
        if time.monotonic() > deadline:
            raise SystemExit(f"{stamp.name} never started:\n" + "\n".join(run.lines[-20:]))
        time.sleep(0.01)
    return float(stamp.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-tickets", type=int, default=10)
    parser.add_argument("--batch-tickets", type=int, default=20)
    args = parser.parse_args()
    if missing_tools() or os.geteuid() != 0:
        raise SystemExit("needs root and SLURM (apt-get install slurmctld slurmd slurm-client "
                         "munge)")

    from dss_console.sandbox import Sandbox

    with tempfile.TemporaryDirectory(prefix="dss-slurm-bench-") as tmp_text:
        tmp = Path(tmp_text)
        with SlurmCluster(tmp / "cluster") as cluster, \
                Sandbox(data_dir=tmp / "server", tickets=0) as box:
            calls_log = tmp / "calls.log"
            counting_tools(tmp / "bin", calls_log)
            env = dict(os.environ, XDG_DATA_HOME=str(tmp / "data"),
                       XDG_CONFIG_HOME=str(tmp / "config"), DSS_CONSOLE_KEYRING="off",
                       PATH=f"{tmp / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
                       **cluster.env)
            subprocess.run([str(EXE), "login", "--server", box.url, "--token",
                            box.fresh_token()], env=env, check=True, capture_output=True)
            stamps = tmp / "stamps"
            stamps.mkdir()
            script = tmp / "stamp.py"
            script.write_text(STAMP)
            command = (f"{shlex.join([sys.executable, str(script)])} {{workspace}} {{result}} "
                       f"{shlex.quote(str(stamps))}")

            def worker(service: str, instance: str, *extra: str) -> WorkerRun:
                return WorkerRun(env, ["--server", box.url, "--workdir", str(tmp / "work"),
                                       "--command", f"{service}={command}", "--executor",
                                       f"{service}=slurm", "--poll-interval", "1",
                                       "--instance", instance, *extra])

            def ready_ticket(service: str) -> tuple[int, float]:
                ticket = box.admin.create_ticket(service)
                _upload_demo_inputs(box, ticket, tmp)
                box.admin.mark_ready(ticket)
                return ticket, time.time()

            # (a) latency, one at a time
            svc = box.register_service(f"SlurmBench-{uuid.uuid4().hex[:8]}", "1.0.0", TAGS)
            run = worker(svc, "latency")
            latencies = []
            for _ in range(args.latency_tickets):
                ticket, ready_at = ready_ticket(svc)
                latencies.append(wait_stamp(stamps / str(ticket), run) - ready_at)
                while box.admin.ticket_status(ticket) != "success":
                    time.sleep(0.05)
            run.stop()

            # (b) a batch at once
            svc = box.register_service(f"SlurmBench-{uuid.uuid4().hex[:8]}", "1.0.0", TAGS)
            batch = [ready_ticket(svc) for _ in range(args.batch_tickets)]
            calls_log.unlink(missing_ok=True)
            started = time.time()
            run = worker(svc, "batch", "--concurrency", "8", "--exit-when-idle")
            run.proc.wait(timeout=1800)
            seconds = time.time() - started
            tool_calls = counts(calls_log)
            done = sum(box.admin.ticket_status(t) == "success" for t, _ in batch)
            waits = [float((stamps / str(t)).read_text()) - ready for t, ready in batch]
            cpus = cluster.cpus

    minutes = seconds / 60
    print(f"SLURM executor benchmark (real worker, real SLURM 1 node x {cpus} CPUs, real "
          f"itksnap-dss-server on 127.0.0.1, {os.cpu_count()} cores)")
    print(f"(a) ready -> running on the node, idle cluster, {len(latencies)} tickets: median "
          f"{statistics.median(latencies):.2f} s, max {max(latencies):.2f} s (target <= 3 s "
          "median)")
    print("    all: " + " ".join(f"{x:.2f}" for x in latencies))
    print(f"(b) {args.batch_tickets} tickets at once, --concurrency 8: {done} succeeded in "
          f"{seconds:.1f} s = {done / minutes:.0f} tickets/min; ready -> running median "
          f"{statistics.median(waits):.2f} s, max {max(waits):.2f} s")
    print("    SLURM tool calls per minute: " + ", ".join(
        f"{tool} {tool_calls.get(tool, 0) / minutes:.1f} ({tool_calls.get(tool, 0)} in all)"
        for tool in TOOLS) + "; status polls every 2 s would be 30/min")


if __name__ == "__main__":
    main()
