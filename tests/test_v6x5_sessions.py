"""A 5.x node's session data (plan §4): private folders outside the work dirs, a commit that
may be repeated after a crash without committing twice, deletes that say what went (hash,
size, never a path); and `session_step.py` run by the algorithm's Python (the 5.x venv's
3.13 with pyarrow) reading a dataframe's columns as HQ shows them and keeping the state
file."""

from __future__ import annotations

import json
import stat
import subprocess
import textwrap
from pathlib import Path

import pytest

from dss_console.sources.v6x5.sessions import (
    SessionStore,
    looks_like_parquet,
    session_step_script,
    valid_dataframe_name,
)

from v6_fixtures import SERVER_TEST_TIMEOUT

STEP = session_step_script()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_commit_is_private_once_per_run_and_a_delete_says_what_went(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "data", "http://hq.example.org/hq", node_id=3)
    output = tmp_path / "work" / "output.parquet"
    output.parent.mkdir()
    output.write_bytes(b"PAR1 first PAR1")
    note = store.commit(7, "people", output, run_id=11)
    final = store.dataframe_file(7, "people")
    assert final.read_bytes() == b"PAR1 first PAR1" and _mode(final) == 0o600
    assert (note.action, note.session_id, note.dataframe, note.run_id, note.size) == (
        "committed", 7, "people", 11, 15)
    path = final.parent
    while path != tmp_path / "data":
        assert _mode(path) == 0o700, path
        path = path.parent
    assert str(tmp_path) not in repr(note)  # the ledger's note names no path

    # A restart after the rename: the same run commits nothing again, even with its output
    # already gone from the work dir.
    output.unlink()
    assert store.commit(7, "people", output, run_id=11) == note
    assert not list(final.parent.glob("*.run*"))
    # Another run replaces the dataframe (preprocessing).
    output.write_bytes(b"PAR1 second PAR1")
    again = store.commit(7, "people", output, run_id=12, image="v6x5-demo")
    assert again.sha256 != note.sha256 and final.read_bytes() == b"PAR1 second PAR1"
    # The image whose run made it: its Python notes a delete in the state file.
    assert store.made_by(7, "people") == "v6x5-demo" and store.made_by(7, "nobody") is None

    assert store.session_ids() == [7] and store.has_dataframe(7, "people")
    gone = store.delete_dataframe(7, "people")
    assert gone is not None and (gone.action, gone.sha256, gone.run_id) == (
        "deleted", again.sha256, None)
    assert store.delete_dataframe(7, "people") is None and not final.exists()

    store.commit(8, "a", output, run_id=13)
    store.commit(8, "b", output, run_id=14)
    notes = store.delete_session(8)
    assert sorted(n.dataframe for n in notes) == ["a", "b"]
    assert store.session_ids() == [7]


def test_a_restart_asks_whether_its_run_committed_and_makes_no_folder(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "data", "http://hq.example.org/hq", node_id=3)
    assert store.committed(5, "people", 11) is None and not store.has_dataframe(5, "people")
    assert not store.root.exists()  # asking made nothing
    output = tmp_path / "output"
    output.write_bytes(b"PAR1 rows PAR1")
    note = store.commit(5, "people", output, run_id=11)
    assert store.committed(5, "people", 11) == note and store.committed(5, "people", 12) is None


@pytest.mark.parametrize(("data", "parquet"), [
    (b"PAR1 rows PAR1", True), (b'{"not": "parquet"}', False), (b"PAR1PAR1", False),
    (b"", False)])
def test_parquet_is_recognised_by_its_magic_at_both_ends(tmp_path: Path, data: bytes,
                                                          parquet: bool) -> None:
    path = tmp_path / "output"
    path.write_bytes(data)
    assert looks_like_parquet(path) is parquet
    assert not looks_like_parquet(tmp_path / "missing")


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "x..y", "a b"])
def test_a_dataframe_name_cannot_leave_its_folder(name: str) -> None:
    with pytest.raises(ValueError, match="not a plain name"):
        valid_dataframe_name(name)


_MAKE = textwrap.dedent("""
    import sys
    import pyarrow as pa, pyarrow.parquet as pq
    pq.write_table(pa.table({"age": [31, 52], "name": ["a", "b"], "w": [1.5, 2.0]}),
                   sys.argv[1])
""")
_READ = textwrap.dedent("""
    import json, sys
    import pandas as pd
    df = pd.read_parquet(sys.argv[1])
    print(json.dumps({"columns": list(df.columns), "rows": df.astype(str).values.tolist()}))
""")


@pytest.mark.timeout(SERVER_TEST_TIMEOUT)
def test_session_step_reads_columns_and_keeps_the_state_file(v6x5_python: Path,
                                                             tmp_path: Path) -> None:
    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(v6x5_python), "-I", *argv], capture_output=True,
                              text=True, timeout=120)

    frame = tmp_path / "people.parquet"
    assert run("-c", _MAKE, str(frame)).returncode == 0
    cols = run(str(STEP), "columns", str(frame))
    assert cols.returncode == 0, cols.stderr
    assert json.loads(cols.stdout) == [{"name": "age", "dtype": "int64"},
                                       {"name": "name", "dtype": "string"},
                                       {"name": "w", "dtype": "double"}]
    junk = tmp_path / "output"
    junk.write_text('{"not": "parquet"}')
    refused = run(str(STEP), "columns", str(junk))
    assert refused.returncode == 3 and "not a parquet file" in refused.stderr

    state = tmp_path / "session_state.parquet"
    assert run(str(STEP), "state-init", str(state)).returncode == 0
    assert _mode(state) == 0o600
    for action in ("data_extraction", "preprocessing"):
        added = run(str(STEP), "state-add", str(state), action, "people.parquet", "ok",
                    "people")
        assert added.returncode == 0, added.stderr
    read = json.loads(run("-c", _READ, str(state)).stdout)
    assert read["columns"] == ["action", "file", "timestamp", "message", "dataframe"]
    assert [row[0] for row in read["rows"]] == ["data_extraction", "preprocessing"]
    assert read["rows"][0][4] == "people"
    assert run(str(STEP), "state-add", str(state)).returncode == 2
