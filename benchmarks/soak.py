"""Chaos soak: a real headless worker, a real DSS server, and stops of every kind.

    .venv/bin/python benchmarks/soak.py [--tickets 24] [--concurrency 3] [--chaos 100]
                                        [--seed 1]

24 tickets at concurrency 3 are processed by `dss-console worker` while, every few seconds
for --chaos seconds (randomised, seeded), the worker is SIGKILLed, SIGTERMed (then started
again), or the public DSS server is killed and started again on the same port and data dir
after an outage of a few seconds (while the chaos goes on: a worker may be stopped or started
while the server is away). A worker that exits by itself (it cannot reach the server at
start) is started again at once, as systemd's Restart= would. Then the worker is left to
finish. Printed: how many tickets ended success / failed / other;
whether a ticket ever ran twice at once (each command appends heartbeats with its pid to a
file of its own: two runs of one ticket whose alive spans overlap); how long each SIGTERMed
worker took to exit; and whether any worker output held a traceback.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

EXE = Path(sys.executable).with_name("dss-console")
TAGS = [{"name": "T1-MRI", "type": "MainImage", "hint": "T1 image", "required": True}]
# A few seconds of "work" with progress and a message, a heartbeat line with the pid every
# 0.2 s (the overlap check reads them), then the cheapest valid result.
COMMAND = """\
import glob, os, shutil, sys, time
beats = open(os.path.join(sys.argv[3], f"{os.environ['DSS_TICKET_ID']}-{os.getpid()}"), "a")
def beat(word):
    beats.write(f"{word} {time.time():.3f}\\n"); beats.flush()
beat("start")
steps = int(sys.argv[4])
for step in range(steps):
    print(f"@dss progress {step / steps:.2f}", flush=True)
    for _ in range(5):
        time.sleep(0.2)
        beat("beat")
print('@dss info "step done"', flush=True)
for f in glob.glob(os.path.join(os.environ["DSS_INPUT_DIR"], "*")):
    shutil.copy(f, os.environ["DSS_WORKDIR"])
shutil.copyfile(sys.argv[1], sys.argv[2])
beat("end")
"""


class Worker:
    def __init__(self, env: dict[str, str], args: list[str], log: Path):
        self.log = log
        self.handle = open(log, "ab")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen([str(EXE), "worker", *args], env=env,
                                     stdout=self.handle, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            self.proc.send_signal(signum)

    def wait(self, timeout: float) -> float | None:
        """Seconds until it exited; None if it had to be killed after `timeout`."""
        started = time.monotonic()
        try:
            self.proc.wait(timeout)
            took: float | None = time.monotonic() - started
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            took = None
        self.handle.close()
        return took


def overlaps(beats_dir: Path) -> list[str]:
    """Two runs of one ticket alive at the same time (their first-to-last beat spans)."""
    spans: dict[str, list[tuple[float, float, str]]] = {}
    for path in beats_dir.iterdir():
        ticket, pid = path.name.split("-")
        times = [float(line.split()[1]) for line in path.read_text().splitlines()
                 if len(line.split()) == 2]
        if times:
            spans.setdefault(ticket, []).append((min(times), max(times), pid))
    found = []
    for ticket, runs in spans.items():
        for (s1, e1, p1), (s2, e2, p2) in itertools.combinations(sorted(runs), 2):
            if s2 < e1:
                found.append(f"ticket {ticket}: pid {p1} {s1:.1f}-{e1:.1f} and pid {p2} "
                             f"{s2:.1f}-{e2:.1f}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=24)
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--chaos", type=float, default=100.0, help="seconds of stops")
    parser.add_argument("--steps", type=int, default=6, help="seconds each command works")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--finish", type=float, default=400.0,
                        help="seconds to wait for the queue to finish after the chaos")
    args = parser.parse_args()

    from dss_console.sandbox import Sandbox

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="dss-soak-") as tmp_text:
        tmp = Path(tmp_text)
        env = dict(os.environ, XDG_DATA_HOME=str(tmp / "data"),
                   XDG_CONFIG_HOME=str(tmp / "config"), DSS_CONSOLE_KEYRING="off")
        beats = tmp / "beats"
        beats.mkdir()
        script = tmp / "work.py"
        script.write_text(COMMAND)
        logs = tmp / "worker-logs"
        logs.mkdir()
        with Sandbox(data_dir=tmp / "server", tickets=0) as box:
            subprocess.run([str(EXE), "login", "--server", box.url, "--token",
                            box.fresh_token()], env=env, check=True, capture_output=True)
            service = box.register_service(f"Soak-{uuid.uuid4().hex[:8]}", "1.0.0", TAGS)
            tickets = [box.add_ticket(service) for _ in range(args.tickets)]
            template = (shlex.join([sys.executable, str(script)]) + " {workspace} {result} "
                        + shlex.join([str(beats), str(args.steps)]))
            worker_args = ["--server", box.url, "--command", f"{service}={template}",
                           "--workdir", str(tmp / "work"), "--concurrency",
                           str(args.concurrency), "--poll-interval", "0.5",
                           "--instance", "soak"]
            starts = 0

            def start_worker() -> Worker:
                nonlocal starts
                starts += 1
                return Worker(env, worker_args, logs / f"worker-{starts:03d}.log")

            events: Counter[str] = Counter()
            term_exits: list[tuple[float, float | None]] = []  # (seconds since start, took)
            server = box.public_server
            data_dir, port = box.data_dir, server.port
            worker = start_worker()
            worker_started = time.monotonic()
            chaos_end = time.monotonic() + args.chaos
            restarting: threading.Thread | None = None
            exits: Counter[int] = Counter()  # codes of workers that exited by themselves

            def restart_server(outage: float) -> None:
                time.sleep(outage)
                server.start(data_dir, port=port, timeout=60)

            while time.monotonic() < chaos_end:
                pause_until = time.monotonic() + rng.uniform(1.0, 6.0)
                while time.monotonic() < pause_until:
                    time.sleep(0.2)
                    if not worker.alive():
                        exits[worker.proc.returncode] += 1
                        worker.wait(0)
                        worker, worker_started = start_worker(), time.monotonic()
                action = rng.choice(["sigkill", "sigterm", "server"])
                if action == "server" and restarting is not None and restarting.is_alive():
                    action = rng.choice(["sigkill", "sigterm"])  # it is away already
                events[action] += 1
                if action == "sigkill":
                    worker.signal(signal.SIGKILL)
                    worker.wait(30)
                    worker, worker_started = start_worker(), time.monotonic()
                elif action == "sigterm":
                    since = time.monotonic() - worker_started
                    worker.signal(signal.SIGTERM)
                    term_exits.append((since, worker.wait(90)))
                    worker, worker_started = start_worker(), time.monotonic()
                else:
                    if server.pid:
                        os.kill(server.pid, signal.SIGKILL)
                    server.stop()
                    restarting = threading.Thread(target=restart_server,
                                                  args=(rng.uniform(0.5, 6.0),))
                    restarting.start()
            if restarting is not None:
                restarting.join()
            if not worker.alive():
                exits[worker.proc.returncode] += 1
                worker.wait(0)
                worker, worker_started = start_worker(), time.monotonic()
            finish_end = time.monotonic() + args.finish
            statuses: dict[int, str] = {}
            while time.monotonic() < finish_end:
                statuses = {t: box.admin.ticket_status(t) for t in tickets}
                if all(s in ("success", "failed") for s in statuses.values()):
                    break
                time.sleep(1.0)
            finished_after = time.monotonic() - (chaos_end)
            worker.signal(signal.SIGTERM)
            term_exits.append((time.monotonic() - worker_started, worker.wait(90)))
            outputs = {p.name: p.read_text(errors="replace") for p in sorted(logs.iterdir())}
            traced = [name for name, text in outputs.items() if "Traceback" in text]
            failed_logs = {t: [e["message"] for e in box.admin.ticket_detail(t)["log"]
                               if e["category"] == "error"]
                           for t, s in statuses.items() if s == "failed"}
            twice = overlaps(beats)
            runs = Counter(p.name.split("-")[0] for p in beats.iterdir())

    counts = Counter(statuses.values())
    print(f"soak (real worker, real itksnap-dss-server on 127.0.0.1, {os.cpu_count()} cores, "
          f"seed {args.seed}): {args.tickets} tickets, concurrency {args.concurrency}, "
          f"{args.chaos:.0f} s of chaos")
    print(f"  chaos: {events['sigkill']} SIGKILL, {events['sigterm']} SIGTERM, "
          f"{events['server']} server kill+restart; {starts} worker starts; workers that "
          "exited by themselves: "
          + (", ".join(f"{n} with code {c}" for c, n in sorted(exits.items())) or "none"))
    print("  tickets: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
          + f" (queue done {finished_after:.0f} s after the chaos)")
    for ticket, messages in sorted(failed_logs.items()):
        print(f"    failed {ticket}: {messages}")
    print(f"  command runs per ticket: max {max(runs.values(), default=0)}, "
          f"total {sum(runs.values())}")
    print(f"  ran twice at once: {len(twice)}" + "".join(f"\n    {o}" for o in twice))
    exits = [took for _, took in term_exits]
    slow = [(since, took) for since, took in term_exits if took is None or took > 5]
    print(f"  SIGTERM to exit: {len(exits)} stops, max "
          f"{max((t for t in exits if t is not None), default=0):.1f} s, "
          f"{sum(t is None for t in exits)} needed SIGKILL; over 5 s: "
          + (", ".join(f"{took if took is None else round(took, 1)} s ({since:.1f} s after "
                       "start)" for since, took in slow) or "none"))
    print(f"  tracebacks in worker output: {len(traced)}" +
          (f" ({', '.join(traced)})" if traced else ""))
    for name in traced:
        text = outputs[name]
        start = text.index("Traceback")
        print(text[start:start + 2000])


if __name__ == "__main__":
    main()
