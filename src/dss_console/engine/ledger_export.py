"""The ledger for an ethics board: a row per record (CSV, formula-safe) or JSON with the
verdict. Only what the ledger holds (it holds no argument values, paths or file names)."""

from __future__ import annotations

import csv
import json
import unicodedata
from collections.abc import Iterable, Mapping
from typing import IO, Any

EXPORT_FIELDS = (
    "seq", "at", "kind", "source", "instance", "job_local", "job_id", "attempt", "service",
    "service_key", "requester", "decided_by", "via", "rule", "outcome", "exit_code", "run_s",
    "sha256", "bytes", "reason",
)

# A cell a spreadsheet would take for a formula (task names, org and user names come from the
# server's users): prefixed with ' so it is shown, never evaluated.
_FORMULA_START = ("=", "+", "-", "@")


def csv_cell(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    # A control character (an escape sequence in a task name) must not reach a terminal
    # the CSV is printed on; a line break would only split the cell in a naive reader.
    value = "".join("?" if unicodedata.category(ch) == "Cc" else ch for ch in value)
    return "'" + value if value.startswith(_FORMULA_START) else value


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def export_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """One record's row (fields in EXPORT_FIELDS order)."""
    job, service = _dict(record.get("job")), _dict(record.get("service"))
    requester, by = _dict(record.get("requester")), _dict(record.get("by"))
    data = _dict(record.get("data"))
    details = _dict(data.get("details"))
    who = " / ".join(str(part) for part in (
        requester.get("org") or details.get("init_org"),
        requester.get("user") or details.get("init_user")) if part)
    return {
        "seq": record.get("seq"), "at": record.get("at"), "kind": record.get("kind"),
        "source": record.get("source"), "instance": record.get("instance"),
        "job_local": job.get("local"), "job_id": job.get("id"), "attempt": job.get("attempt"),
        "service": service.get("name"), "service_key": service.get("key"),
        "requester": who or requester.get("key"), "decided_by": by.get("user"),
        "via": by.get("via"), "rule": by.get("rule"),
        "outcome": data.get("outcome") or data.get("verdict") or data.get("state"),
        "exit_code": data.get("exit_code"), "run_s": data.get("run_s"),
        "sha256": data.get("sha256") or details.get("input_sha256"),
        "bytes": data.get("bytes"), "reason": data.get("reason") or data.get("message"),
    }


def write_csv(records: Iterable[Mapping[str, Any]], stream: IO[str]) -> None:
    """A header line and a row per record. Open ``stream`` with newline=''."""
    writer = csv.writer(stream)
    writer.writerow(EXPORT_FIELDS)
    for record in records:
        writer.writerow([csv_cell("" if value is None else value)
                         for value in export_row(record).values()])


def write_json(ledgers: Iterable[Mapping[str, Any]], stream: IO[str]) -> None:
    """``{"ledgers": [{source, path, head, verdict, public_key, records: [rows]}]}``."""
    json.dump({"ledgers": list(ledgers)}, stream, indent=2, ensure_ascii=False)
    stream.write("\n")
