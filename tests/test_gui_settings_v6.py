"""The Settings dialog's size and its vantage6 tab (a node's [v6.algorithms] and
[v6.databases]), driven through its widgets offscreen and saved through the settings file's
format-preserving writer."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QScrollArea
from pytestqt.qtbot import QtBot

from dss_console.engine.settings import ServiceCommand, Settings, load_settings, save_settings
from dss_console.gui.settings_dialog import SettingsDialog
from settings_helpers import settings_with, v6_of

NODE_FILE = """\
# This node belongs to the cohort study. Ask Ana before adding images.
poll_interval = "10s"

[v6.algorithms."harbor2.vantage6.ai/demo/average"]   # the demo everyone runs
python = "/opt/v6/average/bin/python"
package = "v6_average"
timeout = "6h"                # the slowest site needs 4 h
send_output_tail = true
memory = "2G"                 # its own limit, no column for it

[v6.algorithms."harbor2.vantage6.ai/demo/average".env]
PYTHONPATH = "/opt/v6/average/src"

[v6.databases.default]        # refreshed nightly
uri = "/data/cohort.csv"
type = "csv"

[v6.databases.default.env]
password = "kept-as-is"
"""


def node_dialog(qtbot: QtBot, tmp_path: Path) -> tuple[SettingsDialog, Path]:
    path = tmp_path / "settings.toml"
    path.write_text(NODE_FILE)
    dialog = SettingsDialog(load_settings(path), [], source="v6")
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog, path


def test_default_size_shows_every_field_within_1280_by_800(qtbot: QtBot) -> None:
    settings = settings_with(services={"Seg": ServiceCommand(key="Seg", command="seg {result}")})
    dialog = SettingsDialog(settings, [("Seg", "a" * 40)])
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.width() <= 1280 and dialog.height() <= 800
    dialog.tabs.setCurrentIndex(1)
    qtbot.waitUntil(dialog.service_stack.isVisible)
    scroll = dialog.findChild(QScrollArea)
    editor = dialog.current_editor()
    # The editor's fields fit beside the list: nothing cut off at the right.
    assert editor.minimumSizeHint().width() <= scroll.viewport().width()
    assert scroll.horizontalScrollBarPolicy() != Qt.ScrollBarPolicy.ScrollBarAlwaysOff
    general = dialog.tabs.widget(0)
    assert general.minimumSizeHint().height() <= general.height()


def test_a_dss_console_has_no_vantage6_tab(qtbot: QtBot) -> None:
    dialog = SettingsDialog(Settings(), [("Seg", "a" * 40)])
    qtbot.addWidget(dialog)
    assert dialog.source_tab is None and dialog.tabs.count() == 2


def test_node_tables_show_the_file_and_ok_changes_nothing(qtbot: QtBot, tmp_path: Path
                                                         ) -> None:
    dialog, path = node_dialog(qtbot, tmp_path)
    tab = dialog.source_tab
    assert tab is not None and dialog.service_list.count() == 0  # no images as DSS services
    assert tab.algorithms.item(0, 0).text() == "harbor2.vantage6.ai/demo/average"
    assert tab.algorithms.item(0, 4).text() == "6h"
    assert tab.databases.item(0, 1).text() == "/data/cohort.csv"
    assert dialog.ok_button.isEnabled()
    before = path.stat().st_mtime_ns
    save_settings(dialog.result_settings(), path)
    assert path.read_text() == NODE_FILE and path.stat().st_mtime_ns == before


def test_edit_add_and_check_images_and_databases(qtbot: QtBot, tmp_path: Path) -> None:
    dialog, path = node_dialog(qtbot, tmp_path)
    tab = dialog.source_tab
    assert tab is not None
    tab.databases.item(0, 1).setText("/data/cohort-2026.csv")
    # A new image, first with a timeout that is not one: OK goes off and says why.
    dialog.select_source_item("ghcr.io/lab/survival:2")
    assert dialog.tabs.currentWidget() is tab
    row = tab.algorithms.currentRow()
    assert tab.algorithms.item(row, 0).text() == "ghcr.io/lab/survival:2"
    assert not dialog.ok_button.isEnabled()  # no way to run it yet
    assert "missing how to run it" in dialog.status_label.text()
    tab.algorithms.item(row, 3).setText("python -m surv {input} {output}")
    tab.algorithms.item(row, 4).setText("soon")
    assert not dialog.ok_button.isEnabled()
    assert "timeout: 'soon' is not a duration" in dialog.status_label.text()
    tab.algorithms.item(row, 4).setText("90m")
    tab.algorithms.item(row, 8).setCheckState(Qt.CheckState.Checked)
    assert dialog.ok_button.isEnabled()
    tab.add_database("sql_db", "postgresql://db/cohort", "sql")
    combo = tab.databases.cellWidget(1, 2)
    assert isinstance(combo, QComboBox) and combo.currentText() == "sql"

    save_settings(dialog.result_settings(), path)
    saved = v6_of(load_settings(path))
    survival = saved.algorithms["ghcr.io/lab/survival:2"]
    assert survival.command == "python -m surv {input} {output}"
    assert survival.timeout == 5400 and survival.subtasks
    assert saved.databases["default"].uri == "/data/cohort-2026.csv"
    assert saved.databases["default"].env == {"password": "kept-as-is"}  # not shown, kept
    assert saved.databases["sql_db"].type == "sql"
    average = saved.algorithms["harbor2.vantage6.ai/demo/average"]
    assert average.env == {"PYTHONPATH": "/opt/v6/average/src"}
    assert average.send_output_tail is True  # not shown, kept
    assert average.policy == {"memory": "2G"}  # not shown, kept
    # A new image is written with its kind's default isolation, for the operator to see.
    assert survival.policy == {"isolation": "sandbox", "network": False}
    text = path.read_text()
    # Edited in place: the comments and the untouched spellings stay.
    assert text.startswith("# This node belongs to the cohort study.")
    assert 'timeout = "6h"                # the slowest site needs 4 h' in text
    assert "[v6.databases.default]        # refreshed nightly" in text


def test_an_image_listed_twice_keeps_ok_off(qtbot: QtBot, tmp_path: Path) -> None:
    dialog, _path = node_dialog(qtbot, tmp_path)
    tab = dialog.source_tab
    assert tab is not None
    row = tab.add_algorithm("harbor2.vantage6.ai/demo/average")
    tab.algorithms.item(row, 3).setText("run {input} {output}")
    assert not dialog.ok_button.isEnabled()
    assert "listed twice" in dialog.status_label.text()
    tab.algorithms.selectRow(row)
    tab.remove_algorithm_button.click()
    assert dialog.ok_button.isEnabled()
