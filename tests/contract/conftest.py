"""Fixtures of the contract suite: the real servers and cluster each kind needs, taken only
when a case of that kind runs (``-k dss`` starts no vantage6 server), and ``world``, the
case's adapter for one source × executor combination (kinds.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kinds import COMBINATIONS, EXECUTORS, RUNNABLE, SOURCES, Combination, World

from dss_console.sources.v6.sandbox import V6Sandbox
from dss_console.sources.v6x5.sandbox import HqSandbox

from slurm_cluster import SlurmCluster
from v6_fixtures import Researcher
from v6x5_fixtures import HqResearcher


# The session's vantage6 server, researcher and SLURM cluster (conftest.py), the ones the
# per-source tests use: one of each per run, started by whichever test needs it first.
@pytest.fixture
def contract_v6(v6_sandbox: V6Sandbox) -> V6Sandbox:
    return v6_sandbox


@pytest.fixture
def contract_researcher(researchers: dict[str, Researcher]) -> Researcher:
    return researchers["demo"]


@pytest.fixture
def contract_v6x5(v6x5_sandbox: HqSandbox) -> HqSandbox:
    return v6x5_sandbox


@pytest.fixture
def contract_v6x5_researcher(v6x5_researchers: dict[str, HqResearcher]) -> HqResearcher:
    return v6x5_researchers["demo"]


@pytest.fixture
def contract_slurm(slurm: SlurmCluster) -> SlurmCluster:
    return slurm


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

