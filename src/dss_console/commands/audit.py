"""`dss-console audit`: the ledger of every source, headless (issue 20, part 6).

    dss-console audit path   [--server KEY] [--data-dir DIR]
    dss-console audit verify [--server KEY] [--file F] [--data-dir DIR]
    dss-console audit export --csv|--json [--since DAYS] [--server KEY] [--data-dir DIR]
    dss-console audit stats  [--since DAYS] [--server KEY] [--data-dir DIR]

Reads the ledger and the journal read-only (an engine may be running on them; the index
beside a ledger is derived and brought up to date). Needs no server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from dss_console.commands.errors import EXIT_USAGE, CliError

if TYPE_CHECKING:
    from dss_console.engine.ledger_index import LedgerIndex

AUDIT_DESCRIPTION = """\
The ledger: every claim, decision, start, end, upload and refusal of every job this
machine ran, one JSON-lines file per server (a vantage6 node: per node), each record
carrying the SHA-256 of the one before, so an edit shows. Inputs and results appear by
SHA-256 and size; argument values, paths and file names never do.

  dss-console audit path                   where the ledgers are
  dss-console audit verify                 check every chain (exit 1 names the record)
  dss-console audit verify --file copy.jsonl   a copy, without this machine's journal
  dss-console audit export --csv > ledger.csv  a row per record, for an ethics board
  dss-console audit export --json --since 30
  dss-console audit stats                  jobs per service: last day, last month
"""


@dataclass(frozen=True)
class LedgerFile:
    source: str
    path: Path


def add_parser(verbs: argparse._SubParsersAction) -> None:
    audit = verbs.add_parser("audit", help="the ledger: where it is, verify, export, stats",
                             description=AUDIT_DESCRIPTION,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = audit.add_subparsers(dest="audit_verb", metavar="COMMAND")
    audit.set_defaults(handler=lambda _args: _usage(audit))

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--server", metavar="KEY",
                            help="only this source's ledger: its server URL (a vantage6 "
                                 "node's: the API URL, optionally with #node-ID)")
        parser.add_argument("--data-dir", type=Path, metavar="DIR",
                            help="the folder holding the journal and the ledgers (default: "
                                 "this user's data folder, as the worker uses)")

    path = sub.add_parser("path", help="print where each ledger is")
    common(path)
    path.set_defaults(handler=path_command)
    verify = sub.add_parser("verify", help="check each ledger's chain; exit 1 names the "
                                           "record changed, removed or swapped")
    common(verify)
    verify.add_argument("--file", type=Path, metavar="F",
                        help="verify this copy of a ledger (no journal: its last record is "
                             "not checked against it)")
    verify.add_argument("--public-key", metavar="K",
                        help="the signing key to trust: a PEM file (signing.pub) or the "
                             "ed25519:… text; default: signing.pub beside the ledgers")
    verify.set_defaults(handler=verify_command)
    export = sub.add_parser("export", help="a row per record as CSV, or JSON with the verdict")
    common(export)
    form = export.add_mutually_exclusive_group(required=True)
    form.add_argument("--csv", action="store_true", help="CSV, a header line first")
    form.add_argument("--json", action="store_true",
                      help="JSON: per ledger its head, verdict and rows")
    export.add_argument("--since", type=days_argument, metavar="DAYS",
                        help="only records of the last DAYS days (e.g. 7, 0.5)")
    export.set_defaults(handler=export_command)
    stats = sub.add_parser("stats", help="per service: jobs that ended per hour (last day) "
                                         "and per day, succeeded and failed, median run time")
    common(stats)
    stats.add_argument("--since", type=days_argument, metavar="DAYS",
                       help="days the per-day figures cover (default 30)")
    stats.set_defaults(handler=stats_command)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def days_argument(text: str) -> float:
    """``--since DAYS`` (both audits): a number of days above 0."""
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if not days > 0 or days == float("inf"):
        raise argparse.ArgumentTypeError("--since takes a number of days above 0")
    return days


# -- which ledgers ------------------------------------------------------------------------
def _data_dir(args: argparse.Namespace) -> Path:
    from dss_console import paths

    return Path(args.data_dir) if args.data_dir else paths.data_dir()


def ledgers(data_dir: Path, server: str | None) -> list[LedgerFile]:
    """The ledgers under ``data_dir`` (of ``server`` only: its exact key, or the keys it
    begins), by the source their first record names."""
    from dss_console.engine.ledger import ledger_dir, ledger_path
    from dss_console.engine.ledger_verify import first_record

    found = []
    folder = ledger_dir(data_dir)
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        record = first_record(path) or {}
        source = str(record.get("source") or path.stem)
        found.append(LedgerFile(source, path))
    if server is None:
        return found
    wanted = server.rstrip("/")
    exact = [f for f in found if f.source == server or f.source.rstrip("/") == wanted]
    if exact:
        return exact
    begun = [f for f in found if f.source.startswith(wanted)]
    if begun:
        return begun
    return [LedgerFile(server, ledger_path(data_dir, server))] if server else []


def _selected(args: argparse.Namespace) -> tuple[Path, list[LedgerFile]]:
    data = _data_dir(args)
    chosen = [f for f in ledgers(data, args.server) if f.path.is_file()]
    if not chosen:
        where = f" for {args.server}" if args.server else ""
        raise CliError(f"no ledger{where} in {data / 'ledger'}: no engine has run here "
                       "since the ledger was added (a worker or console writes it at start)")
    return data, chosen


# -- the verbs ------------------------------------------------------------------------------
def path_command(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    out = out if out is not None else sys.stdout
    data = _data_dir(args)
    found = ledgers(data, args.server)
    if not found:
        from dss_console.engine.ledger import ledger_dir

        print(f"no ledger yet; they are written in {ledger_dir(data)}", file=sys.stderr)
        return 1
    for item in found:
        print(str(item.path) if args.server else f"{item.source}\t{item.path}", file=out)
    return 0


def verify_command(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    from dss_console.engine.engine import journal_path
    from dss_console.engine.ledger_verify import journal_head, verify_file

    out = out if out is not None else sys.stdout
    trusted = _trusted_key(args)
    if args.file is not None:
        if not Path(args.file).is_file():
            raise CliError(f"no such file: {args.file}", code=EXIT_USAGE)
        verdict = verify_file(Path(args.file), None, journal_known=False, public_key=trusted)
        print(f"{args.file}: {verdict.text()}", file=out)
        return 0 if verdict.ok else 1
    data, chosen = _selected(args)
    journal = journal_path(data)
    failed = False
    for item in chosen:
        verdict = verify_file(item.path, journal_head(journal, item.source),
                              public_key=trusted)
        failed = failed or not verdict.ok
        print(f"{item.source}: {verdict.text()}\n  ({item.path})", file=out)
    return 1 if failed else 0


def _trusted_key(args: argparse.Namespace) -> str | None:
    from dss_console.engine.ledger import ledger_dir
    from dss_console.engine.ledger_sign import PUBLIC_KEY_FILE, read_public_key

    given = args.public_key
    if given is None and args.file is None:
        beside = ledger_dir(_data_dir(args)) / PUBLIC_KEY_FILE
        given = str(beside) if beside.is_file() else None
    if given is None:
        return None
    try:
        return read_public_key(given)
    except ValueError as exc:
        raise CliError(str(exc), code=EXIT_USAGE) from None


def export_command(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    from dss_console.engine.engine import journal_path
    from dss_console.engine.ledger import parse_utc
    from dss_console.engine.ledger_export import export_row, write_csv, write_json
    from dss_console.engine.ledger_read import lines_with_offsets
    from dss_console.engine.ledger_verify import journal_head, verify_file

    out = out if out is not None else sys.stdout
    data, chosen = _selected(args)
    cut = None if args.since is None else time.time() - args.since * 86400

    def records(path: Path) -> list[dict[str, Any]]:
        kept = []
        for _offset, line in lines_with_offsets(path):
            try:
                record = json.loads(line)
                at = parse_utc(str(record.get("at")))
            except (ValueError, TypeError, AttributeError):
                continue  # not a record: verify's verdict says so
            if cut is None or at >= cut:
                kept.append(record)
        return kept

    def write() -> None:
        if args.csv:
            write_csv([r for item in chosen for r in records(item.path)], out)
            return
        documents = []
        for item in chosen:
            head = journal_head(journal_path(data), item.source)
            verdict = verify_file(item.path, head)
            first = records(item.path)[:1]
            signing = (first[0].get("data") or {}).get("signing") if first and \
                first[0].get("kind") == "ledger" else None
            documents.append({
                "source": item.source, "head": verdict.head, "verdict": verdict.text(),
                "ok": verdict.ok, "public_key": signing,
                "records": [export_row(r) for r in records(item.path)]})
        write_json(documents, out)

    _quiet_pipe(write, out)
    return 0


def stats_command(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    from dss_console.engine.ledger_index import days_for

    out = out if out is not None else sys.stdout
    _data, chosen = _selected(args)
    days = days_for(args.since)
    now = time.time()
    lines = []
    with tempfile.TemporaryDirectory(prefix="dss-console-index-") as spare:
        figures_of = {item.path: _index_for(item.path, Path(spare)).stats(now, days)
                      for item in chosen}
    for item in chosen:
        figures = figures_of[item.path]
        lines.append(f"{item.source}")
        if not figures:
            lines.append(f"  no job ended in the last {days} days")
            continue
        table = [("Service", "24 h ok", "failed", f"{days} d ok", "failed",
                  "median 24 h", f"median {days} d")]
        for name, history in sorted(figures.items()):
            table.append((
                name, str(sum(b.succeeded for b in history.hours)),
                str(sum(b.failed for b in history.hours)),
                str(sum(b.succeeded for b in history.days)),
                str(sum(b.failed for b in history.days)),
                _seconds(history.median_run_s_day), _seconds(history.median_run_s_month)))
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        for row in table:
            cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width
                                                 in zip(row[1:], widths[1:], strict=True)]
            lines.append("  " + "  ".join(cells))
    _quiet_pipe(lambda: print("\n".join(lines), file=out), out)
    return 0


def _index_for(ledger: Path, spare: Path) -> LedgerIndex:
    """The ledger's own index when it is this user's; else one in ``spare``, a private
    temporary folder (root reading a worker's ledger writes nothing beside it)."""
    from dss_console.engine.ledger_index import LedgerIndex

    if not hasattr(os, "geteuid") or ledger.stat().st_uid == os.geteuid():
        return LedgerIndex(ledger)
    return LedgerIndex(ledger, path=spare / f"{ledger.name}.index.sqlite3")


def _seconds(value: float | None) -> str:
    from dss_console.timefmt import format_elapsed

    return "—" if value is None else format_elapsed(value)


def _quiet_pipe(write: Callable[[], None], out: IO[str]) -> None:
    try:
        write()
        out.flush()
    except BrokenPipeError:
        # `audit export --json | head`: the reader has all it wanted.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())
