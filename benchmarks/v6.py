"""vantage6 node benchmark: the real `dss-console worker --source v6` against the real
vantage6-server 4.15.2 (the sandbox, started here), the official `vantage6-client` as the
researcher, a no-op algorithm as a local command (it writes a time stamp, then `{}`).

    .venv/bin/python benchmarks/v6.py [--latency-tasks 10] [--batch-tasks 20]

(a) latency   one task at a time: the researcher's create → the local process started (its
              first act writes a time stamp), median and max, with the socket up and with
              polling only (the worker started with python-socketio hidden), both at the
              default --poll-interval 5. Target: <= 1 s median with the socket up.
(b) batch     N tasks created at once, --concurrency 2: runs per minute (first create → last
              completed, as the researcher sees it).
(c) RSS       the worker's peak resident memory while (b) runs. Target: <= 80 MiB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_v6_worker import EXE, Worker, _login

from v6_fixtures import Researcher

NOOP_IMAGE = "v6-bench-noop"
NOOP = ("import sys, time\n"
        "open(sys.argv[2], 'w').write(repr(time.time()))\n"
        "open(sys.argv[1], 'w').write('{}')\n")
NO_SOCKET = ("import sys; sys.modules['socketio'] = None\n"  # V6Source.watch → polling only
             "from dss_console.cli import main; sys.exit(main(sys.argv[1:]))\n")


def write_settings(home: Path) -> None:
    from dss_console.engine.settings import Settings, settings_to_toml
    from dss_console.sources.v6.settings import parse_v6_settings

    (home / "noop.py").write_text(NOOP)
    (home / "stamps").mkdir()
    command = f"{sys.executable} {home / 'noop.py'} {{output}} {home / 'stamps'}/{{run}}"
    settings = Settings()
    settings.plugins["v6"] = parse_v6_settings({"algorithms": {NOOP_IMAGE: {"command": command}}})
    (home / "settings.toml").write_text(settings_to_toml(settings))


def stamp(home: Path, run_id: int, timeout: float = 60.0) -> float:
    path = home / "stamps" / str(run_id)
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = path.read_text()
            if text:
                return float(text)
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"run {run_id} did not start within {timeout} s")
        time.sleep(0.01)  # another process's file: nothing to wait on but its existence


def latency(home: Path, researcher: Researcher, station: int, tasks: int) -> list[float]:
    delays = []
    for _ in range(tasks):
        created = time.time()
        task_id = researcher.create_task(NOOP_IMAGE, "noop", [station], databases=[])
        (run,) = researcher.call("runs", task_id=task_id)
        delays.append(stamp(home, run["id"]) - created)
        assert researcher.call("wait_task", task_id=task_id, timeout=60) == "completed"
    return delays


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-tasks", type=int, default=10)
    parser.add_argument("--batch-tasks", type=int, default=20)
    args = parser.parse_args()

    from dss_console.sources.v6.sandbox import V6Sandbox

    with tempfile.TemporaryDirectory(prefix="dss-v6-bench-") as tmp, \
            V6Sandbox(data_dir=Path(tmp) / "server") as sandbox:
        assert sandbox.python is not None
        home = Path(tmp) / "home"
        home.mkdir()
        write_settings(home)
        _login(home, sandbox, "station-demo")
        researcher = Researcher(sandbox.python, sandbox, "demo")
        station = sandbox.org_id("station")
        try:
            results: dict[str, list[float]] = {}
            for label, prefix in (("socket up", None), ("polling only", NO_SOCKET)):
                worker = Worker(home, sandbox.url, "station-demo", "--poll-interval", "5")
                if prefix is not None:  # the same worker, python-socketio hidden
                    worker.stop()
                    worker = _worker_without_socket(home, sandbox.url)
                worker.wait_line(r"worker .* on ")
                if prefix is None:
                    worker.wait_line(r"push events: connected", 30)
                results[label] = latency(home, researcher, station, args.latency_tasks)
                worker.stop()
            for label, delays in results.items():
                print(f"(a) new task -> local process started, {label}: median "
                      f"{statistics.median(delays):.2f} s, max {max(delays):.2f} s "
                      f"({len(delays)} tasks)")

            worker = Worker(home, sandbox.url, "station-demo", "--concurrency", "2")
            worker.wait_line(r"worker .* on ")
            peak = [0.0]
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.2):
                    peak[0] = max(peak[0], rss_mib(worker.proc.pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            start = time.monotonic()
            task_ids = [researcher.create_task(NOOP_IMAGE, "noop", [station], databases=[])
                        for _ in range(args.batch_tasks)]
            for task_id in task_ids:
                assert researcher.call("wait_task", task_id=task_id, timeout=300) == "completed"
            elapsed = time.monotonic() - start
            done.set()
            sampler.join()
            worker.stop()
            print(f"(b) {args.batch_tasks} no-op tasks, --concurrency 2: {elapsed:.1f} s, "
                  f"{args.batch_tasks / elapsed * 60:.0f} runs per minute")
            print(f"(c) worker peak RSS during (b): {peak[0]:.1f} MiB")
        finally:
            researcher.close()


def _worker_without_socket(home: Path, server: str) -> Worker:
    """A Worker whose process runs the CLI with python-socketio hidden (polling only)."""
    worker = Worker.__new__(Worker)
    import subprocess

    env = dict(os.environ, XDG_DATA_HOME=str(home / "data"), DSS_CONSOLE_KEYRING="off")
    worker.lines = []
    worker._cond = threading.Condition()
    worker.proc = subprocess.Popen(
        [sys.executable, "-c", NO_SOCKET, "worker", "--source", "v6", "--server", server,
         "--node", "station-demo", "--config", str(home / "settings.toml"),
         "--poll-interval", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True)
    threading.Thread(target=worker._read, daemon=True).start()
    return worker


if __name__ == "__main__":
    assert EXE.exists(), EXE
    main()
