"""The DSS source as the composition roots see it (core.source_plugin.SourcePlugin).

Imported whenever the command line is built (the worker's options and help): the client and
the source are imported only by ``connect``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from dss_console.core.source_plugin import ConnectError, LoginField, LoginForm, WorkerTexts

if TYPE_CHECKING:
    from dss_console.connection import LoggedIn
    from dss_console.core.interfaces import Source
    from dss_console.core.presentation import Words
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


def _logged_in(credential: object) -> LoggedIn:
    from dss_console.connection import LoggedIn

    if not isinstance(credential, LoggedIn):
        raise TypeError(f"not a DSS login: {type(credential).__name__}")
    return credential


PLUGIN = DssPlugin()
