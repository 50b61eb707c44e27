"""Engine events -> Qt signals, in batches, on the Qt thread.

The engine publishes from its worker threads into one thread-safe queue; a timer on the Qt
thread drains it at most ~30 times a second, coalescing per job, so a command printing
100k lines/s costs the event loop one append per job per tick, not one per line.
"""

from __future__ import annotations

import queue
import time
from collections import defaultdict

from PySide6.QtCore import QObject, QTimer, Signal

from dss_console.engine.events import (
    CallDelivered,
    CallQueued,
    ConnectionChanged,
    EngineNotice,
    EngineStatus,
    Event,
    EventBus,
    JobChanged,
    JobMessage,
    JobOutput,
    JobSnapshot,
    PollCompleted,
    RulesEdited,
    ServicePaused,
    ServiceResumed,
)

DRAIN_INTERVAL_MS = 33
DRAIN_BUDGET_S = 0.008  # leave the rest of the tick to painting and input
MAX_LINES_PER_JOB_PER_TICK = 20_000


class EngineBridge(QObject):
    jobsChanged = Signal(list)  # [JobSnapshot] (latest per job in this batch)
    outputArrived = Signal(int, list, int)  # job id, [(stream, text)], lines skipped
    messageArrived = Signal(int, str, str, bool)  # job id, level, text, local
    callsChanged = Signal(int)  # job id whose outbox changed
    connectionChanged = Signal(str, str)  # state, detail
    pollCompleted = Signal(dict, float)  # ready per service hash, seconds to next poll
    notice = Signal(str, str)  # level, text
    statusChanged = Signal()  # the engine's auto mode, busy jobs or claims changed
    servicesChanged = Signal()  # a service was paused or resumed
    rulesEdited = Signal(list)  # the engine's approval rules, after one was added or revoked

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._queue: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._unsubscribe: list = []
        self._timer = QTimer(self)
        self._timer.setInterval(DRAIN_INTERVAL_MS)
        self._timer.timeout.connect(self.drain)
        self._timer.start()

    def attach(self, events: EventBus) -> None:
        self._unsubscribe.append(events.subscribe(self._queue.put))

    def detach(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()

    def stop(self) -> None:
        self.detach()
        self._timer.stop()

    def drain(self) -> None:
        deadline = time.perf_counter() + DRAIN_BUDGET_S
        jobs: dict[int, JobSnapshot] = {}
        output: dict[int, list[tuple[str, str]]] = defaultdict(list)
        skipped: dict[int, int] = defaultdict(int)
        calls: set[int] = set()
        messages: list[JobMessage] = []
        others: list[Event] = []
        while time.perf_counter() < deadline:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(event, JobOutput):
                lines = output[event.job_id]
                lines.extend(event.lines)
                skipped[event.job_id] += getattr(event, "skipped", 0)
                if len(lines) > MAX_LINES_PER_JOB_PER_TICK:
                    # The view keeps a bounded tail anyway; the full log is on disk.
                    cut = len(lines) - MAX_LINES_PER_JOB_PER_TICK
                    skipped[event.job_id] += cut
                    del lines[:cut]
            elif isinstance(event, JobChanged):
                jobs[event.job.job_id] = event.job
            elif isinstance(event, CallQueued | CallDelivered):
                calls.add(event.job_id)
            elif isinstance(event, JobMessage):
                messages.append(event)
            else:
                others.append(event)
        if jobs:
            self.jobsChanged.emit(list(jobs.values()))
        for job_id, lines in output.items():
            self.outputArrived.emit(job_id, lines, skipped[job_id])
        for message in messages:
            self.messageArrived.emit(message.job_id, message.level, message.text, message.local)
        for job_id in calls:
            self.callsChanged.emit(job_id)
        status_changed = services_changed = False
        for event in others:
            if isinstance(event, ConnectionChanged):
                self.connectionChanged.emit(event.state, event.detail)
            elif isinstance(event, PollCompleted):
                self.pollCompleted.emit(dict(event.ready), float(event.next_poll_in))
            elif isinstance(event, EngineNotice):
                self.notice.emit(event.level, event.text)
            elif isinstance(event, EngineStatus):
                status_changed = True
            elif isinstance(event, ServicePaused | ServiceResumed):
                services_changed = True
            elif isinstance(event, RulesEdited):
                self.rulesEdited.emit(list(event.rules))
        # Once per batch: a burst of status events is one update of the status bar.
        if status_changed:
            self.statusChanged.emit()
        if services_changed:
            self.servicesChanged.emit()
