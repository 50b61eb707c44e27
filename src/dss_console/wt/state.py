"""The one current workspace of an itksnap-wt run, as WorkspaceAPI keeps it.

Unlike :class:`dss_console.workspace.Workspace` (a finished file to read), this is a
registry being built: it may start empty (``-layers-set-main`` without ``-i``), layers are
addressed by registry key (``Layers.Layer[001]``), and paths are resolved against where
the file was read from, as WorkspaceAPI::GetLayerActualPath does.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from dss_console.workspace import (
    MAIN_ROLE,
    OVERLAY_ROLE,
    SEGMENTATION_ROLE,
    RegistryFolder,
    Workspace,
    WorkspaceError,
    resolve_layer_path,
)
from dss_console.workspace.registry import read_registry, write_registry
from dss_console.workspace.workspace import WORKSPACE_VERSION, layer_key

from .cmdline import WtError

__all__ = ["ANATOMICAL_ROLE", "WtWorkspace"]

ANATOMICAL_ROLE = "AnatomicalRole"  # main, or overlay when there is a main already
_KEY_RE = re.compile(r"Layers\.Layer\[[0-9]+\]")
_NUMBER_SPEC = re.compile(r"^([0-9]+)$")
_ROLE_SPEC = re.compile(r"^([a-zA-Z]+):(-*[0-9]+)$")


class WtWorkspace:
    """Registry + where it was read from; empty until ``-i`` or a layer command."""

    def __init__(self) -> None:
        self.registry = RegistryFolder()
        self.file_path = ""  # absolute path of the file read or last written
        self.file_dir = ""
        self.saved_dir = ""  # its SaveLocation

    def copy(self) -> WtWorkspace:
        """An independent copy (saving it leaves this one's file and state untouched)."""
        twin = WtWorkspace()
        twin.registry = self.registry.copy()
        twin.file_path, twin.file_dir, twin.saved_dir = (self.file_path, self.file_dir,
                                                         self.saved_dir)
        return twin

    # -- files ------------------------------------------------------------------------
    def read(self, path: str) -> None:
        try:
            self.registry = read_registry(path)
        except WorkspaceError as exc:
            raise WtError(str(exc)) from None
        self.file_path = os.path.abspath(path)
        self.file_dir = os.path.dirname(self.file_path)
        self.saved_dir = self.registry.get("SaveLocation") or ""

    def save(self, path: str) -> Path:
        """WorkspaceAPI::SaveAsXMLFile: Version, SaveLocation, actual layer paths; written
        to a temporary name and renamed, so a failure leaves no partial file."""
        target = os.path.abspath(path)
        directory = os.path.dirname(target)
        self.registry.set("Version", WORKSPACE_VERSION)
        self.registry.set("SaveLocation", directory)
        self.set_actual_paths()
        try:
            written = write_registry(target, self.registry)
        except OSError as exc:
            raise WtError(f"cannot write {target}: {exc.strerror or exc}") from None
        except WorkspaceError as exc:
            raise WtError(str(exc)) from None
        self.file_path, self.file_dir, self.saved_dir = target, directory, directory
        return written

    def require_loaded(self) -> None:
        """Refuse to send nothing: itksnap-wt would export and upload a workspace without
        images (the user's result or input empty) and name no cause."""
        if not self.file_path and self.layer_count() == 0:
            raise WtError("no workspace loaded: read one with -i WORKSPACE (or add layers) "
                          "before this command")

    def as_workspace(self) -> Workspace:
        """A frozen copy for export and upload, with layer paths already resolved."""
        self.require_loaded()
        copy = self.registry.copy()
        directory = self.file_dir or os.getcwd()
        for i in range(self.layer_count()):
            folder = copy.folder(layer_key(i))
            assert folder is not None
            folder.entries["AbsolutePath"] = self.actual_path(self.layer_folder(layer_key(i)))
        copy.set("SaveLocation", directory)
        try:
            return Workspace(self.file_path or os.path.join(directory, "workspace.itksnap"),
                             copy)
        except WorkspaceError as exc:
            raise WtError(str(exc)) from None

    # -- layers -----------------------------------------------------------------------
    def layer_count(self) -> int:
        n = 0
        while self.registry.has_folder(layer_key(n)):
            n += 1
        return n

    def layer_folder(self, key: str) -> RegistryFolder:
        folder = self.registry.folder(key) if key else None
        if folder is None:
            raise WtError(f"layer folder {key or '(none picked)'} does not exist")
        return folder

    def is_valid_layer(self, key: str) -> bool:
        folder = self.registry.folder(key) if key else None
        return (bool(_KEY_RE.search(key)) and folder is not None
                and "AbsolutePath" in folder.entries and "Role" in folder.entries)

    def require_layer(self, key: str) -> RegistryFolder:
        if not self.is_valid_layer(key):
            raise WtError(f"selected object {key or '(none picked)'} is not a valid layer")
        return self.layer_folder(key)

    def actual_path(self, folder: RegistryFolder) -> str:
        recorded = folder.entries.get("AbsolutePath", "")
        if self.file_dir == self.saved_dir:
            return recorded
        return resolve_layer_path(recorded, self.saved_dir, self.file_dir)

    def set_actual_paths(self) -> None:
        for i in range(self.layer_count()):
            folder = self.layer_folder(layer_key(i))
            folder.entries["AbsolutePath"] = self.actual_path(folder)

    def find_by_role(self, role: str, position: int = 0) -> str:
        """WorkspaceAPI::FindLayerByRole: the key of the position-th layer in ``role``
        (negative: from the end), or "" when there is none."""
        n = self.layer_count()
        # Faithful to ITK-SNAP: counting from the end stops before layer 000 (the main
        # image), so "A:-1" never names the main image.
        indices = range(n) if position >= 0 else range(n - 1, 0, -1)
        count = 0 if position >= 0 else 1
        for i in indices:
            have = self.layer_folder(layer_key(i)).entries.get("Role", "")
            if (have == role or role == "AnyRole"
                    or (role == ANATOMICAL_ROLE and have in (MAIN_ROLE, OVERLAY_ROLE))):
                if count == abs(position):
                    return layer_key(i)
                count += 1
        return ""

    def spec_to_key(self, spec: str) -> str:
        """A layer id (``003``, ``M``/``main``, ``S``/``seg``, ``O:N``, ``A:N``) as a key."""
        key = ""
        if m := _NUMBER_SPEC.match(spec):
            key = layer_key(int(m[1]))
        elif spec in ("M", "m", "main"):
            key = self.find_by_role(MAIN_ROLE)
        elif spec in ("S", "s", "seg"):
            key = self.find_by_role(SEGMENTATION_ROLE)
        elif m := _ROLE_SPEC.match(spec):
            kind, number = m[1], m[2]
            try:
                position = int(number.lstrip("-") or "0") * (-1 if number.startswith("-") else 1)
            except ValueError:
                position = 0
            if kind in ("A", "a", "anat"):
                key = self.find_by_role(ANATOMICAL_ROLE, position)
            elif kind in ("O", "o", "overlay"):
                key = self.find_by_role(OVERLAY_ROLE, position)
        if key and self.registry.has_folder(key):
            return key
        raise WtError(f"layer specification {spec} not found in workspace")

    def add_layer(self, role: str, filename: str) -> str:
        """WorkspaceAPI::AddLayer: append a layer; "AnatomicalRole" means main or overlay."""
        has_main = bool(self.find_by_role(MAIN_ROLE))
        if role == MAIN_ROLE and has_main:
            raise WtError(f"a workspace cannot have more than one image in the {role} role")
        if role == ANATOMICAL_ROLE:
            role = OVERLAY_ROLE if has_main else MAIN_ROLE
        if role != MAIN_ROLE and not has_main:
            raise WtError(f"cannot add image in {role} role to a workspace without main image")
        key = layer_key(self.layer_count())
        self._fill_layer(key, role, filename)
        return key

    def set_layer(self, role: str, filename: str) -> str:
        """WorkspaceAPI::SetLayer: replace the first layer in ``role`` (or add one)."""
        key = self.find_by_role(role)
        if not key:
            return self.add_layer(role, filename)
        folder = self.layer_folder(key)
        folder.entries.clear()
        folder.folders.clear()
        self._fill_layer(key, role, filename)
        return key

    def _fill_layer(self, key: str, role: str, filename: str) -> None:
        folder = self.registry.folder(key, create=True)
        assert folder is not None
        folder.set("AbsolutePath", os.path.abspath(filename))
        folder.set("Role", role)
        if role == MAIN_ROLE:
            dims = _image_dimensions(filename)
            if dims is not None:
                # Older ITK-SNAP versions need the main image's size to read the metadata.
                folder.set("ProjectMetaData.Files.Grey.Dimensions", dims)

    # -- tags -------------------------------------------------------------------------
    @staticmethod
    def tags(folder: RegistryFolder) -> list[str]:
        """WorkspaceAPI::GetTags: the "Tags" entry split on commas, as a sorted set."""
        value = folder.entries.get("Tags")
        if value is None:
            return []
        return sorted(set(value.split(",")) - {""})

    @staticmethod
    def put_tags(folder: RegistryFolder, tags: set[str]) -> None:
        for tag in tags:
            if "," in tag:
                raise WtError(f"commas are not allowed in tags. Offending tag: {tag}")
        value = ",".join(sorted(tags))
        folder.entries["Tags"] = value
        # ITK-SNAP 4 mirrors a layer's tags in LayerMetaData.Tags (what the GUI reads);
        # keep the two in step where the mirror exists.
        meta = folder.folders.get("LayerMetaData")
        if meta is not None and "Tags" in meta.entries:
            meta.entries["Tags"] = value

    def scrub_tag(self, folder: RegistryFolder, tag: str) -> None:
        """Remove ``tag`` from every folder below ``folder`` that has tags."""
        for child in folder.folders.values():
            self.scrub_tag(child, tag)
        if "Tags" in folder.entries:
            self.put_tags(folder, set(self.tags(folder)) - {tag})

    def layers_with_tag(self, tag: str) -> list[str]:
        return [layer_key(i) for i in range(self.layer_count())
                if tag in self.tags(self.layer_folder(layer_key(i)))]


def _image_dimensions(filename: str) -> str | None:
    """"X Y Z" of a NIfTI image; None for a format this package cannot read."""
    from dss_console.workspace.nifti import NiftiError, read_nifti_header

    lower = filename.lower()
    if not (lower.endswith(".nii") or lower.endswith(".nii.gz")):
        return None
    try:
        dims = list(read_nifti_header(filename).dims[:3])
    except (NiftiError, OSError) as exc:
        raise WtError(f"cannot read image header of {filename}: {exc}") from None
    dims += [0] * (3 - len(dims))  # Vector3i dims(0), as ITK-SNAP fills it
    return " ".join(str(d) for d in dims)
