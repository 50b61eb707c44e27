"""The Keycloak-compatible stand-in over real HTTP: it gives what HQ 5.0.3 and the official
clients ask for, and refuses what Keycloak refuses, in Keycloak's words (no HQ here: the
sandbox tests run it behind the real HQ)."""

from __future__ import annotations

import base64
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dss_console.sources.v6x5 import jws
from dss_console.sources.v6x5.standin import (
    PUBLIC_CLIENT,
    SEEDING_CLIENT,
    IdpStandin,
    Lifespans,
    Realm,
)
from dss_console.sources.v6x5.standin.grants import DEVICE_GRANT, NOTICE

from waiting import wait_for

REALM = "vantage6"
ADMIN_CLIENT = "hq-admin-client"
ADMIN_SECRET = "admin-client-secret-0123456789"
ROOT, ROOT_PASSWORD = "root", "root-password-42"


def _realm(path: Path | None = None, lifespans: Lifespans | None = None) -> Realm:
    return Realm.create(REALM, admin_client=ADMIN_CLIENT, admin_secret=ADMIN_SECRET,
                        admin_username=ROOT, admin_password=ROOT_PASSWORD, path=path,
                        lifespans=lifespans or Lifespans(device_interval=0))


@pytest.fixture(scope="module")
def idp() -> Iterator[IdpStandin]:
    with IdpStandin(_realm()) as standin:
        yield standin


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False
        yield session


class Kc:
    """The calls python-keycloak makes, as plain HTTP."""

    def __init__(self, idp: IdpStandin, http: requests.Session) -> None:
        self.idp, self.http = idp, http
        self.token_url = f"{idp.realm_url}/protocol/openid-connect/token"
        self.admin_url = f"{idp.url}/admin/realms/{REALM}"

    def token(self, **form: str) -> requests.Response:
        return self.http.post(self.token_url, data=form, timeout=10)

    def admin_token(self) -> str:
        reply = self.token(grant_type="client_credentials", client_id=ADMIN_CLIENT,
                           client_secret=ADMIN_SECRET)
        assert reply.status_code == 200, reply.text
        return str(reply.json()["access_token"])

    def admin(self, method: str, path: str, token: str | None = None,
              **kwargs: Any) -> requests.Response:
        bearer = token if token is not None else self.admin_token()
        return self.http.request(method, self.admin_url + path, timeout=10,
                                 headers={"Authorization": f"Bearer {bearer}"}, **kwargs)

    def new_node_client(self, name: str) -> tuple[str, str]:
        """What HQ's ``create_service_account_in_keycloak`` does; (client uuid, secret)."""
        reply = self.admin("POST", "/clients", json={
            "clientId": f"{name}-node-client", "publicClient": False, "enabled": True,
            "serviceAccountsEnabled": True, "standardFlowEnabled": False,
            "protocolMappers": [{"name": "vantage6_client_type", "protocol": "openid-connect",
                                 "protocolMapper": "oidc-hardcoded-claim-mapper",
                                 "config": {"claim.name": "vantage6_client_type",
                                            "claim.value": "node",
                                            "access.token.claim": True}}]})
        assert reply.status_code == 201, reply.text
        uid = reply.headers["Location"].rsplit("/", 1)[1]
        secret = self.admin("GET", f"/clients/{uid}/client-secret").json()["value"]
        return uid, secret


@pytest.fixture
def kc(idp: IdpStandin, http: requests.Session) -> Kc:
    return Kc(idp, http)


def _served_key(kc: Kc) -> rsa.RSAPublicKey:
    info = kc.http.get(kc.idp.realm_url, timeout=10).json()
    pem = f"-----BEGIN PUBLIC KEY-----\n{info['public_key']}\n-----END PUBLIC KEY-----"
    key = serialization.load_pem_public_key(pem.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def _foreign_token(claims: dict[str, Any]) -> str:
    return jws.sign(claims, jws.new_key(), kid="not-the-realm-key")


# -- what HQ and the clients read ------------------------------------------------------------


def test_node_token_verifies_with_the_served_realm_key(kc: Kc) -> None:
    info = kc.http.get(kc.idp.realm_url, timeout=10)
    assert info.status_code == 200 and info.json()["realm"] == REALM
    assert NOTICE in info.headers["Server"]
    assert kc.idp.url.startswith("http://127.0.0.1:")
    _, secret = kc.new_node_client("station-a")
    reply = kc.token(grant_type="client_credentials", client_id="station-a-node-client",
                     client_secret=secret)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    assert "refresh_token" not in body  # Keycloak gives none to client credentials
    claims = jws.verify(body["access_token"], _served_key(kc))
    assert claims["vantage6_client_type"] == "node"
    assert claims["azp"] == "station-a-node-client"
    # sub is the service-account user HQ looks up and stores as the node's keycloak_id.
    users = kc.admin("GET", "/users", params={
        "username": "service-account-station-a-node-client", "exact": True, "max": 1}).json()
    assert [u["id"] for u in users] == [claims["sub"]]
    header = jws.b64url_decode(body["access_token"].split(".")[0])
    assert b'"RS256"' in header


def test_openid_configuration_names_the_device_endpoint(kc: Kc) -> None:
    config = kc.http.get(f"{kc.idp.realm_url}/.well-known/openid-configuration",
                         timeout=10).json()
    assert config["token_endpoint"] == kc.token_url
    assert config["device_authorization_endpoint"].endswith("/protocol/openid-connect/auth/device")
    assert DEVICE_GRANT in config["grant_types_supported"]


# -- refusals at the token endpoint ----------------------------------------------------------


def test_wrong_secret_and_unknown_client_are_refused_as_keycloak_does(kc: Kc) -> None:
    _, secret = kc.new_node_client("station-b")
    wrong = kc.token(grant_type="client_credentials", client_id="station-b-node-client",
                     client_secret=secret + "x")
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "unauthorized_client"
    unknown = kc.token(grant_type="client_credentials", client_id="nobody-node-client",
                       client_secret=secret)
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_client"
    missing = kc.token(client_id="station-b-node-client", client_secret=secret)
    assert (missing.status_code, missing.json()["error"]) == (400, "invalid_request")
    odd = kc.token(grant_type="implicit", client_id="station-b-node-client",
                   client_secret=secret)
    assert (odd.status_code, odd.json()["error"]) == (400, "unsupported_grant_type")
    for reply in (wrong, unknown):
        assert secret not in reply.text


def test_a_regenerated_secret_ends_the_old_one(kc: Kc) -> None:
    uid, old = kc.new_node_client("station-c")
    form = {"grant_type": "client_credentials", "client_id": "station-c-node-client"}
    assert kc.token(**form, client_secret=old).status_code == 200
    new = kc.admin("POST", f"/clients/{uid}/client-secret", json={}).json()
    assert new["type"] == "secret" and new["value"] != old
    refused = kc.token(**form, client_secret=old)
    assert (refused.status_code, refused.json()["error"]) == (401, "unauthorized_client")
    assert kc.token(**form, client_secret=new["value"]).status_code == 200
    assert kc.admin("GET", f"/clients/{uid}/client-secret").json()["value"] == new["value"]


def test_password_grant_only_for_the_seeding_client(kc: Kc) -> None:
    ok = kc.token(grant_type="password", client_id=SEEDING_CLIENT, username=ROOT,
                  password=ROOT_PASSWORD)
    assert ok.status_code == 200, ok.text
    assert jws.unverified_claims(ok.json()["access_token"])["vantage6_client_type"] == "user"
    bad = kc.token(grant_type="password", client_id=SEEDING_CLIENT, username=ROOT,
                   password="not-it")
    assert (bad.status_code, bad.json()["error"]) == (401, "invalid_grant")
    not_allowed = kc.token(grant_type="password", client_id=PUBLIC_CLIENT, username=ROOT,
                           password=ROOT_PASSWORD)
    assert (not_allowed.status_code, not_allowed.json()["error"]) == (400, "unauthorized_client")


# -- foreign and expired tokens ----------------------------------------------------------------


def test_foreign_signed_and_expired_tokens_are_refused(kc: Kc) -> None:
    genuine = kc.admin_token()
    claims = jws.unverified_claims(genuine)
    assert kc.admin("GET", "/users", token=genuine).status_code == 200
    # Same claims, another key: Keycloak's admin API answers 401.
    forged = kc.admin("GET", "/users", token=_foreign_token(claims))
    assert forged.status_code == 401 and forged.json() == {"error": "HTTP 401 Unauthorized"}
    # Genuinely signed by the realm, but issued an hour ago: expired.
    expired = kc.idp.realm.mint(kc.idp.realm_url, ADMIN_CLIENT,
                                issued_at=time.time() - 3600)["access_token"]
    jws.verify(expired, _served_key(kc), now=time.time() - 3500)  # it *is* the realm's
    assert kc.admin("GET", "/users", token=expired).status_code == 401
    assert kc.admin("GET", "/users", token="").status_code == 401
    # A valid token of a client without admin rights: 403.
    _, secret = kc.new_node_client("station-d")
    node = kc.token(grant_type="client_credentials", client_id="station-d-node-client",
                    client_secret=secret).json()["access_token"]
    assert kc.admin("GET", "/users", token=node).status_code == 403


def test_foreign_expired_and_mismatched_refresh_tokens_are_invalid_grant(kc: Kc) -> None:
    tokens = kc.token(grant_type="password", client_id=SEEDING_CLIENT, username=ROOT,
                      password=ROOT_PASSWORD).json()
    refresh = tokens["refresh_token"]
    again = kc.token(grant_type="refresh_token", client_id=SEEDING_CLIENT, refresh_token=refresh)
    assert again.status_code == 200 and "refresh_token" in again.json()
    forged = kc.token(grant_type="refresh_token", client_id=SEEDING_CLIENT,
                      refresh_token=_foreign_token(jws.unverified_claims(refresh)))
    assert (forged.status_code, forged.json()["error"]) == (400, "invalid_grant")
    old = kc.idp.realm.mint(kc.idp.realm_url, SEEDING_CLIENT, ROOT,
                            issued_at=time.time() - 7200)["refresh_token"]
    expired = kc.token(grant_type="refresh_token", client_id=SEEDING_CLIENT, refresh_token=old)
    assert expired.status_code == 400
    assert expired.json() == {"error": "invalid_grant", "error_description": "Token is not active"}
    other_client = kc.token(grant_type="refresh_token", client_id=PUBLIC_CLIENT,
                            refresh_token=refresh)
    assert (other_client.status_code, other_client.json()["error"]) == (400, "invalid_grant")
    # An access token is no refresh token.
    access = kc.token(grant_type="refresh_token", client_id=SEEDING_CLIENT,
                      refresh_token=tokens["access_token"])
    assert (access.status_code, access.json()["error"]) == (400, "invalid_grant")


# -- the device flow ---------------------------------------------------------------------------


def _start_device(kc: Kc) -> dict[str, Any]:
    reply = kc.http.post(f"{kc.idp.realm_url}/protocol/openid-connect/auth/device",
                         data={"client_id": PUBLIC_CLIENT, "scope": "openid"}, timeout=10)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def _poll(kc: Kc, device: dict[str, Any]) -> requests.Response:
    return kc.token(grant_type=DEVICE_GRANT, client_id=PUBLIC_CLIENT,
                    device_code=device["device_code"])


def test_device_flow_pending_until_the_form_approves(kc: Kc) -> None:
    device = _start_device(kc)
    assert device["verification_uri"] == f"{kc.idp.realm_url}/device"
    assert device["verification_uri_complete"].endswith(f"?user_code={device['user_code']}")
    pending = _poll(kc, device)
    assert (pending.status_code, pending.json()["error"]) == (400, "authorization_pending")
    page = kc.http.get(device["verification_uri_complete"], timeout=10)
    assert page.status_code == 200 and device["user_code"] in page.text and NOTICE in page.text
    wrong = kc.http.post(device["verification_uri"], timeout=10, data={
        "user_code": device["user_code"], "username": ROOT, "password": "guess"})
    assert wrong.status_code == 401 and "Invalid username or password" in wrong.text
    assert _poll(kc, device).json()["error"] == "authorization_pending"
    no_code = kc.http.post(device["verification_uri"], timeout=10, data={
        "user_code": "BCDF-GHJK", "username": ROOT, "password": ROOT_PASSWORD})
    assert no_code.status_code == 400 and "Invalid code" in no_code.text
    approved = kc.http.post(device["verification_uri"], timeout=10, data={
        "user_code": device["user_code"].lower(), "username": ROOT, "password": ROOT_PASSWORD})
    assert approved.status_code == 200 and "Device Login Successful" in approved.text
    tokens = _poll(kc, device)
    assert tokens.status_code == 200, tokens.text
    claims = jws.verify(tokens.json()["access_token"], _served_key(kc))
    assert claims["vantage6_client_type"] == "user" and claims["preferred_username"] == ROOT
    assert claims["azp"] == PUBLIC_CLIENT
    refreshed = kc.token(grant_type="refresh_token", client_id=PUBLIC_CLIENT,
                         refresh_token=tokens.json()["refresh_token"])
    assert refreshed.status_code == 200
    # A device code gives tokens once.
    assert _poll(kc, device).json()["error"] == "invalid_grant"


def test_device_flow_denied(kc: Kc) -> None:
    device = _start_device(kc)
    kc.http.post(device["verification_uri"], timeout=10,
                 data={"user_code": device["user_code"], "action": "deny"})
    denied = _poll(kc, device)
    assert (denied.status_code, denied.json()["error"]) == (400, "access_denied")


def test_device_code_expires(http: requests.Session) -> None:
    with IdpStandin(_realm(lifespans=Lifespans(device=1, device_interval=0))) as short:
        kc = Kc(short, http)
        device = _start_device(kc)
        assert device["expires_in"] == 1
        assert _poll(kc, device).json()["error"] == "authorization_pending"
        expired = wait_for(lambda: _poll(kc, device).json()["error"] == "expired_token"
                           or None, timeout=10, what="the device code to expire")
        assert expired
        late = kc.http.post(device["verification_uri"], timeout=10, data={
            "user_code": device["user_code"], "username": ROOT, "password": ROOT_PASSWORD})
        assert late.status_code == 400


def test_polling_faster_than_the_interval_is_told_to_slow_down(http: requests.Session) -> None:
    with IdpStandin(_realm(lifespans=Lifespans(device_interval=30))) as slow:
        kc = Kc(slow, http)
        device = _start_device(kc)
        assert device["interval"] == 30
        assert _poll(kc, device).json()["error"] == "authorization_pending"
        assert _poll(kc, device).json()["error"] == "slow_down"


# -- the admin routes HQ uses ------------------------------------------------------------------


def test_admin_users_as_hq_uses_them(kc: Kc) -> None:
    body = {"username": "Researcher-X", "enabled": True,
            "credentials": [{"type": "password", "value": "pw-1234", "temporary": True}],
            "attributes": {"organization_id": ["3"]}}
    made = kc.admin("POST", "/users", json=body)
    assert made.status_code == 201
    uid = made.headers["Location"].rsplit("/", 1)[1]
    assert kc.admin("POST", "/users", json=body).status_code == 409
    found = kc.admin("GET", "/users", params={"username": "researcher-x", "exact": True,
                                              "max": 1}).json()
    assert [u["id"] for u in found] == [uid] and found[0]["username"] == "researcher-x"
    assert "password" not in found[0] and "credentials" not in found[0]
    user = kc.admin("GET", f"/users/{uid}").json()
    user["attributes"]["organization_id"] = ["4"]
    assert kc.admin("PUT", f"/users/{uid}", json=user).status_code == 204
    assert kc.admin("GET", f"/users/{uid}").json()["attributes"] == {"organization_id": ["4"]}
    # the temporary password works as it is (no required-action page here)
    assert kc.token(grant_type="password", client_id=SEEDING_CLIENT, username="researcher-x",
                    password="pw-1234").status_code == 200
    assert kc.admin("DELETE", f"/users/{uid}").status_code == 204
    gone = kc.admin("GET", f"/users/{uid}")
    assert gone.status_code == 404 and gone.json() == {"error": "User not found"}


def test_admin_clients_as_hq_uses_them(kc: Kc) -> None:
    uid, secret = kc.new_node_client("station-e")
    listed = kc.admin("GET", "/clients", params={"clientId": "station-e-node-client"}).json()
    assert [c["id"] for c in listed] == [uid]
    assert kc.admin("GET", "/clients", params={"clientId": "station-e"}).json() == []
    dup = kc.admin("POST", "/clients", json={"clientId": "station-e-node-client"})
    assert dup.status_code == 409
    assert kc.admin("DELETE", f"/clients/{uid}").status_code == 204
    # the service account went with it, and so did the login
    assert kc.admin("GET", "/users", params={
        "username": "service-account-station-e-node-client", "exact": True}).json() == []
    gone = kc.token(grant_type="client_credentials", client_id="station-e-node-client",
                    client_secret=secret)
    assert (gone.status_code, gone.json()["error"]) == (401, "invalid_client")
    assert kc.admin("DELETE", f"/clients/{uid}").status_code == 404


def test_unserved_routes_are_404_and_remembered(kc: Kc) -> None:
    before = kc.idp.unknown_routes
    certs = kc.http.get(f"{kc.idp.realm_url}/protocol/openid-connect/certs", timeout=10)
    assert certs.status_code == 404
    assert kc.idp.unknown_routes == [*before,
                                     f"GET /realms/{REALM}/protocol/openid-connect/certs"]
    other_realm = kc.http.get(f"{kc.idp.url}/realms/master", timeout=10)
    assert other_realm.status_code == 404
    assert other_realm.json() == {"error": "Realm does not exist"}


def test_realm_file_is_private_and_survives_a_restart(tmp_path: Path,
                                                      http: requests.Session) -> None:
    path = tmp_path / "realm.json"
    with IdpStandin(_realm(path)) as idp:
        kc = Kc(idp, http)
        _, secret = kc.new_node_client("station-f")
        key_before = _served_key(kc)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert ROOT_PASSWORD not in path.read_text()  # passwords only as hashes
        port = idp.port
        idp.stop()
        with pytest.raises(requests.ConnectionError):
            http.get(idp.realm_url, timeout=5)
        idp.realm = Realm.load(path, Lifespans(device_interval=0))
        idp.restart()
        assert idp.port == port
        assert _served_key(kc).public_numbers() == key_before.public_numbers()
        assert kc.token(grant_type="client_credentials", client_id="station-f-node-client",
                        client_secret=secret).status_code == 200
        assert base64.b64decode(kc.http.get(idp.realm_url, timeout=5).json()["public_key"])
