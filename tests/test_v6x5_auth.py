"""The 5.x node's Keycloak login (`auth.ClientCredentials`) against the stand-in alone (real
HTTP, no HQ, a few seconds): the token is renewed when a quarter of its life is left, an
auth server that is down is transient and one back is used again, a regenerated secret is
"log in again", and the secret never shows in an error or a repr."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from dss_console.core.interfaces import Failure
from dss_console.sources.v6.client import V6UnreachableError, classify_v6_error
from dss_console.sources.v6x5 import jws
from dss_console.sources.v6x5.auth import ClientCredentials, IdpRefusedError, node_client_id
from dss_console.sources.v6x5.standin import IdpStandin, Lifespans, Realm

from waiting import wait_for

ACCESS_LIFESPAN = 4  # seconds: renewed after 3


def _node_client(realm: Realm, name: str) -> tuple[str, str]:
    """A node's client as HQ makes it (uuid, secret)."""
    uid = realm.create_client({
        "clientId": node_client_id(name), "publicClient": False, "enabled": True,
        "serviceAccountsEnabled": True, "standardFlowEnabled": False,
        "protocolMappers": [{"name": "vantage6_client_type", "protocol": "openid-connect",
                             "protocolMapper": "oidc-hardcoded-claim-mapper",
                             "config": {"claim.name": "vantage6_client_type",
                                        "claim.value": "node", "access.token.claim": True}}]})
    return uid, realm.client_secret(uid)["value"]


@pytest.fixture
def idp() -> Iterator[IdpStandin]:
    realm = Realm.create("vantage6", admin_client="admin", admin_secret="admin-secret-123",
                         admin_username="root", admin_password="root-password-1",
                         lifespans=Lifespans(access=ACCESS_LIFESPAN))
    with IdpStandin(realm) as standin:
        yield standin


def test_a_token_is_renewed_when_a_quarter_of_its_life_is_left(idp: IdpStandin) -> None:
    _, secret = _node_client(idp.realm, "station")
    credentials = ClientCredentials(idp.url, "vantage6", node_client_id("station"), secret)
    try:
        started = time.monotonic()
        first = credentials.token()
        assert credentials.token() == first and credentials.current == first
        assert jws.unverified_claims(first)["azp"] == "station-node-client"
        renewed = wait_for(lambda: credentials.token() != first, timeout=30,
                           what="a renewed token")
        assert renewed
        # Not before three quarters of the lifetime (3 s of 4) had passed.
        assert time.monotonic() - started >= ACCESS_LIFESPAN * 0.75 - 0.1
        assert idp.realm.verify(credentials.token())["vantage6_client_type"] == "node"
    finally:
        credentials.close()


def test_an_auth_server_down_is_transient_and_one_back_is_used_again(idp: IdpStandin) -> None:
    _, secret = _node_client(idp.realm, "station")
    credentials = ClientCredentials(idp.url, "vantage6", node_client_id("station"), secret)
    try:
        credentials.renew()
        idp.stop()
        with pytest.raises(V6UnreachableError) as down:
            credentials.renew()
        assert classify_v6_error(down.value) is Failure.TRANSIENT
        assert idp.url in str(down.value) and secret not in str(down.value)
        idp.start()  # the same port
        assert idp.realm.verify(credentials.renew())["azp"] == "station-node-client"
    finally:
        credentials.close()


def test_a_regenerated_secret_means_log_in_again(idp: IdpStandin) -> None:
    uid, secret = _node_client(idp.realm, "station")
    credentials = ClientCredentials(idp.url, "vantage6", node_client_id("station"), secret)
    try:
        credentials.renew()
        idp.realm.client_secret(uid, regenerate=True)  # what HQ's `recover` does
        with pytest.raises(IdpRefusedError) as refused:
            credentials.renew()
        assert classify_v6_error(refused.value) is Failure.LOGGED_OUT
        assert "refused this node's API key" in str(refused.value)
        for text in (str(refused.value), repr(credentials)):
            assert secret not in text
    finally:
        credentials.close()


class _CountingSession(requests.Session):
    """A real HTTP session that counts the token requests it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.posts = 0
        self._count_lock = threading.Lock()

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        with self._count_lock:
            self.posts += 1
        return super().post(*args, **kwargs)


def test_during_an_outage_renewal_is_tried_after_a_wait_by_one_thread() -> None:
    """The auth server stopped with a token still usable: each call past renew-after does
    not make an attempt of its own (each HQ call would first wait out the HTTP timeout,
    in every thread): one attempt, then the next after min(10 s, a quarter of the life
    left); the current token is given meanwhile; renewal resumes when the server is back."""
    lifespan = 8  # renewed after 6 s, presented until 7.6 s: the retry waits about 0.4 s
    realm = Realm.create("vantage6", admin_client="admin", admin_secret="admin-secret-123",
                         admin_username="root", admin_password="root-password-1",
                         lifespans=Lifespans(access=lifespan))
    with IdpStandin(realm) as idp:
        _, secret = _node_client(idp.realm, "station")
        http = _CountingSession()
        credentials = ClientCredentials(idp.url, "vantage6", node_client_id("station"),
                                        secret, http=http)
        try:
            first = credentials.renew()
            due = time.monotonic() + lifespan * 0.75
            idp.stop()
            wait_for(lambda: time.monotonic() >= due, timeout=30, what="the renewal due")
            before = http.posts
            started = time.monotonic()
            barrier = threading.Barrier(8)
            given: list[str] = []

            def call() -> None:
                barrier.wait()
                given.append(credentials.token())

            threads = [threading.Thread(target=call) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
            given += [credentials.token() for _ in range(20)]
            elapsed = time.monotonic() - started
            assert given == [first] * 28
            attempts = http.posts - before
            # One attempt; more only where the burst itself outlasted a retry wait (load).
            assert 1 <= attempts <= 1 + int(elapsed / 0.2), (attempts, elapsed)
            # The next attempt comes once the wait is over.
            wait_for(lambda: credentials.token() and http.posts > before + attempts,
                     timeout=10, what="the retry after the wait")
            idp.start()  # the same port
            renewed = wait_for(lambda: (lambda t: t if t != first else None)(
                credentials.token()), timeout=10, what="a renewal with the server back")
            assert idp.realm.verify(renewed)["azp"] == "station-node-client"
        finally:
            credentials.close()
