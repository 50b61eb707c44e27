"""Log in to a DSS server: server list, "Get token", masked token, ITK-SNAP session import."""

from __future__ import annotations

import contextlib
import html
from collections.abc import Callable

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from dss_console import connection
from dss_console.connection import LoggedIn
from dss_console.credentials import SessionStore
from dss_console.dss import DssError, LoginFailedError, TlsError, normalize_server_url
from dss_console.gui.tasks import run_blocking, spawn


class LoginPane(QWidget):
    loggedIn = Signal(object)  # LoggedIn
    loggedOut = Signal()
    logoutRequested = Signal()  # the window decides when (running jobs first)
    serversChanged = Signal(list)

    def __init__(self, store: SessionStore, servers: list[str],
                 verify: Callable[[], bool | str], parent: QWidget | None = None):
        super().__init__(parent)
        self.store = store
        self._verify = verify
        self.current: LoggedIn | None = None
        self._imported = False

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
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setObjectName("loginMessage")

        form = QFormLayout()
        server_row = QHBoxLayout()
        server_row.addWidget(self.server_box, 1)
        server_row.addWidget(self.remove_server_button)
        form.addRow("Server", server_row)
        token_row = QHBoxLayout()
        token_row.addWidget(self.token_edit, 1)
        token_row.addWidget(self.get_token_button)
        form.addRow("Token", token_row)
        buttons = QHBoxLayout()
        buttons.addWidget(self.login_button)
        buttons.addWidget(self.import_button)
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

        # Two pages, one visible: hidden widgets take no room (a QStackedWidget would keep
        # the height of the taller login form after logging in).
        self.login_page, self.who_page = login_page, who_page
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(login_page)
        layout.addWidget(who_page)
        who_page.setVisible(False)

        self.set_servers(servers)
        self.get_token_button.clicked.connect(self.open_token_page)
        self.remove_server_button.clicked.connect(self.remove_current_server)
        self.login_button.clicked.connect(self._login_clicked)
        self.token_edit.returnPressed.connect(self._login_clicked)
        self.import_button.clicked.connect(self._import_clicked)
        self.logout_button.clicked.connect(self._logout_clicked)

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
        if self.current is not None and self.current.client.server == text:
            self.say_error("Log out of this server before removing it.")
            return
        self.server_box.removeItem(index)
        with contextlib.suppress(ValueError, OSError):
            self.store.forget(normalize_server_url(text))
        self.serversChanged.emit(self.servers())

    def _remember_server(self, url: str) -> None:
        if self.server_box.findText(url) < 0:
            self.server_box.insertItem(0, url)
        self.server_box.setCurrentText(url)
        self.serversChanged.emit(self.servers())

    def open_token_page(self) -> None:
        try:
            url = normalize_server_url(self.server_text())
        except ValueError as exc:
            self.say_error(f"Check the server address: {exc}.")
            return
        QDesktopServices.openUrl(QUrl(url + "/token"))

    # -- messages ---------------------------------------------------------------------------
    def say_error(self, text: str) -> None:
        self.message.setStyleSheet("color: #c62828;")
        self.message.setText(text)

    def say(self, text: str) -> None:
        self.message.setStyleSheet("")
        self.message.setText(text)

    def _busy(self, busy: bool) -> None:
        for widget in (self.login_button, self.import_button, self.token_edit, self.server_box,
                       self.logout_button):
            widget.setEnabled(not busy)

    # -- actions (the buttons and the self-test share these coroutines) -----------------------
    def _login_clicked(self) -> None:
        spawn(self.login(self.server_text(), self.token_edit.text()))

    def _import_clicked(self) -> None:
        spawn(self.import_itksnap_session(self.server_text()))

    def _logout_clicked(self) -> None:
        self.logoutRequested.emit()

    async def login(self, server: str, token: str) -> bool:
        try:
            url = normalize_server_url(server)
        except ValueError as exc:
            self.say_error(f"Check the server address: {exc}.")
            return False
        if not token.strip():
            self.say_error("Paste a token first: 'Get token' opens the page that shows one.")
            return False
        self._busy(True)
        self.say(f"Logging in to {url}…")
        try:
            result = await run_blocking(connection.login_with_token, url, token, self.store,
                                        verify=self._verify())
        except LoginFailedError:
            self.say_error("The server refused this token: it is wrong, or it was already used "
                           "(a token works once). Get a new one with 'Get token'.")
            return False
        except TlsError as exc:
            self.say_error(f"Secure connection failed: {exc}. If the server uses a private "
                           "certificate authority, set its CA bundle in Settings.")
            return False
        except DssError as exc:
            self.say_error(str(exc))
            return False
        except Exception as exc:  # e.g. the session could not be stored: say so, in words
            self.say_error(f"Logging in failed: {exc}")
            return False
        finally:
            self._busy(False)
            self.token_edit.clear()  # a token works once; never keep it around
        self._remember_server(url)
        self._logged_in(result)
        return True

    async def resume(self, server: str) -> bool:
        """Resume the stored session for `server`, if it is still valid."""
        self._busy(True)
        try:
            result = await run_blocking(connection.resume_session, server, self.store,
                                        verify=self._verify())
        except DssError as exc:
            self.say_error(f"Could not resume the session: {exc}. Log in again, or try later.")
            return False
        except (ValueError, OSError):
            return False
        finally:
            self._busy(False)
        if result is None:
            self.say("Log in with a token from the server's token page.")
            return False
        self._logged_in(result)
        return True

    async def import_itksnap_session(self, server: str) -> bool:
        try:
            url = normalize_server_url(server)
        except ValueError as exc:
            self.say_error(f"Check the server address: {exc}.")
            return False
        session_id = await run_blocking(connection.itksnap_session_id, url)
        if not session_id:
            self.say_error(f"ITK-SNAP has no saved session for {url} (looked in ~/.alfabis).")
            return False
        self._busy(True)
        try:
            result = await run_blocking(connection.use_session, url, session_id, self.store,
                                        verify=self._verify())
        except DssError as exc:
            self.say_error(f"ITK-SNAP's session for {url} did not work: {exc}")
            return False
        finally:
            self._busy(False)
        self._remember_server(url)
        self._imported = True
        self._logged_in(result)
        return True

    async def logout(self) -> None:
        """End the session. One borrowed from ITK-SNAP is only forgotten here: ending it on
        the server would log ITK-SNAP out too."""
        current = self.current
        if current is None:
            return
        self._busy(True)
        try:
            if self._imported:
                await run_blocking(self.store.delete, current.client.server)
                current.client.close()
            else:
                await run_blocking(connection.logout, current, self.store)
        except (DssError, OSError):
            pass  # the local session is gone either way
        finally:
            self._busy(False)
            self._imported = False
        self.current = None
        self._show_page(False)
        self.say(f"Logged out of {current.client.server}.")
        self.loggedOut.emit()

    def _logged_in(self, result: LoggedIn) -> None:
        self.current = result
        self.who_label.setText(f"Logged in to <b>{html.escape(result.client.server)}</b> as "
                               f"<b>{html.escape(result.email)}</b>")
        self._show_page(True)
        self.say("")
        self.loggedIn.emit(result)
