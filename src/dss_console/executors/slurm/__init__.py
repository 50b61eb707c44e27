"""Commands submitted to a SLURM cluster with sbatch and followed with squeue/sacct."""
