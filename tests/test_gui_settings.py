"""The settings dialog, driven through its widgets (offscreen)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QCheckBox, QComboBox, QDialogButtonBox, QLineEdit, QTableWidgetItem
from pytestqt.qtbot import QtBot

from dss_console import plugins
from dss_console.engine.settings import (
    ServiceCommand,
    Settings,
    load_settings,
    parse_duration,
    save_settings,
)
from dss_console.gui.dry_run_dialog import DryRunDialog
from dss_console.gui.settings_dialog import SettingsDialog, format_duration
from settings_helpers import services_of, settings_with
from toy_executor import TARGET

ASHS_HASH = "a" * 40
NECK_HASH = "b" * 40
OTHER_HASH = "c" * 40
PROVIDED = [("ASHS-PMC-T1", ASHS_HASH), ("NeckTrim", NECK_HASH)]


def click(qtbot: QtBot, widget) -> None:
    if isinstance(widget, QCheckBox):
        # On the box itself: a check box stretched by its layout is not clickable far
        # right of its text.
        qtbot.mouseClick(widget, Qt.MouseButton.LeftButton, pos=QPoint(6, widget.height() // 2))
    else:
        qtbot.mouseClick(widget, Qt.MouseButton.LeftButton)


def make_settings(tmp_path: Path) -> Settings:
    return settings_with(
        server="https://dss.itksnap.org",
        servers=["https://dss.itksnap.org", "http://127.0.0.1:8080"],
        provider="mylab",
        instance="node1",
        workroot=tmp_path / "work",
        poll_interval=5.0,
        concurrency=3,
        retention_days=7,
        interrupted="rerun",
        ca_bundle=None,
        notify=(),
        services={
            "ASHS-PMC-T1": ServiceCommand(
                key="ASHS-PMC-T1",
                command="bash /opt/ashs/service_ashs.sh {ticket} {workdir} {workspace} {result}",
                timeout=6 * 3600.0, max_jobs=2, cwd="/opt/ashs",
                env={"ASHS_ROOT": "/opt/ashs", "ASHS_HOOK_SCRIPT": "${DSS_HOOK}"}),
            "Retired": ServiceCommand(key="Retired", command="old-tool {workspace} {result}",
                                      auto=False),
        },
    )


def open_dialog(qtbot: QtBot, settings: Settings,
                services=PROVIDED) -> SettingsDialog:
    dialog = SettingsDialog(settings, services)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def list_texts(dialog: SettingsDialog) -> list[str]:
    return [dialog.service_list.item(i).text() for i in range(dialog.service_list.count())]


def select(dialog: SettingsDialog, name: str):
    dialog.tabs.setCurrentIndex(1)
    for index, editor in enumerate(dialog._editors):
        if editor.display_name == name:
            dialog.service_list.setCurrentRow(index)
            assert dialog.service_stack.currentWidget() is editor
            return editor
    raise AssertionError(f"{name} not listed: {list_texts(dialog)}")


def ok_enabled(dialog: SettingsDialog) -> bool:
    return dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).isEnabled()


# -- round trips ----------------------------------------------------------------------------


def test_unchanged_settings_come_back_equal(qtbot: QtBot, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    services_of(settings)[OTHER_HASH] = ServiceCommand(
        key=OTHER_HASH, command="x {result}", timeout=0.5, executor="slurm",
        # Shown on one line, joined as a shell would quote them: read back word for word.
        options={"sbatch_options": ["--partition=gpu", "--comment=ticket {ticket}",
                                    "--gres=gpu:1"]})
    snapshot = settings.with_services(dict(services_of(settings)))
    dialog = open_dialog(qtbot, settings)
    assert ok_enabled(dialog) and not dialog.status_label.isVisible()
    assert dialog.result_settings() == settings
    assert settings == snapshot  # the input is not touched


def test_editing_a_service_keeps_its_isolation_and_limits(qtbot: QtBot, tmp_path: Path) -> None:
    # No row of the dialog edits them (yet): a save must not drop them, nor what the service
    # inherits from [defaults].
    settings = make_settings(tmp_path)
    services_of(settings)[OTHER_HASH] = ServiceCommand(
        key=OTHER_HASH, command="x {result}",
        options={"isolation": "sandbox", "network": False, "memory": "8G",
                 "read_only": ["/opt/ashs"]},
        inherited={"processes": 256})
    dialog = open_dialog(qtbot, settings)
    editor = next(e for e in dialog._editors if e.key == OTHER_HASH)
    dialog.tabs.setCurrentIndex(1)
    dialog.service_list.setCurrentRow(dialog._editors.index(editor))
    editor.timeout_edit.setText("2h")
    assert ok_enabled(dialog)
    saved = services_of(dialog.result_settings())[OTHER_HASH]
    assert saved.timeout == 7200
    assert saved.options == {"isolation": "sandbox", "network": False, "memory": "8G",
                             "read_only": ["/opt/ashs"]}
    assert saved.inherited == {"processes": 256}


def test_isolation_and_limits_are_edited_in_words_and_checked(qtbot: QtBot,
                                                             tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    services_of(settings)[OTHER_HASH] = ServiceCommand(
        key=OTHER_HASH, command="x {result}", inherited={"memory": "4G"})
    dialog = open_dialog(qtbot, settings)
    editor = next(e for e in dialog._editors if e.key == OTHER_HASH)
    dialog.tabs.setCurrentIndex(1)
    dialog.service_list.setCurrentRow(dialog._editors.index(editor))
    rows = editor.policy.widgets
    # What the service inherits from [defaults] is shown where it is not set here.
    assert rows["memory"].placeholderText() == "as inherited: 4G"
    isolation = rows["isolation"]
    assert isinstance(isolation, QComboBox)
    isolation.setCurrentIndex(isolation.findData("sandbox"))
    network = rows["network"]
    assert isinstance(network, QComboBox)
    network.setCurrentIndex(network.findData("off"))
    memory = rows["memory"]
    assert isinstance(memory, QLineEdit)
    memory.setText("lots")
    assert not ok_enabled(dialog)
    assert "Memory limit" in dialog.status_label.text()
    memory.setText("8G")
    cpus, read_only = rows["cpus"], rows["read_only"]
    assert isinstance(cpus, QLineEdit) and isinstance(read_only, QLineEdit)
    cpus.setText("0.5")
    read_only.setText("/opt/ashs '/opt/with space'")
    assert ok_enabled(dialog)
    saved = services_of(dialog.result_settings())[OTHER_HASH]
    assert saved.options == {"isolation": "sandbox", "network": False, "memory": "8G",
                             "cpus": 0.5, "read_only": ["/opt/ashs", "/opt/with space"]}
    assert saved.inherited == {"memory": "4G"}


def test_every_field_is_editable(qtbot: QtBot, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(tmp_path)
    dialog = open_dialog(qtbot, settings)
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")

    dialog.server_edit.setText("http://127.0.0.1:9000")
    dialog.servers_edit.setPlainText("http://127.0.0.1:9000\n\nhttps://dss.example.org\n")
    dialog.provider_edit.setText("otherlab")
    dialog.instance_edit.setText("gpu-2")
    monkeypatch.setattr(dialog, "choose_directory", lambda title, start: str(tmp_path / "w2"))
    click(qtbot, dialog.workroot_browse)
    dialog.poll_edit.setText("1m")
    dialog.concurrency_spin.setValue(5)
    dialog.retention_spin.setValue(0)
    dialog.interrupted_combo.setCurrentIndex(dialog.interrupted_combo.findData("fail"))
    monkeypatch.setattr(dialog, "choose_file", lambda title, start, filters: str(ca))
    click(qtbot, dialog.ca_browse)
    click(qtbot, dialog.notify_checks["failed"])
    click(qtbot, dialog.notify_checks["decision"])

    ashs = select(dialog, "ASHS-PMC-T1")
    ashs.command_edit.setPlainText("bash run.sh {workspace} {result}")
    ashs.timeout_edit.setText("1h30m")
    ashs.max_jobs_spin.setValue(0)
    ashs.cwd_edit.setText("")
    click(qtbot, ashs.auto_check)
    ashs.env_table.item(0, 1).setText("/srv/ashs")

    neck = select(dialog, "NeckTrim")
    neck_sbatch = neck.option_edits["sbatch_options"]
    assert not neck.configured
    click(qtbot, neck.add_button)
    neck.command_edit.setPlainText("python3 /opt/necktrim/run.py {workspace} {result}")
    neck.max_jobs_spin.setValue(1)
    assert neck.nice_spin.text().startswith("default (10")
    neck.nice_spin.setValue(15)
    click(qtbot, neck.itksnap_wt_check)
    neck.cwd_edit.setText("scratch")
    assert not neck_sbatch.isEnabled()  # local: the options do not apply
    neck.executor_combo.setCurrentIndex(neck.executor_combo.findData("slurm"))
    assert neck_sbatch.isEnabled() and neck.executor_help["slurm"].isVisible()
    neck_sbatch.setText("--partition=gpu --time=06:00:00 --comment='ticket {ticket}'")

    retired = select(dialog, "Retired")
    click(qtbot, retired.auto_check)  # back on

    assert ok_enabled(dialog), dialog.problems()
    expected = settings_with(
        server="http://127.0.0.1:9000",
        servers=["http://127.0.0.1:9000", "https://dss.example.org"],
        provider="otherlab", instance="gpu-2", workroot=tmp_path / "w2", poll_interval=60.0,
        concurrency=5, retention_days=0, interrupted="fail", ca_bundle=str(ca),
        notify=("decision", "failed"),
        services={
            "ASHS-PMC-T1": ServiceCommand(
                key="ASHS-PMC-T1", command="bash run.sh {workspace} {result}", timeout=5400.0,
                max_jobs=None, cwd=None, auto=False,
                env={"ASHS_ROOT": "/srv/ashs", "ASHS_HOOK_SCRIPT": "${DSS_HOOK}"}),
            "NeckTrim": ServiceCommand(
                key="NeckTrim", command="python3 /opt/necktrim/run.py {workspace} {result}",
                max_jobs=1, cwd="scratch", nice=15, executor="slurm",
                options={"sbatch_options": ["--partition=gpu", "--time=06:00:00",
                                            "--comment=ticket {ticket}"]}, itksnap_wt=True),
            "Retired": ServiceCommand(key="Retired", command="old-tool {workspace} {result}"),
        },
    )
    assert dialog.result_settings() == expected

    with qtbot.waitSignal(dialog.accepted):
        click(qtbot, dialog.buttons.button(QDialogButtonBox.StandardButton.Ok))
    # What the dialog gives is what the settings file stores.
    path = save_settings(dialog.result_settings(), tmp_path / "settings.toml")
    assert load_settings(path) == expected


def test_empty_fields_mean_the_defaults(qtbot: QtBot, tmp_path: Path) -> None:
    dialog = open_dialog(qtbot, make_settings(tmp_path))
    for edit in (dialog.server_edit, dialog.provider_edit, dialog.instance_edit,
                 dialog.workroot_edit, dialog.ca_edit):
        edit.setText("")
    dialog.servers_edit.setPlainText("")
    defaults = Settings()
    result = dialog.result_settings()
    assert (result.server, result.servers, result.provider, result.instance, result.workroot,
            result.ca_bundle) == (None, [], None, defaults.instance, defaults.workroot, None)


# -- validation -----------------------------------------------------------------------------


def test_an_invalid_template_disables_ok_and_says_why(qtbot: QtBot, tmp_path: Path) -> None:
    dialog = open_dialog(qtbot, make_settings(tmp_path))
    ashs = select(dialog, "ASHS-PMC-T1")
    ashs.command_edit.setPlainText("bash run.sh {tickt} {result}")
    assert not ok_enabled(dialog)
    assert ashs.command_message.isVisible()
    assert "unknown placeholder {tickt}; did you mean {ticket}?" in ashs.command_message.text()
    assert "Service commands › ASHS-PMC-T1: command: unknown placeholder" in \
        dialog.status_label.text()
    assert list_texts(dialog)[0].startswith("⚠ ASHS-PMC-T1")
    assert not ashs.test_button.isEnabled()
    with pytest.raises(ValueError, match="unknown placeholder"):
        dialog.result_settings()

    # OK does nothing while invalid, even when triggered directly.
    dialog.accept()
    assert dialog.isVisible()

    ashs.command_edit.setPlainText("bash 'unclosed {result}")
    assert "cannot split the command into words" in ashs.command_message.text()
    ashs.command_edit.setPlainText("")
    assert "the command is empty" in ashs.command_message.text()
    ashs.command_edit.setPlainText("bash run.sh {ticket} {result}")
    assert ok_enabled(dialog) and ashs.test_button.isEnabled()
    assert not ashs.command_message.isVisible()
    assert not list_texts(dialog)[0].startswith("⚠")


def test_sbatch_options_are_checked_and_apply_to_slurm_only(
        qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch on this computer
    dialog = open_dialog(qtbot, make_settings(tmp_path))
    ashs = select(dialog, "ASHS-PMC-T1")
    sbatch_edit = ashs.option_edits["sbatch_options"]
    sbatch_message = ashs.option_messages["sbatch_options"]
    slurm_help = ashs.executor_help["slurm"]
    assert ashs.executor_combo.currentData() == "local"
    assert not sbatch_edit.isEnabled() and not slurm_help.isVisible()
    ashs.executor_combo.setCurrentIndex(ashs.executor_combo.findData("slurm"))
    assert sbatch_edit.isEnabled()
    assert "sbatch is not on this computer's PATH" in sbatch_message.text()
    assert ok_enabled(dialog)  # a note: the worker may run on the cluster's login node
    assert "not as a cluster job" in ashs.test_button.toolTip()

    for text, expected in [
        ("--partition='gpu", "cannot split the options into words: No closing quotation"),
        ("--comment={tickt}", "unknown placeholder {tickt} in '--comment={tickt}'; did you "
                              "mean {ticket}?"),
        ("gpu --time=1:00:00", "'gpu' is not an option: options start with - or --"),
    ]:
        sbatch_edit.setText(text)
        assert not ok_enabled(dialog), text
        assert sbatch_message.isVisible() and expected in sbatch_message.text()
        assert "Service commands › ASHS-PMC-T1: sbatch options: " in dialog.status_label.text()
        with pytest.raises(ValueError, match="sbatch options"):
            dialog.result_settings()

    # Back to local with a problem left: the field stays editable, or OK could never be
    # pressed again; once fixed it is off, and the options are kept for later.
    ashs.executor_combo.setCurrentIndex(ashs.executor_combo.findData("local"))
    assert not ok_enabled(dialog) and sbatch_edit.isEnabled()
    sbatch_edit.setText("--partition gpu")
    assert ok_enabled(dialog) and not sbatch_edit.isEnabled()
    assert not sbatch_message.isVisible()
    saved = services_of(dialog.result_settings())["ASHS-PMC-T1"]
    assert (saved.executor, saved.options["sbatch_options"]) == ("local", ["--partition", "gpu"])

    # An option dss-console sets itself: a warning in words, not a refusal.
    ashs.executor_combo.setCurrentIndex(ashs.executor_combo.findData("slurm"))
    sbatch_edit.setText("--output=/tmp/job.log")
    assert ok_enabled(dialog)
    assert "--output is set by dss-console" in sbatch_message.text()


def test_an_executors_rows_come_from_its_declaration(
        qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(plugins.EXECUTORS, "toy", TARGET)
    dialog = open_dialog(qtbot, make_settings(tmp_path))
    ashs = select(dialog, "ASHS-PMC-T1")
    toy_edit, toy_message = ashs.option_edits["toy_flags"], ashs.option_messages["toy_flags"]
    assert toy_edit.placeholderText() == "e.g. +fast" and toy_edit.toolTip() == "The toy's flags"
    assert not toy_edit.isEnabled() and not ashs.executor_help["toy"].isVisible()
    ashs.executor_combo.setCurrentIndex(ashs.executor_combo.findText(
        "Toy runner (declares options only)"))
    assert toy_edit.isEnabled() and ashs.executor_help["toy"].isVisible()
    assert not ashs.option_edits["sbatch_options"].isEnabled()
    assert not ashs.executor_help["slurm"].isVisible()
    assert "no flags: the toy idles" in toy_message.text()  # the toy's note
    assert "(not on the toy)" in ashs.test_button.toolTip()

    toy_edit.setText("+fast slow")
    assert not ok_enabled(dialog)
    assert "'slow' is not a toy flag" in toy_message.text()
    assert "ASHS-PMC-T1: Toy flags: 'slow' is not a toy flag" in dialog.status_label.text()
    toy_edit.setText("+fast '+very quiet'")
    assert ok_enabled(dialog) and not toy_message.text()
    saved = services_of(dialog.result_settings())["ASHS-PMC-T1"]
    assert (saved.executor, saved.options) == ("toy", {"toy_flags": ["+fast", "+very quiet"]})


def test_general_fields_are_checked(qtbot: QtBot, tmp_path: Path) -> None:
    dialog = open_dialog(qtbot, make_settings(tmp_path))
    cases = [
        (dialog.server_edit, "dss.itksnap.org", dialog.server_message, "is not an http://"),
        (dialog.workroot_edit, "relative/dir", dialog.workroot_message, "absolute path"),
        (dialog.poll_edit, "soon", dialog.poll_message, "is not a duration"),
        (dialog.poll_edit, "0", dialog.poll_message, "longer than 0 seconds"),
    ]
    for edit, text, message, expected in cases:
        good = edit.text()
        edit.setText(text)
        assert not ok_enabled(dialog)
        assert message.isVisible() and expected in message.text()
        edit.setText(good)
        assert ok_enabled(dialog) and not message.isVisible()
    dialog.servers_edit.setPlainText("https://ok.org\nftp://nope")
    assert not ok_enabled(dialog)
    assert "line 2: 'ftp://nope' is not an http://" in dialog.servers_message.text()


def test_a_missing_ca_bundle_is_a_note_not_an_error(qtbot: QtBot, tmp_path: Path) -> None:
    dialog = open_dialog(qtbot, make_settings(tmp_path))
    dialog.ca_edit.setText(str(tmp_path / "missing.pem"))
    assert dialog.ca_message.isVisible() and "is not a file" in dialog.ca_message.text()
    assert ok_enabled(dialog)


def test_timeout_parsing(qtbot: QtBot, tmp_path: Path) -> None:
    dialog = open_dialog(qtbot, make_settings(tmp_path))
    ashs = select(dialog, "ASHS-PMC-T1")
    assert ashs.timeout_edit.text() == "6h"
    ashs.timeout_edit.setText("1h30m")
    assert services_of(dialog.result_settings())["ASHS-PMC-T1"].timeout == 5400.0
    ashs.timeout_edit.setText("90")
    assert services_of(dialog.result_settings())["ASHS-PMC-T1"].timeout == 90.0
    ashs.timeout_edit.setText("")
    assert services_of(dialog.result_settings())["ASHS-PMC-T1"].timeout is None
    ashs.timeout_edit.setText("an hour")
    assert not ok_enabled(dialog)
    assert "'an hour' is not a duration" in ashs.timeout_message.text()
    ashs.timeout_edit.setText("0s")
    assert "longer than 0 seconds" in ashs.timeout_message.text()


@pytest.mark.parametrize("seconds", [5.0, 45.0, 90.0, 5400.0, 6 * 3600.0, 2 * 86400.0 + 61,
                                     0.5, 1234567.25])
def test_format_duration_reads_back(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_format_duration_words() -> None:
    assert [format_duration(s) for s in (6 * 3600, 5400, 45, 90061)] == \
        ["6h", "1h30m", "45s", "1d1h1m1s"]


# -- editing commands -----------------------------------------------------------------------


def test_placeholder_buttons_insert_at_the_cursor(qtbot: QtBot, tmp_path: Path) -> None:
    dialog = open_dialog(qtbot, make_settings(tmp_path))
    ashs = select(dialog, "ASHS-PMC-T1")
    ashs.command_edit.setPlainText("run  {result}")
    cursor = ashs.command_edit.textCursor()
    cursor.setPosition(4)
    ashs.command_edit.setTextCursor(cursor)
    click(qtbot, ashs.placeholder_buttons["workspace"])
    assert ashs.command_edit.toPlainText() == "run {workspace} {result}"
    # Typing goes on after the insertion.
    qtbot.keyClicks(ashs.command_edit, "!")
    assert ashs.command_edit.toPlainText() == "run {workspace}! {result}"
    cursor.movePosition(QTextCursor.MoveOperation.End)
    ashs.command_edit.setTextCursor(cursor)
    click(qtbot, ashs.placeholder_buttons["ticket"])
    assert ashs.command_edit.toPlainText().endswith("{result}{ticket}")
    assert set(ashs.placeholder_buttons) == {"ticket", "service", "service_hash", "workdir",
                                             "inputs", "workspace", "result"}


def test_env_rows_add_and_remove(qtbot: QtBot, tmp_path: Path) -> None:
    dialog = open_dialog(qtbot, make_settings(tmp_path))
    ashs = select(dialog, "ASHS-PMC-T1")
    assert ashs.env_table.rowCount() == 2
    click(qtbot, ashs.env_add_button)
    assert ashs.env_table.rowCount() == 3
    assert ok_enabled(dialog)  # an empty new row is ignored
    ashs.env_table.item(2, 1).setText("value")
    assert not ok_enabled(dialog)
    assert "row 3: the name is empty" in ashs.env_message.text()
    ashs.env_table.item(2, 0).setText("A=B")
    assert "'A=B' is not a valid variable name" in ashs.env_message.text()
    ashs.env_table.item(2, 0).setText("ASHS_ROOT")
    assert "ASHS_ROOT is set twice" in ashs.env_message.text()
    ashs.env_table.item(2, 0).setText("OMP_NUM_THREADS")
    ashs.env_table.item(2, 1).setText("4")
    assert ok_enabled(dialog)
    assert services_of(dialog.result_settings())["ASHS-PMC-T1"].env == {
        "ASHS_ROOT": "/opt/ashs", "ASHS_HOOK_SCRIPT": "${DSS_HOOK}", "OMP_NUM_THREADS": "4"}

    ashs.env_table.selectRow(0)
    click(qtbot, ashs.env_remove_button)
    assert ashs.env_table.rowCount() == 2
    assert services_of(dialog.result_settings())["ASHS-PMC-T1"].env == {
        "ASHS_HOOK_SCRIPT": "${DSS_HOOK}", "OMP_NUM_THREADS": "4"}
    # A cell set through the table's own item API counts too.
    ashs.env_table.setItem(0, 1, QTableWidgetItem("/x/hook"))
    assert services_of(dialog.result_settings())["ASHS-PMC-T1"].env["ASHS_HOOK_SCRIPT"] == "/x/hook"


def test_remove_a_command(qtbot: QtBot, tmp_path: Path) -> None:
    dialog = open_dialog(qtbot, make_settings(tmp_path))
    ashs = select(dialog, "ASHS-PMC-T1")
    click(qtbot, ashs.remove_button)
    # A provided service stays listed, without a command.
    assert not ashs.configured
    assert "ASHS-PMC-T1 (no command)" in list_texts(dialog)
    assert "ASHS-PMC-T1" not in services_of(dialog.result_settings())

    retired = select(dialog, "Retired")
    click(qtbot, retired.remove_button)
    assert not any(text.startswith("Retired") for text in list_texts(dialog))
    assert set(services_of(dialog.result_settings())) == set()
    # The list and the pages stay in step.
    for index in range(dialog.service_list.count()):
        dialog.service_list.setCurrentRow(index)
        assert dialog.service_stack.currentWidget() is dialog._editors[index]


def test_configured_keys_not_provided_are_listed(qtbot: QtBot, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    services_of(settings)[NECK_HASH] = ServiceCommand(key=NECK_HASH, command="neck {result}")
    dialog = open_dialog(qtbot, settings)
    assert list_texts(dialog) == [
        "ASHS-PMC-T1",
        "NeckTrim",  # bound to its hash key
        "Retired\n    not provided by this account",
    ]
    neck = select(dialog, "NeckTrim")
    assert neck.key == NECK_HASH and neck.configured
    tip = dialog.service_list.item(1).toolTip()
    assert f"hash: {NECK_HASH}" in tip and f"settings key: {NECK_HASH}" in tip


def test_without_an_account_every_configured_key_is_listed(qtbot: QtBot,
                                                            tmp_path: Path) -> None:
    dialog = open_dialog(qtbot, make_settings(tmp_path), services=())
    assert list_texts(dialog) == ["ASHS-PMC-T1\n    not provided by this account",
                                  "Retired\n    not provided by this account"]
    empty = open_dialog(qtbot, Settings(), services=())
    empty.tabs.setCurrentIndex(1)
    assert empty.service_list.count() == 0 and empty.empty_label.isVisible()


def test_add_a_service_by_name_or_hash(qtbot: QtBot, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    dialog = open_dialog(qtbot, make_settings(tmp_path))
    monkeypatch.setattr(dialog, "ask_service_key", lambda: f"  {OTHER_HASH.upper()} ")
    click(qtbot, dialog.add_service_button)
    editor = dialog.current_editor()
    assert editor is not None and editor.key == OTHER_HASH.upper() and editor.configured
    assert not ok_enabled(dialog)  # no command yet
    editor.command_edit.setPlainText("tool {workspace} {result}")
    assert ok_enabled(dialog)
    assert services_of(dialog.result_settings())[OTHER_HASH.upper()].command == \
        "tool {workspace} {result}"

    # A provided service without a command: selected and given one, not added twice.
    monkeypatch.setattr(dialog, "ask_service_key", lambda: NECK_HASH)
    count = dialog.service_list.count()
    click(qtbot, dialog.add_service_button)
    assert dialog.service_list.count() == count
    neck = dialog.current_editor()
    assert neck is not None and neck.display_name == "NeckTrim" and neck.configured

    monkeypatch.setattr(dialog, "ask_service_key", lambda: None)  # cancelled
    click(qtbot, dialog.add_service_button)
    assert dialog.service_list.count() == count


def test_test_button_opens_the_dry_run_with_the_edited_command(qtbot: QtBot,
                                                               tmp_path: Path) -> None:
    dialog = open_dialog(qtbot, make_settings(tmp_path))
    ashs = select(dialog, "ASHS-PMC-T1")
    ashs.command_edit.setPlainText("bash edited.sh {workspace} {result}")
    ashs.timeout_edit.setText("2m")
    click(qtbot, ashs.test_button)
    dry_run = dialog.dry_run_dialog
    assert isinstance(dry_run, DryRunDialog) and dry_run.isVisible()
    assert dry_run.command_view.text() == "bash edited.sh {workspace} {result}"
    assert dry_run._command.timeout == 120.0
    assert dry_run._service_hash == ASHS_HASH
    assert "ASHS-PMC-T1" in dry_run.windowTitle()
    assert not dry_run.run_button.isEnabled()  # no workspace chosen yet
    click(qtbot, dry_run.close_button)
    assert not dry_run.isVisible()


def test_select_service(qtbot: QtBot, tmp_path: Path) -> None:
    dialog = open_dialog(qtbot, make_settings(tmp_path))
    assert dialog.tabs.currentIndex() == 0
    assert dialog.select_service(NECK_HASH.upper())
    assert dialog.tabs.currentIndex() == 1
    assert dialog.current_editor().display_name == "NeckTrim"
    assert dialog.select_service("Retired")
    assert dialog.current_editor().display_name == "Retired"
    assert not dialog.select_service("Unknown")
    assert dialog.current_editor().display_name == "Retired"


# -- a settings file that does not load --------------------------------------------------------


def test_replacing_a_broken_file_keeps_every_earlier_copy(tmp_path: Path) -> None:
    from dss_console.gui.broken_settings import replace_settings_file

    path = tmp_path / "settings.toml"
    assert replace_settings_file(Settings(concurrency=2), path) is None  # no file: no copy
    path.write_text("first = broken\n")
    path.chmod(0o600)
    now = 1_700_000_000.0
    first = replace_settings_file(Settings(concurrency=3), path, now=now)
    path.write_text("second = broken\n")
    second = replace_settings_file(Settings(concurrency=4), path, now=now)  # same second
    assert first is not None and second is not None and first != second
    assert first.name.startswith("settings.toml.broken-") and second.name.endswith("-2")
    assert (first.read_text(), second.read_text()) == ("first = broken\n", "second = broken\n")
    assert first.stat().st_mode & 0o777 == 0o600  # a copy as private as the original
    assert load_settings(path).concurrency == 4


def test_broken_settings_dialog_choices(qtbot: QtBot, tmp_path: Path) -> None:
    from dss_console.gui.broken_settings import FIX_FILE, REPLACE_FILE, BrokenSettingsDialog

    path = tmp_path / "settings.toml"
    problem = f"{path}: not valid TOML: <b>unclosed</b> table (at line 3)"
    for button, choice in (("replace_button", REPLACE_FILE), ("fix_button", FIX_FILE),
                           ("keep_button", None)):
        dialog = BrokenSettingsDialog(path, problem)
        qtbot.addWidget(dialog)
        dialog.show()
        assert dialog.problem_label.text() == problem  # shown as text, not markup
        assert dialog.problem_label.textFormat() == Qt.TextFormat.PlainText
        assert dialog.path_edit.text() == str(path) and dialog.path_edit.isReadOnly()
        assert dialog.keep_button.isDefault()  # Enter changes nothing on disk
        click(qtbot, getattr(dialog, button))
        assert not dialog.isVisible() and dialog.choice == choice


def test_dialog_says_the_file_did_not_load(qtbot: QtBot, tmp_path: Path) -> None:
    dialog = SettingsDialog(make_settings(tmp_path), PROVIDED, file_problem="x.toml: bad")
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.file_problem_label.isVisible()
    assert "x.toml: bad" in dialog.file_problem_label.text()
    assert not open_dialog(qtbot, make_settings(tmp_path)).file_problem_label.isVisible()
