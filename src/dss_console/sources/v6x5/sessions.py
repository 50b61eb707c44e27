"""A 5.x node's session data: the dataframes its extraction and preprocessing runs made, kept
as the official node keeps them (``{df name}.parquet`` in the session's folder, which
``@dataframe`` algorithms read through ``SESSION_FOLDER``), but private (directories 0700,
files 0600) and outside the jobs' work dirs, whose retention must not remove them (plan §4).

Layout: ``<data dir>/v6x5/<sha256(server)[:16]>/node-<id>/sessions/<session id>/``, and
``…/node-<id>/staged/<session id>/`` for outputs not yet committed (outside the session
folder: a compute run of the session must not read a dataframe the operator has not
released, and the same file system, so the commit is a rename).

Two steps. :meth:`SessionStore.stage`, when the run's result is handed over (after the
parquet check and the columns are read): the output is copied (hashed on the way) to
``staged/<session>/{df}.run{id}.parquet`` with a sidecar (hash, size, columns, image).
:meth:`SessionStore.commit`, in the end call right before the completing PATCH (after a
release gate, so a refused release commits nothing): the commit record
``.{df}.commit.json`` (run id, hash, size, the staged file's inode, columns) is written
first, then the staged file is renamed over ``{df}.parquet`` (the rename keeps the inode).
:meth:`SessionStore.committed` requires the record's run and the final file's inode: a
crash before the rename leaves the staged file and a record that does not match, and the
repeat renames it then; a crash after it finds the commit done. Each commit and delete
gives a :class:`DataframeNote` for the ledger: ids, name, hash, size — never a path or a
value; a commit's record says whether its note was queued (:meth:`SessionStore.unnoted`),
so a crash between the commit and the note loses neither.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dss_console.paths import ensure_private_dir, write_private

__all__ = ["DataframeNote", "SessionStore", "looks_like_parquet", "session_step_script",
           "valid_dataframe_name"]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_CHUNK = 1 << 20


def session_step_script() -> Path:
    """``session_step.py``, which the algorithm's Python runs for the node's parquet work
    (columns, the state file): a resource, as a frozen bundle carries it as a file."""
    return Path(str(importlib.resources.files("dss_console.resources") / "v6x5"
                    / "session_step.py"))


def valid_dataframe_name(name: str) -> str:
    """The name as a file stem; ValueError in words when it could leave the folder."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"dataframe name {name[:80]!r} is not a plain name (letters, digits, "
                         "_ . -)")
    return name


@dataclass(frozen=True)
class DataframeNote:
    """What the ledger keeps of a dataframe committed or deleted here."""

    action: str            # "committed" or "deleted"
    session_id: int
    dataframe: str
    run_id: int | None     # the run that made it (None: deleted by HQ's event or reconcile)
    sha256: str
    size: int


class SessionStore:
    """The session folders of one node of one server."""

    def __init__(self, data_dir: Path, server: str, node_id: int) -> None:
        digest = hashlib.sha256(server.encode("utf-8")).hexdigest()[:16]
        self._base = Path(data_dir) / "v6x5"
        self.root = self._base / digest / f"node-{int(node_id)}" / "sessions"

    def folder(self, session_id: int) -> Path:
        """The session's folder; it and every folder above it up to ``v6x5/`` private."""
        folder = ensure_private_dir(self.root / str(int(session_id)))
        for above in folder.relative_to(self._base).parents:  # mkdir's parents: default mode
            os.chmod(self._base / above, 0o700)
        return folder

    def dataframe_file(self, session_id: int, name: str) -> Path:
        return self.folder(session_id) / f"{valid_dataframe_name(name)}.parquet"

    def has_dataframe(self, session_id: int, name: str) -> bool:
        """Whether the session has the dataframe here (makes no folder)."""
        return (self.root / str(int(session_id))
                / f"{valid_dataframe_name(name)}.parquet").is_file()

    def _record_path(self, session_id: int, name: str) -> Path:
        final = self.root / str(int(session_id)) / f"{valid_dataframe_name(name)}.parquet"
        return final.with_name(f".{final.stem}.commit.json")

    def _record(self, session_id: int, name: str) -> dict[str, Any] | None:
        """The commit record, when the final file is the one it names (its inode: written
        before the rename, which keeps the staged file's inode)."""
        final = self.root / str(int(session_id)) / f"{valid_dataframe_name(name)}.parquet"
        done = _read_record(self._record_path(session_id, name))
        if done is None:
            return None
        try:
            inode = final.stat().st_ino
        except OSError:
            return None
        # A record without an inode was written after its rename (an earlier version).
        if "inode" in done and done["inode"] != inode:
            return None
        return done

    def committed(self, session_id: int, name: str, run_id: int) -> DataframeNote | None:
        """This run's commit of the dataframe, when it is done (a restart asks first)."""
        done = self._record(session_id, name)
        if done is None or done.get("run_id") != run_id:
            return None
        return DataframeNote("committed", int(session_id), name, run_id,
                             str(done["sha256"]), int(done["size"]))

    def columns(self, session_id: int, name: str, run_id: int) -> list[tuple[str, str]] | None:
        """The columns read when the run's output was staged (from its sidecar, or from the
        commit record once committed); None when neither has them."""
        done = self._record(session_id, name)
        if done is None or done.get("run_id") != run_id:
            done = _read_record(self._sidecar(session_id, name, run_id))
        found = done.get("columns") if done is not None else None
        if not isinstance(found, list):
            return None
        return [(str(column[0]), str(column[1])) for column in found]

    def made_by(self, session_id: int, name: str) -> str | None:
        """The image whose run made the dataframe (its commit record), None when unknown."""
        final = self.root / str(int(session_id)) / f"{valid_dataframe_name(name)}.parquet"
        done = _read_record(final.with_name(f".{final.stem}.commit.json"))
        image = done.get("image") if done is not None else None
        return image if isinstance(image, str) and image else None

    def session_ids(self) -> list[int]:
        """The sessions with a folder here (for the reconcile with HQ's list)."""
        if not self.root.is_dir():
            return []
        return sorted(int(p.name) for p in self.root.iterdir() if p.name.isdigit())

    # -- commit and delete -----------------------------------------------------------------

    def _staged(self, session_id: int, name: str, run_id: int) -> Path:
        return (self.root.parent / "staged" / str(int(session_id))
                / f"{valid_dataframe_name(name)}.run{int(run_id)}.parquet")

    def _sidecar(self, session_id: int, name: str, run_id: int) -> Path:
        return self._staged(session_id, name, run_id).with_suffix(".json")

    def stage(self, session_id: int, name: str, output: Path, run_id: int, *,
              columns: list[tuple[str, str]], image: str = "") -> None:
        """Keep a copy of the run's output (and its columns) until the end call commits it;
        the session's folder is not touched. ``image``: the algorithm that made it (its
        Python later notes a delete in the session's state file, :meth:`made_by`)."""
        staged = self._staged(session_id, name, run_id)
        ensure_private_dir(staged.parent)
        for above in staged.parent.relative_to(self._base).parents:
            os.chmod(self._base / above, 0o700)
        sha256, size = _private_copy(output, staged)
        write_private(self._sidecar(session_id, name, run_id), json.dumps({
            "sha256": sha256, "size": size, "image": image,
            "columns": [list(column) for column in columns]}))

    def discard_staged(self, session_id: int, name: str, run_id: int) -> None:
        """The run did not succeed here (a refused release, a failure): its staged output
        goes, nothing was committed."""
        self._staged(session_id, name, run_id).unlink(missing_ok=True)
        self._sidecar(session_id, name, run_id).unlink(missing_ok=True)

    def commit(self, session_id: int, name: str, run_id: int) -> DataframeNote:
        """Make the run's staged output the session's dataframe ``name`` (once per run,
        however often asked). FileNotFoundError when neither the staged output nor this
        run's commit exist."""
        done = self.committed(session_id, name, run_id)
        if done is not None:
            self._sidecar(session_id, name, run_id).unlink(missing_ok=True)  # a crash's
            return done
        staged = self._staged(session_id, name, run_id)
        sidecar = _read_record(self._sidecar(session_id, name, run_id))
        if sidecar is None:
            raise FileNotFoundError(f"dataframe {name!r} of run {run_id} was not staged")
        inode = staged.stat().st_ino
        final = self.dataframe_file(session_id, name)
        write_private(self._record_path(session_id, name), json.dumps({
            "run_id": run_id, "sha256": sidecar["sha256"], "size": sidecar["size"],
            "inode": inode, "image": sidecar.get("image", ""),
            "columns": sidecar.get("columns", []), "noted": False}))
        os.replace(staged, final)
        self._sidecar(session_id, name, run_id).unlink(missing_ok=True)
        return DataframeNote("committed", int(session_id), name, run_id,
                             str(sidecar["sha256"]), int(sidecar["size"]))

    def mark_noted(self, note: DataframeNote) -> None:
        """The commit's ledger note is queued (a restart need not give it again)."""
        path = self._record_path(note.session_id, note.dataframe)
        done = self._record(note.session_id, note.dataframe)
        if done is not None and done.get("run_id") == note.run_id and not done.get("noted"):
            write_private(path, json.dumps({**done, "noted": True}))

    def noted(self, note: DataframeNote) -> bool:
        """Whether the commit's ledger note was queued (True too when it is not this
        store's current commit: nothing to give)."""
        done = self._record(note.session_id, note.dataframe)
        return done is None or done.get("run_id") != note.run_id or done.get("noted") is not False

    def unnoted(self) -> list[DataframeNote]:
        """Commits whose ledger note was not queued (a crash, or no ledger yet)."""
        notes: list[DataframeNote] = []
        for session_id in self.session_ids():
            folder = self.root / str(session_id)
            for path in sorted(folder.glob(".*.commit.json")):
                name = path.name[1:-len(".commit.json")]
                try:
                    done = self._record(session_id, name)
                except ValueError:
                    continue
                if done is not None and done.get("noted") is False:
                    notes.append(DataframeNote("committed", session_id, name,
                                               done.get("run_id"), str(done["sha256"]),
                                               int(done["size"])))
        return notes

    def delete_dataframe(self, session_id: int, name: str) -> DataframeNote | None:
        """Remove a dataframe (HQ's ``delete_dataframe``); None when there was none."""
        final = self.root / str(int(session_id)) / f"{valid_dataframe_name(name)}.parquet"
        if not final.is_file():
            return None
        # The commit record has the hash (a delete comes on the socket's thread: a whole
        # dataframe is hashed only when nothing recorded it).
        done = self._record(session_id, name)
        if done is not None and isinstance(done.get("sha256"), str) \
                and isinstance(done.get("size"), int):
            sha256, size = str(done["sha256"]), int(done["size"])
        else:
            sha256, size = _hash(final)
        record = final.with_name(f".{final.stem}.commit.json")
        final.unlink()
        record.unlink(missing_ok=True)
        return DataframeNote("deleted", int(session_id), name, None, sha256, size)

    def delete_session(self, session_id: int) -> list[DataframeNote]:
        """Remove a session's folder (HQ no longer has the session): a note per dataframe."""
        folder = self.root / str(int(session_id))
        if not folder.is_dir():
            return []
        notes = [note for path in sorted(folder.glob("*.parquet"))
                 if path.stem != "session_state"
                 and (note := self.delete_dataframe(session_id, path.stem)) is not None]
        shutil.rmtree(folder)
        shutil.rmtree(self.root.parent / "staged" / str(int(session_id)), ignore_errors=True)
        return notes


def looks_like_parquet(path: Path) -> bool:
    """A parquet file begins and ends with ``PAR1`` (read without pyarrow: the worker
    stays small; the columns step reads the schema itself)."""
    try:
        with path.open("rb") as data:
            head = data.read(4)
            data.seek(0, os.SEEK_END)
            if data.tell() < 12:
                return False
            data.seek(-4, os.SEEK_END)
            return head == b"PAR1" and data.read(4) == b"PAR1"
    except OSError:
        return False


def _hash(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _private_copy(source: Path, target: Path) -> tuple[str, int]:
    """Copy into a new 0600 file, synced, hashing on the way."""
    digest, size = hashlib.sha256(), 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with source.open("rb") as src, os.fdopen(fd, "wb", closefd=False) as out:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    finally:
        os.close(fd)
    return digest.hexdigest(), size


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
