"""SIGTERM / Ctrl-C to the console process: it closes as Quit would, without a dialog nobody
can answer. A sandbox console stops its engine, its server and its files; a real console
keeps running jobs going in the engine (test_gui_engine_process: keep running…)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from waiting import wait_for

EXE = Path(sys.executable).with_name("dss-console")


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text.encode() in cmdline and state != "Z":
            found.append(int(entry))
    return found


def test_sigterm_closes_a_sandbox_console_and_leaves_nothing_behind(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HOME=str(tmp_path / "home"),
               XDG_CONFIG_HOME=str(tmp_path / "c"), XDG_DATA_HOME=str(tmp_path / "d"),
               XDG_STATE_HOME=str(tmp_path / "s"), TMPDIR=str(scratch),
               DSS_CONSOLE_KEYRING="off", DSS_CONSOLE_REPORT_FIRST_PAINT="1")
    (tmp_path / "home").mkdir()
    proc = subprocess.Popen([str(EXE), "--sandbox"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()  # type: ignore[arg-type]
    try:
        # The window is up and its engine (a process of its own) shows the jobs.
        wait_for(lambda: any(x.startswith("DSS_CONSOLE_JOBS_SHOWN") for x in lines)
                 or proc.poll() is not None, 120, what="the console's engine to start")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        engines = _processes_mentioning(str(scratch))
        assert any(b"--for-console" in Path(f"/proc/{pid}/cmdline").read_bytes()
                   for pid in engines), "no engine process found"
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        stderr = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, stderr
    assert "SIGTERM: closing the window; stopping the sandbox" in stderr
    assert "Traceback" not in stderr, stderr
    # The engine, the sandbox's server and its files are gone with the window.
    wait_for(lambda: not _processes_mentioning(str(scratch)), 30,
             what="the engine and the sandbox server to stop")
    assert not [p for p in scratch.iterdir() if p.name.startswith("dss-sandbox-")]
