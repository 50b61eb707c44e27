"""One service's command in the Settings dialog: its fields, their checks in words, and
the small widgets and parsers the dialog's other tabs share."""

from __future__ import annotations

import html
import os
import re
import shlex
import shutil
from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from dss_console import plugins
from dss_console.core.executor import Executor, OptionField, OptionValue
from dss_console.engine.settings import (
    CONSOLE_COMMAND_NICE,
    ServiceCommand,
    SettingsError,
    format_duration,
    parse_duration,
    validate_command_template,
)

__all__ = ["PLACEHOLDER_HELP", "executor_choices"]

PLACEHOLDER_HELP: tuple[tuple[str, str], ...] = (
    ("ticket", "the ticket number"),
    ("service", "the service's name"),
    ("service_hash", "the service's 40-hex hash"),
    ("workdir", "the ticket's private work dir (the command's working directory)"),
    ("inputs", "the folder with the ticket's files ({workdir}/input)"),
    ("workspace", "the input ITK-SNAP workspace (.itksnap) in {inputs}"),
    ("result", "where the command must write the result workspace "
               "({workdir}/result.itksnap)"),
)

_COMMAND_HELP = (
    "The command is split into words as a shell would split it, but no shell runs (write "
    "<code>bash -c '…'</code> for one). It reports with lines on standard output: "
    "<code>@dss progress 0.5</code>, <code>@dss info \"text\"</code> (also warning, error), "
    "<code>@dss attach \"description\" file.png image/png</code>; or by running "
    "<code>\"$DSS_HOOK\"</code> with the same words (ASHS's order: set "
    "<code>ASHS_HOOK_SCRIPT</code> to <code>${DSS_HOOK}</code> below). Everything else it "
    "prints goes to the job's log. Details: README, “How a service command works”."
)


def executor_choices() -> tuple[type[Executor], ...]:
    """The executors a service may run on, as the registry lists them (their options and
    words are declared by each executor class)."""
    return tuple(plugins.executor_class(name) for name in plugins.EXECUTORS)


_HASH_RE = re.compile(r"[0-9a-fA-F]{40}")
_URL_RE = re.compile(r"https?://[^\s/]+")  # what the settings loader accepts
_PROBLEM_STYLE = "color: #b00000;"
_NOTE_STYLE = "color: #8a5a00;"


class _Invalid(ValueError):
    """A field's value is unusable; the message says why, in words."""


def _duration(text: str, *, empty_ok: bool) -> float | None:
    if not text.strip():
        if empty_ok:
            return None
        raise _Invalid("enter a duration, e.g. 5s, 1m or 5")
    try:
        seconds = parse_duration(text)
    except SettingsError as exc:
        raise _Invalid(str(exc)) from None
    if seconds <= 0:
        raise _Invalid("must be longer than 0 seconds")
    return seconds


def _url(text: str) -> str:
    text = text.strip()
    if not _URL_RE.match(text):
        raise _Invalid(f"{text!r} is not an http:// or https:// URL")
    return text


def _words(text: str, executor: type[Executor], option: OptionField) -> list[str]:
    """A "words" option's line split into words as the settings file stores them, checked
    by its executor."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise _Invalid(f"cannot split the options into words: {exc}") from None
    try:
        executor.check_option(option.name, words)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None
    return words


def _words_note(text: str, executor: type[Executor], option: OptionField) -> str | None:
    try:
        words = shlex.split(text)
    except ValueError:
        return None
    return executor.option_note(option.name, words)


def _program_note(template: str) -> str | None:
    """A hint when the program is not where this computer would look (not an error: the
    worker may run on another machine)."""
    try:
        words = shlex.split(template)
    except ValueError:
        return None
    if not words or "{" in words[0]:
        return None
    program = words[0]
    if program.startswith("~"):
        return "~ is not expanded (no shell runs the command): write the full path"
    if os.sep in program or (os.altsep and os.altsep in program):
        if os.path.isabs(program) and not os.path.exists(program):
            return f"{program} does not exist on this computer"
        return None
    if shutil.which(program) is None:
        return f"{program} is not on this computer's PATH (fine if the worker runs elsewhere)"
    return None


class _Message(QLabel):
    """The line in words under a field: a problem (red; OK stays disabled) or a note."""

    def __init__(self) -> None:
        super().__init__()
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.hide()

    def show_text(self, problem: str | None, note: str | None = None) -> None:
        text = problem or note
        self.setText(text or "")
        self.setStyleSheet(_PROBLEM_STYLE if problem else _NOTE_STYLE)
        self.setVisible(bool(text))


def _stacked(*widgets: QWidget) -> QWidget:
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(2)
    for widget in widgets:
        layout.addWidget(widget)
    return box


def _row(*widgets: QWidget, stretch_first: bool = True) -> QWidget:
    box = QWidget()
    layout = QHBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    for index, widget in enumerate(widgets):
        layout.addWidget(widget, 1 if stretch_first and index == 0 else 0)
    return box


def _lines_high(edit: QPlainTextEdit, lines: int) -> None:
    metrics = edit.fontMetrics()
    margins = edit.contentsMargins()
    edit.setFixedHeight(metrics.lineSpacing() * lines + margins.top() + margins.bottom()
                        + 2 * edit.frameWidth() + 8)


# -- one service's command ------------------------------------------------------------------


_AS_INHERITED = "as inherited"


def _policy_text(value: OptionValue) -> str:
    if isinstance(value, list):
        return shlex.join(value)
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _number_or_text(text: str) -> OptionValue:
    """A "value" row as the settings file keeps it: 2 and 0.5 are numbers, "8G" stays."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


class _PolicyRows:
    """The isolation and limit rows (each executor's ``policy_fields``, one row per key):
    empty means "not set here", so the service inherits the file's [defaults] (shown)."""

    def __init__(self, executors: dict[str, type[Executor]]) -> None:
        self.fields: dict[str, OptionField] = {}
        for executor in executors.values():
            for field in executor.policy_fields:
                self.fields.setdefault(field.name, field)
        self._executors = executors
        self.widgets: dict[str, QComboBox | QLineEdit] = {}
        self.messages: dict[str, _Message] = {}
        for name, field in self.fields.items():
            widget: QComboBox | QLineEdit
            if field.kind in ("choice", "switch"):
                widget = QComboBox()
                widget.addItem(_AS_INHERITED, None)
                for choice in (field.choices if field.kind == "choice" else ("on", "off")):
                    widget.addItem(choice, choice)
            else:
                widget = QLineEdit()
            widget.setToolTip(field.tip)
            widget.setAccessibleName(field.words)
            self.widgets[name] = widget
            self.messages[name] = _Message()
        self._inherited: dict[str, OptionValue] = {}

    def add_to(self, form: QFormLayout) -> None:
        for name, widget in self.widgets.items():
            label = QLabel(f"{self.fields[name].label}:")
            label.setBuddy(widget)
            form.addRow(label, _stacked(widget, self.messages[name]))

    def connect(self, slot: Callable[[], None]) -> None:
        for widget in self.widgets.values():
            if isinstance(widget, QComboBox):
                widget.currentIndexChanged.connect(lambda _index: slot())
            else:
                widget.textChanged.connect(lambda _text: slot())

    def load(self, options: dict[str, OptionValue], inherited: dict[str, OptionValue]) -> None:
        self._inherited = dict(inherited)
        for name, widget in self.widgets.items():
            value, field = options.get(name), self.fields[name]
            shown = (f"{_AS_INHERITED}: {_policy_text(inherited[name])}" if name in inherited
                     else f"{_AS_INHERITED} (not set)")
            if isinstance(widget, QComboBox):
                widget.setItemText(0, shown)
                index = widget.findData(_policy_text(value)) if value is not None else 0
                widget.setCurrentIndex(max(0, index))
            else:
                widget.setPlaceholderText(shown if name in inherited else
                                          f"not set (e.g. {field.placeholder})"
                                          if field.placeholder else "not set")
                widget.setText(_policy_text(value) if value is not None else "")

    def _value(self, name: str) -> OptionValue | None:
        widget, field = self.widgets[name], self.fields[name]
        if isinstance(widget, QComboBox):
            data = widget.currentData()
            if data is None:
                return None
            return data == "on" if field.kind == "switch" else str(data)
        text = widget.text().strip()
        if not text:
            return None
        if field.kind == "words":
            try:
                return shlex.split(text)
            except ValueError as exc:
                raise _Invalid(f"cannot split it into words: {exc}") from None
        return _number_or_text(text)

    def values(self, executor: str) -> dict[str, OptionValue]:
        """The keys set here (raises _Invalid for the first unusable one)."""
        found = {}
        for name in self.widgets:
            value = self._value(name)
            if value is not None:
                self._check(executor, name, value)
                found[name] = value
        return found

    def _check(self, executor: str, name: str, value: OptionValue) -> None:
        owner = self._executors[executor]
        if name not in owner.policy_keys:
            return  # kept for another executor; this one does not read it
        try:
            owner.check_policy_value(name, value)
        except ValueError as exc:
            raise _Invalid(str(exc)) from None

    def problems(self, executor: str) -> list[str]:
        """What keeps the rows from being saved, shown under each; enables the rows the
        chosen executor reads (another's stay editable while they have a problem)."""
        found = []
        reads = self._executors[executor].policy_keys
        for name, widget in self.widgets.items():
            try:
                value = self._value(name)
                if value is not None:
                    self._check(executor, name, value)
            except _Invalid as exc:
                self.messages[name].show_text(str(exc))
                found.append(f"{self.fields[name].words}: {exc}")
                widget.setEnabled(True)
                continue
            self.messages[name].show_text(None)
            widget.setEnabled(name in reads)
        return found


class _ServiceEditor(QWidget):
    """The command fields of one service; a service without a command shows a page that
    offers to add one. Whether it has a command is which page is showing."""

    changed = Signal()
    test_requested = Signal()
    remove_requested = Signal()

    def __init__(self, key: str, *, name: str | None, githash: str | None, provided: bool,
                 command: ServiceCommand | None, note: str | None) -> None:
        super().__init__()
        self.key = key  # the settings key its command is saved under
        self.name = name  # the provided service's name, if provided
        self.githash = githash
        self.provided = provided
        self.note = note
        fixed = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)

        title = QLabel(f"<b>{html.escape(self.display_name)}</b>")
        title.setTextFormat(Qt.TextFormat.RichText)
        about = []
        if githash:
            about.append(f"hash {githash}")
        if name is not None and key != name:
            about.append(f"saved under the key {key}")
        if note:
            about.append(note)
        subtitle = QLabel(" · ".join(about))
        subtitle.setWordWrap(True)
        subtitle.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        # Page 0: no command.
        none_page = QWidget()
        none_layout = QVBoxLayout(none_page)
        none_layout.addWidget(QLabel("No command for this service: its tickets are not run "
                                     "on this computer."))
        self.add_button = QPushButton("&Add a command")
        self.add_button.clicked.connect(self.add_command)
        none_layout.addWidget(self.add_button, 0, Qt.AlignmentFlag.AlignLeft)
        none_layout.addStretch(1)

        # Page 1: the command's fields.
        self.command_edit = QPlainTextEdit()
        self.command_edit.setFont(fixed)
        self.command_edit.setTabChangesFocus(True)
        self.command_edit.setPlaceholderText("e.g. bash /opt/mytool/run.sh {workspace} {result}")
        self.command_edit.setAccessibleName("Command template")
        _lines_high(self.command_edit, 3)
        self.command_message = _Message()

        placeholders = QGroupBox("Placeholders (click to insert at the cursor)")
        grid = QGridLayout(placeholders)
        self.placeholder_buttons: dict[str, QPushButton] = {}
        for row, (placeholder, meaning) in enumerate(PLACEHOLDER_HELP):
            button = QPushButton("{" + placeholder + "}")
            button.setFont(fixed)
            button.setToolTip(f"Insert {{{placeholder}}}: {meaning}")
            button.clicked.connect(lambda _=False, p=placeholder: self.insert_placeholder(p))
            self.placeholder_buttons[placeholder] = button
            explanation = QLabel(meaning)
            explanation.setWordWrap(True)
            grid.addWidget(button, row, 0)
            grid.addWidget(explanation, row, 1)
        grid.setColumnStretch(1, 1)
        help_label = QLabel(_COMMAND_HELP)
        help_label.setWordWrap(True)
        help_label.setTextFormat(Qt.TextFormat.RichText)
        grid.addWidget(help_label, len(PLACEHOLDER_HELP), 0, 1, 2)

        self.timeout_edit = QLineEdit()
        self.timeout_edit.setPlaceholderText("none (e.g. 6h, 90m, 1h30m or seconds)")
        self.timeout_message = _Message()
        self.max_jobs_spin = QSpinBox()
        self.max_jobs_spin.setRange(0, 10_000)
        self.max_jobs_spin.setSpecialValueText("no limit")
        # -1 stands for "not set": the engine's default, which depends on who starts it.
        self.nice_spin = QSpinBox()
        self.nice_spin.setRange(-1, 19)
        self.nice_spin.setSpecialValueText(
            f"default ({CONSOLE_COMMAND_NICE} when the console starts the engine, "
            "0 in a headless worker)")
        self.nice_spin.setToolTip("CPU priority of the command: 0 is normal, 19 the lowest. "
                                  "A higher value keeps the window responsive on a busy "
                                  "machine.")
        self.cwd_edit = QLineEdit()
        self.cwd_edit.setPlaceholderText("the ticket's work dir (relative paths are taken "
                                         "inside it)")
        self.auto_check = QCheckBox("Take part in &auto mode")
        self.itksnap_wt_check = QCheckBox("Provide &itksnap-wt to the command (dss-console wt)")
        self.itksnap_wt_check.setToolTip(
            "Puts an itksnap-wt first on the command's PATH, so an existing provider script "
            "that calls itksnap-wt runs unchanged, without ITK-SNAP installed")
        self.executor_combo = QComboBox()
        self._executors = {executor.name: executor for executor in executor_choices()}
        for executor in self._executors.values():
            self.executor_combo.addItem(executor.title, executor.name)
        self.executor_combo.setToolTip("Where each ticket's command runs")
        # Each executor's help and option rows, by executor and option name; every
        # executor's rows are there, only the chosen one's enabled.
        self.executor_help: dict[str, QLabel] = {}
        self.option_edits: dict[str, QLineEdit] = {}
        self.option_messages: dict[str, _Message] = {}
        self._option_owner: dict[str, type[Executor]] = {}
        for executor in self._executors.values():
            if executor.help:
                help_label = QLabel(executor.help)
                help_label.setWordWrap(True)
                help_label.setTextFormat(Qt.TextFormat.RichText)
                self.executor_help[executor.name] = help_label
            for option in executor.option_fields:
                edit = QLineEdit()
                edit.setFont(fixed)
                edit.setPlaceholderText(option.placeholder)
                edit.setAccessibleName(option.words)
                edit.setToolTip(option.tip)
                self.option_edits[option.name] = edit
                self.option_messages[option.name] = _Message()
                self._option_owner[option.name] = executor

        self.policy = _PolicyRows(self._executors)

        self.env_table = QTableWidget(0, 2)
        self.env_table.setHorizontalHeaderLabels(["Name", "Value"])
        self.env_table.horizontalHeader().setSectionResizeMode(
            0, QHeaderView.ResizeMode.ResizeToContents)
        self.env_table.horizontalHeader().setStretchLastSection(True)
        self.env_table.verticalHeader().hide()
        self.env_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.env_table.setMinimumHeight(110)
        self.env_table.setAccessibleName("Environment variables")
        self.env_add_button = QPushButton("Add &variable")
        self.env_add_button.clicked.connect(self.add_env_row)
        self.env_remove_button = QPushButton("Remove variable")
        self.env_remove_button.clicked.connect(self.remove_env_row)
        self.env_message = _Message()
        env_buttons = QHBoxLayout()
        env_buttons.addWidget(self.env_add_button)
        env_buttons.addWidget(self.env_remove_button)
        env_buttons.addStretch(1)
        env_box = QWidget()
        env_layout = QVBoxLayout(env_box)
        env_layout.setContentsMargins(0, 0, 0, 0)
        env_layout.addWidget(self.env_table)
        env_layout.addLayout(env_buttons)
        env_layout.addWidget(self.env_message)

        self.test_button = QPushButton("&Test on a local workspace…")
        self.test_button.setToolTip("Run this command, as edited here, on a copy of an "
                                    "ITK-SNAP workspace, without a server")
        self.test_button.clicked.connect(lambda: self.test_requested.emit())
        self.remove_button = QPushButton("Remove co&mmand")
        self.remove_button.clicked.connect(lambda: self.remove_requested.emit())

        form_page = QWidget()
        form = QFormLayout(form_page)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        command_label = QLabel("&Command:")
        command_label.setBuddy(self.command_edit)
        form.addRow(command_label, _stacked(self.command_edit, self.command_message))
        form.addRow(placeholders)
        form.addRow(self._buddy("E&xecutor:", self.executor_combo),
                    _stacked(self.executor_combo, *self.executor_help.values()))
        for name, edit in self.option_edits.items():
            form.addRow(self._buddy(f"{self._field(name).label}:", edit),
                        _stacked(edit, self.option_messages[name]))
        self.policy.add_to(form)
        form.addRow(self._buddy("T&imeout:", self.timeout_edit),
                    _stacked(self.timeout_edit, self.timeout_message))
        form.addRow(self._buddy("Max &jobs at once:", self.max_jobs_spin), self.max_jobs_spin)
        form.addRow(self._buddy("CPU &priority (nice):", self.nice_spin), self.nice_spin)
        form.addRow(self._buddy("&Working directory:", self.cwd_edit), self.cwd_edit)
        form.addRow("", self.auto_check)
        form.addRow("", self.itksnap_wt_check)
        form.addRow(self._buddy("&Environment:", self.env_table), env_box)
        form.addRow(_row(self.test_button, self.remove_button, stretch_first=False))

        self.pages = QStackedWidget()
        self.pages.addWidget(none_page)
        self.pages.addWidget(form_page)

        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(subtitle)
        layout.addWidget(self.pages, 1)

        self._load(command)
        for signal in (self.command_edit.textChanged, self.timeout_edit.textChanged,
                       self.max_jobs_spin.valueChanged, self.nice_spin.valueChanged,
                       self.cwd_edit.textChanged, self.executor_combo.currentIndexChanged,
                       *(edit.textChanged for edit in self.option_edits.values()),
                       self.auto_check.toggled, self.itksnap_wt_check.toggled,
                       self.env_table.itemChanged):
            signal.connect(self.changed)
        self.pages.currentChanged.connect(self.changed)
        self.policy.connect(self.changed.emit)

    @staticmethod
    def _buddy(text: str, widget: QWidget) -> QLabel:
        label = QLabel(text)
        label.setBuddy(widget)
        return label

    # -- state ------------------------------------------------------------------------------
    @property
    def display_name(self) -> str:
        return self.name if self.name is not None else self.key

    @property
    def configured(self) -> bool:
        return self.pages.currentIndex() == 1

    def _load(self, command: ServiceCommand | None) -> None:
        self.command_edit.setPlainText(command.command if command else "")
        timeout = command.timeout if command else None
        self.timeout_edit.setText(format_duration(timeout) if timeout is not None else "")
        self.max_jobs_spin.setValue((command.max_jobs or 0) if command else 0)
        nice = command.nice if command else None
        self.nice_spin.setValue(-1 if nice is None else nice)
        self.cwd_edit.setText((command.cwd or "") if command else "")
        self.auto_check.setChecked(command.auto if command else True)
        self.itksnap_wt_check.setChecked(command.itksnap_wt if command else False)
        # Not edited here (yet): kept as the file says. The isolation and limit keys
        # (isolation, network, memory, ...) are options no executor row edits: kept as well,
        # with what the command inherits from [defaults].
        self._send_output_tail = command.send_output_tail if command else None
        self._kept_options = {name: value for name, value in
                              (command.options if command else {}).items()
                              if name not in self.option_edits
                              and name not in self.policy.fields}
        self._inherited = dict(command.inherited) if command else {}
        self.policy.load(command.options if command else {}, self._inherited)
        executor = command.executor if command else "local"
        self.executor_combo.setCurrentIndex(max(0, self.executor_combo.findData(executor)))
        options = command.options if command else {}
        for name, edit in self.option_edits.items():
            value = options.get(name)
            edit.setText(shlex.join(value) if isinstance(value, list) else "")
            edit.setCursorPosition(0)  # a long line shows its first options
        self.env_table.setRowCount(0)
        for name, value in (command.env if command else {}).items():
            self._append_env(name, value)
        self.pages.setCurrentIndex(1 if command is not None else 0)

    def add_command(self) -> None:
        self.pages.setCurrentIndex(1)
        self.command_edit.setFocus()

    def clear_command(self) -> None:
        """Back to "no command" with empty fields."""
        self._load(None)

    def insert_placeholder(self, placeholder: str) -> None:
        self.command_edit.insertPlainText("{" + placeholder + "}")
        self.command_edit.setFocus()

    def _append_env(self, name: str, value: str) -> int:
        row = self.env_table.rowCount()
        self.env_table.insertRow(row)
        self.env_table.setItem(row, 0, QTableWidgetItem(name))
        self.env_table.setItem(row, 1, QTableWidgetItem(value))
        return row

    def add_env_row(self) -> None:
        row = self._append_env("", "")
        self.env_table.setCurrentCell(row, 0)
        self.env_table.editItem(self.env_table.item(row, 0))
        self.changed.emit()

    def remove_env_row(self) -> None:
        rows = sorted({index.row() for index in self.env_table.selectedIndexes()}
                      or ({self.env_table.currentRow()} - {-1}), reverse=True)
        for row in rows:
            self.env_table.removeRow(row)
        if rows:
            self.changed.emit()

    # -- reading the fields -----------------------------------------------------------------
    def _command_text(self) -> str:
        text = self.command_edit.toPlainText()
        try:
            validate_command_template(text)
        except SettingsError as exc:
            raise _Invalid(str(exc)) from None
        return text

    def _timeout(self) -> float | None:
        return _duration(self.timeout_edit.text(), empty_ok=True)

    @property
    def executor(self) -> str:
        return self.executor_combo.currentData()

    def _option(self, name: str) -> list[str]:
        owner = self._option_owner[name]
        return _words(self.option_edits[name].text(), owner, self._field(name))

    def _option_note(self, name: str) -> str | None:
        owner = self._option_owner[name]
        if owner.name != self.executor:
            return None
        return _words_note(self.option_edits[name].text(), owner, self._field(name))

    def _field(self, name: str) -> OptionField:
        return next(o for o in self._option_owner[name].option_fields if o.name == name)

    def _options(self) -> dict[str, OptionValue]:
        # An empty field is the default: left out, as the settings file reads it.
        return {name: value for name in self.option_edits if (value := self._option(name))}

    def _env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for row in range(self.env_table.rowCount()):
            name_item, value_item = self.env_table.item(row, 0), self.env_table.item(row, 1)
            name = name_item.text().strip() if name_item else ""
            value = value_item.text() if value_item else ""
            if not name and not value:
                continue  # a row just added and not filled in yet
            if not name:
                raise _Invalid(f"row {row + 1}: the name is empty")
            if "=" in name or "\x00" in name:
                raise _Invalid(f"{name!r} is not a valid variable name (no '=')")
            if name in env:
                raise _Invalid(f"{name} is set twice")
            env[name] = value
        return env

    def problems(self) -> list[str]:
        """What keeps this command from being saved, in words; updates the messages."""
        found: list[str] = []
        if not self.configured:
            return found
        checks: list[tuple[str, Callable[[], object], _Message,
                           Callable[[], str | None] | None]] = [
            ("command", self._command_text, self.command_message,
             lambda: _program_note(self.command_edit.toPlainText()))]
        for name in self.option_edits:
            checks.append((self._field(name).words, lambda name=name: self._option(name),
                           self.option_messages[name],
                           lambda name=name: self._option_note(name)))
        checks += [("timeout", self._timeout, self.timeout_message, None),
                   ("environment", self._env, self.env_message, None)]
        for label, parse, message, note in checks:
            try:
                parse()
            except _Invalid as exc:
                message.show_text(str(exc))
                found.append(f"{label}: {exc}")
            else:
                message.show_text(None, note() if note else None)
        found += self.policy.problems(self.executor)
        for name, help_label in self.executor_help.items():
            help_label.setVisible(name == self.executor)
        # Another executor's options are kept (switching back finds them again); a field
        # stays editable while it has a problem, which would otherwise block OK with no way
        # to fix it.
        for name, edit in self.option_edits.items():
            words = self._field(name).words
            edit.setEnabled(self._option_owner[name].name == self.executor
                            or any(p.startswith(f"{words}: ") for p in found))
        self.test_button.setEnabled(not found)
        dry_run_note = self._executors[self.executor].dry_run_note
        self.test_button.setToolTip(
            "Run this command, as edited here, on a copy of an ITK-SNAP workspace, without a "
            "server" + (f" ({dry_run_note})" if dry_run_note else ""))
        return found

    def service_command(self) -> ServiceCommand:
        """The command as edited; raises _Invalid (see problems())."""
        cwd = self.cwd_edit.text().strip()
        return ServiceCommand(key=self.key, command=self._command_text(),
                              timeout=self._timeout(),
                              max_jobs=self.max_jobs_spin.value() or None,
                              nice=None if self.nice_spin.value() < 0 else self.nice_spin.value(),
                              cwd=cwd or None, env=self._env(),
                              auto=self.auto_check.isChecked(), executor=self.executor,
                              itksnap_wt=self.itksnap_wt_check.isChecked(),
                              options={**getattr(self, "_kept_options", {}),
                                       **self._options(),
                                       **self.policy.values(self.executor)},
                              send_output_tail=getattr(self, "_send_output_tail", None),
                              inherited=dict(getattr(self, "_inherited", {})))
