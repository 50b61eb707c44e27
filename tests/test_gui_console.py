"""The console window against the real server and engine, driven through its real widgets."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import qasync
from PySide6.QtCore import QThreadPool, QTimer
from PySide6.QtWidgets import QApplication

from dss_console.credentials import SessionStore
from dss_console.engine.settings import ServiceCommand, Settings, load_settings
from dss_console.engine.states import JobState
from dss_console.gui import tasks
from dss_console.gui.main_window import (
    QUIT_CANCEL,
    QUIT_DETACH,
    QUIT_DRAIN,
    QUIT_RESUME,
    MainWindow,
    QuitChoiceBox,
)
from dss_console.sandbox import Sandbox
from dss_console.sources.dss.source import RESTARTING_NOTE
from settings_helpers import services_of, settings_with

from test_engine import TAGS, command
from waiting import process_gone

WAIT_MS = 60_000


@pytest.fixture
def event_loop_qt(qapp) -> Iterator[qasync.QEventLoop]:
    loop = qasync.QEventLoop(qapp, already_running=True)
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)


def child_pids(exclude: set[int]) -> list[int]:
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z" and int(entry) not in exclude:
            found.append(int(entry))
    return found


class Console:
    def __init__(self, qtbot, sandbox: Sandbox, tmp_path: Path, service: str,
                 mode: str, *args: str, **overrides: object):
        self.qtbot = qtbot
        self.sandbox = sandbox
        self.service = service
        self.settings_file = tmp_path / "settings.toml"
        settings = settings_with(
            instance=f"gui-{uuid.uuid4().hex[:6]}", workroot=tmp_path / "work",
            poll_interval=0.3, concurrency=2, provider=sandbox.provider,
            services={service: ServiceCommand(key=service, command=command(mode, *args))},
            **overrides)
        self.window = MainWindow(settings, self.settings_file,
                                 SessionStore(tmp_path / "store", use_keyring=False),
                                 data_dir=tmp_path / "data",
                                 window_state_file=tmp_path / "window.ini")
        self.window.show()

    def login(self) -> None:
        pane = self.window.login_pane
        pane.server_box.setCurrentText(self.sandbox.url)
        pane.token_edit.setText(self.sandbox.fresh_token())
        pane.login_button.click()
        self.qtbot.waitUntil(lambda: self.window.engine is not None, timeout=WAIT_MS)
        self.qtbot.waitUntil(lambda: self.service in self.window.services_pane.all_hashes(),
                             timeout=WAIT_MS)

    def claim(self) -> int:
        """Queue a new ticket of this console's service and claim it with the button."""
        self.sandbox.add_ticket(self.service)
        self.window.services_pane.select_service(self.service)
        self.window.services_pane.claim_button.click()
        before = {j.job_id for j in self.window.engine.jobs()}
        self.qtbot.waitUntil(lambda: len(self.window.engine.jobs()) > len(before),
                             timeout=WAIT_MS)
        self.qtbot.waitUntil(lambda: self.window.queue_pane.current_job() is not None
                             and self.window.queue_pane.current_job().job_id not in before,
                             timeout=WAIT_MS)
        job = self.window.queue_pane.current_job()
        self.qtbot.waitUntil(lambda: self.window.engine.job(job.job_id).inputs_ready,
                             timeout=WAIT_MS)
        # Run becomes available once the inputs are in and the fetch has finished.
        self.qtbot.waitUntil(self.window.queue_pane.buttons["run"].isEnabled, timeout=WAIT_MS)
        return job.job_id

    def claim_and_run(self) -> int:
        """Claim a new ticket and press Run; returns the job id once it is running."""
        job_id = self.claim()
        self.window.queue_pane.buttons["run"].click()
        self.wait_state(job_id, JobState.RUNNING)
        return job_id

    def wait_state(self, job_id: int, *states: JobState) -> None:
        self.qtbot.waitUntil(lambda: self.window.engine.job(job_id).state in states,
                             timeout=WAIT_MS)
        # ... and the view shows it.
        self.qtbot.waitUntil(
            lambda: self.window.queue_pane.model.job(job_id).state in states, timeout=WAIT_MS)

    def server_status(self, job_id: int) -> str:
        return self.sandbox.admin.ticket_status(self.window.engine.job(job_id).ticket_id)

    def close(self, choice: str | None = QUIT_CANCEL) -> None:
        self.window.ask_quit_choice = lambda running, **_: choice  # type: ignore[method-assign]
        self.window.close()
        self.qtbot.waitUntil(lambda: self.window.closed, timeout=WAIT_MS)


@pytest.fixture
def make_console(qtbot, event_loop_qt, sandbox: Sandbox, tmp_path: Path
                 ) -> Iterator:
    consoles: list[Console] = []
    # The session's servers and daemons started before this test (DSS, a SLURM cluster, the
    # vantage6 server) are not the window's: only what the test started must be gone.
    servers = {sandbox.public_server.pid, sandbox.admin_server.pid, *child_pids(set())}
    threads_before = set(threading.enumerate())

    def make(mode: str = "success", *args: str, **overrides: object) -> Console:
        service = sandbox.register_service(f"GuiTest-{uuid.uuid4().hex[:8]}", "1.0.0", TAGS)
        console = Console(qtbot, sandbox, tmp_path / f"c{len(consoles)}", service, mode, *args,
                          **overrides)
        consoles.append(console)
        return console

    yield make
    for console in consoles:
        if not console.window.closed:
            console.close()
        active = [t for t in console.window.findChildren(QTimer) if t.isActive()]
        assert not active, f"timers left running: {active}"
    # Work the window started (stats, log loads) must finish inside its own test.
    qtbot.waitUntil(lambda: not tasks.pending_tasks(), timeout=15_000)
    tasks.shutdown_executor(wait=True)
    assert QThreadPool.globalInstance().waitForDone(10_000)
    qtbot.waitUntil(lambda: not child_pids(servers), timeout=15_000)

    def leftovers() -> list[str]:
        return [t.name for t in set(threading.enumerate()) - threads_before if t.is_alive()]

    # Threads a test started must end with it (a thread winding down gets a few seconds).
    try:
        qtbot.waitUntil(lambda: not leftovers(), timeout=10_000)
    except Exception:
        raise AssertionError(f"threads left running: {leftovers()}") from None


def test_login_failure_then_success(make_console, qtbot) -> None:
    console = make_console()
    pane = console.window.login_pane
    pane.server_box.setCurrentText(console.sandbox.url)
    pane.token_edit.setText("0" * 48)
    pane.login_button.click()
    qtbot.waitUntil(lambda: "refused this token" in pane.message.text(), timeout=WAIT_MS)
    assert console.window.engine is None
    assert pane.token_edit.text() == ""  # never kept around
    console.login()
    assert "test@example.com" in pane.who_label.text()
    names = [console.window.services_pane.table.item(r, 0).text()
             for r in range(console.window.services_pane.table.rowCount())]
    assert "DemoSegmentation 1.0.0" in names
    assert console.window.connection_label.text().startswith("Online")


def test_login_server_unreachable_in_words(make_console, qtbot,
                                           closed_port_url: str) -> None:
    console = make_console()
    pane = console.window.login_pane
    pane.server_box.setCurrentText(closed_port_url)
    pane.token_edit.setText("f" * 48)
    pane.login_button.click()
    qtbot.waitUntil(lambda: "unreachable (connection refused)" in pane.message.text(),
                    timeout=WAIT_MS)


def test_claim_inspect_and_run_to_success(make_console, qtbot) -> None:
    console = make_console("success")
    console.login()
    job_id = console.claim()
    window = console.window
    qtbot.waitUntil(lambda: window.detail_pane.inputs.topLevelItemCount() == 1, timeout=WAIT_MS)
    assert "All required tags present: T1-MRI" in window.detail_pane.inputs_note.text()
    assert window.queue_pane.buttons["run"].isEnabled()
    window.queue_pane.buttons["run"].click()
    console.wait_state(job_id, JobState.SUCCEEDED)
    assert console.server_status(job_id) == "success"
    log_text = window.detail_pane.log.text_edit.toPlainText
    qtbot.waitUntil(lambda: "Affine registration done" in log_text(), timeout=WAIT_MS)

    def calls() -> list[tuple[str, str]]:
        tree = window.detail_pane.calls
        return [(tree.topLevelItem(i).text(1), tree.topLevelItem(i).text(2))
                for i in range(tree.topLevelItemCount())]

    qtbot.waitUntil(lambda: ("status success", "delivered") in calls(), timeout=WAIT_MS)
    assert ("progress 100%", "delivered") in calls()
    assert all(state != "waiting to be sent" for _, state in calls())
    assert not window.queue_pane.buttons["run"].isEnabled()


def test_cancel_a_running_ticket_then_quit_with_one_running(make_console, qtbot) -> None:
    console = make_console("sleep", "300")
    console.login()
    job_id = console.claim_and_run()
    window = console.window
    pid_file = Path(window.engine.job(job_id).workdir) / "pids.txt"
    qtbot.waitUntil(pid_file.exists, timeout=WAIT_MS)
    pids = [int(p) for p in pid_file.read_text().split()]
    asked = []
    window.ask_confirm = lambda title, text: asked.append(text) or True  # type: ignore
    window.queue_pane.buttons["cancel"].click()
    console.wait_state(job_id, JobState.CANCELLED)
    assert asked and "cancelled" in asked[0]
    qtbot.waitUntil(lambda: all(process_gone(p) for p in pids), timeout=15_000)
    qtbot.waitUntil(lambda: console.server_status(job_id) == "failed", timeout=WAIT_MS)

    # Quit with another job running: "Keep running" leaves the window open, Stop and fail
    # ends it and tells the requester.
    job_id = console.claim_and_run()
    window.ask_quit_choice = lambda running, **_: None  # type: ignore  # "Keep running"
    window.close()  # the answer is given synchronously, inside closeEvent
    assert not window.closed and window.engine is not None and not window.session.quitting
    ticket = window.engine.job(job_id).ticket_id
    console.close(QUIT_CANCEL)
    assert console.sandbox.admin.ticket_status(ticket) == "failed"
    log = console.sandbox.admin.ticket_detail(ticket)["log"]
    assert ("error", "provider shut down") in {(e["category"], e["message"]) for e in log}


def test_fail_with_message_then_filter_by_state_and_text(make_console, qtbot) -> None:
    console = make_console("success")
    console.login()
    window = console.window
    first = console.claim()
    window.ask_text = lambda title, label: "The image is a knee"  # type: ignore
    window.queue_pane.buttons["fail"].click()
    console.wait_state(first, JobState.FAILED)
    # Fail with a message: the requester reads it.
    qtbot.waitUntil(lambda: console.server_status(first) == "failed", timeout=WAIT_MS)
    log = console.sandbox.admin.ticket_detail(window.engine.job(first).ticket_id)["log"]
    assert ("error", "The image is a knee") in {(e["category"], e["message"]) for e in log}
    second = console.claim()
    pane = window.queue_pane
    assert pane.proxy.rowCount() == 2
    pane.state_filter.setCurrentText("Failed")
    assert pane.proxy.rowCount() == 1
    assert pane.model.job_at(pane.proxy.mapToSource(pane.proxy.index(0, 0)).row()).job_id == first
    pane.state_filter.setCurrentText("Waiting to run")
    assert pane.proxy.rowCount() == 1
    pane.state_filter.setCurrentText("All tickets")
    pane.text_filter.setText(str(window.engine.job(second).ticket_id))
    assert pane.proxy.rowCount() == 1
    pane.text_filter.setText("no-such-thing")
    assert pane.proxy.rowCount() == 0


def test_settings_are_saved_and_applied(make_console, qtbot) -> None:
    console = make_console()
    console.login()
    window = console.window
    new = window.settings
    new.concurrency = 3
    services_of(new)[console.service] = ServiceCommand(key=console.service,
                                                   command=command("fail"), max_jobs=1)
    window.apply_settings(new)
    saved = load_settings(console.settings_file)
    assert saved.concurrency == 3
    assert services_of(saved)[console.service].max_jobs == 1
    # ... and the engine process runs with them.
    qtbot.waitUntil(lambda: "concurrency = 3" in window.engine.settings_toml(), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.jobs_label.text().endswith("/3"), timeout=5000)


def test_quit_dialog_offers_stop_and_run_again_by_default(make_console, qtbot) -> None:
    """The real quit dialog: its default answer stops the job and leaves the ticket claimed
    (it runs again at the next start), the user reads one line; nothing says failed."""
    console = make_console("sleep", "300")
    console.login()
    job_id = console.claim_and_run()
    window = console.window
    ticket = window.engine.job(job_id).ticket_id
    seen: dict[str, object] = {}

    def answer() -> None:
        box = QApplication.activeModalWidget()
        if not isinstance(box, QuitChoiceBox):
            QTimer.singleShot(50, answer)  # not shown yet
            return
        seen["buttons"] = [b.text() for b in box.buttons()]
        seen["default"] = box.defaultButton().text()
        seen["text"] = box.informativeText()
        box.defaultButton().click()

    QTimer.singleShot(0, answer)
    window.close()  # the dialog runs inside closeEvent; answer() presses its default
    qtbot.waitUntil(lambda: window.closed, timeout=WAIT_MS)
    assert seen["default"] == "Stop, run again at the next start"
    assert set(seen["buttons"]) >= {"Keep running in the background", "Finish, then stop",
                                    "Stop, run again at the next start", "Stop and fail them",
                                    "Cancel"}
    assert "provider shut down" in str(seen["text"]) and "stay claimed" in str(seen["text"])
    assert console.sandbox.admin.ticket_status(ticket) == "claimed"
    log = console.sandbox.admin.ticket_detail(ticket)["log"]
    assert [e["message"] for e in log].count(RESTARTING_NOTE) == 1
    assert not any(e["category"] == "error" for e in log), log
    console.sandbox.admin.delete_ticket(ticket)


def test_quit_dialog_answers(make_console, qtbot) -> None:
    """Each button of the real dialog gives its choice; Escape gives none (keep running)."""
    window = make_console().window
    for label, expected in (("Keep running in the background", QUIT_DETACH),
                            ("Finish, then stop", QUIT_DRAIN),
                            ("Stop, run again at the next start", QUIT_RESUME),
                            ("Stop and fail them", QUIT_CANCEL), ("Cancel", None)):
        box = window.quit_choice_box(2, allow_detach=True)
        button = next(b for b in box.buttons() if b.text() == label)
        QTimer.singleShot(0, button.click)
        box.exec()
        assert box.choice() == expected, label
        box.deleteLater()
    box = window.quit_choice_box(1)  # logging out: no "keep running"
    assert "Keep running in the background" not in [b.text() for b in box.buttons()]
    QTimer.singleShot(0, box.reject)
    box.exec()
    assert box.choice() is None
    box.deleteLater()


def test_window_layout_is_remembered(make_console, qtbot, tmp_path: Path) -> None:
    console = make_console()
    console.window.main_splitter.setSizes([300, 900])
    sizes = console.window.main_splitter.sizes()
    console.close()
    again = MainWindow(Settings(), None, SessionStore(tmp_path / "s2", use_keyring=False),
                       data_dir=tmp_path / "d2",
                       window_state_file=console.window._window_state.fileName())
    again.show()
    assert again.main_splitter.sizes()[0] == sizes[0]  # the right side takes the extra width
    assert again.main_splitter.saveState() == console.window.main_splitter.saveState()
    again.ask_quit_choice = lambda running, **_: QUIT_CANCEL  # type: ignore
    again.close()
    qtbot.waitUntil(lambda: again.closed, timeout=WAIT_MS)


def test_settings_dialog_round_trip_from_the_window(make_console, qtbot) -> None:
    console = make_console()
    console.login()
    window = console.window
    window.services_pane.select_service(console.service)
    window.services_pane.edit_button.click()  # "Edit command…" opens Settings on it
    dialog = window.settings_dialog
    assert dialog.isVisible()
    dialog.concurrency_spin.setValue(4)
    editor = dialog.current_editor()
    assert editor is not None  # "Edit command…" opened it on this service
    editor.max_jobs_spin.setValue(2)
    assert dialog.buttons.button(dialog.buttons.StandardButton.Ok).isEnabled()
    dialog.buttons.button(dialog.buttons.StandardButton.Ok).click()
    qtbot.waitUntil(lambda: load_settings(console.settings_file).concurrency == 4,
                    timeout=WAIT_MS)
    saved = load_settings(console.settings_file)
    assert services_of(saved)[console.service].max_jobs == 2
    qtbot.waitUntil(lambda: "concurrency = 4" in window.engine.settings_toml(), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.jobs_label.text().endswith("/4"), timeout=5000)


def test_logout_with_a_running_job_fails_it_first(make_console, qtbot) -> None:
    console = make_console("sleep", "300")
    console.login()
    job_id = console.claim_and_run()
    window = console.window
    ticket = window.engine.job(job_id).ticket_id
    asked = []
    window.ask_quit_choice = lambda running, **_: asked.append(running) or QUIT_CANCEL  # type: ignore
    window.login_pane.logout_button.click()
    qtbot.waitUntil(lambda: window.engine is None and window.login_pane.current is None,
                    timeout=WAIT_MS)
    assert asked == [1]
    # The failure was delivered while the session still worked.
    assert console.sandbox.admin.ticket_status(ticket) == "failed"
    log = console.sandbox.admin.ticket_detail(ticket)["log"]
    assert ("error", "provider shut down") in {(e["category"], e["message"]) for e in log}
    assert window.queue_pane.model.rowCount() == 0
    assert not window.queue_pane.isEnabled()
    assert window.login_pane.login_button.isVisible() or window.login_pane.login_page.isVisibleTo(
        window)


def test_claim_button_claims_once_per_click_in_flight(make_console, qtbot) -> None:
    console = make_console()
    console.sandbox.add_ticket(console.service)
    console.sandbox.add_ticket(console.service)
    console.login()
    window = console.window
    window.services_pane.select_service(console.service)
    window.services_pane.claim_button.click()
    assert not window.services_pane.claim_button.isEnabled()  # off before the claim starts
    window.services_pane.claim_button.click()  # while the first claim is on its way
    qtbot.waitUntil(lambda: window.services_pane.claim_button.text() == "Claim next",
                    timeout=WAIT_MS)
    qtbot.waitUntil(lambda: len(window.engine.jobs()) >= 1, timeout=WAIT_MS)
    assert len(window.engine.jobs()) == 1


def test_self_test_command_end_to_end(tmp_path) -> None:
    import subprocess
    import sys

    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=str(tmp_path / "c"),
               XDG_DATA_HOME=str(tmp_path / "d"), DSS_CONSOLE_KEYRING="off")
    shot = tmp_path / "shot.png"
    result = subprocess.run([str(Path(sys.executable).with_name("dss-console")), "--sandbox",
                             "--self-test", "--screenshot", str(shot)], env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "self-test passed" in result.stdout
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "c" / "dss-console" / "window.ini").exists()  # layout untouched


def test_selecting_a_running_job_shows_its_log_once_and_follows(make_console, qtbot) -> None:
    console = make_console("slow-report", "80", "0.1")
    for _ in range(2):
        console.sandbox.add_ticket(console.service)
    console.login()
    window = console.window
    window.services_pane.auto_button.click()
    engine = window.engine
    qtbot.waitUntil(lambda: len(engine.busy_job_ids()) == 2, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: all(engine.job(j).progress > 0.1 for j in engine.busy_job_ids()),
                    timeout=WAIT_MS)
    target = sorted(engine.busy_job_ids())[-1]
    window.queue_pane.select_job(target)  # mid-run: the tail from disk, then live lines
    log = window.detail_pane.log
    # The tail is read on a worker thread: on a busy machine it may still be loading when
    # the job has moved on, so wait for both before looking.
    qtbot.waitUntil(lambda: not log.loading and engine.job(target).progress > 0.3,
                    timeout=WAIT_MS)
    lines = [line for line in log.text_edit.toPlainText().splitlines() if line.strip()]
    steps = [line for line in lines if "step " in line and "@dss" not in line]
    assert steps and len(steps) == len(set(steps)), "a line is shown twice"
    assert log.following
    bar = log.text_edit.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 0, timeout=WAIT_MS)  # more lines than fit
    bar.setValue(0)  # the operator scrolls up to read: following pauses
    qtbot.waitUntil(lambda: not log.following, timeout=5000)
    count = len(log.text_edit.toPlainText())
    qtbot.waitUntil(lambda: len(log.text_edit.toPlainText()) > count, timeout=WAIT_MS)
    assert bar.value() == 0  # new lines arrived without moving the view
    window.services_pane.auto_button.click()


def test_broken_settings_file_is_only_replaced_when_asked(make_console, qtbot,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    from PySide6.QtGui import QDesktopServices

    from dss_console.gui.app import load_user_settings
    from dss_console.gui.broken_settings import FIX_FILE, REPLACE_FILE

    console = make_console()
    window = console.window
    path = console.settings_file
    broken = "concurrency = 'many'\n"
    path.write_text(broken)
    settings, settings_file, problem = load_user_settings(str(path))
    assert settings == Settings()  # the defaults
    assert settings_file == path and "concurrency" in problem
    window.settings_file_broken(path, problem)  # as the app does at startup
    assert window.banner.isVisible() and problem in window.banner.text()
    assert window.banner_action.isVisible()  # "Reload settings file"
    asked: list[str | None] = []
    answer: list[str | None] = [None]
    window.ask_broken_settings = (  # type: ignore[method-assign]
        lambda p, why: asked.append(why) or answer[0])

    def ok_with(concurrency: int, broken: bool = True) -> None:
        window.open_settings()
        dialog = window.settings_dialog
        assert dialog.file_problem_label.isVisible() == broken  # said before editing
        dialog.concurrency_spin.setValue(concurrency)
        dialog.buttons.button(dialog.buttons.StandardButton.Ok).click()

    ok_with(3)  # "Keep for this session"
    assert asked == [problem]
    assert window.settings.concurrency == 3 and path.read_text() == broken
    assert "were not saved" in window.banner.text()

    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl",
                        lambda url: opened.append(url.toLocalFile()) or False)
    answer[0] = FIX_FILE
    ok_with(4)
    assert opened == [str(path)] and path.read_text() == broken
    assert window.path_dialog.value() == str(path)  # no editor here: the path to copy
    window.path_dialog.close()

    answer[0] = REPLACE_FILE
    ok_with(5)
    qtbot.waitUntil(lambda: "Saved the settings" in window.banner.text(), timeout=WAIT_MS)
    assert load_settings(path).concurrency == 5
    backups = list(path.parent.glob("settings.toml.broken-*"))
    assert [b.read_text() for b in backups] == [broken]
    assert backups[0].name in window.banner.text()
    # From now on the file is saved as usual, without asking.
    ok_with(6, broken=False)
    assert len(asked) == 3 and load_settings(path).concurrency == 6


def test_broken_settings_file_reloads_once_fixed(make_console, qtbot) -> None:
    console = make_console()
    window = console.window
    path = console.settings_file
    path.write_text("concurrency = 0\n")
    window.settings_file_broken(path, "concurrency must be at least 1")
    window.banner_action.click()  # "Reload settings file", still broken
    qtbot.waitUntil(lambda: "Still does not load" in window.banner.text(), timeout=WAIT_MS)
    fixed = "# my own comment\nconcurrency = 7\n"
    path.write_text(fixed)
    window.banner_action.click()
    qtbot.waitUntil(lambda: window.settings.concurrency == 7, timeout=WAIT_MS)
    assert "reloaded" in window.banner.text() and not window.banner_action.isVisible()
    assert path.read_text() == fixed  # used as read, not rewritten
    window.apply_settings(window.settings)  # later changes are saved normally
    assert load_settings(path).concurrency == 7
