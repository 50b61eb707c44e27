"""v6x5_demo: a vantage6 5.x algorithm for the 5.x node's tests, written with the official
vantage6-algorithm-tools 5.0.3 exactly as for a Docker image (run unchanged under
``wrap_algorithm()`` with ``PKG_NAME=v6x5_demo``).

* ``echo(value)`` — a federated computation without data: returns ``{"echo": value}``.
* ``wait(seconds)`` — sleeps (a run still going, for a kill or a worker's crash).
* ``read_csv()`` — ``@data_extraction``: the node's database (a CSV file) as the session's
  dataframe.
* ``junk_output()`` — ``@data_extraction`` that leaves JSON where the node expects
  parquet (an algorithm that does not deliver: the run ends "unexpected output").
* ``read_csv_trying_writes()`` — ``@data_extraction``: ``read_csv``, after trying to write
  beside its database and into the session folder; the dataframe's ``beside_database`` and
  ``session_folder`` columns say ``written`` or ``refused``.
* ``fake_parquet()`` — ``@data_extraction`` that leaves ``PAR1 … PAR1`` with no table.
* ``adults(min_age)`` — ``@preprocessing``: keeps the rows with ``age >= min_age``.
* ``mean(column)`` — ``@dataframe(1) @federated``: the mean and count of a column of the
  requested dataframe.
* ``mean_of_two(column)`` — ``@dataframe(2) @federated``: the means of a column of two
  dataframes (the task's first and second).
* ``means_of_group(column)`` — ``@dataframe("multiple") @federated``: the means of a column
  of every dataframe of the task's one group, by name.
* ``look_around()`` — ``@dataframe(1) @federated``: the rows of its dataframe, and what it
  can list of the session folder and the five folders above it (names only).
* ``scribble()`` — ``@dataframe(1) @federated``: writes a file into the session folder
  (which a node keeps for itself: the write must fail).
"""

from __future__ import annotations

import os
import time

import pandas as pd
from vantage6.algorithm.decorator.action import (
    data_extraction,
    federated,
    preprocessing,
)
from vantage6.algorithm.decorator.data import dataframe
from vantage6.algorithm.tools.util import info


@federated
def echo(value: str = "") -> dict:
    info("echo: answering")
    return {"echo": value}


@federated
def wait(seconds: float = 60.0, value: str = "") -> dict:
    info(f"wait: sleeping {seconds} s")
    time.sleep(seconds)
    return {"slept": seconds, "echo": value}


@data_extraction
def read_csv(connection_details: dict) -> pd.DataFrame:
    info(f"read_csv: a {connection_details['type']} database")
    return pd.read_csv(connection_details["uri"])


@data_extraction
def read_csv_trying_writes(connection_details: dict) -> pd.DataFrame:
    tried = {}
    for where, folder in (("beside_database", os.path.dirname(connection_details["uri"])),
                          ("session_folder", os.environ["SESSION_FOLDER"])):
        try:
            with open(os.path.join(folder, "extraction-was-here"), "w") as out:
                out.write("an extraction writes only its output")
            tried[where] = "written"
        except OSError as exc:
            info(f"read_csv_trying_writes: {where} refused ({type(exc).__name__})")
            tried[where] = "refused"
    frame = pd.read_csv(connection_details["uri"])
    for where, outcome in tried.items():
        frame[where] = outcome
    return frame


@data_extraction
def junk_output(connection_details: dict) -> pd.DataFrame:
    with open(os.environ["OUTPUT_FILE"], "w") as output:  # decoded by the wrapper
        output.write('{"not": "parquet"}')
    os._exit(0)  # before the wrapper would write the table


@data_extraction
def fake_parquet(connection_details: dict) -> pd.DataFrame:
    with open(os.environ["OUTPUT_FILE"], "wb") as output:  # parquet's magic, no table
        output.write(b"PAR1 not a table at all PAR1")
    os._exit(0)  # before the wrapper would write the table


@preprocessing
def adults(df: pd.DataFrame, min_age: int = 18) -> pd.DataFrame:
    return df[df["age"] >= min_age]


@dataframe(1)
@federated
def mean(df: pd.DataFrame, column: str = "age") -> dict:
    info(f"mean: {len(df)} rows")
    return {"mean": float(df[column].mean()), "count": len(df)}


@dataframe(2)
@federated
def mean_of_two(first: pd.DataFrame, second: pd.DataFrame, column: str = "age") -> dict:
    return {"first": float(first[column].mean()), "second": float(second[column].mean()),
            "counts": [len(first), len(second)]}


@dataframe("multiple")
@federated
def means_of_group(frames: dict, column: str = "age") -> dict:
    return {name: float(df[column].mean()) for name, df in frames.items()}


@dataframe(1)
@federated
def look_around(df: pd.DataFrame) -> dict:
    folder = os.path.abspath(os.environ["SESSION_FOLDER"])  # decoded by the wrapper
    listings = []
    for _ in range(6):
        try:
            listings.append(sorted(os.listdir(folder)))
        except OSError as exc:
            listings.append(f"{type(exc).__name__}")
        folder = os.path.dirname(folder)
    return {"rows": len(df), "listings": listings}


@dataframe(1)
@federated
def scribble(df: pd.DataFrame) -> dict:
    target = os.path.join(os.environ["SESSION_FOLDER"], "scribble.parquet")
    with open(target, "w") as out:
        out.write("the node's, not the algorithm's")
    return {"wrote": True}
