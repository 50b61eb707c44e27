"""The services pane's history chart fed by a real engine process's ledger (issue 20, part 7):
fetched off the Qt thread when the window attaches and after jobs end, and the same figures
as ``dss-console audit stats`` prints headless."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

from dss_console.core.history import Bar
from dss_console.engine.remote import RemoteEngine
from dss_console.engine.states import JobState
from dss_console.gui import tasks
from dss_console.gui.history_chart import NO_HISTORY
from test_gui_console import (  # noqa: F401  (fixtures)
    WAIT_MS,
    event_loop_qt,
    make_console,
)


class FetchRecorder:
    """Which threads the window's ``ledger_stats`` calls ran on, and how many returned: the
    engine's own method, only watched."""

    def __init__(self) -> None:
        self.on_qt_thread: list[bool] = []
        self.returned = 0

    def watch(self, engine: RemoteEngine) -> None:
        real = engine.ledger_stats

        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.on_qt_thread.append(threading.current_thread() is threading.main_thread())
            found = real(*args, **kwargs)
            self.returned += 1
            return found

        engine.ledger_stats = recorded  # type: ignore[method-assign]


def audit_stats_row(data_dir: str, name: str) -> list[str]:
    """``dss-console audit stats``'s row for the service ``name``, as printed."""
    printed = subprocess.run(
        [sys.executable, "-m", "dss_console", "audit", "stats", "--data-dir", data_dir],
        capture_output=True, text=True, timeout=120, check=True).stdout
    (row,) = [line.split() for line in printed.splitlines() if line.split()[:1] == [name]]
    return row


def test_the_chart_shows_the_ledgers_succeeded_and_failed_jobs(make_console,  # noqa: F811
                                                                qtbot) -> None:
    console = make_console("success")
    window = console.window
    fetches = FetchRecorder()
    # engineStarted comes before the first fetch's task runs (spawned, not yet started).
    window.engineStarted.connect(fetches.watch)
    console.login()
    chart = window.services_pane.history_chart
    window.services_pane.select_service(console.service)
    # Before any job: fetched, and nothing for this service: the chart's empty state.
    qtbot.waitUntil(lambda: fetches.returned >= 1, timeout=WAIT_MS)
    assert chart.history() is None and chart.message() == NO_HISTORY

    succeeded = console.claim()
    window.queue_pane.buttons["run"].click()
    console.wait_state(succeeded, JobState.SUCCEEDED)
    failed = console.claim()
    window.ask_text = lambda title, label: "Not a brain"  # type: ignore[method-assign]
    window.queue_pane.buttons["fail"].click()
    console.wait_state(failed, JobState.FAILED)

    # After the ends (debounced), without asking: one succeeded and one failed this hour.
    window.services_pane.select_service(console.service)
    qtbot.waitUntil(lambda: chart.history() is not None
                    and chart.history().hours[-1] == Bar(1, 1), timeout=WAIT_MS)
    history = chart.history()
    assert history is not None
    assert sum(b.succeeded for b in history.hours) == 1
    assert sum(b.failed for b in history.hours) == 1
    assert history.days[-1] == Bar(1, 1)
    assert chart.median.text().startswith("1 succeeded, 1 failed in the last day")
    assert chart.message() == ""
    name = history.service
    assert chart.title.text() == f"History of {name}"
    # Every fetch ran off the Qt thread (the window's blocking-work pool).
    assert fetches.on_qt_thread and not any(fetches.on_qt_thread)

    # The headless figures agree: 24 h ok / failed, 30 d ok / failed.
    row = audit_stats_row(str(window.data_dir), name)
    assert row[1:5] == ["1", "1", "1", "1"]


def test_a_history_the_engine_cannot_read_is_said_quietly(make_console,  # noqa: F811
                                                          qtbot) -> None:
    console = make_console("success")
    window = console.window
    fetches = FetchRecorder()
    window.engineStarted.connect(fetches.watch)
    console.login()
    qtbot.waitUntil(lambda: fetches.returned >= 1, timeout=WAIT_MS)
    # The ledger's index made unreadable for real: a folder where the engine opens it.
    (ledger,) = (window.data_dir / "ledger").glob("*.jsonl")
    index = ledger.with_name(ledger.name + ".index.sqlite3")
    for leftover in index.parent.glob(index.name + "*"):
        leftover.unlink()
    index.mkdir()
    banners: list[str] = []
    window.show_banner = lambda text, *a, **k: banners.append(text)  # type: ignore
    window.services_pane.select_service(console.service)
    calls_before = len(fetches.on_qt_thread)
    tasks.spawn(window.refresh_histories())
    qtbot.waitUntil(lambda: window.statusBar().currentMessage().startswith(
        "No service history: the engine could not read its ledger"), timeout=WAIT_MS)
    assert len(fetches.on_qt_thread) == calls_before + 1 and fetches.returned == 1
    chart = window.services_pane.history_chart
    assert chart.history() is None and chart.message() == NO_HISTORY
    assert not banners  # no banner, no dialog: a chart is not worth one
    index.rmdir()
