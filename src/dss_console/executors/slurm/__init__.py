"""Commands submitted to a SLURM cluster with sbatch and followed with squeue/sacct."""

from dss_console.executors.slurm.executor import SlurmExecutor

__all__ = ["SlurmExecutor"]
