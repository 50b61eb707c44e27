"""ITK-SNAP's XML "registry": the tree of folders and entries behind ``.itksnap`` files.

The model mirrors ITK-SNAP's ``Registry`` class (Common/Registry.cxx): every folder holds a
map of string entries and a map of sub-folders, keys containing ``.`` address nested
folders, and the writer emits entries before folders, each sorted by key, under the same
XML declaration, comment and DOCTYPE that ITK-SNAP writes.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from xml.parsers import expat

__all__ = [
    "PROJECT_HEADER",
    "RegistryError",
    "RegistryFolder",
    "WorkspaceError",
    "parse_registry",
    "read_registry",
    "registry_to_xml",
    "write_registry",
]

# ITK-SNAP's own project header (IRISApplication::SaveProject), written as an XML comment.
PROJECT_HEADER = (
    "ITK-SNAP (itksnap.org) Project File\n"
    "\n"
    "This file can be moved/copied along with the images that it references\n"
    "as long as the relative location of the images to the project file is \n"
    "the same. Do not modify the SaveLocation entry, or this will not work.\n"
)

_DOCTYPE = (
    "<!DOCTYPE registry [\n"
    "<!ELEMENT registry (entry*,folder*)>\n"
    "<!ELEMENT folder (entry*,folder*)>\n"
    "<!ELEMENT entry EMPTY>\n"
    "<!ATTLIST folder key CDATA #REQUIRED>\n"
    "<!ATTLIST entry key CDATA #REQUIRED>\n"
    "<!ATTLIST entry value CDATA #REQUIRED>\n"
    "]>\n"
)

# Real workspaces are a few kB to a few MB (annotations, label tables); anything far
# beyond that is not a workspace, and reading it whole would only waste memory.
MAX_REGISTRY_BYTES = 64 * 1024 * 1024
# ITK-SNAP nests about six levels deep; the limit keeps the recursive writer safe.
MAX_DEPTH = 64

# Characters XML 1.0 cannot carry at all, not even as character references.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class WorkspaceError(Exception):
    """A workspace (or the registry behind it) cannot be read, understood or written."""


class RegistryError(WorkspaceError):
    """The registry file is unreadable, not XML, or not an ITK-SNAP registry."""


class RegistryFolder:
    """One folder of the registry: string entries and sub-folders, both keyed by name."""

    __slots__ = ("entries", "folders")

    def __init__(self) -> None:
        self.entries: dict[str, str] = {}
        self.folders: dict[str, RegistryFolder] = {}

    # Keys with dots address nested folders, exactly as Registry::Folder/Entry split them.
    def folder(self, key: str, *, create: bool = False) -> RegistryFolder | None:
        """The folder at a dotted ``key``; created (with parents) when ``create`` is true."""
        node: RegistryFolder = self
        for part in key.split("."):
            child = node.folders.get(part)
            if child is None:
                if not create:
                    return None
                child = node.folders[part] = RegistryFolder()
            node = child
        return node

    def has_folder(self, key: str) -> bool:
        return self.folder(key) is not None

    def get(self, key: str, default: str | None = None) -> str | None:
        """The entry at a dotted ``key``, or ``default`` when absent."""
        parent, _, name = key.rpartition(".")
        node = self.folder(parent) if parent else self
        if node is None:
            return default
        return node.entries.get(name, default)

    def has_entry(self, key: str) -> bool:
        return self.get(key) is not None

    def set(self, key: str, value: str) -> None:
        """Set the entry at a dotted ``key``, creating folders on the way."""
        parent, _, name = key.rpartition(".")
        node = self.folder(parent, create=True) if parent else self
        assert node is not None
        node.entries[name] = value

    def copy(self) -> RegistryFolder:
        """A deep copy (iterative, so depth never meets Python's recursion limit)."""
        root = RegistryFolder()
        stack = [(self, root)]
        while stack:
            src, dst = stack.pop()
            dst.entries = dict(src.entries)
            for name, child in src.folders.items():
                new = dst.folders[name] = RegistryFolder()
                stack.append((child, new))
        return root

    def walk(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        """All (dotted key, value) pairs below this folder, entries first, sorted."""
        for name in sorted(self.entries):
            yield prefix + name, self.entries[name]
        for name in sorted(self.folders):
            yield from self.folders[name].walk(f"{prefix}{name}.")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RegistryFolder):
            return NotImplemented
        return self.entries == other.entries and self.folders == other.folders

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"RegistryFolder(entries={len(self.entries)}, folders={sorted(self.folders)})"


class _Rejected(Exception):
    """Raised inside expat callbacks; turned into RegistryError by the parser."""


def parse_registry(data: bytes, source: str = "<registry>") -> RegistryFolder:
    """Parse registry XML. Entity declarations are refused (no entity expansion attacks)."""
    root = RegistryFolder()
    # (folder, its depth below the root); dotted keys count one level per part.
    stack: list[tuple[RegistryFolder, int]] = []
    state = {"seen_root": False}

    def start(name: str, attrs: dict[str, str]) -> None:
        tag = name.lower()  # ITK-SNAP compares element names case-insensitively
        attrs = {k.lower(): v for k, v in attrs.items()}
        if not state["seen_root"]:
            if tag != "registry":
                raise _Rejected(f"root element is <{name}>, expected <registry>")
            state["seen_root"] = True
            stack.append((root, 0))
            return
        parent, depth = stack[-1]
        if tag == "folder":
            if "key" not in attrs:
                raise _Rejected("<folder> element without a 'key' attribute")
            depth += attrs["key"].count(".") + 1
            if depth > MAX_DEPTH:
                raise _Rejected(f"folders nested deeper than {MAX_DEPTH} levels")
            folder = parent.folder(attrs["key"], create=True)
            assert folder is not None
            stack.append((folder, depth))
        elif tag == "entry":
            if "key" not in attrs:
                raise _Rejected("<entry> element without a 'key' attribute")
            if "value" not in attrs:
                raise _Rejected(f"<entry key={attrs['key']!r}> without a 'value' attribute")
            if depth + attrs["key"].count(".") > MAX_DEPTH:
                raise _Rejected(f"folders nested deeper than {MAX_DEPTH} levels")
            parent.set(attrs["key"], attrs["value"])
            # An entry is empty; push a placeholder so the matching end tag pops it.
            stack.append((parent, depth))
        else:
            raise _Rejected(f"unknown element <{name}>")

    def end(name: str) -> None:
        stack.pop()

    def refuse_entity(*_args: object) -> None:
        # Real workspaces only declare elements and attributes; an ENTITY declaration is
        # either a mistake or an expansion attack ("billion laughs"), so never expand one.
        raise _Rejected("the file declares XML entities, which workspaces never do")

    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.EntityDeclHandler = refuse_entity
    parser.UnparsedEntityDeclHandler = refuse_entity
    parser.ExternalEntityRefHandler = refuse_entity  # type: ignore[assignment]
    try:
        parser.Parse(data, True)
    except _Rejected as exc:
        raise RegistryError(f"{source}: not a valid ITK-SNAP registry: {exc}") from None
    except expat.ExpatError as exc:
        raise RegistryError(
            f"{source}: not valid XML ({expat.errors.messages[exc.code]}, "
            f"line {exc.lineno}, column {exc.offset})"
        ) from None
    if not state["seen_root"]:
        raise RegistryError(f"{source}: not a valid ITK-SNAP registry: no <registry> element")
    return root


def read_registry(path: str | os.PathLike[str]) -> RegistryFolder:
    """Read a registry XML file; every failure is a RegistryError naming the file."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_REGISTRY_BYTES + 1)
    except FileNotFoundError:
        raise RegistryError(f"{p}: file not found") from None
    except IsADirectoryError:
        raise RegistryError(f"{p}: is a directory, not a workspace file") from None
    except OSError as exc:
        raise RegistryError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_REGISTRY_BYTES:
        raise RegistryError(f"{p}: larger than {MAX_REGISTRY_BYTES} bytes, not a workspace")
    if not data.strip():
        raise RegistryError(f"{p}: file is empty")
    return parse_registry(data, str(p))


def _escape(text: str) -> str:
    if _XML_INVALID.search(text):
        raise RegistryError(f"value {text!r} contains characters XML cannot represent")
    # Same five escapes as Registry::EncodeXML; tab/newline/CR become character
    # references too, because XML parsers turn raw ones in attributes into spaces.
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&apos;")
        .replace("\t", "&#9;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
    )


def registry_to_xml(root: RegistryFolder, header: str | None = PROJECT_HEADER) -> str:
    """Serialise like Registry::WriteToXMLFile: declaration, comment, DOCTYPE, body."""
    out = ['<?xml version="1.0" encoding="UTF-8" ?>\n']
    if header is not None:
        if "--" in header or header.endswith("-"):
            raise RegistryError("the header cannot be written inside an XML comment")
        out.append(f"<!--{header}-->\n")
    out.append(_DOCTYPE)
    out.append("<registry>\n")

    def emit(folder: RegistryFolder, indent: str) -> None:
        for name in sorted(folder.entries):
            out.append(
                f'{indent}<entry key="{_escape(name)}" value="{_escape(folder.entries[name])}" />\n'
            )
        for name in sorted(folder.folders):
            out.append(f'{indent}<folder key="{_escape(name)}" >\n')
            emit(folder.folders[name], indent + "  ")
            out.append(f"{indent}</folder>\n")

    emit(root, "  ")
    out.append("</registry>\n")
    return "".join(out)


def write_registry(
    path: str | os.PathLike[str], root: RegistryFolder, header: str | None = PROJECT_HEADER
) -> Path:
    """Write atomically (temp file + rename) so readers never see half a workspace."""
    p = Path(path)
    text = registry_to_xml(root, header)
    # Not mkstemp: its 0600 would stick to the final file; O_EXCL keeps the create safe
    # and the process umask decides the permissions, as for any plain open().
    tmp = p.parent / f".{p.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return p
