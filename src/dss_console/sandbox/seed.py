"""Seeding a sandbox DSS store: the admin / end-user side of the server, not the provider client.

:class:`SandboxAdmin` talks HTTP to a ``--noauth`` instance, where every request is already
logged in as the sysadmin ``test@example.com`` (who is also the "end user" owning tickets).
What the server has no API for (extra users, the ticket quota) is written straight into the
SQLite store; the server opens it with a 5 s busy timeout, so these writes are kept short.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from dss_console.sandbox.server import SandboxError

NOAUTH_USER = "test@example.com"
"""The sysadmin the server creates (and logs every request in as) in --noauth mode."""

_HASH_RE = re.compile(r"^[0-9a-f]{40}$")
_BODY_EXCERPT = 500

# Fixed identity and dates make a service repo's commit hash depend only on its content,
# so the demo service has the same hash in every sandbox.
_GIT_DATE = "2024-01-01T00:00:00+0000"
_GIT_NAME = "DSS Sandbox"
_GIT_EMAIL = "sandbox@example.invalid"


class SandboxAdmin:
    """Admin/user calls against a ``--noauth`` DSS server at ``url``.

    Thread-safe: one ``requests.Session`` (so one server-side session row) behind a lock.
    Every non-200 answer raises :class:`SandboxError` with the status and body text.
    """

    def __init__(self, url: str, *, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._http = requests.Session()
        # Loopback traffic must not be routed through a proxy from the environment.
        self._http.trust_env = False
        self._lock = threading.Lock()

    # -- plumbing ----------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        try:
            with self._lock:
                response = self._http.request(method, self.url + path, **kwargs)
        except requests.RequestException as exc:
            raise SandboxError(f"{method} {path}: {exc}") from exc
        if response.status_code != 200:
            body = response.text.strip()
            if len(body) > _BODY_EXCERPT:
                body = body[:_BODY_EXCERPT] + "..."
            raise SandboxError(f"{method} {path}: HTTP {response.status_code}: {body}")
        return response

    def _text(self, method: str, path: str, **kwargs: Any) -> str:
        return self._request(method, path, **kwargs).text.strip()

    @staticmethod
    def _parse_listing(text: str) -> list[str]:
        # Rows are "index,name" in index order; names may contain commas and quotes, and
        # must stay strings (a file called "NA" is a file called "NA").
        rows = [row for row in csv.reader(io.StringIO(text)) if row]
        return [name for _, name in sorted((int(r[0]), r[1]) for r in rows)]

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SandboxAdmin:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- users and providers -----------------------------------------------------------

    def current_token(self) -> str:
        """The current one-time login token of test@example.com (a login rotates it)."""
        return self._text("GET", "/api/token")

    def create_provider(self, name: str) -> None:
        """Create (or re-activate) a provider. Idempotent."""
        self._request("POST", "/api/admin/providers", data={"name": name})

    def add_provider_user(self, provider: str, email: str, *, admin: bool = False) -> None:
        """Make an existing user a member of ``provider``. Idempotent."""
        data = {"email": email, "admin": "1" if admin else "0"}
        self._request("POST", f"/api/admin/providers/{provider}/users", data=data)

    def register_service(self, provider: str, repo_dir: Path | str, ref: str = "master") -> str:
        """Register the service in a local git repo for ``provider``; returns its hash."""
        data = {"repo": str(Path(repo_dir).resolve()), "ref": ref}
        githash = self._text("POST", f"/api/admin/providers/{provider}/services", data=data)
        if not _HASH_RE.match(githash):
            raise SandboxError(f"service registration returned {githash!r}, not a commit hash")
        return githash

    # -- tickets (end-user side) -------------------------------------------------------

    def create_ticket(self, service_hash: str) -> int:
        """A new ticket in state ``init`` owned by test@example.com."""
        text = self._text("POST", "/api/tickets", data={"githash": service_hash})
        try:
            return int(text)
        except ValueError:
            raise SandboxError(f"ticket creation returned {text!r}, not an id") from None

    def upload_input(self, ticket_id: int, file_path: Path | str, name: str | None = None) -> None:
        """Upload one input file (the server keeps only one ``myfile`` part per request)."""
        file_path = Path(file_path)
        with open(file_path, "rb") as fh:
            files = {"myfile": (name or file_path.name, fh, "application/octet-stream")}
            self._request("POST", f"/api/tickets/{ticket_id}/files/input", files=files)

    def mark_ready(self, ticket_id: int) -> None:
        """init -> ready: the ticket joins the queue providers claim from."""
        self._request("POST", f"/api/tickets/{ticket_id}/status", data={"status": "ready"})

    def delete_ticket(self, ticket_id: int) -> None:
        """Delete a ticket in any state (erases its files). Idempotent."""
        self._request("GET", f"/api/tickets/{ticket_id}/delete")

    def retry_ticket(self, ticket_id: int) -> None:
        """failed/timeout -> ready."""
        self._request("GET", f"/api/tickets/{ticket_id}/retry")

    def ticket_status(self, ticket_id: int) -> str:
        return self._text("GET", f"/api/tickets/{ticket_id}/status")

    def ticket_detail(self, ticket_id: int) -> dict[str, Any]:
        """status, progress, log (with attachments) as the end user's client sees them."""
        response = self._request(
            "GET", f"/api/tickets/{ticket_id}/detail", params={"format": "json"}
        )
        try:
            return dict(response.json()["result"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SandboxError(f"unexpected ticket detail for {ticket_id}: {exc!r}") from exc

    def input_files(self, ticket_id: int) -> list[str]:
        return self._parse_listing(self._text("GET", f"/api/tickets/{ticket_id}/files/input"))

    def result_files(self, ticket_id: int) -> list[str]:
        return self._parse_listing(self._text("GET", f"/api/tickets/{ticket_id}/files/results"))

    def download_file(self, ticket_id: int, area: str, index: int) -> bytes:
        """One file of ``area`` ("input" or "results") by its listing index."""
        return self._request("GET", f"/api/tickets/{ticket_id}/files/{area}/{index}").content


# -- service repositories --------------------------------------------------------------


def service_json(
    name: str,
    version: str,
    shortdesc: str,
    tags: Sequence[Mapping[str, Any]] = (),
    *,
    longdesc: str | None = None,
) -> dict[str, Any]:
    """The service.json descriptor the server reads from a registered repo."""
    return {
        "name": name,
        "version": version,
        "shortdesc": shortdesc,
        "longdesc": longdesc if longdesc is not None else shortdesc,
        "tags": [dict(tag) for tag in tags],
    }


def _git(repo: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": _GIT_NAME,
        "GIT_AUTHOR_EMAIL": _GIT_EMAIL,
        "GIT_AUTHOR_DATE": _GIT_DATE,
        "GIT_COMMITTER_NAME": _GIT_NAME,
        "GIT_COMMITTER_EMAIL": _GIT_EMAIL,
        "GIT_COMMITTER_DATE": _GIT_DATE,
        # A user's config (signing, hooks path, templates) must not change the hash or fail.
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    try:
        subprocess.run(
            ["git", "-c", "commit.gpgsign=false", *args],
            cwd=repo,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=True,
        )
    except FileNotFoundError:
        raise SandboxError("the git executable is required to build a service repo") from None
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or b"").decode(errors="replace").strip()
        raise SandboxError(f"git {' '.join(args)} failed in {repo}: {detail}") from None


def make_service_repo(
    directory: Path | str,
    name: str,
    version: str,
    shortdesc: str,
    tags: Sequence[Mapping[str, Any]] = (),
    *,
    longdesc: str | None = None,
) -> Path:
    """Create a git repo (branch master, one commit) holding ``service.json``.

    ``directory`` must not exist or be empty. The commit hash (= service hash) depends only
    on the descriptor, so the same arguments always give the same hash.
    """
    repo = Path(directory)
    if repo.exists() and any(repo.iterdir()):
        raise SandboxError(f"{repo} is not empty; a service repo needs a fresh directory")
    repo.mkdir(parents=True, exist_ok=True)
    descriptor = service_json(name, version, shortdesc, tags, longdesc=longdesc)
    (repo / "service.json").write_text(json.dumps(descriptor, indent=2) + "\n", encoding="utf-8")
    _git(repo, "init", "-q")
    # Set explicitly: init.defaultBranch may be anything, and the server fetches "master".
    _git(repo, "symbolic-ref", "HEAD", "refs/heads/master")
    _git(repo, "add", "service.json")
    _git(repo, "commit", "-q", "-m", f"{name} {version}")
    return repo


# -- direct SQLite ---------------------------------------------------------------------


def _connect(sqlite_path: Path | str) -> sqlite3.Connection:
    path = Path(sqlite_path)
    if not path.is_file():
        # sqlite3 would silently create an empty database instead.
        raise SandboxError(f"no DSS store at {path}")
    # Longer than the server's own 5 s: under load a server transaction may hold the lock.
    conn = sqlite3.connect(path, timeout=30.0)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def add_user(
    sqlite_path: Path | str,
    email: str,
    token: str,
    *,
    sysadmin: bool = False,
    tier: str = "poweruser",
    dispname: str | None = None,
) -> int:
    """Insert a user (or reset an existing one's token and flags); returns the user id.

    The server has no API for creating users (they come from Google sign-in). ``token`` is
    the one-time login token (``users.passwd``); a login replaces it.
    """
    conn = _connect(sqlite_path)
    try:
        with conn:
            conn.execute(
                "insert into users (email, passwd, dispname, sysadmin, tier) "
                "values (?, ?, ?, ?, ?) "
                "on conflict (email) do update set passwd = excluded.passwd, "
                "  sysadmin = excluded.sysadmin, tier = excluded.tier",
                (email, token, dispname or email.split("@")[0], int(sysadmin), tier),
            )
            row = conn.execute("select id from users where email = ?", (email,)).fetchone()
    except sqlite3.Error as exc:
        raise SandboxError(f"cannot add user {email}: {exc}") from exc
    finally:
        conn.close()
    return int(row[0])


def user_token(sqlite_path: Path | str, email: str) -> str:
    """The current one-time login token of ``email``."""
    conn = _connect(sqlite_path)
    try:
        row = conn.execute("select passwd from users where email = ?", (email,)).fetchone()
    except sqlite3.Error as exc:
        raise SandboxError(f"cannot read the token of {email}: {exc}") from exc
    finally:
        conn.close()
    if row is None or not row[0]:
        raise SandboxError(f"no user {email} in the store")
    return str(row[0])


def raise_ticket_limit(
    sqlite_path: Path | str, max_tickets: int = 1_000_000, *, tier: str = "poweruser"
) -> None:
    """Lift the per-user open-ticket quota of ``tier`` (poweruser allows 60 by default).

    Every ticket that is not deleted counts, so a long test session would otherwise hit
    "Maximum allowed number of open tickets (60) exceeded".
    """
    conn = _connect(sqlite_path)
    try:
        with conn:
            updated = conn.execute(
                "update user_tiers set max_tickets = ? where tier = ?", (max_tickets, tier)
            ).rowcount
    except sqlite3.Error as exc:
        raise SandboxError(f"cannot change the ticket limit: {exc}") from exc
    finally:
        conn.close()
    if updated != 1:
        raise SandboxError(f"no user tier {tier!r} in the store")
