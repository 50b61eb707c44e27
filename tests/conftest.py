"""Shared fixtures: one real DSS deployment (dss_console.sandbox) for the whole session."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from dss_console.dss import DssClient
from dss_console.sandbox import Sandbox
from dss_console.sources.v6.proxy import RefusingPort
from sandbox_tickets import new_ready_ticket

from slurm_cluster import SlurmCluster, require_slurm

# The vantage6 server, its venv and its researchers, registered here once: a session fixture
# imported into a test module is that module's own (pytest keys a fixture by where it is
# defined), so five modules importing it started five servers that all lived to the end.
from v6_fixtures import researchers, v6_python, v6_sandbox  # noqa: F401
from v6x5_fixtures import v6x5_python, v6x5_researchers, v6x5_sandbox  # noqa: F401

# -- the real server -------------------------------------------------------------------


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """Public + admin DSS servers on 127.0.0.1 sharing one store, seeded with the demo
    provider and service but no tickets: tests create their own (see ``ready_ticket``), so
    a test that claims "the next ticket" does not get another test's leftovers.

    The data dir lives under pytest's basetemp, so the server logs
    (``<data_dir>/logs/*.log``) survive a failed run.
    """
    with Sandbox(data_dir=tmp_path_factory.mktemp("dss-sandbox"), tickets=0) as sb:
        yield sb


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A real single-node SLURM (munged, slurmctld, slurmd), one for the session; fails
    under DSS_CONSOLE_REQUIRE_SLURM=1 when no cluster can run here, else skips."""
    require_slurm()
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


@pytest.fixture
def ready_ticket(sandbox: Sandbox) -> Iterator[int]:
    """A new ``ready`` demo ticket (:func:`new_ready_ticket`)."""
    with new_ready_ticket(sandbox) as ticket_id:
        yield ticket_id


@pytest.fixture
def fresh_token(sandbox: Sandbox) -> str:
    """A one-time login token of test@example.com for the public server (sandbox.url)."""
    return sandbox.fresh_token()


# -- clients -------------------------------------------------------------------------


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[DssClient]:
    """A DssClient logged in to the public server as test@example.com (a provider user)."""
    with DssClient(sandbox.url) as dss:
        dss.login(sandbox.fresh_token())
        yield dss


@pytest.fixture
def claimed_ticket(sandbox: Sandbox, client: DssClient, ready_ticket: int) -> int:
    """`ready_ticket`, claimed by `client`."""
    claimed = client.services.claim(sandbox.service_hash, sandbox.provider, "pytest")
    assert claimed is not None and claimed.ticket_id == ready_ticket
    return ready_ticket


@pytest.fixture(scope="session")
def foreign_service(sandbox: Sandbox) -> str:
    """Hash of a service offered by another provider, which test@example.com is not part of."""
    return sandbox.register_service("ForeignService", "2.0.0", [], provider="otherlab")


@pytest.fixture
def closed_port_url() -> Iterator[str]:
    """A loopback URL where nothing listens (connection refused): the port stays bound for
    the test, so no server of this or the other test process can be given it meanwhile."""
    refusing = RefusingPort()
    try:
        yield f"http://127.0.0.1:{refusing.port}"
    finally:
        refusing.close()


_HOME: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    # GUI tests drive real widgets on the offscreen platform; without it (and no display)
    # Qt aborts the whole run.
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    # Nothing a test does may read or write the user's own settings, sessions or journal
    # (a dialog remembering its last workspace, say): the XDG dirs point at a scratch dir.
    global _HOME
    _HOME = tempfile.mkdtemp(prefix="dss-console-tests-")
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        os.environ[name] = os.path.join(_HOME, name.lower())


def pytest_unconfigure(config: pytest.Config) -> None:
    if _HOME is not None:
        shutil.rmtree(_HOME, ignore_errors=True)


# -- two test processes (pytest-xdist), one of each real server ---------------------------
# The suite runs in two processes (`-n 2`, pyproject.toml): most of its time is spent waiting
# on servers and child processes, not on the two cores. A session fixture is per process, so
# the tests that need the SLURM cluster go to one process, and those that need a vantage6
# server (4.x or 5.x: some need both) to one process (`--dist loadgroup`): each server is
# still started once per run. The DSS sandbox starts in both (about a second).
_GROUP_OF_FIXTURE = (  # the first match wins: the cluster is the one that must stay single
    ("slurm", "slurm"),
    ("v6x5_python", "vantage6"),
    ("v6_python", "vantage6"),
)


def _group(item: pytest.Item) -> str | None:
    names = set(getattr(item, "fixturenames", ()))
    callspec = getattr(item, "callspec", None)
    # The contract suite takes its servers by name at run time (kinds.py): its combination
    # says which.
    for param in ("world", "combination"):
        combination = callspec.params.get(param) if callspec is not None else None
        if combination is None:
            continue
        if param == "world" and combination.executor == "slurm":
            names.add("slurm")
        names.add({"v6": "v6_python", "v6x5": "v6x5_python"}.get(combination.source, ""))
    for fixture, group in _GROUP_OF_FIXTURE:
        if fixture in names:
            return group
    return None


# At collection, before pytest-xdist reads the mark (its own collection hook runs first).
def pytest_itemcollected(item: pytest.Item) -> None:
    group = _group(item)
    if group is not None:
        item.add_marker(pytest.mark.xdist_group(group))
