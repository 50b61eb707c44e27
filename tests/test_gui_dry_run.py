"""The offline dry run: a real command on a copy of a real workspace, shown in the real
dialog (offscreen), plus the Qt-free preparation and verdicts."""

from __future__ import annotations

import os
import shlex
import stat
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from dss_console.core.executor import RunOutcome
from dss_console.engine.settings import ServiceCommand
from dss_console.gui.dry_run import (
    DRY_RUN_TICKET_ID,
    UNKNOWN_SERVICE_HASH,
    DryRunError,
    DryRunSummary,
    prepare_dry_run,
    summarize_run,
)
from dss_console.gui.dry_run_dialog import DryRunDialog
from dss_console.resources.demo_service import demo_service_command
from dss_console.sandbox.demo import make_demo_ticket_files
from dss_console.workspace import Workspace

from waiting import process_gone

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX process groups")

RUN_MS = 60_000

SERVICE_SCRIPT = textwrap.dedent("""\
    import os, shutil, subprocess, sys, time
    from pathlib import Path
    from dss_console.workspace import SEGMENTATION_ROLE, NewLayer, Workspace, write_workspace

    mode, workspace, result = sys.argv[1:4]
    workdir = Path(os.environ["DSS_WORKDIR"])
    print("@dss progress 0.5", flush=True)
    print('@dss info "hello"', flush=True)
    print("some stderr noise", file=sys.stderr, flush=True)
    (workdir / "qc.txt").write_text("QC ok\\n")
    print('@dss attach "QC report" qc.txt text/plain', flush=True)
    if mode == "fail":
        print('@dss error "input rejected"', flush=True)
        sys.exit(3)
    if mode == "sleep":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        (workdir / "pids.txt").write_text(f"{os.getpid()} {child.pid}")
        time.sleep(600)
    if mode == "flood":
        sys.stdout.write("".join(f"line {i}\\n" for i in range(20000)))
    layers = Workspace.load(workspace).layers
    segmentation = workdir / "segmentation.nii.gz"
    shutil.copyfile(layers[0].path, segmentation)
    write_workspace(result, [
        *(NewLayer(path=l.path, role=l.role, nickname=l.nickname, tags=l.tags) for l in layers),
        NewLayer(path=segmentation, role=SEGMENTATION_ROLE, nickname="Segmentation"),
    ])
""")


@pytest.fixture(autouse=True)
def dry_run_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The remembered workspaces go to the test's own file, not the user's config dir."""
    state = tmp_path / "dry-run.ini"
    monkeypatch.setattr("dss_console.gui.dry_run_dialog.STATE_FILE", state, raising=False)
    return state


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_demo_ticket_files(tmp_path / "my workspace", 7)[0]


@pytest.fixture
def service(tmp_path: Path):
    script = tmp_path / "service.py"
    script.write_text(SERVICE_SCRIPT)

    def make(mode: str, **options) -> ServiceCommand:
        command = (f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {mode} "
                   "{workspace} {result}")
        return ServiceCommand(key="MySegmentation", command=command, **options)

    return make


def open_dialog(qtbot: QtBot, command: ServiceCommand, workspace: Path | None,
                **options) -> DryRunDialog:
    dialog = DryRunDialog(command, "MySegmentation", workspace, **options)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def run(qtbot: QtBot, dialog: DryRunDialog) -> DryRunSummary:
    with qtbot.waitSignal(dialog.run_finished, timeout=RUN_MS) as blocker:
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    summary = blocker.args[0]
    assert isinstance(summary, DryRunSummary)
    return summary


def messages(dialog: DryRunDialog) -> list[str]:
    return [dialog.messages.item(i).text() for i in range(dialog.messages.count())]


def run_threads() -> list[str]:
    return [t.name for t in threading.enumerate()
            if t.name.startswith(("dss-dry-run", "dss-runner"))]


# -- the dialog -----------------------------------------------------------------------------


def test_success_shows_progress_messages_output_and_result(
        qtbot: QtBot, service, workspace: Path) -> None:
    original = workspace.read_bytes()
    dialog = open_dialog(qtbot, service("success"), workspace)
    assert dialog.run_button.isEnabled() and not dialog.stop_button.isEnabled()

    summary = run(qtbot, dialog)

    assert dialog.progress_bar.value() == 100  # a success ends at 100 %, as on a real ticket
    assert messages(dialog) == ["info: hello", "attachment: QC report (qc.txt, text/plain)"]
    output = dialog.output.toPlainText()
    assert "some stderr noise" in output
    assert output.startswith("$ ") and "ticket_00000000.itksnap" in output.splitlines()[0]
    outcome = dialog.outcome_label.text()
    assert "exited with code 0" in outcome
    assert "Result workspace written: 2 layers (T1, Segmentation)" in outcome
    assert "On a real ticket: success" in outcome
    assert summary.would_succeed and summary.result_layers == 2
    assert f"Work dir: {dialog.workdir}" in outcome
    assert f"Full log: {dialog.workdir / '.dss' / 'output.log'}" in outcome
    assert "some stderr noise" in (dialog.workdir / ".dss" / "output.log").read_text()
    # Idle again: can run again, nothing to stop, the work dir can be opened.
    assert dialog.run_button.isEnabled() and not dialog.stop_button.isEnabled()
    assert dialog.open_workdir_button.isEnabled() and not dialog.running
    assert workspace.read_bytes() == original
    assert not run_threads()


def test_the_command_sees_a_ticket_layout(qtbot: QtBot, service, workspace: Path) -> None:
    dialog = open_dialog(qtbot, service("success"), workspace)
    run(qtbot, dialog)
    workdir = dialog.workdir
    assert workdir is not None and stat.S_IMODE(workdir.stat().st_mode) == 0o700
    copied = Workspace.load(workdir / "input" / f"ticket_{DRY_RUN_TICKET_ID:08d}.itksnap")
    source = Workspace.load(workspace)
    assert [(la.role, la.nickname, la.tags) for la in copied.layers] == \
        [(la.role, la.nickname, la.tags) for la in source.layers]
    layer = copied.layers[0].path
    assert layer.parent == workdir / "input" and layer.name.startswith("layer_000_")
    # A copy, not a link: a command writing to its inputs must not touch the user's files.
    assert layer.read_bytes() == source.layers[0].path.read_bytes()
    assert not os.path.samefile(layer, source.layers[0].path)


def test_a_failing_command_shows_its_error(qtbot: QtBot, service, workspace: Path) -> None:
    dialog = open_dialog(qtbot, service("fail"), workspace)
    summary = run(qtbot, dialog)
    assert "error: input rejected" in messages(dialog)
    assert dialog.progress_bar.value() == 50
    outcome = dialog.outcome_label.text()
    assert "exited with code 3" in outcome
    assert "Last @dss error: input rejected" in outcome
    assert "No result workspace" in outcome
    assert "On a real ticket: failed with “input rejected”" in outcome
    assert not summary.would_succeed


def test_a_missing_program_is_told_in_words(qtbot: QtBot, workspace: Path) -> None:
    command = ServiceCommand(key="X", command="no-such-program-dss {workspace} {result}")
    dialog = open_dialog(qtbot, command, workspace)
    summary = run(qtbot, dialog)
    assert "The command could not start: command not found: no-such-program-dss" in \
        dialog.outcome_label.text()
    assert not summary.would_succeed
    assert dialog.run_button.isEnabled() and not dialog.running
    assert not run_threads()


def test_an_unreadable_workspace_is_told_in_words(qtbot: QtBot, service,
                                                  tmp_path: Path) -> None:
    bad = tmp_path / "bad.itksnap"
    bad.write_text("not xml")
    dialog = open_dialog(qtbot, service("success"), bad)
    run(qtbot, dialog)
    assert "could not be prepared: cannot read the workspace" in dialog.outcome_label.text()
    assert dialog.workdir is None and not dialog.open_workdir_button.isEnabled()


def test_stop_kills_the_command_and_what_it_started(qtbot: QtBot, service,
                                                    workspace: Path) -> None:
    dialog = open_dialog(qtbot, service("sleep"), workspace)
    qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.workdir is not None
                    and (dialog.workdir / "pids.txt").exists(), timeout=RUN_MS)
    assert dialog.stop_button.isEnabled() and not dialog.run_button.isEnabled()
    assert not dialog.choose_button.isEnabled()
    pids = [int(p) for p in (dialog.workdir / "pids.txt").read_text().split()]
    assert dialog.pid == pids[0]

    with qtbot.waitSignal(dialog.run_finished, timeout=RUN_MS) as blocker:
        qtbot.mouseClick(dialog.stop_button, Qt.MouseButton.LeftButton)
    assert all(process_gone(pid) for pid in pids)
    assert "stopped by you" in dialog.outcome_label.text()
    assert blocker.args[0].verdict == "Stopped by you: no verdict."
    assert dialog.progress_bar.value() == 50
    assert not run_threads()


def test_closing_while_running_stops_first(qtbot: QtBot, service, workspace: Path) -> None:
    dialog = open_dialog(qtbot, service("sleep"), workspace)
    qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.workdir is not None
                    and (dialog.workdir / "pids.txt").exists(), timeout=RUN_MS)
    pids = [int(p) for p in (dialog.workdir / "pids.txt").read_text().split()]

    with qtbot.waitSignal(dialog.rejected, timeout=RUN_MS):
        dialog.close()  # the window's close box
        assert dialog.isVisible()  # still up while the command stops
    assert not dialog.isVisible()
    assert all(process_gone(pid) for pid in pids)
    assert not run_threads()
    assert "the dry-run window was closed" in dialog.outcome_label.text()


def test_closing_while_the_workspace_is_copied(qtbot: QtBot, service, workspace: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import dss_console.gui.dry_run as dry_run

    copying, go_on = threading.Event(), threading.Event()

    def slow_prepare(*args, **kwargs):
        copying.set()
        go_on.wait(RUN_MS / 1000)
        return prepare(*args, **kwargs)

    prepare = dry_run.prepare_dry_run
    monkeypatch.setattr(dry_run, "prepare_dry_run", slow_prepare)
    dialog = open_dialog(qtbot, service("sleep"), workspace)
    qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(copying.is_set, timeout=RUN_MS)
    qtbot.mouseClick(dialog.close_button, Qt.MouseButton.LeftButton)
    assert dialog.isVisible() and not dialog.stop_button.isEnabled()
    with qtbot.waitSignal(dialog.rejected, timeout=RUN_MS):
        go_on.set()
    assert "Stopped before the command started" in dialog.outcome_label.text()
    assert dialog.workdir is not None and not (dialog.workdir / "pids.txt").exists()
    assert dialog.pid is None
    assert not run_threads()


def test_quitting_the_app_stops_the_command(qtbot: QtBot, service, workspace: Path) -> None:
    dialog = open_dialog(qtbot, service("sleep"), workspace)
    qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.workdir is not None
                    and (dialog.workdir / "pids.txt").exists(), timeout=RUN_MS)
    pids = [int(p) for p in (dialog.workdir / "pids.txt").read_text().split()]
    QApplication.instance().aboutToQuit.emit()  # what quitting the console emits
    # Everything was signalled before the quit went on; a process whose pipes are closed
    # may still need a moment of CPU to finish dying (a loaded machine delays it).
    qtbot.waitUntil(lambda: all(process_gone(pid) for pid in pids), timeout=5_000)
    assert not run_threads()
    qtbot.waitUntil(lambda: not dialog.running, timeout=RUN_MS)


def test_a_timeout_fails_as_a_real_ticket_would(qtbot: QtBot, service,
                                                workspace: Path) -> None:
    dialog = open_dialog(qtbot, service("sleep", timeout=0.5), workspace)
    summary = run(qtbot, dialog)
    assert "timed out after 0.5 s" in dialog.outcome_label.text()
    assert summary.verdict == "On a real ticket: failed with “the command timed out after 0.5 s”."


def test_lots_of_output_is_capped_in_the_view(qtbot: QtBot, service, workspace: Path) -> None:
    dialog = open_dialog(qtbot, service("flood"), workspace)
    run(qtbot, dialog)
    document = dialog.output.document()
    assert document.blockCount() <= 5000
    assert "line 19999" in dialog.output.toPlainText()
    log = (dialog.workdir / ".dss" / "output.log").read_text()
    assert "line 0\n" in log and "line 19999\n" in log


def test_choose_workspace_then_run(qtbot: QtBot, service, workspace: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    dialog = open_dialog(qtbot, service("success"), None)
    assert not dialog.run_button.isEnabled()
    assert "No workspace yet" in dialog.workspace_label.text()
    monkeypatch.setattr(dialog, "choose_workspace_path", lambda: None)
    qtbot.mouseClick(dialog.choose_button, Qt.MouseButton.LeftButton)
    assert not dialog.run_button.isEnabled()  # cancelled the file dialog
    monkeypatch.setattr(dialog, "choose_workspace_path", lambda: workspace)
    qtbot.mouseClick(dialog.choose_button, Qt.MouseButton.LeftButton)
    assert dialog.run_button.isEnabled() and str(workspace) in dialog.workspace_label.text()
    assert run(qtbot, dialog).would_succeed


def test_open_work_dir(qtbot: QtBot, service, workspace: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    opened = []
    monkeypatch.setattr("dss_console.gui.dry_run_dialog.QDesktopServices.openUrl",
                        lambda url: opened.append(url) or True)
    dialog = open_dialog(qtbot, service("success"), workspace)
    assert not dialog.open_workdir_button.isEnabled()
    run(qtbot, dialog)
    qtbot.mouseClick(dialog.open_workdir_button, Qt.MouseButton.LeftButton)
    assert [url.toLocalFile() for url in opened] == [str(dialog.workdir)]


def test_open_work_dir_without_a_file_manager_shows_the_path(
        qtbot: QtBot, service, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dss_console.gui.dry_run_dialog.QDesktopServices.openUrl",
                        lambda url: False)
    dialog = open_dialog(qtbot, service("success"), workspace)
    run(qtbot, dialog)
    qtbot.mouseClick(dialog.open_workdir_button, Qt.MouseButton.LeftButton)
    shown = dialog.path_dialog  # opened, not exec'd: nothing blocks
    assert shown.isVisible() and shown.value() == str(dialog.workdir)
    shown.reject()


def test_a_command_that_never_started_does_not_say_finished(qtbot: QtBot,
                                                            workspace: Path) -> None:
    command = ServiceCommand(key="X", command="no-such-program-dss {workspace} {result}")
    dialog = open_dialog(qtbot, command, workspace)
    summary = run(qtbot, dialog)
    assert not summary.started
    assert dialog.status_label.text() == "The command did not start; see below."
    assert "Finished" not in dialog.status_label.text()


def test_the_workspace_is_remembered_per_service(qtbot: QtBot, service, workspace: Path,
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    dialog = open_dialog(qtbot, service("success"), None)
    monkeypatch.setattr(dialog, "choose_workspace_path", lambda: workspace)
    qtbot.mouseClick(dialog.choose_button, Qt.MouseButton.LeftButton)
    dialog.reject()
    again = open_dialog(qtbot, service("success"), None)  # the next opening
    assert again.workspace == workspace and again.run_button.isEnabled()
    assert str(workspace) in again.workspace_label.text()
    other = DryRunDialog(ServiceCommand(key="OtherService", command="x"), "OtherService")
    qtbot.addWidget(other)
    assert other.workspace is None
    # A workspace given to Run is remembered as well (the last one run).
    second = make_demo_ticket_files(tmp_path / "second", 8)[0]
    again.set_workspace(second)
    run(qtbot, again)
    assert open_dialog(qtbot, service("success"), None).workspace == second
    # And by hash when the dialog knows it (the settings dialog passes it).
    hashed = open_dialog(qtbot, service("success"), workspace, service_hash="ab" * 20)
    run(qtbot, hashed)
    assert open_dialog(qtbot, service("success"), None,
                       service_hash="ab" * 20).workspace == workspace


def test_closing_removes_the_work_dirs_of_its_runs(qtbot: QtBot, service, workspace: Path,
                                                   tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    dialog = open_dialog(qtbot, service("success"), workspace, work_root=root)
    run(qtbot, dialog)
    first = dialog.workdir
    run(qtbot, dialog)
    assert first is not None and dialog.workdir != first
    assert len(list(root.iterdir())) == 2
    assert "removed when this window closes" in dialog.outcome_label.text()
    dialog.reject()
    # Removed off the Qt thread: wait for it.
    qtbot.waitUntil(lambda: not list(root.iterdir()), timeout=RUN_MS)
    qtbot.waitUntil(lambda: not dialog.cleaning_up, timeout=RUN_MS)
    # A run that never started leaves nothing either.
    command = ServiceCommand(key="X", command="{nonsense} {workspace}")
    failed = open_dialog(qtbot, command, workspace, work_root=root)
    run(qtbot, failed)
    assert len(list(root.iterdir())) == 1
    failed.close()
    qtbot.waitUntil(lambda: not list(root.iterdir()), timeout=RUN_MS)


def test_the_demo_service_runs_dry(qtbot: QtBot, workspace: Path) -> None:
    command = ServiceCommand(key="DemoSegmentation", command=demo_service_command())
    dialog = open_dialog(qtbot, command, workspace)
    summary = run(qtbot, dialog)
    assert summary.would_succeed, summary.text
    assert summary.result_layers == 2
    assert dialog.progress_bar.value() == 100
    assert any(text.startswith("attachment: ") for text in messages(dialog))


# -- the Qt-free part -----------------------------------------------------------------------


def test_prepare_dry_run(tmp_path: Path, workspace: Path) -> None:
    command = ServiceCommand(key="Svc", command="run {workspace}", timeout=60.0,
                             env={"A": "1"}, cwd="sub", max_jobs=2)
    (tmp_path / "root").mkdir()
    spec, paths = prepare_dry_run(workspace, command, "Svc", tmp_path / "root")
    assert paths.workdir.parent == tmp_path / "root"
    assert paths.input_dir == paths.workdir / "input"
    assert paths.workspace == paths.input_dir / "ticket_00000000.itksnap"
    assert paths.result == paths.workdir / "result.itksnap"
    assert paths.engine_dir == paths.workdir / ".dss"
    assert paths.ticket_id == DRY_RUN_TICKET_ID and paths.service_name == "Svc"
    assert paths.service_hash == UNKNOWN_SERVICE_HASH
    assert (spec.display, spec.timeout, spec.env["A"], spec.cwd) == \
        ("run {workspace}", 60.0, "1", paths.workdir / "sub")
    assert tuple(spec.argv) == ("run", str(paths.workspace))  # the ticket's placeholders


def test_prepare_dry_run_builds_the_command_a_ticket_runs(tmp_path: Path,
                                                          workspace: Path) -> None:
    # The DSS source's own builder: the service's itksnap-wt shim too, as on a real ticket.
    from dss_console.sources.dss.command import command_spec

    command = ServiceCommand(key="Svc", command="itksnap-wt -h", env={"A": "1"},
                             itksnap_wt=True)
    spec, paths = prepare_dry_run(workspace, command, "Svc", tmp_path)
    assert spec == command_spec(command, paths)
    assert spec.path_first == (str(paths.engine_dir / "bin"),) and spec.setup is not None


def test_prepare_dry_run_takes_the_hash_of_a_hash_key(tmp_path: Path, workspace: Path) -> None:
    key = "AB" * 20
    _spec, paths = prepare_dry_run(workspace, ServiceCommand(key=key, command="x"), "Svc",
                                   tmp_path)
    assert paths.service_hash == key.lower()
    _spec, paths = prepare_dry_run(workspace, ServiceCommand(key="Svc", command="x"), "Svc",
                                   tmp_path, service_hash="c" * 40)
    assert paths.service_hash == "c" * 40


def test_prepare_dry_run_leaves_nothing_when_a_layer_is_missing(tmp_path: Path,
                                                                workspace: Path) -> None:
    Workspace.load(workspace).layers[0].path.unlink()
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(DryRunError, match="does not exist"):
        prepare_dry_run(workspace, ServiceCommand(key="S", command="x"), "S", root)
    assert list(root.iterdir()) == []


def test_summary_of_a_run_without_result(tmp_path: Path, workspace: Path) -> None:
    _spec, paths = prepare_dry_run(workspace, ServiceCommand(key="S", command="x"), "S",
                                   tmp_path)
    outcome = RunOutcome(exit_code=0, signal=None, stop_reason=None, last_error=None, tail=[],
                         duration=1.25, log_path=paths.engine_dir / "output.log")
    summary = summarize_run(outcome, paths)
    assert not summary.would_succeed
    assert summary.details[0] == "The command exited with code 0 after 1.2 s."
    assert summary.verdict == ("On a real ticket: failed with “the command finished without a "
                               "result workspace (expected result.itksnap)”.")
    killed = RunOutcome(exit_code=None, signal=9, stop_reason=None, last_error=None, tail=[],
                        duration=1.0, log_path=paths.engine_dir / "output.log")
    assert "killed by signal 9 (SIGKILL)" in summarize_run(killed, paths).text
