"""A vantage6 5.x node's REST client: 4.x's :class:`V6NodeClient` on HQ's ``/hq`` base, with
the login through the server's Keycloak (``auth.ClientCredentials``).

What differs from 4.x, and only that, is here:

=================================  ==============================================
login                              a client-credentials token from the auth server
                                   (no ``POST /token/node``), checked with the realm key
token refused                      401 (expired, unknown) and 422 (flask-jwt-extended's
                                   "Signature verification failed"): one new token, one retry
``GET /node/me``                   who this node is (5.x answers it for a node token)
``GET /blobstream/status``         ``{"blob_store_enabled"}``: this node cannot use one
=================================  ==============================================

Errors, paging, timeouts and redaction are 4.x's (``classify_v6_error`` maps them).
"""

from __future__ import annotations

from typing import Any, ClassVar

from dss_console.sources.v6.client import (
    DEFAULT_TIMEOUT,
    V6BadReplyError,
    V6NodeClient,
    V6NotLoggedInError,
    _int_or_none,
)
from dss_console.sources.v6x5.auth import DEFAULT_REALM, ClientCredentials, node_client_id

API_PATH = "/hq"


class HqNodeClient(V6NodeClient):
    """One 5.x node's session with HQ. ``login(api_key)`` takes a token for
    ``{node}-node-client``; every later call renews it when it is due."""

    api_path: ClassVar[str] = API_PATH
    token_refused_statuses: ClassVar[frozenset[int]] = frozenset({401, 422})

    def __init__(self, server: str, *, auth_url: str, node: str, realm: str = DEFAULT_REALM,
                 verify: bool | str = True,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> None:
        super().__init__(server, verify=verify, timeout=timeout)
        self.auth_url = auth_url
        self.realm = realm or DEFAULT_REALM
        self.node_name = node
        self._credentials: ClientCredentials | None = None

    def __repr__(self) -> str:
        return (f"HqNodeClient(api_url={self.api_url!r}, auth_url={self.auth_url!r}, "
                f"realm={self.realm!r}, node={self.node_name!r})")

    def __enter__(self) -> HqNodeClient:
        return self

    # -- session -------------------------------------------------------------------------

    def login(self, api_key: str) -> None:
        """A token from the auth server (V6NotLoggedInError: the key is not accepted), then
        ``GET node/me`` for this node's id."""
        credentials = ClientCredentials(self.auth_url, self.realm,
                                        node_client_id(self.node_name), api_key,
                                        http=self._http, timeout=self.timeout)
        credentials.renew()
        with self._lock:
            self._credentials = credentials
        self._node_record()

    def refresh(self) -> None:
        """A new token now (HQ refused the current one, or the socket said it expired)."""
        credentials = self._credentials_or_fail()
        credentials.renew()

    @property
    def access_token(self) -> str | None:
        with self._lock:
            credentials = self._credentials
        return credentials.current if credentials is not None else None

    @property
    def credentials(self) -> ClientCredentials | None:
        return self._credentials

    def _bearer(self) -> str:
        # Renewed before the call when less than a quarter of its lifetime is left.
        return self._credentials_or_fail().token()

    def _credentials_or_fail(self) -> ClientCredentials:
        with self._lock:
            credentials = self._credentials
        if credentials is None:
            raise V6NotLoggedInError("not logged in", 401)
        return credentials

    # -- who am I -----------------------------------------------------------------------

    def _node_record(self) -> dict[str, Any]:
        node = self.get("/node/me")
        node_id = _int_or_none(node.get("id"))
        if node_id is None:
            raise V6BadReplyError("GET /node/me: the answer has no node id")
        self.node_id = node_id
        return node

    def blob_store_enabled(self) -> bool:
        """Whether HQ keeps results in a blob store (5.0.3: Azure), which this node does
        not use."""
        return bool(self.get("/blobstream/status").get("blob_store_enabled"))
