"""Engine benchmark: the real `dss-console worker` against a local real DSS server.

    .venv/bin/python benchmarks/engine.py [--flood-lines 1000000] [--latency-tickets 10]
                                          [--throughput-tickets 40]

(a) flood      a command printing N lines as fast as it can: the worker's peak RSS
               (target <= 150 MiB) and a count of the lines in the on-disk job log.
(b) latency    ticket marked ready -> command started, worker --poll-interval 1
               (target <= 1.5 s median over 10 tickets).
(c) throughput a no-op command (two `cp`s: inputs next to {result}), --concurrency 4: tickets per
               minute sustained, claim to success.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dss_console.sandbox import Sandbox

EXE = Path(sys.executable).with_name("dss-console")
# The cheapest valid result: the input workspace and its layer copied next to {result}, so
# the relocated layer path resolves (ITK-SNAP's rule) when the engine exports it.
NOOP_COMMAND = ("sh -c 'cp \"$DSS_INPUT_DIR\"/* \"$DSS_WORKDIR\"/ && "
                "cp \"$DSS_INPUT_WORKSPACE\" \"$DSS_RESULT_WORKSPACE\"'")
COPY_RESULT = ("import glob, os\n"
               "for f in glob.glob(os.path.join(os.environ['DSS_INPUT_DIR'], '*')):\n"
               "    shutil.copy(f, os.environ['DSS_WORKDIR'])\n"
               "shutil.copyfile(sys.argv[1], sys.argv[2])\n")
TAGS = [{"name": "T1-MRI", "type": "MainImage", "hint": "T1 image", "required": True}]


def peak_rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class WorkerRun:
    def __init__(self, env: dict[str, str], args: list[str]):
        self.proc = subprocess.Popen([str(EXE), "worker", *args], env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.lines: list[str] = []
        self.peak = 0.0
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._sample, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def _sample(self) -> None:
        while self.proc.poll() is None:
            value = peak_rss_mib(self.proc.pid)
            if value:
                self.peak = max(self.peak, value)
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flood-lines", type=int, default=1_000_000)
    parser.add_argument("--latency-tickets", type=int, default=10)
    parser.add_argument("--throughput-tickets", type=int, default=40)
    args = parser.parse_args()

    from dss_console.sandbox import Sandbox

    with tempfile.TemporaryDirectory(prefix="dss-engine-bench-") as tmp_text:
        tmp = Path(tmp_text)
        env = dict(os.environ, XDG_DATA_HOME=str(tmp / "data"),
                   XDG_CONFIG_HOME=str(tmp / "config"), DSS_CONSOLE_KEYRING="off")
        with Sandbox(data_dir=tmp / "server", tickets=0) as box:
            subprocess.run([str(EXE), "login", "--server", box.url, "--token",
                            box.fresh_token()], env=env, check=True, capture_output=True)
            common = ["--server", box.url, "--workdir", str(tmp / "work")]

            def service() -> str:
                return box.register_service(f"Bench-{uuid.uuid4().hex[:8]}", "1.0.0", TAGS)

            # (a) flood
            svc = service()
            flood = tmp / "flood.py"
            flood.write_text(
                "import shutil, sys\n"
                "out = sys.stdout.buffer\n"
                f"for i in range({args.flood_lines}):\n"
                "    out.write(b'flood line %d with some padding text to look like a log\\n' % i)\n"
                "out.flush()\n"
                + COPY_RESULT)
            ticket = box.add_ticket(svc)
            started = time.perf_counter()
            run = WorkerRun(env, [*common, "--command",
                                  f"{svc}={shlex.join([sys.executable, str(flood)])} "
                                  "{workspace} {result}", "--exit-when-idle",
                                  "--instance", "flood"])
            run.proc.wait(timeout=600)
            flood_seconds = time.perf_counter() - started
            flood_peak = run.peak
            log = next((tmp / "work").glob(f"*/ticket_{ticket:08d}")) / ".dss" / "output.log"
            with open(log, "rb") as handle:
                logged = sum(1 for line in handle if line.startswith(b"flood line "))
            flood_status = box.admin.ticket_status(ticket)

            # (b) latency
            svc = service()
            stamp_dir = tmp / "stamps"
            stamp_dir.mkdir()
            stamp = tmp / "stamp.py"
            stamp.write_text(
                "import os, shutil, sys, time\n"
                f"open(os.path.join({str(stamp_dir)!r}, os.environ['DSS_TICKET_ID']), 'w')"
                ".write(repr(time.time()))\n"
                + COPY_RESULT)
            run = WorkerRun(env, [*common, "--command",
                                  f"{svc}={shlex.join([sys.executable, str(stamp)])} "
                                  "{workspace} {result}", "--poll-interval", "1",
                                  "--instance", "latency"])
            latencies = []
            rng = random.Random(1)
            for _ in range(args.latency_tickets):
                ticket = box.admin.create_ticket(svc)
                _upload_demo_inputs(box, ticket, tmp)
                box.admin.mark_ready(ticket)
                ready_at = time.time()
                marker = stamp_dir / str(ticket)
                deadline = time.monotonic() + 60
                while not marker.exists() or not marker.read_text():
                    if time.monotonic() > deadline:
                        raise SystemExit(f"ticket {ticket} never started:\n"
                                         + "\n".join(run.lines[-20:]))
                    time.sleep(0.01)
                latencies.append(float(marker.read_text()) - ready_at)
                while box.admin.ticket_status(ticket) != "success":
                    time.sleep(0.05)
                # A random pause, so tickets arrive at random points of the poll cycle.
                time.sleep(rng.uniform(0.2, 1.2))
            run.stop()

            # (c) throughput
            svc = service()
            tickets = [box.add_ticket(svc) for _ in range(args.throughput_tickets)]
            started = time.perf_counter()
            run = WorkerRun(env, [*common, "--command", f"{svc}={NOOP_COMMAND}",
                                  "--concurrency", "4", "--poll-interval", "0.5",
                                  "--exit-when-idle", "--instance", "throughput"])
            run.proc.wait(timeout=900)
            throughput_seconds = time.perf_counter() - started
            done = sum(box.admin.ticket_status(t) == "success" for t in tickets)

    print(f"engine benchmark (real worker, real itksnap-dss-server 0.2.0 on 127.0.0.1, "
          f"{os.cpu_count()} cores)")
    print(f"(a) flood: {args.flood_lines} lines, claim to success in {flood_seconds:.1f} s; "
          f"worker peak RSS {flood_peak:.1f} MiB (target <= 150); lines in the on-disk log: "
          f"{logged} of {args.flood_lines}; ticket {flood_status}")
    print(f"(b) latency ready -> command started (--poll-interval 1, {len(latencies)} tickets): "
          f"median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s "
          "(target <= 1.5 s median)")
    print("    all: " + " ".join(f"{x:.2f}" for x in latencies))
    print(f"(c) throughput, no-op command, --concurrency 4: {done} tickets in "
          f"{throughput_seconds:.1f} s = {done / throughput_seconds * 60:.0f} tickets/min "
          "(worker start to exit, claim to success)")


def _upload_demo_inputs(box: Sandbox, ticket: int, tmp: Path) -> None:
    from dss_console.sandbox.demo import make_demo_ticket_files

    staging = tmp / f"stage-{ticket}"
    staging.mkdir()
    for path in make_demo_ticket_files(staging, ticket):
        box.admin.upload_input(ticket, path)


if __name__ == "__main__":
    main()
