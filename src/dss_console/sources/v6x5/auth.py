"""A vantage6 5.x node's login: an OAuth client-credentials token from the server's Keycloak.

The node is the Keycloak client ``{node name}-node-client`` and its API key is that client's
secret. As the official 5.0.3 ``NodeClient`` does (through python-keycloak), the token is
checked before use against the realm's ``public_key`` (``GET <auth>/realms/<realm>``): a
wrong auth URL or realm fails here, in words, and not as an HQ 401 later. Keycloak gives a
client-credentials login no refresh token, so "refresh" is a new token with the same
secret, taken when less than a quarter of the token's lifetime is left (the official node's
rule). When that early renewal cannot reach the auth server, the current token serves until
it expires: an auth server's short outage does not stop a node whose token is still good.

The API key and the tokens never appear in an exception text, a log line or a ``repr``:
errors name the auth server, the realm, the client id and Keycloak's error code only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from dss_console.core.interfaces import Failure
from dss_console.sources.v6.client import (
    DEFAULT_TIMEOUT,
    V6BadReplyError,
    V6Error,
    V6NotLoggedInError,
    V6ServerError,
    V6UnreachableError,
    _reason,
    classify_v6_error,
)
from dss_console.sources.v6x5 import jws

DEFAULT_REALM = "vantage6"
# A token's `exp` is the auth server's clock; ours may be a little ahead.
CLOCK_LEEWAY = 60.0
# Renew when less than this share of the token's lifetime is left.
RENEW_AT_REMAINING = 0.25
# A token is not presented in the last moments of its life (a request takes time): this
# share of its lifetime, at most a second.
EXPIRY_MARGIN_SHARE = 0.05
EXPIRY_MARGIN_MAX = 1.0
# After a renewal failed for a passing reason: the next attempt waits this long at most
# (and no longer than a quarter of what is left of the current token's life).
RETRY_WAIT_MAX = 10.0

log = logging.getLogger(__name__)


def node_client_id(node: str) -> str:
    """The Keycloak client a 5.x node logs in as (HQ names it so when the node is made)."""
    return f"{node}-node-client"


def normalise_auth_url(url: str) -> str:
    """The auth server's base URL (Keycloak's, without ``/realms/…``); ValueError in words."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    if "/realms/" in url + "/":
        url = url.split("/realms", 1)[0]
    return url


class IdpRefusedError(V6NotLoggedInError):
    """The auth server does not take this client id and secret (unknown client, wrong or
    regenerated secret): the node must log in again with its current API key."""


class ClientCredentials:
    """One node's tokens. ``token()`` gives a valid access token (renewed when due),
    ``renew()`` a new one now. Thread-safe; blocking (HTTP)."""

    def __init__(self, auth_url: str, realm: str, client_id: str, secret: str, *,
                 http: requests.Session | None = None, verify: bool | str = True,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> None:
        self.auth_url = normalise_auth_url(auth_url)
        self.realm = realm or DEFAULT_REALM
        self.client_id = client_id
        self._secret = secret
        self._timeout = timeout
        self._owns_http = http is None
        self._http = http or requests.Session()
        if http is None:
            self._http.verify = verify
        self._lock = threading.Lock()
        self._key: rsa.RSAPublicKey | None = None
        self._access: str | None = None
        self._renew_after = 0.0  # time.monotonic() after which token() renews
        self._usable_until = 0.0  # time.monotonic() after which the token is not presented
        self._retry_after = 0.0  # time.monotonic() before which a failed renewal is not retried
        self._renewing = threading.Lock()  # one renewal at a time
        self.claims: dict[str, Any] = {}

    def __repr__(self) -> str:  # the secret and the token stay out of tracebacks
        return (f"ClientCredentials(auth_url={self.auth_url!r}, realm={self.realm!r}, "
                f"client_id={self.client_id!r})")

    @property
    def realm_url(self) -> str:
        return f"{self.auth_url}/realms/{self.realm}"

    @property
    def current(self) -> str | None:
        """The token last issued (perhaps due for renewal), without any call."""
        with self._lock:
            return self._access

    def token(self) -> str:
        """A token with at least a quarter of its lifetime left: renewed first when not.
        If the renewal fails for a passing reason (the auth server unreachable or answering
        5xx) while the current token has not expired, the current token is given, and the
        next attempt waits min(10 s, a quarter of the token's remaining life): during an
        outage each HQ call does not first wait out the HTTP timeout. One thread renews at
        a time; the others take the current token meanwhile (or wait, when it is unusable)."""
        with self._lock:
            now = time.monotonic()
            usable = self._access is not None and now < self._usable_until
            if self._access is not None and (now < self._renew_after
                                             or (usable and now < self._retry_after)):
                return self._access
        if not self._renewing.acquire(blocking=not usable):
            with self._lock:
                if self._access is not None and time.monotonic() < self._usable_until:
                    return self._access
            self._renewing.acquire()
        try:
            with self._lock:  # another thread may have renewed while this one waited
                if self._access is not None and time.monotonic() < self._renew_after:
                    return self._access
            try:
                return self.renew()
            except V6Error as exc:
                if classify_v6_error(exc) is not Failure.TRANSIENT:
                    raise
                with self._lock:
                    access, now = self._access, time.monotonic()
                    left = self._usable_until - now
                    self._retry_after = now + min(RETRY_WAIT_MAX, max(left, 0.0) / 4)
                if access is None or left <= 0:
                    raise
                log.info("token renewal failed (%s); the current token has %.0f s left",
                         type(exc).__name__, left)
                return access
        finally:
            self._renewing.release()

    def renew(self) -> str:
        """A new token now (after HQ refused the current one, or when it is due)."""
        started = time.monotonic()
        data = self._post_token()
        access = data.get("access_token")
        if not isinstance(access, str) or not access:
            raise V6BadReplyError(f"{self._where()}: the token answer has no access token")
        claims = self._check(access)
        lifetime = _lifetime(data, claims)
        with self._lock:
            self._access = access
            self.claims = claims
            self._renew_after = started + lifetime * (1 - RENEW_AT_REMAINING)
            self._usable_until = started + lifetime - min(EXPIRY_MARGIN_MAX,
                                                          lifetime * EXPIRY_MARGIN_SHARE)
        return access

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    # -- the auth server -------------------------------------------------------------------

    def _where(self) -> str:
        return f"the authentication server {self.auth_url} (realm {self.realm!r})"

    def _post_token(self) -> dict[str, Any]:
        try:
            reply = self._http.post(
                f"{self.realm_url}/protocol/openid-connect/token", timeout=self._timeout,
                data={"grant_type": "client_credentials", "client_id": self.client_id,
                      "client_secret": self._secret})
        except requests.RequestException as exc:
            raise V6UnreachableError(f"{self._where()}: {_reason(exc)}") from None
        body = _json_object(reply)
        if reply.status_code == 200 and body is not None:
            return body
        error = str((body or {}).get("error") or "")[:80]
        if reply.status_code in (400, 401) and error in ("invalid_client",
                                                         "unauthorized_client"):
            raise IdpRefusedError(
                f"{self._where()} refused this node's API key for client "
                f"{self.client_id!r} ({error}): check the node's name and its current API key",
                401)
        if reply.status_code == 404:
            raise V6ServerError(f"{self._where()}: no such realm (HTTP 404): check the auth "
                                "URL and the realm", 404)
        if body is None:
            raise V6BadReplyError(f"{self._where()}: the token endpoint answered no JSON "
                                  f"(HTTP {reply.status_code}): not a Keycloak realm?",
                                  reply.status_code)
        raise V6ServerError(f"{self._where()}: the token request failed (HTTP "
                            f"{reply.status_code}: {error or 'no error code'})",
                            reply.status_code)

    def _realm_key(self, *, fresh: bool = False) -> rsa.RSAPublicKey:
        with self._lock:
            if self._key is not None and not fresh:
                return self._key
        try:
            reply = self._http.get(self.realm_url, timeout=self._timeout)
        except requests.RequestException as exc:
            raise V6UnreachableError(f"{self._where()}: {_reason(exc)}") from None
        body = _json_object(reply)
        if reply.status_code == 404:
            raise V6ServerError(f"{self._where()}: no such realm (HTTP 404)", 404)
        if reply.status_code != 200 or body is None:
            raise V6BadReplyError(f"{self._where()}: the realm answered HTTP "
                                  f"{reply.status_code} without its public key",
                                  reply.status_code)
        text = body.get("public_key")
        try:
            key = jws.load_public_key_b64(text if isinstance(text, str) else "")
        except ValueError as exc:
            raise V6BadReplyError(f"{self._where()}: {exc}") from None
        with self._lock:
            self._key = key
        return key

    def _check(self, token: str) -> dict[str, Any]:
        """The token's claims once its signature (realm key) and expiry hold, and it is a
        node's. The key is read again once when the signature fails: the realm may have
        rotated it."""
        try:
            claims = jws.verify(token, self._realm_key(), leeway=CLOCK_LEEWAY)
        except jws.TokenError:
            try:
                claims = jws.verify(token, self._realm_key(fresh=True), leeway=CLOCK_LEEWAY)
            except jws.TokenError as exc:
                raise V6BadReplyError(f"{self._where()} issued a token that does not verify "
                                      f"with the realm's public key ({exc}): check the auth "
                                      "URL and the realm") from None
        kind = claims.get("vantage6_client_type")
        if kind != "node":
            raise V6ServerError(f"{self._where()}: client {self.client_id!r} is not a "
                                f"vantage6 node (its tokens say {str(kind)[:20]!r})", 403)
        return claims


def _json_object(reply: requests.Response) -> dict[str, Any] | None:
    try:
        data = reply.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _lifetime(reply: Mapping[str, Any], claims: Mapping[str, Any]) -> float:
    """Seconds the token lives: ``expires_in``, else ``exp - iat``, at least one."""
    value = reply.get("expires_in")
    if not isinstance(value, (int, float)):
        exp, iat = claims.get("exp"), claims.get("iat")
        value = exp - iat if isinstance(exp, (int, float)) and isinstance(iat, (int, float)) \
            else 60
    return max(float(value), 1.0)
