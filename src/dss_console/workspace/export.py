"""Export of a result workspace for upload, with anonymised layer file names.

ITK-SNAP's ``WorkspaceAPI::ExportWorkspace``/``UploadWorkspace`` re-save each layer as
``layer_%03d_<md5>.nii.gz`` next to ``ticket_%08d_results.itksnap``, point ``AbsolutePath``
there and set ``SaveLocation`` to the export directory. We keep the files as they are
(no image library needed, and nothing is re-encoded), so the extension is the file's own,
and the hex part is a SHA-256 of the file's identity (ticket, layer, inode, size, mtime)
rather than of its bytes: the names only anonymise (nothing reads the hash back), and a
hash of the bytes would delay every upload by a full read of the file.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .registry import WorkspaceError, write_registry
from .workspace import WORKSPACE_VERSION, Workspace, layer_key

__all__ = [
    "CHUNK_SIZE",
    "ExportedWorkspace",
    "export_result_workspace",
    "layer_file_extension",
    "result_workspace_name",
]

CHUNK_SIZE = 1024 * 1024

# A second suffix is kept only in front of a compression suffix: "nii.gz", "img.gz".
_COMPRESSION_SUFFIXES = frozenset({"gz", "bz2", "xz", "zst", "z"})
_SUFFIX_RE = re.compile(r"[a-z0-9]{1,16}")


def layer_file_extension(path: str | os.PathLike[str]) -> str:
    """The extension to keep when renaming a layer file: "nii.gz", "nii", "mha", "" ...

    Lower-cased; parts that are not short alphanumerics are dropped so an upload name
    can never carry odd characters.
    """
    # A leading dot marks a hidden file, not an extension.
    parts = os.path.basename(os.fspath(path)).lower().lstrip(".").split(".")[1:]
    if not parts or not _SUFFIX_RE.fullmatch(parts[-1]):
        return ""
    if len(parts) >= 2 and parts[-1] in _COMPRESSION_SUFFIXES and _SUFFIX_RE.fullmatch(parts[-2]):
        return f"{parts[-2]}.{parts[-1]}"
    return parts[-1]


def result_workspace_name(ticket_id: int) -> str:
    """``ticket_%08d_results.itksnap``, the name itksnap-wt uploads results under."""
    return f"ticket_{ticket_id:08d}_results.itksnap"


@dataclass(frozen=True)
class ExportedWorkspace:
    """What to upload: layer files first, the workspace file last."""

    workspace_file: Path  # ticket_%08d_results.itksnap inside out_dir
    uploads: list[tuple[str, Path]]  # (upload name, local file) in upload order


def _layer_token(path: Path, ticket_id: int, index: int) -> str:
    """The hex part of a layer's upload name: anonymous (nothing of the file's name), fixed
    for one file (re-exporting an export finds its layers under the same names), and read
    from the file's metadata, not its bytes. A hash of the bytes would have to be finished
    before the upload can start (the name goes first), which made the upload of a 256 MiB
    result 1.6x `curl -F`; with this it is what the bytes cost (benchmarks/transfer.py)."""
    st = path.stat()
    identity = f"{ticket_id}\0{index}\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}"
    return hashlib.sha256(identity.encode("ascii")).hexdigest()


def _place_copy(source: Path, dest: Path) -> None:
    if dest.exists():
        if os.path.samefile(source, dest):
            return  # re-exporting an export: the file is already there under this name
        dest.unlink()
    try:
        os.link(source, dest)  # instant and free when on the same file system
    except OSError:
        shutil.copyfile(source, dest)


def export_result_workspace(
    workspace: str | os.PathLike[str] | Workspace,
    out_dir: str | os.PathLike[str],
    ticket_id: int,
    *,
    copy_layers: bool = False,
    progress: Callable[[int, int], None] | None = None,
    workspace_name: str | None = None,
) -> ExportedWorkspace:
    """Write ``out_dir/ticket_%08d_results.itksnap`` referring to renamed layer files.

    Layer ``i`` is named ``layer_%03d_<token>.<ext>`` (see ``_layer_token``); its ``AbsolutePath``
    becomes ``out_dir/<that name>`` and ``SaveLocation`` becomes ``out_dir``, everything
    else is kept, so ITK-SNAP's relocation finds the layers wherever the user downloads
    the files. With ``copy_layers`` the files are hard-linked (or copied) into
    ``out_dir``; without, the uploads point at the original files, to be sent under the
    new names. ``progress(bytes_done, total_bytes)`` reports the layers placed. ``workspace_name``
    replaces ``ticket_%08d_results.itksnap`` (a ticket's inputs are ``ticket_%08d.itksnap``,
    an ``itksnap-wt -a`` archive takes the name given).
    """
    if isinstance(ticket_id, bool) or not isinstance(ticket_id, int) or ticket_id < 0:
        raise ValueError(f"ticket_id must be a non-negative int, not {ticket_id!r}")
    ws = workspace if isinstance(workspace, Workspace) else Workspace.load(workspace)
    out = Path(os.path.abspath(out_dir))

    sources: list[Path] = []
    for layer in ws.layers:
        if not layer.path.is_file():
            recorded = (
                f" (recorded as {layer.absolute_path})"
                if layer.absolute_path != str(layer.path)
                else ""
            )
            raise WorkspaceError(
                f"{ws.path}: layer {layer.index} ({layer.nickname or layer.role or 'no role'}) "
                f"file {layer.path}{recorded} does not exist or is not a regular file"
            )
        sources.append(layer.path)
    total = sum(p.stat().st_size for p in sources)

    registry = ws.registry.copy()
    registry.set("SaveLocation", str(out))
    if not registry.has_entry("Version"):
        # ITK-SNAP only treats a file as a workspace if it has Version and SaveLocation.
        registry.set("Version", WORKSPACE_VERSION)

    uploads: list[tuple[str, Path]] = []
    done = 0
    try:
        out.mkdir(parents=True, exist_ok=True)
        if progress is not None:
            progress(0, total)
        for layer, source in zip(ws.layers, sources, strict=True):
            token = _layer_token(source, ticket_id, layer.index)
            done += source.stat().st_size
            if progress is not None:
                progress(done, total)
            ext = layer_file_extension(source)
            name = f"layer_{layer.index:03d}_{token}" + (f".{ext}" if ext else "")
            registry.set(f"{layer_key(layer.index)}.AbsolutePath", str(out / name))
            if copy_layers:
                _place_copy(source, out / name)
                uploads.append((name, out / name))
            else:
                uploads.append((name, source))

        ws_name = workspace_name or result_workspace_name(ticket_id)
        ws_file = write_registry(out / ws_name, registry)
    except OSError as exc:
        # A file vanishing mid-export, a full disk: report it as the export failing.
        where = f" ({exc.filename})" if exc.filename else ""
        raise WorkspaceError(
            f"exporting {ws.path} to {out} failed: {exc.strerror or exc}{where}"
        ) from exc
    uploads.append((ws_name, ws_file))
    return ExportedWorkspace(workspace_file=ws_file, uploads=uploads)
