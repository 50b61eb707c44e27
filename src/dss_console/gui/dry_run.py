"""Test a service's command on a local workspace, with no server: the offline dry run.

A dry run gives the command the layout of a real ticket, so a service developer sees what
a ticket would see before any user submits one::

    <tmp>/dss-dry-run-XXXX/             (0700)  {workdir}
        input/ticket_00000000.itksnap           {workspace}: a copy of the chosen workspace
        input/layer_000_<md5>.nii.gz ...         copies of its layer files (ITK-SNAP's names)
        result.itksnap                          {result}
        .dss/                                   hook, events file, output.log

This module has no Qt in it (:func:`prepare_dry_run`, :func:`summarize_run`, :class:`DryRun`);
its window is gui/dry_run_dialog.py (:class:`~dss_console.gui.dry_run_dialog.DryRunDialog`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from dss_console import plugins
from dss_console.core.command import CommandSpec, CommandStartError, JobPaths
from dss_console.core.executor import (
    ExecutorDetails,
    JobRef,
    RunCallbacks,
    RunHandle,
    RunOutcome,
    RunRequest,
    StartError,
)
from dss_console.engine.protocol import (
    Report,
)
from dss_console.engine.settings import ServiceCommand
from dss_console.engine.workdirs import ENGINE_DIR, make_private_dir
from dss_console.workspace import Workspace, WorkspaceError, export_result_workspace

__all__ = [
    "DRY_RUN_TICKET_ID",
    "UNKNOWN_SERVICE_HASH",
    "DryRun",
    "DryRunError",
    "DryRunFinished",
    "DryRunPrepared",
    "DryRunSummary",
    "prepare_dry_run",
    "summarize_run",
]

log = logging.getLogger(__name__)

DRY_RUN_TICKET_ID = 0  # no server numbers a ticket 0, so it cannot be mistaken for one
UNKNOWN_SERVICE_HASH = "0" * 40
RESULT_NAME = "result.itksnap"  # as the engine's jobs name it
_HASH_RE = re.compile(r"[0-9a-fA-F]{40}")


class DryRunError(Exception):
    """The dry run could not be set up (unreadable workspace, missing layer, full disk)."""


class DryRunCommandError(DryRunError):
    """The work dir is ready but the command cannot be built for it (a bad template): it
    could not start, as on a real ticket."""

    def __init__(self, message: str, paths: JobPaths) -> None:
        super().__init__(message)
        self.paths = paths


def _layers_text(workspace: Workspace) -> str:
    names = [layer.nickname or layer.role or f"layer {layer.index}" for layer in workspace.layers]
    count = len(names)
    return f"{count} layer{'s' if count != 1 else ''} ({', '.join(names)})"


def prepare_dry_run(workspace: Path, service_command: ServiceCommand, service_name: str,
                    root: Path | None = None, *,
                    service_hash: str | None = None) -> tuple[CommandSpec, JobPaths]:
    """Make a fresh private work dir under ``root`` (default: the system's temp dir) that
    looks like a real ticket's, and return how to run ``service_command`` in it (built by
    the source's own builder, so exactly what a ticket with these paths would run).

    The workspace and its layers are copied (never linked: a command may write to its
    inputs) under the names ITK-SNAP gives a ticket's files, with the registry kept whole
    (tags, nicknames, roles) and SaveLocation pointing at the copies. Raises DryRunError in
    words; nothing is left behind then, except for DryRunCommandError (the work dir is
    kept: the command cannot be built for it).
    """
    try:
        source = Workspace.load(workspace)
    except (WorkspaceError, OSError) as exc:
        raise DryRunError(f"cannot read the workspace: {exc}") from None
    if service_hash is None:
        key = service_command.key
        service_hash = key.lower() if _HASH_RE.fullmatch(key) else UNKNOWN_SERVICE_HASH
    try:
        workdir = Path(tempfile.mkdtemp(prefix="dss-dry-run-", dir=root))  # mode 0700
    except OSError as exc:
        where = root if root is not None else tempfile.gettempdir()
        raise DryRunError(f"cannot create a work dir in {where}: {exc.strerror or exc}") \
            from None
    try:
        input_dir = make_private_dir(workdir / "input")
        # The same renaming ITK-SNAP applies when it submits a ticket; without copy_layers
        # it only hashes, and we copy below.
        exported = export_result_workspace(source, input_dir, DRY_RUN_TICKET_ID)
        for name, layer_file in exported.uploads[:-1]:
            shutil.copyfile(layer_file, input_dir / name)
        ticket_workspace = input_dir / f"ticket_{DRY_RUN_TICKET_ID:08d}.itksnap"
        os.replace(exported.workspace_file, ticket_workspace)
    except WorkspaceError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        raise DryRunError(str(exc)) from None
    except OSError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        where = f" ({exc.filename})" if exc.filename else ""
        raise DryRunError(f"cannot copy the workspace: {exc.strerror or exc}{where}") from None
    paths = JobPaths(ticket_id=DRY_RUN_TICKET_ID, service_name=service_name,
                     service_hash=service_hash, workdir=workdir, input_dir=input_dir,
                     workspace=ticket_workspace, result=workdir / RESULT_NAME,
                     engine_dir=workdir / ENGINE_DIR)
    try:
        return plugins.dry_run_command(service_command, paths), paths
    except CommandStartError as exc:
        raise DryRunCommandError(str(exc), paths) from None


@dataclass(frozen=True)
class DryRunSummary:
    """How a dry run ended, in words, and what a real ticket would have come to."""

    would_succeed: bool
    verdict: str  # "On a real ticket: ..." in one sentence
    details: tuple[str, ...]  # how it ended, the result, the last error, where things are
    result_layers: int | None = None  # layers of a readable result workspace
    workdir: Path | None = None
    log_path: Path | None = None
    started: bool = True  # False: the command never ran (not prepared, could not start)

    @property
    def text(self) -> str:
        return "\n".join((*self.details, self.verdict))


def _ended_text(outcome: RunOutcome) -> str:
    took = f"after {outcome.duration:.1f} s"
    if outcome.stop_reason:
        return f"The command was stopped ({outcome.stop_reason}) {took}."
    if outcome.exit_code is not None:
        return f"The command exited with code {outcome.exit_code} {took}."
    try:
        name = f" ({signal.Signals(outcome.signal).name})" if outcome.signal else ""
    except ValueError:
        name = ""
    return f"The command was killed by signal {outcome.signal}{name} {took}."


def _check_result(result: Path) -> tuple[str, int | None, str | None]:
    """(what the result is, its layer count if usable, why it cannot be uploaded)."""
    if not result.is_file():
        return (f"No result workspace (nothing at {result}).", None,
                f"the command finished without a result workspace (expected {result.name})")
    try:
        workspace = Workspace.load(result)
    except (WorkspaceError, OSError) as exc:
        return (f"The result workspace cannot be read: {exc}", None,
                f"the result workspace cannot be read: {exc}")
    missing = [layer for layer in workspace.layers if not layer.path.is_file()]
    if missing:
        first = missing[0]
        problem = (f"layer {first.index} ({first.nickname or first.role}) file {first.path} "
                   "does not exist")
        return (f"Result workspace written, but {problem}.", None,
                f"the result workspace cannot be exported: {problem}")
    return (f"Result workspace written: {_layers_text(workspace)}.", len(workspace.layers), None)


def summarize_run(outcome: RunOutcome, paths: JobPaths,
                  stopped_by_user: bool = False) -> DryRunSummary:
    """Words for a finished run; the verdict follows the engine's rules for a real ticket
    (exit 0 with a usable result succeeds; anything else fails with the engine's reason)."""
    details = [_ended_text(outcome)]
    result_text, layers, result_problem = _check_result(paths.result)
    details.append(result_text)
    if outcome.last_error:
        details.append(f"Last @dss error: {outcome.last_error}")
    details.append(f"Work dir: {paths.workdir}")
    details.append(f"Full log: {outcome.log_path}")
    reason: str | None
    if stopped_by_user:
        verdict = "Stopped by you: no verdict."
        reason = None
    elif outcome.stop_reason:
        reason = f"the command {outcome.stop_reason}"
    elif outcome.exit_code == 0:
        reason = result_problem
    elif outcome.exit_code is not None:
        reason = outcome.last_error or f"command exited with code {outcome.exit_code}"
    else:
        reason = outcome.last_error or f"command was killed by signal {outcome.signal}"
    if not stopped_by_user:
        if reason is None:
            verdict = ("On a real ticket: success; the result workspace would be uploaded "
                       f"({layers} layer{'s' if layers != 1 else ''}).")
        else:
            verdict = f"On a real ticket: failed with “{reason}”."
    return DryRunSummary(would_succeed=not stopped_by_user and reason is None, verdict=verdict,
                         details=tuple(details), result_layers=layers, workdir=paths.workdir,
                         log_path=outcome.log_path)


@dataclass(frozen=True)
class DryRunPrepared:
    """The work dir is ready and the command is about to start."""

    paths: JobPaths
    argv: tuple[str, ...]  # the command as it runs (placeholders filled in)
    input_description: str  # e.g. "1 layer (T1)"


@dataclass(frozen=True)
class DryRunFinished:
    """The last event of a run: nothing more will come."""

    summary: DryRunSummary


DryRunEvent = DryRunPrepared | DryRunFinished | Report


class DryRun:
    """One dry run on a background thread: prepare the work dir, run the command, wait,
    summarize. Everything it has to say (DryRunPrepared, the command's reports, then one
    DryRunFinished) is queued for :meth:`take`, which any one thread may call without
    ever blocking; :attr:`alive` turns false once the thread has ended.
    """

    def __init__(self, workspace: Path, service_command: ServiceCommand, service_name: str,
                 *, service_hash: str | None = None, root: Path | None = None,
                 grace_period: float = 3.0) -> None:
        self._workspace = Path(workspace)
        self._command = service_command
        self._name = service_name
        self._hash = service_hash
        self._root = root
        self._grace = grace_period
        self._events: queue.SimpleQueue[DryRunEvent] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._handle: RunHandle | None = None
        self._pid: int | None = None
        self._stop_reason: str | None = None
        self._thread = threading.Thread(target=self._main, name="dss-dry-run", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def pid(self) -> int | None:
        """The command's pid once it has started."""
        with self._lock:
            return self._pid

    @property
    def stopping(self) -> bool:
        with self._lock:
            return self._stop_reason is not None

    def stop(self, reason: str) -> None:
        """Stop the command (TERM to its process group, KILL after the grace period), or
        keep it from starting. Returns at once; the run still ends with DryRunFinished."""
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason
            handle = self._handle
        if handle is not None:
            handle.stop(reason)  # before it started: _run stops it once it has

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def take(self, limit: int = 10_000) -> list[DryRunEvent]:
        """Up to ``limit`` queued events, oldest first; never waits."""
        events: list[DryRunEvent] = []
        with contextlib.suppress(queue.Empty):
            while len(events) < limit:
                events.append(self._events.get_nowait())
        return events

    def _not_run(self, verdict: str, paths: JobPaths | None) -> DryRunFinished:
        details = [f"Work dir: {paths.workdir}"] if paths is not None else []
        return DryRunFinished(DryRunSummary(
            would_succeed=False, verdict=verdict, details=tuple(details),
            workdir=paths.workdir if paths is not None else None, started=False))

    def _on_details(self, details: ExecutorDetails) -> None:
        pid = details.data.get("pid")
        if isinstance(pid, int):  # kept once it ended, as the window last saw it
            with self._lock:
                self._pid = pid

    def _main(self) -> None:
        finished: DryRunFinished | None = None
        try:
            finished = self._run()
        except Exception as exc:  # a bug must end the run in words, not hang the window
            log.exception("dry run failed")
            finished = self._not_run(f"The dry run failed: {exc!r}", None)
            with self._lock:
                handle = self._handle
            if handle is not None:
                handle.stop("the dry run failed")
                handle.wait()
        finally:
            self._events.put(finished or self._not_run("The dry run failed.", None))

    def _run(self) -> DryRunFinished:
        if self.stopping:
            return self._not_run("Stopped before it started.", None)
        try:
            spec, paths = prepare_dry_run(self._workspace, self._command, self._name,
                                          self._root, service_hash=self._hash)
        except DryRunCommandError as exc:
            return self._not_run(f"The command could not start: {exc}.", exc.paths)
        except DryRunError as exc:
            return self._not_run(f"The dry run could not be prepared: {exc}", None)
        assert paths.workspace is not None  # prepare_dry_run always makes one
        try:
            described = _layers_text(Workspace.load(paths.workspace))
        except (WorkspaceError, OSError) as exc:
            return self._not_run(f"The copied workspace cannot be read: {exc}", paths)
        self._events.put(DryRunPrepared(paths=paths, argv=tuple(spec.argv),
                                        input_description=described))
        with self._lock:
            stop = self._stop_reason
        if stop is not None:  # while the workspace was being copied
            return self._not_run(f"Stopped before the command started ({stop}).", paths)
        # A dry run is a local process whatever the service's executor (its dialog says so).
        executor = plugins.executor_class("local")()
        request = RunRequest(spec=spec, paths=paths, job=JobRef("dry-run", 0, 0),
                             log_name="output.log", grace_period=self._grace)
        callbacks = RunCallbacks(on_report=self._events.put, on_details=self._on_details,
                                 on_note=lambda level, text: log.info("dry run: %s", text))
        try:
            handle = executor.start(request, callbacks)
        except StartError as exc:
            return self._not_run(f"The command could not start: {exc}.", paths)
        with self._lock:
            self._handle = handle
            stop = self._stop_reason
        if stop is not None:  # asked while it was starting
            handle.stop(stop)
        outcome = handle.wait()
        assert outcome is not None
        return DryRunFinished(summarize_run(outcome, paths, stopped_by_user=self.stopping))
