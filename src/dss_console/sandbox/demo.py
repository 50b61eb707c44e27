"""Demo content of the sandbox: a provider, a one-tag service and ITK-SNAP ticket workspaces.

The tags follow real DSS services (e.g. ASHS's ``T2-MRI``/``T1-MRI``): a service finds its
inputs in the workspace by layer tag, and the tag with type ``MainImage`` must be the
workspace's main image.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import shutil
from pathlib import Path
from typing import Any

from dss_console.workspace import MAIN_ROLE, NewLayer, write_workspace

DEMO_PROVIDER = "sandboxlab"
DEMO_USER = "test@example.com"
"""The end user owning the demo tickets and the provider user of DEMO_PROVIDER."""

DEMO_SERVICE_NAME = "DemoSegmentation"
DEMO_SERVICE_VERSION = "1.0.0"
DEMO_SERVICE_SHORTDESC = "Sandbox demo service: segments a T1-weighted brain MRI"
DEMO_SERVICE_LONGDESC = (
    "A demonstration service of the dss-console sandbox. Each ticket holds one small "
    "T1-weighted MRI tagged T1-MRI as the main image of an ITK-SNAP workspace; the "
    "provider's command is expected to write a result workspace with a segmentation."
)
DEMO_MAIN_TAG = "T1-MRI"
DEMO_SERVICE_TAGS: tuple[dict[str, Any], ...] = (
    {
        "name": DEMO_MAIN_TAG,
        "type": "MainImage",
        "hint": "T1-weighted MRI scan of the brain. This scan must be the main image.",
        "required": True,
    },
)

SAMPLE_IMAGE_NAME = "demo_t1.nii.gz"


def sample_image_bytes() -> bytes:
    """The bundled sample image (works installed, editable, or inside a frozen bundle)."""
    resource = importlib.resources.files("dss_console.resources") / "sample_data"
    return (resource / SAMPLE_IMAGE_NAME).read_bytes()


def make_demo_ticket_files(directory: Path | str, ticket_id: int) -> list[Path]:
    """Write ticket ``ticket_id``'s input files into ``directory``; workspace first.

    The list is in upload order: the server lists a ticket's files by mtime, so uploading
    the workspace first makes it index 0, as ITK-SNAP's own submissions do.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = sample_image_bytes()
    # ITK-SNAP uploads layers as layer_%03d_<md5>.nii.gz so file names reveal nothing about
    # the subject; the md5 here is of the file, not the voxel buffer, which is close enough.
    layer = directory / f"layer_000_{hashlib.md5(data).hexdigest()}.nii.gz"
    layer.write_bytes(data)
    workspace = directory / f"ticket_{ticket_id:08d}.itksnap"
    write_workspace(
        workspace,
        [NewLayer(path=layer, role=MAIN_ROLE, nickname="T1", tags=(DEMO_MAIN_TAG,))],
    )
    return [workspace, layer]


def remove_demo_ticket_files(directory: Path | str) -> None:
    """Remove a staging directory made by make_demo_ticket_files (after upload)."""
    shutil.rmtree(directory, ignore_errors=True)
