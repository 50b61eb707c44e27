"""The window's Audit… (every source): the engine's ledger, read over the channel from a real
engine process, with the verifier's verdict; older pages on demand; a CSV export."""

from __future__ import annotations

import csv
from pathlib import Path

from dss_console.engine.states import JobState
from test_gui_console import (  # noqa: F401  (fixtures)
    WAIT_MS,
    event_loop_qt,
    make_console,
)


def test_the_audit_shows_the_ledger_and_its_verdict(make_console, qtbot,  # noqa: F811
                                                    tmp_path: Path) -> None:
    console = make_console("success")
    console.login()
    job_id = console.claim()
    window = console.window
    qtbot.waitUntil(lambda: window.queue_pane.buttons["run"].isEnabled(), timeout=WAIT_MS)
    window.queue_pane.buttons["run"].click()
    console.wait_state(job_id, JobState.SUCCEEDED)
    view = window.open_ledger()

    def steps() -> list[str]:
        return [view.table.item(row, 2).text() for row in range(view.table.rowCount())]

    qtbot.waitUntil(lambda: "end" in steps() and view.verdict is not None, timeout=WAIT_MS)
    # Newest first: the job's end before its start before its claim; the ledger's own
    # beginning last.
    shown = steps()
    assert shown.index("end") < shown.index("start") < shown.index("claim")
    assert shown[-1] == "ledger"
    assert view.verdict is not None and view.verdict.ok
    assert "Ledger verified" in view.banner.text() and "chain intact" in view.banner.text()
    assert not view.older_button.isEnabled()  # everything fits one page

    target = tmp_path / "ledger.csv"
    view._ask_save_path = lambda: target  # type: ignore[method-assign]
    assert view.export_csv() == target
    qtbot.waitUntil(lambda: "exported to" in view.status.text(), timeout=WAIT_MS)
    with open(target, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert [r["kind"] for r in rows] == shown

    # Someone edits a record: Verify again names it in the banner.
    (ledger,) = (tmp_path / "c0" / "data" / "ledger").glob("*.jsonl")
    lines = ledger.read_bytes().splitlines()
    lines[1] = lines[1].replace(b'"kind":"claim"', b'"kind":"Claim"')
    ledger.write_bytes(b"".join(line + b"\n" for line in lines))
    view.verify_button.click()
    qtbot.waitUntil(lambda: "record 2 was changed" in view.banner.text(), timeout=WAIT_MS)
    assert "tampered" in view.banner.text() and view.verdict is not None
    assert not view.verdict.ok
    view.close()
