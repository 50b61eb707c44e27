"""What the window says besides its panes: the one message above them (the banner), the
status bar's parts (connection, Auto mode, running jobs, next poll). Desktop notifications:
gui/desktop_notify.py."""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QStatusBar,
)

from dss_console.engine.remote import RemoteEngine
from dss_console.engine.states import JobState
from dss_console.gui.pause_banner import PauseBanner
from dss_console.gui.queue_pane import QueuePane

BannerAction = tuple[str, Callable[[], object]]  # (button label, what it does)


class Banner:
    """One message above the panes, with Dismiss and, per message, a button of its own.
    The window lays out `row`."""

    def __init__(self) -> None:
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setVisible(False)
        self.label.setObjectName("banner")
        self.close_button = QPushButton("Dismiss")
        self.close_button.setVisible(False)
        self.action_button = QPushButton()  # e.g. "Reload settings file"; per message
        self.action_button.setVisible(False)
        self._callback: Callable[[], object] | None = None
        self._cause: str | None = None  # what ends it (clear(cause))
        self.row = QHBoxLayout()
        self.row.addWidget(self.label, 1)
        self.row.addWidget(self.action_button)
        self.row.addWidget(self.close_button)
        self.close_button.clicked.connect(lambda: self.clear())
        self.action_button.clicked.connect(self._action_clicked)

    def show(self, text: str, level: str = "error", action: BannerAction | None = None,
             cause: str | None = None) -> None:
        """`action` = (button label, callback) adds a button that belongs to this message
        only; `cause` names what clear(cause) ends it ("connection", "claim", "job:<id>") so
        it does not outlive what it reports."""
        self._cause = cause
        colour = {"error": "#c62828", "warning": "#b26a00"}.get(level, "")
        self.label.setStyleSheet(f"color: {colour};" if colour else "")
        # Plain text: messages quote server replies and file contents, never markup.
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        self.label.setText(text)
        self.label.setVisible(True)
        self.close_button.setVisible(True)
        self._callback = action[1] if action else None
        self.action_button.setText(action[0] if action else "")
        self.action_button.setVisible(action is not None)

    def clear(self, cause: str | None = None) -> None:
        """Hide the message; with `cause`, only a message shown for that cause."""
        if cause is not None and cause != self._cause:
            return
        self._cause = None
        self.label.setVisible(False)
        self.close_button.setVisible(False)
        self.action_button.setVisible(False)
        self._callback = None

    def _action_clicked(self) -> None:
        callback = self._callback
        if callback is not None:
            callback()


class StatusLine:
    """The status bar's parts: the connection, Auto mode, running jobs and the next poll."""

    def __init__(self, bar: QStatusBar, queue_pane: QueuePane, pause_banner: PauseBanner
                 ) -> None:
        self._queue_pane = queue_pane
        self._pause_banner = pause_banner
        # The one connection state the bar shows: (state, detail).
        self.connection: tuple[str, str] = ("none", "")
        self._next_poll_at: float | None = None
        self.connection_label = QLabel("Not logged in")
        self.auto_label = QLabel("Auto mode off")
        self.jobs_label = QLabel("")
        self.poll_label = QLabel("")
        for label in (self.connection_label, self.auto_label, self.jobs_label, self.poll_label):
            bar.addPermanentWidget(label)

    def show_connection(self, state: str, detail: str, server: str) -> None:
        """States: none, connecting, online, offline (retrying), waiting (a call is slow),
        logged_out (the server ended the session), stopped; others are shown as named."""
        self.connection = (state, detail)
        texts = {
            "none": "Not logged in",
            "connecting": f"Connecting to {server}…",
            "online": f"Online: {server}",
            "offline": "Offline, retrying",
            # The engine's detail says it whole ("no reply from the server for 7 s").
            "waiting": detail[:1].upper() + detail[1:] if detail else "Waiting for the server",
            "logged_out": "Session expired",
            "stopped": "Not processing",
        }
        # Short on the bar (a long message would be cut); the whole detail in the tooltip.
        self.connection_label.setText(texts.get(state, state.replace("_", " ").capitalize()))
        tips = {"logged_out": "Log in again with a new token (Server, top left); jobs keep "
                              "running and what they report waits."}
        tip = "\n".join(part for part in (server, detail, tips.get(state, "")) if part)
        self.connection_label.setToolTip(tip)

    def poll_completed(self, next_poll_in: float) -> None:
        self._next_poll_at = time.monotonic() + next_poll_in

    def update(self, engine: RemoteEngine | None, concurrency: int) -> None:
        if engine is None:
            self.auto_label.setText("")
            self.jobs_label.setText("")
            self.poll_label.setText("")
            return
        self.auto_label.setText("Auto mode on" if engine.auto else "Auto mode off")
        # From the snapshots the table holds: the Qt thread never waits on the journal.
        running = 0
        for job_id in engine.busy_job_ids():
            job = self._queue_pane.model.job(job_id)
            if job is not None and job.state in (JobState.DOWNLOADING, JobState.RUNNING):
                running += 1
        self.jobs_label.setText(f"Running {running}/{concurrency}")
        # The countdown only while online: offline, waiting or logged out, the connection
        # label says what happens instead. At zero a poll is on its way, not "0 s" forever.
        paused = self._pause_banner.status_text() if engine.auto else None
        if paused:  # not "Checking for tickets…": nothing will be claimed
            self.poll_label.setText(paused)
        elif engine.auto and self.connection[0] == "online" and self._next_poll_at is not None:
            seconds = round(self._next_poll_at - time.monotonic())
            self.poll_label.setText(f"Next poll in {seconds} s" if seconds >= 1
                                    else "Checking for tickets…")
        else:
            self.poll_label.setText("")
        self._queue_pane.set_busy(engine.busy_job_ids())

