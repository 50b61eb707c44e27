"""`dss-console v6 audit`: the vantage6 runs this machine ran, from its ledger (the journal
for a node whose engine has not written one yet).

    dss-console v6 audit [--node NAME] [--server URL] [--since DAYS] [--json|--csv]

Reads the ledger and the journal read-only (an engine may be running on them) and needs no
server.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import sys
import time
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from dss_console.commands.audit import days_argument
from dss_console.commands.errors import EXIT_USAGE, CliError
from dss_console.timefmt import format_elapsed

AUDIT_DESCRIPTION = """\
List the vantage6 runs this machine ran, newest first, from its journal (no server is
asked): for each run its task, who asked for it (organization / user), the algorithm image,
the databases, the input (method, argument names and SHA-256; never its values), the
outcome and the run time.

  dss-console v6 audit                       every node logged in here
  dss-console v6 audit --node station --since 30
  dss-console v6 audit --csv > runs.csv      all fields, for a spreadsheet or an auditor
  dss-console v6 audit --json

Outcome: as the server was told: completed, crashed (the command failed), start failed,
failed (with the reason; also an operator's Cancel), not allowed (the image has no command
on this node), killed by user; or interrupted (found mid-run after a restart), or where a
run still under way stands (waiting, fetching input, running, sending result, blocked).
Times in the table are local; in CSV and JSON they are UTC (ISO 8601) and the duration is
in seconds.
"""


def add_audit_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `audit` command to the `v6` command's subparsers."""
    audit = subparsers.add_parser(
        "audit", help="the vantage6 runs this machine ran: who asked, what, how it ended",
        description=AUDIT_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    audit.add_argument("--node", metavar="NAME",
                       help="only this node's runs: its name as `v6 status` shows it, or its "
                            "id on the server")
    audit.add_argument("--server", metavar="URL",
                       help="only runs of this vantage6 server (4.x or 5.x; its …/api or …/hq "
                            "path optional)")
    audit.add_argument("--since", type=days_argument, metavar="DAYS",
                       help="only runs claimed in the last DAYS days (e.g. 7, 0.5)")
    output = audit.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true",
                        help="print a JSON list with every field instead of the table")
    output.add_argument("--csv", action="store_true",
                        help="print CSV with every field (a header line first) instead of "
                             "the table")
    audit.add_argument("--data-dir", type=Path, metavar="DIR",
                       help="the folder holding the journal (default: this user's data "
                            "folder, as the worker uses)")
    audit.set_defaults(handler=audit_command)
    return audit


def audit_command(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    from dss_console import paths
    from dss_console.commands.audit import ledgers
    from dss_console.engine.engine import journal_path
    from dss_console.sources.v6.audit import (
        audit_records,
        load_journal_jobs,
        records_to_csv,
        records_to_json,
        split_source,
    )
    from dss_console.sources.v6.audit_ledger import is_v6_ledger, ledger_audit_records

    out = out if out is not None else sys.stdout
    server = _server(args.server)
    node = _node(args.node, server)
    data = args.data_dir if args.data_dir else paths.data_dir()
    journal = journal_path(data)
    jobs = []
    if journal.is_file():
        try:
            jobs = load_journal_jobs(journal)
        except sqlite3.Error as exc:
            raise CliError(f"cannot read the journal {journal}: {exc}") from None
    else:
        print(f"no journal at {journal}: no job was run here yet", file=sys.stderr)

    def wanted(source: str) -> bool:
        job_server, job_node = split_source(source)
        if server is not None and _server_root(job_server) != server:
            return False
        return node is None or (job_node == node[1] and node[0] in (None, job_server))

    # The ledger speaks for each node that has one; the journal for a node whose engine has
    # not started since the ledger came (it begins with the journal's history).
    found = [item for item in ledgers(data, None)
             if is_v6_ledger(item.source) and wanted(item.source) and item.path.is_file()]
    covered = {item.source for item in found}
    jobs = [job for job in jobs if wanted(job.source) and job.source not in covered]
    now = time.time()
    records = ledger_audit_records([item.path for item in found], now) + \
        audit_records(jobs, now)
    records.sort(key=lambda r: (r.claimed_at or 0.0, r.local_job), reverse=True)
    if args.since is not None:
        cut = now - args.since * 86400
        records = [r for r in records if (r.claimed_at or r.started_at or 0.0) >= cut]
    try:
        if args.json:
            records_to_json(records, out, now)
        elif args.csv:
            records_to_csv(records, out, now)
        else:
            print_table(records, out, now)
        out.flush()
    except BrokenPipeError:
        # `v6 audit --json | head`: the reader has all it wanted. Quiet, and the flush at
        # exit must not fail again on the closed pipe.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())
    return 0


def _server(raw: str | None) -> str | None:
    """The server's root URL of --server: with or without its API path (4.x ``/api``,
    5.x ``/hq``), as a node of either generation records it."""
    if not raw:
        return None
    url = raw.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise CliError(f"bad --server: {url!r} is not an http:// or https:// URL",
                       code=EXIT_USAGE)
    return _server_root(url)


# The API paths of the vantage6 generations this command reads (4.x, 5.x): a run is recorded
# under its API URL, --server names the server.
_API_PATHS = ("/api", "/hq")


def _server_root(api_url: str) -> str:
    url = api_url.rstrip("/")
    for api_path in _API_PATHS:
        if url.endswith(api_path):
            return url[: -len(api_path)]
    return url


def _node(name: str | None, server: str | None) -> tuple[str | None, int] | None:
    """(the node's server or None for any, its id) of --node NAME: a node logged in here
    (`v6 login`), else a node id."""
    if not name:
        return None
    from dss_console.credentials import V6CredentialStore

    # Only the non-secret index is read: no keyring.
    stored = V6CredentialStore(use_keyring=False).v6_nodes()
    matches = [entry for entry in stored if entry.get("node") == name
               and (server is None or _server_root(str(entry.get("server"))) == server)]
    ids = {(entry.get("server"), (entry.get("info") or {}).get("node_id"))
           for entry in matches}
    if len(ids) > 1:
        raise CliError(f"several servers have a node {name!r} here: add --server URL",
                       code=EXIT_USAGE)
    if ids:
        node_server, node_id = ids.pop()
        if isinstance(node_id, int):
            return node_server, node_id
    if name.isdigit():
        return None, int(name)
    known = ", ".join(sorted({f"{e.get('node')} ({e.get('server')})" for e in stored})) \
        or "none"
    raise CliError(f"no node {name!r} logged in here (logged in: {known}); a node's id "
                   "works too", code=EXIT_USAGE)


# -- the table --------------------------------------------------------------------------


COLUMNS = ("Run", "Task", "Requested by", "Image", "Databases", "Input", "Outcome",
           "Started", "Duration", "Reason")
# Widest a cell of a column may be before it is shortened with "…" (Reason, last, is not).
_MAX_WIDTH = {"Node": 40, "Task": 30, "Requested by": 30, "Image": 40, "Databases": 24, "Input": 40}


def print_table(records: Sequence[Any], out: IO[str], now: float | None = None) -> None:
    """The records as a table; a Node column first when they come from several nodes (a run
    id is only unique on its server)."""
    if not records:
        print("no vantage6 runs recorded", file=out)
        return
    several = len({(r.server, r.node_id) for r in records}) > 1
    columns = (("Node",) if several else ()) + COLUMNS
    known = _stored_node_names() if several else {}
    rows = [[_shorten(_clean(cell), _MAX_WIDTH.get(column))
             for column, cell in zip(columns, (([_node_name(r, known)] if several else [])
                                               + table_row(r, now)), strict=True)]
            for r in records]
    widths = [max(len(column), *(len(row[i]) for row in rows))
              for i, column in enumerate(columns)]
    right = {columns.index("Run"), columns.index("Duration")}
    for line in [list(columns), *rows]:
        cells = [cell.rjust(w) if i in right else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(line, widths, strict=True))]
        print("  ".join(cells).rstrip(), file=out)
    noun = "run" if len(records) == 1 else "runs"
    print(f"{len(records)} {noun}", file=out)


def _node_name(record: Any, known: dict[tuple[str, int], str] | None = None) -> str:
    """The node's name (as the run recorded it, else as `v6 login` stored it); a node
    known by neither: 'v6.example.org node 2' (the server's host and the node's id)."""
    name = record.node_name or (known or {}).get((record.server, record.node_id))
    if name:
        return str(name)
    host = urlsplit(record.server).netloc or record.server
    return f"{host} node {record.node_id}"


def _stored_node_names() -> dict[tuple[str, int], str]:
    """(server, node id) → name of the nodes logged in here (the index only: no keyring)."""
    from dss_console.credentials import V6CredentialStore

    names = {}
    try:
        entries = V6CredentialStore(use_keyring=False).v6_nodes()
    except Exception:  # a name is a courtesy: the id still says which node
        return {}
    for entry in entries:
        node_id = (entry.get("info") or {}).get("node_id")
        if isinstance(node_id, int) and entry.get("server") and entry.get("node"):
            names[(str(entry["server"]), node_id)] = str(entry["node"])
    return names


def table_row(record: Any, now: float | None = None) -> list[str]:
    from dss_console.sources.v6.audit import format_input, format_requester

    task = record.task_name or ""
    if record.task_id is not None:
        task = f"{record.task_id} {task}".rstrip()
    digest = f" sha256:{record.input_sha256[:12]}" if record.input_sha256 else ""
    return [str(record.run_id), task or "—", format_requester(record), record.image,
            ", ".join(record.databases) or "—", format_input(record) + digest, record.outcome,
            _local_time(record.started_at), format_elapsed(record.duration_at(now)),
            record.reason or ""]


def _local_time(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at)) if at is not None else "—"


def _clean(text: str) -> str:
    """One line without control characters: names come from the server's users, and an
    escape sequence must not reach the terminal."""
    return "".join(" " if ch in "\n\r\t" else "?" if unicodedata.category(ch).startswith("C")
                   else ch for ch in text)


def _shorten(text: str, width: int | None) -> str:
    if width is None or len(text) <= width:
        return text
    return text[:width - 1] + "…"
