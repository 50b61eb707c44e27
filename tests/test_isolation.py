"""Commands in the real sandbox (bubblewrap) with real limits (cgroups): what they cannot
touch, what they cannot use, and the words their end gets (dss_console.isolation)."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from dss_console.isolation import (
    Bind,
    Limits,
    Policy,
    PolicyError,
    parse_size,
    policy_from_table,
    probe,
    probe_limits,
    runtime_binds,
    sbatch_limit_options,
    wrap,
)
from dss_console.isolation.relay import SocketForwarder, relay_argv

NO_SANDBOX = probe()
NO_CGROUPS = None if probe_limits().kind in ("cgroup1", "cgroup2") else \
    "no usable cgroup (./dev.sh test runs as root on CI: cgroup v1 or v2 there)"
if os.environ.get("DSS_CONSOLE_REQUIRE_SANDBOX") and (NO_SANDBOX or NO_CGROUPS):
    # CI (.ci/run) must run these, never skip them: say what is missing, loudly.
    raise RuntimeError(f"DSS_CONSOLE_REQUIRE_SANDBOX is set but {NO_SANDBOX or NO_CGROUPS}")
needs_sandbox = pytest.mark.skipif(NO_SANDBOX is not None, reason=str(NO_SANDBOX))
needs_cgroups = pytest.mark.skipif(NO_SANDBOX is not None or NO_CGROUPS is not None,
                                   reason=str(NO_SANDBOX or NO_CGROUPS))

SANDBOX = Policy(isolation="sandbox", network=False)


class Job:
    """A work root with this job's dir (inputs inside), another job's dir and a console
    data dir holding a 0600 secrets file, as the engine lays them out."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.workroot = root / "work"
        self.workdir = self.workroot / "ticket_00000001"
        self.inputs = self.workdir / "inputs"
        self.inputs.mkdir(parents=True)
        (self.inputs / "image.nii").write_text("input data")
        self.other = self.workroot / "ticket_00000002"
        self.other.mkdir()
        (self.other / "patient.nii").write_text("someone else's scan")
        self.data = root / "data"
        self.data.mkdir()
        self.secrets = self.data / "secrets.json"
        fd = os.open(self.secrets, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b'{"api_key": "s3cret"}')
        os.close(fd)

    def run(self, code: str, policy: Policy = SANDBOX, *, limits: Limits | None = None,
            extra: Sequence[Bind] = (),
            hidden: Sequence[Path] = ()) -> subprocess.CompletedProcess[str]:
        argv, env = wrap([sys.executable, "-c", code], os.environ, self.workdir, [self.inputs],
                         policy, [*runtime_binds(), *extra], hidden=hidden)
        prefix = limits.prefix() if limits is not None else []
        return subprocess.run([*prefix, *argv], env=env, capture_output=True, text=True,
                              start_new_session=True, timeout=90, check=False)


@pytest.fixture
def job(tmp_path: Path) -> Job:
    return Job(tmp_path)


@pytest.fixture
def limits_of() -> Iterator[list[Limits]]:
    made: list[Limits] = []
    yield made
    for limits in made:
        limits.close()


# -- policy words ---------------------------------------------------------------------------


def test_settings_words_become_a_policy_and_bad_ones_name_their_key() -> None:
    policy = policy_from_table({"isolation": "sandbox", "network": False, "memory": "8G",
                                "cpus": 2, "processes": 256, "read_only": ["/opt/ashs"],
                                "command": "not a policy key"}, "services.ASHS")
    assert policy == Policy("sandbox", False, 8 * 1024**3, 2.0, 256, ("/opt/ashs",), ())
    assert policy.describe() == "sandbox, no network, memory 8 GiB, 2 CPUs, 256 processes"
    assert parse_size("512M") == 512 * 1024**2
    assert parse_size("1.5G") == 3 * 1024**3 // 2
    assert parse_size("8GiB") == 8 * 1024**3
    # the [defaults] table under an entry: the entry's keys win, the rest is inherited
    base = policy_from_table({"isolation": "sandbox", "memory": "4G"}, "defaults")
    assert policy_from_table({"memory": "512M"}, "v6.algorithms.x", base) == Policy(
        "sandbox", False, 512 * 1024**2)
    # a sandbox has no network unless a table allows it
    assert not base.network and policy_from_table({"network": True}, "x", base).network
    for table, words in [({"memory": "8 gigs"}, "services.ASHS.memory: '8 gigs' is not a size"),
                         ({"memory": 8}, "services.ASHS.memory: 8 is less than 16 MiB"),
                         ({"isolation": "docker"}, "services.ASHS.isolation: 'docker'"),
                         ({"cpus": "2"}, "services.ASHS.cpus: '2' is not a number"),
                         ({"processes": 2.5}, "services.ASHS.processes: 2.5 is not a whole"),
                         ({"read_only": ["opt"]}, "'opt' is not an absolute path"),
                         ({"read_write": ["/"]}, "read_write: \"/\" read-write"),
                         ({"network": "no"}, "services.ASHS.network: 'no' is not true")]:
        with pytest.raises(PolicyError) as caught:
            policy_from_table(table, "services.ASHS")
        assert words in str(caught.value)


def test_limits_map_to_sbatch_options_the_operator_did_not_set() -> None:
    policy = Policy(memory=parse_size("1.5G"), cpus=1.5)
    assert sbatch_limit_options(policy, []) == ["--mem=1536M", "--cpus-per-task=2"]
    assert sbatch_limit_options(policy, ["--mem=4G", "-c4"]) == []
    assert sbatch_limit_options(policy, ["--mem-per-cpu=1G", "--partition=gpu"]) == [
        "--cpus-per-task=2"]
    assert sbatch_limit_options(Policy(), ["--partition=gpu"]) == []


def test_time_limit_words() -> None:
    with Limits(Policy(), "t", timeout=5400) as limits:
        assert limits.end_reason(timed_out=True) == "ran past its time limit: 1h30m"
        assert limits.end_reason() is None


def test_a_missing_bwrap_is_named_with_the_package_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a machine without bwrap on its PATH
    reason = probe()
    assert reason is not None
    assert "bubblewrap (bwrap) is not installed" in reason
    assert "apt install bubblewrap" in reason


# -- what a sandboxed command cannot touch --------------------------------------------------


@needs_sandbox
def test_a_plain_command_runs_and_sees_its_inputs_read_only(job: Job) -> None:
    done = job.run(
        "import os\n"
        "print(open('inputs/image.nii').read())\n"
        "print(os.getcwd(), os.environ['HOME'], os.listdir(os.environ['HOME']))\n"
        "open('result.itksnap', 'w').write('result')\n"
        "try:\n"
        "    open('inputs/image.nii', 'a')\n"
        "except OSError as exc:\n"
        "    print('input write:', exc.strerror)\n")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "input data"
    assert lines[1] == f"{job.workdir} /home/sandbox []"  # an empty HOME, the work dir
    assert lines[2] == "input write: Read-only file system"
    assert (job.workdir / "result.itksnap").read_text() == "result"
    assert (job.inputs / "image.nii").read_text() == "input data"


@needs_sandbox
def test_the_secrets_file_is_out_of_reach_even_under_a_shown_path(job: Job) -> None:
    read = ("import sys\n"
            "try:\n"
            f"    print(open({str(job.secrets)!r}).read())\n"
            "except OSError as exc:\n"
            "    print('refused:', exc.strerror); sys.exit(3)\n")
    done = job.run(read)
    assert (done.returncode, done.stdout.strip()) == (3, "refused: No such file or directory")
    # The operator shows a parent of the data dir read-only; the data dir stays hidden.
    shown = Policy("sandbox", False, read_only=(str(job.root),))
    done = job.run(read, shown, hidden=[job.data])
    assert (done.returncode, done.stdout.strip()) == (3, "refused: No such file or directory")
    # The control: without hiding it, the same command reads it (the test can fail).
    done = job.run(read, shown)
    assert done.stdout.strip() == '{"api_key": "s3cret"}'


@needs_sandbox
def test_writes_outside_the_work_dir_fail(job: Job) -> None:
    targets = ["/usr/evil", "/evil", "/etc/evil", str(job.root / "evil"),
               str(job.workroot / "evil"), "/home/sandbox/../evil"]
    done = job.run(
        "import sys\n"
        f"for path in {targets!r}:\n"
        "    try:\n"
        "        open(path, 'w').write('x'); print(path, 'written')\n"
        "    except OSError as exc:\n"
        "        print(path, exc.strerror)\n"
        "open('mine.txt', 'w').write('ok')\n"
        "open('/tmp/scratch', 'w').write('ok')\n")
    assert done.returncode == 0, done.stderr
    said = dict(line.rsplit(" ", 1) if "written" in line else line.split(" ", 1)
                for line in done.stdout.splitlines())
    for path in targets:
        # The test's tmp dir lies in /tmp, the sandbox's own: a write there stays inside.
        if not path.startswith("/tmp/"):
            assert said[path] == "Read-only file system"
        assert not os.path.exists(path)
    assert (job.workdir / "mine.txt").read_text() == "ok"
    assert not Path("/tmp/scratch").exists()  # its /tmp was its own


@needs_sandbox
def test_another_jobs_dir_cannot_be_listed(job: Job) -> None:
    listing = ("import os, sys\n"
               "try:\n"
               f"    print(sorted(os.listdir({str(job.other)!r})))\n"
               "except OSError as exc:\n"
               "    print('refused:', exc.strerror); sys.exit(3)\n"
               f"print(sorted(os.listdir({str(job.workroot)!r})))\n")
    done = job.run(listing)
    assert (done.returncode, done.stdout.strip()) == (3, "refused: No such file or directory")
    # Even with the whole work root shown, hiding it leaves only this job's own dir.
    shown = Policy("sandbox", False, read_only=(str(job.workroot),))
    done = job.run(listing.replace(str(job.other), str(job.workroot)), shown,
                   hidden=[job.workroot])
    assert done.stdout.splitlines() == ["['ticket_00000001']"] * 2, done.stderr


@needs_sandbox
def test_no_network_means_the_local_servers_port_is_unreachable(job: Job) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(0)
        port = listener.getsockname()[1]
        connect = ("import socket, sys\n"
                   "try:\n"
                   f"    socket.create_connection(('127.0.0.1', {port}), timeout=10)\n"
                   "    print('connected')\n"
                   "except OSError as exc:\n"
                   "    print('refused:', exc.strerror or exc); sys.exit(3)\n")
        done = job.run(connect)
        assert (done.returncode, done.stdout.strip()) == (3, "refused: Connection refused")
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing reached the host's port
        # The control: with network = true the same command gets through.
        done = job.run(connect, Policy("sandbox", True))
        assert done.stdout.strip() == "connected", done.stderr
        listener.accept()[0].close()


# -- what a command cannot use: limits for the whole tree -----------------------------------


@needs_cgroups
def test_a_fork_bomb_stops_at_the_process_limit(job: Job, limits_of: list[Limits]) -> None:
    policy = Policy("sandbox", False, processes=256)
    limits = Limits(policy, "fork-bomb")
    limits_of.append(limits)
    done = job.run(
        "import os, sys, time\n"
        "started = 0\n"
        "try:\n"
        "    for _ in range(10000):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(120); os._exit(0)\n"
        "        started += 1\n"
        "except OSError as exc:\n"
        "    print('fork refused after', started, exc.strerror)\n"
        "sys.exit(3)\n", policy, limits=limits)
    assert done.returncode == 3, done.stderr
    words = done.stdout.split()
    assert words[:3] == ["fork", "refused", "after"], done.stdout
    assert int(words[3]) < 256
    assert limits.end_reason() == "hit its process limit: 256 processes"


@needs_cgroups
def test_allocating_past_the_memory_limit_ends_with_that_reason(
        job: Job, limits_of: list[Limits]) -> None:
    policy = Policy("sandbox", False, memory=parse_size("64M"))
    limits = Limits(policy, "memory")
    limits_of.append(limits)
    done = job.run("chunks = [bytearray(16 * 1024 * 1024) for _ in range(16)]\n"
                   "print('allocated 256 MiB')\n", policy, limits=limits)
    assert "allocated" not in done.stdout
    assert done.returncode == 128 + signal.SIGKILL  # bwrap's way of saying "killed"
    assert limits.end_reason() == "ran out of memory: limit 64 MiB"
    # The control: under the limit the same kind of command finishes with no reason.
    small = Limits(policy, "memory-ok")
    limits_of.append(small)
    done = job.run("chunk = bytearray(16 * 1024 * 1024); print('ok')", policy, limits=small)
    assert (done.returncode, done.stdout.strip()) == (0, "ok")
    assert small.end_reason() is None


@needs_cgroups
def test_a_term_reaches_the_command_through_its_cgroup(job: Job,
                                                       limits_of: list[Limits]) -> None:
    policy = Policy("sandbox", False)  # no limits: the job still gets a cgroup to signal
    limits = Limits(policy, "term")
    limits_of.append(limits)
    argv, env = wrap(["/bin/sh", "-c", "trap 'echo cleaned > term.txt; exit 5' TERM; "
                      "echo started; while :; do sleep 0.1; done"],
                     os.environ, job.workdir, [job.inputs], policy)
    child = subprocess.Popen([*limits.prefix(), *argv], env=env, stdout=subprocess.PIPE,
                             start_new_session=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"started\n"
        assert limits.signal_command(signal.SIGTERM) >= 1
        assert child.wait(timeout=60) == 5
        assert (job.workdir / "term.txt").read_text() == "cleaned\n"
    finally:
        child.kill()
        child.wait()


def test_the_module_needs_no_qt_and_no_engine() -> None:
    import ast

    package = Path(__file__).parent.parent / "src" / "dss_console" / "isolation"
    for source in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(("PySide6", "qasync", "dss_console.engine",
                                            "dss_console.gui", "dss_console.sources.v6")), (
                    f"{source.name}:{node.lineno} imports {name}")


# -- the engine's helpers keep working inside ----------------------------------------------


@needs_sandbox
def test_the_hook_reports_from_inside_the_sandbox(job: Job) -> None:
    from dss_console.engine.hook import write_hook_script

    engine_dir = job.workdir / ".dss"
    engine_dir.mkdir(mode=0o700)
    events = engine_dir / "events.jsonl"
    events.touch(mode=0o600)  # the runner makes it before the start
    hook = write_hook_script(engine_dir, events, engine_dir / "abort")
    argv, env = wrap(["/bin/sh", "-c", '"$DSS_HOOK" info "inside the sandbox" && '
                      '"$DSS_HOOK" progress 0.5 && echo "@dss progress 0.75"'],
                     {**os.environ, "DSS_HOOK": str(hook), "DSS_EVENTS": str(events)},
                     job.workdir, [job.inputs], SANDBOX, runtime_binds())
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "@dss progress 0.75\n"
    text = events.read_text()
    assert "inside the sandbox" in text and "0.5" in text


@needs_sandbox
def test_without_network_a_v6_algorithm_still_reaches_the_local_proxy_and_only_it(
        job: Job) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Proxy(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"proxy saw {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    port = proxy.server_address[1]
    try:
        with socket.socket() as other, SocketForwarder(port) as forwarder:
            other.bind(("127.0.0.1", 0))  # the DSS server's port, say
            other.listen(8)
            code = (
                "import socket, sys, urllib.request\n"
                f"print(urllib.request.urlopen('http://127.0.0.1:{port}/task?x=1',"
                " timeout=30).read().decode())\n"
                "try:\n"
                f"    socket.create_connection(('127.0.0.1', {other.getsockname()[1]}),"
                " timeout=10)\n"
                "    print('other port reached')\n"
                "except OSError as exc:\n"
                "    print('other port:', exc.strerror)\n"
                "sys.exit(4)\n")
            argv, env = wrap(relay_argv(port, [sys.executable, "-c", code]), os.environ,
                             job.workdir, [job.inputs], SANDBOX,
                             [*runtime_binds(), forwarder.bind])
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=90,
                                  check=False)
            assert done.stdout.splitlines() == ["proxy saw /task?x=1",
                                                "other port: Connection refused"], done.stderr
            assert done.returncode == 4  # the command's own exit status, through the relay
            # The command's stderr (its log) carries nothing of the relay's own.
            assert done.stderr == "", done.stderr
    finally:
        proxy.shutdown()
        proxy.server_close()


def _engine_files(job: Job) -> dict[str, str]:
    """The job's hook and events file as the runner makes them, and its DSS_* variables."""
    from dss_console.engine.hook import write_hook_script

    engine_dir = job.workdir / ".dss"
    engine_dir.mkdir(mode=0o700, exist_ok=True)
    events = engine_dir / "events.jsonl"
    events.touch(mode=0o600)
    hook = write_hook_script(engine_dir, events, engine_dir / "abort")
    return {"DSS_HOOK": str(hook), "DSS_EVENTS": str(events), "DSS_TICKET_ID": "1",
            "DSS_WORKDIR": str(job.workdir)}


@needs_cgroups
def test_the_demo_service_succeeds_inside_with_limits(job: Job,
                                                      limits_of: list[Limits]) -> None:
    from dss_console.resources.demo_service import demo_service_command
    from dss_console.sandbox.demo import make_demo_ticket_files

    workspace = make_demo_ticket_files(job.inputs, 1)[0]
    result = job.workdir / "result.itksnap"
    argv = [word.format(workspace=str(workspace), result=str(result))
            for word in shlex.split(demo_service_command())]
    policy = Policy("sandbox", False, memory=parse_size("512M"), cpus=1, processes=64)
    limits = Limits(policy, "demo")
    limits_of.append(limits)
    variables = _engine_files(job)
    wrapped, env = wrap(argv, {**os.environ, **variables}, job.workdir, [job.inputs], policy,
                        runtime_binds())
    done = subprocess.run([*limits.prefix(), *wrapped], env=env, capture_output=True,
                          text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert result.is_file()
    assert "@dss info \"Otsu threshold: " in done.stdout  # reports still on stdout
    assert "QC report" in Path(variables["DSS_EVENTS"]).read_text()  # and through the hook
    assert limits.end_reason() is None
    peak = limits.peak_memory()
    assert peak is not None and 1024**2 < peak < parse_size("512M")


@needs_sandbox
def test_an_itksnap_wt_script_works_inside(job: Job) -> None:
    from dss_console.sandbox.demo import make_demo_ticket_files
    from dss_console.wt.shim import write_shim

    workspace = make_demo_ticket_files(job.inputs, 1)[0]
    variables = _engine_files(job)
    shim_dir = write_shim(job.workdir / ".dss" / "bin").parent
    script = ('set -e\n'
              'itksnap-wt -dssp-tickets-log "$DSS_TICKET_ID" info "script started"\n'
              f'T1=$(itksnap-wt -P -i {shlex.quote(str(workspace))} -llf T1-MRI)\n'
              'cp "$T1" seg.nii.gz\n'
              f'itksnap-wt -i {shlex.quote(str(workspace))} -las seg.nii.gz -psn Hippocampus '
              '-o final.itksnap\n'
              'echo done\n')
    env = {**os.environ, **variables, "PATH": f"{shim_dir}{os.pathsep}{os.environ['PATH']}"}
    argv, env = wrap(["/bin/sh", "-c", script], env, job.workdir, [job.inputs], SANDBOX,
                     runtime_binds())
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=90,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "done"
    assert (job.workdir / "final.itksnap").is_file()
    assert "script started" in Path(variables["DSS_EVENTS"]).read_text()
