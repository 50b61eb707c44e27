"""The window's side of the operator's gate: the detail pane's gate tab filled for the
selected waiting job (fetched off the Qt thread), its buttons routed to the jobs pane's
actions, "Approve always…" (a rule, then the approval) and opening the inputs or the held
result in the viewer. The rules list is gui/rules_dialog.py."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PySide6.QtCore import QDate
from PySide6.QtWidgets import (
    QCheckBox,
    QDateEdit,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QStatusBar,
    QVBoxLayout,
    QWidget,
)

from dss_console.core.presentation import ApprovalView, Presentation
from dss_console.engine.engine import EngineError
from dss_console.engine.events import JobSnapshot
from dss_console.engine.gate import ApprovalRule
from dss_console.engine.remote import EngineCallError, EngineGoneError, RemoteEngine
from dss_console.engine.settings import Settings
from dss_console.engine.states import JobState
from dss_console.engine.workdirs import find_input_workspace
from dss_console.gui.approval_pane import ApprovalPane
from dss_console.gui.detail_pane import DetailPane
from dss_console.gui.job_actions import JobActions
from dss_console.gui.presentations import job_inputs_dir
from dss_console.gui.queue_pane import QueuePane
from dss_console.gui.rules_dialog import RulesDialog
from dss_console.gui.tasks import run_blocking, spawn

ENGINE_ERRORS = (EngineError, EngineCallError, EngineGoneError)


@dataclass(frozen=True)
class AlwaysAnswer:
    """What "Approve always…" asked: a rule for any requester (not only this job's), and
    its last day ("" for no end)."""

    any_requester: bool
    until: str


class GateHost(Protocol):
    """What of the window the gate uses."""

    queue_pane: QueuePane
    detail_pane: DetailPane
    job_actions: JobActions
    settings: Settings

    @property
    def engine(self) -> RemoteEngine | None: ...

    def statusBar(self) -> QStatusBar: ...

    def ask_always(self, view: ApprovalView, presentation: Presentation
                   ) -> AlwaysAnswer | None: ...

    def window(self) -> QWidget: ...

    def save_settings(self) -> None: ...

    def show_banner(self, text: str, level: str = "error", action: object = None,
                    cause: str | None = None) -> None: ...

    def clear_banner(self, cause: str | None = None) -> None: ...


class AlwaysDialog(QDialog):
    """Approve this job, and from now on every job of this service from this requester
    (or from anyone, where the source names no requester), optionally until a day."""

    def __init__(self, view: ApprovalView, presentation: Presentation,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        fields = presentation.word_fields()
        self.setWindowTitle("Approve always")
        who = view.requester.words() if view.requester is not None else ""
        text = (f"Run {fields['job']} {view.ticket_id} now, and approve by itself every "
                f"later {fields['job']} of <b>{view.service}</b>"
                + (f" asked for by <b>{who}</b>" if who else "") + ".<br>"
                "Every decision a rule makes names it in the ledger; revoke it in Rules….")
        label = QLabel(text)
        label.setWordWrap(True)
        self.any_requester = QCheckBox("From any requester, not only this one")
        self.any_requester.setVisible(view.requester is not None)
        self.limited = QCheckBox("Until (the last day it holds):")
        self.until = QDateEdit(QDate.currentDate().addMonths(3))
        self.until.setCalendarPopup(True)
        self.until.setDisplayFormat("yyyy-MM-dd")
        self.until.setMinimumDate(QDate.currentDate())
        self.until.setEnabled(False)
        self.limited.toggled.connect(self.until.setEnabled)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Approve always")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        for widget in (label, self.any_requester, self.limited, self.until, buttons):
            layout.addWidget(widget)

    def answer(self) -> AlwaysAnswer:
        until = self.until.date().toString("yyyy-MM-dd") if self.limited.isChecked() else ""
        return AlwaysAnswer(self.any_requester.isChecked(), until)


class GateController:
    def __init__(self, host: GateHost) -> None:
        self._host = host
        self._loads = 0  # each load has a number; only the newest may fill the pane
        # The job (id, attempt, state) the tab was last shown for: the jobs pane signals
        # its selection again on every update of the selected job.
        self._shown: tuple[int, int, JobState] | None = None
        pane = self.pane
        pane.decisionRequested.connect(self._decide)
        pane.alwaysRequested.connect(self._always)
        pane.openRequested.connect(self._open)
        pane.rulesRequested.connect(self.open_rules)
        self.rules_dialog: RulesDialog | None = None

    @property
    def pane(self) -> ApprovalPane:
        return self._host.detail_pane.approval

    def _job(self) -> JobSnapshot | None:
        job = self._host.detail_pane.job
        return None if job is None else self._host.queue_pane.model.job(job.job_id) or job

    # -- the selected job ---------------------------------------------------------------------
    def job_shown(self, job: JobSnapshot | None, *, front: bool = True) -> None:
        """The selected job (or its new state): the gate tab shows while it waits, in
        front when ``front`` (selected, or it started waiting while selected)."""
        detail = self._host.detail_pane
        waiting = job is not None and job.state.is_waiting
        shown = None if job is None else (job.job_id, job.attempt, job.state)
        if shown == self._shown:
            return  # the same job at the same gate (a progress update): as it is
        self._shown = shown
        detail.show_gate_tab(waiting, front=waiting and front)
        if job is None or not waiting:
            self._loads += 1  # a load under way must not fill the hidden tab
            return
        self.pane.show_loading("Reading what it is…")
        spawn(self.load(job))

    async def load(self, job: JobSnapshot) -> None:
        engine = self._host.engine
        if engine is None:
            return
        self._loads = generation = self._loads + 1
        try:
            view = await run_blocking(engine.approval, job.job_id)
        except ENGINE_ERRORS as exc:
            if generation == self._loads:
                self.pane.show_loading(f"Could not read it: {exc}")
            return
        if generation == self._loads:
            self.pane.show_view(view, self._host.queue_pane.presentation)

    def open_rules(self) -> None:
        """The rules list (one at a time; shown, not exec'd)."""
        host = self._host
        engine = host.engine
        if engine is None:
            host.statusBar().showMessage("Log in first: the rules are the engine's.", 5000)
            return
        if self.rules_dialog is not None and self.rules_dialog.isVisible():
            self.rules_dialog.raise_()
            self.rules_dialog.activateWindow()
            return
        if self.rules_dialog is not None:
            self.rules_dialog.deleteLater()
        names = list(dict.fromkeys(s.name for s in engine.known_services() if s.name))
        self.rules_dialog = RulesDialog(engine, names, host.window())
        self.rules_dialog.show()

    # -- the buttons ----------------------------------------------------------------------------
    def _decide(self, name: str) -> None:
        job = self._job()
        if job is not None:
            self._host.job_actions.requested(name, job)

    def _always(self) -> None:
        view, job = self.pane.view, self._job()
        if view is None or job is None:
            return
        answer = self._host.ask_always(view, self._host.queue_pane.presentation)
        if answer is not None:
            spawn(self.approve_always(job, answer))

    async def approve_always(self, job: JobSnapshot, answer: AlwaysAnswer) -> bool:
        """The engine adds the rule (for the job's service and requester, as it matches
        them) and approves the job, in one call: a refused rule leaves the job waiting."""
        host = self._host
        engine = host.engine
        if engine is None:
            return False
        try:
            rule = await run_blocking(lambda: engine.approve_job(
                job.job_id, always=True, until=answer.until,
                any_requester=answer.any_requester))
        except ENGINE_ERRORS as exc:
            noun = host.queue_pane.presentation.word_fields()["Job"]
            host.show_banner(f"{noun} {job.ticket_id} was not approved: {exc}",
                             cause=f"job:{job.job_id}")
            return False
        host.clear_banner(f"job:{job.job_id}")
        if rule is not None:
            host.statusBar().showMessage(f"Approved; rule {rule.rule_id} approves the next "
                                         "ones by itself (Approval rules… lists it)", 8000)
        return True

    def rules_edited(self, rules: list[ApprovalRule]) -> None:
        """The engine's rules changed (the window, or `dss-console approvals` against this
        console's engine): a console's engine leaves its settings file to the window, so
        they are saved here as every setting is, and the next Settings… OK keeps them."""
        host = self._host
        engine = host.engine
        if engine is None or not engine.steered_by_console:
            return  # a headless worker keeps its own file
        host.settings.approval_rules = list(rules)
        host.save_settings()
        if self.rules_dialog is not None and self.rules_dialog.isVisible():
            self.rules_dialog.show_rules(list(rules))

    def _open(self, name: str) -> None:
        job = self._job()
        spec = self._host.queue_pane.presentation.action("open_inputs")
        if job is None or spec is None:
            return
        if name == "open_inputs":
            self._host.job_actions.requested("open_inputs", job)
            return
        view = self.pane.view
        names = [f.name for f in view.preview.files] if view and view.preview else []
        spawn(self._open_result(job, spec.program, names))

    async def _open_result(self, job: JobSnapshot, program_name: str,
                           names: list[str]) -> None:
        """The held result in the viewer: the file among those that would leave with the
        input workspace's suffix, found in the job's work dir (off the Qt thread)."""
        def launch() -> str | None:
            program = shutil.which(program_name) if program_name else None
            found = result_workspace(job, names)
            if program is None or found is None:
                return None
            subprocess.Popen([program, "-w", str(found)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
            return str(found)

        try:
            opened = await run_blocking(launch)
        except OSError as exc:
            self._host.show_banner(f"Could not start {program_name}: {exc}")
            return
        if opened is None:
            self._host.show_banner(f"No result workspace found in the work dir, or "
                                   f"{program_name or 'its program'} is not on PATH.",
                                   "warning")


def result_workspace(job: JobSnapshot, names: list[str]) -> Path | None:
    """The newest file in the job's work dir named as one of the files that would leave
    and ending as its input workspace does (what the viewer opens)."""
    inputs = job_inputs_dir(job)
    workspace = find_input_workspace(inputs, job.ticket_id) if inputs else None
    if workspace is None:
        return None
    wanted = {name for name in names if name.endswith(workspace.suffix)}
    found = [p for p in Path(job.workdir).rglob("*") if p.name in wanted and p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None
