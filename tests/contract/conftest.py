"""Fixtures of the contract suite: the real servers and cluster each kind needs, taken only
when a case of that kind runs (``-k dss`` starts no vantage6 server), and ``world``, the
case's adapter for one source × executor combination (kinds.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kinds import COMBINATIONS, EXECUTORS, RUNNABLE, SOURCES, Combination, World

from dss_console.sources.v6.sandbox import V6Sandbox

from slurm_cluster import SlurmCluster, require_slurm
from v6_fixtures import Researcher


# Module scope: the contract module's servers and cluster end with it, so a whole-suite run
# never keeps two vantage6 servers or two SLURM clusters (test_v6_*, test_slurm.py own
# theirs) at once.
@pytest.fixture(scope="module")
def contract_v6(v6_python: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[V6Sandbox]:
    with V6Sandbox(data_dir=tmp_path_factory.mktemp("contract-v6")) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def contract_researcher(v6_python: Path, contract_v6: V6Sandbox) -> Iterator[Researcher]:
    researcher = Researcher(v6_python, contract_v6, "demo")
    yield researcher
    researcher.close()


@pytest.fixture(scope="module")
def contract_slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    require_slurm()  # fails under DSS_CONSOLE_REQUIRE_SLURM=1 when no cluster can run here
    with SlurmCluster(tmp_path_factory.mktemp("contract-slurm")) as cluster:
        yield cluster


def _world(request: pytest.FixtureRequest, combination: Combination, tmp_path: Path, *,
           run: bool = True) -> World:
    source = SOURCES[combination.source]()
    executor = EXECUTORS[combination.executor]()
    source.open(request)
    if run:  # reading the settings needs no cluster
        executor.open(request)
    return World(source, executor, tmp_path)


@pytest.fixture(params=RUNNABLE, ids=lambda c: c.id)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """A source × executor combination the settings accept, ready for a case."""
    made = _world(request, request.param, tmp_path)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(params=COMBINATIONS, ids=lambda c: c.id)
def combination(request: pytest.FixtureRequest, tmp_path: Path
                ) -> tuple[Combination, World]:
    """Every combination, with the words its settings refuse it with (None: accepted)."""
    return request.param, _world(request, request.param, tmp_path, run=False)

