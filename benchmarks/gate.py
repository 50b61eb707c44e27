"""The operator's gate costs a worker nothing while jobs wait (issue 20; docs/gate-plan.md §8).

    .venv/bin/python benchmarks/gate.py [--jobs 40] [--seconds 20] [--approve 20]

A real `dss-console worker` against a local real DSS server, a service with approve = "run":
idle (no ticket), then a quarter of --jobs and then --jobs tickets all waiting for approval
(the DSS server keeps at most 50 open tickets, so not the plan's 200), --seconds each: the
worker's threads (/proc/PID/status), CPU (utime + stime) and RSS. Targets: threads equal
+-1 whatever the number waiting (idle may have 3 fewer: the outbox's pool of at most 3
delivery threads starts with the first call sent), CPU <= idle + 0.1 s a minute, RSS <=
idle + 2 MiB. Then --approve of them are approved one after another over the worker's
channel (what `dss-console approvals approve` does): approve -> command started, median
(target <= 0.5 s).

Measured (2026-12-07, 2 cores shared with other work, 20 s windows): idle 9 threads, 0.27 s
CPU a minute, RSS 37.7 MiB; 10 jobs waiting 12 threads, 0.24 s/min, 38.6 MiB; 40 waiting 12
threads, 0.12 s/min, 39.1 MiB; approve -> command started median 0.08 s, max 0.44 s (20).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from engine import NOOP_COMMAND, TAGS, WorkerRun, peak_rss_mib

EXE = Path(sys.executable).with_name("dss-console")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def window(pid: int, seconds: float) -> tuple[int, int, float, float]:
    """Threads (min, max), CPU seconds used and RSS (MiB, at the end) over ``seconds``."""
    counts = []
    start = cpu_seconds(pid)
    end_at = time.monotonic() + seconds
    while time.monotonic() < end_at:
        counts.append(threads(pid))
        time.sleep(0.5)
    return min(counts), max(counts), cpu_seconds(pid) - start, peak_rss_mib(pid, "VmRSS") or 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--approve", type=int, default=20)
    args = parser.parse_args()

    from dss_console.engine.events import JobChanged
    from dss_console.engine.remote import RemoteEngine, find_engine
    from dss_console.engine.states import JobState
    from dss_console.sandbox import Sandbox

    with tempfile.TemporaryDirectory(prefix="dss-gate-bench-") as tmp_text:
        tmp = Path(tmp_text)
        env = dict(os.environ, XDG_DATA_HOME=str(tmp / "data"),
                   XDG_CONFIG_HOME=str(tmp / "config"), DSS_CONSOLE_KEYRING="off")
        with Sandbox(data_dir=tmp / "server", tickets=0) as box:
            subprocess.run([str(EXE), "login", "--server", box.url, "--token",
                            box.fresh_token()], env=env, check=True, capture_output=True)
            svc = box.register_service(f"Gate-{uuid.uuid4().hex[:8]}", "1.0.0", TAGS)
            config = tmp / "settings.toml"
            config.write_text(f"approval_queue = {args.jobs}\nconcurrency = 4\n\n"
                              f'[services."{svc}"]\ncommand = """{NOOP_COMMAND}"""\n'
                              'approve = "run"\n')
            run = WorkerRun(env, ["--server", box.url, "--workdir", str(tmp / "work"),
                                  "--config", str(config), "--poll-interval", "1",
                                  "--instance", "gate"])
            data = tmp / "data" / "dss-console"
            deadline = time.monotonic() + 60
            while (paths := find_engine(data, box.url, "gate")) is None:
                if time.monotonic() > deadline or run.proc.poll() is not None:
                    raise SystemExit("the worker's channel did not open:\n" +
                                     "\n".join(run.lines[-20:]))
                time.sleep(0.2)
            remote = RemoteEngine(paths)
            time.sleep(3)  # settle: the first poll, the services listed
            idle = window(run.proc.pid, args.seconds)
            measured = []
            few = max(1, args.jobs // 4)
            for count in (few, args.jobs):
                for _ in range(count - len(remote.waiting_jobs())):
                    box.add_ticket(svc)
                deadline = time.monotonic() + 300
                while len(remote.waiting_jobs()) < count:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"only {len(remote.waiting_jobs())} jobs waited")
                    time.sleep(0.5)
                time.sleep(2)  # their threads returned
                measured.append((count, window(run.proc.pid, args.seconds)))

            started: dict[int, float] = {}
            lock = threading.Lock()

            def on_event(event: object) -> None:
                if isinstance(event, JobChanged) and event.job.state is JobState.RUNNING:
                    with lock:
                        started.setdefault(event.job.job_id, time.perf_counter())

            remote.events.subscribe(on_event)
            latencies = []
            for view in remote.waiting_jobs()[:args.approve]:
                asked = time.perf_counter()
                remote.approve_job(view.job_id, via="cli")
                until = time.monotonic() + 30
                while view.job_id not in started and time.monotonic() < until:
                    time.sleep(0.005)
                with lock:
                    latencies.append(started.get(view.job_id, float("nan")) - asked)
            remote.close()
            run.stop()

    minute = 60.0 / args.seconds
    print(f"gate benchmark (real worker, real itksnap-dss-server on 127.0.0.1, "
          f"{os.cpu_count()} cores), {args.seconds:g} s windows")
    print(f"  idle:               threads {idle[0]}-{idle[1]}, CPU {idle[2] * minute:.2f} s/min, "
          f"RSS {idle[3]:.1f} MiB")
    for count, waiting in measured:
        print(f"  {count:3d} jobs waiting:    threads {waiting[0]}-{waiting[1]}, CPU "
              f"{waiting[2] * minute:.2f} s/min, RSS {waiting[3]:.1f} MiB")
    print("  (threads past idle: the outbox's delivery pool, at most 3, made at the first "
          "call sent; none per job)")
    print(f"  approve -> command started, {len(latencies)} approvals: median "
          f"{statistics.median(latencies):.3f} s, max {max(latencies):.3f} s")


if __name__ == "__main__":
    main()
