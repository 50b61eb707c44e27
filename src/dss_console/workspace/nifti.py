"""Minimal pure-Python NIfTI-1 reader and writer (``.nii`` and ``.nii.gz``), no numpy.

Enough for demo services and tests: scalar voxel types, header geometry, voxel data as
an :class:`array.array` in the machine's byte order (x varies fastest, as stored).
Intensity scaling (``scl_slope``/``scl_inter``) is reported, not applied.
"""

from __future__ import annotations

import array
import contextlib
import gzip
import math
import os
import secrets
import struct
import sys
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "DTYPES",
    "NiftiError",
    "NiftiHeader",
    "NiftiImage",
    "read_nifti",
    "read_nifti_header",
    "write_nifti",
]


class NiftiError(Exception):
    """The file is not a NIfTI-1 image this module can read, or the data do not fit."""


def _int32_code() -> str:
    return "i" if array.array("i").itemsize == 4 else "l"


# dtype name -> (NIfTI datatype code, array typecode, bytes per voxel)
DTYPES: dict[str, tuple[int, str, int]] = {
    "uint8": (2, "B", 1),
    "int16": (4, "h", 2),
    "int32": (8, _int32_code(), 4),
    "float32": (16, "f", 4),
    "float64": (64, "d", 8),
    "int8": (256, "b", 1),
    "uint16": (512, "H", 2),
    "uint32": (768, _int32_code().upper(), 4),
    "int64": (1024, "q", 8),
    "uint64": (1280, "Q", 8),
}
_BY_CODE = {code: name for name, (code, _, _) in DTYPES.items()}

# The 348-byte NIfTI-1 header (nifti1.h), without the 4-byte extension flag that follows.
_FIELDS = (
    "i10s18sihbb"  # sizeof_hdr, data_type, db_name, extents, session_error, regular, dim_info
    "8h"  # dim
    "3fhhhh"  # intent_p1..3, intent_code, datatype, bitpix, slice_start
    "8f"  # pixdim
    "fffhbb"  # vox_offset, scl_slope, scl_inter, slice_end, slice_code, xyzt_units
    "ffffii"  # cal_max, cal_min, slice_duration, toffset, glmax, glmin
    "80s24s"  # descrip, aux_file
    "hh"  # qform_code, sform_code
    "6f"  # quatern_b, c, d, qoffset_x, y, z
    "12f"  # srow_x, srow_y, srow_z
    "16s4s"  # intent_name, magic
)
_LITTLE = struct.Struct("<" + _FIELDS)
_BIG = struct.Struct(">" + _FIELDS)

_NIFTI_UNITS_MM = 2  # NIFTI_UNITS_MM in the low bits of xyzt_units
_NIFTI_XFORM_SCANNER_ANAT = 1
_MAX_HEADER_GAP = 1 << 24  # extensions between header and data, far beyond real use
_READ_CHUNK = 16 * 1024 * 1024

Voxels = array.array | bytes | bytearray | memoryview | Iterable[float]


@dataclass(frozen=True)
class NiftiHeader:
    """The header fields that matter for geometry and voxel access."""

    dims: tuple[int, ...]  # (nx, ny, nz, ...) - dim[1..dim[0]]
    spacing: tuple[float, ...]  # voxel size per dim (pixdim[1..dim[0]])
    dtype: str  # key of DTYPES
    datatype: int  # NIfTI datatype code
    vox_offset: int = 352
    scl_slope: float = 0.0
    scl_inter: float = 0.0
    qform_code: int = 0
    sform_code: int = 0
    quatern: tuple[float, float, float] = (0.0, 0.0, 0.0)  # b, c, d
    qoffset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    qfac: float = 1.0  # pixdim[0]
    srow: tuple[tuple[float, float, float, float], ...] = (
        (1.0, 0.0, 0.0, 0.0),
        (0.0, 1.0, 0.0, 0.0),
        (0.0, 0.0, 1.0, 0.0),
    )
    xyzt_units: int = _NIFTI_UNITS_MM
    descrip: str = ""
    byteorder: str = "<"  # of the file

    @property
    def voxel_count(self) -> int:
        return math.prod(self.dims)

    @property
    def itemsize(self) -> int:
        return DTYPES[self.dtype][2]

    @property
    def data_bytes(self) -> int:
        return self.voxel_count * self.itemsize


@dataclass
class NiftiImage:
    """Header plus voxels (machine byte order, x fastest)."""

    header: NiftiHeader
    data: array.array

    @property
    def dims(self) -> tuple[int, ...]:
        return self.header.dims

    @property
    def spacing(self) -> tuple[float, ...]:
        return self.header.spacing

    @property
    def dtype(self) -> str:
        return self.header.dtype

    def index(self, *ijk: int) -> int:
        """Flat index of voxel (i, j, k, ...)."""
        flat, stride = 0, 1
        if len(ijk) != len(self.dims):
            raise IndexError(f"{len(ijk)} coordinates for a {len(self.dims)}-D image")
        for coord, size in zip(ijk, self.dims, strict=True):
            if not 0 <= coord < size:
                raise IndexError(f"voxel {ijk} outside image of size {self.dims}")
            flat += coord * stride
            stride *= size
        return flat


def _open_read(path: Path) -> BinaryIO:
    with path.open("rb") as probe:
        magic = probe.read(2)
    # Decide by content, not name: some tools write gzip data to ".nii" and vice versa.
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _read_exact(f: BinaryIO, n: int, what: str, path: Path) -> bytes:
    # Read in chunks: a forged header must not make us allocate its claimed size up front.
    data = bytearray()
    try:
        while len(data) < n:
            chunk = f.read(min(_READ_CHUNK, n - len(data)))
            if not chunk:
                break
            data += chunk
    except (OSError, EOFError, zlib.error) as exc:
        raise NiftiError(f"{path}: cannot read {what}: {exc}") from None
    if len(data) != n:
        raise NiftiError(f"{path}: file is truncated ({what}: {len(data)} of {n} bytes)")
    return bytes(data)


def _parse_header(raw: bytes, path: Path) -> NiftiHeader:
    byteorder = "<"
    (sizeof_hdr,) = struct.unpack_from("<i", raw)
    if sizeof_hdr != 348:
        (sizeof_hdr,) = struct.unpack_from(">i", raw)
        byteorder = ">"
    if sizeof_hdr != 348:
        if struct.unpack_from("<i", raw)[0] == 540 or struct.unpack_from(">i", raw)[0] == 540:
            raise NiftiError(f"{path}: NIfTI-2 files are not supported")
        raise NiftiError(f"{path}: not a NIfTI-1 file (bad header size)")
    f = (_LITTLE if byteorder == "<" else _BIG).unpack(raw)
    magic = f[-1]
    if magic == b"ni1\x00":
        raise NiftiError(f"{path}: two-file NIfTI (.hdr/.img) is not supported")
    if magic != b"n+1\x00":
        raise NiftiError(f"{path}: not a NIfTI-1 file (magic {magic!r})")
    dim = f[7:15]
    datatype = f[19]
    pixdim = f[22:30]
    vox_offset, scl_slope, scl_inter = f[30], f[31], f[32]
    xyzt_units = f[35]
    descrip = f[42].split(b"\x00", 1)[0].decode("latin-1")
    qform_code, sform_code = f[44], f[45]
    q = f[46:52]
    srow = f[52:64]

    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise NiftiError(f"{path}: invalid number of dimensions {ndim}")
    dims = tuple(int(d) for d in dim[1 : ndim + 1])
    if any(d < 1 for d in dims):
        raise NiftiError(f"{path}: invalid dimensions {dims}")
    if datatype not in _BY_CODE:
        raise NiftiError(f"{path}: unsupported NIfTI datatype {datatype}")
    if not (math.isfinite(vox_offset) and 352 <= vox_offset <= 348 + _MAX_HEADER_GAP):
        raise NiftiError(f"{path}: invalid vox_offset {vox_offset}")
    return NiftiHeader(
        dims=dims,
        spacing=tuple(float(p) for p in pixdim[1 : ndim + 1]),
        dtype=_BY_CODE[datatype],
        datatype=datatype,
        vox_offset=int(vox_offset),
        scl_slope=scl_slope,
        scl_inter=scl_inter,
        qform_code=qform_code,
        sform_code=sform_code,
        quatern=(q[0], q[1], q[2]),
        qoffset=(q[3], q[4], q[5]),
        qfac=-1.0 if pixdim[0] < 0 else 1.0,  # nifti1.h: anything but -1 means 1
        srow=(tuple(srow[0:4]), tuple(srow[4:8]), tuple(srow[8:12])),
        xyzt_units=xyzt_units,
        descrip=descrip,
        byteorder=byteorder,
    )


def read_nifti_header(path: str | os.PathLike[str]) -> NiftiHeader:
    """Read only the header."""
    p = Path(path)
    try:
        with _open_read(p) as f:
            return _parse_header(_read_exact(f, 348, "header", p), p)
    except OSError as exc:
        raise NiftiError(f"{p}: cannot read: {exc.strerror or exc}") from None


def read_nifti(path: str | os.PathLike[str]) -> NiftiImage:
    """Read header and voxels; voxels come back in the machine's byte order."""
    p = Path(path)
    try:
        with _open_read(p) as f:
            header = _parse_header(_read_exact(f, 348, "header", p), p)
            _read_exact(f, header.vox_offset - 348, "header extensions", p)
            raw = _read_exact(f, header.data_bytes, "voxel data", p)
    except OSError as exc:
        raise NiftiError(f"{p}: cannot read: {exc.strerror or exc}") from None
    data = array.array(DTYPES[header.dtype][1])
    data.frombytes(raw)
    if (header.byteorder == "<") != (sys.byteorder == "little") and data.itemsize > 1:
        data.byteswap()
    return NiftiImage(header=header, data=data)


def _as_array(data: Voxels, dtype: str, count: int) -> array.array:
    typecode, itemsize = DTYPES[dtype][1], DTYPES[dtype][2]
    if isinstance(data, array.array):
        # A different typecode converts (and range-checks) element by element.
        arr = data if data.typecode == typecode else array.array(typecode, data)
    elif isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        if len(raw) != count * itemsize:
            raise NiftiError(
                f"{len(raw)} bytes of voxel data, expected {count} x {itemsize} for {dtype}"
            )
        arr = array.array(typecode)
        arr.frombytes(raw)  # raw bytes are taken to be in the machine's byte order
    else:
        try:
            arr = array.array(typecode, data)
        except (TypeError, OverflowError) as exc:
            raise NiftiError(f"voxel values do not fit {dtype}: {exc}") from None
    if len(arr) != count:
        raise NiftiError(f"{len(arr)} voxels given, the dimensions need {count}")
    return arr


def write_nifti(
    path: str | os.PathLike[str],
    data: Voxels,
    dims: Sequence[int],
    spacing: Sequence[float] | None = None,
    dtype: str = "int16",
    *,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    like: NiftiHeader | None = None,
    descrip: str = "",
) -> Path:
    """Write a NIfTI-1 volume; ``.gz`` in the name means gzip (deterministic: mtime 0).

    ``data`` is an ``array.array``, raw bytes in machine order, or any iterable of numbers,
    x varying fastest. Geometry: axis-aligned with voxel ``spacing`` and ``origin``, or,
    with ``like`` (e.g. the header of the image being segmented), that header's
    orientation and spacing, so a segmentation overlays its image exactly.
    """
    p = Path(path)
    if dtype not in DTYPES:
        raise NiftiError(f"unsupported dtype {dtype!r}; one of {sorted(DTYPES)}")
    dims = tuple(int(d) for d in dims)
    if not 1 <= len(dims) <= 7 or any(d < 1 or d > 32767 for d in dims):
        raise NiftiError(f"invalid dimensions {dims} (1 to 7 sizes of 1..32767)")
    if spacing is None:
        spacing = like.spacing[: len(dims)] if like is not None else ()
    spacing = tuple(float(s) for s in spacing) + (1.0,) * (len(dims) - len(spacing))
    if len(spacing) != len(dims) or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise NiftiError(f"invalid voxel spacing {spacing} for dimensions {dims}")
    arr = _as_array(data, dtype, math.prod(dims))
    code, _, itemsize = DTYPES[dtype]

    if like is not None:
        geometry = replace(like, dims=dims, spacing=spacing, dtype=dtype, datatype=code)
    else:
        ox, oy, oz = (*(float(o) for o in origin), 0.0, 0.0, 0.0)[:3]
        sx, sy, sz = (*spacing, 1.0, 1.0)[:3]
        geometry = NiftiHeader(
            dims=dims,
            spacing=spacing,
            dtype=dtype,
            datatype=code,
            qform_code=_NIFTI_XFORM_SCANNER_ANAT,
            sform_code=_NIFTI_XFORM_SCANNER_ANAT,
            quatern=(0.0, 0.0, 0.0),  # identity rotation: axes along the NIfTI world axes
            qoffset=(ox, oy, oz),
            srow=((sx, 0.0, 0.0, ox), (0.0, sy, 0.0, oy), (0.0, 0.0, sz, oz)),
        )
    dim = (len(dims), *dims) + (1,) * (7 - len(dims))
    pixdim = (geometry.qfac, *spacing) + (1.0,) * (7 - len(spacing))
    text = (descrip or geometry.descrip).encode("ascii", "replace")[:79]
    header = _LITTLE.pack(
        348, b"", b"", 0, 0, b"r"[0], 0,
        *dim,
        0.0, 0.0, 0.0, 0, code, itemsize * 8, 0,
        *pixdim,
        352.0, 1.0, 0.0, 0, 0, geometry.xyzt_units,
        0.0, 0.0, 0.0, 0.0, 0, 0,
        text, b"",
        geometry.qform_code, geometry.sform_code,
        *geometry.quatern, *geometry.qoffset,
        *geometry.srow[0], *geometry.srow[1], *geometry.srow[2],
        b"", b"n+1\x00",
    )  # fmt: skip
    if sys.byteorder != "little" and arr.itemsize > 1:
        arr = array.array(arr.typecode, arr)
        arr.byteswap()
    payload = header + b"\x00\x00\x00\x00"  # extension flag: no extensions

    # Not mkstemp: its 0600 would stick to the final file; O_EXCL keeps the create safe
    # and the process umask decides the permissions, as for any plain open().
    tmp = p.parent / f".{p.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as raw:
            if p.name.lower().endswith(".gz"):
                with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
                    gz.write(payload)
                    gz.write(arr.tobytes())
            else:
                raw.write(payload)
                raw.write(arr.tobytes())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return p
