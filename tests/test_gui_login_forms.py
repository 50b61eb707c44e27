"""The login pane renders the form each source plug-in declares (issue 18): its chooser lists
the registry's source families (a family's first member's title), and each source shows its
fields, in its words, and only the window's helpers its login uses. Real widgets, offscreen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QLabel

from dss_console import plugins
from dss_console.core.source_plugin import plugin_family
from dss_console.credentials import SessionStore
from dss_console.gui.login_pane import LoginPane


def test_the_login_pane_renders_each_sources_declared_form(qtbot: Any, tmp_path: Path) -> None:
    pane = LoginPane(SessionStore(tmp_path / "store", use_keyring=False), [], lambda: True)
    qtbot.addWidget(pane)
    pane.show()
    box = pane.source_box
    families: dict[str, list[str]] = {}
    for name in plugins.SOURCES:
        families.setdefault(plugin_family(plugins.source_plugin(name)), []).append(name)
    assert [box.itemData(i) for i in range(box.count())] == list(families)
    assert [box.itemText(i) for i in range(box.count())] == [
        plugins.source_plugin(members[0]).title for members in families.values()]
    # Choosing a family shows its first member's form.
    for family, members in families.items():
        box.setCurrentIndex(box.findData(family))
        assert pane.family() == family and pane.source_kind() == members[0]
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
        # Every other field (a second url, a text) has a line edit of its own, by name.
        primary = {form.field(kind) for kind in rows}
        extras = [field for field in form.fields if field not in primary]
        for field in extras:
            edit = pane._extra_edits[field.name]
            assert edit.isVisible(), (name, field.name)
            label = pane._form.labelForField(edit)
            assert isinstance(label, QLabel) and label.text() == field.label
            assert edit.placeholderText() == field.placeholder
            seen_labels.add(field.label)
        assert [n for n, e in pane._extra_edits.items() if e.isVisible()] == \
            [field.name for field in extras]
        assert pane.form_values().keys() == {field.name for field in form.fields}
        assert pane.get_token_button.isVisible() == ("token_page" in form.helpers)
        assert pane.import_button.isVisible() == ("itksnap_session" in form.helpers)
        assert pane.remove_server_button.isVisible() == ("server_list" in form.helpers)
    # The sources' own words reached the widgets (a DSS token, a node's API key, a 5.x
    # node's auth server).
    assert {"Token", "API key", "Auth server", "Realm", "Node name"} <= seen_labels
    # The chooser's tip says where each source's work comes from, in its own words.
    assert all(plugins.source_plugin(members[0]).login_form.about in box.toolTip()
               for members in families.values())
