"""v6x5_demo_mean: the dss-console 5.x sandbox's demo vantage6 algorithm (dependency-light).

Written with the official vantage6-algorithm-tools 5.x exactly as for a Docker image, so it
runs unchanged under the official wrapper (``wrap_algorithm`` with
``PKG_NAME=v6x5_demo_mean``), in the official 5.x node and in dss-console's node.

A federated computation without session data: the demo CSV ships inside the package, as
data baked into an algorithm's image would (5.x sessions, where a node's data usually comes
from, are not needed to show a run going through the console).

* ``column_mean(column)`` — sum, count and mean of one column of the demo CSV.
* ``fail(message)`` — raises, to show how an algorithm error reaches the researcher.
* ``wait(seconds)`` — sleeps, to try a researcher's kill on a run that is still going.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

from vantage6.algorithm.decorator.action import federated
from vantage6.algorithm.tools.util import info

DEMO_CSV = Path(__file__).with_name("demo.csv")


@federated
def column_mean(column: str = "age") -> dict:
    with DEMO_CSV.open(newline="", encoding="utf-8") as handle:
        values = [float(row[column]) for row in csv.DictReader(handle)
                  if row.get(column) not in (None, "")]
    info(f"column_mean: {len(values)} values in {column!r}")
    total = sum(values)
    return {"sum": total, "count": len(values),
            "mean": total / len(values) if values else None}


@federated
def fail(message: str = "the demo algorithm failed on purpose") -> dict:
    raise RuntimeError(message)


@federated
def wait(seconds: float = 60.0) -> dict:
    info(f"wait: sleeping {seconds} s")
    time.sleep(seconds)
    return {"slept": seconds}
