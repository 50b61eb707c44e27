"""Starting the engine process a console window attaches to.

The console never runs jobs itself: it starts `dss-console worker --for-console` (the same
engine the headless worker runs, steered by the window, claiming nothing by itself until
Auto mode is switched on) in a session of its own, so closing or crashing the window does not
take a job with it. The source plug-in's handover line (a DSS session, a vantage6 node's keys)
goes to the engine on its stdin, never on its command line or in its environment. What the
engine prints goes to a log file in the data dir.

Qt-free.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from dss_console import paths
from dss_console.engine.channel import ChannelPaths
from dss_console.engine.remote import find_engine
from dss_console.engine.workdirs import server_slug

START_TIMEOUT = 60.0


class EngineStartError(Exception):
    """The engine process did not come up; the message says why (its last output lines)."""


def engine_argv() -> list[str]:
    """How to run this program again: the bundle's executable, or this Python."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "dss_console"]


def engine_log_path(data_dir: Path, server: str, instance: str) -> Path:
    """`server`: the engine's key, as its source plug-in names it (a server URL, or a URL
    with a fragment naming one of several identities on that server): the whole key stays
    in the name, one log per key."""
    folder = paths.ensure_private_dir(Path(data_dir) / "logs")
    return folder / f"engine-{server_slug(server.replace('#', '/'))}-{instance}.log"


def start_engine_process(*, source: str, handover: str, server: str, instance: str,
                         data_dir: Path, workroot: Path, config: Path | None,
                         provider: str | None, ca_bundle: str | None,
                         options: Sequence[str] = (),
                         engine_key: str | None = None) -> subprocess.Popen[bytes]:
    """`source`: the plug-in's name (plugins.SOURCES); `handover`: its one line for the
    engine (SourcePlugin.handover), written to the engine's stdin; `options`: its worker
    options (SourcePlugin.engine_argv, no secrets). `engine_key`: what the engine serves under
    (SourcePlugin.engine_key; default the server), naming its log."""
    argv = [*engine_argv(), "worker", "--for-console", "--source", source, *options,
            "--server", server, "--instance", instance, "--data-dir", str(data_dir),
            "--workdir", str(workroot)]
    # A settings file that does not load would stop the engine: the window sends its
    # settings once attached anyway.
    argv += ["--config", str(config) if config is not None else os.devnull]
    if provider:
        argv += ["--provider", provider]
    if ca_bundle:
        argv += ["--ca-bundle", ca_bundle]
    log_path = engine_log_path(data_dir, engine_key or server, instance)
    with open(log_path, "ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} engine started by a console\n"
                  .encode())
        log.flush()
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   close_fds=True)
    assert process.stdin is not None
    try:
        process.stdin.write(handover.encode() + b"\n")
        process.stdin.close()
    except OSError:
        pass  # it died at once: wait_for_engine says why
    return process


def wait_for_engine(process: subprocess.Popen[bytes], data_dir: Path, server: str,
                    instance: str, timeout: float = START_TIMEOUT) -> ChannelPaths:
    """The engine's channel once it listens; EngineStartError when the process ended first
    or did not come up in time."""
    deadline = time.monotonic() + timeout
    while True:
        found = find_engine(data_dir, server, instance)
        if found is not None:
            return found
        code = process.poll()
        if code is not None:
            raise EngineStartError(f"the engine process stopped (exit code {code}): "
                                   f"{last_words(data_dir, server, instance)}")
        if time.monotonic() > deadline:
            with contextlib.suppress(OSError):
                process.kill()
            process.wait()
            raise EngineStartError(f"the engine process did not start within {timeout:.0f} s: "
                                   f"{last_words(data_dir, server, instance)}")
        time.sleep(0.05)  # polling a socket file: nothing to wait on


def last_words(data_dir: Path, server: str, instance: str, lines: int = 3) -> str:
    """The end of the engine's log, for an error message."""
    try:
        text = engine_log_path(data_dir, server, instance).read_text(errors="replace")
    except OSError:
        return "no output"
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    return " / ".join(tail) or "no output"
