"""The jobs table's column positions before a source is known (the DSS presentation)."""

from __future__ import annotations

from dss_console.gui.jobs_model import DEFAULT_PRESENTATION

DSS_COLUMNS = [column.id for column in DEFAULT_PRESENTATION.job_columns]


def col(column_id: str) -> int:
    return DSS_COLUMNS.index(column_id)
