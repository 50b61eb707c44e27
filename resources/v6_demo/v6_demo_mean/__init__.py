"""v6_demo_mean: the dss-console sandbox's demo vantage6 algorithm (dependency-light).

Written with the official ``vantage6.algorithm.tools`` exactly as for a Docker image, so it
runs unchanged under the official wrapper (``wrap_algorithm`` with ``PKG_NAME=v6_demo_mean``)
both in the official node and in dss-console's local-command node.

* ``column_mean(df, column)`` — partial: sum and count of one column of this node's data.
* ``central_mean(client, column, organizations=None)`` — central: a ``column_mean`` subtask
  for each organization (default: this node's own organization), then the mean.
* ``fail(message)`` — raises, to show how an algorithm error reaches the researcher.
* ``wait(seconds)`` — sleeps, to try a researcher's kill on a run that is still going.
"""

from __future__ import annotations

import time
from typing import Any

from vantage6.algorithm.tools.decorators import algorithm_client, data
from vantage6.algorithm.tools.util import info


@data(1)
def column_mean(df: Any, column: str) -> dict:
    values = df[column].dropna()
    info(f"column_mean: {len(values)} values in {column!r}")
    return {"sum": float(values.sum()), "count": int(values.count())}


@algorithm_client
def central_mean(client: Any, column: str, organizations: list[int] | None = None) -> dict:
    if not organizations:
        organizations = [client.organization_id]
    info(f"central_mean: subtasks for organizations {organizations}")
    task = client.task.create(
        input_={"method": "column_mean", "kwargs": {"column": column}},
        organizations=organizations,
        name="column_mean subtask",
    )
    partials = client.wait_for_results(task_id=task["id"], interval=0.2)
    total = sum(p["sum"] for p in partials)
    count = sum(p["count"] for p in partials)
    return {"mean": total / count if count else None, "count": count,
            "organizations": len(partials)}


def fail(message: str = "the demo algorithm failed on purpose") -> None:
    raise RuntimeError(message)


def wait(seconds: float = 60.0) -> dict:
    info(f"wait: sleeping {seconds} s")
    time.sleep(seconds)
    return {"slept": seconds}
