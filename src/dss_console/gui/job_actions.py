"""What the jobs pane's buttons do: the source's dialog for an action (its ActionSpec and
DialogSpec in core/presentation.py), then the engine call; the window-local actions (open the
work dir, copy the id, open the inputs in a viewer) without the engine."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Protocol

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QStatusBar

from dss_console.core.presentation import DialogSpec, Presentation
from dss_console.engine.engine import EngineError
from dss_console.engine.events import JobSnapshot
from dss_console.engine.remote import EngineCallError, EngineGoneError, RemoteEngine
from dss_console.engine.states import JobState
from dss_console.gui.presentations import job_inputs_dir
from dss_console.gui.queue_pane import QueuePane
from dss_console.gui.status_bar import BannerAction
from dss_console.gui.tasks import run_blocking, spawn

BATCH_IDS_SHOWN = 12  # ids a batch question lists before "…"


class ActionsHost(Protocol):
    """What of the window the actions use (the dialogs are the window's, so tests answer
    them there)."""

    queue_pane: QueuePane

    @property
    def engine(self) -> RemoteEngine | None: ...

    def statusBar(self) -> QStatusBar: ...

    def ask_confirm(self, title: str, text: str) -> bool: ...

    def ask_text(self, title: str, label: str) -> str | None: ...

    def ask_open_file(self, title: str, start: str, pattern: str) -> str | None: ...

    def ask_copy_path(self, title: str, text: str, path: str) -> None: ...

    def show_banner(self, text: str, level: str = "error", action: BannerAction | None = None,
                    cause: str | None = None) -> None: ...

    def clear_banner(self, cause: str | None = None) -> None: ...


class JobActions:
    def __init__(self, host: ActionsHost) -> None:
        self._host = host

    @property
    def presentation(self) -> Presentation:
        """The source's face the jobs pane shows (its words, actions and dialogs)."""
        return self._host.queue_pane.presentation

    def requested(self, name: str, job: JobSnapshot) -> None:
        """One job's button. Dialogs run here, in a plain slot; the work after them is
        scheduled as a task."""
        host = self._host
        spec = self.presentation.action(name)
        if spec is None:
            return  # not an action this source offers
        fields = {**self.presentation.word_fields(), "id": str(job.ticket_id)}
        if name == "workdir":
            # False when there is no file manager (a bare server, a minimal desktop).
            if not QDesktopServices.openUrl(QUrl.fromLocalFile(job.workdir)):
                host.ask_copy_path("Open work dir", "No file manager could open the work dir "
                                   "of {job} {id}. Its path:".format(**fields), job.workdir)
        elif name == "open_inputs":
            spawn(self._open_inputs(job, spec.program, fields))
        elif name == "copy":
            QGuiApplication.clipboard().setText(str(job.ticket_id))
            host.statusBar().showMessage((spec.done_text or "Copied {id}").format(**fields),
                                         3000)
        elif spec.dialog is not None:
            self._ask_then_perform(name, job, spec.dialog, fields)
        else:
            spawn(self.perform(name, job))

    def _ask_then_perform(self, name: str, job: JobSnapshot, dialog: DialogSpec,
                          fields: dict[str, str]) -> None:
        host = self._host
        if dialog.kind == "confirm":
            if host.ask_confirm(dialog.title.format(**fields), dialog.text.format(**fields)):
                spawn(self.perform(name, job))
        elif dialog.kind == "reason":
            reason = host.ask_text(dialog.title.format(**fields), dialog.text.format(**fields))
            if reason is None:  # the operator cancelled the dialog
                return
            if not reason.strip():
                host.show_banner(dialog.required.format(**fields), "warning",
                                 cause=f"job:{job.job_id}")
                return
            spawn(self.perform(name, job, reason.strip()))
        else:
            picked = host.ask_open_file(dialog.text.format(**fields), str(Path(job.workdir)),
                                        dialog.file_filter)
            question = dialog.confirm_text
            if job.state in (JobState.FAILED, JobState.CANCELLED) and \
                    dialog.confirm_text_failed:
                question = dialog.confirm_text_failed
            earlier = f" (“{job.reason}”)" if job.reason else ""
            text = question.format(**fields, picked=picked, state=job.state.value,
                                   earlier=earlier)
            if picked and host.ask_confirm(dialog.title.format(**fields), text):
                spawn(self.perform(name, job, picked))

    def batch_requested(self, name: str, jobs: list[JobSnapshot]) -> None:
        """Retry, Fail… or Cancel for several selected rows: one question, one reason."""
        spec = self.presentation.action(name)
        dialog = spec.dialog if spec is not None else None
        fields = self.presentation.word_fields()
        if len(jobs) == 1:  # several rows selected, the action suits one of them
            fields["jobs"] = fields["job"]
        ids = ", ".join(str(job.ticket_id) for job in jobs[:BATCH_IDS_SHOWN])
        ids += ", …" if len(jobs) > BATCH_IDS_SHOWN else ""
        fields.update(count=str(len(jobs)), ids=ids)
        reason = None
        if dialog is not None and not dialog.batch_title:
            return  # no batch form: one at a time
        if dialog is not None:
            title, text = dialog.batch_title.format(**fields), dialog.batch_text.format(**fields)
            if dialog.kind == "reason":
                reason = self._host.ask_text(title, text)
                if reason is None or not reason.strip():
                    return
                reason = reason.strip()
            elif not self._host.ask_confirm(title, text):
                return
        for job in jobs:
            spawn(self.perform(name, job, reason))

    async def perform(self, name: str, job: JobSnapshot, argument: str | None = None) -> bool:
        """Run an engine operation for a job; failures are shown in words."""
        host = self._host
        engine = host.engine
        if engine is None:
            return False
        calls = {
            "run": lambda: engine.run_job(job.job_id),
            "retry": lambda: engine.retry_job(job.job_id),
            "cancel": lambda: engine.cancel_job(job.job_id, argument),
            "fail": lambda: engine.fail_job(job.job_id, argument or ""),
            "upload": lambda: engine.upload_result(job.job_id, argument or ""),
            "approve": lambda: engine.approve_job(job.job_id),
            "reject": lambda: engine.reject_job(job.job_id, argument or ""),
            "release": lambda: engine.release_job(job.job_id),
        }
        try:
            await run_blocking(calls[name])
        except (EngineError, EngineCallError, EngineGoneError) as exc:
            noun = self.presentation.word_fields()["Job"]
            host.show_banner(f"{noun} {job.ticket_id}: {exc}", cause=f"job:{job.job_id}")
            return False
        host.clear_banner(f"job:{job.job_id}")  # an earlier complaint about it is over
        host.queue_pane.set_busy(engine.busy_job_ids())
        return True

    async def _open_inputs(self, job: JobSnapshot, program_name: str,
                           fields: dict[str, str]) -> None:
        """The downloaded input workspace in the viewer the action names (ITK-SNAP)."""
        from dss_console.engine.workdirs import find_input_workspace

        def launch() -> str | None:
            inputs = job_inputs_dir(job)
            workspace = find_input_workspace(inputs, job.ticket_id) if inputs else None
            program = shutil.which(program_name) if program_name else None
            if workspace is None or program is None:
                return None
            subprocess.Popen([program, "-w", str(workspace)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
            return str(workspace)

        try:
            opened = await run_blocking(launch)
        except OSError as exc:
            self._host.show_banner(f"Could not start ITK-SNAP: {exc}")
            return
        if opened is None:
            self._host.show_banner("{Job} {id}: no downloaded workspace, or ".format(**fields)
                                   + f"{program_name or 'its program'} is not on PATH.")
