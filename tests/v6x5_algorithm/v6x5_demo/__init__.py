"""v6x5_demo: a vantage6 5.x algorithm for the 5.x node's tests, written with the official
vantage6-algorithm-tools 5.0.3 exactly as for a Docker image (run unchanged under
``wrap_algorithm()`` with ``PKG_NAME=v6x5_demo``). No session data: plan step 5.

* ``echo(value)`` — a federated computation without data: returns ``{"echo": value}``.
* ``wait(seconds)`` — sleeps (a run still going, for a kill or a worker's crash).
"""

from __future__ import annotations

import time

from vantage6.algorithm.decorator.action import federated
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
