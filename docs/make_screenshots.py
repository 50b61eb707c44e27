"""Screenshots of the real console for the README, taken on a real (virtual) display.

    xvfb-run -a -s "-screen 0 1400x900x24" .venv/bin/python docs/make_screenshots.py

Starts the embedded sandbox, then saves to docs/screenshots/:
  login.png     the login pane (logged out, server chosen, token pasted)
  console.png   the main window in auto mode with running and finished tickets
  settings.png  the settings dialog on the demo service's command
  gate.png      a ticket waiting for the operator's approval (its Approval tab)
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "screenshots"


async def wait_until(condition: Callable[[], object], timeout: float = 120.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.1)


async def take(tmp: Path) -> None:
    from dss_console.credentials import SessionStore
    from dss_console.engine.settings import ServiceCommand, Settings
    from dss_console.engine.states import JobState
    from dss_console.gui.main_window import QUIT_CANCEL, MainWindow
    from dss_console.gui.tasks import run_blocking
    from dss_console.resources.demo_service import demo_service_command
    from dss_console.sandbox import Sandbox

    OUT.mkdir(parents=True, exist_ok=True)
    sandbox = Sandbox(data_dir=tmp / "server", tickets=6)
    await run_blocking(sandbox.start)
    try:
        settings = Settings(server=sandbox.url, servers=[sandbox.url], provider=sandbox.provider,
                            instance="lab-workstation", workroot=tmp / "work",
                            poll_interval=2.0, concurrency=2).with_services(
                                {sandbox.service_name: ServiceCommand(
                                    key=sandbox.service_name, command=demo_service_command(2.0),
                                    timeout=3600, max_jobs=2)})
        window = MainWindow(settings, None, SessionStore(tmp / "store", use_keyring=False),
                            data_dir=tmp / "data", window_state_file=tmp / "w.ini")
        window.resize(1360, 860)
        window.show()
        window.login_pane.server_box.setCurrentText(sandbox.url)
        token = await run_blocking(sandbox.fresh_token)
        window.login_pane.token_edit.setText(token)
        await asyncio.sleep(0.5)
        window.grab().save(str(OUT / "login.png"))

        assert await window.login_pane.log_in("dss", {"server": sandbox.url, "token": token})
        await wait_until(lambda: window.engine is not None)
        engine = window.engine
        window.services_pane.select_service(sandbox.service_hash)
        window.services_pane.auto_button.click()
        await wait_until(lambda: sum(j.state is JobState.SUCCEEDED for j in engine.jobs()) >= 2
                         and len(engine.busy_job_ids()) == 2)
        running = sorted(engine.busy_job_ids())[-1]
        window.queue_pane.select_job(running)
        await wait_until(lambda: engine.job(running).progress >= 0.4)
        await asyncio.sleep(1.0)
        window.grab().save(str(OUT / "console.png"))

        window.open_settings(sandbox.service_hash)
        dialog = window.settings_dialog
        await asyncio.sleep(0.8)
        dialog.grab().save(str(OUT / "settings.png"))
        dialog.reject()

        await take_gate(window, sandbox)

        window.ask_quit_choice = lambda running, **_: QUIT_CANCEL  # type: ignore[method-assign]
        window.close()
        await wait_until(lambda: window.closed)
    finally:
        await run_blocking(sandbox.stop)


async def take_gate(window: Any, sandbox: Any) -> None:
    """The service's jobs now wait for the operator's yes (approve = "run"): two new tickets
    are claimed by Auto mode and wait; the older one is shown in its Approval tab."""
    from dataclasses import replace

    from dss_console.engine.states import JobState
    from dss_console.gui.tasks import run_blocking

    engine = window.engine
    tables = window.settings.service_tables()
    assert tables is not None
    services = dict(tables.services)
    command = services[sandbox.service_name]
    window.settings_control.apply(window.settings.with_services(
        {**services, sandbox.service_name: replace(command, approve="run")}))
    before = {j.job_id for j in engine.jobs()}
    for _ in range(2):
        await run_blocking(sandbox.add_ticket)

    def waiting() -> list[int]:
        return sorted(j.job_id for j in engine.jobs()
                      if j.state is JobState.AWAITING_APPROVAL and j.job_id not in before)

    await wait_until(lambda: len(waiting()) == 2)
    window.queue_pane.select_job(waiting()[0])
    pane = window.detail_pane.approval
    await wait_until(lambda: pane.view is not None)
    await asyncio.sleep(1.0)
    window.grab().save(str(OUT / "gate.png"))


def main() -> None:
    import qasync
    from PySide6.QtWidgets import QApplication

    app = QApplication([sys.argv[0]])
    app.setQuitOnLastWindowClosed(False)  # the script ends the loop, not the last window
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    with tempfile.TemporaryDirectory(prefix="dss-shots-") as tmp, loop:
        loop.run_until_complete(take(Path(tmp)))
    print(f"saved screenshots in {OUT}")


if __name__ == "__main__":
    main()
