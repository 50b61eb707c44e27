"""Each source's window parts (plugins.SOURCE_WINDOWS, gui.source_window): what the window
asks of them instead of a source's name."""

from __future__ import annotations

from pathlib import Path

import pytest
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
