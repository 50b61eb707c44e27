"""The window's access to its sources' presentations.

The engine sends its source's :class:`Presentation` in the channel's info and each job's
view with its snapshot; the registry's presentations serve only before an engine runs (the
login form's choice of source decides the window's words meanwhile).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from dss_console import plugins
from dss_console.core.presentation import Cells, Presentation, Summary
from dss_console.engine.events import JobSnapshot


def default_presentation() -> Presentation:
    """The first registered source's: the login form's first choice."""
    return plugins.presentation(next(iter(plugins.SOURCE_PRESENTATIONS)))


def presentation_for(source: str) -> Presentation:
    return plugins.presentation(source)


def family_presentation(members: Sequence[str]) -> Presentation:
    """What the window shows for a family of sources (plugins.SOURCE_FAMILIES) before the
    server says which member serves it: the first member's presentation with only the job
    columns every member shows alike (a column one member lacks would stay empty, or one it
    names otherwise would be wrong), in the first member's order."""
    first = plugins.presentation(members[0])
    others = [plugins.presentation(member) for member in members[1:]]
    shared = tuple(column for column in first.job_columns
                   if all(column in other.job_columns for other in others))
    return first if shared == first.job_columns else dataclasses.replace(
        first, job_columns=shared)


def job_cells(job: JobSnapshot) -> Cells:
    """A job's values for its source's own columns, as the engine sent them."""
    return job.view.cells if job.view is not None else {}


def job_summary(job: JobSnapshot) -> Summary | None:
    """A job's inputs as the engine learnt them (a source whose inputs_view is "summary")."""
    return job.view.summary if job.view is not None else None


def job_inputs_dir(job: JobSnapshot) -> Path | None:
    """Where the engine keeps the job's fetched inputs (None: it did not say)."""
    return Path(job.view.inputs_dir) if job.view is not None and job.view.inputs_dir else None
