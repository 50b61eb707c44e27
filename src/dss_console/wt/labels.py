"""Segmentation labels: ITK-SNAP's label description file and the workspace's label table.

File format (ColorLabelTable::LoadFromFile): ``#`` lines and blank lines are skipped; every
other line is ``IDX R G B A VIS MSH "LABEL"`` with A a float in 0..1. Label 0 (clear) cannot
be redefined. In the workspace the table lives in the main layer's folder under
``ProjectMetaData.IRIS.LabelTable`` as ``Element[i]`` folders (Index, Alpha 0..255, Label,
Color "R G B", Flags "MSH VIS") and ``NumberOfElements`` (ColorLabelTable::SaveToRegistry).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from dss_console.workspace import RegistryFolder

from .cmdline import WtError

__all__ = ["LABEL_TABLE_KEY", "ColorLabel", "add_labels", "clear_labels", "read_label_file",
           "read_label_table", "rename_label", "write_label_table"]

LABEL_TABLE_KEY = "ProjectMetaData.IRIS.LabelTable"
MAX_LABEL = 65535  # LabelType is an unsigned short
MAX_LABEL_FILE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ColorLabel:
    rgb: tuple[int, int, int]
    alpha: int  # 0..255
    visible: bool
    mesh: bool
    label: str


_NUMBERS = re.compile(r"\s*(-?\d+)\s+(-?\d+)\s+(-?\d+)\s+(-?\d+)\s+(\S+)\s+(-?\d+)\s+(-?\d+)")


def read_label_file(path: str | Path) -> dict[int, ColorLabel]:
    """Labels of a description file by index (0 excluded); WtError names the bad line."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_LABEL_FILE_BYTES + 1)
    except OSError as exc:
        raise WtError(f"cannot read label file {p}: {exc.strerror or exc}") from None
    if len(data) > MAX_LABEL_FILE_BYTES:
        raise WtError(f"label file {p} is larger than {MAX_LABEL_FILE_BYTES} bytes")
    text = data.decode("utf-8", errors="surrogateescape")
    labels: dict[int, ColorLabel] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _NUMBERS.match(line)
        quote = line.find('"', match.end()) if match else -1
        if match is None or quote < 0:
            raise WtError(f"label file {p}: syntax error on line {number}")
        end = line.find('"', quote + 1)
        name = line[quote + 1:] if end < 0 else line[quote + 1:end]
        index, red, green, blue = (int(match[i]) for i in range(1, 5))
        try:
            alpha = float(match[5])
        except ValueError:
            raise WtError(f"label file {p}: syntax error on line {number}") from None
        if not 0 <= index <= MAX_LABEL:
            raise WtError(f"label file {p}: label {index} on line {number} is out of range")
        if index > 0:
            # ITK-SNAP casts to unsigned char, so out-of-range colours wrap the same way.
            labels[index] = ColorLabel(rgb=(red % 256, green % 256, blue % 256),
                                       alpha=int(255 * alpha) % 256, visible=int(match[6]) != 0,
                                       mesh=int(match[7]) != 0, label=name)
    return labels


def read_label_table(main_layer: RegistryFolder) -> dict[int, ColorLabel]:
    """The label table stored in the main layer's folder (empty when there is none)."""
    table = main_layer.folder(LABEL_TABLE_KEY)
    if table is None:
        return {}
    labels: dict[int, ColorLabel] = {}
    for i in range(_int(table.entries.get("NumberOfElements"), 0)):
        element = table.folder(f"Element[{i}]")
        if element is None:
            continue
        index = _int(element.entries.get("Index"), 0)
        if not 0 < index <= MAX_LABEL:
            continue
        color = _ints(element.entries.get("Color"), 3) or (0, 0, 0)
        flags = _ints(element.entries.get("Flags"), 2) or (0, 0)
        labels[index] = ColorLabel(rgb=(color[0], color[1], color[2]),
                                   alpha=_int(element.entries.get("Alpha"), 255),
                                   visible=flags[1] > 0, mesh=flags[0] > 0,
                                   label=element.entries.get("Label", ""))
    return labels


def write_label_table(main_layer: RegistryFolder, labels: dict[int, ColorLabel]) -> None:
    """Replace the main layer's label table with ``labels`` (sorted by index)."""
    table = main_layer.folder(LABEL_TABLE_KEY, create=True)
    assert table is not None
    table.entries.clear()
    table.folders.clear()
    for i, index in enumerate(sorted(labels)):
        label = labels[index]
        table.set(f"Element[{i}].Index", str(index))
        table.set(f"Element[{i}].Alpha", str(label.alpha))
        table.set(f"Element[{i}].Label", label.label)
        table.set(f"Element[{i}].Color", " ".join(str(c) for c in label.rgb))
        table.set(f"Element[{i}].Flags", f"{int(label.mesh)} {int(label.visible)}")
    table.set("NumberOfElements", str(len(labels)))


def clear_labels(main_layer: RegistryFolder) -> None:
    write_label_table(main_layer, {})


def rename_label(pattern: str, label: str) -> str:
    """``pattern`` with its ``%s`` replaced by ``label`` (the C printf ITK-SNAP applies);
    ``%%`` is a percent sign. Other conversions are refused rather than misprinted."""
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "%":
            nxt = pattern[i + 1:i + 2]
            if nxt == "s":
                out.append(label)
            elif nxt == "%":
                out.append("%")
            else:
                raise WtError(f"label pattern {pattern!r}: only %s and %% are supported")
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def add_labels(main_layer: RegistryFolder, path: str | Path, offset: int, pattern: str) -> None:
    """Add the file's labels (shifted by ``offset``, renamed by ``pattern``) to the table."""
    labels = read_label_table(main_layer)
    for index, label in read_label_file(path).items():
        target = index + offset
        if not 0 < target <= MAX_LABEL:
            raise WtError(f"label {index} shifted by {offset} is out of range (1..{MAX_LABEL})")
        labels[target] = replace(label, label=rename_label(pattern, label.label))
    write_label_table(main_layer, labels)


def _int(text: str | None, default: int) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        return default


def _ints(text: str | None, count: int) -> tuple[int, ...] | None:
    parts = (text or "").split()
    if len(parts) != count:
        return None
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        return None
