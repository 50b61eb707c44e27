"""Engine benchmark: the real `dss-console worker` against a local real DSS server.

    .venv/bin/python benchmarks/engine.py [--flood-lines 1000000] [--latency-tickets 10]
                                          [--throughput-tickets 40] [--soak-tickets 3000]
                                          [--cases flood,latency,throughput,soak]

(a) flood      a command printing N lines as fast as it can: the worker's peak RSS
               (target <= 150 MiB) and a count of the lines in the on-disk job log.
(b) latency    ticket marked ready -> command started, worker --poll-interval 1
               (target <= 1.5 s median over 10 tickets).
(b') latency-sandbox  the same with the command in the sandbox ([defaults] isolation =
               "sandbox", a cgroup per job): the added cost per start (target <= 0.2 s).
               Both use the same random pauses, so ticket i of one compares with ticket i
               of the other. Measured (issue 19, 2 busy cores, cgroup v1, 10 tickets):
               median 0.64 s plain, 0.62 s sandboxed; per ticket +0.01 to +0.21 s, median
               of the differences +0.03 s (benchmarks/isolation.py: +0.05-0.06 s a start).
(c) throughput a no-op command (two `cp`s: inputs next to {result}), --concurrency 4: tickets per
               minute sustained, claim to success.
(d) soak       a worker that runs for months: --soak-tickets no-op tickets at --concurrency 4,
               seeded as the server's limit of 50 open tickets allows; the worker's RSS sampled
               every second. Prints RSS after 100, 1,000 ... tickets and the slope (KiB per
               ticket, least squares past the first 1,000 tickets, or 20 % of a short run);
               target: RSS after 10,000 tickets within 10 MiB of RSS after 1,000. Off unless
               asked (--cases soak): 100-250 tickets/min on this 2-core machine.
               Measured (issue 17, busy machine, same benchmark): before, 1,500 tickets: RSS
               40.3 / 56.4 / 64.3 MiB after 100 / 1,000 / 1,500, 17.8 KiB a ticket; after,
               2,500 tickets: 38.2 / 42.0 / 43.1 / 43.2 MiB after 100 / 1,000 / 2,000 / 2,500
               (+1.2 MiB past 1,000, +0.1 MiB past 2,000: the journal's SQLite page cache
               reaches its 2 MiB cap near 1,100 tickets, malloc arenas settle).
               10,000 tickets (idle machine, 22.3 min, 448 tickets/min, 0 failed): RSS 39.3 /
               43.3 / 44.5 / 46.0 / 47.8 MiB after 100 / 1,000 / 2,000 / 5,000 / 10,000:
               +4.5 MiB from 1,000 to 10,000 (target <= 10), 0.45 KiB a ticket past 1,000.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
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


def peak_rss_mib(pid: int, field: str = "VmHWM") -> float | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
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
    parser.add_argument("--soak-tickets", type=int, default=3000)
    parser.add_argument("--cases", default="flood,latency,throughput",
                        help="comma-separated: flood, latency, latency-sandbox, throughput, "
                             "soak")
    args = parser.parse_args()
    cases = set(args.cases.split(","))
    report: list[str] = []

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

            if "flood" in cases:
                report.append(_flood(box, env, common, service, tmp, args.flood_lines))
            if "latency" in cases:
                report.extend(_latency(box, env, common, service, tmp, args.latency_tickets))
            if "latency-sandbox" in cases:
                report.extend(_latency(box, env, common, service, tmp, args.latency_tickets,
                                       sandbox=True))
            if "throughput" in cases:
                report.append(_throughput(box, env, common, service, args.throughput_tickets))
            if "soak" in cases:
                report.extend(_soak(box, env, common, service, args.soak_tickets))

    print(f"engine benchmark (real worker, real itksnap-dss-server 0.2.0 on 127.0.0.1, "
          f"{os.cpu_count()} cores)")
    for line in report:
        print(line)


def _flood(box: Sandbox, env: dict[str, str], common: list[str], service: Callable[[], str],
           tmp: Path, lines: int) -> str:
    svc = service()
    flood = tmp / "flood.py"
    flood.write_text(
        "import shutil, sys\n"
        "out = sys.stdout.buffer\n"
        f"for i in range({lines}):\n"
        "    out.write(b'flood line %d with some padding text to look like a log\\n' % i)\n"
        "out.flush()\n"
        + COPY_RESULT)
    ticket = box.add_ticket(svc)
    started = time.perf_counter()
    run = WorkerRun(env, [*common, "--command",
                          f"{svc}={shlex.join([sys.executable, str(flood)])} "
                          "{workspace} {result}", "--exit-when-idle", "--instance", "flood"])
    run.proc.wait(timeout=600)
    seconds = time.perf_counter() - started
    log = next((tmp / "work").glob(f"*/ticket_{ticket:08d}")) / ".dss" / "output.log"
    with open(log, "rb") as handle:
        logged = sum(1 for line in handle if line.startswith(b"flood line "))
    return (f"(a) flood: {lines} lines, claim to success in {seconds:.1f} s; worker peak RSS "
            f"{run.peak:.1f} MiB (target <= 150); lines in the on-disk log: {logged} of "
            f"{lines}; ticket {box.admin.ticket_status(ticket)}")


def _latency(box: Sandbox, env: dict[str, str], common: list[str],
             service: Callable[[], str], tmp: Path, count: int,
             sandbox: bool = False) -> list[str]:
    svc = service()
    name = "latency-sandbox" if sandbox else "latency"
    stamp_dir = tmp / f"stamps-{name}"
    stamp_dir.mkdir()
    stamp = tmp / f"stamp-{name}.py"
    config: list[str] = []
    if sandbox:
        # Every command contained: the script shown read-only, the stamps writable.
        settings = tmp / "sandbox-settings.toml"
        settings.write_text(f'[defaults]\nisolation = "sandbox"\nnetwork = false\n'
                            f'processes = 512\nread_only = [{str(stamp)!r}]\n'
                            f'read_write = [{str(stamp_dir)!r}]\n'.replace("'", '"'))
        config = ["--config", str(settings)]
    stamp.write_text(
        "import os, shutil, sys, time\n"
        f"open(os.path.join({str(stamp_dir)!r}, os.environ['DSS_TICKET_ID']), 'w')"
        ".write(repr(time.time()) + ' ' + os.environ['HOME'])\n"
        + COPY_RESULT)
    run = WorkerRun(env, [*common, "--command",
                          f"{svc}={shlex.join([sys.executable, str(stamp)])} "
                          "{workspace} {result}", "--poll-interval", "1",
                          "--instance", name, *config])
    latencies = []
    rng = random.Random(1)
    for _ in range(count):
        ticket = box.admin.create_ticket(svc)
        _upload_demo_inputs(box, ticket, tmp)
        box.admin.mark_ready(ticket)
        ready_at = time.time()
        marker = stamp_dir / str(ticket)
        deadline = time.monotonic() + 60
        # One small write: once the HOME after the time is there, all of it is.
        while not marker.exists() or not marker.read_text().rstrip().count(" "):
            if time.monotonic() > deadline:
                raise SystemExit(f"ticket {ticket} never started:\n"
                                 + "\n".join(run.lines[-20:]))
            time.sleep(0.01)
        started_at, home = marker.read_text().split(" ", 1)
        if sandbox and home != "/home/sandbox":
            raise SystemExit(f"ticket {ticket}'s command did not run in the sandbox")
        latencies.append(float(started_at) - ready_at)
        while box.admin.ticket_status(ticket) != "success":
            time.sleep(0.05)
        # A random pause, so tickets arrive at random points of the poll cycle.
        time.sleep(rng.uniform(0.2, 1.2))
    run.stop()
    label = "(b') latency in the sandbox" if sandbox else "(b) latency"
    return [f"{label} ready -> command started (--poll-interval 1, {len(latencies)} "
            f"tickets): median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s "
            "(target <= 1.5 s median)",
            "    all: " + " ".join(f"{x:.2f}" for x in latencies)]


def _throughput(box: Sandbox, env: dict[str, str], common: list[str],
                service: Callable[[], str], count: int) -> str:
    svc = service()
    tickets = [box.add_ticket(svc) for _ in range(count)]
    started = time.perf_counter()
    run = WorkerRun(env, [*common, "--command", f"{svc}={NOOP_COMMAND}", "--concurrency", "4",
                          "--poll-interval", "0.5", "--exit-when-idle", "--instance",
                          "throughput"])
    run.proc.wait(timeout=900)
    seconds = time.perf_counter() - started
    done = sum(box.admin.ticket_status(t) == "success" for t in tickets)
    return (f"(c) throughput, no-op command, --concurrency 4: {done} tickets in {seconds:.1f} s "
            f"= {done / seconds * 60:.0f} tickets/min (worker start to exit, claim to success)")


# The server refuses a user more open (not yet finished) tickets than this.
OPEN_TICKET_LIMIT = 50


def _soak(box: Sandbox, env: dict[str, str], common: list[str], service: Callable[[], str],
          count: int) -> list[str]:
    svc = service()
    run = WorkerRun(env, [*common, "--command", f"{svc}={NOOP_COMMAND}", "--concurrency", "4",
                          "--poll-interval", "0.5", "--instance", "soak"])
    samples: list[tuple[int, float]] = []  # (tickets done, RSS MiB), one a second
    failed = 0
    seeded = 0
    started = time.perf_counter()
    next_sample = started
    shown = 0
    while True:
        done, failed, waiting = _soak_counts(box.sqlite_path, svc)
        finished = done + failed >= count
        if time.perf_counter() >= next_sample or finished:
            rss = peak_rss_mib(run.proc.pid, "VmRSS")
            if rss is None or run.proc.poll() is not None:
                raise SystemExit("the worker exited:\n" + "\n".join(run.lines[-20:]))
            samples.append((done, rss))
            next_sample += 1.0
            if done >= shown + 500 or finished:
                shown = done
                print(f"    soak: {done} tickets, worker RSS {rss:.1f} MiB", flush=True)
        if finished:
            break
        if waiting < OPEN_TICKET_LIMIT and seeded < count:
            box.add_ticket(svc)
            seeded += 1
        else:
            time.sleep(0.1)
    seconds = time.perf_counter() - started
    run.stop()

    def rss_at(tickets: int) -> float:
        return next((rss for done, rss in samples if done >= tickets), samples[-1][1])

    marks = sorted({m for m in (100, 1000, 2000, 3000, 5000, 10000, count) if m <= count})
    lines = [f"(d) soak, no-op command, --concurrency 4: {count} tickets ({failed} failed) in "
             f"{seconds / 60:.1f} min = {count / seconds * 60:.0f} tickets/min; worker RSS "
             "sampled every second",
             "    RSS after " + ", ".join(f"{m}: {rss_at(m):.1f}" for m in marks) + " MiB"]
    fit_from = 1000 if count >= 2000 else count // 5
    tail = [(d, r) for d, r in samples if d >= fit_from]
    if len(tail) >= 2 and tail[-1][0] > tail[0][0]:
        mean_d = statistics.fmean(d for d, _ in tail)
        mean_r = statistics.fmean(r for _, r in tail)
        slope = (sum((d - mean_d) * (r - mean_r) for d, r in tail)
                 / sum((d - mean_d) ** 2 for d, _ in tail))
        lines.append(f"    slope past {fit_from} tickets: {slope * 1024:.2f} KiB per ticket "
                     f"(= {slope * 9000:.1f} MiB over 9,000 tickets; target <= 10); RSS "
                     f"after {count} minus after {fit_from}: "
                     f"{rss_at(count) - rss_at(fit_from):+.1f} MiB")
    return lines


def _soak_counts(sqlite_path: Path, service_hash: str) -> tuple[int, int, int]:
    conn = sqlite3.connect(sqlite_path, timeout=30.0)
    try:
        rows = dict(conn.execute("select status, count(*) from tickets where "
                                 "service_githash = ? group by status", (service_hash,)))
    finally:
        conn.close()
    done, failed = rows.pop("success", 0), rows.pop("failed", 0)
    return done, failed, sum(rows.values())


def _upload_demo_inputs(box: Sandbox, ticket: int, tmp: Path) -> None:
    from dss_console.sandbox.demo import make_demo_ticket_files

    staging = tmp / f"stage-{ticket}"
    staging.mkdir()
    for path in make_demo_ticket_files(staging, ticket):
        box.admin.upload_input(ticket, path)


if __name__ == "__main__":
    main()
