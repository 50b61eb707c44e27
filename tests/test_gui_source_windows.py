"""Each source's window parts (plugins.SOURCE_WINDOWS, gui.source_window): what the window
asks of them instead of a source's name."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from dss_console import plugins
from dss_console.engine.settings import Settings, parse_settings
from dss_console.gui.settings_dialog import SettingsDialog
from dss_console.gui.source_window import SourceSettingsTab, SourceWindow
from settings_helpers import v6_of
from test_gui_console import event_loop_qt  # noqa: F401 (fixture)


def test_every_registered_source_has_window_parts() -> None:
    assert list(plugins.SOURCE_WINDOWS) == list(plugins.SOURCES)  # the default first
    for name in plugins.SOURCE_WINDOWS:
        window = plugins.source_window(name)
        assert isinstance(window, SourceWindow)
        sandbox = window.sandbox()
        assert sandbox is not None and callable(sandbox.start) and callable(sandbox.stop)
        sandbox.stop()  # nothing started: nothing to stop, no error


def test_only_the_node_has_a_tab_and_a_view(qtbot: QtBot) -> None:
    settings = Settings()
    assert plugins.source_window("dss").settings_tab(settings) is None
    assert plugins.source_window("dss").views() == ()
    tab = plugins.source_window("v6").settings_tab(settings)
    assert isinstance(tab, SourceSettingsTab)
    qtbot.addWidget(tab.widget())
    assert [v.name for v in plugins.source_window("v6").views()] == ["audit"]


def test_the_tab_writes_back_only_its_own_part(qtbot: QtBot, tmp_path: Path) -> None:
    settings = parse_settings('concurrency = 3\n[services.Seg]\ncommand = "seg {result}"\n'
                              '[v6.databases.default]\nuri = "/data/a.csv"\ntype = "csv"\n',
                              tmp_path / "settings.toml")
    dialog = SettingsDialog(settings, [], source="v6")
    qtbot.addWidget(dialog)
    tab = dialog.source_tab
    assert tab is not None and dialog.tabs.tabText(2) == tab.title
    changes: list[None] = []
    tab.on_changed(lambda: changes.append(None))
    tab.select("img/new:1")  # a new row to fill in: OK is off, and says where
    assert changes and not dialog.ok_button.isEnabled()
    assert dialog.status_label.text().startswith(f"To save, fix: {tab.area} › ")
    dialog.tabs.setCurrentIndex(0)
    dialog.select_source_item("img/new:1")
    assert dialog.tabs.currentWidget() is tab.widget()
    tab.remove_algorithm_button.click()  # the selected new row
    assert dialog.ok_button.isEnabled()
    result = dialog.result_settings()
    assert result.plugins["dss"] == settings.plugins["dss"]  # the service tables untouched
    assert result.concurrency == 3
    assert v6_of(result).databases["default"].uri == "/data/a.csv"
    assert result == settings


@pytest.mark.usefixtures("event_loop_qt")
def test_the_window_shows_the_views_of_the_source_it_speaks_for(qtbot: QtBot,
                                                                tmp_path: Path) -> None:
    from dss_console.credentials import SessionStore
    from dss_console.gui import tasks
    from dss_console.gui.main_window import QUIT_CANCEL, MainWindow
    from dss_console.gui.presentations import presentation_for

    window = MainWindow(Settings(), None, SessionStore(tmp_path / "sessions", use_keyring=False),
                        remember_layout=False)
    qtbot.addWidget(window)
    window.show()
    window.use_presentation(presentation_for("v6"))
    button = window.view_buttons["audit"]
    assert button.text() == "Run audit…"
    qtbot.waitUntil(button.isVisible, timeout=5_000)  # shown by its layout, queued
    button.click()  # no engine: an empty audit, no error
    audit = window.view_windows["audit"].widget()
    qtbot.waitUntil(audit.isVisible, timeout=5_000)
    window.use_presentation(presentation_for("dss"))
    assert window.view_buttons == {} and window.view_windows == {}
    assert not audit.isVisible()  # another source's view does not stay open
    window.ask_quit_choice = lambda running, **_: QUIT_CANCEL  # type: ignore[method-assign]
    window.close()
    qtbot.waitUntil(lambda: window.closed, timeout=30_000)
    qtbot.waitUntil(lambda: not tasks.pending_tasks(), timeout=15_000)


def job_headers(window) -> list[str]:
    model = window.queue_pane.model
    return [model.headerData(column, Qt.Orientation.Horizontal)
            for column in range(model.columnCount())]


@pytest.mark.usefixtures("event_loop_qt")
def test_before_a_login_a_family_shows_only_the_columns_all_its_members_show(
        qtbot: QtBot, tmp_path: Path) -> None:
    from PySide6.QtCore import QSettings

    from dss_console.credentials import SessionStore
    from dss_console.gui import tasks
    from dss_console.gui.main_window import QUIT_CANCEL, MainWindow
    from dss_console.gui.presentations import presentation_for

    (family, members), = ((f, m) for f, m in plugins.SOURCE_FAMILIES.items() if len(m) > 1)
    columns = [[column.title for column in presentation_for(member).job_columns]
               for member in members]
    assert any(titles != columns[0] for titles in columns)  # else nothing to test
    shared = [title for title in columns[0] if all(title in titles for titles in columns)]
    # The last login was to the family's last member: a guess until its server answers.
    state_file = tmp_path / "window.ini"
    state = QSettings(str(state_file), QSettings.Format.IniFormat)
    state.setValue("login/source", members[-1])
    state.sync()
    store = SessionStore(tmp_path / "sessions", use_keyring=False)
    window = MainWindow(Settings(), None, store, window_state_file=state_file)
    qtbot.addWidget(window)
    assert window.login_pane.family() == family
    assert job_headers(window) == shared
    box = window.login_pane.source_box
    box.setCurrentIndex(box.findData(next(iter(plugins.SOURCES))))  # another source
    box.setCurrentIndex(box.findData(family))  # and the family chosen again
    assert job_headers(window) == shared
    for member, titles in zip(members, columns, strict=True):
        window.use_source_kind(member)  # as a login to it does
        assert job_headers(window) == titles
    window.ask_quit_choice = lambda running, **_: QUIT_CANCEL  # type: ignore[method-assign]
    window.close()
    qtbot.waitUntil(lambda: window.closed, timeout=30_000)
    qtbot.waitUntil(lambda: not tasks.pending_tasks(), timeout=15_000)
