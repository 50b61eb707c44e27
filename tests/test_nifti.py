"""The pure-Python NIfTI-1 reader/writer and the shipped sample image."""

from __future__ import annotations

import array
import gzip
import importlib.resources
import importlib.util
import struct
from pathlib import Path

import pytest

from dss_console.workspace import nifti
from dss_console.workspace.nifti import (
    DTYPES,
    NiftiError,
    read_nifti,
    read_nifti_header,
    write_nifti,
)

SAMPLE_DIR = Path(str(importlib.resources.files("dss_console.resources"))) / "sample_data"
SAMPLE = SAMPLE_DIR / "demo_t1.nii.gz"

# Extremes and a few ordinary values per type, so range and sign handling are exercised.
VALUES = {
    "uint8": [0, 1, 127, 128, 255],
    "int8": [-128, -1, 0, 1, 127],
    "int16": [-32768, -1, 0, 1, 32767],
    "uint16": [0, 1, 32768, 65534, 65535],
    "int32": [-(2**31), -1, 0, 1, 2**31 - 1],
    "uint32": [0, 1, 2**31, 2**32 - 2, 2**32 - 1],
    "int64": [-(2**63), -1, 0, 1, 2**63 - 1],
    "uint64": [0, 1, 2**63, 2**64 - 2, 2**64 - 1],
    "float32": [-1.5, 0.0, 0.25, 3.0e38, -7.0],
    "float64": [-1.5e300, 0.0, 0.1, 1.0e-300, 42.0],
}


def raw_header(path: Path) -> bytes:
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        return f.read(352)


@pytest.mark.parametrize("ext", ["nii", "nii.gz"])
@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_round_trip_every_dtype(tmp_path: Path, dtype: str, ext: str) -> None:
    dims = (5, 3, 2)
    base = VALUES[dtype]
    values = [base[n % len(base)] for n in range(30)]
    path = write_nifti(tmp_path / f"img.{ext}", values, dims, (0.5, 0.75, 2.0), dtype)

    img = read_nifti(path)

    assert img.dtype == dtype
    assert img.dims == dims
    assert img.spacing == (0.5, 0.75, 2.0)
    assert img.header.datatype == DTYPES[dtype][0]
    if dtype == "float32":
        assert list(img.data) == [struct.unpack("f", struct.pack("f", v))[0] for v in values]
    else:
        assert list(img.data) == values
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == ext.endswith("gz")


def test_header_fields_on_disk(tmp_path: Path) -> None:
    path = write_nifti(
        tmp_path / "h.nii", range(24), (2, 3, 4), (1.5, 2.0, 3.0), "int16", origin=(-1, 2, 5)
    )
    raw = raw_header(path)

    assert len(path.read_bytes()) == 352 + 24 * 2
    assert struct.unpack_from("<i", raw, 0)[0] == 348
    assert struct.unpack_from("<8h", raw, 40) == (3, 2, 3, 4, 1, 1, 1, 1)
    assert struct.unpack_from("<hh", raw, 70) == (4, 16)  # datatype INT16, bitpix
    assert struct.unpack_from("<4f", raw, 76) == (1.0, 1.5, 2.0, 3.0)  # qfac, pixdim
    assert struct.unpack_from("<f", raw, 108)[0] == 352.0  # vox_offset
    assert struct.unpack_from("<hh", raw, 252) == (1, 1)  # qform_code, sform_code
    assert struct.unpack_from("<4f", raw, 280) == (1.5, 0.0, 0.0, -1.0)  # srow_x
    assert struct.unpack_from("<4f", raw, 312) == (0.0, 0.0, 3.0, 5.0)  # srow_z
    assert raw[344:348] == b"n+1\x00"

    header = read_nifti_header(path)
    assert header.qoffset == (-1.0, 2.0, 5.0)
    assert header.quatern == (0.0, 0.0, 0.0)
    assert header.srow[1] == (0.0, 2.0, 0.0, 2.0)
    assert header.voxel_count == 24
    assert header.data_bytes == 48


def test_gzip_output_is_deterministic(tmp_path: Path) -> None:
    a = write_nifti(tmp_path / "a.nii.gz", range(64), (4, 4, 4), None, "uint8")
    b = write_nifti(tmp_path / "b.nii.gz", range(64), (4, 4, 4), None, "uint8")

    assert a.read_bytes() == b.read_bytes()
    assert read_nifti(a).spacing == (1.0, 1.0, 1.0)


def test_like_copies_geometry_for_a_segmentation(tmp_path: Path) -> None:
    image = write_nifti(
        tmp_path / "t1.nii.gz", [7] * 60, (3, 4, 5), (0.9, 0.8, 2.5), "float32", origin=(4, 5, 6)
    )
    ref = read_nifti_header(image)

    seg = write_nifti(tmp_path / "seg.nii.gz", [0, 1] * 30, ref.dims, dtype="uint8", like=ref)
    got = read_nifti_header(seg)

    assert got.dtype == "uint8"
    assert got.spacing == ref.spacing
    assert got.srow == ref.srow
    assert got.qoffset == ref.qoffset
    assert (got.qform_code, got.sform_code) == (ref.qform_code, ref.sform_code)


def test_accepts_array_and_raw_bytes(tmp_path: Path) -> None:
    data = array.array("h", [1, -2, 3, -4, 5, -6])
    from_array = read_nifti(write_nifti(tmp_path / "a.nii", data, (6,), dtype="int16"))
    from_bytes = read_nifti(write_nifti(tmp_path / "b.nii", data.tobytes(), (6,), dtype="int16"))
    converted = read_nifti(write_nifti(tmp_path / "c.nii", data, (6,), dtype="float32"))

    assert from_array.data == data
    assert from_bytes.data == data
    assert list(converted.data) == [1.0, -2.0, 3.0, -4.0, 5.0, -6.0]


def test_index_is_x_fastest(tmp_path: Path) -> None:
    img = read_nifti(write_nifti(tmp_path / "i.nii", range(24), (2, 3, 4), dtype="int16"))

    assert img.data[img.index(1, 0, 0)] == 1
    assert img.data[img.index(0, 1, 0)] == 2
    assert img.data[img.index(0, 0, 1)] == 6
    assert img.data[img.index(1, 2, 3)] == 23
    with pytest.raises(IndexError):
        img.index(2, 0, 0)


def test_reads_big_endian_and_skips_extensions(tmp_path: Path) -> None:
    fields = list(
        nifti._LITTLE.unpack(raw_header(write_nifti(tmp_path / "x.nii", [0], (1,)))[:348])
    )
    fields[7:15] = (3, 2, 2, 1, 1, 1, 1, 1)  # dim
    fields[19:21] = (4, 16)  # int16
    fields[30] = 360.0  # vox_offset: an 8-byte extension follows the flag
    header = nifti._BIG.pack(*fields)
    values = [1, -300, 32767, -32768]
    path = tmp_path / "be.nii"
    path.write_bytes(header + b"\x01\x00\x00\x00" + b"EXTENSIO" + struct.pack(">4h", *values))

    img = read_nifti(path)

    assert img.header.byteorder == ">"
    assert img.header.vox_offset == 360
    assert img.dims == (2, 2, 1)
    assert list(img.data) == values


def test_content_decides_compression_not_the_name(tmp_path: Path) -> None:
    gz = write_nifti(tmp_path / "real.nii.gz", range(8), (2, 2, 2), dtype="uint8")
    misnamed = tmp_path / "misnamed.nii"
    misnamed.write_bytes(gz.read_bytes())

    assert list(read_nifti(misnamed).data) == list(range(8))


def test_errors(tmp_path: Path) -> None:
    good = write_nifti(tmp_path / "g.nii", range(8), (2, 2, 2), dtype="int16")
    truncated = tmp_path / "t.nii"
    truncated.write_bytes(good.read_bytes()[:-3])
    not_nifti = tmp_path / "n.nii"
    not_nifti.write_bytes(b"hello" * 100)
    bad_magic = tmp_path / "m.nii"
    bad_magic.write_bytes(good.read_bytes()[:344] + b"xyz\x00" + good.read_bytes()[348:])
    rgb = tmp_path / "rgb.nii"
    raw = bytearray(good.read_bytes())
    struct.pack_into("<h", raw, 70, 128)  # DT_RGB24
    rgb.write_bytes(bytes(raw))
    broken_gz = tmp_path / "b.nii.gz"
    broken_gz.write_bytes(gzip.compress(good.read_bytes())[:-40])

    with pytest.raises(NiftiError, match="truncated"):
        read_nifti(truncated)
    with pytest.raises(NiftiError, match="not a NIfTI-1"):
        read_nifti(not_nifti)
    with pytest.raises(NiftiError, match="magic"):
        read_nifti(bad_magic)
    with pytest.raises(NiftiError, match="datatype 128"):
        read_nifti(rgb)
    with pytest.raises(NiftiError):
        read_nifti(broken_gz)
    with pytest.raises(NiftiError, match="cannot read"):
        read_nifti(tmp_path / "missing.nii")
    with pytest.raises(NiftiError, match="7 voxels"):
        write_nifti(tmp_path / "w.nii", range(7), (2, 2, 2))
    with pytest.raises(NiftiError, match="bytes of voxel data"):
        write_nifti(tmp_path / "w.nii", b"\x00" * 15, (2, 2, 2), dtype="int16")
    with pytest.raises(NiftiError, match="do not fit"):
        write_nifti(tmp_path / "w.nii", [256], (1,), dtype="uint8")
    with pytest.raises(NiftiError, match="unsupported dtype"):
        write_nifti(tmp_path / "w.nii", [1], (1,), dtype="complex64")
    with pytest.raises(NiftiError, match="spacing"):
        write_nifti(tmp_path / "w.nii", [1], (1,), spacing=(0.0,))
    assert not (tmp_path / "w.nii").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_sample_image() -> None:
    img = read_nifti(SAMPLE)

    assert SAMPLE.stat().st_size < 150 * 1024
    assert img.dims == (48, 48, 32)
    assert img.dtype == "int16"
    assert img.spacing == (1.0, 1.0, 1.5)
    assert img.header.sform_code == 1
    organ = img.data[img.index(24, 24, 16)]
    shell = img.data[img.index(24, 24 + 12, 16)]  # 1.2 radii out along y
    background = img.data[img.index(1, 1, 1)]
    assert 860 <= organ <= 940
    assert 340 <= shell <= 420
    assert 100 <= background <= 140
    assert min(img.data) >= 100 and max(img.data) <= 920


def test_sample_image_is_reproducible_from_its_script(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "make_demo_image", SAMPLE_DIR / "make_demo_image.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    regenerated = module.write_demo_image(tmp_path / "demo.nii.gz")

    assert read_nifti(regenerated).data == read_nifti(SAMPLE).data
    assert read_nifti_header(regenerated) == read_nifti_header(SAMPLE)
