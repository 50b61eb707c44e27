"""A real single-node SLURM (munged, slurmctld, slurmd) under one temp dir, for tests and
benchmarks. Needs Debian's `slurmctld slurmd slurm-client munge` packages (dev.sh installs
them) and root (slurmd runs jobs as their owner). See ../shared/slurm-local.md for the facts
this follows."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue")


# What the tests' workers and engines add to reach this cluster quickly: one squeue every
# 0.25 s instead of the default 2 s, so a case does not wait seconds for each state change.
# The benchmarks (benchmarks/slurm.py) keep the default an operator gets.
FAST_POLL = {"DSS_CONSOLE_SLURM_POLL_INTERVAL": "0.25"}


def missing_tools() -> list[str]:
    return [tool for tool in DAEMONS if shutil.which(tool) is None
            and not Path("/usr/sbin", tool).exists()]


def unavailable_reason() -> str | None:
    """Why a test cluster cannot run here (missing packages, not root), or None. Tests fail
    on it when DSS_CONSOLE_REQUIRE_SLURM is set (CI), and skip loudly otherwise."""
    missing = missing_tools()
    if missing:
        return (f"SLURM is not installed here (missing {', '.join(missing)}); ./dev.sh test "
                "installs slurmctld slurmd slurm-client munge when run as root")
    if os.geteuid() != 0:
        return "the test cluster's slurmd runs jobs as their owner and needs root"
    return None


def require_slurm() -> None:
    """In a test: fail (CI, DSS_CONSOLE_REQUIRE_SLURM set) or skip with the reason when no
    test cluster can run here."""
    problem = unavailable_reason()
    if problem is None:
        return
    import pytest

    if os.environ.get("DSS_CONSOLE_REQUIRE_SLURM"):
        pytest.fail(problem)  # CI: never a silent skip
    pytest.skip(problem)


def _tool(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


class SlurmCluster:
    """Start with :meth:`start`, stop with :meth:`stop` (by PID, slurmd first)."""

    def __init__(self, root: Path, cpus: int = 2, min_job_age: int = 300) -> None:
        self.root = root
        self.cpus = cpus
        # Long enough for a test to read a finished job's state from the controller; the
        # "forgotten job" cases use scontrol to purge nothing, so they set their own.
        self.min_job_age = min_job_age
        self.node = socket.gethostname().split(".")[0]
        self.conf = root / "etc" / "slurm.conf"
        self._daemons: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.munge_dir: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        """What a client (sbatch, squeue, the worker) needs to reach this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def start(self, timeout: float = 30.0) -> SlurmCluster:
        root = self.root
        for sub in ("etc", "state", "spool/slurmd", "run", "log"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        # munged wants every directory above its socket open to all (pytest's temp dirs
        # are 0700), so its files live in a world-traversable temp dir of their own.
        munge = self.munge_dir = Path(tempfile.mkdtemp(prefix="dss-munge-"))
        os.chmod(munge, 0o755)
        key = munge / "munge.key"
        subprocess.run([_tool("mungekey"), "--create", f"--keyfile={key}"], check=True,
                       capture_output=True)
        socket_path = munge / "munge.socket.2"
        self._spawn("munged", [_tool("munged"), "--foreground", f"--socket={socket_path}",
                               f"--key-file={key}", f"--log-file={root}/log/munged.log",
                               f"--pid-file={munge}/munged.pid",
                               f"--seed-file={munge}/munged.seed"])
        self._wait(lambda: socket_path.exists(), timeout, "munged's socket")
        ctld_port, slurmd_port = _free_ports(2)
        (root / "etc" / "plugstack.conf").write_text("")
        self.conf.write_text(f"""\
ClusterName=dsstest
SlurmctldHost={self.node}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={socket_path}
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/slurmd
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
PlugStackConfig={root}/etc/plugstack.conf
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
MinJobAge={self.min_job_age}
KillWait=5
NodeName={self.node} CPUs={self.cpus} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=closed Nodes=ALL Default=NO MaxTime=INFINITE State=DOWN
""")
        env = {**os.environ, **self.env}
        self._spawn("slurmctld", [_tool("slurmctld"), "-D", "-f", str(self.conf)], env)
        self._spawn("slurmd", [_tool("slurmd"), "-D", "-f", str(self.conf)], env)
        self._wait(self._node_idle, timeout, "the node to be idle")
        return self

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")  # noqa: SIM115
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    env=env, start_new_session=True)
        finally:
            log.close()
        self._daemons.append((name, proc))

    def _wait(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            for name, proc in self._daemons:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} while waiting "
                                       f"for {what}; see {self.root}/log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}; see {self.root}/log")
            time.sleep(0.1)

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=30,
                              env={**os.environ, **self.env})

    def _node_idle(self) -> bool:
        result = self.run("sinfo", "--noheader", "--partition=debug", "--format=%T")
        return result.returncode == 0 and result.stdout.strip() == "idle"

    def job_state(self, job_id: str) -> str | None:
        result = self.run("squeue", "--noheader", "--states=all", f"--jobs={job_id}",
                          "--format=%T")
        return result.stdout.strip() or None if result.returncode == 0 else None

    def stop(self) -> None:
        # slurmd first (it owns the job steps), then the controller, then munged.
        for _name, proc in sorted(self._daemons, key=lambda d: ("slurmd", "slurmctld",
                                                               "munged").index(d[0])):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._daemons.clear()
        if self.munge_dir is not None:
            shutil.rmtree(self.munge_dir, ignore_errors=True)
            self.munge_dir = None

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
