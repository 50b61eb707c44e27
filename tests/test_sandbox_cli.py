"""`dss-console sandbox` as a provider runs it: a real process, stopped with a signal, and
the worker command line it prints processing its demo tickets."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import requests

EXE = Path(sys.executable).with_name("dss-console")


def test_sandbox_banner_worker_line_and_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen([str(EXE), "sandbox", "--tickets", "2", "--data", str(tmp_path / "d")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "cli"), DSS_CONSOLE_KEYRING="off")

    def cli(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(EXE), *argv], env=env, capture_output=True, text=True,
                              timeout=timeout)

    try:
        lines = []
        for line in proc.stdout:  # blocks only until the banner is printed
            lines.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        banner = "".join(lines)
        url = re.search(r"running at (http://127\.0\.0\.1:\d+)", banner).group(1)
        token = re.search(r"login token \(works once\): ([0-9a-f]{48})", banner).group(1)
        tickets = re.search(r"ready tickets: ([\d ]+)", banner).group(1).split()
        assert len(tickets) == 2
        # A second sandbox on the same --data would drop and re-seed the running one's store.
        second = cli("sandbox", "--data", str(tmp_path / "d"))
        assert second.returncode == 1, second
        assert f"is in use by another sandbox (process {proc.pid})" in second.stderr
        assert "running at" not in second.stdout

        # The token on standard input: in argv every user's process list would show it.
        login_line = f"echo {token} | dss-console login --server {url} --token-stdin"
        assert login_line in banner and f"--token {token}" not in banner
        worker_line = next(line.strip() for line in lines if " worker " in line)

        # The printed line, as a provider pastes it into a shell.
        pasted = subprocess.run(["bash", "-c", login_line],
                                env=dict(env, PATH=f"{EXE.parent}:{env['PATH']}"),
                                capture_output=True, text=True, timeout=60)
        assert pasted.stdout == "logged in as test@example.com\n", pasted
        services = cli("pro", "services").stdout.split()
        assert services[0] == "DemoSegmentation" and services[3] == "sandboxlab"
        assert cli("pro", "available", services[2]).stdout.split()[2] == "2"

        argv = shlex.split(worker_line)
        worker = cli(*argv[1:], "--workdir", str(tmp_path / "work"), timeout=120)
        assert worker.returncode == 0, worker.stdout + worker.stderr
        assert worker.stdout.count(": succeeded") == 2, worker.stdout
        for ticket in tickets:
            assert cli("pro", "status", ticket).stdout == "success\n"

        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "sandbox stopped" in out
        try:
            requests.get(url + "/api/services", timeout=2)
            raise AssertionError("the server still answers after the sandbox stopped")
        except requests.ConnectionError:
            pass
        assert (tmp_path / "d" / "alfabis.sqlite3").exists()  # --data is kept
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
