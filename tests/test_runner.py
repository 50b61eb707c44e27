"""CommandRunner with real child processes: templates, environment, the two report channels,
the log file, bounded memory, stopping whole process groups, start errors, no leaked threads.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dss_console.core.command import CommandSpec, CommandStartError, JobPaths, command_environment
from dss_console.core.executor import RunOutcome
from dss_console.engine.protocol import (
    AttachReport,
    MessageReport,
    OutputReport,
    ProgressReport,
    ProtocolWarning,
    Report,
)
from dss_console.engine.settings import ServiceCommand
from dss_console.engine.settings_reader import PLACEHOLDERS
from dss_console.executors.local.process import CommandRunner
from dss_console.sources.dss.command import (
    check_template,
    command_spec,
    expand_command,
    placeholder_values,
)

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX process groups")

PY = shlex.quote(sys.executable)
DEADLINE = 30.0


# -- helpers ----------------------------------------------------------------------------------


def py(code: str) -> str:
    """A template running Python code (braces escaped for the template)."""
    code = textwrap.dedent(code).replace("{", "{{").replace("}", "}}")
    return f"{PY} -c {shlex.quote(code)}"


def sh(script: str) -> str:
    return f"bash -c {shlex.quote(script.replace('{', '{{').replace('}', '}}'))}"


def wait_until(condition: Callable[[], bool], timeout: float = DEADLINE,
               what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _proc_states() -> dict[int, tuple[str, int]] | None:
    """pid -> (state, process group) of every process (Linux), None elsewhere."""
    if not Path("/proc/self/stat").exists():
        return None
    states = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        states[int(entry.name)] = (fields[0], int(fields[2]))
    return states


# Killed orphans are zombies until init reaps them (some container inits take seconds):
# a zombie counts as gone.
def group_gone(pgid: int) -> bool:
    states = _proc_states()
    if states is not None:
        return not any(group == pgid and state != "Z" for state, group in states.values())
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):  # macOS: EPERM when only zombies remain
        return True
    return False


def pid_gone(pid: int) -> bool:
    states = _proc_states()
    if states is not None:
        return states.get(pid, ("Z", 0))[0] == "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class Collector:
    """on_report that keeps everything, thread-safe enough for the tests' reads."""

    def __init__(self) -> None:
        self.reports: list[Report] = []
        self.lock = threading.Lock()

    def __call__(self, report: Report) -> None:
        with self.lock:
            self.reports.append(report)

    def of(self, kind: type) -> list:
        with self.lock:
            return [r for r in self.reports if isinstance(r, kind)]

    @property
    def lines(self) -> list[tuple[str, str]]:
        return [line for r in self.of(OutputReport) for line in r.lines]

    @property
    def texts(self) -> list[str]:
        return [text for _stream, text in self.lines]

    @property
    def typed(self) -> list[Report]:
        return [r for r in self.reports if not isinstance(r, OutputReport)]


@pytest.fixture
def paths(tmp_path: Path) -> JobPaths:
    workdir = tmp_path / "ticket 00000042"  # a space: placeholders must stay one word
    input_dir = workdir / "input"
    input_dir.mkdir(parents=True)
    workspace = input_dir / "ticket_00000042.itksnap"
    workspace.write_text("<registry/>")
    return JobPaths(ticket_id=42, service_name="Demo Service", service_hash="ab" * 20,
                    workdir=workdir, input_dir=input_dir, workspace=workspace,
                    result=workdir / "result.itksnap", engine_dir=workdir / ".dss")


def dss_spec(paths: JobPaths, template: str, *, timeout: float | None = None,
             env: dict[str, str] | None = None, cwd: str | None = None,
             nice: int = 0) -> CommandSpec:
    """A DSS service's command as a ticket with ``paths`` runs it (sources/dss/command.py)."""
    return command_spec(ServiceCommand(key="S", command=template, timeout=timeout,
                                       env=env or {}, cwd=cwd), paths, nice=nice)


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    yield
    leftover = [t.name for t in threading.enumerate() if t.name.startswith("dss-runner")]
    assert not leftover, leftover


def run(paths: JobPaths, template: str, *, timeout: float | None = None,
        env: dict[str, str] | None = None, cwd: str | None = None,
        collector: Collector | None = None, nice: int = 0, **options: object
        ) -> tuple[RunOutcome, Collector]:
    collector = collector or Collector()
    runner = CommandRunner(dss_spec(paths, template, timeout=timeout, env=env, cwd=cwd,
                                    nice=nice),
                           paths, collector, **options)  # type: ignore[arg-type]
    runner.start()
    outcome = runner.wait(DEADLINE)
    assert outcome is not None, "the command did not finish"
    assert not runner.running
    return outcome, collector


# -- templates --------------------------------------------------------------------------------


def test_ashs_convention(paths: JobPaths) -> None:
    argv = expand_command("bash /opt/ashs/service_ashs.sh {ticket} {workdir} {workspace} "
                          "{result}", paths)
    assert argv == ["bash", "/opt/ashs/service_ashs.sh", "42", str(paths.workdir),
                    str(paths.workspace), str(paths.result)]


def test_every_placeholder(paths: JobPaths) -> None:
    argv = expand_command("run {ticket} {service} {service_hash} {workdir} {inputs} "
                          "{workspace} {result}", paths)
    assert argv[1:] == ["42", "Demo Service", "ab" * 20, str(paths.workdir),
                        str(paths.input_dir), str(paths.workspace), str(paths.result)]


def test_values_with_spaces_stay_one_word_even_inside_a_word(paths: JobPaths) -> None:
    argv = expand_command("tool --out={result} '{service} x' pre{ticket}post", paths)
    assert argv == ["tool", f"--out={paths.result}", "Demo Service x", "pre42post"]


def test_quoted_words_and_braces(paths: JobPaths) -> None:
    argv = expand_command("""bash -c 'awk "{{print $1}}" "$0"' {workspace}""", paths)
    assert argv == ["bash", "-c", 'awk "{print $1}" "$0"', str(paths.workspace)]


def test_missing_workspace_expands_to_an_empty_word(paths: JobPaths) -> None:
    paths = JobPaths(**{**paths.__dict__, "workspace": None})
    assert expand_command("script {ticket} {workspace} {result}", paths) == [
        "script", "42", "", str(paths.result)]


@pytest.mark.parametrize(("template", "words"), [
    ("script {foo}", "unknown placeholder {foo}"),
    ("script {}", "unknown placeholder {}"),
    ("script {ticket.real}", "unknown placeholder {ticket.real}"),
    ("script {ticket!r}", "no format spec or conversion"),
    ("script {ticket:>5}", "no format spec or conversion"),
    ("awk '{print}'", "unknown placeholder {print}"),
    ("script {ticket", "bad braces"),
    ("script }", "bad braces"),
    ("script 'unclosed", "check the quotes"),
    ("", "empty command"),
    ("   ", "empty command"),
    ("{workspace} x", "empty command"),
])
def test_bad_templates(template: str, words: str, paths: JobPaths) -> None:
    paths = JobPaths(**{**paths.__dict__, "workspace": None})
    with pytest.raises(CommandStartError, match=None) as info:
        expand_command(template, paths)
    assert words in str(info.value)


def test_the_values_are_the_placeholders_the_settings_check(paths: JobPaths) -> None:
    # The settings file and dialog accept exactly the names a ticket's command fills in.
    assert tuple(placeholder_values(paths)) == PLACEHOLDERS


def test_check_template() -> None:
    check_template("bash x.sh {ticket} {workdir} {{literal}}")
    with pytest.raises(CommandStartError, match="unknown placeholder"):
        check_template("x {tiket}")


# -- environment ------------------------------------------------------------------------------


def test_command_environment(paths: JobPaths, tmp_path: Path) -> None:
    base = {"PATH": "/usr/bin:/bin", "HOME": "/home/x", "DSS_CONSOLE_SECRET": "s3cret",
            "DSS_EVENTS": "/stale/parent/events"}
    env = command_environment(dss_spec(paths, "x", env={"OMP_NUM_THREADS": "4",
                                                        "DSS_TICKET_ID": "spoofed"}),
                              base=base)
    assert env["PATH"] == "/usr/bin:/bin" and env["HOME"] == "/home/x"
    assert env["OMP_NUM_THREADS"] == "4"
    assert "DSS_CONSOLE_SECRET" not in env
    assert env["DSS_TICKET_ID"] == "42"  # the job's values win over the service's env
    assert env["DSS_SERVICE_NAME"] == "Demo Service"
    assert env["DSS_SERVICE_HASH"] == "ab" * 20
    assert env["DSS_WORKDIR"] == str(paths.workdir)
    assert env["DSS_INPUT_DIR"] == str(paths.input_dir)
    assert env["DSS_INPUT_WORKSPACE"] == str(paths.workspace)
    assert env["DSS_RESULT_WORKSPACE"] == str(paths.result)
    assert env["DSS_EVENTS"] == str(paths.engine_dir / "events.jsonl")
    assert env["DSS_HOOK"] == str(paths.engine_dir / "hook")
    assert env["DSS_ABORT_FILE"] == str(paths.engine_dir / "abort")


def test_the_child_sees_the_environment_and_runs_in_the_workdir(paths: JobPaths) -> None:
    outcome, _ = run(paths, py("""
        import json, os, sys
        keys = [k for k in os.environ if k.startswith("DSS_")] + ["MY_SETTING"]
        print(json.dumps({"env": {k: os.environ.get(k) for k in keys}, "cwd": os.getcwd(),
                          "stdin": sys.stdin.read()}))
    """), env={"MY_SETTING": "on"})
    assert outcome.exit_code == 0
    seen = json.loads(outcome.tail[-1])
    assert seen["cwd"] == str(paths.workdir)
    assert seen["stdin"] == ""  # stdin is /dev/null, never the console's
    env = seen["env"]
    assert env["MY_SETTING"] == "on"
    assert env["DSS_TICKET_ID"] == "42"
    assert env["DSS_HOOK"] == str(paths.engine_dir / "hook")
    assert env["DSS_EVENTS"] == str(paths.engine_dir / "events.jsonl")
    assert env["DSS_ABORT_FILE"] == str(paths.engine_dir / "abort")
    assert os.access(env["DSS_HOOK"], os.X_OK)
    assert (paths.engine_dir.stat().st_mode & 0o777) == 0o700


def test_relative_cwd_is_inside_the_workdir(paths: JobPaths) -> None:
    (paths.workdir / "sub").mkdir()
    outcome, _ = run(paths, "pwd", cwd="sub")
    assert outcome.tail == [str(paths.workdir / "sub")]


# -- @dss lines -------------------------------------------------------------------------------


def test_dss_lines_become_typed_reports_in_order(paths: JobPaths) -> None:
    (paths.workdir / "affine.mat").write_text("1 0 0")
    (paths.workdir / "sub").mkdir()
    outcome, got = run(paths, sh("""
        echo "starting"
        echo "@dss progress 0.4"
        echo "@dss progress 0.5 1.0 0.3"
        echo "@dss info 'Affine done'"
        echo "@dss warning low contrast"
        echo "between"
        echo "@dss attach 'Affine matrix' affine.mat text/plain"
        echo "@dss error \\"it failed\\""
        echo "done"
    """), cwd="sub")  # attachments still resolve against the work dir
    assert outcome.exit_code == 0
    assert outcome.last_error == "it failed"
    kinds = [(type(r).__name__, getattr(r, "lines", None)) for r in got.reports]
    assert kinds[0] == ("OutputReport", (("stdout", "starting"),))
    assert got.typed == [
        ProgressReport(0.0, 1.0, 0.4),
        ProgressReport(0.5, 1.0, 0.3),
        MessageReport("info", "Affine done"),
        MessageReport("warning", "low contrast"),
        AttachReport("Affine matrix", (paths.workdir / "affine.mat").resolve(), "text/plain"),
        MessageReport("error", "it failed"),
    ]
    # Output lines keep their place between the reports.
    between = next(i for i, r in enumerate(got.reports)
                   if isinstance(r, OutputReport) and r.lines == (("stdout", "between"),))
    assert isinstance(got.reports[between - 1], MessageReport)
    assert isinstance(got.reports[between + 1], AttachReport)
    assert got.texts == ["starting", "between", "done"]
    # The log keeps the @dss lines too.
    log = outcome.log_path.read_text()
    assert "@dss progress 0.4\n" in log and log.endswith("done\n")


def test_attachments_outside_the_workdir_are_refused(paths: JobPaths, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("x")
    outcome, got = run(paths, sh(f"""
        echo "@dss attach Leak ../secret.txt"
        echo "@dss attach Leak {tmp_path / 'secret.txt'}"
        echo "@dss attach Leak /etc/passwd"
        ln -s {tmp_path / 'secret.txt'} link.txt
        echo "@dss attach Leak link.txt"
    """))
    assert outcome.exit_code == 0
    warnings = got.of(ProtocolWarning)
    assert len(warnings) == 4
    assert all("outside the work dir" in w.text for w in warnings)
    assert not got.of(AttachReport)


def test_malformed_dss_lines_are_warnings_not_output(paths: JobPaths) -> None:
    outcome, got = run(paths, sh("""
        echo "@dss progress lots"
        echo "@dss info \\"unclosed"
        echo "@dss dance"
        echo "@dss attach x missing.txt"
        echo "@dss progress 0.9 0.1 0.5"
        echo "@dssnot a report"
        echo "@dss info real" >&2
    """))
    assert outcome.exit_code == 0
    texts = [w.text for w in got.of(ProtocolWarning)]
    assert len(texts) == 5
    for words, text in zip(["not 'lots'", "No closing quotation", "unknown verb",
                            "no such file", "starts after it ends"], texts, strict=True):
        assert words in text
    # Not @dss lines: "@dssnot", and anything on stderr (two pipes: no order between them).
    assert sorted(got.lines) == [("stderr", "@dss info real"), ("stdout", "@dssnot a report")]
    assert not got.of(MessageReport)


# -- the hook ---------------------------------------------------------------------------------


def test_hook_from_child_grandchild_and_a_cluster_like_environment(paths: JobPaths) -> None:
    (paths.workdir / "qc.png").write_bytes(b"\x89PNG")
    outcome, got = run(paths, sh("""
        "$DSS_HOOK" info "from the child"
        bash -c '"$DSS_HOOK" progress 0 1 0.4' &
        wait
        env -u DSS_EVENTS -u DSS_ABORT_FILE -u DSS_HOOK "$DSS_HOOK" warning "no env"
        export ASHS_HOOK_SCRIPT="$DSS_HOOK"
        bash -c '"$ASHS_HOOK_SCRIPT" info "ashs style"'
        bash "$ASHS_HOOK_SCRIPT" progress 0.5 1 0.5
        mkdir -p elsewhere && cd elsewhere && "$DSS_HOOK" attach "QC" ../qc.png image/png
        "$DSS_HOOK" error "last words"
    """))
    assert outcome.exit_code == 0, outcome.tail
    assert got.typed == [
        MessageReport("info", "from the child"),
        ProgressReport(0.0, 1.0, 0.4),
        MessageReport("warning", "no env"),
        MessageReport("info", "ashs style"),
        ProgressReport(0.5, 1.0, 0.5),
        # A relative path is taken against the work dir, not the caller's cwd: ../qc.png
        # from <workdir>/elsewhere would be qc.png, but against the work dir it is outside.
        got.typed[5],
        MessageReport("error", "last words"),
    ]
    refused = got.typed[5]
    assert isinstance(refused, ProtocolWarning) and "outside the work dir" in refused.text
    assert outcome.last_error == "last words"  # reported just before exit: not lost


def test_ashs_style_unquoted_hook(tmp_path: Path) -> None:
    """ASHS writes `$ASHS_HOOK_SCRIPT ...` and `bash $ASHS_HOOK_SCRIPT ...` unquoted: that
    works as long as the work dir has no white space in its path."""
    workdir = tmp_path / "ticket_00000007"
    workdir.mkdir()
    paths = JobPaths(7, "ASHS", "cd" * 20, workdir, workdir, None, workdir / "r.itksnap",
                     workdir / ".dss")
    outcome, got = run(paths, sh("""
        export ASHS_HOOK_SCRIPT=$DSS_HOOK
        $ASHS_HOOK_SCRIPT info "Affine done"
        bash -c 'bash $ASHS_HOOK_SCRIPT progress 0.2 0.4 1'
        $ASHS_HOOK_SCRIPT attach "Log" $DSS_EVENTS text/plain
    """))
    assert outcome.exit_code == 0, outcome.tail
    assert got.typed == [MessageReport("info", "Affine done"), ProgressReport(0.2, 0.4, 1.0),
                         AttachReport("Log", (paths.engine_dir / "events.jsonl").resolve(),
                                      "text/plain")]


def test_hook_relative_attach_and_a_hint_for_the_wrong_directory(paths: JobPaths) -> None:
    outcome, got = run(paths, sh("""
        echo data > in_workdir.txt
        "$DSS_HOOK" attach "Here" in_workdir.txt
        mkdir -p node && cd node && echo x > local.txt
        "$DSS_HOOK" attach "There" local.txt
    """))
    assert outcome.exit_code == 0
    attach, warning = got.typed
    assert attach == AttachReport("Here", (paths.workdir / "in_workdir.txt").resolve(), None)
    assert isinstance(warning, ProtocolWarning)
    assert "absolute path" in warning.text and "node" in warning.text


def test_bad_events_lines_are_warnings(paths: JobPaths) -> None:
    outcome, got = run(paths, sh("""
        echo 'not json' >> "$DSS_EVENTS"
        echo '{"args": "progress"}' >> "$DSS_EVENTS"
        echo '{"t": 1}' >> "$DSS_EVENTS"
        "$DSS_HOOK" info fine
        printf '{"args": ["info", "no newline"' >> "$DSS_EVENTS"
    """))
    assert outcome.exit_code == 0
    texts = [getattr(r, "text", None) for r in got.typed]
    assert len(texts) == 5
    assert all("bad line in the hook's events file" in t for t in texts[:3])
    assert texts[3] == "fine"
    assert "bad line in the hook's events file" in texts[4]  # a writer died mid-line


def test_hook_aborts_once_the_job_is_stopped(paths: JobPaths) -> None:
    collector = Collector()
    runner = CommandRunner(dss_spec(paths, sh("""
        trap '' TERM
        echo started
        while :; do
            "$DSS_HOOK" progress 0.5 || { echo "hook exit $?"; exit 7; }
            sleep 0.02
        done
    """)), paths, collector, grace_period=20)
    runner.start()
    wait_until(lambda: "started" in collector.texts, what="the command to start")
    runner.terminate("the ticket left claimed (status: failed)")
    outcome = runner.wait(DEADLINE)
    assert outcome is not None
    assert outcome.exit_code == 7  # it ignored SIGTERM and stopped because the hook failed
    assert outcome.stop_reason == "the ticket left claimed (status: failed)"
    assert outcome.tail[-1] == "hook exit 255"
    assert (paths.engine_dir / "abort").read_text().strip() == \
        "the ticket left claimed (status: failed)"


# -- endings ----------------------------------------------------------------------------------


def test_exit_code_and_last_error(paths: JobPaths) -> None:
    outcome, _ = run(paths, sh("""
        echo "@dss error first"
        "$DSS_HOOK" error second
        echo "@dss info not an error"
        echo oops >&2
        exit 3
    """))
    assert (outcome.exit_code, outcome.signal, outcome.stop_reason) == (3, None, None)
    assert outcome.last_error == "second"
    assert "oops" in outcome.tail  # stderr too (no order between the two pipes)
    assert outcome.duration > 0
    assert outcome.log_path == paths.engine_dir / "output.log"


def test_killed_by_a_signal(paths: JobPaths) -> None:
    outcome, _ = run(paths, sh("kill -KILL $$"))
    assert (outcome.exit_code, outcome.signal) == (None, signal.SIGKILL)
    assert outcome.stop_reason is None and outcome.last_error is None


def test_clean_exit_without_output(paths: JobPaths) -> None:
    outcome, got = run(paths, "true")
    assert (outcome.exit_code, outcome.tail, got.reports) == (0, [], [])
    assert outcome.log_path.read_bytes() == b""


def test_tail_is_bounded(paths: JobPaths) -> None:
    outcome, got = run(paths, "seq 1000", tail_lines=50)
    assert outcome.tail == [str(n) for n in range(951, 1001)]
    assert got.texts == [str(n) for n in range(1, 1001)]


def test_partial_last_line_and_crlf(paths: JobPaths) -> None:
    outcome, got = run(paths, sh(r"printf 'dos line\r\n@dss info crlf\r\nno newline'"))
    assert outcome.log_path.read_bytes() == b"dos line\r\n@dss info crlf\r\nno newline"
    assert got.texts == ["dos line", "no newline"]
    assert got.typed == [MessageReport("info", "crlf")]
    assert outcome.tail == ["dos line", "@dss info crlf", "no newline"]


# -- the log and big output -------------------------------------------------------------------


def test_500k_lines(paths: JobPaths) -> None:
    count = 500_000
    started = time.perf_counter()
    outcome, got = run(paths, py(f"""
        import sys
        sys.stdout.writelines("line %d of some output\\n" % i for i in range({count}))
    """))
    elapsed = time.perf_counter() - started
    assert outcome.exit_code == 0
    expected = "".join(f"line {i} of some output\n" for i in range(count)).encode()
    assert outcome.log_path.read_bytes() == expected
    outputs = got.of(OutputReport)
    delivered = sum(len(r.lines) for r in outputs)
    assert delivered + sum(r.skipped for r in outputs) == count
    assert len(outputs) < 2000
    assert len(outcome.tail) == 200 and outcome.tail[-1] == f"line {count - 1} of some output"
    print(f"500k lines: {elapsed:.2f} s, {len(outputs)} OutputReport callbacks, "
          f"{delivered} lines delivered")


def test_a_slow_consumer_gets_every_report_and_a_bounded_backlog(paths: JobPaths) -> None:
    def slow(report: Report) -> None:
        time.sleep(0.002)
        collector(report)

    collector = Collector()
    runner = CommandRunner(dss_spec(paths, py("""
        import sys
        for i in range(200):
            sys.stdout.write("".join("noise %d.%d\\n" % (i, j) for j in range(1000)))
            sys.stdout.write("@dss info report %d\\n" % i)
    """)), paths, slow)
    runner.start()
    outcome = runner.wait(DEADLINE)
    assert outcome is not None and outcome.exit_code == 0
    assert collector.typed == [MessageReport("info", f"report {i}") for i in range(200)]
    outputs = collector.of(OutputReport)
    assert sum(len(r.lines) + r.skipped for r in outputs) == 200_000


def test_a_1mib_line_is_whole_on_disk_and_truncated_in_reports(paths: JobPaths) -> None:
    size = 1 << 20
    outcome, got = run(paths, py(f"""
        import sys
        sys.stdout.write("x" * {size} + "\\n")
        sys.stdout.write("@dss info " + "y" * {size} + "\\n")
        sys.stdout.write("short\\n")
        sys.stderr.write("z" * {size})
    """))
    data = outcome.log_path.read_bytes()
    assert len(data) == 3 * size + len("@dss info \nshort\n") + 1
    assert data.count(b"x") == size and data.count(b"z") == size
    # In order per stream; which stream's end is read first is up to the scheduler.
    texts = [text for stream, text in got.lines if stream == "stdout"]
    assert texts[0].startswith("x" * 1000)
    assert texts[0].endswith(f" … [line truncated, {size} bytes]")
    assert len(texts[0]) < 64 * 1024 + 100
    assert texts[1].startswith("@dss info yyy")  # too long to be parsed as a report
    assert texts[1].endswith(f"[line truncated, {size + 10} bytes]")
    assert texts[2:] == ["short"]
    errors = [text for stream, text in got.lines if stream == "stderr"]
    assert len(errors) == 1 and errors[0].endswith(f"[line truncated, {size} bytes]")
    assert not got.typed


def test_an_endless_line_is_spilled_to_disk_without_growing_memory(paths: JobPaths) -> None:
    size = 5 << 20
    outcome, got = run(paths, py(f"""
        import sys
        for _ in range(5):
            sys.stdout.write("p" * {size // 5})
            sys.stdout.flush()
        sys.stdout.write("\\nafter\\n")
    """), spill_bytes=1 << 20)
    assert outcome.log_path.stat().st_size == size + len("\nafter\n")
    assert got.texts[0].endswith(f"[line truncated, {size} bytes]")
    assert got.texts[1] == "after"


def test_binary_output_is_kept_byte_exact(paths: JobPaths) -> None:
    outcome, got = run(paths, py("""
        import sys
        data = bytes(range(256)) * 4 + b"\\xff\\xfe invalid utf-8 \\xc3\\x28\\n\\x00nul\\n"
        sys.stdout.buffer.write(data)
    """))
    expected = bytes(range(256)) * 4 + b"\xff\xfe invalid utf-8 \xc3\x28\n\x00nul\n"
    assert outcome.log_path.read_bytes() == expected
    assert "\ufffd" in "".join(got.texts)  # replaced in reports only
    assert got.texts[-1] == "\x00nul"


def test_stdout_and_stderr_lines_never_interleave_mid_line(paths: JobPaths) -> None:
    outcome, _ = run(paths, py("""
        import os, threading
        def spew(fd, letter):
            line = (letter * 3000 + "\\n").encode()
            for _ in range(2000):
                os.write(fd, line)
        threads = [threading.Thread(target=spew, args=(1, "o")),
                   threading.Thread(target=spew, args=(2, "e"))]
        for t in threads: t.start()
        for t in threads: t.join()
    """))
    lines = outcome.log_path.read_bytes().split(b"\n")
    assert lines.pop() == b""
    assert len(lines) == 4000
    assert all(line in (b"o" * 3000, b"e" * 3000) for line in lines)


# -- stopping ---------------------------------------------------------------------------------


def test_timeout_kills_the_whole_group(paths: JobPaths) -> None:
    collector = Collector()
    runner = CommandRunner(dss_spec(paths, sh("sleep 1000 & sleep 1000; wait"), timeout=0.5),
                           paths, collector, grace_period=5)
    runner.start()
    pgid = runner.pgid
    assert pgid == runner.pid
    outcome = runner.wait(DEADLINE)
    assert outcome is not None
    assert outcome.stop_reason == "timed out after 0.5 s"
    assert (outcome.exit_code, outcome.signal) == (None, signal.SIGTERM)
    assert 0.4 < outcome.duration < 5
    wait_until(lambda: group_gone(pgid), timeout=2, what="the process group to go")


def test_terminate_is_idempotent_and_kills_grandchildren(paths: JobPaths) -> None:
    collector = Collector()
    runner = CommandRunner(dss_spec(paths, sh("""
        sleep 1000 &
        echo "grandchild $!"
        bash -c 'sleep 1000' &
        sleep 1000
    """)), paths, collector, grace_period=5)
    assert runner.pid is None and not runner.running
    runner.start()
    assert runner.running
    wait_until(lambda: any(t.startswith("grandchild") for t in collector.texts))
    grandchild = int(next(t for t in collector.texts if t.startswith("grandchild")).split()[1])
    pgid = runner.pgid
    assert pgid is not None
    runner.terminate("cancelled by the provider")
    runner.terminate("a second reason")
    outcome = runner.wait(DEADLINE)
    assert outcome is not None
    assert outcome.stop_reason == "cancelled by the provider"
    runner.terminate("after the end")  # harmless
    # Killed grandchildren are reaped by init, not by us: allow it a moment.
    wait_until(lambda: group_gone(pgid) and pid_gone(grandchild), timeout=2,
               what="the process group to go")


def test_sigterm_ignored_means_sigkill_after_the_grace_period(paths: JobPaths) -> None:
    collector = Collector()
    runner = CommandRunner(dss_spec(paths, sh("""
        trap '' TERM
        echo ready
        while :; do sleep 0.05; done
    """)), paths, collector, grace_period=30)
    runner.start()
    wait_until(lambda: "ready" in collector.texts)
    stopped = time.monotonic()
    runner.terminate("stop", grace=0.5)
    outcome = runner.wait(DEADLINE)
    took = time.monotonic() - stopped
    assert outcome is not None
    assert outcome.signal == signal.SIGKILL and outcome.stop_reason == "stop"
    assert 0.5 <= took < 3.0


def test_grandchild_ignoring_sigterm_is_killed_after_the_grace_period(paths: JobPaths) -> None:
    collector = Collector()
    runner = CommandRunner(dss_spec(paths, sh("""
        (trap '' TERM; echo "stubborn $BASHPID"; exec sleep 1000) &
        sleep 1000
    """)), paths, collector, grace_period=1)
    runner.start()
    wait_until(lambda: any(t.startswith("stubborn") for t in collector.texts))
    stubborn = int(next(t for t in collector.texts if t.startswith("stubborn")).split()[1])
    pgid = runner.pgid
    assert pgid is not None
    stopped = time.monotonic()
    runner.terminate("stop")
    outcome = runner.wait(DEADLINE)
    assert outcome is not None
    assert outcome.signal == signal.SIGTERM  # the leader obeyed
    assert 1.0 <= time.monotonic() - stopped < 3.0  # the grandchild had its grace period
    wait_until(lambda: group_gone(pgid) and pid_gone(stubborn), timeout=1,
               what="the stubborn grandchild to go")


def test_leftovers_of_a_finished_command_are_killed(paths: JobPaths) -> None:
    # One holds the output open (a warning), one does not (killed quietly).
    outcome, got = run(paths, sh("""
        sleep 1000 >/dev/null 2>&1 &
        echo "quiet $!"
        sleep 1000 &
        echo done
    """), drain_timeout=0.3)
    assert outcome.exit_code == 0 and outcome.stop_reason is None
    quiet = int(next(t for t in got.texts if t.startswith("quiet")).split()[1])
    [warning] = got.of(ProtocolWarning)
    assert "kept its output open" in warning.text
    wait_until(lambda: pid_gone(quiet), timeout=2, what="the quiet leftover to go")


def test_a_process_outside_the_group_holding_the_pipe_does_not_hang_wait(
        paths: JobPaths) -> None:
    started = time.monotonic()
    outcome, got = run(paths, py("""
        import os, sys, time
        pid = os.fork()
        if pid == 0:
            os.setsid()  # escapes the job's process group, keeps stdout
            time.sleep(1000)
        print("escaped", pid, flush=True)
    """), drain_timeout=0.2)
    escaped = int(next(t for t in got.texts if t.startswith("escaped")).split()[1])
    try:
        assert outcome.exit_code == 0
        assert time.monotonic() - started < 5
        texts = [w.text for w in got.of(ProtocolWarning)]
        assert any("outside the command's process group" in t for t in texts)
    finally:
        os.kill(escaped, signal.SIGKILL)


def test_terminate_before_start(paths: JobPaths) -> None:
    runner = CommandRunner(dss_spec(paths, "true"), paths, Collector())
    runner.terminate("shutting down")
    with pytest.raises(CommandStartError, match="stopped before it started: shutting down"):
        runner.start()


# -- start errors -----------------------------------------------------------------------------


def test_command_not_found(paths: JobPaths) -> None:
    runner = CommandRunner(dss_spec(paths, "no-such-program-dss {ticket}"), paths, Collector())
    with pytest.raises(CommandStartError, match="command not found: no-such-program-dss"):
        runner.start()
    assert runner.pid is None


def test_a_file_in_the_workdir_needs_a_path(paths: JobPaths) -> None:
    (paths.workdir / "run.sh").write_text("#!/bin/sh\n")
    (paths.workdir / "run.sh").chmod(0o755)
    with pytest.raises(CommandStartError, match=r"command not found: run\.sh .*write \./run\.sh"):
        CommandRunner(dss_spec(paths, "run.sh"), paths, Collector()).start()


def test_missing_script_path(paths: JobPaths) -> None:
    with pytest.raises(CommandStartError, match=r"command not found: \./missing\.sh"):
        CommandRunner(dss_spec(paths, "./missing.sh"), paths, Collector()).start()


def test_not_executable(paths: JobPaths) -> None:
    script = paths.workdir / "service.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    with pytest.raises(CommandStartError, match=r"not executable: .*service\.sh.*chmod \+x"):
        CommandRunner(dss_spec(paths, f"{shlex.quote(str(script))} {{ticket}}"), paths,
                      Collector()).start()


def test_a_directory(paths: JobPaths) -> None:
    with pytest.raises(CommandStartError, match=r"not executable: .* is a directory"):
        CommandRunner(dss_spec(paths, "{inputs}"), paths, Collector()).start()


def test_a_script_without_a_shebang(paths: JobPaths) -> None:
    script = paths.workdir / "noshebang"
    script.write_bytes(b"\x7fELF garbage")
    script.chmod(0o755)
    with pytest.raises(CommandStartError, match="not a program this system can run"):
        CommandRunner(dss_spec(paths, "./noshebang"), paths, Collector()).start()


def test_missing_working_directory(paths: JobPaths) -> None:
    with pytest.raises(CommandStartError, match=r"working directory .* does not exist"):
        CommandRunner(dss_spec(paths, "true", cwd="nowhere"), paths, Collector()).start()


def test_path_of_the_command_environment_is_searched(paths: JobPaths) -> None:
    bin_dir = paths.workdir / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "private-tool"
    tool.write_text("#!/bin/sh\necho private tool ran\n")
    tool.chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    outcome, _ = run(paths, "private-tool", env={"PATH": path})
    assert outcome.tail == ["private tool ran"]


def test_on_report_errors_do_not_stop_delivery(paths: JobPaths) -> None:
    seen: list[Report] = []

    def fussy(report: Report) -> None:
        seen.append(report)
        if len(seen) == 1:
            raise RuntimeError("consumer bug")

    runner = CommandRunner(dss_spec(paths, sh('echo "@dss info a"; echo "@dss info b"')), paths,
                           fussy)
    runner.start()
    assert runner.wait(DEADLINE) is not None
    assert seen == [MessageReport("info", "a"), MessageReport("info", "b")]


# -- memory -----------------------------------------------------------------------------------


def test_memory_stays_flat_for_a_million_lines(tmp_path: Path) -> None:
    """Peak RSS of a process running a command that prints 1M lines, against a baseline."""
    code = textwrap.dedent(f"""
        import resource, sys
        from pathlib import Path
        from dss_console.core.command import CommandSpec, JobPaths
        from dss_console.executors.local.process import CommandRunner

        def peak_mib():
            # VmHWM belongs to this program's memory; ru_maxrss on Linux also remembers
            # the parent's size at fork, before exec.
            try:
                with open("/proc/self/status") as status:
                    for line in status:
                        if line.startswith("VmHWM:"):
                            return int(line.split()[1]) // 1024
            except OSError:
                pass
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return rss // 2**20 if sys.platform == "darwin" else rss // 1024

        work = Path({str(tmp_path)!r})
        paths = JobPaths(1, "s", "h", work, work, None, work / "r", work / ".dss")
        base = peak_mib()
        count = [0]
        runner = CommandRunner(CommandSpec(argv=sys.argv[1].split()), paths,
                               lambda r: count.__setitem__(0, count[0] + 1))
        runner.start()
        outcome = runner.wait(60)
        print(base, peak_mib(), count[0], outcome.exit_code)
    """)
    result = subprocess.run([sys.executable, "-c", code, "seq 1000000"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    base, peak, callbacks, exit_code = map(int, result.stdout.split())
    print(f"1M lines: peak RSS {peak} MiB (baseline {base} MiB), {callbacks} callbacks")
    assert exit_code == 0
    assert peak - base < 64
    assert (tmp_path / ".dss" / "output.log").stat().st_size == len(
        "".join(f"{i}\n" for i in range(1, 1_000_001)))


def test_the_command_and_what_it_starts_run_at_a_lower_priority(paths: JobPaths) -> None:
    """The service's nice value applies to the whole process group, grandchildren too."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    code = """
        import os, subprocess, sys
        child = subprocess.run([sys.executable, "-c", "import os; print(os.nice(0))"],
                               capture_output=True, text=True).stdout.strip()
        print("niceness", os.nice(0), child)
        if os.path.exists("/proc/self/autogroup"):
            print("autogroup", open("/proc/self/autogroup").read().split()[-1])
    """
    outcome, collector = run(paths, py(code), nice=7)
    assert outcome.exit_code == 0
    expected = min(19, base + 7)
    assert f"niceness {expected} {expected}" in collector.texts
    if Path("/proc/self/autogroup").exists():
        # Its session's share of the CPU is lowered too (autogroups ignore plain nice).
        assert f"autogroup {expected}" in collector.texts


def test_plain_chunks_and_report_lines_keep_their_order_and_line_ends(paths: JobPaths) -> None:
    """Output without reports is taken a chunk at a time: lines, CRLF ends and the order
    around reports must come out as line by line."""
    outcome, got = run(paths, py("""
        import sys
        out = sys.stdout
        out.write("".join(f"plain {i}\\r\\n" for i in range(3000)))
        out.flush()
        out.write("@dss info middle\\n")
        out.flush()
        out.write("".join(f"after {i}\\n" for i in range(3000)))
    """))
    assert outcome.exit_code == 0
    texts = got.texts
    assert texts[:3000] == [f"plain {i}" for i in range(3000)]  # no \r left
    assert texts[3000:] == [f"after {i}" for i in range(3000)]
    messages = got.of(MessageReport)
    assert [m.text for m in messages] == ["middle"]
    # The report came after every plain line and before every later one.
    order = [r for r in got.reports if isinstance(r, MessageReport | OutputReport)]
    before = sum(len(r.lines) for r in order[:order.index(messages[0])]
                 if isinstance(r, OutputReport))
    assert before == 3000
