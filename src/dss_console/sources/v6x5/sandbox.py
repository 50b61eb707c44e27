"""A throw-away vantage6 5.0.3 deployment on 127.0.0.1: the Keycloak-compatible stand-in
(``standin/``) and the real HQ 5.0.3 (``hq_process.py``) in its own Python 3.13 venv.

Seeded over REST as 4.x's sandbox is, plus a service account:

* organizations ``station`` (the data station this machine plays) and ``research``, each with
  an RSA-4096 key whose public half is uploaded (needed for ``demo-enc``);
* collaborations ``demo`` (plain) and ``demo-enc`` (encrypted), both with both organizations;
* nodes ``station-demo`` and ``station-demo-enc`` (station's): their API keys are their
  Keycloak client secrets (client ``{node}-node-client``);
* user ``researcher`` (organization research, role Researcher plus event/send/collaboration,
  without which a kill answers 401) and service account ``researcher-sa`` (same rights; its
  client ``researcher-sa-user-client`` logs in with client credentials).

Order matters: the stand-in answers first (HQ reads the realm key at start and exits without
it). ``sandbox.json`` (0600) in the data dir holds what a client needs, secrets included: it
is the sandbox's purpose. Keycloak itself is not used: see docs/v6.md.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dss_console.sources.v6 import sandbox_common
from dss_console.sources.v6.sandbox_common import (
    HTTP_TIMEOUT,
    SANDBOX_FILE,
    SeededSandbox,
    SeedingAdmin,
    seed_demo,
)
from dss_console.sources.v6x5.hq_process import API_PATH, HqProcess, IdentitySettings
from dss_console.sources.v6x5.standin import SEEDING_CLIENT, IdpStandin, Lifespans, Realm
from dss_console.sources.v6x5.venv import V6X5_VERSION, ensure_venv

REALM = "vantage6"
ADMIN_CLIENT = "dss-console-hq-admin"
ROOT_USERNAME = "root"
REALM_FILE = "realm.json"
__all__ = ["SANDBOX_FILE", "HqSandbox", "SandboxNode", "seed"]  # commands/v6.py: SANDBOX_FILE


class SandboxNode(sandbox_common.SandboxNode):
    @property
    def client_id(self) -> str:
        """The node's Keycloak client (what it logs in as, with the API key as secret)."""
        return f"{self.name}-node-client"


class _HqAdmin(SeedingAdmin):
    """HQ's root user over REST, only for seeding (password grant on the seeding client)."""

    def __init__(self, api_url: str, realm_url: str, password: str) -> None:
        super().__init__(api_url)
        reply = self.http.post(f"{realm_url}/protocol/openid-connect/token", timeout=HTTP_TIMEOUT,
                               data={"grant_type": "password", "client_id": SEEDING_CLIENT,
                                     "username": ROOT_USERNAME, "password": password})
        self._take_token(reply, "seeding: the identity stand-in refused HQ's root user")


def seed(admin: SeedingAdmin, data_dir: Path) -> dict[str, Any]:
    """Create the demo organizations, collaborations, nodes, keys, researcher and service
    account (module docstring)."""
    seeded, rights = seed_demo(admin, data_dir,
                               lambda r: str(r.get("scope")).lower().startswith("col")
                               and str(r.get("operation")).lower().startswith("s"))
    password = secrets.token_urlsafe(12) + "aA1!"
    admin.call("POST", "/user", json={"username": "researcher", "password": password, **rights})
    account = admin.call("POST", "/user", json={"username": "researcher-sa",
                                                "is_service_account": True, **rights})
    return {
        **seeded,
        "researcher": {"username": "researcher", "password": password,
                       "organization": "research"},
        "service_account": {"username": "researcher-sa",
                            "client_id": "researcher-sa-user-client",
                            "client_secret": account["client_secret"],
                            "organization": "research"},
    }


class HqSandbox(SeededSandbox):
    """``with HqSandbox() as sb:`` — the 5.x venv (built on first use), the stand-in, HQ and
    the seed. ``data_dir=None``: a temp dir removed on stop; a given dir is kept and reused
    (realm, database and seed too). ``lifespans``: the stand-in's token lifetimes (expiry
    tests use seconds)."""

    temp_prefix = "dss-v6x5-sandbox-"
    database_name = "hq.sqlite"
    node_type = SandboxNode

    def __init__(self, data_dir: Path | str | None = None, port: int = 0, *,
                 lifespans: Lifespans | None = None, timeout: float = 120.0,
                 report: Callable[[str], None] | None = None) -> None:
        super().__init__(data_dir, port, timeout, report)
        self._lifespans = lifespans or Lifespans()
        self.idp: IdpStandin | None = None
        self.hq: HqProcess | None = None

    def _ensure_venv(self) -> Path:
        return ensure_venv(self._report)

    def _start_services(self, data_dir: Path, python: Path, t1: float) -> None:
        previous = self._read_previous()
        realm_file = data_dir / REALM_FILE
        identity = previous.get("identity") or {
            "admin_client_secret": secrets.token_urlsafe(24),
            "root_password": secrets.token_urlsafe(18)}
        if previous and realm_file.exists():
            realm = Realm.load(realm_file, self._lifespans)
        else:
            realm = Realm.create(REALM, admin_client=ADMIN_CLIENT,
                                 admin_secret=identity["admin_client_secret"],
                                 admin_username=ROOT_USERNAME,
                                 admin_password=identity["root_password"],
                                 path=realm_file, lifespans=self._lifespans)
        self.idp = IdpStandin(realm).start()
        self.hq = HqProcess(python)
        self.hq.start(data_dir, IdentitySettings(
            url=self.idp.url, realm=REALM, admin_client=ADMIN_CLIENT,
            admin_client_secret=identity["admin_client_secret"], admin_username=ROOT_USERNAME,
            admin_password=identity["root_password"]), self._port, timeout=self._timeout)
        t2 = time.monotonic()
        self.timings["hq"] = t2 - t1
        seeded = previous.get("seed")
        if not seeded:
            admin = _HqAdmin(self.hq.api_url, self.idp.realm_url, identity["root_password"])
            try:
                seeded = seed(admin, data_dir)
            finally:
                admin.close()
        self.timings["seed"] = time.monotonic() - t2
        self.info = {
            "version": V6X5_VERSION,
            "url": self.hq.url,
            "api_path": API_PATH,
            "auth_url": self.idp.url,
            "realm": REALM,
            "identity": identity,
            "seed": seeded,
            "python": str(python),
            "data_dir": str(data_dir),
            "hq_log": str(data_dir / "logs"),
        }

    def _stop_services(self) -> None:
        if self.hq is not None:
            self.hq.stop()
        if self.idp is not None:
            self.idp.stop()

    # -- what clients need ------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self.hq is not None
        return self.hq.url

    @property
    def api_url(self) -> str:
        assert self.hq is not None
        return self.hq.api_url

    @property
    def auth_url(self) -> str:
        assert self.idp is not None
        return self.idp.url

    def node(self, name: str) -> SandboxNode:
        node = super().node(name)
        assert isinstance(node, SandboxNode)
        return node

    @property
    def service_account(self) -> tuple[str, str]:
        """(client id, client secret) of ``researcher-sa``."""
        account = self.info["seed"]["service_account"]
        return account["client_id"], account["client_secret"]
