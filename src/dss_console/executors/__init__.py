"""Executor plug-ins: one folder per way of running a job's command."""

from __future__ import annotations

from dss_console.core.executor import Executor


def default_executors() -> dict[str, Executor]:
    """Every executor by the name a service's ``executor`` setting gives (one instance
    per engine: the SLURM one keeps a monitor for all the engine's cluster jobs)."""
    from dss_console.executors.local import LocalExecutor
    from dss_console.executors.slurm import SlurmExecutor

    return {LocalExecutor.name: LocalExecutor(), SlurmExecutor.name: SlurmExecutor()}
