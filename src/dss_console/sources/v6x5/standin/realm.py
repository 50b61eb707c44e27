"""One realm of the Keycloak-compatible stand-in: its key, clients and users, and the admin
calls HQ 5.0.3 makes through python-keycloak 5.5.0.

The state lives in memory and, when the realm has a file, in that file (0600, rewritten after
every change) so a sandbox keeps its nodes' secrets across a restart of the stand-in. Client
secrets are kept as Keycloak keeps them (readable by the admin API: HQ hands a node's secret
out as its API key); user passwords only as salted PBKDF2 hashes.

Errors are raised as :class:`KeycloakReply` carrying Keycloak's own status and JSON words.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dss_console.paths import write_private
from dss_console.sources.v6x5 import jws

PUBLIC_CLIENT = "public_client"  # what the official UserClient logs in through (device flow)
SEEDING_CLIENT = "dss-console-seeding"  # the sandbox's own seeding: password grant only
HARDCODED_CLAIM_MAPPER = "oidc-hardcoded-claim-mapper"
CLIENT_TYPE_CLAIM = "vantage6_client_type"
_PBKDF2_ROUNDS = 100_000


class KeycloakReply(Exception):
    """An answer other than 2xx, in Keycloak's words (status and JSON body)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


def oauth_error(status: int, error: str, description: str) -> KeycloakReply:
    return KeycloakReply(status, {"error": error, "error_description": description})


def admin_error(status: int, message: str) -> KeycloakReply:
    return KeycloakReply(status, {"error": message})


UNAUTHORIZED = admin_error(401, "HTTP 401 Unauthorized")
FORBIDDEN = admin_error(403, "HTTP 403 Forbidden")


@dataclass(frozen=True)
class Lifespans:
    """Seconds; Keycloak's defaults except the device poll interval (5 there)."""

    access: int = 300
    refresh: int = 1800
    device: int = 600
    device_interval: int = 1


def _hash_password(password: str, salt: bytes | None = None) -> dict[str, str]:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, _PBKDF2_ROUNDS)
    return {"salt": salt.hex(), "hash": digest.hex()}


def _password_matches(stored: dict[str, str] | None, password: str) -> bool:
    if not stored:
        return False
    expected = _hash_password(password, bytes.fromhex(stored["salt"]))["hash"]
    return hmac.compare_digest(expected, stored["hash"])


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


class Realm:
    """A realm's state and the operations on it; thread-safe (one lock)."""

    def __init__(self, state: dict[str, Any], path: Path | None = None,
                 lifespans: Lifespans | None = None) -> None:
        self._state = state
        self.path = path
        self.lifespans = lifespans or Lifespans()
        self.key = jws.load_private_pem(state["key_pem"])
        self.lock = threading.RLock()

    # -- making and keeping a realm ------------------------------------------------------

    @classmethod
    def create(cls, name: str, *, admin_client: str, admin_secret: str, admin_username: str,
               admin_password: str, path: Path | None = None,
               lifespans: Lifespans | None = None) -> Realm:
        """A new realm with the clients HQ and its clients expect: the admin client HQ
        uses (service account with admin rights), ``public_client`` (device flow), the
        seeding client (password grant), and the user HQ makes its root user."""
        state = {"realm": name, "kid": uuid.uuid4().hex,
                 "key_pem": jws.private_pem(jws.new_key()), "clients": {}, "users": {}}
        realm = cls(state, path, lifespans)
        with realm.lock:
            realm._add_client({"clientId": admin_client, "serviceAccountsEnabled": True,
                               "secret": admin_secret}, admin=True)
            user_claim = [{"protocolMapper": HARDCODED_CLAIM_MAPPER, "config": {
                "claim.name": CLIENT_TYPE_CLAIM, "claim.value": "user",
                "access.token.claim": "true"}}]
            realm._add_client({"clientId": PUBLIC_CLIENT, "publicClient": True,
                               "protocolMappers": user_claim}, device_grant=True)
            realm._add_client({"clientId": SEEDING_CLIENT, "publicClient": True,
                               "directAccessGrantsEnabled": True,
                               "protocolMappers": user_claim})
            realm.create_user({"username": admin_username, "enabled": True, "credentials": [
                {"type": "password", "value": admin_password, "temporary": False}]})
        return realm

    @classmethod
    def load(cls, path: Path, lifespans: Lifespans | None = None) -> Realm:
        state = json.loads(path.read_text(encoding="utf-8"))
        return cls(state, path, lifespans)

    @property
    def name(self) -> str:
        return str(self._state["realm"])

    def _save(self) -> None:
        if self.path is not None:
            write_private(self.path, json.dumps(self._state, indent=1))

    # -- what everyone reads -------------------------------------------------------------

    def public_key_b64(self) -> str:
        return jws.public_key_b64(self.key.public_key())

    def info(self, issuer: str) -> dict[str, Any]:
        """``GET /realms/{realm}``."""
        return {"realm": self.name, "public_key": self.public_key_b64(),
                "token-service": f"{issuer}/protocol/openid-connect",
                "account-service": f"{issuer}/account", "tokens-not-before": 0}

    def verify(self, token: str, *, now: float | None = None) -> dict[str, Any]:
        """Claims of a token this realm signed and that is still valid; TokenError else."""
        return jws.verify(token, self.key.public_key(), now=now)

    # -- clients -------------------------------------------------------------------------

    def _add_client(self, body: dict[str, Any], *, admin: bool = False,
                    device_grant: bool = False) -> str:
        client_id = body.get("clientId")
        if not isinstance(client_id, str) or not client_id:
            raise admin_error(400, "clientId is required")
        if self._client_by_name(client_id) is not None:
            raise KeycloakReply(409, {"errorMessage": f"Client {client_id} already exists"})
        public = _truthy(body.get("publicClient", False))
        claims = {}
        for mapper in body.get("protocolMappers") or []:
            config = mapper.get("config") or {}
            if (mapper.get("protocolMapper") == HARDCODED_CLAIM_MAPPER
                    and _truthy(config.get("access.token.claim", True))
                    and config.get("claim.name")):
                claims[str(config["claim.name"])] = config.get("claim.value")
        uid = str(uuid.uuid4())
        client: dict[str, Any] = {
            "id": uid, "clientId": client_id, "enabled": _truthy(body.get("enabled", True)),
            "publicClient": public,
            "secret": None if public else (body.get("secret") or secrets.token_urlsafe(24)),
            "serviceAccountsEnabled": (not public
                                       and _truthy(body.get("serviceAccountsEnabled", False))),
            "directAccessGrantsEnabled": _truthy(body.get("directAccessGrantsEnabled", False)),
            "deviceGrantEnabled": device_grant, "admin": admin, "claims": claims,
            "protocolMappers": copy.deepcopy(body.get("protocolMappers") or []),
            "serviceAccountUserId": None}
        self._state["clients"][uid] = client
        if client["serviceAccountsEnabled"]:
            client["serviceAccountUserId"] = self._add_user(
                f"service-account-{client_id}", service_account_of=uid)
        self._save()
        return uid

    def _client_by_name(self, client_id: str) -> dict[str, Any] | None:
        for client in self._state["clients"].values():
            if client["clientId"] == client_id:
                return dict(client)
        return None

    def client(self, client_id: str) -> dict[str, Any] | None:
        """A client by its ``clientId`` (not its uuid); a copy."""
        with self.lock:
            return self._client_by_name(client_id)

    def _client(self, uid: str) -> dict[str, Any]:
        client: dict[str, Any] | None = self._state["clients"].get(uid)
        if client is None:
            raise admin_error(404, "Could not find client")
        return client

    @staticmethod
    def _client_view(client: dict[str, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(client[k]) for k in (
            "id", "clientId", "enabled", "publicClient", "serviceAccountsEnabled",
            "directAccessGrantsEnabled", "protocolMappers")}

    def create_client(self, body: dict[str, Any]) -> str:
        with self.lock:
            return self._add_client(body)

    def list_clients(self, query: dict[str, str]) -> list[dict[str, Any]]:
        with self.lock:
            wanted = query.get("clientId")
            search = _truthy(query.get("search", False))
            found = [self._client_view(c) for c in self._state["clients"].values()
                     if wanted is None or c["clientId"] == wanted
                     or (search and wanted.lower() in c["clientId"].lower())]
        return _page(found, query)

    def delete_client(self, uid: str) -> None:
        with self.lock:
            client = self._client(uid)
            if client["serviceAccountUserId"]:
                self._state["users"].pop(client["serviceAccountUserId"], None)
            del self._state["clients"][uid]
            self._save()

    def client_secret(self, uid: str, *, regenerate: bool = False) -> dict[str, str]:
        """``GET``/``POST …/clients/{id}/client-secret``; a new secret ends the old one."""
        with self.lock:
            client = self._client(uid)
            if client["publicClient"]:
                raise admin_error(400, "Client is public: it has no secret")
            if regenerate:
                client["secret"] = secrets.token_urlsafe(24)
                self._save()
            return {"type": "secret", "value": str(client["secret"])}

    # -- users ---------------------------------------------------------------------------

    def _add_user(self, username: str, *, service_account_of: str | None = None,
                  body: dict[str, Any] | None = None) -> str:
        body = body or {}
        username = username.lower()  # Keycloak keeps usernames lower-cased
        if any(u["username"] == username for u in self._state["users"].values()):
            raise KeycloakReply(409, {"errorMessage": "User exists with same username"})
        password = None
        for credential in body.get("credentials") or []:
            if credential.get("type") == "password" and credential.get("value"):
                # "temporary" (HQ sets it) would make Keycloak ask for a new password at the
                # first browser login; the stand-in has no such page and takes it as it is.
                password = _hash_password(str(credential["value"]))
        uid = str(uuid.uuid4())
        self._state["users"][uid] = {
            "id": uid, "username": username, "enabled": _truthy(body.get("enabled", True)),
            "email": body.get("email"), "firstName": body.get("firstName"),
            "lastName": body.get("lastName"),
            "attributes": copy.deepcopy(body.get("attributes") or {}),
            "password": password, "serviceAccountClientId": service_account_of,
            "createdTimestamp": int(time.time() * 1000)}
        return uid

    def create_user(self, body: dict[str, Any]) -> str:
        username = body.get("username")
        if not isinstance(username, str) or not username:
            raise KeycloakReply(400, {"errorMessage": "error-user-attribute-required",
                                      "field": "username"})
        with self.lock:
            uid = self._add_user(username, body=body)
            self._save()
            return uid

    def _user(self, uid: str) -> dict[str, Any]:
        user: dict[str, Any] | None = self._state["users"].get(uid)
        if user is None:
            raise admin_error(404, "User not found")
        return user

    @staticmethod
    def _user_view(user: dict[str, Any]) -> dict[str, Any]:
        view = {k: copy.deepcopy(user[k]) for k in (
            "id", "username", "enabled", "attributes", "createdTimestamp")}
        view["emailVerified"] = False
        for key in ("email", "firstName", "lastName"):
            if user.get(key):
                view[key] = user[key]
        if user.get("serviceAccountClientId"):
            view["serviceAccountClientId"] = user["serviceAccountClientId"]
        return view

    def get_user(self, uid: str) -> dict[str, Any]:
        with self.lock:
            return self._user_view(self._user(uid))

    def list_users(self, query: dict[str, str]) -> list[dict[str, Any]]:
        with self.lock:
            wanted = (query.get("username") or query.get("search") or "").lower()
            exact = _truthy(query.get("exact", False))
            found = [self._user_view(u) for u in self._state["users"].values()
                     if not wanted or u["username"] == wanted
                     or (not exact and wanted in u["username"])]
        return _page(found, query)

    def update_user(self, uid: str, body: dict[str, Any]) -> None:
        """``PUT users/{id}``: HQ's start-up sets the root user's ``organization_id``."""
        with self.lock:
            user = self._user(uid)
            for key in ("email", "firstName", "lastName"):
                if key in body:
                    user[key] = body[key]
            if "enabled" in body:
                user["enabled"] = _truthy(body["enabled"])
            if isinstance(body.get("attributes"), dict):
                user["attributes"] = copy.deepcopy(body["attributes"])
            self._save()

    def delete_user(self, uid: str) -> None:
        with self.lock:
            self._user(uid)
            del self._state["users"][uid]
            self._save()

    def user_by_name(self, username: str) -> dict[str, Any] | None:
        with self.lock:
            for user in self._state["users"].values():
                if user["username"] == username.lower():
                    return dict(user)
        return None

    def check_password(self, username: str, password: str) -> dict[str, Any] | None:
        user = self.user_by_name(username)
        if (user is None or not user["enabled"] or user["serviceAccountClientId"]
                or not _password_matches(user["password"], password)):
            return None
        return user

    # -- tokens --------------------------------------------------------------------------

    def check_admin(self, authorization: str | None) -> None:
        """Admin routes: a valid token of the admin client (401 without, 403 another's)."""
        if not authorization or not authorization.startswith("Bearer "):
            raise UNAUTHORIZED
        try:
            claims = self.verify(authorization[len("Bearer "):].strip())
        except jws.TokenError:
            raise UNAUTHORIZED from None
        if claims.get("typ") != "Bearer":
            raise UNAUTHORIZED
        client = self.client(str(claims.get("azp")))
        if client is None or not client["admin"]:
            raise FORBIDDEN

    def issue(self, issuer: str, client: dict[str, Any], user: dict[str, Any], *,
              refresh: bool, scope: str = "profile email",
              issued_at: float | None = None) -> dict[str, Any]:
        """A token reply as Keycloak's token endpoint gives it."""
        now = int(time.time() if issued_at is None else issued_at)
        life = self.lifespans
        access = {"exp": now + life.access, "iat": now, "jti": str(uuid.uuid4()),
                  "iss": issuer, "sub": user["id"], "typ": "Bearer",
                  "azp": client["clientId"], "scope": scope,
                  "preferred_username": user["username"], **client["claims"]}
        reply: dict[str, Any] = {
            "access_token": jws.sign(access, self.key, self._state["kid"]),
            "expires_in": life.access, "refresh_expires_in": 0, "token_type": "Bearer",
            "not-before-policy": 0, "scope": scope}
        if refresh:
            claims = {"exp": now + life.refresh, "iat": now, "jti": str(uuid.uuid4()),
                      "iss": issuer, "aud": issuer, "sub": user["id"], "typ": "Refresh",
                      "azp": client["clientId"], "scope": scope}
            reply["refresh_token"] = jws.sign(claims, self.key, self._state["kid"])
            reply["refresh_expires_in"] = life.refresh
        return reply

    def mint(self, issuer: str, client_id: str, username: str | None = None, *,
             issued_at: float | None = None) -> dict[str, Any]:
        """Tokens as the token endpoint would issue them, at a chosen time: for tests, a
        token that is genuine in every way but expired. ``username`` None: the client's
        service account."""
        with self.lock:
            client = self._client_by_name(client_id)
            if client is None:
                raise KeyError(client_id)
            uid = client["serviceAccountUserId"] if username is None else None
            user = (self._user(uid) if uid else self.user_by_name(username or ""))
            if user is None:
                raise KeyError(username)
            return self.issue(issuer, client, user, refresh=username is not None,
                              issued_at=issued_at)

    def service_account(self, client: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            return dict(self._user(client["serviceAccountUserId"]))

    def user_by_id(self, uid: str) -> dict[str, Any] | None:
        with self.lock:
            user = self._state["users"].get(uid)
            return dict(user) if user else None


def _page(items: list[dict[str, Any]], query: dict[str, str]) -> list[dict[str, Any]]:
    first = int(query.get("first") or 0)
    limit = int(query.get("max") or 100)
    return items[first:] if limit < 0 else items[first:first + limit]
