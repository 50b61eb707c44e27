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

import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from dss_console.paths import write_private
from dss_console.sources.v6 import crypto
from dss_console.sources.v6.venv import V6SandboxError
from dss_console.sources.v6x5.hq_process import API_PATH, HqProcess, IdentitySettings
from dss_console.sources.v6x5.standin import SEEDING_CLIENT, IdpStandin, Lifespans, Realm
from dss_console.sources.v6x5.venv import V6X5_VERSION, ensure_venv

REALM = "vantage6"
ADMIN_CLIENT = "dss-console-hq-admin"
ROOT_USERNAME = "root"
SANDBOX_FILE = "sandbox.json"
REALM_FILE = "realm.json"
_HTTP_TIMEOUT = 30.0


@dataclass(frozen=True)
class SandboxNode:
    name: str
    id: int
    api_key: str
    collaboration: str
    collaboration_id: int
    encrypted: bool

    @property
    def client_id(self) -> str:
        """The node's Keycloak client (what it logs in as, with the API key as secret)."""
        return f"{self.name}-node-client"


class _HqAdmin:
    """HQ's root user over REST, only for seeding (password grant on the seeding client)."""

    def __init__(self, api_url: str, realm_url: str, password: str) -> None:
        self.api_url = api_url
        self.http = requests.Session()
        self.http.trust_env = False
        reply = self.http.post(f"{realm_url}/protocol/openid-connect/token", timeout=_HTTP_TIMEOUT,
                               data={"grant_type": "password", "client_id": SEEDING_CLIENT,
                                     "username": ROOT_USERNAME, "password": password})
        if reply.status_code != 200:
            raise V6SandboxError(f"seeding: the identity stand-in refused HQ's root user "
                                 f"(HTTP {reply.status_code})")
        self.http.headers["Authorization"] = f"Bearer {reply.json()['access_token']}"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        reply = self.http.request(method, f"{self.api_url}{path}", timeout=_HTTP_TIMEOUT,
                                  **kwargs)
        if reply.status_code >= 300:
            raise V6SandboxError(f"seeding: {method} {path} answered HTTP {reply.status_code}: "
                                 f"{reply.text[:300]}")
        return reply.json()

    def find(self, path: str, **params: Any) -> list[dict[str, Any]]:
        return list(self.call("GET", path, params={**params, "per_page": 100})["data"])

    def close(self) -> None:
        self.http.close()


def seed(admin: _HqAdmin, data_dir: Path) -> dict[str, Any]:
    """Create the demo organizations, collaborations, nodes, keys, researcher and service
    account (module docstring)."""
    keys = data_dir / "keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    orgs: dict[str, dict[str, Any]] = {}
    for name in ("station", "research"):
        pem = crypto.new_private_key_pem()
        key_file = keys / f"{name}.pem"
        write_private(key_file, pem.decode("ascii"))
        public = crypto.RsaCryptor.from_pem(pem).public_key_b64
        org = admin.call("POST", "/organization", json={
            "name": name, "public_key": public, "domain": f"{name}.sandbox.invalid"})
        orgs[name] = {"id": org["id"], "key_file": str(key_file)}
    org_ids = [orgs["station"]["id"], orgs["research"]["id"]]
    collaborations: dict[str, dict[str, Any]] = {}
    for name, encrypted in (("demo", False), ("demo-enc", True)):
        collab = admin.call("POST", "/collaboration", json={
            "name": name, "organization_ids": org_ids, "encrypted": encrypted})
        collaborations[name] = {"id": collab["id"], "encrypted": encrypted}
    nodes: dict[str, dict[str, Any]] = {}
    for name, collab in (("station-demo", "demo"), ("station-demo-enc", "demo-enc")):
        node = admin.call("POST", "/node", json={
            "name": name, "organization_id": orgs["station"]["id"],
            "collaboration_id": collaborations[collab]["id"]})
        nodes[name] = {"id": node["id"], "api_key": node["api_key"], "collaboration": collab,
                       "collaboration_id": collaborations[collab]["id"],
                       "encrypted": collaborations[collab]["encrypted"]}
    role = admin.find("/role", name="Researcher")
    rules = [r for r in admin.find("/rule", name="event")
             if str(r.get("scope")).lower().startswith("col")
             and str(r.get("operation")).lower().startswith("s")]
    if not role or not rules:
        raise V6SandboxError("seeding: the Researcher role or the event/send/collaboration rule "
                             "is missing on this HQ")
    rights = {"organization_id": orgs["research"]["id"], "roles": [role[0]["id"]],
              "rules": [rules[0]["id"]]}
    password = secrets.token_urlsafe(12) + "aA1!"
    admin.call("POST", "/user", json={"username": "researcher", "password": password, **rights})
    account = admin.call("POST", "/user", json={"username": "researcher-sa",
                                                "is_service_account": True, **rights})
    return {
        "organizations": orgs,
        "collaborations": collaborations,
        "nodes": nodes,
        "researcher": {"username": "researcher", "password": password,
                       "organization": "research"},
        "service_account": {"username": "researcher-sa",
                            "client_id": "researcher-sa-user-client",
                            "client_secret": account["client_secret"],
                            "organization": "research"},
    }


class HqSandbox:
    """``with HqSandbox() as sb:`` — the 5.x venv (built on first use), the stand-in, HQ and
    the seed. ``data_dir=None``: a temp dir removed on stop; a given dir is kept and reused
    (realm, database and seed too). ``lifespans``: the stand-in's token lifetimes (expiry
    tests use seconds)."""

    def __init__(self, data_dir: Path | str | None = None, port: int = 0, *,
                 lifespans: Lifespans | None = None, timeout: float = 120.0,
                 report: Callable[[str], None] | None = None) -> None:
        self._requested_dir = Path(data_dir) if data_dir is not None else None
        self._port = port
        self._lifespans = lifespans or Lifespans()
        self._timeout = timeout
        self._report = report
        self._data_dir: Path | None = None
        self._owns_dir = False
        self.idp: IdpStandin | None = None
        self.hq: HqProcess | None = None
        self.info: dict[str, Any] = {}
        self.python: Path | None = None
        self.timings: dict[str, float] = {}

    def start(self) -> HqSandbox:
        t0 = time.monotonic()
        self.python = ensure_venv(self._report)
        t1 = time.monotonic()
        self.timings["venv"] = t1 - t0
        if self._requested_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="dss-v6x5-sandbox-"))
            self._owns_dir = True
        else:
            self._data_dir = self._requested_dir.resolve()
            self._data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self._data_dir, 0o700)
        try:
            self._start_services(t1)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_services(self, t1: float) -> None:
        assert self._data_dir is not None and self.python is not None
        previous = self._read_previous()
        realm_file = self._data_dir / REALM_FILE
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
        self.hq = HqProcess(self.python)
        self.hq.start(self._data_dir, IdentitySettings(
            url=self.idp.url, realm=REALM, admin_client=ADMIN_CLIENT,
            admin_client_secret=identity["admin_client_secret"], admin_username=ROOT_USERNAME,
            admin_password=identity["root_password"]), self._port, timeout=self._timeout)
        t2 = time.monotonic()
        self.timings["hq"] = t2 - t1
        seeded = previous.get("seed")
        if not seeded:
            admin = _HqAdmin(self.hq.api_url, self.idp.realm_url, identity["root_password"])
            try:
                seeded = seed(admin, self._data_dir)
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
            "python": str(self.python),
            "data_dir": str(self._data_dir),
            "hq_log": str(self._data_dir / "logs"),
        }
        write_private(self._data_dir / SANDBOX_FILE, json.dumps(self.info, indent=1))

    def _read_previous(self) -> dict[str, Any]:
        assert self._data_dir is not None
        path = self._data_dir / SANDBOX_FILE
        if not path.exists() or not (self._data_dir / "hq.sqlite").exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def stop(self) -> None:
        if self.hq is not None:
            self.hq.stop()
        if self.idp is not None:
            self.idp.stop()
        if self._owns_dir and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._owns_dir = False

    def __enter__(self) -> HqSandbox:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

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

    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            raise V6SandboxError("sandbox not started")
        return self._data_dir

    def node(self, name: str) -> SandboxNode:
        entry = self.info["seed"]["nodes"][name]
        return SandboxNode(name=name, id=entry["id"], api_key=entry["api_key"],
                           collaboration=entry["collaboration"],
                           collaboration_id=entry["collaboration_id"],
                           encrypted=entry["encrypted"])

    def org_id(self, name: str) -> int:
        return int(self.info["seed"]["organizations"][name]["id"])

    def key_file(self, org: str) -> Path:
        return Path(self.info["seed"]["organizations"][org]["key_file"])

    @property
    def researcher(self) -> tuple[str, str]:
        r = self.info["seed"]["researcher"]
        return r["username"], r["password"]

    @property
    def service_account(self) -> tuple[str, str]:
        """(client id, client secret) of ``researcher-sa``."""
        account = self.info["seed"]["service_account"]
        return account["client_id"], account["client_secret"]
