"""What a vantage6 run shows the operator at the gate (issue 20; docs/gate-plan.md §2): who
asked (user and organization), the image, the method, each argument's name and value (shown
locally only, never journaled, logged or sent), the databases asked for and what each maps
to on this node; at release, the output's size and SHA-256 and a readable preview.

:class:`V6Gate` is mixed into :class:`~dss_console.sources.v6.source.V6Source`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dss_console.core.command import JobPaths
from dss_console.core.interfaces import HeldCall, default_preview, file_digest
from dss_console.core.presentation import Fact, Preview, PreviewFile, Requester
from dss_console.sources.v6.settings import V6Settings

VALUE_CHARS = 200     # an argument's value is cut after this many characters
MAX_ARGUMENTS = 50    # arguments shown at most
PREVIEW_BYTES = 64 * 1024
PREVIEW_ROWS = 50


class V6Gate:
    """The gate's data of a vantage6 node (the attributes are V6Source's)."""

    settings: V6Settings

    def requester(self, details: Mapping[str, Any]) -> Requester | None:
        user_id, org_id = details.get("init_user_id"), details.get("init_org_id")
        if user_id is None and org_id is None:
            return None
        key = "@".join(part for part in (
            f"user:{user_id}" if user_id is not None else "",
            f"org:{org_id}" if org_id is not None else "") if part)
        user, org = details.get("init_user"), details.get("init_org")
        return Requester(key=key, user=str(user) if user else None,
                         org=str(org) if org else None)

    def approval_facts(self, ticket_id: int, paths: JobPaths,
                       details: Mapping[str, Any]) -> tuple[Fact, ...]:
        record = _json_file(paths.input_dir / "run.json")
        record = record if isinstance(record, dict) else {}
        facts: list[Fact] = []
        who = self.requester({**record, **details})
        if who is not None:
            facts.append(Fact("Requested by", who.words()))
        image = record.get("image") or details.get("image")
        if image:
            facts.append(Fact("Image", str(image)))
        if record.get("task_name") or details.get("task_name"):
            facts.append(Fact("Task", str(record.get("task_name") or details.get("task_name"))))
        payload = _json_file(paths.input_dir / "input")
        if isinstance(payload, dict):
            if payload.get("method"):
                facts.append(Fact("Method", str(payload["method"])))
            facts += _arguments(payload)
        elif payload is None:
            facts.append(Fact("Input", "not JSON (shown as its size only)",
                              warning="the input could not be read as arguments"))
        facts += self._databases(record.get("databases") or details.get("databases") or [])
        return tuple(facts)

    def _databases(self, asked: Any) -> list[Fact]:
        facts = []
        for item in asked if isinstance(asked, list) else []:
            label = str(item.get("label", "")) if isinstance(item, dict) else str(item)
            if not label:
                continue
            here = self.settings.databases.get(label)
            if here is None:
                facts.append(Fact(f"Database {label}", "not on this node",
                                  warning=f"this node has no database labelled {label!r}"))
            else:
                facts.append(Fact(f"Database {label}", f"{here.type}: {here.uri}",
                                  local_only=True))
        return facts

    def release_preview(self, ticket_id: int, paths: JobPaths,
                        held: Sequence[HeldCall]) -> Preview:
        found = default_preview(held)
        files = list(found.files)
        text = ""
        rows: tuple[tuple[str, ...], ...] = ()
        for call in held:
            result = call.payload.get("result")
            if not isinstance(result, str):
                continue
            path = Path(result)
            try:
                size, sha = file_digest(path)
            except OSError:
                continue
            files.append(PreviewFile(name="output", size=size, sha256=sha, role="result"))
            text, rows = _readable(path)
        return Preview(files=tuple(files), text=text, rows=rows, messages=found.messages)


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _cut(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= VALUE_CHARS else text[:VALUE_CHARS] + "…"


def _arguments(payload: Mapping[str, Any]) -> list[Fact]:
    """Each argument's name and value (values local only: never journaled or sent)."""
    facts: list[Fact] = []
    kwargs = payload.get("kwargs")
    if isinstance(kwargs, dict):
        for name, value in list(kwargs.items())[:MAX_ARGUMENTS]:
            facts.append(Fact(f"Argument {name}", _cut(value), local_only=True))
    args = payload.get("args")
    if isinstance(args, list):
        for index, value in enumerate(args[:MAX_ARGUMENTS - len(facts)]):
            facts.append(Fact(f"Argument #{index + 1}", _cut(value), local_only=True))
    return facts


def _readable(path: Path) -> tuple[str, tuple[tuple[str, ...], ...]]:
    """A JSON output pretty-printed (at most 64 KiB) and, for a list of records or a dict
    of columns (pandas ``to_json``), its first rows as a table."""
    value = _json_file(path)
    if value is None:
        return "", ()
    text = json.dumps(value, indent=2, default=str)[:PREVIEW_BYTES]
    rows: list[tuple[str, ...]] = []
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        columns = list(value[0])
        rows = [tuple(columns)] + [tuple(_cut(r.get(c)) for c in columns)
                                   for r in value[:PREVIEW_ROWS]]
    elif isinstance(value, dict) and value and all(isinstance(c, dict) for c in value.values()):
        columns = list(value)
        index = list(next(iter(value.values())))[:PREVIEW_ROWS]
        rows = [tuple(columns)] + [tuple(_cut(value[c].get(i)) for c in columns) for i in index]
    return text, tuple(rows)
