"""Reading a ledger file: its last line, the lines past an offset, every line with its
offset. Read-only; nothing here trusts what it reads (verify judges it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

_CHUNK = 1 << 16


def last_line(path: Path, size: int | None = None) -> bytes:
    """The file's last line (without its newline), read backwards from the end."""
    with open(path, "rb") as handle:
        end = handle.seek(0, os.SEEK_END) if size is None else size
        data = b""
        position = end
        while position > 0:
            step = min(_CHUNK, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
            body = data.rstrip(b"\n")
            cut = body.rfind(b"\n")
            if cut >= 0:
                return body[cut + 1:]
        return data.rstrip(b"\n")


def lines_after(path: Path, offset: int) -> Iterator[bytes]:
    """The lines from byte ``offset`` on (newlines dropped)."""
    for _offset, line in lines_with_offsets(path, offset):
        yield line


def lines_with_offsets(path: Path, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line without its newline) from ``offset`` on; a last line without a
    newline is given as it is."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        position = offset
        for raw in handle:
            yield position, raw.rstrip(b"\n")
            position += len(raw)
