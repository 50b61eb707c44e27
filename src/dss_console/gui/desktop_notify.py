"""Telling the person at the desk (issue 20, part 5): a desktop notification when a decision
waits, a job failed or a job succeeded (each kind opted into in Settings), and the count of
waiting decisions in the window's title and tray tooltip.

Sent as a freedesktop notification over the session D-Bus with jeepney (pure Python; not
QtDBus, whose PySide6 marshalling the notification daemons refuse), always off the Qt thread,
one notification per kind updated in place (``replaces_id``): ten failures are one bubble
saying 10. No session bus or no notification service: the tray's balloon, else the status
bar. The texts say only what the window shows anyway (ticket, service, the failure's reason).
"""

from __future__ import annotations

import os

from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import QMainWindow, QSystemTrayIcon

from dss_console.core.presentation import Words
from dss_console.engine.events import JobSnapshot
from dss_console.engine.states import JobState
from dss_console.gui.tasks import run_blocking, spawn

APP_NAME = "DSS Console"
SEND_TIMEOUT = 2.0  # s; a daemon answers in milliseconds, a stuck bus must not pile up sends
REASON_CHARS = 200  # a notification is a glance: the reason's first line, cut here
STATUS_BAR_MS = 15_000
NOTIFY_SIGNATURE = "susssasa{sv}i"  # org.freedesktop.Notifications.Notify
ENDED_KINDS = {JobState.FAILED: "failed", JobState.SUCCEEDED: "succeeded"}


class NoNotificationService(Exception):
    """No session bus, or nothing on it that shows notifications."""


def send_notification(summary: str, body: str, replaces_id: int = 0,
                      timeout: float = SEND_TIMEOUT) -> int:
    """Show (or, with ``replaces_id``, update) a desktop notification; returns the id the
    notification service gave it. Blocking: call it off the Qt thread."""
    try:
        from jeepney import DBusAddress, new_method_call
        from jeepney.io.blocking import open_dbus_connection
        from jeepney.wrappers import DBusErrorResponse, unwrap_msg
    except ImportError:  # not Linux: no freedesktop notifications
        raise NoNotificationService("jeepney is not installed") from None
    if not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        raise NoNotificationService("no session bus")
    service = DBusAddress("/org/freedesktop/Notifications",
                          bus_name="org.freedesktop.Notifications",
                          interface="org.freedesktop.Notifications")
    # app_name, replaces_id, app_icon, summary, body, actions, hints, expire_timeout
    # (-1: the service's own default).
    message = new_method_call(service, "Notify", NOTIFY_SIGNATURE,
                              (APP_NAME, replaces_id, "", summary, body, [], {}, -1))
    try:
        with open_dbus_connection(bus="SESSION", auth_timeout=timeout) as connection:
            reply = unwrap_msg(connection.send_and_get_reply(message, timeout=timeout))
    except (OSError, TimeoutError, ValueError, KeyError, DBusErrorResponse) as error:
        raise NoNotificationService(f"{type(error).__name__}: {error}") from None
    return int(reply[0])


def waiting_title(count: int) -> str:
    """The window's title with the decisions that wait."""
    if count <= 0:
        return APP_NAME
    return f"{APP_NAME} — {count} decision{'s wait' if count > 1 else ' waits'}"


def _reason(job: JobSnapshot) -> str:
    lines = (job.reason or "").strip().splitlines()
    first = lines[0] if lines else ""
    return first if len(first) <= REASON_CHARS else first[:REASON_CHARS - 1] + "…"


class Notifier(QObject):
    """The window's notifications: one per kind, its count growing until the operator comes
    back to the window (it is activated), sent one at a time per kind so an update never
    races the notification it replaces."""

    def __init__(self, window: QMainWindow) -> None:
        super().__init__(window)
        self._window = window
        self._tray: QSystemTrayIcon | None = None
        self._ids: dict[str, int] = {}  # kind -> the service's notification id
        self._counts: dict[str, int] = {}  # kind -> how many since the operator looked
        self._latest: dict[str, tuple[str, str]] = {}  # kind -> (summary, body) to send
        self._sending: set[str] = set()
        # (job, attempt) already told: an ended job is reported again as its calls go out.
        self._told: set[tuple[int, int]] = set()
        self._waiting = 0
        window.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self._window and event.type() == QEvent.Type.WindowActivate:
            self._counts.clear()  # the operator is looking: the next one starts at 1
        return False

    # -- what the window reports ------------------------------------------------------------
    def job_ended(self, job: JobSnapshot, kinds: tuple[str, ...], words: Words) -> None:
        kind = ENDED_KINDS.get(job.state)
        if kind is None or kind not in kinds or (job.job_id, job.attempt) in self._told:
            return
        self._told.add((job.job_id, job.attempt))
        count = self._counts[kind] = self._counts.get(kind, 0) + 1
        what = f"{job.ticket_id} of {job.service_name}"
        reason = _reason(job) if kind == "failed" else ""
        if count == 1:
            summary = f"{words.job.capitalize()} {job.ticket_id} {kind}"
            body = f"{job.service_name}: {reason}" if reason else job.service_name
        else:
            summary = f"{count} {words.jobs} {kind}"
            body = f"Latest: {words.job} {what}" + (f": {reason}" if reason else "")
        self._post(kind, summary, body)

    def waiting_changed(self, count: int, kinds: tuple[str, ...]) -> None:
        """The engine's count of jobs waiting for a decision: in the title and tray tooltip
        always, and a notification when it grew (opted in)."""
        grew = count > self._waiting
        self._waiting = count
        title = waiting_title(count)
        if self._window.windowTitle() != title:
            self._window.setWindowTitle(title)
        if self._tray is not None:
            self._tray.setToolTip(title)
        if grew and "decision" in kinds:
            summary = f"{count} decision{'s wait' if count > 1 else ' waits'}"
            self._post("decision", summary, f"Open {APP_NAME} to approve, release or reject.")

    # -- sending ----------------------------------------------------------------------------
    def _post(self, kind: str, summary: str, body: str) -> None:
        self._latest[kind] = (summary, body)  # a send in flight sends this one after it
        if kind not in self._sending:
            self._sending.add(kind)
            spawn(self._send(kind))

    async def _send(self, kind: str) -> None:
        try:
            while kind in self._latest:
                summary, body = self._latest.pop(kind)
                try:
                    self._ids[kind] = await run_blocking(send_notification, summary, body,
                                                         self._ids.get(kind, 0))
                except NoNotificationService:
                    self._show_elsewhere(summary, body)
        finally:
            self._sending.discard(kind)

    def _show_elsewhere(self, summary: str, body: str) -> None:
        """No notification service: the tray's balloon (macOS, Windows, some desktops), else
        the status bar."""
        if QSystemTrayIcon.isSystemTrayAvailable():
            if self._tray is None:
                self._tray = QSystemTrayIcon(self._window.windowIcon(), self._window)
                self._tray.setToolTip(waiting_title(self._waiting))
                self._tray.show()
            self._tray.showMessage(summary, body)
            return
        self._window.statusBar().showMessage(f"{summary}: {body}", STATUS_BAR_MS)

    def busy(self) -> bool:
        """A send is on its way (tests wait for it to end)."""
        return bool(self._sending)
