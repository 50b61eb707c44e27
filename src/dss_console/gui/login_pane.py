"""Log in: to a DSS server (server list, "Get token", masked token, ITK-SNAP session import),
or as a vantage6 node (server, masked API key, the organization's private key file).

The chooser lists source *families* (plugins.SOURCE_FAMILIES: one kind of server in several
major versions, a plug-in each). A family shows its first member's form; Log in first asks
the server which member serves it (plugins.family_member, off the Qt thread) and, when that
member's form has fields not shown yet, swaps to its form (values kept by field name) and
asks for them before logging in. Nothing here names a source."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from dss_console import plugins
from dss_console.core.source_plugin import (
    ConnectError,
    LoginCall,
    LoginField,
    LoginForm,
    LoginInputError,
    LoginRefusedError,
    LoginStores,
    SourcePlugin,
    plugin_family,
)
from dss_console.credentials import SessionStore
from dss_console.gui import tasks
from dss_console.gui.copyable import CopyableTextDialog, show_copyable
from dss_console.gui.tasks import run_blocking, spawn

T = TypeVar("T")

STILL_WAITING_AFTER = 3.0  # seconds without a reply before the pane says it is still waiting


class LoginCancelled(Exception):
    """The operator pressed Cancel while a login call was in flight."""


def _drop_late(_result: object) -> None:
    """A late result that holds nothing to close (a call's LoginCall.late says if it does)."""


def _when_late(discard: Callable[[Any], None], call: Future[Any]) -> None:
    if call.cancelled() or call.exception() is not None:
        return  # a late failure needs no cleanup (the client closed itself)
    discard(call.result())


def _retrieved(future: asyncio.Future[Any]) -> None:
    # A result nobody awaits any more (after Cancel): fetch its exception, so asyncio does
    # not log "exception was never retrieved".
    if not future.cancelled():
        future.exception()


def _submit(call: Callable[[], object]) -> Future[object]:
    return tasks.executor().submit(call)


# The kinds of field with a widget of their own in the pane (the form's first field of each
# kind): the server box with its list, the masked token with "Get token", the file with
# Browse…. Any other field gets a plain line edit of its own, by name.
PRIMARY_KINDS = ("url", "secret", "file")


def source_families() -> dict[str, list[str]]:
    """The registered sources by family, in the registry's order (a family's first member
    is the one whose form the pane shows first)."""
    families: dict[str, list[str]] = {}
    for name in plugins.SOURCES:
        families.setdefault(plugin_family(plugins.source_plugin(name)), []).append(name)
    return families


def _is_primary(form: LoginForm, field: LoginField) -> bool:
    return field.kind in PRIMARY_KINDS and form.field(field.kind) is field


class LoginPane(QWidget):
    loggedIn = Signal(object)  # the credential the source's login returned
    loggedOut = Signal()
    logoutRequested = Signal()  # the window decides when (running jobs first)
    serversChanged = Signal(list)

    def __init__(self, store: SessionStore, servers: list[str],
                 verify: Callable[[], bool | str], parent: QWidget | None = None):
        super().__init__(parent)
        self.store = store  # the window's own: the servers remembered, the last login
        self._login_stores: dict[str, object] = {}  # each source's, made by its plug-in
        self._verify = verify
        self.current: object | None = None  # what the source's login returned
        # The server ended `current`'s session (logged out elsewhere, or expired): the form
        # is back for a new token, while the engine keeps the jobs it has.
        self.expired = False
        self._imported = False
        self.still_waiting_after = STILL_WAITING_AFTER
        self.url_dialog: CopyableTextDialog | None = None
        # Set while a login call is in flight; Cancel resolves it.
        self._cancel: asyncio.Future[None] | None = None
        self._stop: Callable[[], str] | None = None
        self._waiting_for = ""
        self._waiting_since = 0.0
        self._waiting_timer = QTimer(self)
        self._waiting_timer.setInterval(500)
        self._waiting_timer.timeout.connect(self._still_waiting)

        self.server_box = QComboBox()
        self.server_box.setEditable(True)
        self.server_box.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.server_box.lineEdit().setPlaceholderText("https://dss.itksnap.org")
        self.server_box.setToolTip("The DSS server to provide services on")
        self.remove_server_button = QPushButton("Remove")
        self.remove_server_button.setToolTip("Remove this server from the list")
        self.token_edit = QLineEdit()
        self.token_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.token_edit.setPlaceholderText("paste the one-time token")
        self.get_token_button = QPushButton("Get token")
        self.get_token_button.setToolTip("Open <server>/token in your browser")
        self.login_button = QPushButton("Log in")
        self.login_button.setDefault(True)
        self.import_button = QPushButton("Use ITK-SNAP's session")
        self.import_button.setToolTip("Log in with the session ITK-SNAP's itksnap-wt keeps in "
                                      "~/.alfabis (read only)")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop waiting for the server (a reply that comes later "
                                      "is ignored)")
        self.cancel_button.setVisible(False)
        self.source_box = QComboBox()
        self._families = source_families()
        firsts = [plugins.source_plugin(members[0]) for members in self._families.values()]
        for family, first in zip(self._families, firsts, strict=True):
            self.source_box.addItem(first.title, family)
        self.source_box.setToolTip("Where the work comes from: " + ", or ".join(
            first.login_form.about for first in firsts))
        # The member of the chosen family whose form is shown (its first, until the server
        # says it is another's).
        self._shown = firsts[0].name
        # Fields beyond the pane's own widgets (PRIMARY_KINDS), by name: made on first use,
        # kept (with their values) while another form hides them.
        self._extra_edits: dict[str, QLineEdit] = {}
        self.key_file_edit = QLineEdit()
        self.key_file_edit.setPlaceholderText("the organization's private key (PEM), for an "
                                              "encrypted collaboration")
        self.key_file_button = QPushButton("Browse…")
        self.message = QLabel()
        self.message.setWordWrap(True)
        # Plain text: a message may quote a web page the server sent, which must not be
        # rendered; selectable, so a long error can be copied into a support request.
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.setObjectName("loginMessage")

        form = QFormLayout()
        form.addRow("Source", self.source_box)
        server_row = QHBoxLayout()
        server_row.addWidget(self.server_box, 1)
        server_row.addWidget(self.remove_server_button)
        form.addRow("Server", server_row)
        token_row = QHBoxLayout()
        token_row.addWidget(self.token_edit, 1)
        token_row.addWidget(self.get_token_button)
        form.addRow("Token", token_row)
        key_row = QHBoxLayout()
        key_row.addWidget(self.key_file_edit, 1)
        key_row.addWidget(self.key_file_button)
        form.addRow("Private key", key_row)
        self._form, self._key_row, self._token_row = form, key_row, token_row
        self._server_row = server_row
        buttons = QHBoxLayout()
        buttons.addWidget(self.login_button)
        buttons.addWidget(self.import_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        form.addRow("", buttons)
        form.addRow("", self.message)
        login_page = QWidget()
        login_page.setLayout(form)

        self.who_label = QLabel()
        self.who_label.setWordWrap(True)
        self.logout_button = QPushButton("Log out")
        who_row = QHBoxLayout()
        who_row.addWidget(self.who_label, 1)
        who_row.addWidget(self.logout_button)
        who_page = QWidget()
        who_page.setLayout(who_row)

        # Two pages, one visible (both while a session is expired): hidden widgets take no
        # room (a QStackedWidget would keep the height of the taller login form).
        self.login_page, self.who_page = login_page, who_page
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(who_page)
        layout.addWidget(login_page)
        who_page.setVisible(False)

        self.set_servers(servers)
        self._show_source()
        self.source_box.currentIndexChanged.connect(self._family_chosen)
        self.key_file_button.clicked.connect(self._browse_key_file)
        self.get_token_button.clicked.connect(self.open_token_page)
        self.remove_server_button.clicked.connect(self.remove_current_server)
        self.login_button.clicked.connect(self._login_clicked)
        self.token_edit.returnPressed.connect(self._login_clicked)
        self.import_button.clicked.connect(self._import_clicked)
        self.cancel_button.clicked.connect(self.cancel)
        self.logout_button.clicked.connect(self._logout_clicked)

    # -- the source ---------------------------------------------------------------------------
    def source_kind(self) -> str:
        """The source whose form is shown (a member of the chosen family)."""
        return self._shown

    def family(self) -> str:
        """The chosen family (the chooser's item)."""
        return str(self.source_box.currentData())

    def family_members(self) -> list[str]:
        """The sources of the chosen family, its first first (one for a source alone)."""
        return list(self._families[self.family()])

    def set_source_kind(self, kind: str) -> None:
        """Choose a source (its family in the chooser, its form shown) or a family (its
        first member's form)."""
        family = plugin_family(plugins.source_plugin(kind)) if kind in plugins.SOURCES \
            else kind
        if family not in self._families:
            family = next(iter(self._families))
        self.source_box.setCurrentIndex(self.source_box.findData(family))
        members = self._families[family]
        if self._shown != kind and kind in members:
            self._shown = kind
            self._show_source()

    def _family_chosen(self) -> None:
        self._shown = self._families[self.family()][0]
        self._show_source()

    def plugin(self) -> SourcePlugin:
        """The plug-in of the source whose form is shown."""
        return plugins.source_plugin(self.source_kind())

    def login_form(self) -> LoginForm:
        """The chosen source's form."""
        return self.plugin().login_form

    def login_store(self, plugin: SourcePlugin) -> object:
        """Where ``plugin``'s source keeps its logins, next to the window's own store (the
        same directory, the keyring when that store has one); made once per source."""
        if plugin.name not in self._login_stores:
            where = LoginStores(self.store.directory, self.store.uses_keyring)
            self._login_stores[plugin.name] = plugin.login_store(where)
        return self._login_stores[plugin.name]

    def keep_logins_in(self, directory: Path, *, use_keyring: bool) -> None:
        """Keep every login in ``directory`` from now on (a sandbox's throw-away one)."""
        self.store = SessionStore(directory, use_keyring=use_keyring)
        self._login_stores.clear()

    def form_values(self) -> dict[str, str]:
        """The shown form's values, by field name (a secret as typed, the rest stripped)."""
        widgets = {"url": self.server_text(), "secret": self.token_edit.text(),
                   "file": self.key_file_edit.text().strip()}
        form = self.login_form()
        values = {}
        for field in form.fields:
            if _is_primary(form, field):
                values[field.name] = widgets[field.kind]
            else:
                text = self._extra_edits[field.name].text()
                values[field.name] = text if field.kind == "secret" else text.strip()
        return values

    def _fill(self, values: Mapping[str, str]) -> None:
        """Put ``values`` (by field name) into the shown form's widgets."""
        form = self.login_form()
        for field in form.fields:
            if field.name not in values:
                continue
            value = values[field.name]
            if not _is_primary(form, field):
                self._extra_edits[field.name].setText(value)
            elif field.kind == "url":
                self.server_box.setCurrentText(value)
            elif field.kind == "secret":
                self.token_edit.setText(value)
            else:
                self.key_file_edit.setText(value)

    def _extra_edit(self, field: LoginField, after: QWidget | QHBoxLayout | None) -> QLineEdit:
        """The line edit of a field without a widget of the pane's own, in the row after
        ``after`` (made on first use)."""
        edit = self._extra_edits.get(field.name)
        if edit is not None:
            return edit
        edit = QLineEdit()
        edit.setObjectName(f"loginField_{field.name}")
        if field.kind == "secret":
            edit.setEchoMode(QLineEdit.EchoMode.Password)
        edit.returnPressed.connect(self._login_clicked)
        row = self._form.rowCount() - 2  # before the buttons and the message
        if isinstance(after, QHBoxLayout):
            row = self._form.getLayoutPosition(after)[0] + 1
        elif after is not None:
            row = self._form.getWidgetPosition(after)[0] + 1
        self._form.insertRow(row, field.label, edit)
        self._extra_edits[field.name] = edit
        return edit

    def _show_source(self) -> None:
        """The shown source's form: one row per field it declares (the first url: the
        server box, the first secret: the masked field, the first file: the key file; any
        other field a line edit of its own), with its words."""
        form = self.login_form()
        shown: set[str] = set()
        after: QWidget | QHBoxLayout | None = None
        primary_rows = {"url": self._server_row, "secret": self._token_row,
                        "file": self._key_row}
        for field in form.fields:
            if _is_primary(form, field):
                after = primary_rows[field.kind]
                continue
            edit = self._extra_edit(field, after)
            label = self._form.labelForField(edit)
            if isinstance(label, QLabel):
                label.setText(field.label)
            edit.setPlaceholderText(field.placeholder)
            edit.setToolTip(field.tip)
            shown.add(field.name)
            after = edit
        for name, edit in self._extra_edits.items():
            self._form.setRowVisible(edit, name in shown)
        rows: list[tuple[str, QWidget | QHBoxLayout, QLineEdit]] = [
            ("url", self._server_row, self.server_box.lineEdit()),
            ("secret", self._token_row, self.token_edit),
            ("file", self._key_row, self.key_file_edit)]
        for kind, row, edit in rows:
            field = form.field(kind)
            self._form.setRowVisible(row, field is not None)
            if field is None:
                continue
            label = self._form.labelForField(row)
            if isinstance(label, QLabel):
                label.setText(field.label)
            edit.setPlaceholderText(field.placeholder)
            if kind == "url":
                self.server_box.setToolTip(field.tip)
            else:
                edit.setToolTip(field.tip)
        self.get_token_button.setVisible("token_page" in form.helpers)
        self.import_button.setVisible("itksnap_session" in form.helpers)
        self.remove_server_button.setVisible("server_list" in form.helpers)

    def _browse_key_file(self) -> None:
        field = self.login_form().field("file")
        if field is None:
            return
        path, _ = QFileDialog.getOpenFileName(self, field.tip or field.label,
                                              self.key_file_edit.text(),
                                              field.file_filter or "All files (*)")
        if path:
            self.key_file_edit.setText(path)

    def _show_page(self, logged_in: bool) -> None:
        self.login_page.setVisible(not logged_in)
        self.who_page.setVisible(logged_in)

    # -- server list ------------------------------------------------------------------------
    def set_servers(self, servers: list[str], current: str | None = None) -> None:
        self.server_box.clear()
        self.server_box.addItems(list(dict.fromkeys(servers)))
        if current:
            self.server_box.setCurrentText(current)

    def servers(self) -> list[str]:
        return [self.server_box.itemText(i) for i in range(self.server_box.count())]

    def server_text(self) -> str:
        return self.server_box.currentText().strip()

    def remove_current_server(self) -> None:
        """Take the server off the list and forget its stored session (not the current one)."""
        text = self.server_text()
        index = self.server_box.findText(text)
        if index < 0:
            return
        current = self.current
        if current is not None and \
                plugins.source_of(current).server(current) in (text, text.rstrip("/")):
            self.say_error("Log out of this server before removing it.")
            return
        self.server_box.removeItem(index)
        with contextlib.suppress(ValueError, OSError):
            self.store.forget(self.plugin().server_url(text))
        self.serversChanged.emit(self.servers())

    def _remember_server(self, url: str) -> None:
        if self.server_box.findText(url) < 0:
            self.server_box.insertItem(0, url)
        self.server_box.setCurrentText(url)
        self.serversChanged.emit(self.servers())

    def open_token_page(self) -> None:
        try:
            url = self.plugin().server_url(self.server_text()) + "/token"
        except ValueError as exc:
            self.say_error(f"Check the server address: {exc}.")
            return
        # False when no browser can be started (a bare server, ssh without a desktop): the
        # address must then be shown, or the button would do nothing at all.
        if not QDesktopServices.openUrl(QUrl(url)):
            self.url_dialog = show_copyable(
                self, "Get token",
                "No web browser could be opened here. Open this address in a browser (on any "
                "machine), log in there, and paste the token it shows:", url)

    # -- messages ---------------------------------------------------------------------------
    def say_error(self, text: str) -> None:
        self.message.setStyleSheet("color: #c62828;")
        self._set_message(text)

    def say(self, text: str) -> None:
        self.message.setStyleSheet("")
        self._set_message(text)

    def _set_message(self, text: str) -> None:
        self.message.setText(text)
        # The whole text also as a tooltip: the label wraps, but a narrow pane may still
        # be shorter than a long error.
        self.message.setToolTip(text if len(text) > 80 else "")

    def _busy(self, busy: bool) -> None:
        for widget in (self.login_button, self.import_button, self.token_edit, self.server_box,
                       self.remove_server_button, self.logout_button, self.source_box,
                       self.key_file_edit, self.key_file_button, *self._extra_edits.values()):
            widget.setEnabled(not busy)
        self.cancel_button.setVisible(busy)
        self.cancel_button.setEnabled(busy)
        if self.expired:
            # A new session for the expired one's server: its jobs are waiting on it.
            self.server_box.setEnabled(False)
            self.remove_server_button.setEnabled(False)

    @property
    def busy(self) -> bool:
        return self._cancel is not None

    # -- a cancellable call -----------------------------------------------------------------
    async def _wait(self, url: str, call: Future[T], *,
                    stop: Callable[[], str] | None = None,
                    discard: Callable[[Any], None] = _drop_late) -> T:
        """Wait for a blocking login call running off the Qt thread, with Cancel and a
        "still waiting" note. Cancel stops *waiting* at once (an HTTP request in flight
        cannot be interrupted): `stop` tells the call itself (and returns what the operator
        should know); without it, whatever the call returns later goes to `discard`. Either
        way a late reply never logs in.
        """
        loop = asyncio.get_running_loop()
        waiting = asyncio.wrap_future(call)
        waiting.add_done_callback(_retrieved)
        cancel: asyncio.Future[None] = loop.create_future()
        self._cancel, self._stop = cancel, stop
        self._busy(True)
        self._waiting_for, self._waiting_since = url, time.monotonic()
        self._waiting_timer.start()
        try:
            await asyncio.wait({waiting, cancel}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the task itself was cancelled (the app quits)
            if stop is not None:
                stop()
            else:
                call.add_done_callback(lambda done: _when_late(discard, done))
            raise
        finally:
            # Only the call that is still current restores the form: after a Cancel the
            # operator may already have started the next one.
            if self._cancel is cancel:
                self._cancel = self._stop = None
                self._waiting_timer.stop()
                self._busy(False)
        if cancel.done():  # Cancel wins, even over a reply that arrived in the same moment
            if stop is None:
                call.add_done_callback(lambda done: _when_late(discard, done))
            raise LoginCancelled
        return call.result()

    def cancel(self) -> None:
        """Stop waiting for the login call in flight; the form is back at once."""
        cancel, stop = self._cancel, self._stop
        if cancel is None or cancel.done():
            return
        self._cancel = self._stop = None
        self._waiting_timer.stop()
        note = stop() if stop is not None else ""
        cancel.set_result(None)
        self._busy(False)
        self.say(f"Stopped waiting for {self._waiting_for}. {note}".strip())

    def _still_waiting(self) -> None:
        waited = time.monotonic() - self._waiting_since
        if waited >= self.still_waiting_after:
            self.say(f"Still waiting for {self._waiting_for}… ({waited:.0f} s; Cancel stops "
                     "waiting)")

    # -- actions (the buttons and the self-test share these coroutines) -----------------------
    def _login_clicked(self) -> None:
        if self.busy:
            return  # Return in the token field while a login is on its way
        spawn(self.log_in(self.source_kind(), self.form_values()))

    def _import_clicked(self) -> None:
        spawn(self.import_itksnap_session(self.server_text()))

    def _logout_clicked(self) -> None:
        self.logoutRequested.emit()

    async def log_in(self, source: str, values: Mapping[str, str]) -> bool:
        """Log in to a source with its form's values (by field name). In a family of
        several members the server is asked first which member serves it; a member whose
        form has fields not shown yet gets its form, and the operator fills them in."""
        self.set_source_kind(source)
        plugin = self.plugin()
        if len(self._families[self.family()]) > 1:
            member = await self._member_for(plugin, values)
            if member is None:
                return False
            if member.name != plugin.name and not self._swap_form(member, values):
                return False
            plugin = member
        try:
            call = plugin.start_login(values, self.login_store(plugin), self._verify(),
                                      _submit)
        except LoginInputError as exc:
            self.say_error(str(exc))
            return False
        self.say(call.saying)
        try:
            result = await self._wait_for(call)
        except LoginCancelled:
            return False
        except Exception as exc:
            said = plugin.login_error(exc)
            if said is not None:
                self.say_error(said)
            return False
        finally:
            # A token works once, a key is stored: never in a widget.
            self.token_edit.clear()
            for field in plugin.login_form.fields:
                if field.kind == "secret" and field.name in self._extra_edits:
                    self._extra_edits[field.name].clear()
        server = plugin.server(result)
        if "server_list" in plugin.login_form.helpers:
            self._remember_server(server)  # the URL used (maybe http:// after all)
        else:
            # Not added to the DSS server list (the settings' `servers`): a v6 node's server
            # is remembered with its keys, and the next start logs the node in again.
            self.server_box.setCurrentText(server)
        self._imported = False
        self._logged_in(plugin, self._renewed(plugin, result))
        return True

    async def _member_for(self, shown: SourcePlugin,
                          values: Mapping[str, str]) -> SourcePlugin | None:
        """The family member that serves the form's server (asked off the Qt thread, with
        Cancel); None when none does or the operator cancelled, said in the message."""
        url_field = shown.login_form.field("url")
        server = values.get(url_field.name, "") if url_field is not None else ""
        try:
            shown.server_url(server)
        except ValueError as exc:
            self.say_error(f"Check the server address: {exc}.")
            return None
        family, verify = self.family(), self._verify()
        self.say(f"Asking {server} which version it runs…")
        try:
            member = await self._wait(server, _submit(
                lambda: plugins.family_member(family, server, verify)))
        except LoginCancelled:
            return None
        except (ConnectError, ValueError, OSError) as exc:
            text = str(exc)
            self.say_error(f"{text[:1].upper()}{text[1:]}.")
            return None
        if not isinstance(member, SourcePlugin):
            self.say_error(f"{server} runs a version this console cannot log in to here.")
            return None
        return member

    def _swap_form(self, member: SourcePlugin, values: Mapping[str, str]) -> bool:
        """Show ``member``'s form with ``values`` kept by field name. False (and the
        fields named) when its form has fields the shown one had not, still empty."""
        before = {field.name for field in self.login_form().fields}
        self._shown = member.name
        self._show_source()
        self._fill(values)
        new = [field for field in member.login_form.fields
               if field.name not in before and not values.get(field.name, "").strip()]
        if not new:
            return True
        labels = [field.label for field in new]
        listed = ", ".join(labels[:-1]) + " and " + labels[-1] if len(labels) > 1 \
            else labels[0]
        # The member's title without its note ("… (API key)"): what logs in here.
        kind = member.title.split(" (", 1)[0]
        self.say(f"This server takes a {kind} login: also fill in {listed}, then press "
                 "Log in.")
        widget = self._extra_edits.get(new[0].name)
        if widget is not None:
            widget.setFocus()
        return False

    async def resume(self, server: str) -> bool:
        """Log in again with what the chosen source's last login stored (DSS: the session
        for `server`, if it is still valid); in a family, each member is asked in turn for
        a login of its own."""
        nothing_stored = ""
        for name in self._families[self.family()]:
            plugin = plugins.source_plugin(name)
            call = plugin.start_resume(server, self.login_store(plugin), self._verify(),
                                       _submit)
            self.say(call.saying)
            try:
                result = await self._wait_for(call)
            except LoginCancelled:
                return False
            except Exception as exc:
                said = plugin.resume_error(exc)
                if said is None:
                    raise
                if said:
                    self.say_error(said)
                else:
                    self.say("")
                return False
            if result is not None:
                break
            nothing_stored = nothing_stored or call.nothing_stored
        else:
            self.say(nothing_stored)
            return False
        if self._shown != plugin.name:
            self._shown = plugin.name
            self._show_source()
        if "server_list" not in plugin.login_form.helpers:
            self.server_box.setCurrentText(plugin.server(result))
        self._logged_in(plugin, result)
        return True

    async def _wait_for(self, call: LoginCall) -> object:
        late = call.late or _drop_late
        return await self._wait(call.waiting_for, call.future, stop=call.stop, discard=late)

    async def import_itksnap_session(self, server: str) -> bool:
        """Log in with ITK-SNAP's session for `server` (the form's "itksnap_session")."""
        plugin = self.plugin()
        try:
            call = await run_blocking(plugin.start_borrowed, server, self.login_store(plugin),
                                      self._verify(), _submit)
        except LoginInputError as exc:
            self.say_error(str(exc))
            return False
        self.say(call.saying)
        try:
            result = await self._wait_for(call)
        except LoginCancelled:
            return False
        except LoginRefusedError as exc:
            self.say_error(str(exc))
            return False
        url = plugin.server(result)
        self._remember_server(url)
        self._imported = True
        self._logged_in(plugin, self._renewed(plugin, result))
        return True

    async def logout(self) -> None:
        """End the session (the plug-in forgets the stored credential)."""
        current = self.current
        if current is None:
            return
        self._busy(True)
        self.cancel_button.setVisible(False)  # logging out is not cancellable
        try:
            plugin = plugins.source_of(current)
            said = await run_blocking(plugin.logout, current, self.login_store(plugin),
                                      borrowed=self._imported)
        finally:
            self._imported = False
            self.expired = False
            self._busy(False)
        self.current = None
        self._show_page(False)
        self.say(said)
        self.loggedOut.emit()

    # -- the session ended elsewhere ----------------------------------------------------------
    def session_ended(self, detail: str) -> None:
        """The server no longer accepts the current session (a logout from the CLI or the
        web page, or it expired): show the form for a new token, keep the rest."""
        current = self.current
        if current is None or not plugins.source_of(current).renews_credential:
            return  # a node's key does not expire; the window says what the server said
        plugin = plugins.source_of(current)
        first = not self.expired
        self.expired = True
        self.who_label.setText(plugin.who(current, expired=True))
        self.who_label.setToolTip(detail)
        self.login_page.setVisible(True)
        self.who_page.setVisible(True)
        if self.busy:
            return  # a new login is already on its way: leave its form and message alone
        self.server_box.setCurrentText(plugin.server(current))
        self._busy(False)  # locks the server box to this session's server
        self.say_error("The server ended this session (a logout elsewhere, or it expired). "
                       "Jobs keep running here and what they report waits: paste a new token "
                       "(Get token) and Log in to go on, or Log out.")
        if first:
            self.token_edit.setFocus()

    def _renewed(self, plugin: SourcePlugin, result: object) -> object:
        """After an expired session: a new session for the same server and account goes
        into the client the engine already uses, so its jobs and queued calls carry on."""
        old = self.current
        if (not self.expired or old is None or old is result or not plugin.renews_credential
                or not plugin.owns(old) or not plugin.renew(old, result)):
            return result
        spawn(run_blocking(plugin.close, result))  # the new client's connection only
        return old

    def _logged_in(self, plugin: SourcePlugin, result: object) -> None:
        self.current = result
        self.expired = False
        self.who_label.setText(plugin.who(result))
        self.who_label.setToolTip("")
        self._busy(False)
        self._show_page(True)
        self.say("")
        self.loggedIn.emit(result)
