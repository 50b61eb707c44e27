"""The engine's local channel: a window attaches to a running worker process, sees its jobs
live, steers them, and strangers cannot talk to it. Real worker process, real server."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dss_console.engine import wire
from dss_console.engine.channel import channel_paths
from dss_console.engine.events import Event, JobOutput
from dss_console.engine.remote import EngineGoneError, RemoteEngine, find_engine
from dss_console.engine.states import JobState
from dss_console.sandbox import Sandbox
from test_worker_cli import Worker, args_for, worker_env  # noqa: F401 (fixture)

from test_engine import TAGS
from waiting import wait_for


@pytest.fixture
def service(sandbox: Sandbox) -> str:
    return sandbox.register_service(f"ChannelTest-{uuid.uuid4().hex[:8]}", "1.0.0", TAGS)


@pytest.fixture
def worker(sandbox: Sandbox, worker_env: dict[str, str], service: str,  # noqa: F811
           tmp_path: Path) -> Iterator[Worker]:
    go = tmp_path / "go"
    started = Worker(worker_env, *args_for(service, tmp_path, "chatter", str(go)))
    yield started
    go.write_text("go")
    started.kill()


def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data" / "dss-console"


def attach(sandbox: Sandbox, tmp_path: Path) -> RemoteEngine:
    paths = wait_for(lambda: find_engine(data_dir(tmp_path), sandbox.url, "ci-node"), 30,
                     what="the worker's channel")
    return RemoteEngine(paths)


class Recorder:
    def __init__(self, remote: RemoteEngine):
        self.events: list[Event] = []
        self._lock = threading.Lock()
        remote.events.subscribe(self._add)

    def _add(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: type) -> list:
        with self._lock:
            return [e for e in self.events if isinstance(e, kind)]


def test_a_window_attaches_watches_live_output_and_cancels(sandbox: Sandbox, service: str,
                                                          worker: Worker,
                                                          tmp_path: Path) -> None:
    ticket = sandbox.add_ticket(service)
    worker.wait_line(": running")
    remote = attach(sandbox, tmp_path)
    try:
        assert remote.info["server"] == sandbox.url and remote.info["role"] == "worker"
        recorder = Recorder(remote)
        job = next(j for j in remote.jobs() if j.ticket_id == ticket)
        assert job.state is JobState.RUNNING
        # Output of jobs the window does not watch stays on disk only.
        log = Path(job.workdir) / ".dss" / "output.log"
        seen = log.read_bytes().count(b"\n")
        wait_for(lambda: log.read_bytes().count(b"\n") > seen + 20, 20, what="more output")
        assert not recorder.of(JobOutput)
        remote.watch([job.job_id])
        wait_for(lambda: any("chatter line" in text for e in recorder.of(JobOutput)
                             for _, text in e.lines), 20, what="live output")
        assert remote.status().busy == (job.job_id,)
        assert remote.busy_job_ids() == {job.job_id}
        remote.cancel_job(job.job_id, "operator test")
        wait_for(lambda: remote.job(job.job_id).state is JobState.CANCELLED, 30,
                 what="the job cancelled")
        wait_for(lambda: sandbox.admin.ticket_status(ticket) == "failed", 30,
                 what="the ticket failed on the server")
    finally:
        remote.close()


def test_a_stranger_without_the_token_is_refused(sandbox: Sandbox, worker: Worker,
                                                 tmp_path: Path) -> None:
    worker.wait_line("worker ci-node")
    paths = wait_for(lambda: find_engine(data_dir(tmp_path), sandbox.url, "ci-node"), 30,
                     what="the worker's channel")
    assert paths.socket.stat().st_mode & 0o077 == 0
    assert paths.token.stat().st_mode & 0o077 == 0
    for hello in ({"id": 1, "op": "hello", "token": "0" * 64}, {"id": 1, "op": "jobs"}):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(10)
            conn.connect(str(paths.socket))
            conn.sendall(wire.dumps(hello))
            reply = json.loads(conn.makefile("rb").readline())
            assert reply["ok"] is False and reply["kind"] == "refused"
            assert conn.recv(1) == b""  # and the engine hung up
    assert paths == channel_paths(data_dir(tmp_path), sandbox.url, "ci-node")


def test_shutdown_from_a_window_stops_the_worker_and_the_window_hears_it(
        sandbox: Sandbox, worker: Worker, tmp_path: Path) -> None:
    worker.wait_line("worker ci-node")
    remote = attach(sandbox, tmp_path)
    lost: list[str] = []
    remote.on_lost(lost.append)
    remote.shutdown()
    assert worker.finish() == 0, "\n".join(worker.lines)
    wait_for(lambda: lost, 10, what="the window to notice")
    with pytest.raises(EngineGoneError):
        remote.jobs()
    remote.close()
    assert find_engine(data_dir(tmp_path), sandbox.url, "ci-node") is None


def test_a_long_temp_dir_still_leaves_room_for_the_socket(tmp_path, monkeypatch) -> None:
    """A socket's path is limited (~104-108 bytes): a long TMPDIR (macOS's /var/folders/…,
    a scheduler's per-job dir) must not make the engine's channel impossible."""
    import tempfile


    long_tmp = tmp_path / ("x" * 60)
    long_tmp.mkdir()
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(long_tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    paths = channel_paths(tmp_path / "data", "https://dss.example.org", "node1")
    assert len(str(paths.socket).encode()) < 100
    assert (paths.socket.parent.stat().st_mode & 0o777) == 0o700
