"""`dss-console worker`: the headless face of the engine, for servers, many instances and
systemd."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from dss_console import paths, plugins
from dss_console.commands.context import require_named_settings
from dss_console.commands.errors import CliError
from dss_console.core.source_plugin import ConnectError
from dss_console.engine.calls import FINISH
from dss_console.engine.events import (
    CallDelivered,
    ConnectionChanged,
    EngineNotice,
    Event,
    JobChanged,
    JobMessage,
    ServicePaused,
    ServiceResumed,
)
from dss_console.engine.locks import InstanceBusyError, instance_lock
from dss_console.engine.states import JobState

if TYPE_CHECKING:
    from collections.abc import Callable

    from dss_console.core.presentation import Words
    from dss_console.core.source_plugin import WorkerTexts
    from dss_console.engine.channel import EngineChannel
    from dss_console.engine.engine import Engine, ServiceView
    from dss_console.engine.events import JobSnapshot
    from dss_console.engine.settings import Settings

WORKER_DESCRIPTION = """\
Process tickets without a window: poll the server, claim tickets of the services that have
a command configured (up to --concurrency at once, per-service max_jobs respected), run the
command, relay its progress, messages and attachments, upload the result workspace and mark
the ticket success or failed. Everything owed to the server is journaled and delivered even
across network outages and restarts.

Commands come from the settings file (see --config) and --command options, e.g.
  dss-console worker --provider mylab \\
      --command 'ASHS-PMC-T1=bash /opt/ashs/service_ashs.sh {ticket} {workdir} {workspace} {result}'
Placeholders: {ticket} {service} {service_hash} {workdir} {inputs} {workspace} {result}.

A command that cannot start (not found, not executable, a bad template or working
directory) is the provider's configuration, not the user's failed segmentation: no ticket is
failed for it. The service is paused (one loud "PAUSED" line), a ticket already claimed stays
claimed, and it runs as soon as the command is fixed: the settings file is reloaded when it
changes. Three failures of one service's command in a row (pause_after_failures) also pause
it (after a failure, jobs already running count, so no more than three fail when
concurrency is three or less); restart the worker to resume.
With --exit-when-idle the worker then exits 1, saying why.

What the end user reads: the command's own @dss/hook messages and attachments, and fixed
words ("command exited with code N"). Its other output stays in {workdir}/.dss/output.log,
unless send_output_tail = true (top level, or per [services."NAME"]; [v6] and per image for
vantage6): then a failure's last lines are sent with paths under the work root, home and data
dirs, host names and environment values replaced by <workdir>, <home>, <host>, <env:NAME>.

On a cluster: with --executor SERVICE=slurm (or executor = "slurm" in the settings file)
each ticket becomes one SLURM batch job (sbatch from PATH, the usual SLURM_CONF), with the
service's sbatch_options. The work root must be on a file system the nodes share. The job id
is journaled before the job may run, so a restarted worker follows the running job instead
of running the ticket again; cancel, timeout and shutdown use scancel. sbatch_options the
cluster refuses (a bad partition) block the ticket and pause the service, as above.

Stopping: Ctrl-C or SIGTERM stops claiming, stops running commands (SIGTERM to each
command's process group, SIGKILL after a grace period), delivers what is owed, and exits 0.
Their tickets stay claimed and run again at the next start, as after a crash; each user
reads one line, "The provider is restarting; processing will resume." (on_shutdown =
"resume", the default). With on_shutdown = "fail" in the settings file their tickets fail
with "provider shut down" instead. With --drain, running jobs finish first. A second signal
exits at once (the journal lets the next start recover).

Run several workers (on one or many hosts) with distinct --instance codes: the server hands
each ticket to exactly one of them.
"""


def add_parser(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from dss_console import plugins

    sources = [plugins.source_plugin(name) for name in plugins.SOURCES]
    default = sources[0].name
    p = verbs.add_parser("worker", parents=[common], help="process tickets headless (auto mode)",
                         description="\n".join([WORKER_DESCRIPTION] + [
                             s.worker.help for s in sources if s.worker.help]),
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", choices=tuple(plugins.SOURCES), default=default,
                   help="where the work comes from: " + " or ".join(
                       f"{s.name} ({s.worker.choice}{', the default' if s.name == default else ''})"
                       for s in sources))
    for source in sources:
        source.add_worker_arguments(p)
    p.add_argument("--provider", metavar="NAME",
                   help="provider name sent with claims (default: settings, else the "
                        "provider of your services)")
    p.add_argument("--instance", metavar="CODE",
                   help="this worker's instance code (default: settings, else the host name)")
    p.add_argument("--command", action="append", default=[], metavar="SERVICE=TEMPLATE",
                   help="command for a service (name or hash); repeatable; adds to or "
                        "overrides the settings file")
    p.add_argument("--executor", action="append", default=[], metavar="SERVICE=EXECUTOR",
                   help="where a service's command runs: local (a child process, the "
                        "default) or slurm (each ticket a SLURM batch job); repeatable")
    p.add_argument("--workdir", type=Path, metavar="DIR",
                   help="root of the per-ticket work dirs (default: settings workroot)")
    p.add_argument("--concurrency", type=int, metavar="N",
                   help="jobs running at once (default: settings, else 1)")
    p.add_argument("--poll-interval", type=float, metavar="SECONDS",
                   help="seconds between polls for ready tickets (default: settings, else 5)")
    p.add_argument("--exit-when-idle", action="store_true",
                   help="exit 0 once nothing runs, nothing is owed to the server and no "
                        "ticket is ready (exit 1 when a service is paused or a ticket is "
                        "blocked by a command that cannot start)")
    p.add_argument("--max-tickets", type=int, metavar="N",
                   help="claim at most N tickets, then exit when they are done")
    p.add_argument("--drain", action="store_true",
                   help="on SIGINT/SIGTERM let running jobs finish instead of stopping them "
                        "(stopped jobs run again at the next start; on_shutdown = \"fail\" "
                        "fails them)")
    p.add_argument("--manual", action="store_true",
                   help="claim nothing by itself: auto mode starts off and claimed tickets "
                        "wait for Run (a console attached to this worker steers it)")
    p.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    # The engine a console starts for itself: steered by the console, its session handed
    # over on stdin (never on the command line), and an expired session waits for the
    # console's next login instead of stopping.
    p.add_argument("--for-console", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", metavar="FILE",
                   help="settings file (default: $DSS_CONSOLE_CONFIG, else "
                        f"{paths.config_dir() / 'settings.toml'}); a file named here or in "
                        "$DSS_CONSOLE_CONFIG must exist")
    p.set_defaults(handler=worker_command)


def worker_command(args: argparse.Namespace) -> int:
    from dss_console.engine.engine import Engine, journal_path
    from dss_console.engine.journal import Journal
    from dss_console.engine.settings import CONSOLE_COMMAND_NICE, SettingsError, settings_path

    plugin = plugins.source_plugin(args.source)

    if not args.for_console:  # a console hands over its path, made when it first saves
        require_named_settings(args.config, env_too=True)
    config = settings_path(args.config)
    try:
        settings = _load(config, args)
    except SettingsError as exc:
        raise CliError(str(exc), code=2) from None
    handover = None
    try:
        if args.for_console:
            args.manual = True
            handover = sys.stdin.readline()
            settings = _console_settings(plugin.handover_settings(handover), config,
                                         args) or settings
        source = plugin.connect(args, settings, handover)
    except ConnectError as exc:
        raise CliError(str(exc), code=exc.code) from None
    again = plugin.login_again(source)
    texts, words = plugin.worker, plugin.words()
    data = paths.ensure_private_dir(args.data_dir) if args.data_dir else paths.data_dir()
    try:
        # server_slug() drops a URL's #fragment, and a v6 key is "<api url>#node-<id>": as a
        # path, the node stays part of the lock's name (one worker per node, not per server).
        lock = instance_lock(data, source.key.replace("#", "/"), settings.instance)
    except InstanceBusyError as exc:
        source.close()
        raise CliError(str(exc)) from None
    journal = Journal(journal_path(data))
    try:
        provider = args.provider or settings.provider or (
            source.default_provider())
    except ValueError as exc:
        raise CliError(str(exc)) from None
    # The person at a console comes first: the commands of an engine it started yield the
    # CPU to the window on a busy machine (a service's own `nice` setting wins).
    engine = Engine(settings, source, journal, provider=provider,
                    executors=plugins.executors(), auto=not args.manual,
                    max_tickets=args.max_tickets,
                    command_nice=CONSOLE_COMMAND_NICE if args.for_console else 0)
    printer = EventPrinter(sys.stdout, noun=words.job, service_noun=words.service,
                           lookup=engine.job)
    engine.events.subscribe(printer)
    try:
        views = engine.refresh_services()
    except Exception:
        journal.close()
        lock.close()
        raise
    _say_services(views, texts, settings, printer)
    if not any(v.command for v in views):
        printer.line(texts.no_command)
    stop = threading.Event()
    signals = {"count": 0}

    def on_signal(signum: int, _frame: object) -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            # No locks here: the main thread may be inside the printer's.
            os.write(2, b"second signal: exiting now; the next start recovers from the "
                        b"journal\n")
            os._exit(130)
        stop.set()

    logged_out = threading.Event()

    def on_event(event: Event) -> None:
        if isinstance(event, ConnectionChanged) and event.state == "logged_out" \
                and not args.for_console:
            logged_out.set()
            stop.set()

    engine.events.subscribe(on_event)
    drain_asked = threading.Event()

    def shutdown_asked(drain: bool) -> None:  # by an attached console
        if drain:
            drain_asked.set()
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    role = texts.role.format(provider=provider)
    printer.line(f"worker {settings.instance} {role} on {source.key}: "
                 f"up to {settings.concurrency} jobs, polling every "
                 f"{settings.poll_interval:g} s")
    watcher = SettingsWatcher(config)
    stuck: list[str] = []
    channel = None
    try:
        engine.start(run_claimed=not args.manual)
        channel = _serve(engine, data, provider, shutdown_asked, config, printer,
                         role="console" if args.for_console else "worker")
        while not stop.wait(0.2):
            if watcher.changed():
                _reload(engine, config, args, printer)
            if _finished(engine, args):
                stuck = _stuck(engine, texts, words)
                break
        if logged_out.is_set():
            printer.line(f"the server no longer accepts this session: stopping. Log in again "
                         f"({again}) and restart the worker; what is owed to the server is "
                         "kept and sent then")
        elif stop.is_set():
            drain = args.drain or drain_asked.is_set()
            printer.line("stopping: " + ("letting running jobs finish" if drain
                                         else "stopping running jobs"))
        flushed = engine.shutdown(drain=args.drain or drain_asked.is_set() or not stop.is_set(),
                                  flush_timeout=5.0 if logged_out.is_set() else 30.0)
        owed = engine.outbox.owed()
        if not flushed and owed:
            printer.line(f"{owed} server calls are still owed (server unreachable?); they "
                         "are kept in the journal and sent when a worker starts again")
        for line in stuck:
            printer.line(line)
        printer.line("worker stopped")
        return 1 if logged_out.is_set() or stuck else 0
    finally:
        if channel is not None:
            channel.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        journal.close()
        source.close()
        lock.close()


def _console_settings(text: str | None, config: Path,
                      args: argparse.Namespace) -> Settings | None:
    """The settings a console handed over with its credential (TOML), or None."""
    from dss_console.engine.settings import SettingsError, parse_settings

    if not text:
        return None
    try:
        settings = parse_settings(text, config)
    except SettingsError as exc:
        raise CliError(f"the console's settings: {exc}", code=2) from None
    _apply_overrides(settings, args)
    return settings


def _serve(engine: Engine, data: Path, provider: str, on_shutdown: Callable[[bool], None],
           config: Path, printer: EventPrinter, *, role: str) -> EngineChannel | None:
    """Open the local channel, so a console on this machine can attach and watch. A worker
    that cannot open it still works, headless."""
    from dss_console.engine.channel import ChannelError
    from dss_console.engine.host import serve_engine

    try:
        return serve_engine(engine, data, provider=provider, on_shutdown=on_shutdown,
                            settings_source=config, role=role)
    except (ChannelError, OSError) as exc:
        printer.line(f"note: consoles cannot attach to this worker: {exc}")
        return None


def _load(config: Path, args: argparse.Namespace) -> Settings:
    from dss_console.engine.settings import load_settings

    settings = load_settings(config).with_command_overrides(args.command) \
        .with_executor_overrides(args.executor)
    _apply_overrides(settings, args)
    return settings


class SettingsWatcher:
    """Notices when the settings file is written (a fixed command), by its stat."""

    def __init__(self, path: Path):
        self.path = path
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def changed(self) -> bool:
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        self._seen = stamp
        return True


def _reload(engine: Engine, config: Path, args: argparse.Namespace,
            printer: EventPrinter) -> None:
    from dss_console.engine.settings import SettingsError

    try:
        if not config.exists():
            raise SettingsError(f"{config}: no such file")
        settings = _load(config, args)
    except (SettingsError, CliError) as exc:
        printer.line(f"settings file changed but cannot be used, keeping the previous "
                     f"settings: {exc}")
        return
    # Who this worker is and where it works stay as started: they name its journal and lock.
    settings.instance = engine.settings.instance
    settings.workroot = engine.settings.workroot
    printer.line(f"settings reloaded from {config}")
    engine.update_settings(settings)


def _stuck(engine: Engine, texts: WorkerTexts, words: Words) -> list[str]:
    """Why an idle worker leaves work undone: paused services, blocked tickets, work waiting
    for the operator's decision."""
    lines = []
    names = {v.service_hash: v.name for v in engine.services()}
    for service_hash in engine.pauses.paused():
        # Its loud PAUSED line, with why, was printed when it paused: not twice.
        lines.append(f"{words.service} {names.get(service_hash, service_hash[:10])} stays "
                     "paused (the reason is above)")
    lines += [texts.blocked.format(id=job.ticket_id, reason=job.reason)
              for job in engine.blocked_jobs()]
    # The operator's gate: they keep waiting (the next start shows them again).
    lines += [f"{words.job} {view.ticket_id} waits for the operator's "
              f"{'approval' if view.gate == 'run' else 'release'} (dss-console approvals "
              f"show {view.ticket_id}); it keeps waiting"
              for view in engine.waiting_jobs()]
    return lines


def _apply_overrides(settings: Settings, args: argparse.Namespace) -> None:
    if args.instance:
        settings.instance = args.instance
    if args.provider:
        settings.provider = args.provider
    if args.workdir:
        settings.workroot = args.workdir.expanduser().resolve()
    if args.concurrency is not None:
        if args.concurrency < 1:
            raise CliError("--concurrency must be at least 1", code=2)
        settings.concurrency = args.concurrency
    if args.poll_interval is not None:
        if args.poll_interval <= 0:
            raise CliError("--poll-interval must be more than 0", code=2)
        settings.poll_interval = args.poll_interval
    if args.max_tickets is not None and args.max_tickets < 0:
        raise CliError("--max-tickets must be 0 or more", code=2)


def _finished(engine: Engine, args: argparse.Namespace) -> bool:
    """--exit-when-idle / --max-tickets: done when idle, nothing owed, and (for idle) a poll
    made after the last job ended found nothing ready."""
    if not (args.exit_when_idle or args.max_tickets is not None):
        return False
    if not engine.is_idle():
        return False
    if args.max_tickets is not None and engine.claims_made >= args.max_tickets:
        return True
    if args.exit_when_idle:
        return engine.idle_poll_completed()
    return False


def _say_services(views: list[ServiceView], texts: WorkerTexts, settings: Settings,
                  printer: EventPrinter) -> None:
    for view in views:
        what = texts.service.format(name=view.name, key=view.service_hash)
        if view.command:
            limit = f", at most {view.command.max_jobs} at once" if view.command.max_jobs else ""
            printer.line(f"{what}: {view.command.command}{limit}")
        else:
            printer.line(f"{what}: no command, not {texts.not_taken}")
    if not texts.note_unprovided:
        return
    known = {v.name for v in views} | {v.service_hash for v in views}
    tables = settings.service_tables()
    for key in tables.services if tables is not None else ():
        if key not in known:
            printer.line(f"note: a command is configured for {key!r}, which this account "
                         "does not provide")


# Jobs an EventPrinter remembers (the newest): a worker runs for months.
_REMEMBERED_JOBS = 1000


def _remember(memory: dict[int, Any], job_id: int, value: Any) -> None:
    memory[job_id] = value
    if len(memory) > _REMEMBERED_JOBS:
        del memory[next(iter(memory))]


class EventPrinter:
    """Engine events as readable, timestamped lines (one per change, not per output line).

    A job is named as its server names it ("ticket 21", "run 21"), never by the journal's
    own job id: ``lookup`` finds the ticket of a job whose messages come before its first
    state change."""

    def __init__(self, stream: TextIO, noun: str = "ticket",
                 lookup: Callable[[int], JobSnapshot] | None = None,
                 service_noun: str = "service"):
        self.stream = stream
        # What the server calls a job and a service: a DSS ticket, a vantage6 run's image.
        self.noun = noun
        self.service_noun = service_noun
        self.lookup = lookup
        self._lock = threading.Lock()
        self._states: dict[int, JobState] = {}
        self._progress: dict[int, int] = {}
        self._tickets: dict[int, str] = {}
        # Jobs claimed from now on get a "claimed" line even when the first snapshot
        # published for them already shows a later state (the job's thread runs ahead of
        # the claim's own event).
        self._since = time.time()
        self._jobs_lock = threading.Lock()
        self._updated: dict[int, float] = {}

    def _who(self, job_id: int) -> str:
        who = self._tickets.get(job_id)
        if who is not None:
            return who
        if self.lookup is not None:
            with contextlib.suppress(Exception):  # a job the journal no longer has
                ticket = self.lookup(job_id).ticket_id
                _remember(self._tickets, job_id, f"{self.noun} {ticket}")
                return self._tickets[job_id]
        return f"a {self.noun}"

    def line(self, text: str) -> None:
        with self._lock:
            stamp = time.strftime("%H:%M:%S")
            with contextlib.suppress(ValueError, OSError):  # closed stream at exit
                self.stream.write(f"{stamp} {text}\n")
                self.stream.flush()

    def _job_changed(self, job: JobSnapshot) -> None:
        if job.updated_at < self._updated.get(job.job_id, 0.0):
            return  # read before one already printed: it would step back
        _remember(self._updated, job.job_id, job.updated_at)
        label = f"{self.noun} {job.ticket_id} ({job.service_name or job.service_hash[:10]})"
        _remember(self._tickets, job.job_id, f"{self.noun} {job.ticket_id}")
        seen = self._states.get(job.job_id)
        if seen != job.state:
            if seen is None and job.state is not JobState.CLAIMED and \
                    job.claimed_at is not None and job.claimed_at >= self._since:
                self.line(f"{label}: {JobState.CLAIMED.value}")
            _remember(self._states, job.job_id, job.state)
            extra = ""
            ran = _run_seconds(job)
            if job.state is JobState.RUNNING:
                extra = f" (log: {Path(job.workdir) / '.dss'})"
            elif job.state.is_terminal and ran is not None:
                extra = f" after {ran:.1f} s"
            elif job.state.is_waiting:  # the operator's gate: how to decide headless
                extra = f" (dss-console approvals show {job.ticket_id})"
            reason = f": {job.reason}" if job.reason else ""
            self.line(f"{label}: {job.state.value}{reason}{extra}")
        step = int(job.progress * 10)
        if job.state is JobState.RUNNING and step > self._progress.get(job.job_id, 0):
            _remember(self._progress, job.job_id, step)
            self.line(f"{label}: progress {job.progress * 100:.0f}%")

    def __call__(self, event: Event) -> None:
        if isinstance(event, JobChanged):
            # Snapshots of one job come from the claiming thread and the job's own thread.
            with self._jobs_lock:
                self._job_changed(event.job)
        elif isinstance(event, JobMessage):
            who = self._who(event.job_id)
            kind = "note" if event.local else event.level
            self.line(f"{who}: {kind}: {event.text}")
        elif isinstance(event, CallDelivered):
            # Calls that did not go through, and the end call whenever it was not sent as
            # queued (skipped: the job had already ended on the server).
            if event.state in ("failed", "dropped") or (event.kind == FINISH
                                                         and event.state != "delivered"):
                who = self._who(event.job_id)
                self.line(f"{who}: server call {event.summary} {event.state}"
                          + (f": {event.error}" if event.error else ""))
        elif isinstance(event, ConnectionChanged):
            self.line(f"server connection: {event.state}"
                      + (f" ({event.detail})" if event.detail else ""))
        elif isinstance(event, ServicePaused):
            self.line(f"PAUSED {self.service_noun} "
                      f"{event.service_name or event.service_hash[:10]}: "
                      f"{event.reason}. Nothing more is claimed for it; fix the command in "
                      "the settings file (reloaded when saved) or restart the worker")
        elif isinstance(event, ServiceResumed):
            self.line(f"resumed {self.service_noun} "
                      f"{event.service_name or event.service_hash[:10]}: "
                      f"{event.why}")
        elif isinstance(event, EngineNotice):
            self.line(f"{event.level}: {event.text}")


def _run_seconds(job: JobSnapshot) -> float | None:
    """How long the command ran: a queued one's (a cluster job) from when it left the queue
    (journaled, kept across a restart that follows the job again), not from when it was
    submitted or followed again."""
    execution = job.execution
    if execution is not None and execution.queued and execution.running_at is not None:
        end = job.finished_at if job.finished_at is not None else time.time()
        return max(0.0, end - execution.running_at)
    return job.elapsed
