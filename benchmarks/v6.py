"""vantage6 node benchmark: the real `dss-console worker --source v6` against a real
vantage6 server started here — 4.x: vantage6-server 4.15.2 (the sandbox), the official
`vantage6-client` as the researcher; 5.x: HQ 5.0.3 behind the Keycloak stand-in, the official
5.0.3 `UserClient` (service account) as the researcher — and a no-op algorithm as a local
command (it writes a time stamp, then `{}`).

    .venv/bin/python benchmarks/v6.py [--version 4|5|both] [--latency-tasks 10]
                                      [--batch-tasks 20]

(a) latency   one task at a time: the researcher's create → the local process started (its
              first act writes a time stamp), median and max, with the socket up and with
              polling only (the worker started with python-socketio hidden), both at
              --poll-interval 5. Target: <= 1 s median with the socket up.
(b) batch     N tasks created at once, --concurrency 2: runs per minute (first create → last
              completed, as the researcher sees it).
(c) RSS       the worker's peak resident memory while (b) runs. Target: <= 80 MiB.

`--version both` runs 4.x, then 5.x, and prints the figures side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_v6_worker import EXE, Worker, _login

from v6_fixtures import Researcher

NODE = "station-demo"
NOOP_IMAGE = "v6-bench-noop"
NOOP = ("import sys, time\n"
        "open(sys.argv[2], 'w').write(repr(time.time()))\n"
        "open(sys.argv[1], 'w').write('{}')\n")
NO_SOCKET = ("import sys; sys.modules['socketio'] = None\n"  # V6Source.watch → polling only
             "from dss_console.cli import main; sys.exit(main(sys.argv[1:]))\n")
# What ends a run on either generation (5.x adds its own statuses).
ENDED = {"completed", "crashed", "failed", "start failed", "killed by user", "not allowed",
         "unknown error", "non-existing Docker image", "dataframe not found",
         "unexpected output"}


@dataclass
class Node:
    """One logged-in node on a running server and its researcher."""

    version: str
    home: Path
    server: str
    station: int
    create: Callable[[], int]  # a no-op task for the node's organization → its id
    runs: Callable[[int], list[dict[str, Any]]]


def write_settings(home: Path) -> None:
    from dss_console.engine.settings import Settings, settings_to_toml
    from dss_console.sources.v6.settings import parse_v6_settings

    (home / "noop.py").write_text(NOOP)
    (home / "stamps").mkdir()
    command = f"{sys.executable} {home / 'noop.py'} {{output}} {home / 'stamps'}/{{run}}"
    settings = Settings()
    settings.plugins["v6"] = parse_v6_settings({"algorithms": {NOOP_IMAGE: {"command": command}}})
    (home / "settings.toml").write_text(settings_to_toml(settings))


@contextlib.contextmanager
def node_4(tmp: Path) -> Iterator[Node]:
    from dss_console.sources.v6.sandbox import V6Sandbox

    with V6Sandbox(data_dir=tmp / "server") as sandbox:
        assert sandbox.python is not None
        home = tmp / "home"
        home.mkdir()
        write_settings(home)
        _login(home, sandbox, NODE)
        researcher = Researcher(sandbox.python, sandbox, "demo")
        station = sandbox.org_id("station")
        try:
            yield Node("4.15.2", home, sandbox.url, station,
                       lambda: researcher.create_task(NOOP_IMAGE, "noop", [station],
                                                      databases=[]),
                       lambda task_id: list(researcher.call("runs", task_id=task_id)))
        finally:
            researcher.close()


@contextlib.contextmanager
def node_5(tmp: Path) -> Iterator[Node]:
    from dss_console.sources.v6x5.sandbox import HqSandbox

    from v6x5_fixtures import HqResearcher

    with HqSandbox(data_dir=tmp / "server") as sandbox:
        assert sandbox.python is not None
        home = tmp / "home"
        home.mkdir()
        write_settings(home)
        env = dict(os.environ, XDG_DATA_HOME=str(home / "data"), DSS_CONSOLE_KEYRING="off")
        done = subprocess.run(
            [str(EXE), "v6", "login", "--server", sandbox.url, "--auth-url", sandbox.auth_url,
             "--realm", sandbox.info["realm"], "--node", NODE, "--api-key-stdin"],
            input=sandbox.node(NODE).api_key + "\n", env=env, capture_output=True, text=True,
            timeout=120)
        if done.returncode != 0:
            raise SystemExit(f"v6 login (5.x) failed: {done.stderr}")
        researcher = HqResearcher(sandbox.python, sandbox, "demo")
        station = sandbox.org_id("station")
        try:
            yield Node("5.0.3", home, sandbox.url, station,
                       lambda: researcher.create_task(NOOP_IMAGE, "noop", [station]),
                       lambda task_id: list(researcher.call("runs", task_id=task_id)))
        finally:
            researcher.close()


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


def wait_ended(node: Node, task_id: int, timeout: float) -> str:
    """The task's run status once it ended (the researcher's view)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = node.runs(task_id)
        if runs and all(r["status"] in ENDED for r in runs):
            return str(runs[0]["status"])
        if time.monotonic() > deadline:
            raise SystemExit(f"task {task_id} did not end within {timeout} s: {runs}")
        time.sleep(0.1)


def latency(node: Node, tasks: int) -> list[float]:
    delays = []
    for _ in range(tasks):
        created = time.time()
        task_id = node.create()
        (run,) = node.runs(task_id)
        delays.append(stamp(node.home, run["id"]) - created)
        assert wait_ended(node, task_id, 60) == "completed"
    return delays


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(node: Node, latency_tasks: int, batch_tasks: int) -> dict[str, str]:
    """Runs (a), (b) and (c) on one node; prints each figure and returns them."""
    figures: dict[str, str] = {}

    def say(key: str, text: str) -> None:
        figures[key] = text
        print(f"[{node.version}] {key}: {text}", flush=True)

    for label, polling_only in (("socket up", False), ("polling only", True)):
        worker = (_worker_without_socket(node.home, node.server) if polling_only else
                  Worker(node.home, node.server, NODE, "--poll-interval", "5"))
        worker.wait_line(r"worker .* on ")
        if not polling_only:
            worker.wait_line(r"push events: connected", 30)
        delays = latency(node, latency_tasks)
        worker.stop()
        say(f"(a) new task -> local process started, {label}",
            f"median {statistics.median(delays):.2f} s, max {max(delays):.2f} s "
            f"({len(delays)} tasks)")

    worker = Worker(node.home, node.server, NODE, "--concurrency", "2")
    worker.wait_line(r"worker .* on ")
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], rss_mib(worker.proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.monotonic()
    task_ids = [node.create() for _ in range(batch_tasks)]
    for task_id in task_ids:
        assert wait_ended(node, task_id, 300) == "completed"
    elapsed = time.monotonic() - start
    done.set()
    sampler.join()
    worker.stop()
    say(f"(b) {batch_tasks} no-op tasks, --concurrency 2",
        f"{elapsed:.1f} s, {batch_tasks / elapsed * 60:.0f} runs per minute")
    say("(c) worker peak RSS during (b)", f"{peak[0]:.1f} MiB")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", choices=("4", "5", "both"), default="4",
                        help="the server generation: 4 (vantage6-server 4.15.2), 5 (HQ "
                             "5.0.3 behind the Keycloak stand-in), or both side by side")
    parser.add_argument("--latency-tasks", type=int, default=10)
    parser.add_argument("--batch-tasks", type=int, default=20)
    args = parser.parse_args()

    nodes = {"4": node_4, "5": node_5}
    versions = ["4", "5"] if args.version == "both" else [args.version]
    results: dict[str, dict[str, str]] = {}
    for version in versions:
        with tempfile.TemporaryDirectory(prefix=f"dss-v6-bench-{version}-") as tmp, \
                nodes[version](Path(tmp)) as node:
            results[node.version] = measure(node, args.latency_tasks, args.batch_tasks)
    if len(results) > 1:
        print()
        print(f"| | {' | '.join(f'vantage6 {v}' for v in results)} |")
        print(f"|---|{'---|' * len(results)}")
        for key in next(iter(results.values())):
            print(f"| {key} | {' | '.join(r.get(key, '') for r in results.values())} |")


def _worker_without_socket(home: Path, server: str) -> Worker:
    """A Worker whose process runs the CLI with python-socketio hidden (polling only)."""
    worker = Worker.__new__(Worker)
    env = dict(os.environ, XDG_DATA_HOME=str(home / "data"), DSS_CONSOLE_KEYRING="off")
    worker.lines = []
    worker._cond = threading.Condition()
    worker.proc = subprocess.Popen(
        [sys.executable, "-c", NO_SOCKET, "worker", "--source", "v6", "--server", server,
         "--node", NODE, "--config", str(home / "settings.toml"), "--poll-interval", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True)
    threading.Thread(target=worker._read, daemon=True).start()
    return worker


if __name__ == "__main__":
    assert EXE.exists(), EXE
    main()
