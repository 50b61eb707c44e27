"""The console as a client of an engine in another process (issue 12): it attaches to a
headless worker, leaves its jobs running when asked, reports an engine that died and restarts
it, and two windows share one engine. Real worker processes, real server, real widgets."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import test_gui_console
from dss_console.engine.states import JobState
from dss_console.gui.main_window import QUIT_CANCEL, QUIT_DETACH
from dss_console.sources.dss.source import RESTARTED_NOTE
from test_gui_console import WAIT_MS, Console
from test_worker_cli import Worker, args_for, worker_env  # noqa: F401 (fixture)

from waiting import process_gone

# The console fixtures of test_gui_console.py, shared here.
event_loop_qt = test_gui_console.event_loop_qt
make_console = test_gui_console.make_console


def live_text(console: Console) -> str:
    return console.window.detail_pane.log.text_edit.toPlainText()


def select(console: Console, job_id: int) -> None:
    console.qtbot.waitUntil(lambda: console.window.queue_pane.select_job(job_id),
                            timeout=WAIT_MS)


def test_the_window_attaches_to_a_headless_worker_and_shows_its_live_log(
        make_console, qtbot, worker_env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    console = make_console()
    window = console.window
    # The worker of this machine, for the console's server, instance and data dir.
    window.data_dir = tmp_path / "data" / "dss-console"
    go = tmp_path / "go"
    worker = Worker(worker_env, *args_for(console.service, tmp_path, "chatter", str(go)),
                    "--instance", window.settings.instance)
    try:
        ticket = console.sandbox.add_ticket(console.service)
        worker.wait_line(": running")
        console.login()
        assert window.engine is not None and window.engine.info["role"] == "worker"
        # Settings… says that the worker runs on its own settings, not this window's.
        window.open_settings()
        note = window.settings_dialog.engine_note_label
        assert note.isVisibleTo(window.settings_dialog)
        assert f"headless worker (process {worker.proc.pid})" in note.text()
        window.settings_dialog.reject()
        qtbot.waitUntil(lambda: any(j.ticket_id == ticket for j in
                                    window.queue_pane.model.jobs()), timeout=WAIT_MS)
        job = next(j for j in window.queue_pane.model.jobs() if j.ticket_id == ticket)
        assert job.state is JobState.RUNNING and window.engine.auto
        select(console, job.job_id)
        qtbot.waitUntil(lambda: live_text(console).count("chatter line") > 20, timeout=WAIT_MS)
        # Closing the window lets go of a worker it did not start: the job goes on.
        console.close(QUIT_CANCEL)
        assert worker.proc.poll() is None
        go.write_text("go")
        qtbot.waitUntil(lambda: console.sandbox.admin.ticket_status(ticket) == "success",
                        timeout=WAIT_MS)
    finally:
        go.write_text("go")
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.finish() == 0, "\n".join(worker.lines)


def test_keep_running_leaves_the_job_running_and_a_new_window_shows_it(
        make_console, qtbot, tmp_path: Path) -> None:
    go = tmp_path / "go"
    console = make_console("chatter", str(go))
    console.login()
    job_id = console.claim_and_run()
    engine_pid = console.window.session.process.pid
    # As on SIGTERM (app.Console.on_signal): no dialog, the running job goes on.
    console.window.ask_quit_choice = None  # type: ignore[assignment]  # must not be asked
    console.window.quit_for_signal(keep_running_jobs=True)
    qtbot.waitUntil(lambda: console.window.closed, timeout=WAIT_MS)
    assert not process_gone(engine_pid)
    # A new window on the same server, instance and data dir finds the engine and its job.
    again = Console(qtbot, console.sandbox, console.settings_file.parent, console.service,
                    "chatter", str(go))
    again.window.settings = console.window.settings
    again.login()
    assert again.window.session.process is None  # attached, not started
    again.wait_state(job_id, JobState.RUNNING)
    select(again, job_id)
    qtbot.waitUntil(lambda: "chatter line" in live_text(again), timeout=WAIT_MS)
    go.write_text("go")
    again.wait_state(job_id, JobState.SUCCEEDED)
    again.close()
    # The engine an earlier window left running stops when the last one quits with nothing
    # running (it was started for a console).
    qtbot.waitUntil(lambda: process_gone(engine_pid), timeout=WAIT_MS)


def test_a_crashed_engine_is_reported_and_restarted_without_losing_the_ticket(
        make_console, qtbot, tmp_path: Path) -> None:
    go = tmp_path / "go"
    console = make_console("chatter", str(go))
    console.login()
    job_id = console.claim_and_run()
    window = console.window
    ticket = window.engine.job(job_id).ticket_id
    process = window.session.process
    os.kill(process.pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: window.engine is None, timeout=WAIT_MS)
    assert "engine process stopped unexpectedly" in window.banner.text()
    assert window.connection_label.text() == "Not processing"
    assert window.banner_action.isVisible() and "Restart" in window.banner_action.text()
    go.write_text("go")  # the rerun after recovery finishes at once
    window.banner_action.click()
    qtbot.waitUntil(lambda: window.engine is not None, timeout=WAIT_MS)
    # Recovery: the interrupted job runs again from a clean work dir and succeeds.
    qtbot.waitUntil(lambda: console.sandbox.admin.ticket_status(ticket) == "success",
                    timeout=WAIT_MS)
    # The server says success when the status call lands; the journal a moment later.
    qtbot.waitUntil(lambda: window.engine.job(job_id).state is JobState.SUCCEEDED,
                    timeout=WAIT_MS)
    log = [e["message"] for e in console.sandbox.admin.ticket_detail(ticket)["log"]]
    assert log.count(RESTARTED_NOTE) == 1, log


def test_two_windows_on_one_engine_see_the_same_jobs(make_console, qtbot,
                                                     tmp_path: Path) -> None:
    go = tmp_path / "go"
    first = make_console("chatter", str(go))
    first.login()
    job_id = first.claim_and_run()
    second = Console(qtbot, first.sandbox, first.settings_file.parent / "second",
                     first.service, "chatter", str(go))
    second.window.settings = first.window.settings
    second.window.data_dir = first.window.data_dir
    second.login()
    assert second.window.engine.info["pid"] == first.window.engine.info["pid"]
    second.wait_state(job_id, JobState.RUNNING)
    go.write_text("go")
    first.wait_state(job_id, JobState.SUCCEEDED)
    second.wait_state(job_id, JobState.SUCCEEDED)
    second.close(QUIT_DETACH)
    first.close()
