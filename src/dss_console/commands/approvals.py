"""`dss-console approvals list | show ID | approve ID | reject ID --message TEXT | release
ID`: the operator's gate from a shell (issue 20 §4), e.g. an SSH session to the server a
headless worker runs on. It talks to the running engines of this data dir over their local
channel (same user, the engine's token), as the window does; each decision is recorded as
made "via cli" by the local user.

Exit codes: 0 done; 1 refused, in words ("run 14 is running, not awaiting approval"; no
engine runs); 2 usage. ``show`` prints values only this machine's operator may read (a
vantage6 run's argument values, a database's path) only with ``--with-values``, marked
"(shown here only)"; ``--json`` never carries them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dss_console import paths
from dss_console.commands.errors import EXIT_FAILED, EXIT_USAGE, CliError

VERBS = ("list", "show", "approve", "reject", "release")
SHOWN_HERE = "(shown here only)"


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "approvals", help="decide the jobs waiting at the operator's gate (approve before a "
        "job runs, release before its result leaves) of the running worker or console",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="approvals_verb", metavar="VERB")
    listing = sub.add_parser("list", help="the jobs waiting for a decision")
    listing.add_argument("--json", action="store_true", help="as JSON (no argument values)")
    show = sub.add_parser("show", help="what a waiting job is, or what its result would send")
    show.add_argument("id", type=int, metavar="ID", help="the ticket / run id")
    show.add_argument("--with-values", action="store_true",
                      help="print values only this machine's operator may read (argument "
                           "values, database paths, the result's preview)")
    show.add_argument("--json", action="store_true", help="as JSON (never with values)")
    for verb, what in (("approve", "run a job waiting for approval"),
                       ("release", "send a held result and finish the job")):
        one = sub.add_parser(verb, help=what)
        one.add_argument("id", type=int, metavar="ID", help="the ticket / run id")
    approve = sub.choices["approve"]
    approve.add_argument("--always", action="store_true",
                         help="and approve this requester's work for this service from now on "
                              "(a rule kept in the worker's settings file)")
    approve.add_argument("--until", metavar="YYYY-MM-DD", default="",
                         help="with --always: the rule's last day")
    approve.add_argument("--any-requester", action="store_true",
                         help="with --always: for anyone's work of this service")
    reject = sub.add_parser("reject", help="fail a waiting job with a message its requester "
                                           "reads (a held result stays here)")
    reject.add_argument("id", type=int, metavar="ID", help="the ticket / run id")
    reject.add_argument("--message", required=True, metavar="TEXT",
                        help="why, for the requester")
    for parser in (listing, show, *[sub.choices[v] for v in ("approve", "release", "reject")]):
        parser.add_argument("--server", metavar="KEY",
                            help="the engine's server (as `list` shows it) when several run")
        parser.add_argument("--instance", metavar="NAME",
                            help="the engine's instance when several run for one server")
        parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    p.set_defaults(handler=approvals_command, approvals_parser=p)


@dataclass
class _Engine:
    server: str
    instance: str
    remote: Any  # RemoteEngine

    @property
    def label(self) -> str:
        return f"{self.server} ({self.instance})"


def approvals_command(args: argparse.Namespace) -> int:
    verb = args.approvals_verb
    if verb is None:
        args.approvals_parser.print_help()
        return EXIT_USAGE
    if verb == "reject" and not args.message.strip():
        raise CliError("reject needs a --message for the requester (they read it)", EXIT_USAGE)
    if verb == "approve" and (args.until or args.any_requester) and not args.always:
        raise CliError("--until and --any-requester go with --always", EXIT_USAGE)
    data = Path(args.data_dir) if args.data_dir else paths.data_dir()
    with _engines(data, args.server, args.instance) as engines:
        if verb == "list":
            return _list(engines, bool(args.json))
        engine, view = _find(engines, int(args.id))
        if verb == "show":
            full = engine.remote.approval(view.job_id)
            if args.json:
                print(json.dumps(_public(engine, full), indent=1))
            else:
                _print_show(engine, full, bool(args.with_values))
            return 0
        rule = _decide(engine, verb, view.job_id, args)
        noun = _noun(engine)
        done = {"approve": "approved: it runs now", "release": "released: its result is sent",
                "reject": "rejected: its requester reads your message"}[verb]
        print(f"{noun} {view.ticket_id} {done}")
        if rule is not None:
            print(f"rule {rule.rule_id} added: {rule.describe()}")
        return 0


def _decide(engine: _Engine, verb: str, job_id: int, args: argparse.Namespace) -> Any:
    """The decision, over the channel; the rule ``approve --always`` added (or None)."""
    from dss_console.engine.actions import EngineError

    try:
        if verb == "approve":
            return engine.remote.approve_job(job_id, via="cli", always=bool(args.always),
                                             until=args.until,
                                             any_requester=bool(args.any_requester))
        if verb == "release":
            engine.remote.release_job(job_id, via="cli")
        else:
            engine.remote.reject_job(job_id, args.message.strip(), via="cli")
    except EngineError as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    return None


def _channel_dirs() -> list[Path]:
    """Where engines of this user may have opened their channels: this session's runtime
    dir, and the temp-dir fallback an engine uses without XDG_RUNTIME_DIR (a worker started
    by cron or systemd, an SSH session without one)."""
    import os
    import tempfile

    from dss_console.engine.channel import ChannelError, runtime_dir

    found: list[Path] = []
    with contextlib.suppress(ChannelError, OSError):
        found.append(runtime_dir())
    uid = os.getuid() if hasattr(os, "getuid") else 0
    for base in (Path(tempfile.gettempdir()), Path("/tmp")):
        folder = base / f"dss-console-{uid}"
        with contextlib.suppress(OSError):
            if folder.is_dir() and folder.stat().st_uid == uid and folder not in found:
                found.append(folder)
    return found


@contextlib.contextmanager
def _engines(data: Path, server: str | None,
             instance_wanted: str | None = None) -> Iterator[list[_Engine]]:
    """Every engine of this data dir answering on its channel (``server``, ``instance``:
    only those)."""
    from dss_console.engine.channel import ChannelPaths
    from dss_console.engine.remote import EngineGoneError, RemoteEngine

    wanted = data.resolve()
    found: list[_Engine] = []
    try:
        for info_file in [f for folder in _channel_dirs()
                          for f in sorted(folder.glob("engine-*.json"))]:
            try:
                info = json.loads(info_file.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(info, dict) or Path(str(info.get("data_dir", ""))).resolve() \
                    != wanted:
                continue
            key, instance = str(info.get("server", "")), str(info.get("instance", ""))
            if server is not None and server not in (key, key.split("#")[0]):
                continue
            if instance_wanted is not None and instance != instance_wanted:
                continue
            channel = ChannelPaths(info_file.with_suffix(".sock"),
                                   info_file.with_suffix(".token"), info_file)
            if any(e.server == key and e.instance == instance for e in found):
                continue
            try:
                found.append(_Engine(key, instance, RemoteEngine(channel)))
            except (EngineGoneError, OSError):
                continue  # a channel left by an engine that died
        if not found:
            which = f" serving {server}" if server else ""
            raise CliError(f"no engine{which} runs for {data}: start `dss-console worker` (or "
                           "the console) first")
        yield found
    finally:
        for engine in found:
            engine.remote.close()


def _waiting(engines: list[_Engine]) -> list[tuple[_Engine, Any]]:
    return [(engine, view) for engine in engines for view in engine.remote.waiting_jobs()]


def _find(engines: list[_Engine], ticket_id: int) -> tuple[_Engine, Any]:
    """The engine and the job the operator names by its ticket / run id."""
    matches = [(e, v) for e, v in _waiting(engines) if v.ticket_id == ticket_id]
    if not matches:  # not waiting: the engine says what it is (refused in words below)
        for engine in engines:
            for job in engine.remote.jobs():
                if job.ticket_id == ticket_id:
                    matches.append((engine, job))
                    break
    if not matches:
        raise CliError(f"no job {ticket_id} in the engines of this data dir "
                       f"({', '.join(e.label for e in engines)})")
    if len({id(e) for e, _ in matches}) > 1:
        raise CliError(f"job {ticket_id} is known to several engines: give --server "
                       f"({', '.join(e.server for e, _ in matches)})", EXIT_USAGE)
    engine, found = matches[0]
    if not hasattr(found, "gate"):
        state = found.state.value.replace("_", " ")
        raise CliError(f"{_noun(engine)} {ticket_id} is {state}, not waiting for a decision")
    return engine, found


def _noun(engine: _Engine) -> str:
    words = engine.remote.info.get("presentation")
    job = getattr(getattr(words, "words", None), "job", None)
    return str(job or "job")


def _age(since: float | None) -> str:
    if since is None:
        return "?"
    seconds = max(0, int(time.time() - since))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _list(engines: list[_Engine], as_json: bool) -> int:
    rows = _waiting(engines)
    if as_json:
        print(json.dumps([_public(engine, view) for engine, view in rows], indent=1))
        return 0
    if not rows:
        print("nothing waits for a decision")
        return 0
    print(f"{'ID':>8}  {'GATE':8} {'WAITING':8} {'SERVICE':30} {'REQUESTER':28} ENGINE")
    for engine, view in rows:
        who = view.requester.words() if view.requester is not None else "-"
        print(f"{view.ticket_id:>8}  {view.gate:8} {_age(view.waiting_since):8} "
              f"{view.service[:30]:30} {who[:28]:28} {engine.label}")
    return 0


def _public(engine: _Engine, view: Any) -> dict[str, Any]:
    """A waiting job as JSON: never a local-only value, a preview's text or a file name."""
    out: dict[str, Any] = {
        "engine": engine.server, "instance": engine.instance, "id": view.ticket_id,
        "job": view.job_id, "service": view.service, "gate": view.gate,
        "waiting_since": view.waiting_since,
        "requester": None if view.requester is None else {
            "key": view.requester.key, "user": view.requester.user,
            "org": view.requester.org}}
    if view.facts:
        out["facts"] = [{"label": f.label, "local_only": f.local_only, "warning": f.warning,
                         **({} if f.local_only else {"value": f.value})} for f in view.facts]
    if view.preview is not None:
        out["preview"] = {"files": [{"role": f.role, "size": f.size, "sha256": f.sha256}
                                    for f in view.preview.files],
                          "messages": len(view.preview.messages)}
    return out


def _print_show(engine: _Engine, view: Any, with_values: bool) -> None:
    what = "waits for approval before it runs" if view.gate == "run" else \
        "finished; its result waits for release"
    print(f"{_noun(engine)} {view.ticket_id} of {view.service} {what} "
          f"(for {_age(view.waiting_since)}; {engine.label})")
    if view.requester is not None:
        print(f"  requested by: {view.requester.words()}")
    hidden = False
    for fact in view.facts:
        value = fact.value
        if fact.local_only:
            if with_values:
                value = f"{value} {SHOWN_HERE}"
            else:
                value, hidden = "(hidden: --with-values shows it)", True
        warning = f"  [!] {fact.warning}" if fact.warning else ""
        print(f"  {fact.label}: {value}{warning}")
    preview = view.preview
    if preview is not None:
        print("  would send:")
        for f in preview.files:
            name = f"{f.name} {SHOWN_HERE}" if with_values else f.role
            print(f"    {name}: {f.size} bytes, sha256 {f.sha256[:16]}…")
        if preview.messages:
            print(f"    {len(preview.messages)} held message(s)")
            if with_values:
                for message in preview.messages:
                    print(f"      {message} {SHOWN_HERE}")
        if preview.text and with_values:
            print(f"  the result {SHOWN_HERE}:")
            for line in preview.text.splitlines()[:40]:
                print(f"    {line}")
        hidden = hidden or (bool(preview.text or preview.messages) and not with_values)
    if hidden:
        print("  (values only this machine's operator may read are hidden: --with-values)")
