"""`dss-console sandbox` as a provider runs it: a real process, stopped with a signal."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import requests

from dss_console.dss import DssClient


def test_sandbox_command_serves_demo_tickets_until_signalled(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("dss-console")
    proc = subprocess.Popen([str(exe), "sandbox", "--tickets", "2", "--data", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        lines = []
        for line in proc.stdout:  # blocks only until the banner is printed
            lines.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        banner = "".join(lines)
        url = re.search(r"running at (http://127\.0\.0\.1:\d+)", banner).group(1)
        token = re.search(r"login token \(works once\): ([0-9a-f]{48})", banner).group(1)
        assert f"dss-console login --server {url} --token {token}" in banner
        client = DssClient(url)
        assert client.login(token) == "test@example.com"
        services = client.services.list()
        assert [s.name for s in services] == ["DemoSegmentation"]
        available = client.services.available(services[0].githash)
        assert available[0].ready_count == 2
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "sandbox stopped" in out
        try:
            requests.get(url + "/api/services", timeout=2)
            raise AssertionError("the server still answers after the sandbox stopped")
        except requests.ConnectionError:
            pass
        assert (tmp_path / "alfabis.sqlite3").exists()  # --data is kept
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
