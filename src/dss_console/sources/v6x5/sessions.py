"""A 5.x node's session data: the dataframes its extraction and preprocessing runs made, kept
as the official node keeps them (``{df name}.parquet`` in the session's folder, which
``@dataframe`` algorithms read through ``SESSION_FOLDER``), but private (directories 0700,
files 0600) and outside the jobs' work dirs, whose retention must not remove them (plan §4).

Layout: ``<data dir>/v6x5/<sha256(server)[:16]>/node-<id>/sessions/<session id>/``. A commit
is crash-safe and may be repeated: the run's output is copied (hashed on the way) to
``{df}.parquet.run{id}``, renamed over ``{df}.parquet``, then recorded in
``.{df}.commit.json``; a repeat for the same run after the rename finds the record and does
nothing, one before it copies again. Each commit and delete gives a :class:`DataframeNote`
for the ledger: ids, name, hash, size — never a path or a value.

The source (``source.py``) commits in ``result_calls`` (after a pure-Python parquet check:
``PAR1`` at both ends), asking :meth:`SessionStore.committed` first, so a run that a
restart ran again after its commit does not commit twice; ``session_step.py`` (pyarrow, in
the algorithm's Python) reads the columns HQ is told and appends to the state file.
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

    def committed(self, session_id: int, name: str, run_id: int) -> DataframeNote | None:
        """This run's commit of the dataframe, when it is done (a restart asks first)."""
        final = self.root / str(int(session_id)) / f"{valid_dataframe_name(name)}.parquet"
        done = _read_record(final.with_name(f".{final.stem}.commit.json"))
        if done is None or done.get("run_id") != run_id or not final.is_file():
            return None
        return DataframeNote("committed", int(session_id), name, run_id,
                             str(done["sha256"]), int(done["size"]))

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

    def commit(self, session_id: int, name: str, output: Path, run_id: int, *,
               image: str = "") -> DataframeNote:
        """Make ``output`` the session's dataframe ``name`` (once per run, however often
        asked). FileNotFoundError when neither the output nor this run's commit exist.
        ``image``: the algorithm that made it (its Python later notes a delete in the
        session's state file, :meth:`made_by`)."""
        done = self.committed(session_id, name, run_id)
        if done is not None:
            return done
        final = self.dataframe_file(session_id, name)
        record = final.with_name(f".{final.stem}.commit.json")
        staged = final.with_name(f"{final.name}.run{int(run_id)}")
        sha256, size = _private_copy(output, staged)
        os.replace(staged, final)
        write_private(record, json.dumps({"run_id": run_id, "sha256": sha256, "size": size,
                                          "image": image}))
        return DataframeNote("committed", int(session_id), name, run_id, sha256, size)

    def delete_dataframe(self, session_id: int, name: str) -> DataframeNote | None:
        """Remove a dataframe (HQ's ``delete_dataframe``); None when there was none."""
        final = self.root / str(int(session_id)) / f"{valid_dataframe_name(name)}.parquet"
        if not final.is_file():
            return None
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
