"""v6x5_demo: a vantage6 5.x algorithm for the 5.x node's tests, written with the official
vantage6-algorithm-tools 5.0.3 exactly as for a Docker image (run unchanged under
``wrap_algorithm()`` with ``PKG_NAME=v6x5_demo``).

* ``echo(value)`` — a federated computation without data: returns ``{"echo": value}``.
* ``wait(seconds)`` — sleeps (a run still going, for a kill or a worker's crash).
* ``read_csv()`` — ``@data_extraction``: the node's database (a CSV file) as the session's
  dataframe.
* ``junk_output()`` — ``@data_extraction`` that leaves JSON where the node expects
  parquet (an algorithm that does not deliver: the run ends "unexpected output").
* ``adults(min_age)`` — ``@preprocessing``: keeps the rows with ``age >= min_age``.
* ``mean(column)`` — ``@dataframe(1) @federated``: the mean and count of a column of the
  requested dataframe.
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
def junk_output(connection_details: dict) -> pd.DataFrame:
    with open(os.environ["OUTPUT_FILE"], "w") as output:  # decoded by the wrapper
        output.write('{"not": "parquet"}')
    os._exit(0)  # before the wrapper would write the table


@preprocessing
def adults(df: pd.DataFrame, min_age: int = 18) -> pd.DataFrame:
    return df[df["age"] >= min_age]


@dataframe(1)
@federated
def mean(df: pd.DataFrame, column: str = "age") -> dict:
    info(f"mean: {len(df)} rows")
    return {"mean": float(df[column].mean()), "count": len(df)}
