"""The window's bridge to the sources' presentations, until the engine sends them.

Temporary (issue 18, step 10): the engine's ``info`` will carry the Presentation and each
snapshot its cells; then this module goes and gui/ imports no plug-in.
"""

from __future__ import annotations

from dss_console.core.presentation import Cells, Presentation, Summary
from dss_console.engine.events import JobSnapshot
from dss_console.sources.dss.presentation import PRESENTATION as DSS_PRESENTATION
from dss_console.sources.v6.presentation import PRESENTATION as V6_PRESENTATION
from dss_console.sources.v6.presentation import run_cells, run_summary

_BY_SOURCE = {p.source: p for p in (DSS_PRESENTATION, V6_PRESENTATION)}


def default_presentation() -> Presentation:
    return DSS_PRESENTATION


def presentation_for(source: str) -> Presentation:
    return _BY_SOURCE[source]


def job_cells(job: JobSnapshot) -> Cells:
    """A job's values for its source's own columns."""
    return run_cells(job.details) if job.details.get("task_id") is not None else {}


def job_summary(job: JobSnapshot) -> Summary:
    """A job's inputs as the engine learnt them, for a source whose inputs_view is
    "summary"."""
    return run_summary(job.service_hash, job.details)
