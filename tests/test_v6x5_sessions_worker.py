"""A vantage6 5.x node's sessions through the real `dss-console worker --source v6` (plan
step 6): the real HQ 5.0.3 behind the Keycloak stand-in, the official 5.0.3 UserClient as the
researcher, an unmodified algorithm (tests/v6x5_algorithm: `@data_extraction` reading a CSV,
`@dataframe(1) @federated` mean) under the official wrapper.

One module-scoped worker; the crash test replaces it (SIGKILL, then a new one) and later
tests use the new one, so the tests run in file order.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dss_console.engine.settings import settings_to_toml
from dss_console.sources.v6.settings import parse_v6_settings
from dss_console.sources.v6x5.sandbox import HqSandbox
from settings_helpers import settings_with
from test_v6_worker import EXE, Worker
from test_v6x5_worker import DEMO_IMAGE, ENDED, NODE, _env

from v6_fixtures import SERVER_TEST_TIMEOUT
from v6x5_fixtures import HqResearcher, v6x5_algorithm_root
from waiting import wait_for

pytestmark = pytest.mark.timeout(SERVER_TEST_TIMEOUT)

COMMAND_IMAGE = "v6x5-test-command"
GATED_IMAGE = "v6x5-demo-gated"  # the demo algorithm, its results held for release
CSV = "age,weight\n31,70.5\n52,81.0\n17,55.25\n"
TAG = os.getpid()  # dataframe names are unique across HQ


@pytest.fixture(scope="module")
def home(v6x5_sandbox: HqSandbox, v6x5_python: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A node operator's machine: the 5.x node logged in, a CSV database ``default``."""
    path = tmp_path_factory.mktemp("v6x5-sessions-home")
    (path / "people.csv").write_text(CSV)
    table: dict[str, Any] = {
        "algorithms": {DEMO_IMAGE: {"python": str(v6x5_python), "package": "v6x5_demo",
                                    "env": {"PYTHONPATH": str(v6x5_algorithm_root())}},
                       GATED_IMAGE: {"python": str(v6x5_python), "package": "v6x5_demo",
                                     "env": {"PYTHONPATH": str(v6x5_algorithm_root())},
                                     "approve": "release"},
                       COMMAND_IMAGE: {"command": "true"}},
        "databases": {"default": {"uri": str(path / "people.csv"), "type": "csv"}}}
    (path / "settings.toml").write_text(
        settings_to_toml(settings_with(v6=parse_v6_settings(table))))
    sb = v6x5_sandbox
    done = subprocess.run(
        [str(EXE), "v6", "login", "--server", sb.url, "--auth-url", sb.auth_url,
         "--realm", sb.info["realm"], "--node", NODE, "--api-key-stdin"],
        input=sb.node(NODE).api_key + "\n", env=_env(path), capture_output=True, text=True,
        timeout=120)
    assert done.returncode == 0, done.stderr
    return path


def _start(home: Path, sandbox: HqSandbox) -> Worker:
    made = Worker(home, sandbox.url, NODE, "--concurrency", "1")
    made.wait_line(r"worker .* on .*#node-\d+")
    return made


@pytest.fixture(scope="module")
def workers(home: Path, v6x5_sandbox: HqSandbox) -> Iterator[list[Worker]]:
    """The node's workers, the current one last (the crash test adds one)."""
    made = [_start(home, v6x5_sandbox)]
    try:
        yield made
    finally:
        code = made[-1].stop()
        output = "\n".join(w.output for w in made)
        assert code == 0, output
        assert "Traceback" not in output, output


@pytest.fixture
def researcher(v6x5_researchers: dict[str, HqResearcher]) -> HqResearcher:
    return v6x5_researchers["demo"]


def _client(researcher: HqResearcher, path: str, **kwargs: Any) -> Any:
    return researcher.call("client", path=path, kwargs=kwargs)


def _station_run(researcher: HqResearcher, task_id: int, station: int) -> dict[str, Any]:
    answer = _client(researcher, "run.from_task", task_id=task_id)
    runs = answer.get("data", answer) if isinstance(answer, dict) else answer
    (run,) = [r for r in runs if (r.get("organization") or {}).get("id") == station]
    return dict(run)


def _station_ended(researcher: HqResearcher, task_id: int, station: int,
                   timeout: float = 120.0) -> dict[str, Any]:
    return wait_for(lambda: (lambda r: r if r["status"] in ENDED else None)(
        _station_run(researcher, task_id, station)), timeout,
        what=f"task {task_id}'s run on the station to end")


def _extract(researcher: HqResearcher, name: str, station: int, *,
             method: str = "read_csv", image: str = DEMO_IMAGE) -> dict[str, Any]:
    """A dataframe made by the unmodified `@data_extraction` algorithm, asked of the
    station only: the client's ``dataframe.create`` asks every organization of the
    collaboration, and only the station has a node here, so this is its request with one
    organization (the arguments ``{}`` as base64 JSON: an unencrypted collaboration)."""
    session_id = researcher.call("session_id")
    arguments = base64.b64encode(b"{}").decode("ascii")
    frame = researcher.call("client", path="request", args=[
        f"session/{session_id}/dataframe"], kwargs={"method": "POST", "json": {
            "label": "default", "name": name,
            "task": {"method": method, "image": image,
                     "organizations": [{"id": station, "arguments": arguments}]}}})
    assert set(frame) >= {"id", "last_session_task"}, frame
    return dict(frame)


def _frame_file(home: Path, session_id: int, name: str, data: Path | None = None
                ) -> Path | None:
    found = list((data or home / "data").rglob(f"sessions/{session_id}/{name}.parquet"))
    return found[0] if found else None


def _staged(home: Path, session_id: int, name: str) -> list[Path]:
    return list((home / "data").rglob(f"staged/{session_id}/{name}.run*"))


def _approvals(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), "approvals", *args], env=_env(home),
                          capture_output=True, text=True, timeout=60)


def _waiting_release(home: Path, run_id: int) -> bool:
    done = _approvals(home, "list", "--json")
    return done.returncode == 0 and any(
        row["id"] == run_id and row["gate"] == "release" for row in json.loads(done.stdout))


def _pending_run(researcher: HqResearcher, task_id: int, station: int) -> int:
    return int(wait_for(lambda: _station_run(researcher, task_id, station).get("id"), 60,
                        what="the station's run"))


def _frame_id(researcher: HqResearcher, session_id: int, name: str) -> int:
    frames = _client(researcher, "dataframe.list", session=session_id)["data"]
    return int(next(f["id"] for f in frames if f["name"] == name))


def _ledger_records(home: Path, kind: str) -> list[dict[str, Any]]:
    records = []
    for path in (home / "data").rglob("ledger/*.jsonl"):
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                with_kind = json.loads(line) if line.strip() else {}
                if with_kind.get("kind") == kind:
                    records.append(with_kind)
    return records


def _commits(home: Path, name: str, action: str = "committed") -> list[dict[str, Any]]:
    return [r["data"] for r in _ledger_records(home, "session dataframe")
            if r["data"]["dataframe"] == name and r["data"]["action"] == action]


def test_extraction_then_compute_on_the_dataframe(
        workers: list[Worker], home: Path, researcher: HqResearcher,
        v6x5_sandbox: HqSandbox) -> None:
    station = v6x5_sandbox.org_id("station")
    name = f"people_{TAG}"
    frame = _extract(researcher, name, station)
    session_id = int(researcher.call("session_id"))
    extraction = _station_ended(researcher, int(frame["last_session_task"]["id"]), station)
    assert extraction["status"] == "completed", (extraction, workers[-1].output)

    path = _frame_file(home, session_id, name)
    assert path is not None and (path.stat().st_mode & 0o777) == 0o600
    # HQ shows this node's columns, as pyarrow names their types.
    columns = _client(researcher, "dataframe.get", id_=frame["id"])["columns"]
    assert sorted((c["name"], c["dtype"]) for c in columns) == [
        ("age", "int64"), ("weight", "double")]

    task_id = researcher.create_task(DEMO_IMAGE, "mean", [station],
                                     databases=[{"dataframe_id": frame["id"]}], column="age")
    run = _station_ended(researcher, task_id, station)
    assert run["status"] == "completed", (run, workers[-1].output)
    assert researcher.call("results", task_id=task_id) == [{"mean": 100 / 3, "count": 3}]

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    wait_for(lambda: _commits(home, name), 30, what="the commit's ledger record")
    (note,) = _commits(home, name)
    assert (note["session_id"], note["run_id"], note["sha256"], note["size"]) == (
        session_id, extraction["id"], digest, path.stat().st_size)
    # Nothing that went to HQ names a local path.
    for sent in (extraction, run):
        assert str(home) not in json.dumps(sent), sent
    assert str(home) not in json.dumps(researcher.call("results", task_id=task_id))
    assert str(home) not in json.dumps(note)


def test_a_compute_on_a_dataframe_missing_here_is_dataframe_not_found(
        workers: list[Worker], home: Path, researcher: HqResearcher,
        v6x5_sandbox: HqSandbox) -> None:
    station = v6x5_sandbox.org_id("station")
    name = f"people_{TAG}"
    session_id = int(researcher.call("session_id"))
    path = _frame_file(home, session_id, name)
    assert path is not None, "made by the test before"
    frame_id = _frame_id(researcher, session_id, name)
    aside = path.with_name("aside")
    path.rename(aside)  # HQ still lists it as ready: only this node lost it
    try:
        task_id = researcher.create_task(DEMO_IMAGE, "mean", [station],
                                         databases=[{"dataframe_id": frame_id}])
        run = _station_ended(researcher, task_id, station)
    finally:
        aside.rename(path)
    assert run["status"] == "dataframe not found", (run, workers[-1].output)
    assert name in run["log"] and str(home) not in run["log"]


def test_preprocessing_replaces_the_dataframe(
        workers: list[Worker], home: Path, researcher: HqResearcher,
        v6x5_sandbox: HqSandbox) -> None:
    station = v6x5_sandbox.org_id("station")
    name = f"people_{TAG}"
    session_id = int(researcher.call("session_id"))
    path = _frame_file(home, session_id, name)
    assert path is not None, "made by the first test"
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    frame_id = _frame_id(researcher, session_id, name)
    arguments = base64.b64encode(b'{"min_age": 18}').decode("ascii")
    frame = researcher.call("client", path="request", args=[
        f"session/dataframe/{frame_id}/preprocess"], kwargs={"method": "POST", "json": {
            "dataframe_id": frame_id,
            "task": {"method": "adults", "image": DEMO_IMAGE,
                     "organizations": [{"id": station, "arguments": arguments}]}}})
    # HQ answers with the dataframe, its last session task now the preprocessing.
    run = _station_ended(researcher, int(frame["last_session_task"]["id"]), station)
    assert run["status"] == "completed", (run, workers[-1].output)
    after = hashlib.sha256(path.read_bytes()).hexdigest()
    assert after != before
    wait_for(lambda: len(_commits(home, name)) == 2, 30, what="the second commit's record")
    assert _commits(home, name)[-1]["sha256"] == after

    task_id = researcher.create_task(DEMO_IMAGE, "mean", [station],
                                     databases=[{"dataframe_id": frame_id}], column="age")
    mean = _station_ended(researcher, task_id, station)
    assert mean["status"] == "completed", (mean, workers[-1].output)
    assert researcher.call("results", task_id=task_id) == [{"mean": 41.5, "count": 2}]


def test_an_extraction_that_leaves_no_parquet_is_unexpected_output(
        workers: list[Worker], home: Path, researcher: HqResearcher,
        v6x5_sandbox: HqSandbox) -> None:
    station = v6x5_sandbox.org_id("station")
    name = f"junk_{TAG}"
    frame = _extract(researcher, name, station, method="junk_output")
    run = _station_ended(researcher, int(frame["last_session_task"]["id"]), station)
    assert run["status"] == "unexpected output", (run, workers[-1].output)
    assert "not a parquet table" in run["log"] and str(home) not in run["log"]
    assert _frame_file(home, int(researcher.call("session_id")), name) is None


def test_an_extraction_algorithm_given_as_a_command_is_refused_in_words(
        workers: list[Worker], researcher: HqResearcher, v6x5_sandbox: HqSandbox) -> None:
    station = v6x5_sandbox.org_id("station")
    frame = _extract(researcher, f"cmd_{TAG}", station, image=COMMAND_IMAGE)
    run = _station_ended(researcher, int(frame["last_session_task"]["id"]), station)
    assert run["status"] == "failed"
    assert "must be configured on this node with python and package" in run["log"]


def test_a_release_refused_commits_nothing(
        workers: list[Worker], home: Path, researcher: HqResearcher,
        v6x5_sandbox: HqSandbox) -> None:
    """The dataframe is committed in the end call, after the release gate: refused there,
    this node holds no new data (a rerun's preprocessing would otherwise apply twice) and
    the ledger has no commit."""
    station = v6x5_sandbox.org_id("station")
    name = f"refused_{TAG}"
    frame = _extract(researcher, name, station, image=GATED_IMAGE)
    session_id = int(researcher.call("session_id"))
    task_id = int(frame["last_session_task"]["id"])
    run_id = _pending_run(researcher, task_id, station)
    wait_for(lambda: _waiting_release(home, run_id), 120, what="the result held for release")
    assert _frame_file(home, session_id, name) is None  # held: not the session's yet
    rejected = _approvals(home, "reject", str(run_id), "--message", "Not this cohort")
    assert rejected.returncode == 0, rejected.stderr
    run = _station_ended(researcher, task_id, station)
    assert run["status"] == "failed", (run, workers[-1].output)
    assert _frame_file(home, session_id, name) is None
    assert _staged(home, session_id, name) == []
    assert _commits(home, name) == []


def test_an_output_whose_columns_cannot_be_read_is_unexpected_output(
        workers: list[Worker], home: Path, researcher: HqResearcher,
        v6x5_sandbox: HqSandbox) -> None:
    """Parquet at both ends, no schema: the columns are read when the result is handed
    over, so the run ends `unexpected output` (read in the end call, it stayed active)."""
    station = v6x5_sandbox.org_id("station")
    name = f"badcols_{TAG}"
    frame = _extract(researcher, name, station, method="fake_parquet")
    run = _station_ended(researcher, int(frame["last_session_task"]["id"]), station)
    assert run["status"] == "unexpected output", (run, workers[-1].output)
    assert "columns" in run["log"] and str(home) not in run["log"]
    session_id = int(researcher.call("session_id"))
    assert _frame_file(home, session_id, name) is None and _staged(home, session_id, name) == []


def test_a_worker_killed_while_its_dataframe_waits_commits_once(
        workers: list[Worker], home: Path, researcher: HqResearcher,
        v6x5_sandbox: HqSandbox) -> None:
    """SIGKILL while the staged dataframe waits for the operator's release (the commit,
    the columns and the completing PATCH still to come); the next worker, released,
    completes the run with one commit (the crash points inside a commit: test_v6x5_sessions).
    It also removes a session HQ does not have (the reconcile at connect)."""
    station = v6x5_sandbox.org_id("station")
    name = f"crash_{TAG}"
    frame = _extract(researcher, name, station, image=GATED_IMAGE)
    session_id = int(researcher.call("session_id"))
    task_id = int(frame["last_session_task"]["id"])
    run_id = _pending_run(researcher, task_id, station)
    wait_for(lambda: _waiting_release(home, run_id), 120, what="the result held for release")
    (staged,) = [path for path in _staged(home, session_id, name) if path.suffix == ".parquet"]
    inode = staged.stat().st_ino
    workers[-1].kill()
    assert _station_run(researcher, task_id, station)["status"] != "completed"
    sessions = staged.parent.parent.parent / "sessions"
    stale = sessions / "999999"
    stale.mkdir(mode=0o700, parents=True)
    (stale / "old.parquet").write_bytes(b"PAR1 stale PAR1")

    workers.append(_start(home, v6x5_sandbox))
    wait_for(lambda: _waiting_release(home, run_id), 120, what="the result still held")
    released = _approvals(home, "release", str(run_id))
    assert released.returncode == 0, released.stderr
    run = _station_ended(researcher, task_id, station)
    assert run["status"] == "completed", (run, workers[-1].output)
    path = _frame_file(home, session_id, name)
    assert path is not None and path.stat().st_ino == inode  # the staged file, renamed
    wait_for(lambda: _commits(home, "old", "deleted"), 30, what="the reconcile's record")
    assert not stale.exists()
    wait_for(lambda: _commits(home, name), 30, what="the commit's record")
    (note,) = _commits(home, name)
    assert note["run_id"] == run["id"]
    columns = _client(researcher, "dataframe.get", id_=frame["id"])["columns"]
    assert sorted(c["name"] for c in columns) == ["age", "weight"]


def test_delete_dataframe_removes_the_file_and_hq_hears_back(
        workers: list[Worker], home: Path, researcher: HqResearcher,
        v6x5_sandbox: HqSandbox) -> None:
    station = v6x5_sandbox.org_id("station")
    name = f"deleted_{TAG}"
    frame = _extract(researcher, name, station)
    session_id = int(researcher.call("session_id"))
    run = _station_ended(researcher, int(frame["last_session_task"]["id"]), station)
    assert run["status"] == "completed", (run, workers[-1].output)
    path = _frame_file(home, session_id, name)
    assert path is not None
    frame_id = int(frame["id"])
    _client(researcher, "dataframe.delete", id_=frame_id)
    wait_for(lambda: not path.exists(), 30, what="the dataframe's file to go")
    node_id = v6x5_sandbox.node(NODE).id

    def owed() -> int:
        # HQ keeps a row per node until that node answers `dataframe_deleted`.
        with sqlite3.connect(v6x5_sandbox.data_dir / "hq.sqlite") as db:
            (table,) = [r[0] for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type='table' "
                "AND name LIKE '%deleted%node%'")]
            return int(db.execute(f"SELECT COUNT(*) FROM {table} WHERE node_id=? AND "
                                  "dataframe_name=?", (node_id, name)).fetchone()[0])

    wait_for(lambda: owed() == 0, 30, what="HQ to hear dataframe_deleted")
    wait_for(lambda: _commits(home, name, "deleted"), 30, what="the delete's record")
    (gone,) = _commits(home, name, "deleted")
    assert gone["session_id"] == session_id and gone["run_id"] is None


def test_a_worker_with_a_data_dir_keeps_its_sessions_there(
        workers: list[Worker], home: Path, researcher: HqResearcher,
        v6x5_sandbox: HqSandbox, tmp_path: Path) -> None:
    """`--data-dir X`: the session folders are under X, as the journal and the ledger."""
    code = workers[-1].stop()
    assert code == 0, workers[-1].output
    data = tmp_path / "elsewhere"
    made = Worker(home, v6x5_sandbox.url, NODE, "--concurrency", "1", "--data-dir", str(data))
    workers.append(made)
    made.wait_line(r"worker .* on .*#node-\d+")
    station = v6x5_sandbox.org_id("station")
    name = f"datadir_{TAG}"
    frame = _extract(researcher, name, station)
    session_id = int(researcher.call("session_id"))
    run = _station_ended(researcher, int(frame["last_session_task"]["id"]), station)
    assert run["status"] == "completed", (run, made.output)
    found = _frame_file(home, session_id, name, data)
    assert found is not None and found.is_relative_to(data)
    assert _frame_file(home, session_id, name) is None
