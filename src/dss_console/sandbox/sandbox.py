"""A complete throw-away DSS deployment on 127.0.0.1: the sandbox and the test fixture.

Two server processes share one SQLite store and datastore:

* the **public** server requires login, exactly like a production server; the console,
  the worker and the tests' provider client talk to it;
* the **admin** server runs with ``--noauth`` (every request is the sysadmin
  ``test@example.com``) and is used only for seeding and for the end-user side of tickets.

Because both run on 127.0.0.1 and cookies are not port-specific, a client must never send
a cookie from the admin server to the public one: the sessions table is shared, so an admin
session cookie would be logged in as the sysadmin on the public server too.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from dss_console.sandbox.demo import (
    DEMO_PROVIDER,
    DEMO_SERVICE_LONGDESC,
    DEMO_SERVICE_NAME,
    DEMO_SERVICE_SHORTDESC,
    DEMO_SERVICE_TAGS,
    DEMO_SERVICE_VERSION,
    DEMO_USER,
    make_demo_ticket_files,
)
from dss_console.sandbox.seed import (
    SandboxAdmin,
    make_service_repo,
    raise_ticket_limit,
    user_token,
)
from dss_console.sandbox.seed import add_user as _add_user_row
from dss_console.sandbox.server import (
    DssServerProcess,
    SandboxError,
    sqlite_path_for,
)


class Sandbox:
    """Start with ``start()`` or ``with Sandbox() as sb:``; ``stop()`` ends both servers.

    ``data_dir=None`` uses a fresh temporary directory, removed on stop; a given directory
    is kept and may be reused (the demo provider and service are re-registered
    idempotently, and start() tops the queue up to ``tickets`` ready demo tickets).
    ``port`` is the public server's port (0: any free port).
    """

    def __init__(
        self,
        data_dir: Path | str | None = None,
        port: int = 0,
        tickets: int = 3,
        *,
        timeout: float = 60.0,
    ) -> None:
        if tickets < 0:
            raise ValueError("tickets must be >= 0")
        self._requested_dir = Path(data_dir) if data_dir is not None else None
        self._requested_port = port
        self._requested_tickets = tickets
        self._timeout = timeout
        self._data_dir: Path | None = None
        self._owns_dir = False
        self._admin_server = DssServerProcess("admin")
        self._public_server = DssServerProcess("public")
        self._admin: SandboxAdmin | None = None
        self._service_hash: str | None = None
        self._ticket_ids: list[int] = []
        self._lock = threading.Lock()
        self._started = False
        self._dir_lock: IO[str] | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Start both servers and seed the demo provider, service and tickets."""
        if self._started:
            raise SandboxError("sandbox already started")
        if shutil.which("git") is None:
            # The DSS server registers services by cloning a git repository.
            raise SandboxError("the sandbox needs git: install it (e.g. apt-get install git)")
        self._started = True
        try:
            if self._requested_dir is None:
                self._data_dir = Path(tempfile.mkdtemp(prefix="dss-sandbox-"))
                self._owns_dir = True
            else:
                self._data_dir = self._requested_dir.resolve()
                self._data_dir.mkdir(parents=True, exist_ok=True)
                # Two sandboxes on one store would each run the schema script (DROP TABLE)
                # and seed over the other's server.
                self._dir_lock = lock_data_dir(self._data_dir)

            # Sequential on purpose: on a new store each server runs the schema script,
            # which begins with DROP TABLE; the admin server must create the store (and
            # its test@example.com user) before the public one opens it.
            self._admin_server.start(self._data_dir, 0, noauth=True, timeout=self._timeout)
            # The public server's start-up overlaps with the seeding below.
            self._public_server.start(
                self._data_dir, self._requested_port, noauth=False, wait=False
            )
            self._admin = SandboxAdmin(self._admin_server.url)

            raise_ticket_limit(self.sqlite_path)
            self._admin.create_provider(DEMO_PROVIDER)
            self._admin.add_provider_user(DEMO_PROVIDER, DEMO_USER)
            self._service_hash = self.register_service(
                DEMO_SERVICE_NAME,
                DEMO_SERVICE_VERSION,
                DEMO_SERVICE_TAGS,
                shortdesc=DEMO_SERVICE_SHORTDESC,
                longdesc=DEMO_SERVICE_LONGDESC,
            )
            existing = self._ready_tickets(self._service_hash)
            self._ticket_ids.extend(existing)
            for _ in range(max(0, self._requested_tickets - len(existing))):
                self.add_ticket()

            self._public_server.wait_ready(self._timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop both servers; remove the data dir if the sandbox created it. Idempotent."""
        # Closed first: an idle keep-alive connection makes the server's shutdown wait.
        if self._admin is not None:
            self._admin.close()
        # Both shut down in parallel; stop() then waits for each (and kills if needed).
        self._public_server.terminate()
        self._admin_server.terminate()
        try:
            self._public_server.stop()
        finally:
            try:
                self._admin_server.stop()
            finally:
                if self._owns_dir and self._data_dir is not None:
                    shutil.rmtree(self._data_dir, ignore_errors=True)
                    self._owns_dir = False
                if self._dir_lock is not None:
                    self._dir_lock.close()
                    self._dir_lock = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what a client needs -----------------------------------------------------------

    @property
    def url(self) -> str:
        """The public (login-required) server, e.g. ``http://127.0.0.1:PORT``."""
        return self._public_server.url

    @property
    def admin_url(self) -> str:
        """The ``--noauth`` server: never point a provider client at it."""
        return self._admin_server.url

    @property
    def admin(self) -> SandboxAdmin:
        if self._admin is None:
            raise SandboxError("sandbox not started")
        return self._admin

    @property
    def public_server(self) -> DssServerProcess:
        """For outage tests: ``sandbox.public_server.restart()`` keeps the URL."""
        return self._public_server

    @property
    def admin_server(self) -> DssServerProcess:
        return self._admin_server

    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            raise SandboxError("sandbox not started")
        return self._data_dir

    @property
    def sqlite_path(self) -> Path:
        return sqlite_path_for(self.data_dir)

    @property
    def provider(self) -> str:
        return DEMO_PROVIDER

    @property
    def user_email(self) -> str:
        """The user fresh_token() logs in as: end user of the tickets and provider user."""
        return DEMO_USER

    @property
    def service_name(self) -> str:
        return DEMO_SERVICE_NAME

    @property
    def service_hash(self) -> str:
        if self._service_hash is None:
            raise SandboxError("sandbox not started")
        return self._service_hash

    @property
    def ticket_ids(self) -> list[int]:
        """Demo tickets seeded at start plus those from add_ticket(), oldest first."""
        with self._lock:
            return list(self._ticket_ids)

    def fresh_token(self, email: str | None = None) -> str:
        """The current one-time login token of ``email`` (default test@example.com).

        The server keeps one token per user and replaces it on each successful login, so
        a token is good for exactly one login, and only until someone else logs in as
        the same user: fetch it right before logging in.
        """
        if email is None or email == DEMO_USER:
            return self.admin.current_token()
        return user_token(self.sqlite_path, email)

    def add_ticket(self, service_hash: str | None = None) -> int:
        """A new ``ready`` demo ticket (workspace + one T1 layer) owned by test@example.com."""
        service_hash = service_hash or self.service_hash
        admin = self.admin
        ticket_id = admin.create_ticket(service_hash)
        staging = Path(tempfile.mkdtemp(prefix=f"ticket-{ticket_id:08d}-", dir=self._scratch()))
        try:
            for path in make_demo_ticket_files(staging, ticket_id):
                admin.upload_input(ticket_id, path)
            admin.mark_ready(ticket_id)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        with self._lock:
            self._ticket_ids.append(ticket_id)
        return ticket_id

    def register_service(
        self,
        name: str,
        version: str,
        tags: Sequence[Mapping[str, Any]],
        provider: str | None = None,
        *,
        shortdesc: str | None = None,
        longdesc: str | None = None,
    ) -> str:
        """Register a service (default provider: the demo provider); returns its hash.

        The same name, version and descriptor always give the same hash; the same name and
        version with a different descriptor is refused by the server.
        """
        provider = provider or DEMO_PROVIDER
        admin = self.admin
        # Idempotent; lets a test register a service for a provider nobody created yet.
        admin.create_provider(provider)
        repo = Path(tempfile.mkdtemp(prefix="service-", dir=self._scratch()))
        try:
            make_service_repo(
                repo,
                name,
                version,
                shortdesc or f"{name} {version}",
                tags,
                longdesc=longdesc,
            )
            return admin.register_service(provider, repo)
        finally:
            # The server keeps its own clone under datastore/services/<hash>.
            shutil.rmtree(repo, ignore_errors=True)

    def add_user(self, email: str, *, provider_of: str | None = None) -> str:
        """Create (or reset) a non-admin user; returns its one-time login token.

        With ``provider_of`` the user becomes a provider user of that provider (created if
        missing). Calling it again for the same email issues a new token.
        """
        if email == DEMO_USER:
            raise SandboxError(f"{DEMO_USER} is the sandbox's sysadmin; pick another email")
        token = secrets.token_hex(24)
        _add_user_row(self.sqlite_path, email, token, sysadmin=False)
        if provider_of is not None:
            self.admin.create_provider(provider_of)
            self.admin.add_provider_user(provider_of, email)
        return token

    # -- internals ----------------------------------------------------------------------

    def _scratch(self) -> Path:
        scratch = self.data_dir / "scratch"
        scratch.mkdir(exist_ok=True)
        return scratch

    def _ready_tickets(self, service_hash: str) -> list[int]:
        conn = sqlite3.connect(self.sqlite_path, timeout=30.0)
        try:
            rows = conn.execute(
                "select id from tickets where service_githash = ? and status = 'ready' order by id",
                (service_hash,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise SandboxError(f"cannot read the ticket queue: {exc}") from exc
        finally:
            conn.close()
        return [int(row[0]) for row in rows]

    def __repr__(self) -> str:
        try:
            where = f"{self.url} (admin {self.admin_url})"
        except SandboxError:
            where = "not started"
        return f"<Sandbox {where}>"


LOCK_FILE = "sandbox.lock"


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Hold ``data_dir`` for one sandbox while the returned file stays open (an advisory
    lock the system drops when the process dies); the file names the holder's pid."""
    handle = open(data_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held open: that is the lock
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no flock
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise SandboxError(f"{data_dir} is in use by another sandbox (process {holder}); stop "
                           "that one first, or give this one another --data DIR") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
