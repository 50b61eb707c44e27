"""What the detail pane shows of the selected job beyond its snapshot, loaded off the Qt
thread: its queued server calls, its input workspace (with the tags its service requires),
and which job's live output the engine sends (only the one shown)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Protocol

from PySide6.QtCore import QObject, QTimer

from dss_console import plugins
from dss_console.core.source_plugin import ConnectError
from dss_console.engine.events import JobSnapshot
from dss_console.engine.remote import EngineCallError, EngineGoneError, RemoteEngine
from dss_console.gui.detail_pane import DetailPane
from dss_console.gui.presentations import job_inputs_dir
from dss_console.gui.tasks import run_blocking, spawn
from dss_console.workspace import Workspace, WorkspaceError

TAGS_RETRY_S = 60  # a failed look-up of a service's required tags is not retried sooner
CALLS_RELOAD_MS = 300  # a busy job changes its calls many times a second


class SelectedJobHost(Protocol):
    detail_pane: DetailPane
    logged_in: object | None

    @property
    def engine(self) -> RemoteEngine | None: ...


class SelectedJobLoader:
    def __init__(self, host: SelectedJobHost, parent: QObject) -> None:
        self._host = host
        self._required_tags: dict[str, tuple[str, ...]] = {}
        self._tags_failed_at: dict[str, float] = {}
        # Input-workspace loads overlap (a selection, then the download finishing): each
        # has a number, and only the newest may fill the pane.
        self._inputs_loads = 0
        self._calls_soon = QTimer(parent)
        self._calls_soon.setSingleShot(True)
        self._calls_soon.setInterval(CALLS_RELOAD_MS)
        self._calls_soon.timeout.connect(self._reload_calls)

    def job_selected(self, job: JobSnapshot | None) -> None:
        """Load what the pane shows of ``job`` (now shown), and watch its output only."""
        engine = self._host.engine
        if engine is not None:
            # Live output only for the job shown: the others' output stays on disk.
            spawn(self._watch(engine, [job.job_id] if job is not None else []))
        if job is not None:
            spawn(self._load_calls(job.job_id))
            spawn(self._load_inputs(job))

    def job_changed(self, before: JobSnapshot | None, after: JobSnapshot | None) -> None:
        """Reload the shown job's inputs only when they changed (downloaded, or a fresh
        attempt), not on every progress update."""
        if (after is not None and before is not None and after.job_id == before.job_id
                and (after.inputs_ready, after.attempt) != (before.inputs_ready, before.attempt)):
            spawn(self._load_inputs(after))

    def calls_changed(self, job_id: int) -> None:
        job = self._host.detail_pane.job
        if job is not None and job.job_id == job_id and not self._calls_soon.isActive():
            self._calls_soon.start()

    def stop(self) -> None:
        self._calls_soon.stop()

    def _reload_calls(self) -> None:
        job = self._host.detail_pane.job
        if job is not None:
            spawn(self._load_calls(job.job_id))

    async def _watch(self, engine: RemoteEngine, job_ids: list[int]) -> None:
        with contextlib.suppress(EngineGoneError, EngineCallError):
            await run_blocking(engine.watch, job_ids)

    async def _load_calls(self, job_id: int) -> None:
        engine = self._host.engine
        if engine is None:
            return
        try:
            items = await run_blocking(engine.outbox_items, job_id)
        except (EngineGoneError, EngineCallError):
            return
        self._host.detail_pane.set_calls(job_id, items)

    async def _load_inputs(self, job: JobSnapshot) -> None:
        engine, pane = self._host.engine, self._host.detail_pane
        if engine is None:
            return
        self._inputs_loads = generation = self._inputs_loads + 1
        if pane.presentation.inputs_view == "summary":
            # What the engine learnt at fetch time: no file to read here.
            pane.set_run_summary(job)
            return
        required = self._required_tags.get(job.service_hash)
        failed_at = self._tags_failed_at.get(job.service_hash, -1e9)
        logged_in = self._host.logged_in
        if required is None and logged_in is not None \
                and time.monotonic() - failed_at > TAGS_RETRY_S:
            try:
                required = await run_blocking(plugins.source_of(logged_in).required_tags,
                                              logged_in, job.service_hash)
                if required is not None:
                    self._required_tags[job.service_hash] = required
            except ConnectError:
                self._tags_failed_at[job.service_hash] = time.monotonic()
                required = ()
        if generation != self._inputs_loads:
            return
        if not job.inputs_ready:
            pane.set_inputs(job.job_id, None, required or ())
            return
        from dss_console.engine.workdirs import find_input_workspace

        def load() -> tuple[Workspace | None, set[Path]]:
            inputs = job_inputs_dir(job)
            found = find_input_workspace(inputs, job.ticket_id) if inputs else None
            workspace = Workspace.load(found) if found else None
            layers = workspace.layers if workspace is not None else []
            return workspace, {layer.path for layer in layers if not layer.path.exists()}

        try:
            workspace, missing = await run_blocking(load)
        except WorkspaceError as exc:
            if generation == self._inputs_loads:
                pane.set_inputs(job.job_id, None, required or (), f"Unreadable: {exc}")
            return
        if generation == self._inputs_loads:
            pane.set_inputs(job.job_id, workspace, required or (), missing_files=missing)
