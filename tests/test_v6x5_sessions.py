"""A 5.x node's session data (plan §4): private folders outside the work dirs, a commit that
may be repeated after a crash without committing twice, deletes that say what went (hash,
size, never a path); and `session_step.py` run by the algorithm's Python (the 5.x venv's
3.13 with pyarrow) reading a dataframe's columns as HQ shows them and keeping the state
file."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import sys
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


COLUMNS = [("age", "int64"), ("weight", "double")]


def _stage(store: SessionStore, session_id: int, name: str, data: bytes, run_id: int,
           work: Path, image: str = "") -> None:
    output = work / f"output-{run_id}"
    output.parent.mkdir(exist_ok=True)
    output.write_bytes(data)
    store.stage(session_id, name, output, run_id, columns=COLUMNS, image=image)
    output.unlink()  # the work dir may go: the staged copy is what is committed


def test_a_commit_is_private_once_per_run_and_a_delete_says_what_went(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "data", "http://hq.example.org/hq", node_id=3)
    work = tmp_path / "work"
    _stage(store, 7, "people", b"PAR1 first PAR1", 11, work)
    assert not store.has_dataframe(7, "people")  # staged is not committed
    assert store.columns(7, "people", 11) == COLUMNS
    note = store.commit(7, "people", run_id=11)
    final = store.dataframe_file(7, "people")
    assert final.read_bytes() == b"PAR1 first PAR1" and _mode(final) == 0o600
    assert (note.action, note.session_id, note.dataframe, note.run_id, note.size) == (
        "committed", 7, "people", 11, 15)
    assert store.columns(7, "people", 11) == COLUMNS  # from the record now
    path = final.parent
    while path != tmp_path / "data":
        assert _mode(path) == 0o700, path
        path = path.parent
    assert str(tmp_path) not in repr(note)  # the ledger's note names no path

    # A repeat after the rename: the same run commits nothing again.
    assert store.commit(7, "people", run_id=11) == note
    assert not list(store.root.parent.rglob("*.run*"))
    # Another run replaces the dataframe (preprocessing).
    _stage(store, 7, "people", b"PAR1 second PAR1", 12, work, image="v6x5-demo")
    again = store.commit(7, "people", run_id=12)
    assert again.sha256 != note.sha256 and final.read_bytes() == b"PAR1 second PAR1"
    # The image whose run made it: its Python notes a delete in the state file.
    assert store.made_by(7, "people") == "v6x5-demo" and store.made_by(7, "nobody") is None

    # A staged output that is not committed (a refused release) goes without a trace.
    _stage(store, 7, "other", b"PAR1 held PAR1", 15, work)
    store.discard_staged(7, "other", 15)
    assert not store.has_dataframe(7, "other") and not list(store.root.parent.rglob("*.run*"))
    with pytest.raises(FileNotFoundError):
        store.commit(7, "other", run_id=15)

    assert store.session_ids() == [7] and store.has_dataframe(7, "people")
    gone = store.delete_dataframe(7, "people")
    assert gone is not None and (gone.action, gone.sha256, gone.run_id) == (
        "deleted", again.sha256, None)
    assert store.delete_dataframe(7, "people") is None and not final.exists()

    _stage(store, 8, "a", b"PAR1 a PAR1", 13, work)
    _stage(store, 8, "b", b"PAR1 b PAR1", 14, work)
    store.commit(8, "a", run_id=13)
    store.commit(8, "b", run_id=14)
    notes = store.delete_session(8)
    assert sorted(n.dataframe for n in notes) == ["a", "b"]
    assert store.session_ids() == [7]


def test_a_delete_takes_the_hash_from_the_commit_record(tmp_path: Path) -> None:
    """A delete comes on the socket's thread: it does not read the whole dataframe again
    when the commit recorded its hash (a file not committed here is still hashed)."""
    store = SessionStore(tmp_path / "data", "http://hq.example.org/hq", node_id=3)
    _stage(store, 7, "people", b"PAR1 rows PAR1", 11, tmp_path / "work")
    note = store.commit(7, "people", run_id=11)
    final = store.dataframe_file(7, "people")
    with final.open("r+b") as data:  # same inode, other bytes: only a re-hash sees them
        data.write(b"XXXX")
    gone = store.delete_dataframe(7, "people")
    assert gone is not None and (gone.sha256, gone.size) == (note.sha256, note.size)
    foreign = store.dataframe_file(7, "copied")
    foreign.write_bytes(b"PAR1 copied PAR1")
    gone = store.delete_dataframe(7, "copied")
    assert gone is not None and gone.sha256 == hashlib.sha256(b"PAR1 copied PAR1").hexdigest()


def test_a_restart_asks_whether_its_run_committed_and_makes_no_folder(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "data", "http://hq.example.org/hq", node_id=3)
    assert store.committed(5, "people", 11) is None and not store.has_dataframe(5, "people")
    assert not store.root.exists()  # asking made nothing
    _stage(store, 5, "people", b"PAR1 rows PAR1", 11, tmp_path / "work")
    note = store.commit(5, "people", run_id=11)
    assert store.committed(5, "people", 11) == note and store.committed(5, "people", 12) is None


_CRASH = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from dss_console.sources.v6x5 import sessions

    point = sys.argv[2]
    real_write, real_replace = sessions.write_private, os.replace

    def write(path, data):
        if point == "before-record" and path.name.endswith(".commit.json"):
            os._exit(9)
        real_write(path, data)
        if point == "after-record" and path.name.endswith(".commit.json"):
            os._exit(9)

    def replace(source, target):
        real_replace(source, target)
        if point == "after-rename" and str(target).endswith("/people.parquet"):
            os._exit(9)

    sessions.write_private = write
    os.replace = replace
    store = sessions.SessionStore(Path(sys.argv[1]), "http://hq.example.org/hq", 3)
    store.commit(7, "people", 11)
    if point == "before-note":
        os._exit(9)  # committed, its ledger note not queued
    os._exit(0)
""")


@pytest.mark.parametrize("point", ["before-record", "after-record", "after-rename",
                                   "before-note"])
def test_a_commit_killed_at_each_step_is_done_once_with_one_note(tmp_path: Path,
                                                                 point: str) -> None:
    """A child process commits and dies (os._exit) at one step; the next commit of the same
    run finishes it without a second file (the staged file's inode is the dataframe's) and
    the commit's ledger note is owed exactly once."""
    store = SessionStore(tmp_path / "data", "http://hq.example.org/hq", node_id=3)
    _stage(store, 7, "people", b"PAR1 rows PAR1", 11, tmp_path / "work")
    staged = next(store.root.parent.rglob("people.run11.parquet"))
    inode = staged.stat().st_ino
    child = subprocess.run([sys.executable, "-c", _CRASH, str(tmp_path / "data"), point],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == 9, child.stderr
    done_in_child = point in ("after-rename", "before-note")
    assert (store.committed(7, "people", 11) is not None) is done_in_child
    note = store.commit(7, "people", run_id=11)
    final = store.dataframe_file(7, "people")
    assert final.stat().st_ino == inode and final.read_bytes() == b"PAR1 rows PAR1"
    assert not list(store.root.parent.rglob("*.run11*"))
    assert store.unnoted() == [note]  # the note is owed, once
    store.mark_noted(note)
    assert store.unnoted() == [] and store.noted(note)
    assert store.commit(7, "people", run_id=11) == note and store.unnoted() == []


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
