"""`dss-console v6 login|status|logout|sandbox` as an operator runs them: real processes,
the real server, secrets never on stdout/stderr (except the sandbox's own banner)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dss_console.sources.v6.sandbox import V6Sandbox

from v6_fixtures import SERVER_TEST_TIMEOUT

pytestmark = pytest.mark.timeout(SERVER_TEST_TIMEOUT)

EXE = Path(sys.executable).with_name("dss-console")


def _cli(tmp_path: Path, *argv: str, stdin: str = "", timeout: float = 60
         ) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "cli"), DSS_CONSOLE_KEYRING="off")
    return subprocess.run([str(EXE), *argv], env=env, input=stdin, capture_output=True,
                          text=True, timeout=timeout)


def test_login_status_logout(v6_sandbox: V6Sandbox, tmp_path: Path) -> None:
    plain = v6_sandbox.node("station-demo")
    enc = v6_sandbox.node("station-demo-enc")
    key_file = v6_sandbox.key_file("station")
    url = v6_sandbox.url

    bad = _cli(tmp_path, "v6", "login", "--server", url, "--api-key-stdin",
               stdin="11111111-2222-3333-4444-555555555555\n")
    assert bad.returncode == 1 and "did not accept this API key" in bad.stderr

    no_key = _cli(tmp_path, "v6", "login", "--server", url, "--api-key-stdin",
                  stdin=enc.api_key + "\n")
    assert no_key.returncode == 1
    assert "'demo-enc' is encrypted" in no_key.stderr and "--private-key" in no_key.stderr

    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    bad_key = _cli(tmp_path, "v6", "login", "--server", url, "--api-key-stdin",
                   "--private-key", str(junk), stdin=enc.api_key + "\n")
    assert bad_key.returncode == 1 and "private key cannot be used" in bad_key.stderr

    ok = _cli(tmp_path, "v6", "login", "--server", url, "--api-key-stdin",
              stdin=plain.api_key + "\n")
    assert ok.returncode == 0, ok.stderr
    assert "as node 'station-demo'" in ok.stdout and "organization:  station" in ok.stdout
    assert "collaboration: demo (id" in ok.stdout and "not encrypted" in ok.stdout

    ok = _cli(tmp_path, "v6", "login", "--server", url + "/api", "--api-key-stdin",
              "--private-key", str(key_file), stdin=enc.api_key + "\n")
    assert ok.returncode == 0, ok.stderr
    assert "station-demo-enc" in ok.stdout and ", encrypted" in ok.stdout
    assert "uploaded" not in ok.stdout  # the sandbox uploaded the same public key

    secrets_file = tmp_path / "cli" / "dss-console" / "v6-secrets.json"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert plain.api_key in secrets_file.read_text()

    status = _cli(tmp_path, "v6", "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.count("key accepted") == 2
    assert "station-demo @" in status.stdout and "station-demo-enc @" in status.stdout

    out = _cli(tmp_path, "v6", "logout", "--node", "station-demo")
    assert out.returncode == 0 and "forgotten" in out.stdout
    assert "station-demo @" not in _cli(tmp_path, "v6", "status").stdout
    assert _cli(tmp_path, "v6", "logout", "--node", "nope").returncode == 1

    everything = "".join(r.stdout + r.stderr for r in (bad, no_key, bad_key, ok, status, out))
    for secret in (plain.api_key, enc.api_key, "PRIVATE KEY"):
        assert secret not in everything


def test_sandbox_command_prints_working_lines_and_stops_on_sigterm(
        v6_python: Path, tmp_path: Path) -> None:
    data = tmp_path / "box"
    proc = subprocess.Popen([str(EXE), "v6", "sandbox", "--data", str(data)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:  # blocks only until the banner is printed
            lines.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        banner = "".join(lines)
        url = re.search(r"running at (http://127\.0\.0\.1:\d+)", banner).group(1)
        info = json.loads((data / "sandbox.json").read_text())
        assert stat.S_IMODE((data / "sandbox.json").stat().st_mode) == 0o600
        assert info["url"] == url
        login = next(ln.strip() for ln in lines if "v6 login" in ln and "--private-key" in ln)
        key, rest = login.split(" | ", 1)
        argv = shlex.split(rest)[1:]
        done = _cli(tmp_path, *argv, stdin=key.split()[1] + "\n")
        assert done.returncode == 0, done.stderr
        assert "station-demo-enc" in done.stdout
        assert (data / "v6-settings.toml").read_text().startswith("[v6]")
        assert "c.task.create(" in banner
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "vantage6 sandbox stopped" in out
