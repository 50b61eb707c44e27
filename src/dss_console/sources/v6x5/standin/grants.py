"""The token endpoint and the device flow of the stand-in, with Keycloak's refusals.

Grants: ``client_credentials`` (nodes ``{name}-node-client``, service accounts
``{user}-user-client``, HQ's admin client), ``password`` (only clients with direct access
grants: the sandbox's seeding client), ``refresh_token`` and the device code grant
(``public_client``, what the official UserClient uses). Device codes live in memory: a
restart of the stand-in ends logins in progress, as a Keycloak restart without a shared
cache does.
"""

from __future__ import annotations

import base64
import html
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from dss_console.sources.v6x5 import jws
from dss_console.sources.v6x5.standin.realm import Realm, oauth_error

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
NOTICE = "not an identity provider: for the sandbox"
_BAD_CLIENT = "Invalid client or Invalid client credentials"
_USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # Keycloak's: no vowels, no look-alikes


@dataclass
class DeviceGrant:
    user_code: str
    client_id: str
    expires_at: float
    interval: int
    last_poll: float = 0.0
    user_id: str | None = None
    denied: bool = False


class Grants:
    """What ``/protocol/openid-connect/*`` and ``/device`` answer for one realm."""

    def __init__(self, realm: Realm) -> None:
        self.realm = realm
        self._devices: dict[str, DeviceGrant] = {}
        self._lock = threading.Lock()

    # -- client authentication -----------------------------------------------------------

    def _authenticate_client(self, form: dict[str, str],
                             authorization: str | None) -> dict[str, Any]:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.startswith("Basic "):
            try:
                pair = base64.b64decode(authorization[6:]).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                raise oauth_error(401, "invalid_client", _BAD_CLIENT) from None
            name, _, password = pair.partition(":")
            client_id = urllib.parse.unquote_plus(name)
            secret = urllib.parse.unquote_plus(password)
        if not client_id:
            raise oauth_error(401, "invalid_client", "Missing parameter: client_id")
        client = self.realm.client(client_id)
        if client is None or not client["enabled"]:
            raise oauth_error(401, "invalid_client", _BAD_CLIENT)
        if client["publicClient"]:
            return client
        if not secret:
            raise oauth_error(401, "unauthorized_client", "Client secret not provided in request")
        if not secrets.compare_digest(str(client["secret"]), secret):
            raise oauth_error(401, "unauthorized_client", _BAD_CLIENT)
        return client

    # -- the token endpoint --------------------------------------------------------------

    def token(self, issuer: str, form: dict[str, str],
              authorization: str | None) -> dict[str, Any]:
        grant = form.get("grant_type")
        if not grant:
            raise oauth_error(400, "invalid_request", "Missing form parameter: grant_type")
        if grant not in ("client_credentials", "password", "refresh_token", DEVICE_GRANT):
            raise oauth_error(400, "unsupported_grant_type", "Unsupported grant_type")
        client = self._authenticate_client(form, authorization)
        if grant == "client_credentials":
            if client["publicClient"]:
                raise oauth_error(401, "unauthorized_client",
                                  "Public client not allowed to retrieve service account")
            if not client["serviceAccountsEnabled"]:
                raise oauth_error(401, "unauthorized_client",
                                  "Client not enabled to retrieve service account")
            return self.realm.issue(issuer, client, self.realm.service_account(client),
                                    refresh=False)
        if grant == "password":
            if not client["directAccessGrantsEnabled"]:
                raise oauth_error(400, "unauthorized_client",
                                  "Client not allowed for direct access grants")
            user = self.realm.check_password(form.get("username", ""), form.get("password", ""))
            if user is None:
                raise oauth_error(401, "invalid_grant", "Invalid user credentials")
            return self.realm.issue(issuer, client, user, refresh=True)
        if grant == "refresh_token":
            return self._refresh(issuer, client, form.get("refresh_token", ""))
        return self._device_token(issuer, client, form.get("device_code", ""))

    def _refresh(self, issuer: str, client: dict[str, Any], token: str) -> dict[str, Any]:
        try:
            claims = self.realm.verify(token)
        except jws.TokenError as exc:
            words = "Token is not active" if "expired" in str(exc) else "Invalid refresh token"
            raise oauth_error(400, "invalid_grant", words) from None
        if claims.get("typ") != "Refresh":
            raise oauth_error(400, "invalid_grant", "Invalid refresh token")
        if claims.get("azp") != client["clientId"]:
            raise oauth_error(400, "invalid_grant", "Invalid refresh token. Token client and "
                                                    "authorized client don't match")
        user = self.realm.user_by_id(str(claims.get("sub")))
        if user is None or not user["enabled"]:
            raise oauth_error(400, "invalid_grant", "User not found")
        return self.realm.issue(issuer, client, user, refresh=True,
                                scope=str(claims.get("scope", "profile email")))

    # -- the device flow (RFC 8628) ------------------------------------------------------

    def device_authorization(self, realm_url: str, form: dict[str, str],
                             authorization: str | None) -> dict[str, Any]:
        client = self._authenticate_client(form, authorization)
        if not client["deviceGrantEnabled"]:
            raise oauth_error(400, "unauthorized_client",
                              "Client is not allowed to initiate OAuth 2.0 Device Authorization"
                              " Grant. The flow is disabled for the client.")
        life = self.realm.lifespans
        letters = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(8))
        user_code = f"{letters[:4]}-{letters[4:]}"
        device_code = secrets.token_urlsafe(32)
        with self._lock:
            self._devices[device_code] = DeviceGrant(
                user_code=user_code, client_id=client["clientId"],
                expires_at=time.monotonic() + life.device, interval=life.device_interval)
        page = f"{realm_url}/device"
        return {"device_code": device_code, "user_code": user_code, "verification_uri": page,
                "verification_uri_complete": f"{page}?user_code={user_code}",
                "expires_in": life.device, "interval": life.device_interval}

    def _device_token(self, issuer: str, client: dict[str, Any],
                      device_code: str) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            grant = self._devices.get(device_code)
            if grant is None or grant.client_id != client["clientId"]:
                raise oauth_error(400, "invalid_grant", "Device code not valid")
            if now > grant.expires_at:
                del self._devices[device_code]
                raise oauth_error(400, "expired_token", "Device code is expired")
            if grant.denied:
                del self._devices[device_code]
                raise oauth_error(400, "access_denied",
                                  "The end user denied the authorization request.")
            if grant.user_id is None:
                too_soon = now - grant.last_poll < grant.interval
                grant.last_poll = now
                if too_soon:
                    raise oauth_error(400, "slow_down", "Slow down")
                raise oauth_error(400, "authorization_pending",
                                  "The authorization request is still pending")
            del self._devices[device_code]  # a device code gives tokens once
            user_id = grant.user_id
        user = self.realm.user_by_id(user_id)
        if user is None:
            raise oauth_error(400, "invalid_grant", "User not found")
        return self.realm.issue(issuer, client, user, refresh=True,
                                scope="openid profile email")

    def _grant_for(self, user_code: str) -> tuple[str, DeviceGrant] | None:
        wanted = user_code.strip().upper()
        for device_code, grant in self._devices.items():
            if grant.user_code == wanted:
                return device_code, grant
        return None

    def device_page(self, user_code: str = "", message: str = "") -> str:
        """The form a person (or a test, over real HTTP) approves a device login with."""
        code = html.escape(user_code)
        said = f"<p class='message'>{html.escape(message)}</p>" if message else ""
        return (f"<!doctype html><html><head><title>Device login ({NOTICE})</title></head>"
                f"<body><h1>Device login — realm {html.escape(self.realm.name)}</h1>"
                f"<p><em>{NOTICE}</em></p>{said}"
                "<form method='post'>"
                f"<label>Code <input name='user_code' value='{code}'></label>"
                "<label>Username <input name='username'></label>"
                "<label>Password <input name='password' type='password'></label>"
                "<button name='action' value='approve'>Yes</button>"
                "<button name='action' value='deny'>No</button></form></body></html>")

    def device_submit(self, form: dict[str, str]) -> tuple[int, str]:
        """The form's POST: (status, page). Approves or denies the matching device login."""
        with self._lock:
            found = self._grant_for(form.get("user_code", ""))
            if found is None or time.monotonic() > found[1].expires_at:
                return 400, self.device_page(message="Invalid code, please try again.")
            grant = found[1]
            if form.get("action") == "deny":
                grant.denied = True
                return 200, self._done_page("Device login denied.")
        user = self.realm.check_password(form.get("username", ""), form.get("password", ""))
        if user is None:
            return 401, self.device_page(grant.user_code, "Invalid username or password.")
        with self._lock:
            grant.user_id = user["id"]
        return 200, self._done_page("Device Login Successful. You may close this window.")

    def _done_page(self, words: str) -> str:
        return (f"<!doctype html><html><head><title>{html.escape(words)}</title></head><body>"
                f"<h1>{html.escape(words)}</h1><p><em>{NOTICE}</em></p></body></html>")

