"""A vantage6 5.x node's runs in the window: the 4.x node's words (sources/v6/presentation.py)
and an "Action" column (what a 5.x run does: extraction, preprocessing, compute), with the
words for the statuses only a 5.x run ends with."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from dss_console.core.presentation import Cells, ColumnSpec, Summary
from dss_console.sources.v6.presentation import PRESENTATION as V6_PRESENTATION
from dss_console.sources.v6.presentation import run_cells as v6_run_cells
from dss_console.sources.v6.presentation import run_summary as v6_run_summary

# A 5.x run's action, as the operator reads it.
ACTION_WORDS = {
    "data_extraction": "data extraction",
    "preprocessing": "preprocessing",
    "federated_compute": "federated compute",
    "central_compute": "central compute",
    "postprocessing": "postprocessing",
}

# The statuses only a 5.x run ends with, as the node operator reads them.
STATUS_WORDS = {
    "dataframe not found": "a dataframe the task asks for is not in its session on this node",
    "unexpected output": "an extraction or preprocessing run wrote no table (parquet)",
}

_ACTION = ColumnSpec("action", "Action", "What the run does in its session: data extraction, "
                     "preprocessing, or a computation on the session's dataframes")

PRESENTATION = dataclasses.replace(
    V6_PRESENTATION, source="v6x5", title="vantage6 5.x node",
    job_columns=(*V6_PRESENTATION.job_columns[:2], _ACTION,
                 *V6_PRESENTATION.job_columns[2:]))


def run_cells(details: Mapping[str, Any]) -> Cells:
    action = str(details.get("action") or "")
    return {**v6_run_cells(details), "action": ACTION_WORDS.get(action, action)}


def run_summary(image: str, details: Mapping[str, Any]) -> Summary:
    summary = v6_run_summary(image, details)
    rows = list(summary.fields)
    action = str(details.get("action") or "")
    if action:
        rows.insert(1, ("Action", ACTION_WORDS.get(action, action)))
    if details.get("session_id") is not None:
        rows.insert(2, ("Session", str(details["session_id"])))
    return dataclasses.replace(summary, fields=tuple(rows))
