"""A vantage6 5.x node's sessions under isolation, and a task on two dataframes, through the
real `dss-console worker --source v6` (the session's HQ 5.0.3, the official 5.0.3 client as
researcher, `tests/v6x5_algorithm` unmodified under the official wrapper).

The demo algorithm runs in the sandbox without network (bubblewrap): an extraction reads its
CSV (shown read-only) and writes only its output (a write beside its database or into the
session folder fails); a ``@dataframe`` run sees its session folder read-only and nothing
else of the node's data dir; a write into ``SESSION_FOLDER`` fails and the run ends
``crashed``. ``@dataframe(2)`` reads two dataframes the task gives at positions 0 and 1
(``USER_REQUESTED_DATAFRAMES`` "a;b"), ``@dataframe("multiple")`` two in one group ("a,b").
A researcher's delete is noted in ``session_state.parquet``, as the official node notes it.

One module-scoped worker; the tests run in file order (the delete comes last).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dss_console.isolation import probe, probe_limits
from dss_console.sources.v6.settings import new_algorithm_policy
from dss_console.sources.v6x5.sandbox import HqSandbox
from test_v6_worker import Worker
from test_v6x5_sessions_worker import _client, _frame_file, _station_ended
from test_v6x5_worker import DEMO_IMAGE, NODE, _env

from v6_fixtures import SERVER_TEST_TIMEOUT
from v6x5_fixtures import HqResearcher, log_in_v6x5_home, v6x5_algorithm_root
from waiting import wait_for

NO_SANDBOX = probe() or (None if probe_limits().kind in ("cgroup1", "cgroup2")
                         else "no usable cgroup")
if os.environ.get("DSS_CONSOLE_REQUIRE_SANDBOX") and NO_SANDBOX:
    raise RuntimeError(f"DSS_CONSOLE_REQUIRE_SANDBOX is set but {NO_SANDBOX}")
pytestmark = [pytest.mark.timeout(SERVER_TEST_TIMEOUT),
              pytest.mark.skipif(NO_SANDBOX is not None, reason=str(NO_SANDBOX))]

PEOPLE = "age,weight\n31,70.5\n52,81.0\n17,55.25\n"    # age mean 100/3
OLDER = "age,weight\n60,80.0\n70,75.0\n"                # age mean 65
TAG = os.getpid()  # dataframe names are unique across HQ

_READ_STATE = """
import json, sys
import pyarrow.parquet as pq
print(json.dumps(pq.read_table(sys.argv[1]).to_pylist()))
"""


@pytest.fixture(scope="module")
def home(v6x5_sandbox: HqSandbox, v6x5_python: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A node operator's machine: the 5.x node logged in, two CSV databases, the demo
    algorithm in the sandbox without network, as a new entry is written."""
    path = tmp_path_factory.mktemp("v6x5-contained-home")
    (path / "people.csv").write_text(PEOPLE)
    (path / "older.csv").write_text(OLDER)
    demo: dict[str, Any] = {"python": str(v6x5_python), "package": "v6x5_demo",
                            "env": {"PYTHONPATH": str(v6x5_algorithm_root())},
                            "read_only": [str(v6x5_algorithm_root())],
                            **new_algorithm_policy()}
    assert demo["isolation"] == "sandbox" and demo["network"] is False
    table: dict[str, Any] = {
        "send_output_tail": True, "algorithms": {DEMO_IMAGE: demo},
        "databases": {"default": {"uri": str(path / "people.csv"), "type": "csv"},
                      "older": {"uri": str(path / "older.csv"), "type": "csv"}}}
    log_in_v6x5_home(path, table, v6x5_sandbox, NODE, _env(path))
    return path


@pytest.fixture(scope="module")
def worker(home: Path, v6x5_sandbox: HqSandbox) -> Iterator[Worker]:
    made = Worker(home, v6x5_sandbox.url, NODE, "--concurrency", "1")
    try:
        made.wait_line(r"worker .* on .*#node-\d+")
        yield made
    finally:
        code = made.stop()
        assert code == 0, made.output
        assert "Traceback" not in made.output, made.output


@pytest.fixture
def researcher(v6x5_researchers: dict[str, HqResearcher]) -> HqResearcher:
    return v6x5_researchers["demo"]


def _extract(researcher: HqResearcher, name: str, station: int, label: str,
             method: str = "read_csv") -> dict[str, Any]:
    """The station's dataframe ``name`` from its database ``label`` (the client's
    ``dataframe.create`` would ask every organization; only the station has a node here)."""
    session_id = researcher.call("session_id")
    arguments = base64.b64encode(b"{}").decode("ascii")
    return dict(researcher.call("client", path="request", args=[
        f"session/{session_id}/dataframe"], kwargs={"method": "POST", "json": {
            "label": label, "name": name,
            "task": {"method": method, "image": DEMO_IMAGE,
                     "organizations": [{"id": station, "arguments": arguments}]}}}))


@pytest.fixture(scope="module")
def frames(worker: Worker, home: Path, v6x5_researchers: dict[str, HqResearcher],
           v6x5_sandbox: HqSandbox) -> dict[str, tuple[int, str]]:
    """Two dataframes extracted in the sandbox: {"people"|"older": (id, name)}."""
    researcher = v6x5_researchers["demo"]
    station = v6x5_sandbox.org_id("station")
    made: dict[str, tuple[int, str]] = {}
    for key, label in (("people", "default"), ("older", "older")):
        name = f"{key}_contained_{TAG}"
        frame = _extract(researcher, name, station, label)
        run = _station_ended(researcher, int(frame["last_session_task"]["id"]), station)
        assert run["status"] == "completed", (run, worker.output)
        made[key] = (int(frame["id"]), name)
    return made


def _compute(researcher: HqResearcher, station: int, method: str, databases: list[Any],
             **kwargs: Any) -> tuple[dict[str, Any], Any]:
    task_id = researcher.create_task(DEMO_IMAGE, method, [station], databases=databases,
                                     **kwargs)
    run = _station_ended(researcher, task_id, station)
    results = researcher.call("results", task_id=task_id) if run["status"] == "completed" \
        else None
    return run, results


def test_a_contained_dataframe_run_sees_its_session_folder_only(
        worker: Worker, home: Path, researcher: HqResearcher, v6x5_sandbox: HqSandbox,
        frames: dict[str, tuple[int, str]]) -> None:
    station = v6x5_sandbox.org_id("station")
    session_id = int(researcher.call("session_id"))
    frame_id, name = frames["people"]
    path = _frame_file(home, session_id, name)
    assert path is not None
    folder = path.parent
    # Another session's folder beside this one (made after the worker's start, so its
    # reconcile leaves it): on the host, not in the sandbox.
    other = folder.parent / "424242"
    other.mkdir(mode=0o700)
    try:
        run, results = _compute(researcher, station, "look_around",
                                [{"dataframe_id": frame_id}])
        chain = [folder, *folder.parents[:5]]
        host = [sorted(os.listdir(above)) for above in chain]
    finally:
        other.rmdir()
    assert run["status"] == "completed", (run, worker.output)
    (result,) = results
    assert result["rows"] == 3
    seen = result["listings"]
    assert {f"{name}.parquet", f"{frames['older'][1]}.parquet"} <= set(seen[0])
    # Each folder above the session's shows only the way down to it (up to the node's
    # v6x5 folder); on the host they hold more: the other session, the ledger, the
    # journal, the settings of the console.
    for level in range(1, 5):
        assert seen[level] == [chain[level - 1].name], (level, seen, host)
    assert "424242" in host[1]
    assert any(set(host[level]) - set(seen[level]) for level in range(2, 6)), (seen, host)


def test_a_contained_extraction_writes_only_its_output(
        worker: Worker, home: Path, researcher: HqResearcher, v6x5_sandbox: HqSandbox,
        v6x5_python: Path, frames: dict[str, tuple[int, str]]) -> None:
    station = v6x5_sandbox.org_id("station")
    session_id = int(researcher.call("session_id"))
    name = f"tried_contained_{TAG}"
    frame = _extract(researcher, name, station, "default", method="read_csv_trying_writes")
    run = _station_ended(researcher, int(frame["last_session_task"]["id"]), station)
    assert run["status"] == "completed", (run, worker.output)
    path = _frame_file(home, session_id, name)
    assert path is not None
    done = subprocess.run([str(v6x5_python), "-I", "-c", _READ_STATE, str(path)],
                          capture_output=True, text=True, timeout=120, check=True)
    rows = json.loads(done.stdout)
    # The session folder is read-only; beside the database (a file under the host's /tmp
    # here) the write lands, if anywhere, in the sandbox's own /tmp, gone with it.
    assert {row["session_folder"] for row in rows} == {"refused"}
    assert {row["age"] for row in rows} == {31, 52, 17}
    assert not list(home.rglob("extraction-was-here"))


def test_a_contained_write_into_the_session_folder_fails(
        worker: Worker, home: Path, researcher: HqResearcher, v6x5_sandbox: HqSandbox,
        frames: dict[str, tuple[int, str]]) -> None:
    station = v6x5_sandbox.org_id("station")
    session_id = int(researcher.call("session_id"))
    frame_id, name = frames["people"]
    path = _frame_file(home, session_id, name)
    assert path is not None
    before = path.read_bytes()
    run, _ = _compute(researcher, station, "scribble", [{"dataframe_id": frame_id}])
    assert run["status"] == "crashed", (run, worker.output)
    assert "Read-only file system" in run["log"], run["log"]
    assert str(home) not in run["log"]
    assert not (path.parent / "scribble.parquet").exists()
    assert path.read_bytes() == before
    # The node goes on: the next run on the dataframe completes.
    run, results = _compute(researcher, station, "mean", [{"dataframe_id": frame_id}])
    assert run["status"] == "completed", (run, worker.output)
    assert results == [{"mean": 100 / 3, "count": 3}]


def test_a_task_on_two_dataframes_gets_both(
        worker: Worker, researcher: HqResearcher, v6x5_sandbox: HqSandbox,
        frames: dict[str, tuple[int, str]]) -> None:
    station = v6x5_sandbox.org_id("station")
    (people_id, people), (older_id, older) = frames["people"], frames["older"]
    # Positions 0 and 1 (one dataframe per argument): "people;older", @dataframe(2).
    run, results = _compute(researcher, station, "mean_of_two",
                            [{"dataframe_id": people_id}, {"dataframe_id": older_id}])
    assert run["status"] == "completed", (run, worker.output)
    assert results == [{"first": 100 / 3, "second": 65.0, "counts": [3, 2]}]
    # The reverse order: the positions, not the dataframes' ids, decide.
    run, results = _compute(researcher, station, "mean_of_two",
                            [{"dataframe_id": older_id}, {"dataframe_id": people_id}])
    assert run["status"] == "completed", (run, worker.output)
    assert results == [{"first": 65.0, "second": 100 / 3, "counts": [2, 3]}]
    # Both in one group (one argument): "people,older", @dataframe("multiple").
    run, results = _compute(researcher, station, "means_of_group",
                            [[{"dataframe_id": people_id}, {"dataframe_id": older_id}]])
    assert run["status"] == "completed", (run, worker.output)
    assert results == [{people: 100 / 3, older: 65.0}]


def test_a_delete_is_noted_in_the_session_state_file(
        worker: Worker, home: Path, researcher: HqResearcher, v6x5_python: Path,
        frames: dict[str, tuple[int, str]]) -> None:
    session_id = int(researcher.call("session_id"))
    frame_id, name = frames["older"]
    path = _frame_file(home, session_id, name)
    assert path is not None
    state = path.parent / "session_state.parquet"

    def rows() -> list[dict[str, Any]]:
        done = subprocess.run([str(v6x5_python), "-I", "-c", _READ_STATE, str(state)],
                              capture_output=True, text=True, timeout=120, check=True)
        return list(json.loads(done.stdout))

    assert [r["action"] for r in rows() if r["dataframe"] == name] == ["data_extraction"]
    _client(researcher, "dataframe.delete", id_=frame_id)
    wait_for(lambda: not path.exists(), 30, what="the dataframe's file to go")
    deleted = wait_for(lambda: [r for r in rows() if r["action"] == "delete"], 30,
                       what="the delete's row in the state file")
    assert [(r["file"], r["message"], r["dataframe"]) for r in deleted] == [
        (f"{name}.parquet", "Dataframe deleted", name)]
    assert (state.stat().st_mode & 0o777) == 0o600
