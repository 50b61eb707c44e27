"""v6x5_central: a vantage6 5.x central algorithm for the 5.x node's tests, written with the
official vantage6-algorithm-tools 5.0.3 exactly as for a Docker image (run unchanged under
``wrap_algorithm()`` with ``PKG_NAME=v6x5_central``). It needs no dataframe: the numbers
travel in the arguments, so it runs on a node without session data.

* ``central_sum(values, organizations=None)`` — ``@central``: through ``AlgorithmClient``
  (the node's subtask proxy, ``CONTAINER_TOKEN``) creates one ``partial_sum`` subtask for the
  given organizations (default: its own), waits for their results and adds them up.
* ``partial_sum(values)`` — ``@federated``: the sum and count of the values.
"""

from __future__ import annotations

from vantage6.algorithm.client import AlgorithmClient
from vantage6.algorithm.decorator.action import central, federated
from vantage6.algorithm.decorator.algorithm_client import algorithm_client
from vantage6.algorithm.tools.util import info


@central
@algorithm_client
def central_sum(client: AlgorithmClient, values: list[float],
                organizations: list[int] | None = None) -> dict:
    targets = organizations or [client.organization_id]
    info(f"central_sum: one subtask for {len(targets)} organization(s)")
    task = client.task.create(method="partial_sum", arguments={"values": values},
                              organizations=targets, name="partial sums")
    partials = client.wait_for_results(task["id"])
    info(f"central_sum: {len(partials)} partial result(s)")
    return {"sum": sum(p["sum"] for p in partials),
            "count": sum(p["count"] for p in partials),
            "organizations": len(partials), "subtask": task["id"]}


@federated
def partial_sum(values: list[float]) -> dict:
    info("partial_sum: adding up")
    return {"sum": sum(values), "count": len(values)}
