"""Issue 19: each executor words what a service's isolation and limit keys mean for it, for
the window's services list and a job's detail (Executor.describe_options)."""

from __future__ import annotations

from dss_console.executors.local.executor import WEAK_LIMITS, LocalExecutor
from dss_console.executors.slurm.executor import SlurmExecutor

FULL = {"isolation": "sandbox", "network": False, "memory": "8G", "cpus": 2,
        "processes": 256, "read_only": ["/opt/ashs"]}


def test_the_local_executor_words_its_sandbox_and_limits() -> None:
    executor = LocalExecutor()
    # Limits bind the whole tree with a cgroup; with prlimit only, the words say so.
    weak = executor.host.limits_support().kind == "prlimit"
    note = f" ({WEAK_LIMITS})" if weak else ""
    assert executor.describe_options(executor.own_options(FULL)) == \
        "sandbox, no network, memory 8 GiB, 2 CPUs, 256 processes" + note
    assert executor.describe_options({}) == "no isolation"
    assert executor.describe_options({"isolation": "none"}) == "no isolation"
    assert executor.describe_options({"isolation": "sandbox"}) == "sandbox, no network"
    assert executor.describe_options({"memory": "64M", "cpus": 0.5}) == \
        "no isolation, memory 64 MiB, 0.5 CPUs" + note
    # Options the settings reader would refuse still get words, not an exception.
    assert "isolation" in executor.describe_options({"isolation": "docker"})


def test_the_slurm_executor_words_the_limits_it_submits_and_leaves_isolation_to_the_cluster(
        ) -> None:
    executor = SlurmExecutor()
    assert executor.describe_options(executor.own_options(FULL)) == \
        "on the cluster: memory 8 GiB, 2 CPUs"
    # As submitted: --cpus-per-task is a whole number, --mem whole MiB.
    assert executor.describe_options({"memory": "1.5G", "cpus": 1.5}) == \
        "on the cluster: memory 1.5 GiB, 2 CPUs"
    assert executor.describe_options({"cpus": 1}) == "on the cluster: 1 CPU"
    # The operator's own sbatch options win, and the words say whose they are.
    assert executor.describe_options(
        {"memory": "8G", "cpus": 2, "sbatch_options": ["--mem=4G", "-c", "4"]}) == \
        "on the cluster: memory as its sbatch options say, CPUs as its sbatch options say"
    assert executor.describe_options({"sbatch_options": ["--partition=short"]}) == \
        "on the cluster: its own isolation and limits"
    assert "sandbox" not in executor.describe_options(executor.own_options(
        {"isolation": "sandbox", "memory": "64M"}))
