"""What a cluster job's details say, for the journal and the window (one place for the
words the table, its tooltip and the job's detail show)."""

from __future__ import annotations

from dss_console.core.executor import DetailValue, ExecutorDetails

__all__ = ["NAME", "NOT_SUBMITTED", "UNREACHABLE", "describe"]

NAME = "slurm"
NOT_SUBMITTED = "not submitted yet"
UNREACHABLE = f"{NOT_SUBMITTED}: the SLURM controller does not answer"


def describe(job_id: str | None, state: str | None, node: str | None, *,
             queued_at: float | None = None, running_at: float | None = None
             ) -> ExecutorDetails:
    """A cluster job as the window shows it: 'SLURM 1234 · PENDING (Resources)',
    'SLURM 1234 · RUNNING on node7', 'SLURM · not submitted yet' (``state`` None: the job
    runs here and sbatch was not called yet), with the whole of it in ``lines``."""
    if state is None and not job_id:
        state = NOT_SUBMITTED
    short = state.split(":", 1)[0] if state and ":" in state and not job_id else state
    on_node = bool(node) and bool(state) and not str(state).startswith("PENDING")
    label = "SLURM" + (f" {job_id}" if job_id else "") + (f" · {short}" if short else "") \
        + (f" on {node}" if on_node else "")
    what = f"SLURM job {job_id}" if job_id else "SLURM"
    summary = what + (f" · {state}" if state else "")
    if node:
        summary += f" on {node}" if on_node else f" (node {node})"
    lines = [f"SLURM job {job_id}" if job_id else "SLURM cluster job"]
    if state:
        lines.append(f"State: {state}")
    if node:
        lines.append(f"Node: {node}")
    waiting = running_at is None and not (state or "").startswith(
        ("RUNNING", "COMPLETING", "COMPLETED"))
    data: dict[str, DetailValue] = {"cluster_job": job_id, "cluster_state": state,
                                    "cluster_node": node}
    return ExecutorDetails(NAME, label=label, summary=summary, waiting=waiting,
                           queued_at=queued_at, running_at=running_at, lines=tuple(lines),
                           ref=job_id, host=node or None, data=data)
