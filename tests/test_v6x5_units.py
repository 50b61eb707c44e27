"""The 5.x run environment (plan §5), decoded by vantage6-algorithm-tools 5.0.3's own
``get_env_var`` and dataframe grouping in the 5.x venv (Python 3.13): what an unmodified
5.x algorithm reads is what the node meant."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from dss_console.sources.v6x5.environment import (
    RunContext,
    SessionFiles,
    requested_dataframes,
    run_environment_5,
)

from v6_fixtures import SERVER_TEST_TIMEOUT

pytestmark = pytest.mark.timeout(SERVER_TEST_TIMEOUT)

_DECODE = textwrap.dedent("""
    import json, os
    from vantage6.algorithm.tools.util import get_env_var
    from vantage6.algorithm.decorator.data import _get_user_dataframes
    from vantage6.algorithm.tools.wrap import _decode_env_vars
    out = {name: get_env_var(name) for name in os.environ}
    _decode_env_vars()  # what wrap_algorithm() does first; the decorators read os.environ
    out["__groups__"] = (_get_user_dataframes()
                         if "USER_REQUESTED_DATAFRAMES" in os.environ else None)
    print(json.dumps(out))
""")


def _decoded(python: Path, env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run([str(python), "-I", "-c", _DECODE], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def _files(tmp_path: Path) -> SessionFiles:
    session = tmp_path / "sessions" / "7"
    return SessionFiles(input=tmp_path / "input", output=tmp_path / "output",
                        session_folder=session, session_file=session / "session_state.parquet")


def test_a_compute_runs_environment_reads_back_as_the_node_meant(
        v6x5_python: Path, tmp_path: Path) -> None:
    run = RunContext(action="central_compute", method="central_mean", task_id=12, node_id=3,
                     organization_id=2, collaboration_id=1)
    databases = [{"label": "a", "dataframe_name": "df_a", "position": 0},
                 {"label": "b", "dataframe_name": "df_b", "position": 1},
                 {"label": "c", "dataframe_name": "df_c", "position": 0}]
    env = run_environment_5(run, _files(tmp_path), proxy_port=4711, databases=databases,
                            container_token="tok.en.value",
                            algorithm_env={"MY_SETTING": "x=1;y", "TASK_ID": "99"},
                            plain_env={"PKG_NAME": "v6_demo"},
                            base_env={"PATH": "/usr/bin", "SECRET_OF_WORKER": "no",
                                      "LC_ALL": "C.UTF-8"})
    assert "SECRET_OF_WORKER" not in env and env["PATH"] == "/usr/bin"
    assert env["CONTAINER_TOKEN"] == "tok.en.value" and env["PKG_NAME"] == "v6_demo"
    seen = _decoded(v6x5_python, env)
    assert seen["INPUT_FILE"] == str(tmp_path / "input")
    assert seen["SESSION_FILE"] == str(tmp_path / "sessions" / "7" / "session_state.parquet")
    assert (seen["HOST"], seen["PORT"], seen["API_PATH"]) == ("http://127.0.0.1", "4711", "")
    assert (seen["FUNCTION_ACTION"], seen["ALGORITHM_METHOD"]) == ("central_compute",
                                                                   "central_mean")
    assert (seen["TASK_ID"], seen["NODE_ID"], seen["ORGANIZATION_ID"],
            seen["COLLABORATION_ID"]) == ("12", "3", "2", "1")  # the node's TASK_ID wins
    assert seen["MY_SETTING"] == "x=1;y"
    assert seen["__groups__"] == [["df_a", "df_c"], ["df_b"]]
    assert seen["CONTAINER_TOKEN"] == "tok.en.value"  # plain stays plain
    assert "DATABASE_URI" not in seen


def test_an_extraction_gets_its_database_and_no_token(v6x5_python: Path,
                                                      tmp_path: Path) -> None:
    run = RunContext(action="data_extraction", method="read_csv", task_id=5, node_id=3,
                     organization_id=2, collaboration_id=1)
    env = run_environment_5(run, _files(tmp_path), proxy_port=5999,
                            database=("/data/people.csv", "csv"),
                            database_params={"sep": ";"}, container_token="never")
    assert "CONTAINER_TOKEN" not in env and env["DB_PARAM_SEP"] == ";"
    seen = _decoded(v6x5_python, env)
    assert (seen["DATABASE_URI"], seen["DATABASE_TYPE"]) == ("/data/people.csv", "csv")
    assert seen["PORT"] == "5999" and seen["__groups__"] is None
    with pytest.raises(ValueError, match="needs its database"):
        run_environment_5(run, _files(tmp_path), proxy_port=5999)
    with pytest.raises(ValueError, match="NUL"):
        run_environment_5(run, _files(tmp_path), proxy_port=5999, database=("a\x00b", "csv"))


def test_dataframes_are_grouped_by_position() -> None:
    assert requested_dataframes([]) == ""
    assert requested_dataframes([{"dataframe_name": "x", "position": 2},
                                 {"dataframe_name": "y", "position": 1},
                                 {"dataframe_name": "z", "position": 1}]) == "y,z;x"
