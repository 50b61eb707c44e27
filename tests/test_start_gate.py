"""The local executor's start gate (executors/local/process.py): a command waits until its pid
is journaled, and an engine that dies before leaves nothing of it running, nothing run."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dss_console.core.command import CommandStartError, JobPaths
from dss_console.core.executor import ExecutorDetails, JobRef, RunCallbacks, RunRequest
from dss_console.executors.local import LocalExecutor
from dss_console.executors.local.process import STOPPED_AT_GATE, CommandRunner
from test_runner import DEADLINE, Collector, dss_spec, no_leaked_threads, paths, py, run, sh

from waiting import wait_for

__all__ = ["no_leaked_threads", "paths"]  # fixtures used here

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the gate is POSIX")


def _at_gate(pid: int) -> bool:
    """The process is still the gate's shell (it has not exec'd the command)."""
    try:
        return b"dss-start" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


def test_a_held_command_runs_once_released(paths: JobPaths) -> None:
    marker = paths.workdir / "ran"
    runner = CommandRunner(dss_spec(paths, sh(f"touch {shlex.quote(str(marker))}; echo ran")),
                           paths, Collector())
    pid = runner.start(hold=True)
    if Path("/proc/self/cmdline").exists():
        # Popen returns as the exec begins; the command line shows once it is complete.
        wait_for(lambda: _at_gate(pid), 10, interval=0.01, what="the gate's command line")
    assert not marker.exists()
    runner.release()
    outcome = runner.wait(DEADLINE)
    assert outcome is not None and outcome.exit_code == 0 and outcome.stop_reason is None
    assert outcome.tail == ["ran"] and marker.exists()


def test_stopped_at_its_gate_the_command_never_runs(paths: JobPaths) -> None:
    marker = paths.workdir / "ran"
    runner = CommandRunner(dss_spec(paths, sh(f"touch {shlex.quote(str(marker))}")), paths,
                           Collector())
    runner.start(hold=True)
    runner.terminate("the engine stops")
    runner.release()  # stopped meanwhile: the gate closes without a go
    outcome = runner.wait(DEADLINE)
    assert outcome is not None and outcome.stop_reason == "the engine stops"
    assert not marker.exists()


def test_a_gate_closed_without_go_is_not_the_command_failing(paths: JobPaths) -> None:
    marker = paths.workdir / "ran"
    runner = CommandRunner(dss_spec(paths, sh(f"touch {shlex.quote(str(marker))}")), paths,
                           Collector())
    runner.start(hold=True)
    runner._close_gate()  # what the engine's death does to the write end
    outcome = runner.wait(DEADLINE)
    assert outcome is not None and outcome.exit_code == 111
    assert outcome.stop_reason == STOPPED_AT_GATE
    assert not marker.exists()


def test_exit_111_of_the_command_itself_is_its_own(paths: JobPaths) -> None:
    outcome, _ = run(paths, sh("exit 111"))
    assert outcome.exit_code == 111 and outcome.stop_reason is None


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="Linux /proc")
def test_the_gate_leaks_into_no_command(paths: JobPaths) -> None:
    """Another job's held gate is not inherited (else that job's gate would not close with
    the engine), and the command's stdin is /dev/null again."""
    other_paths = JobPaths(**{**paths.__dict__, "ticket_id": 43,
                              "engine_dir": paths.workdir / ".dss-other"})
    held = CommandRunner(dss_spec(other_paths, "true"), other_paths, Collector())
    held.start(hold=True)
    try:
        outcome, got = run(paths, py("""
            import os
            print(*sorted(int(fd) for fd in os.listdir("/proc/self/fd")))
            print(os.readlink("/proc/self/fd/0"))
        """))
    finally:
        held.release()
        assert held.wait(DEADLINE) is not None
    assert outcome.exit_code == 0, got.texts
    fds, stdin = got.texts[:2]
    assert fds.split()[:3] == ["0", "1", "2"] and len(fds.split()) == 4, fds  # + listdir's
    assert stdin == "/dev/null"


_ENGINE = """
import sys, threading
from pathlib import Path
from dss_console.core.command import CommandSpec, JobPaths
from dss_console.executors.local.process import CommandRunner
workdir = Path(sys.argv[1])
paths = JobPaths(ticket_id=7, service_name="S", service_hash="ab" * 20, workdir=workdir,
                 input_dir=workdir, workspace=workdir / "w.itksnap",
                 result=workdir / "r.itksnap", engine_dir=workdir / ".dss")
runner = CommandRunner(CommandSpec(argv=("touch", "ran")), paths, lambda report: None)
print(runner.start(hold=True), flush=True)
threading.Event().wait(60)  # killed here, never releasing (60 s: a stuck test's bound)
"""

# A subreaper adopts the orphaned gate, so that its exit status can be seen.
_REAPER = """
import ctypes, os, subprocess, sys, time
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit("no subreaper")
engine = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]],
                          stdout=subprocess.PIPE, text=True)
try:
    pid = int(engine.stdout.readline())
    # Until its exec is complete the kernel shows an empty command line.
    deadline = time.monotonic() + 30
    while len(words := open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")) < 4:
        assert time.monotonic() < deadline, words
        time.sleep(0.01)
    print(words[3].decode(), flush=True)
finally:
    engine.kill()
    engine.wait()
print("the engine is dead", file=sys.stderr, flush=True)
_, status = os.waitpid(pid, 0)  # the gate, ours now
print(os.waitstatus_to_exitcode(status), flush=True)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a Linux subreaper")
def test_an_engine_killed_before_release_leaves_nothing_run(tmp_path: Path) -> None:
    try:
        result = subprocess.run([sys.executable, "-c", _REAPER, textwrap.dedent(_ENGINE),
                                 str(tmp_path)], capture_output=True, text=True,
                                cwd=tmp_path, timeout=DEADLINE)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"stuck: {exc.stdout!r} {exc.stderr!r}") from None
    assert result.returncode == 0, result.stderr
    at_start, exit_code = result.stdout.split()
    assert at_start == "dss-start"  # it was held at its gate when the engine died
    assert exit_code == "111"  # the gate closed with the engine: it ended by itself...
    assert not (tmp_path / "ran").exists()  # ...and nothing of the command ran


def test_a_start_that_cannot_be_journaled_never_runs(paths: JobPaths) -> None:
    marker = paths.workdir / "ran"
    journaled: list[ExecutorDetails] = []

    def journal_full(details: ExecutorDetails) -> None:
        journaled.append(details)
        raise OSError("no space left on the journal's disk")

    request = RunRequest(spec=dss_spec(paths, sh(f"touch {shlex.quote(str(marker))}")),
                         paths=paths, job=JobRef("test", 1, 1), log_name="output.log",
                         grace_period=5)
    callbacks = RunCallbacks(on_report=Collector(), on_details=journal_full,
                             on_note=lambda level, text: None)
    with pytest.raises(OSError, match="no space left"):
        LocalExecutor().start(request, callbacks)
    pid = journaled[0].data["pid"]
    assert isinstance(pid, int)
    # start() waited for the gate to end before it raised: nothing is left, nothing ran.
    assert not Path(f"/proc/{pid}").exists() and not marker.exists()


def test_a_text_file_without_a_shebang_is_refused_in_words(paths: JobPaths) -> None:
    """The shell behind the gate would run it as a shell script: refused before."""
    script = paths.workdir / "noshebang"
    script.write_text("echo it ran\n")
    script.chmod(0o755)
    with pytest.raises(CommandStartError, match="a script needs a #! first line"):
        CommandRunner(dss_spec(paths, "./noshebang"), paths, Collector()).start()
