"""The login pane renders the form each source plug-in declares (issue 18): its chooser lists
the registry's sources by title, and each choice shows that source's fields, in its words, and
only the window's helpers its login uses. Real widgets, offscreen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QLabel

from dss_console import plugins
from dss_console.credentials import SessionStore
from dss_console.gui.login_pane import LoginPane


def test_the_login_pane_renders_each_sources_declared_form(qtbot: Any, tmp_path: Path) -> None:
    pane = LoginPane(SessionStore(tmp_path / "store", use_keyring=False), [], lambda: True)
    qtbot.addWidget(pane)
    pane.show()
    box = pane.source_box
    assert [box.itemData(i) for i in range(box.count())] == list(plugins.SOURCES)
    assert [box.itemText(i) for i in range(box.count())] == [
        plugins.source_plugin(name).title for name in plugins.SOURCES]
    rows = {"url": pane._server_row, "secret": pane._token_row, "file": pane._key_row}
    edits = {"url": pane.server_box.lineEdit(), "secret": pane.token_edit,
             "file": pane.key_file_edit}
    seen_labels = set()
    for name in plugins.SOURCES:
        pane.set_source_kind(name)
        form = plugins.source_plugin(name).login_form
        assert pane.source_kind() == name and pane.login_form() == form
        for kind, row in rows.items():
            field = form.field(kind)
            assert edits[kind].isVisible() == (field is not None), (name, kind)
            if field is None:
                continue
            label = pane._form.labelForField(row)
            assert isinstance(label, QLabel) and label.text() == field.label
            assert edits[kind].placeholderText() == field.placeholder
            seen_labels.add(field.label)
        assert pane.get_token_button.isVisible() == ("token_page" in form.helpers)
        assert pane.import_button.isVisible() == ("itksnap_session" in form.helpers)
        assert pane.remove_server_button.isVisible() == ("server_list" in form.helpers)
    # The sources' own words reached the widgets (a DSS token, a node's API key).
    assert {"Token", "API key"} <= seen_labels
    # The chooser's tip says where each source's work comes from, in its own words.
    assert all(plugins.source_plugin(name).login_form.about in box.toolTip()
               for name in plugins.SOURCES)
