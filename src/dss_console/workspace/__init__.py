"""ITK-SNAP workspaces (``.itksnap`` XML registries) and a minimal NIfTI reader/writer.

No Qt, no numpy: the worker and the GUI both use this package.
"""

from .export import (
    ExportedWorkspace,
    export_result_workspace,
    layer_file_extension,
    result_workspace_name,
)
from .registry import RegistryError, RegistryFolder, WorkspaceError
from .workspace import (
    MAIN_ROLE,
    OVERLAY_ROLE,
    SEGMENTATION_ROLE,
    Layer,
    NewLayer,
    Workspace,
    resolve_layer_path,
    write_workspace,
)

__all__ = [
    "MAIN_ROLE",
    "OVERLAY_ROLE",
    "SEGMENTATION_ROLE",
    "ExportedWorkspace",
    "Layer",
    "NewLayer",
    "RegistryError",
    "RegistryFolder",
    "Workspace",
    "WorkspaceError",
    "export_result_workspace",
    "layer_file_extension",
    "resolve_layer_path",
    "result_workspace_name",
    "write_workspace",
]
