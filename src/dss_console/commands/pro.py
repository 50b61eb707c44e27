"""`dss-console pro ...`: one provider call per invocation, for scripts.

Argument orders mirror `itksnap-wt -dssp-*`, so an existing provider script changes
`itksnap-wt -dssp-tickets-fail $ID "$MSG"` into `dss-console pro fail $ID "$MSG"`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dss_console.commands.context import logged_in_client
from dss_console.commands.errors import EXIT_NOTHING_TO_CLAIM, CliError
from dss_console.dss import LogLevel

PRO_DESCRIPTION = """\
Provider calls, one per invocation, for scripts. All use the session of
`dss-console login` (for --server, or the server last logged in to).

Exit codes: 0 ok; 1 failed (one line on stderr says why); 2 usage error;
3 `claim` found no ready ticket.

Example, a whole ticket by hand:
  T=$(dss-console pro claim $HASH mylab $(hostname) | cut -d' ' -f1)
  dss-console pro download $T /tmp/work/$T
  dss-console pro progress $T 0 1 0.5
  dss-console pro log $T info "Segmentation done"
  dss-console pro upload $T /tmp/work/$T/result.itksnap
  dss-console pro success $T
"""


def _ticket_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a ticket id") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a ticket id")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is outside [0, 1] (progress is a fraction)")
    return value


def add_parser(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    pro = verbs.add_parser("pro", help="scriptable provider calls (claim, download, upload, ...)",
                           description=PRO_DESCRIPTION,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    calls = pro.add_subparsers(dest="call", metavar="CALL", parser_class=type(pro))

    def call(name: str, helptext: str, handler: Any, json_output: bool = False
             ) -> argparse.ArgumentParser:
        p = calls.add_parser(name, parents=[common], help=helptext, description=helptext)
        if json_output:
            p.add_argument("--json", action="store_true", help="print JSON instead of lines")
        p.set_defaults(handler=handler)
        return p

    call("services", "list the services you provide: NAME VERSION HASH PROVIDER", services,
         json_output=True)

    p = call("available", "services with ready tickets: HASH NAME READY_COUNT (claims nothing)",
             available, json_output=True)
    p.add_argument("hashes", metavar="HASH[,HASH...]")

    p = call("claim", "claim the next ready ticket: prints TICKET_ID HASH claimed; exit 3 when "
                      "none is ready", claim, json_output=True)
    p.add_argument("hashes", metavar="HASH[,HASH...]")
    p.add_argument("provider", metavar="PROVIDER", help="your provider name (recorded in the "
                                                        "ticket log)")
    p.add_argument("instance", metavar="INSTANCE", help="this machine's instance code, e.g. "
                                                        "its host name")

    p = call("download", "download a claimed ticket's input files into DIR: one path per line",
             download, json_output=True)
    p.add_argument("ticket", type=_ticket_id, metavar="TICKET_ID")
    p.add_argument("directory", type=Path, metavar="DIR")

    p = call("progress", "report progress VALUE (0..1) of the chunk START..END", progress)
    p.add_argument("ticket", type=_ticket_id, metavar="TICKET_ID")
    p.add_argument("start", type=_fraction, metavar="START")
    p.add_argument("end", type=_fraction, metavar="END")
    p.add_argument("value", type=_fraction, metavar="VALUE")

    p = call("log", "add a message to the ticket's log (the user sees it); files attached "
                    "since the last message are shown with it", log)
    p.add_argument("ticket", type=_ticket_id, metavar="TICKET_ID")
    p.add_argument("level", choices=[lv.value for lv in LogLevel])
    p.add_argument("message", metavar="MESSAGE")

    p = call("attach", "attach a file (shown with the next log message)", attach)
    p.add_argument("ticket", type=_ticket_id, metavar="TICKET_ID")
    p.add_argument("description", metavar="DESC")
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("mime", nargs="?", metavar="MIME", help="MIME type (default: guessed by "
                                                            "the server from the name)")

    p = call("upload", "export WORKSPACE as ITK-SNAP does (anonymised layer names) and upload "
                       "every file as the ticket's result; prints the uploaded names", upload)
    p.add_argument("ticket", type=_ticket_id, metavar="TICKET_ID")
    p.add_argument("workspace", type=Path, metavar="WORKSPACE")

    p = call("status", "print the ticket's status word (ready, claimed, success, failed, "
                       "deleted, ...)", status, json_output=True)
    p.add_argument("ticket", type=_ticket_id, metavar="TICKET_ID")

    p = call("success", "mark a claimed ticket as successfully finished", success)
    p.add_argument("ticket", type=_ticket_id, metavar="TICKET_ID")

    p = call("fail", "add MESSAGE as an error to the ticket's log, then mark it failed", fail)
    p.add_argument("ticket", type=_ticket_id, metavar="TICKET_ID")
    p.add_argument("message", metavar="MESSAGE")


def _emit(args: argparse.Namespace, data: Any, lines: list[str]) -> None:
    """Print `data` as JSON with --json, else the plain lines."""
    if getattr(args, "json", False):
        json.dump(data, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        for line in lines:
            print(line)


def services(args: argparse.Namespace) -> int:
    with logged_in_client(args) as client:
        items = client.services.provided()
    _emit(args, [asdict(s) for s in items],
          [f"{s.name} {s.version} {s.githash} {s.provider}" for s in items])
    return 0


def available(args: argparse.Namespace) -> int:
    with logged_in_client(args) as client:
        items = client.services.available(args.hashes)
    _emit(args, [asdict(a) for a in items],
          [f"{a.githash} {a.name} {a.ready_count}" for a in items])
    return 0


def claim(args: argparse.Namespace) -> int:
    with logged_in_client(args) as client:
        ticket = client.services.claim(args.hashes, args.provider, args.instance)
    if ticket is None:
        raise CliError("no ticket is ready for the given services", code=EXIT_NOTHING_TO_CLAIM)
    _emit(args, {"ticket_id": ticket.ticket_id, "service_hash": ticket.service_hash,
                 "status": "claimed"},
          [f"{ticket.ticket_id} {ticket.service_hash} claimed"])
    return 0


def download(args: argparse.Namespace) -> int:
    with logged_in_client(args) as client:
        paths = client.tickets.download_inputs(args.ticket, args.directory)
    _emit(args, [str(p) for p in paths], [str(p) for p in paths])
    return 0


def progress(args: argparse.Namespace) -> int:
    if not args.start <= args.end:
        raise CliError("START must not be greater than END", code=2)
    with logged_in_client(args) as client:
        client.tickets.set_progress(args.ticket, args.value, args.start, args.end)
    return 0


def log(args: argparse.Namespace) -> int:
    with logged_in_client(args) as client:
        client.tickets.log(args.ticket, args.level, args.message)
    return 0


def attach(args: argparse.Namespace) -> int:
    with logged_in_client(args) as client:
        client.tickets.attach(args.ticket, args.description, args.file, args.mime)
    return 0


def upload(args: argparse.Namespace) -> int:
    from dss_console.workspace import WorkspaceError

    with logged_in_client(args) as client:
        try:
            names = client.tickets.upload_results(args.ticket, args.workspace)
        except WorkspaceError as exc:
            raise CliError(f"Could not upload {args.workspace}: {exc}") from None
    for name in names:
        print(name)
    return 0


def status(args: argparse.Namespace) -> int:
    with logged_in_client(args) as client:
        word = client.tickets.status(args.ticket)
    _emit(args, {"ticket_id": args.ticket, "status": word.value}, [word.value])
    return 0


def success(args: argparse.Namespace) -> int:
    with logged_in_client(args) as client:
        print(client.tickets.succeed(args.ticket).value)
    return 0


def fail(args: argparse.Namespace) -> int:
    with logged_in_client(args) as client:
        print(client.tickets.fail_unless_finished(args.ticket, args.message).value)
    return 0
