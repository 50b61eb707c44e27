"""Generate ``demo_t1.nii.gz``: a small, deterministic synthetic "T1" volume.

48 x 48 x 32 voxels of int16, 1 x 1 x 1.5 mm: a bright ellipsoid "organ" inside a darker
shell, on a dim background with a little noise. The noise comes from a fixed integer
generator, so the voxels are the same on every machine and Python version.

Run from the repository: ``python resources/sample_data/make_demo_image.py [OUT]``.
"""

from __future__ import annotations

import array
import sys
from pathlib import Path

from dss_console.workspace.nifti import write_nifti

DIMS = (48, 48, 32)
SPACING = (1.0, 1.0, 1.5)
ORIGIN = (-23.5, -23.5, -23.25)  # centre the volume on the world origin
CENTER = (23.5, 23.5, 15.5)
ORGAN_RADII = (13.0, 10.0, 8.0)  # voxels
SHELL = 1.3  # the shell extends to this multiple of the organ's radii

BACKGROUND, SHELL_LEVEL, ORGAN_LEVEL = 120, 380, 900
NOISE = 40  # peak-to-peak amplitude
SEED = 20240601


def _noise(count: int, seed: int = SEED) -> array.array:
    """``count`` integers in [-NOISE/2, NOISE/2] from a 32-bit xorshift generator."""
    out = array.array("h")
    state = seed & 0xFFFFFFFF
    for _ in range(count):
        state ^= (state << 13) & 0xFFFFFFFF
        state ^= state >> 17
        state ^= (state << 5) & 0xFFFFFFFF
        out.append(state % (NOISE + 1) - NOISE // 2)
    return out


def make_demo_volume() -> array.array:
    """The voxels, x fastest, as int16."""
    nx, ny, nz = DIMS
    noise = _noise(nx * ny * nz)
    data = array.array("h", bytes(2 * nx * ny * nz))
    n = 0
    for k in range(nz):
        dz = (k - CENTER[2]) / ORGAN_RADII[2]
        for j in range(ny):
            dy = (j - CENTER[1]) / ORGAN_RADII[1]
            for i in range(nx):
                dx = (i - CENTER[0]) / ORGAN_RADII[0]
                r2 = dx * dx + dy * dy + dz * dz
                if r2 <= 1.0:
                    level = ORGAN_LEVEL
                elif r2 <= SHELL * SHELL:
                    level = SHELL_LEVEL
                else:
                    level = BACKGROUND
                data[n] = level + noise[n]
                n += 1
    return data


def write_demo_image(path: str | Path) -> Path:
    """Write the demo volume to ``path`` (``.nii`` or ``.nii.gz``)."""
    return write_nifti(
        path,
        make_demo_volume(),
        DIMS,
        SPACING,
        "int16",
        origin=ORIGIN,
        descrip="dss-console synthetic demo T1",
    )


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).with_name("demo_t1.nii.gz")
    written = write_demo_image(out)
    print(f"wrote {written} ({written.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
