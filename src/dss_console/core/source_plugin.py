"""What a composition root asks of a source plug-in (docs/plugin-plan.md §2, "Registry and
composition roots").

The roots (``dss-console worker`` and the window's engine session) pick a plug-in by its name
from ``dss_console.plugins.SOURCES`` and ask it everything that differs between sources: the
worker's own options, how to connect from the console's handover line or the stored
credentials, what that one stdin line holds, the key its engine serves under, and the words
the worker prints. A root never asks which source it has.

A credential is what the plug-in's own login returned (a DSS ``LoggedIn``, a vantage6
``NodeLogin``): the roots hold it without looking inside, so it is typed ``object`` here and
each plug-in checks it is its own.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from dss_console.core.interfaces import Source
    from dss_console.core.presentation import Words
    from dss_console.engine.settings import Settings

__all__ = [
    "ConnectError",
    "LoginCall",
    "LoginField",
    "LoginForm",
    "LoginInputError",
    "LoginRefusedError",
    "LoginStores",
    "SourcePlugin",
    "Submit",
    "WorkerTexts",
    "plugin_family",
    "plugin_server_major",
    "plugin_serves",
]


class ConnectError(Exception):
    """A source could not be connected; the message says why, in the operator's words.
    ``code`` is the exit code of a command line (2: how it was called)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class WorkerTexts:
    """The headless worker's lines that differ by source (``str.format`` templates)."""

    help: str             # the source's section of `dss-console worker --help`
    choice: str           # its --source choice explained: "a DSS server's tickets"
    role: str             # who the worker is on the server: "of provider {provider}"
    service: str          # a service in a line: {name}, {key} ("service {name} ({key:.10})")
    not_taken: str        # a service without a command is not ... ("claimed")
    no_command: str       # said when no service has a command
    blocked: str          # a blocked job at exit: {id}, {reason}
    # Note configured services the account does not provide (DSS: a typo in a name).
    note_unprovided: bool = False


@dataclass(frozen=True)
class LoginField:
    """One input of a source's login form, as the window renders it."""

    name: str                                      # the value's key: "server", "token"
    label: str
    kind: Literal["url", "text", "secret", "file"]  # secret: masked; file: a path, Browse…
    placeholder: str = ""
    tip: str = ""
    file_filter: str = ""                          # file: the Browse dialog's filter


@dataclass(frozen=True)
class LoginForm:
    """What the window asks before it logs in to a source (before any engine exists)."""

    fields: tuple[LoginField, ...]
    about: str = ""  # the chooser's tip: where the work comes from ("a DSS server's tickets")
    # The window's own helpers this source's login uses: "server_list" (servers remembered
    # and removable), "token_page" (Get token opens <server>/token), "itksnap_session" (log
    # in with ITK-SNAP's stored session).
    helpers: frozenset[str] = frozenset()

    def field(self, kind: str) -> LoginField | None:
        """The form's first field of this kind (None: it has none)."""
        return next((f for f in self.fields if f.kind == kind), None)


# Runs a blocking call on the window's worker threads (login calls never block its loop).
Submit = Callable[[Callable[[], object]], "Future[object]"]


class LoginInputError(ValueError):
    """The login form's values cannot go out; the message says what to fix, in words."""


class LoginRefusedError(Exception):
    """The server did not take a borrowed login; the message says so, in words."""


@dataclass(frozen=True)
class LoginStores:
    """Where the window keeps logins: the keyring, else private files in ``directory``. Each
    source keeps its own kind of credential there, in the store its plug-in makes
    (:meth:`SourcePlugin.login_store`); the window makes one per source and keeps it."""

    directory: Path | None  # None: the platform's data dir
    use_keyring: bool


@dataclass(frozen=True)
class LoginCall:
    """A login (or a resume) on its way, off the window's thread. Its future's result is
    the credential, or None for a resume with nothing stored."""

    future: Future[object]
    waiting_for: str  # the window's "Still waiting for …": the server's address
    saying: str       # what the window says meanwhile: "Logging in to …"
    # Cancel tells the call itself and returns what the operator should know (DSS: whether
    # the token went out). None: a credential that arrives after Cancel goes to `late`.
    stop: Callable[[], str] | None = None
    late: Callable[[object], None] | None = None
    nothing_stored: str = ""  # a resume's result None: what the window says instead


@runtime_checkable
class SourcePlugin(Protocol):
    """One kind of server the engine takes work from, as the roots see it."""

    @property
    def name(self) -> str: ...  # its key in plugins.SOURCES and its --source choice

    @property
    def title(self) -> str: ...  # the login form's choice: "DSS server (token)"

    @property
    def worker(self) -> WorkerTexts: ...

    @property
    def login_form(self) -> LoginForm: ...

    @property
    def renews_credential(self) -> bool:
        """A new login for the same account is handed to the running engine (DSS: a new
        session for the expired one); else a login is a new engine (a v6 node's key)."""
        ...

    def owns(self, credential: object) -> bool:
        """Whether a credential is this source's login."""
        ...

    def words(self) -> Words:
        """The source's nouns (its presentation's), for what the worker prints."""
        ...

    def add_worker_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The worker options only this source has (v6: --node)."""
        ...

    def connect(self, options: argparse.Namespace, settings: Settings,
                handover: str | None) -> Source:
        """The source the worker runs: from the console's ``handover`` line (the engine of
        a window), else from the credentials stored by this source's login. ConnectError
        says why not."""
        ...

    def handover_settings(self, handover: str) -> str | None:
        """Settings (TOML) the console sent along with the credential, when this source
        needs them before its first poll; None: they arrive over the channel."""
        ...

    def login_again(self, source: Source) -> str:
        """The command that logs in again once the server no longer takes the credential."""
        ...

    def handover(self, credential: object, settings: str) -> str:
        """The one line the engine of a window reads on its stdin (never on its command
        line): the credential, and ``settings`` (TOML) when this source wants them."""
        ...

    def engine_argv(self, credential: object) -> Sequence[str]:
        """Worker options the window's engine is started with (no secrets)."""
        ...

    def engine_key(self, credential: object) -> str:
        """What the engine for this credential serves under (Source.key)."""
        ...

    def server(self, credential: object) -> str:
        """The server this credential is for (the engine's --server)."""
        ...

    @property
    def server_setting(self) -> bool:
        """A login sets the settings' ``server`` (DSS: the worker's default --server); a
        v6 node's server is stored with its keys instead."""
        ...

    def close(self, credential: object) -> None:
        """Drop the window's own connection of a credential it no longer uses (the stored
        login stays). Blocking."""
        ...

    def required_tags(self, credential: object, service: str) -> tuple[str, ...] | None:
        """The input tags a service (by its key) requires, for the inputs view; None: this
        source's services declare none. Blocking; ConnectError: the server did not say."""
        ...


    # -- the window's login pane (docs/plugin-plan.md §2: the login actions) -----------------
    # ``store`` below is what :meth:`login_store` made: the plug-in checks it is its own.
    def login_store(self, where: LoginStores) -> object:
        """Where this source keeps its logins (a DSS session per server, a node's keys)."""
        ...

    def server_url(self, text: str) -> str:
        """The server address as typed, normalised (ValueError says what is wrong)."""
        ...

    def start_login(self, values: Mapping[str, str], store: object,
                    verify: bool | str, submit: Submit) -> LoginCall:
        """Log in with the login form's values (by LoginField.name) and store the credential
        for the worker and the next start. LoginInputError: a value to fix first."""
        ...

    def start_resume(self, server: str, store: object, verify: bool | str,
                     submit: Submit) -> LoginCall:
        """Log in again with what an earlier login stored (DSS: for ``server``)."""
        ...

    def start_borrowed(self, server: str, store: object, verify: bool | str,
                       submit: Submit) -> LoginCall:
        """Log in with the session another program keeps for ``server`` (the form's
        "itksnap_session" helper: ITK-SNAP's), stored here too. Blocking (reads that
        program's files). LoginInputError: there is none; the call fails with
        LoginRefusedError when the server does not take it."""
        ...

    def login_error(self, error: Exception) -> str | None:
        """A failed login in the operator's words; None: it was cancelled (nothing to say)."""
        ...

    def resume_error(self, error: Exception) -> str | None:
        """A failed resume in the operator's words ("": say nothing); None: not this
        source's error (it propagates)."""
        ...

    def who(self, credential: object, *, expired: bool = False) -> str:
        """The pane's line for a logged-in credential (rich text, escaped); ``expired``: the
        server ended its session."""
        ...

    def renew(self, old: object, new: object) -> bool:
        """After the server ended ``old``'s session: when ``new`` is the same account, move
        its session into ``old`` (whose client the engine uses) and say True; the window then
        closes ``new``."""
        ...

    def logout(self, credential: object, store: object, *, borrowed: bool) -> str:
        """Log out and forget the stored credential (``borrowed``: ITK-SNAP's session, only
        forgotten here); says what happened. Blocking; the local login is gone either way."""
        ...

    def store_note(self, store: object) -> str | None:
        """Where this source's credentials went when the keyring could not take them."""
        ...


# -- families: one kind of server in several major versions (docs/v6-5x-plan.md §2) ----------
# Optional members of a plug-in, read with these defaults so a source with one generation
# (DSS) declares none of them:
#   family: str                           the family it belongs to (default: its name)
#   server_major: str | None              the server major version it serves (None: any)
#   serves(server: str, verify) -> bool   whether the server at this address is its version
#                                         (blocking; a short probe; default: True)


def plugin_family(plugin: object) -> str:
    """The family a plug-in belongs to (its own name unless it says otherwise)."""
    family = getattr(plugin, "family", None)
    return family if isinstance(family, str) and family else str(getattr(plugin, "name", ""))


def plugin_server_major(plugin: object) -> str | None:
    """The server major version a plug-in serves (None: any)."""
    major = getattr(plugin, "server_major", None)
    return major if isinstance(major, str) else None


def plugin_serves(plugin: object, server: str, verify: bool | str) -> bool:
    """Whether the plug-in serves the server at ``server`` (a probe; True without one)."""
    serves = getattr(plugin, "serves", None)
    return bool(serves(server, verify)) if callable(serves) else True
