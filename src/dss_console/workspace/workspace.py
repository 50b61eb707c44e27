"""ITK-SNAP workspaces (``.itksnap``): layers, roles, tags and relocation.

Behaviour follows ITK-SNAP's own code: layer enumeration and tag lookup as in
``Logic/WorkspaceAPI/WorkspaceAPI.cxx`` (what ``itksnap-wt`` does), relocation as in
``IRISApplication::OpenProject`` / ``WorkspaceAPI::GetLayerActualPath``.
"""

from __future__ import annotations

import ntpath
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .registry import RegistryFolder, WorkspaceError, read_registry, write_registry

__all__ = [
    "MAIN_ROLE",
    "OVERLAY_ROLE",
    "SEGMENTATION_ROLE",
    "WORKSPACE_VERSION",
    "Layer",
    "NewLayer",
    "Workspace",
    "WorkspaceError",
    "layer_key",
    "resolve_layer_path",
    "write_workspace",
]

MAIN_ROLE = "MainRole"
OVERLAY_ROLE = "OverlayRole"
SEGMENTATION_ROLE = "SegmentationRole"
# The only roles IRISApplication::OpenProject accepts in a workspace.
PROJECT_ROLES = (MAIN_ROLE, OVERLAY_ROLE, SEGMENTATION_ROLE)

# ITK-SNAP writes its release date here; it only checks that the entry exists
# (IRISApplication::IsProjectFile). This is the value ITK-SNAP 4.2 writes.
WORKSPACE_VERSION = "20241202"


def layer_key(index: int) -> str:
    """Registry key of layer ``index``: ``Layers.Layer[000]`` (Registry::Key's %03d)."""
    return f"Layers.Layer[{index:03d}]"


@dataclass(frozen=True)
class Layer:
    """One image layer of a workspace."""

    index: int  # n in Layers.Layer[%03d]
    role: str  # as written in the file: "MainRole", "OverlayRole", "SegmentationRole", ...
    nickname: str  # LayerMetaData.CustomNickName ("" if none)
    tags: tuple[str, ...]  # the layer's "Tags" entry, split on commas
    absolute_path: str  # AbsolutePath as recorded in the file
    path: Path  # the file ITK-SNAP would open (after relocation)

    @property
    def key(self) -> str:
        return layer_key(self.index)


@dataclass(frozen=True)
class NewLayer:
    """A layer for :func:`write_workspace`."""

    path: Path
    role: str = MAIN_ROLE
    nickname: str = ""
    tags: tuple[str, ...] = ()


def _parse_tags(value: str | None) -> tuple[str, ...]:
    # WorkspaceAPI::GetTags splits on ',' with no trimming; empty pieces are not tags.
    if not value:
        return ()
    return tuple(dict.fromkeys(t for t in value.split(",") if t))


def resolve_layer_path(absolute_path: str, save_location: str | None, workspace_dir: str) -> str:
    """The file ITK-SNAP opens for a layer, given where the workspace now lives.

    Same rule as ITK-SNAP: if the workspace's directory differs (as a string) from
    ``SaveLocation``, take the layer's path relative to ``SaveLocation`` - by plain prefix
    when it starts with it, else a ``../`` relative path - apply it to the workspace's
    directory and use that file if it exists; otherwise ``AbsolutePath``. A missing
    ``SaveLocation`` reads as "" (as in ITK-SNAP), so a relative ``AbsolutePath`` is then
    looked up next to the workspace.
    """
    saved = save_location or ""
    if workspace_dir == saved:
        return absolute_path
    relative = ""
    if absolute_path.startswith(saved):
        # ITK-SNAP's prefix test is on strings, not path components, and it converts
        # backslashes, so a workspace saved on Windows still relocates on Linux.
        relative = absolute_path[len(saved) :].replace("\\", "/").lstrip("/")
    elif os.path.isabs(saved) and os.path.isabs(absolute_path):
        try:
            relative = os.path.relpath(absolute_path, saved)
        except ValueError:  # different drives on Windows: no relative path
            relative = ""
    if relative:
        candidate = os.path.normpath(os.path.join(workspace_dir, relative))
        if os.path.isfile(candidate):
            return candidate
    return absolute_path


class Workspace:
    """A loaded ``.itksnap`` file. ``registry`` holds the whole tree for round trips."""

    def __init__(self, path: str | os.PathLike[str], registry: RegistryFolder) -> None:
        # Lexical absolute path, like itksys CollapseFullPath (symlinks are not resolved,
        # so the "has it moved?" test compares the same strings ITK-SNAP compares).
        self.path = Path(os.path.abspath(path))
        self.registry = registry
        self.save_location: str | None = registry.get("SaveLocation")
        self.layers: list[Layer] = self._read_layers()

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Workspace:
        """Read a workspace; raises WorkspaceError with a clear message on any problem."""
        return cls(path, read_registry(path))

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def moved(self) -> bool:
        """True when the file is not where it was saved (relocation applies)."""
        return str(self.directory) != (self.save_location or "")

    def resolve(self, absolute_path: str) -> Path:
        """Where a path recorded in this workspace points to now (see resolve_layer_path)."""
        found = resolve_layer_path(absolute_path, self.save_location, str(self.directory))
        if not os.path.isabs(found) and not ntpath.isabs(found):
            # ITK-SNAP would open a still-relative path against its current directory;
            # the workspace's directory is the only meaningful anchor for a worker.
            found = os.path.normpath(os.path.join(self.directory, found))
        return Path(found)

    def layer_folder(self, index: int) -> RegistryFolder:
        folder = self.registry.folder(layer_key(index))
        if folder is None:
            raise WorkspaceError(f"{self.path}: no layer {layer_key(index)}")
        return folder

    def _read_layers(self) -> list[Layer]:
        if not self.registry.has_folder("Layers"):
            raise WorkspaceError(
                f"{self.path}: not an ITK-SNAP workspace (no 'Layers' folder in the registry)"
            )
        layers = []
        index = 0
        # Layers are numbered from 000 without gaps; ITK-SNAP stops at the first gap.
        while (folder := self.registry.folder(layer_key(index))) is not None:
            absolute_path = folder.entries.get("AbsolutePath", "")
            if not absolute_path:
                raise WorkspaceError(
                    f"{self.path}: layer {layer_key(index)} has no AbsolutePath entry"
                )
            layers.append(
                Layer(
                    index=index,
                    role=folder.entries.get("Role", ""),
                    nickname=folder.get("LayerMetaData.CustomNickName") or "",
                    tags=_parse_tags(folder.entries.get("Tags")),
                    absolute_path=absolute_path,
                    path=self.resolve(absolute_path),
                )
            )
            index += 1
        if not layers:
            raise WorkspaceError(f"{self.path}: the workspace has no layers (no Layer[000])")
        return layers

    def find_layers(self, tag: str) -> list[Layer]:
        """Layers carrying ``tag`` (exact match, like ``itksnap-wt -layers-list-files``)."""
        return [layer for layer in self.layers if tag in layer.tags]

    def main_layer(self) -> Layer | None:
        """The first layer in the main role, if any."""
        return next((layer for layer in self.layers if layer.role == MAIN_ROLE), None)

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r}, layers={len(self.layers)})"


def _check_tags(tags: Sequence[str], where: str) -> tuple[str, ...]:
    if isinstance(tags, str):
        raise WorkspaceError(f"{where}: tags must be a sequence of strings, not one string")
    for tag in tags:
        if not tag or "," in tag:
            # Tags are stored comma-joined (WorkspaceAPI::PutTags refuses commas too).
            raise WorkspaceError(f"{where}: invalid tag {tag!r} (empty or containing ',')")
    return tuple(dict.fromkeys(tags))


def write_workspace(path: str | os.PathLike[str], layers: Sequence[NewLayer]) -> Path:
    """Write a workspace ITK-SNAP opens, referencing ``layers`` by absolute path.

    ``SaveLocation`` is the workspace's directory. The first layer must be the main
    image and no other may be (ITK-SNAP refuses such workspaces). The layer files are
    not checked for existence.
    """
    target = Path(os.path.abspath(path))
    if not layers:
        raise WorkspaceError("a workspace needs at least one layer (the main image)")
    registry = RegistryFolder()
    registry.set("Version", WORKSPACE_VERSION)
    registry.set("SaveLocation", str(target.parent))
    for index, layer in enumerate(layers):
        where = f"layer {index} ({layer.path})"
        if layer.role not in PROJECT_ROLES:
            raise WorkspaceError(f"{where}: role {layer.role!r} is not one of {PROJECT_ROLES}")
        if (index == 0) != (layer.role == MAIN_ROLE):
            raise WorkspaceError(f"{where}: the first layer, and only it, must be {MAIN_ROLE}")
        tags = ",".join(_check_tags(layer.tags, where))
        key = layer_key(index)
        registry.set(f"{key}.AbsolutePath", os.path.abspath(layer.path))
        registry.set(f"{key}.Role", layer.role)
        # ITK-SNAP 4.x keeps tags at layer level (read by itksnap-wt and the GUI) and
        # mirrors them in LayerMetaData; write both as it does.
        registry.set(f"{key}.Tags", tags)
        registry.set(f"{key}.LayerMetaData.Tags", tags)
        registry.set(f"{key}.LayerMetaData.CustomNickName", layer.nickname)
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_registry(target, registry)
