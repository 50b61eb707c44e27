"""The DSS source as the composition roots see it (core.source_plugin.SourcePlugin).

Imported whenever the command line is built (the worker's options and help): the client and
the source are imported only by ``connect``.
"""

from __future__ import annotations

import argparse
import contextlib
import html
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, cast

from dss_console.core.presentation import unbroken_html
from dss_console.core.source_plugin import (
    ConnectError,
    LoginCall,
    LoginField,
    LoginForm,
    LoginInputError,
    LoginRefusedError,
    LoginStores,
    Submit,
    WorkerTexts,
)

if TYPE_CHECKING:
    from dss_console.connection import LoggedIn
    from dss_console.core.interfaces import Source
    from dss_console.core.presentation import Words
    from dss_console.credentials import SessionStore
    from dss_console.engine.settings import Settings

__all__ = ["PLUGIN", "DssPlugin"]


class DssPlugin:
    name = "dss"
    title = "DSS server (token)"
    worker = WorkerTexts(
        help="",  # the worker's own description is in a DSS server's words
        choice="a DSS server's tickets",
        role="of provider {provider}",
        service="service {name} ({key:.10})",
        not_taken="claimed",
        no_command="no service has a command configured: nothing will be claimed (use "
                   "--command SERVICE=TEMPLATE or the settings file)",
        blocked="ticket {id} is blocked and stays claimed: {reason}. Fix the command and "
                "start the worker again, or fail it: dss-console pro fail {id} MESSAGE",
        note_unprovided=True,
    )
    login_form = LoginForm(
        fields=(LoginField("server", "Server", "url", "https://dss.itksnap.org",
                           tip="The DSS server to provide services on"),
                LoginField("token", "Token", "secret", "paste the one-time token")),
        helpers=frozenset({"server_list", "token_page", "itksnap_session"}),
        about="a DSS server's tickets",
    )
    renews_credential = True  # a session expires; a new one carries the engine on

    def owns(self, credential: object) -> bool:
        from dss_console.connection import LoggedIn

        return isinstance(credential, LoggedIn)

    def words(self) -> Words:
        from dss_console.sources.dss.presentation import PRESENTATION

        return PRESENTATION.words

    def add_worker_arguments(self, parser: argparse.ArgumentParser) -> None:
        return None  # --server and --ca-bundle are every verb's

    def connect(self, options: argparse.Namespace, settings: Settings,
                handover: str | None) -> Source:
        """A client on the console's session (the handover line), else on the session
        `dss-console login` stored for the server."""
        from dss_console.commands.context import logged_in_client, verify_option
        from dss_console.commands.errors import CliError
        from dss_console.dss import DssClient
        from dss_console.sources.dss.source import DssSource

        if not options.server and settings.server:
            options.server = settings.server
        if handover is None:
            try:
                client = logged_in_client(options)
            except CliError as exc:
                raise ConnectError(str(exc), exc.code) from None
            return DssSource(client)
        session_id = handover.strip()
        if not session_id or not options.server:
            raise ConnectError("--for-console needs --server and the session on stdin", code=2)
        return DssSource(DssClient(options.server, session_id=session_id,
                                   verify=verify_option(options)))

    def handover_settings(self, handover: str) -> str | None:
        return None  # the window pushes them once attached: a DSS poll claims nothing itself

    def login_again(self, source: Source) -> str:
        return f"dss-console login --server {source.key} --token-stdin"

    def handover(self, credential: object, settings: str) -> str:
        return _logged_in(credential).client.transport.session_id or ""

    def engine_argv(self, credential: object) -> Sequence[str]:
        return ()

    def engine_key(self, credential: object) -> str:
        return _logged_in(credential).client.server

    def server(self, credential: object) -> str:
        return _logged_in(credential).client.server

    server_setting = True

    def close(self, credential: object) -> None:
        _logged_in(credential).client.close()

    def required_tags(self, credential: object, service: str) -> tuple[str, ...] | None:
        from dss_console.dss import DssError

        try:
            return _logged_in(credential).client.services.detail(service).required_tags
        except DssError as exc:
            raise ConnectError(str(exc)) from None

    # -- the window's login pane ----------------------------------------------------------
    def login_store(self, where: LoginStores) -> object:
        from dss_console.credentials import SessionStore

        return SessionStore(where.directory, use_keyring=where.use_keyring)

    def server_url(self, text: str) -> str:
        from dss_console.dss import normalize_server_url

        return normalize_server_url(text)

    def start_login(self, values: Mapping[str, str], store: object,
                    verify: bool | str, submit: Submit) -> LoginCall:
        from dss_console import connection

        server, token = values.get("server", ""), values.get("token", "")
        try:
            url = self.server_url(server)
        except ValueError as exc:
            raise LoginInputError(f"Check the server address: {exc}.") from None
        if not token.strip():
            raise LoginInputError("Paste a token first: 'Get token' opens the page that shows "
                                  "one.")
        # Its own thread, which knows whether the token went out: a session that arrives
        # after Cancel is logged out there and never stored. The address goes as typed, so
        # a scheme-less local address can fall back to http://.
        attempt = connection.start_login(server.strip(), token, _sessions(store),
                                           verify=verify)

        def stop() -> str:
            attempt.cancel()
            with contextlib.suppress(Exception):
                error = attempt.future.exception(timeout=0)
                if isinstance(error, connection.LoginCancelledError):
                    return f"{error}."
            return ""

        return LoginCall(cast("Future[object]", attempt.future), url, f"Logging in to {url}…",
                         stop=stop)

    def start_resume(self, server: str, store: object, verify: bool | str,
                     submit: Submit) -> LoginCall:
        from dss_console import connection

        if not server.strip():  # no server logged in to before: nothing to resume
            nothing: Future[object] = Future()
            nothing.set_result(None)
            return LoginCall(nothing, "", "")
        sessions = _sessions(store)
        return LoginCall(
            submit(lambda: connection.resume_session(server, sessions, verify=verify)),
            server, f"Resuming the session with {server}…", late=_close_late,
            nothing_stored="Log in with a token from the server's token page.")

    def start_borrowed(self, server: str, store: object, verify: bool | str,
                       submit: Submit) -> LoginCall:
        from dss_console import connection
        from dss_console.dss import DssError

        try:
            url = self.server_url(server)
        except ValueError as exc:
            raise LoginInputError(f"Check the server address: {exc}.") from None
        session_id = connection.itksnap_session_id(url)
        if not session_id:
            raise LoginInputError(f"ITK-SNAP has no saved session for {url} (looked in "
                                  "~/.alfabis).")

        sessions = _sessions(store)

        def use() -> LoggedIn:
            try:
                return connection.use_session(url, session_id, sessions, verify=verify)
            except DssError as exc:
                raise LoginRefusedError(f"ITK-SNAP's session for {url} did not work: "
                                        f"{exc}") from exc

        return LoginCall(submit(use), url, f"Checking ITK-SNAP's session with {url}…",
                         late=_close_late)

    def login_error(self, error: Exception) -> str | None:
        from dss_console.connection import LoginCancelledError
        from dss_console.dss import DssError, LoginFailedError, TlsError

        if isinstance(error, LoginCancelledError):
            return None
        if isinstance(error, LoginFailedError):
            return ("The server refused this token: it is wrong, or it was already used (a "
                    "token works once). Get a new one with 'Get token'.")
        if isinstance(error, TlsError):
            return (f"Secure connection failed: {error}. If the server uses a private "
                    "certificate authority, set its CA bundle in Settings.")
        if isinstance(error, DssError):
            return str(error)
        # e.g. the session could not be stored: say so, in words
        return f"Logging in failed: {error}"

    def resume_error(self, error: Exception) -> str | None:
        from dss_console.dss import DssError

        if isinstance(error, DssError):
            return f"Could not resume the session: {error}. Log in again, or try later."
        if isinstance(error, (ValueError, OSError)):
            return ""
        return None

    def who(self, credential: object, *, expired: bool = False) -> str:
        login = _logged_in(credential)
        server, email = unbroken_html(login.client.server), html.escape(login.email)
        if expired:
            return f"Session expired on <b>{server}</b> (was <b>{email}</b>)"
        return f"Logged in to <b>{server}</b> as <b>{email}</b>"

    def renew(self, old: object, new: object) -> bool:
        before, after = _logged_in(old), _logged_in(new)
        if before.client.server != after.client.server or before.email != after.email:
            return False
        before.client.transport.session_id = after.client.session_id
        return True

    def logout(self, credential: object, store: object, *, borrowed: bool) -> str:
        """One borrowed from ITK-SNAP is only forgotten here: ending it on the server would
        log ITK-SNAP out too."""
        from dss_console import connection
        from dss_console.dss import DssError

        login = _logged_in(credential)
        try:
            if borrowed:
                _sessions(store).delete(login.client.server)
                login.client.close()
            else:
                connection.logout(login, _sessions(store))
        except (DssError, OSError):
            pass  # the local session is gone either way
        return f"Logged out of {login.client.server}."

    def store_note(self, store: object) -> str | None:
        return _sessions(store).fallback_note


def _sessions(store: object) -> SessionStore:
    from dss_console.credentials import SessionStore

    # Exactly: a vantage6 node store is a SessionStore too (same keyring and files code).
    if type(store) is not SessionStore:
        raise TypeError(f"the DSS plug-in keeps its sessions in a SessionStore, not in a "
                        f"{type(store).__name__}")
    return store


def _close_late(result: object) -> None:
    """A resumed session that came back after Cancel: keep it stored (it is the user's),
    just drop this connection to it. Runs on the call's own thread."""
    if result is not None:
        _logged_in(result).client.close()


def _logged_in(credential: object) -> LoggedIn:
    from dss_console.connection import LoggedIn

    if not isinstance(credential, LoggedIn):
        raise TypeError(f"not a DSS login: {type(credential).__name__}")
    return credential


PLUGIN = DssPlugin()
