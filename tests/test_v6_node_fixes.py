"""vantage6 as a data station met it (issue 17): the engine knows its allowlist before its
first poll, refusals are recorded and shown, a wrong organization key is refused, a task
asking for a database this node lacks is refused before it starts, a researcher's kill is
recorded as such. Real server 4.15.2, the official client as the researcher, real engine
processes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from dss_console import plugins
from dss_console.engine.settings import Settings, settings_to_toml
from dss_console.sources.v6.sandbox import DEMO_IMAGE, V6Sandbox
from dss_console.sources.v6.settings import parse_v6_settings
from settings_helpers import settings_with, v6_of
from test_gui_console import event_loop_qt  # noqa: F401 (fixture)

from v6_fixtures import (
    SERVER_TEST_TIMEOUT,
    Researcher,
    wait_for,
)

pytestmark = pytest.mark.timeout(SERVER_TEST_TIMEOUT)

UNKNOWN_IMAGE = "harbor2.example/not-configured:1"


def _run(researcher: Researcher, task_id: int) -> dict:
    (run,) = researcher.call("runs", task_id=task_id)
    return run


def test_a_console_engine_knows_its_images_before_its_first_poll(
        researchers: dict[str, Researcher], v6_sandbox: V6Sandbox, tmp_path: Path) -> None:
    """`--sandbox v6` refused its own demo algorithm in 2 of 4 starts: the console's engine
    polled (and refused) before the window's settings reached it. Both tasks wait before the
    engine starts, so its first poll sees both: the unknown image's refusal proves that poll
    happened, and the demo run must still be pending then, and run once Auto is on."""
    from dss_console.engine.remote import RemoteEngine
    from dss_console.engine.spawn import start_engine_process, wait_for_engine
    from dss_console.sources.v6.login import login_node

    researcher = researchers["demo-enc"]
    station = v6_sandbox.org_id("station")
    demo = researcher.create_task(DEMO_IMAGE, "column_mean", [station], column="age")
    unknown = researcher.create_task(UNKNOWN_IMAGE, "anything", [station])
    node = v6_sandbox.node("station-demo-enc")
    pem = v6_sandbox.key_file("station").read_bytes()
    login = login_node(v6_sandbox.url, node.api_key, pem)
    settings = settings_with(instance="t-console", workroot=tmp_path / "work", poll_interval=1.0,
                        v6=parse_v6_settings(v6_sandbox.demo_settings()))
    secret = json.dumps({"api_key": node.api_key, "private_key": pem.decode("ascii"),
                         "settings": settings_to_toml(settings)})
    data = tmp_path / "data"
    data.mkdir()
    process = start_engine_process(
        source="v6", handover=secret, server=login.server, instance=settings.instance,
        data_dir=data, workroot=settings.workroot, config=None, provider=None,
        ca_bundle=None, options=("--node", login.identity.name), engine_key=login.source_key)
    engine = None
    try:
        engine = RemoteEngine(wait_for_engine(process, data, login.source_key,
                                              settings.instance))
        wait_for(lambda: _run(researcher, unknown)["status"] == "not allowed", 60,
                 "the engine's first poll to refuse the unknown image")
        assert _run(researcher, demo)["status"] == "pending"
        engine.set_auto(True)
        assert researcher.call("wait_task", task_id=demo, timeout=90) == "completed"
    finally:
        if engine is not None:
            engine.shutdown()
            engine.close()
        process.wait(60)


def _org_public_key(sandbox: V6Sandbox, node: str) -> str | None:
    from dss_console.sources.v6.client import V6NodeClient

    client = V6NodeClient(sandbox.url)
    try:
        client.login(sandbox.node(node).api_key)
        return client.organization_public_key(client.whoami().organization_id)
    finally:
        client.close()


def _v6_login(home: Path, sandbox: V6Sandbox, node: str, key: Path, *extra: str):
    import os
    import subprocess
    import sys

    env = dict(os.environ, XDG_DATA_HOME=str(home / "data"), DSS_CONSOLE_KEYRING="off")
    exe = Path(sys.executable).with_name("dss-console")
    return subprocess.run([str(exe), "v6", "login", "--server", sandbox.url, "--api-key-stdin",
                           "--private-key", str(key), *extra],
                          input=sandbox.node(node).api_key + "\n", env=env,
                          capture_output=True, text=True, timeout=60)


def test_another_organizations_key_is_refused_unless_replacing_is_asked(
        v6_sandbox: V6Sandbox, tmp_path: Path) -> None:
    """`v6 login --private-key` with the research organization's key silently replaced the
    station's public key on the server (the researcher's next encrypted task then failed)."""
    from dss_console.sources.v6 import crypto
    from dss_console.sources.v6.login import V6LoginError, login_node

    node = "station-demo-enc"
    registered = _org_public_key(v6_sandbox, node)
    station_key = v6_sandbox.key_file("station")
    assert crypto.RsaCryptor.from_pem(station_key.read_bytes()).matches(registered)
    wrong = v6_sandbox.key_file("research")
    try:
        done = _v6_login(tmp_path, v6_sandbox, node, wrong)
        assert done.returncode == 1, done
        assert "does not match the public key organization 'station' registered" \
            in done.stderr
        assert "--replace-public-key" in done.stderr
        assert _org_public_key(v6_sandbox, node) == registered  # untouched
        # The console's login (the same function) refuses it the same way.
        with pytest.raises(V6LoginError, match="does not match the public key"):
            login_node(v6_sandbox.url, v6_sandbox.node(node).api_key, wrong.read_bytes())
        assert _org_public_key(v6_sandbox, node) == registered

        done = _v6_login(tmp_path, v6_sandbox, node, wrong, "--replace-public-key")
        assert done.returncode == 0, done
        assert "warning: replaced organization 'station'" in done.stderr
        assert "can no longer decrypt" in done.stderr
        assert crypto.RsaCryptor.from_pem(wrong.read_bytes()).matches(
            _org_public_key(v6_sandbox, node))
    finally:
        # The session's other tests need the station's own key registered again (in this
        # process: the command's --replace-public-key was run above).
        login_node(v6_sandbox.url, v6_sandbox.node(node).api_key, station_key.read_bytes(),
                   replace_public_key=True)
    assert crypto.RsaCryptor.from_pem(station_key.read_bytes()).matches(
        _org_public_key(v6_sandbox, node))
    done = _v6_login(tmp_path, v6_sandbox, node, station_key)  # the right key: no flag needed
    assert done.returncode == 0 and "warning" not in done.stderr, done


@pytest.fixture
def enc_engine(v6_sandbox: V6Sandbox, tmp_path: Path) -> Iterator[tuple]:
    """An engine (in this process, Auto on) as the encrypted collaboration's node, with the
    demo algorithm and database configured, and the notices it publishes."""
    from dss_console.engine.engine import Engine
    from dss_console.engine.events import EngineNotice
    from dss_console.engine.journal import Journal
    from dss_console.sources.v6.source import V6Source

    settings = settings_with(workroot=tmp_path / "work", poll_interval=1.0,
                        v6=parse_v6_settings(v6_sandbox.demo_settings()))
    source = V6Source.connect(v6_sandbox.url, v6_sandbox.node("station-demo-enc").api_key,
                              v6_of(settings),
                              private_key_pem=v6_sandbox.key_file("station").read_bytes())
    journal = Journal(tmp_path / "journal.sqlite")
    engine = Engine(settings, source, journal, provider="station-demo-enc",
                    executors=plugins.executors(), auto=True)
    notices: list[str] = []
    engine.events.subscribe(lambda e: notices.append(e.text)
                            if isinstance(e, EngineNotice) else None)
    try:
        engine.start()
        yield engine, source, notices
    finally:
        engine.shutdown(drain=False, flush_timeout=10)
        journal.close()
        source.close()


def test_refused_runs_are_recorded_shown_and_audited(
        enc_engine: tuple, researchers: dict[str, Researcher],
        v6_sandbox: V6Sandbox) -> None:
    """A run of an image this node does not run ("not allowed") and one asking for a
    database label it lacks (it started and crashed with KeyError) are both refused before
    any start, in words, and appear in the Runs list, the audit and the status line with
    their image, task and who asked."""
    from dss_console.engine.states import JobState
    from dss_console.sources.v6.audit import audit_records

    engine, _source, notices = enc_engine
    researcher = researchers["demo-enc"]
    station = v6_sandbox.org_id("station")
    unknown = researcher.create_task(UNKNOWN_IMAGE, "anything", [station])
    no_db = researcher.create_task(DEMO_IMAGE, "column_mean", [station], column="age",
                                   databases=[{"label": "nosuch"}])
    assert researcher.call("wait_task", task_id=unknown, timeout=60) == "not allowed"
    assert researcher.call("wait_task", task_id=no_db, timeout=60) == "failed"
    run = _run(researcher, no_db)
    assert run["log"] == ("not started: database 'nosuch' is not available on this node "
                          "(it has: default)")

    def job_of(task_id: int):
        return next((j for j in engine.jobs() if j.details.get("task_id") == task_id), None)

    wait_for(lambda: job_of(unknown) and job_of(no_db), 30, "both runs in the journal")
    refused, failed = job_of(unknown), job_of(no_db)
    assert refused.state is JobState.FAILED and failed.state is JobState.FAILED
    assert refused.service_hash == UNKNOWN_IMAGE
    assert refused.details["outcome"] == "not_allowed"
    assert failed.details["unknown_databases"] == ["nosuch"]
    assert failed.started_at is None  # never started
    for job in (refused, failed):
        assert job.details["init_org"] == "research"  # a name, not "org 3"
        assert job.details["node"] == "station-demo-enc"
    records = {r.task_id: r for r in audit_records(engine.jobs())}
    assert records[unknown].outcome == "not allowed"
    assert "is not configured on this node" in records[unknown].outcome_text
    assert records[no_db].outcome == "failed"
    assert "'nosuch' is not available" in records[no_db].outcome_text
    line = next(n for n in notices if n.startswith(f"run {refused.ticket_id} "))
    assert f"image {UNKNOWN_IMAGE!r}" in line and "asked by research / " in line
    assert f"task {unknown}" in line and "not allowed" in line

    pytest.importorskip("PySide6.QtWidgets")
    from dss_console.core.presentation import ColumnSpec
    from dss_console.engine.views import presented
    from dss_console.gui.detail_pane import run_summary_html
    from dss_console.gui.jobs_model import JobTableModel

    html = run_summary_html(presented(engine.source, failed))  # as a window receives it
    assert "Not on this node" in html and "nosuch" in html
    assert JobTableModel._display(refused, ColumnSpec("state", "State", "")) == "not allowed"


SLEEPY_IMAGE = "v6-test-sleepy"


@pytest.fixture
def sleepy_engine(v6_sandbox: V6Sandbox, tmp_path: Path) -> Iterator[tuple]:
    """The encrypted node's engine (Auto on) with an algorithm that runs until stopped."""
    import sys

    from dss_console.engine.engine import Engine
    from dss_console.engine.journal import Journal
    from dss_console.sources.v6.source import V6Source

    table = v6_sandbox.demo_settings()
    table["algorithms"][SLEEPY_IMAGE] = {
        "command": f"{sys.executable} -c \"import time; time.sleep(600)\""}
    settings = settings_with(workroot=tmp_path / "work", poll_interval=1.0,
                        v6=parse_v6_settings(table))
    source = V6Source.connect(v6_sandbox.url, v6_sandbox.node("station-demo-enc").api_key,
                              v6_of(settings),
                              private_key_pem=v6_sandbox.key_file("station").read_bytes())
    journal = Journal(tmp_path / "journal.sqlite")
    engine = Engine(settings, source, journal, provider="station-demo-enc",
                    executors=plugins.executors(), auto=True,
                    status_interval=0.5)
    try:
        engine.start()
        yield engine, source
    finally:
        engine.shutdown(drain=False, flush_timeout=10)
        journal.close()
        source.close()


def _running_job(engine, researcher: Researcher, task_id: int):
    from dss_console.engine.states import JobState

    def running():
        jobs = [j for j in engine.jobs() if j.details.get("task_id") == task_id]
        return jobs[0] if jobs and jobs[0].state is JobState.RUNNING else None

    job = wait_for(running, 60, "the run to be running here")
    wait_for(lambda: _run(researcher, task_id)["status"] == "active", 30,
             "the run to be active on the server")
    return job


def test_a_researchers_kill_is_recorded_as_killed_by_user(
        sleepy_engine: tuple, researchers: dict[str, Researcher],
        v6_sandbox: V6Sandbox) -> None:
    """The audit said `failed` ("the ticket is no longer ours") for a researcher's kill."""
    from dss_console.engine.states import JobState
    from dss_console.sources.v6.audit import audit_records

    engine, _source = sleepy_engine
    researcher = researchers["demo-enc"]
    task_id = researcher.create_task(SLEEPY_IMAGE, "sleep", [v6_sandbox.org_id("station")])
    job = _running_job(engine, researcher, task_id)
    researcher.call("kill", task_id=task_id)
    ended = wait_for(lambda: engine.job(job.job_id).state.is_terminal
                     and engine.job(job.job_id), 30, "the job to end")
    assert ended.state is JobState.CANCELLED
    assert ended.details["outcome"] == "killed"
    assert "ticket" not in (ended.reason or "") and "killed by user" in (ended.reason or "")
    (record,) = [r for r in audit_records(engine.jobs()) if r.task_id == task_id]
    assert record.outcome == "killed by user"
    assert researcher.call("wait_task", task_id=task_id, timeout=10) == "killed by user"


def test_an_operators_cancel_reaches_the_researcher_with_one_prefix(
        sleepy_engine: tuple, researchers: dict[str, Researcher],
        v6_sandbox: V6Sandbox) -> None:
    """It read "cancelled by the node operator: cancelled by the provider: …"."""
    engine, _source = sleepy_engine
    researcher = researchers["demo-enc"]
    task_id = researcher.create_task(SLEEPY_IMAGE, "sleep", [v6_sandbox.org_id("station")])
    job = _running_job(engine, researcher, task_id)
    engine.cancel_job(job.job_id, "wrong cohort")
    assert researcher.call("wait_task", task_id=task_id, timeout=30) == "failed"
    log = _run(researcher, task_id)["log"]
    assert "cancelled by the node operator: wrong cohort" in log
    assert "provider" not in log and log.count("cancelled") == 1, log
    assert "provider" not in (engine.job(job.job_id).reason or "")


def test_a_v6_workers_output_and_work_dirs_use_vantage6_words(
        researchers: dict[str, Researcher], v6_sandbox: V6Sandbox, tmp_path: Path) -> None:
    """A node operator read DSS words: `ticket_…` work dirs, "provider", "service"."""
    import re
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_v6_worker import Worker, _login, _write_settings

    _write_settings(tmp_path, v6_sandbox)
    _login(tmp_path, v6_sandbox, "station-demo-enc")
    researcher = researchers["demo-enc"]
    station = v6_sandbox.org_id("station")
    worker = Worker(tmp_path, v6_sandbox.url, "station-demo-enc")
    try:
        done = researcher.create_task(DEMO_IMAGE, "column_mean", [station], column="age")
        refused = researcher.create_task(UNKNOWN_IMAGE, "anything", [station])
        assert researcher.call("wait_task", task_id=done, timeout=60) == "completed"
        assert researcher.call("wait_task", task_id=refused, timeout=60) == "not allowed"
        run_id = _run(researcher, done)["id"]
        worker.wait_line(rf"run {run_id} \(.*\): succeeded")
        worker.wait_line(rf"run {_run(researcher, refused)['id']} \(task {refused}\): "
                         "not allowed")
    finally:
        assert worker.stop() == 0, worker.output
    words = re.findall(r"\b(tickets?|providers?|services?)\b", worker.output, re.IGNORECASE)
    assert not words, worker.output
    workdirs = [p.name for p in (tmp_path / "data").glob("dss-console/work/*/*")
                if p.is_dir() and not p.name.startswith("v6-job-")]
    assert f"run_{run_id:08d}" in workdirs and not any(n.startswith("ticket_")
                                                        for n in workdirs), workdirs


def test_edit_command_opens_the_images_row_and_names_the_settings_file(
        qtbot, event_loop_qt, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """'Edit command…' for an image said "in the settings file": which one? It opens the
    Settings dialog's vantage6 tab at that image, and the dialog names the file OK writes."""
    pytest.importorskip("PySide6.QtWidgets")
    from dss_console.credentials import SessionStore
    from dss_console.gui import tasks
    from dss_console.gui.main_window import QUIT_CANCEL, MainWindow
    from dss_console.sources.v6.client import NodeIdentity
    from dss_console.sources.v6.login import NodeLogin

    config = tmp_path / "cfg" / "settings.toml"
    monkeypatch.setenv("DSS_CONSOLE_CONFIG", str(config))
    window = MainWindow(Settings(), None, SessionStore(tmp_path / "sessions",
                                                       use_keyring=False),
                        remember_layout=False)
    qtbot.addWidget(window)
    window.logged_in = NodeLogin(
        server="http://127.0.0.1:1/api", identity=NodeIdentity(
            node_id=2, name="station-demo", organization_id=2, organization_name="station",
            collaboration_id=1, collaboration_name="demo", encrypted=False),
        api_key="k", private_key_pem=None, uploaded_public_key=False)
    window.open_settings(DEMO_IMAGE)
    dialog = window.settings_dialog
    assert dialog is not None and dialog.source_tab is not None
    assert dialog.tabs.currentWidget() is dialog.source_tab
    table = dialog.source_tab.algorithms
    assert table.item(table.currentRow(), 0).text() == DEMO_IMAGE
    assert str(config) in dialog.file_label.text() and dialog.file_label.isVisibleTo(dialog)
    dialog.reject()
    window.logged_in = None
    window.ask_quit_choice = lambda running, **_: QUIT_CANCEL  # type: ignore[method-assign]
    window.close()
    qtbot.waitUntil(lambda: window.closed, timeout=30_000)
    # Nothing of this window may be left for the next GUI test to wait on.
    qtbot.waitUntil(lambda: not tasks.pending_tasks(), timeout=15_000)
