"""The settings window: everything the settings file holds, and a command per service.

The widgets are the only copy of the values being edited: validation, the service list's
marks and :meth:`SettingsDialog.result_settings` all read them through the same parsers,
so what the window says is wrong is exactly what would keep it from saving.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QStackedWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from dss_console import plugins
from dss_console.engine.settings import (
    NOTIFY_KINDS,
    Settings,
    default_instance,
    default_workroot,
    format_duration,
)
from dss_console.gui.dry_run_dialog import DryRunDialog
from dss_console.gui.service_editor import (
    _HASH_RE,
    _PROBLEM_STYLE,
    PLACEHOLDER_HELP,
    _duration,
    _Invalid,
    _lines_high,
    _Message,
    _row,
    _ServiceEditor,
    _stacked,
    _url,
)
from dss_console.gui.source_window import SourceSettingsTab

# The settings' notify kinds as the dialog offers them (NOTIFY_KINDS order).
NOTIFY_LABELS = {
    "decision": "when a job waits for your &decision",
    "failed": "when a job fai&ls",
    "succeeded": "when a job succ&eeds",
}

__all__ = ["PLACEHOLDER_HELP", "SettingsDialog", "format_duration"]


# -- the dialog -----------------------------------------------------------------------------


class SettingsDialog(QDialog):
    """Edit a copy of the settings. ``services`` are the (name, hash) pairs of the services
    the logged-in account provides (may be empty); with ``source`` (a plug-in's name) that
    source's own tab (gui.source_window.SourceSettingsTab) edits its settings, if it has one.
    After ``accepted``, read :meth:`result_settings`; the dialog saves nothing itself."""

    def __init__(self, settings: Settings, services: Sequence[tuple[str, str]] = (),
                 parent: QWidget | None = None, *, file_problem: str | None = None,
                 engine_note: str | None = None, source: str | None = None,
                 settings_file: str | None = None) -> None:
        super().__init__(parent)
        self._original = settings
        self._editors: list[_ServiceEditor] = []
        self.dry_run_dialog: DryRunDialog | None = None
        self.setWindowTitle("Settings")
        self.setMinimumSize(780, 600)
        # Room for the longest field rows beside the service list (clipped at the minimum);
        # within a 1280x800 screen.
        self.resize(1060, 740)

        self.tabs = QTabWidget()
        self.tabs.addTab(self._general_tab(settings), "&General")
        self.tabs.addTab(self._services_tab(settings, services), "Service &commands")
        self.source_tab: SourceSettingsTab | None = (
            plugins.source_window(source).settings_tab(settings) if source else None)
        if self.source_tab is not None:
            self.source_tab.on_changed(self.revalidate)
            self.tabs.addTab(self.source_tab.widget(), self.source_tab.title)

        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setStyleSheet(_PROBLEM_STYLE)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                        | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)

        # Said before editing, not only after OK: the settings shown are the defaults, and
        # OK will ask whether to replace the file that did not load.
        self.file_problem_label = QLabel(
            f"The settings file did not load, so these are the defaults: {file_problem}. OK "
            "applies them to this session and asks whether to replace the file."
            if file_problem else "")
        self.file_problem_label.setWordWrap(True)
        self.file_problem_label.setTextFormat(Qt.TextFormat.PlainText)
        self.file_problem_label.setStyleSheet(_PROBLEM_STYLE)
        self.file_problem_label.setVisible(bool(file_problem))

        # An attached headless worker reads its own settings file: say so before the
        # operator edits something that will not reach the jobs running now.
        self.engine_note_label = QLabel(engine_note or "")
        self.engine_note_label.setWordWrap(True)
        self.engine_note_label.setTextFormat(Qt.TextFormat.PlainText)
        self.engine_note_label.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse)
        self.engine_note_label.setVisible(bool(engine_note))

        # Which file OK writes: the operator may want to edit it by hand, or diff it.
        self.file_label = QLabel(f"Saved to {settings_file}" if settings_file else "")
        self.file_label.setTextFormat(Qt.TextFormat.PlainText)
        self.file_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.file_label.setVisible(bool(settings_file))

        layout = QVBoxLayout(self)
        layout.addWidget(self.file_problem_label)
        layout.addWidget(self.engine_note_label)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.status_label)
        footer = QHBoxLayout()
        footer.addWidget(self.file_label, 1)
        footer.addWidget(self.buttons)
        layout.addLayout(footer)
        self.revalidate()

    # -- the General tab --------------------------------------------------------------------
    def _general_tab(self, settings: Settings) -> QWidget:
        self.server_edit = QLineEdit(settings.server or "")
        self.server_edit.setPlaceholderText("none: the server you last logged in to")
        self.server_message = _Message()
        self.servers_edit = QPlainTextEdit("\n".join(settings.servers))
        self.servers_edit.setTabChangesFocus(True)
        self.servers_edit.setPlaceholderText("one URL per line")
        _lines_high(self.servers_edit, 3)
        self.servers_message = _Message()
        self.provider_edit = QLineEdit(settings.provider or "")
        self.provider_edit.setPlaceholderText("none: the provider of your services")
        self.instance_edit = QLineEdit(settings.instance)
        self.instance_edit.setPlaceholderText(default_instance())
        self.workroot_edit = QLineEdit(str(settings.workroot))
        self.workroot_edit.setPlaceholderText(str(default_workroot()))
        self.workroot_message = _Message()
        self.workroot_browse = QPushButton("&Browse…")
        self.workroot_browse.clicked.connect(self._browse_workroot)
        self.poll_edit = QLineEdit(format_duration(settings.poll_interval))
        self.poll_message = _Message()
        self.concurrency_spin = QSpinBox()
        self.concurrency_spin.setRange(1, 10_000)
        self.concurrency_spin.setValue(settings.concurrency)
        self.retention_spin = QDoubleSpinBox()
        self.retention_spin.setRange(0, 1_000_000)
        self.retention_spin.setDecimals(2)
        self.retention_spin.setSuffix(" days")
        self.retention_spin.setSpecialValueText("keep forever")
        self.retention_spin.setValue(settings.retention_days)
        self.interrupted_combo = QComboBox()
        self.interrupted_combo.addItem("rerun: run the ticket again from a clean work dir",
                                       "rerun")
        self.interrupted_combo.addItem("fail: fail the ticket", "fail")
        self.interrupted_combo.setCurrentIndex(
            max(0, self.interrupted_combo.findData(settings.interrupted)))
        self.ca_edit = QLineEdit(settings.ca_bundle or "")
        self.ca_edit.setPlaceholderText("none: the system's certificate authorities")
        self.ca_message = _Message()
        self.ca_browse = QPushButton("Br&owse…")
        self.ca_browse.clicked.connect(self._browse_ca_bundle)
        # One opt-in per kind of desktop notification (the settings' notify list).
        self.notify_checks = {kind: QCheckBox(label) for kind, label in NOTIFY_LABELS.items()}
        for kind, check in self.notify_checks.items():
            check.setChecked(kind in settings.notify)

        page = QWidget()
        outer = QVBoxLayout(page)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        outer.addLayout(form)
        outer.addStretch(1)  # spare height below the fields, not between them

        def add(text: str, field: QWidget, *below: QWidget) -> None:
            label = QLabel(text)
            label.setBuddy(field)
            form.addRow(label, _stacked(field, *below) if below else field)

        add("&Server:", self.server_edit, self.server_message)
        add("&Known servers:", self.servers_edit, self.servers_message)
        add("&Provider name:", self.provider_edit)
        add("&Instance code:", self.instance_edit)
        label = QLabel("&Work root:")
        label.setBuddy(self.workroot_edit)
        form.addRow(label, _stacked(_row(self.workroot_edit, self.workroot_browse),
                                    self.workroot_message))
        add("Poll &interval:", self.poll_edit, self.poll_message)
        add("&Jobs at once:", self.concurrency_spin)
        add("&Retention of work dirs:", self.retention_spin)
        add("&After a crash:", self.interrupted_combo)
        label = QLabel("&CA bundle:")
        label.setBuddy(self.ca_edit)
        form.addRow(label, _stacked(_row(self.ca_edit, self.ca_browse), self.ca_message))
        label = QLabel("Desktop notifications:")
        label.setBuddy(self.notify_checks[NOTIFY_KINDS[0]])
        form.addRow(label, _stacked(*self.notify_checks.values()))

        for signal in (self.server_edit.textChanged, self.servers_edit.textChanged,
                       self.workroot_edit.textChanged, self.poll_edit.textChanged,
                       self.ca_edit.textChanged):
            signal.connect(self.revalidate)
        return page

    def _server(self) -> str | None:
        return _url(self.server_edit.text()) if self.server_edit.text().strip() else None

    def _servers(self) -> list[str]:
        servers = []
        for number, line in enumerate(self.servers_edit.toPlainText().splitlines(), 1):
            if line.strip():
                try:
                    servers.append(_url(line))
                except _Invalid as exc:
                    raise _Invalid(f"line {number}: {exc}") from None
        return servers

    def _workroot(self) -> Path:
        text = self.workroot_edit.text().strip()
        if not text:
            return default_workroot()
        path = Path(text).expanduser()
        if not path.is_absolute():
            raise _Invalid("use an absolute path (a relative one would depend on where the "
                           "worker starts)")
        return path

    def _poll_interval(self) -> float:
        seconds = _duration(self.poll_edit.text(), empty_ok=False)
        assert seconds is not None
        return seconds

    def _ca_bundle(self) -> str | None:
        text = self.ca_edit.text().strip()
        return str(Path(text).expanduser()) if text else None

    def _ca_note(self) -> str | None:
        bundle = self._ca_bundle()
        if bundle is not None and not Path(bundle).is_file():
            return f"{bundle} is not a file on this computer"
        return None

    def _general_checks(self) -> list[tuple[str, Callable[[], object], _Message,
                                            Callable[[], str | None] | None]]:
        return [
            ("server", self._server, self.server_message, None),
            ("known servers", self._servers, self.servers_message, None),
            ("work root", self._workroot, self.workroot_message, None),
            ("poll interval", self._poll_interval, self.poll_message, None),
            ("CA bundle", self._ca_bundle, self.ca_message, self._ca_note),
        ]

    def choose_directory(self, title: str, start: str) -> str | None:
        """A folder picker; tests replace this method."""
        return QFileDialog.getExistingDirectory(self, title, start) or None

    def choose_file(self, title: str, start: str, filters: str) -> str | None:
        """A file picker; tests replace this method."""
        return QFileDialog.getOpenFileName(self, title, start, filters)[0] or None

    def _browse_workroot(self) -> None:
        chosen = self.choose_directory("Choose the work root", self.workroot_edit.text())
        if chosen:
            self.workroot_edit.setText(chosen)

    def _browse_ca_bundle(self) -> None:
        chosen = self.choose_file("Choose a CA bundle", self.ca_edit.text(),
                                  "Certificates (*.pem *.crt *.cer);;All files (*)")
        if chosen:
            self.ca_edit.setText(chosen)

    # -- the Service commands tab -----------------------------------------------------------
    def _services_tab(self, settings: Settings,
                      services: Sequence[tuple[str, str]]) -> QWidget:
        self.service_list = QListWidget()
        self.service_list.setAccessibleName("Services")
        self.service_list.setMinimumWidth(200)
        self.service_stack = QStackedWidget()
        self.service_list.currentRowChanged.connect(self.service_stack.setCurrentIndex)
        self.add_service_button = QPushButton("Add &service…")
        self.add_service_button.setToolTip("Configure a command for a service by name or hash")
        self.add_service_button.clicked.connect(self._add_service)

        tables = settings.service_tables()
        configured = tables.services if tables is not None else {}
        remaining = dict(configured)
        used_keys = set(configured)
        for name, githash in services:
            matching = [sc for sc in configured.values() if sc.matches(name, githash)]
            own = [sc for sc in matching if sc.key in remaining]
            if own:
                # The entry the engine would use: a hash key before a name key.
                best = min(own, key=lambda sc: 0 if sc.key.lower() == githash.lower() else 1)
                del remaining[best.key]
                self._add_editor(_ServiceEditor(best.key, name=name, githash=githash,
                                                provided=True, command=best, note=None))
                continue
            key = name if name not in used_keys else githash
            used_keys.add(key)
            note = f"runs with the command saved under {matching[0].key}" if matching else None
            self._add_editor(_ServiceEditor(key, name=name, githash=githash, provided=True,
                                            command=None, note=note))
        for key, command in remaining.items():
            shadowing = next((n for n, h in services if command.matches(n, h)), None)
            note = (f"not used: another entry for {shadowing} comes first" if shadowing
                    else "not provided by this account")
            githash = key.lower() if _HASH_RE.fullmatch(key) else None
            self._add_editor(_ServiceEditor(key, name=None, githash=githash, provided=False,
                                            command=command, note=note))

        self.empty_label = QLabel("No services yet. Log in to see the services your account "
                                  "provides, or add one by name or hash.")
        self.empty_label.setWordWrap(True)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        # A narrow window scrolls rather than cutting the fields off at the right.
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        scroll.setWidget(self.service_stack)
        left = QVBoxLayout()
        left.addWidget(self.service_list, 1)
        left.addWidget(self.add_service_button)
        page = QWidget()
        layout = QHBoxLayout(page)
        layout.addLayout(left, 2)
        right = QVBoxLayout()
        right.addWidget(self.empty_label)
        right.addWidget(scroll, 1)
        layout.addLayout(right, 5)
        if self._editors:
            self.service_list.setCurrentRow(0)
        return page

    def _add_editor(self, editor: _ServiceEditor) -> None:
        self._editors.append(editor)
        self.service_stack.addWidget(editor)
        self.service_list.addItem(QListWidgetItem(editor.display_name))
        editor.changed.connect(self.revalidate)
        editor.test_requested.connect(lambda e=editor: self.open_dry_run(e))
        editor.remove_requested.connect(lambda e=editor: self.remove_command(e))

    def ask_service_key(self) -> str | None:
        """Ask for a service name or hash; tests replace this method."""
        text, ok = QInputDialog.getText(self, "Add a service command",
                                        "Service name or its 40-hex hash:")
        return text if ok else None

    def _add_service(self) -> None:
        key = (self.ask_service_key() or "").strip()
        if not key:
            return
        for index, editor in enumerate(self._editors):
            same_key = editor.key == key or (
                _HASH_RE.fullmatch(key) is not None and editor.key.lower() == key.lower())
            provided_match = editor.provided and (
                editor.name == key or (editor.githash or "").lower() == key.lower())
            if same_key or provided_match:
                self.service_list.setCurrentRow(index)
                if not editor.configured:
                    editor.add_command()
                return
        githash = key.lower() if _HASH_RE.fullmatch(key) else None
        editor = _ServiceEditor(key, name=None, githash=githash, provided=False,
                                command=None, note="not provided by this account")
        self._add_editor(editor)
        self.service_list.setCurrentRow(len(self._editors) - 1)
        editor.add_command()
        self.revalidate()

    def remove_command(self, editor: _ServiceEditor) -> None:
        """Drop a service's command: a provided service stays listed, without a command."""
        if editor.provided:
            editor.clear_command()
        else:
            index = self._editors.index(editor)
            self._editors.pop(index)
            # The stack first: taking the list item moves the selection, which shows a page.
            self.service_stack.removeWidget(editor)
            self.service_list.takeItem(index)
            self.service_stack.setCurrentIndex(self.service_list.currentRow())
            editor.deleteLater()
        self.revalidate()

    def select_source_item(self, key: str) -> None:
        """Show the source's own tab at one of its services (see SourceSettingsTab.select)."""
        if self.source_tab is not None:
            self.tabs.setCurrentWidget(self.source_tab.widget())
            self.source_tab.select(key)

    def select_service(self, name_or_hash: str) -> bool:
        """Show the Service commands tab at a service (by hash, settings key or name);
        False when it is not listed."""
        wanted = name_or_hash.strip()
        for index, editor in enumerate(self._editors):
            if wanted.lower() == (editor.githash or "").lower() or wanted in (
                    editor.key, editor.name):
                self.tabs.setCurrentIndex(1)
                self.service_list.setCurrentRow(index)
                return True
        return False

    def current_editor(self) -> _ServiceEditor | None:
        index = self.service_list.currentRow()
        return self._editors[index] if 0 <= index < len(self._editors) else None

    def open_dry_run(self, editor: _ServiceEditor | None = None) -> DryRunDialog | None:
        """Open the dry run for a service's command as currently edited (window-modal,
        non-blocking); returns the dialog, or None if the command is not valid."""
        editor = editor or self.current_editor()
        if editor is None or not editor.configured:
            return None
        try:
            command = editor.service_command()
        except _Invalid:
            return None
        if self.dry_run_dialog is not None and not self.dry_run_dialog.running:
            self.dry_run_dialog.deleteLater()
        self.dry_run_dialog = DryRunDialog(command, editor.display_name, parent=self,
                                           service_hash=editor.githash)
        self.dry_run_dialog.open()
        return self.dry_run_dialog

    # -- validation and the result ----------------------------------------------------------
    def problems(self) -> list[str]:
        """Everything that keeps OK disabled, in words, with where it is."""
        found = []
        for label, parse, message, note in self._general_checks():
            try:
                parse()
            except _Invalid as exc:
                message.show_text(str(exc))
                found.append(f"General › {label}: {exc}")
            else:
                message.show_text(None, note() if note else None)
        for index, editor in enumerate(self._editors):
            editor_problems = editor.problems()
            self._show_item(index, editor, editor_problems)
            found.extend(f"Service commands › {editor.display_name}: {problem}"
                         for problem in editor_problems)
        if self.source_tab is not None:
            area = self.source_tab.area
            found.extend(f"{area} › {problem}" for problem in self.source_tab.problems())
        return found

    def _show_item(self, index: int, editor: _ServiceEditor, problems: list[str]) -> None:
        item = self.service_list.item(index)
        text = editor.display_name
        if not editor.configured:
            text += " (no command)"
        if editor.note:
            text += f"\n    {editor.note}"
        tips = [f"hash: {editor.githash}"] if editor.githash else []
        if editor.configured:
            tips.append(f"settings key: {editor.key}")
        if problems:
            text = "⚠ " + text
            tips.extend(problems)
        item.setText(text)
        item.setToolTip("\n".join(tips))
        item.setForeground(QColor(176, 0, 0) if problems else self.palette().text().color())

    def revalidate(self) -> None:
        found = self.problems()
        self.ok_button.setEnabled(not found)
        extra = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        self.status_label.setText(f"To save, fix: {found[0]}{extra}" if found else "")
        self.status_label.setVisible(bool(found))
        self.empty_label.setVisible(not self._editors)

    def accept(self) -> None:
        if self.problems():
            self.revalidate()
            return
        super().accept()

    def result_settings(self) -> Settings:
        """A new Settings with the edited values (the one given is never changed).
        Raises ValueError naming the problems while anything is invalid."""
        try:
            services = {}
            for editor in self._editors:
                if editor.configured:
                    command = editor.service_command()
                    services[command.key] = command
            edited = dataclasses.replace(
                self._original,
                server=self._server(),
                servers=self._servers(),
                provider=self.provider_edit.text().strip() or None,
                instance=self.instance_edit.text().strip() or default_instance(),
                workroot=self._workroot(),
                poll_interval=self._poll_interval(),
                concurrency=self.concurrency_spin.value(),
                retention_days=self.retention_spin.value(),
                interrupted=self.interrupted_combo.currentData(),
                ca_bundle=self._ca_bundle(),
                notify=tuple(kind for kind, check in self.notify_checks.items()
                             if check.isChecked()),
            )
            if edited.service_tables() is not None:
                edited = edited.with_services(services)
            return self.source_tab.write(edited) if self.source_tab is not None else edited
        except ValueError:  # _Invalid, or the source tab's
            raise ValueError("; ".join(self.problems())) from None
