"""Engine values as JSON and back, for the local channel between the engine process and the
windows attached to it.

Only the types listed in `WIRE_TYPES` cross the channel: a peer cannot make the other side
build anything else. Enums travel as their values, paths as strings, tuples as lists; the
receiving side rebuilds them from the dataclass's own type hints.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from pathlib import Path
from typing import Any

from dss_console.core import presentation as pr
from dss_console.core.executor import ExecutorDetails
from dss_console.engine import events as ev
from dss_console.engine.engine import ServiceView
from dss_console.engine.gate import ApprovalRule
from dss_console.engine.journal import OutboxItem
from dss_console.engine.settings import ServiceCommand
from dss_console.engine.states import JobState

TYPE_KEY = "__type__"

WIRE_TYPES: dict[str, type] = {cls.__name__: cls for cls in (
    ev.JobSnapshot, ev.JobChanged, ev.JobOutput, ev.JobMessage, ev.CallQueued,
    ev.CallDelivered, ev.ConnectionChanged, ev.PollCompleted, ev.ServicePaused,
    ev.ServiceResumed, ev.EngineNotice, ev.EngineStatus, ev.RulesEdited, ServiceView,
    ServiceCommand, OutboxItem,
    pr.Presentation, pr.Words, pr.ColumnSpec, pr.DialogSpec, pr.ActionSpec, pr.Summary,
    pr.JobView, pr.ServiceFigures, ExecutorDetails, pr.Requester, pr.Fact, pr.PreviewFile,
    pr.Preview, pr.ApprovalView, ApprovalRule,
)}


class WireError(ValueError):
    """A message that is not what the channel carries."""


def to_wire(value: Any) -> Any:
    """A JSON-able form of an engine value."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = type(value).__name__
        if name not in WIRE_TYPES:
            raise WireError(f"{name} does not cross the engine channel")
        out: dict[str, Any] = {TYPE_KEY: name}
        for f in dataclasses.fields(value):
            if f.name.startswith("_"):
                continue
            out[f.name] = to_wire(getattr(value, f.name))
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list | set | frozenset):
        return [to_wire(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_wire(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise WireError(f"{type(value).__name__} does not cross the engine channel")


def from_wire(value: Any) -> Any:
    """The engine value a `to_wire` form stands for."""
    if isinstance(value, dict):
        name = value.get(TYPE_KEY)
        if name is None:
            return {k: from_wire(v) for k, v in value.items()}
        cls = WIRE_TYPES.get(name)
        if cls is None:
            raise WireError(f"unknown type {name!r} on the engine channel")
        hints = _hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in value:
                kwargs[f.name] = _typed(from_wire(value[f.name]), hints.get(f.name))
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise WireError(f"a malformed {name} on the engine channel: {exc}") from None
    if isinstance(value, list):
        return [from_wire(v) for v in value]
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _typed(value: Any, hint: Any) -> Any:
    """Lists back to tuples and strings back to enums/paths where the field says so."""
    if value is None or hint is None:
        return value
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if arg is type(None):
                continue
            return _typed(value, arg)
        return value
    if hint is JobState:
        return JobState(value)
    if hint is Path:
        return Path(value)
    if origin is tuple and isinstance(value, list):
        inner = args[0] if args else None
        return tuple(_typed(v, inner) for v in value)
    if origin is frozenset and isinstance(value, list):
        return frozenset(value)
    return value


def dumps(message: dict[str, Any]) -> bytes:
    """One message as one line of UTF-8 JSON."""
    return json.dumps(to_wire(message), separators=(",", ":"), allow_nan=False).encode() + b"\n"


def loads(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"not a JSON message: {exc}") from None
    if not isinstance(message, dict):
        raise WireError("a message must be a JSON object")
    return from_wire(message)
