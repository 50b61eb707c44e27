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
a run                              its input is ``arguments`` (4.x: ``input``); it has an
                                   ``action``; more statuses end it (:class:`HqRun`)
``PATCH /run/<id>``                4.x's semantics; a researcher's kill leaves only ``log``
                                   patchable ("Only the log can be updated for a killed
                                   run!", 400) and any other body is refused: gone
``POST session/dataframe/<id>/column``  the columns of a dataframe this node made
``GET session?collaboration_id=``  the sessions HQ still has (the reconcile at connect)
=================================  ==============================================

Errors, paging, timeouts and redaction are 4.x's (``classify_v6_error`` maps them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from dss_console.sources.v6.client import (
    DEFAULT_TIMEOUT,
    FINISHED_STATUSES,
    Run,
    V6BadReplyError,
    V6NodeClient,
    V6NotFoundError,
    V6NotLoggedInError,
    V6RunFinishedError,
    V6ServerError,
    _int_or_none,
)
from dss_console.sources.v6x5.auth import DEFAULT_REALM, ClientCredentials, node_client_id

API_PATH = "/hq"
SESSION_PAGE = 1000  # sessions per page of the reconcile's list (HQ sets no maximum)
# vantage6.common.enum.RunStatus (5.0.3): 4.x's ending statuses and these.
FINISHED_STATUSES_5 = FINISHED_STATUSES | {"dataframe not found", "depended on failed task",
                                           "unexpected output"}


@dataclasses.dataclass(frozen=True)
class HqRun(Run):
    """A 5.x run: 4.x's fields, the input read from ``arguments``, and its action."""

    finished_statuses: ClassVar[frozenset[str]] = FINISHED_STATUSES_5

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HqRun:
        run = super().from_json(data)
        arguments = data.get("arguments")
        return dataclasses.replace(run, input=arguments if isinstance(arguments, str) else None)

    @property
    def action(self) -> str:
        """``data_extraction``, ``preprocessing``, ``federated_compute``, ``central_compute``
        or ``postprocessing``."""
        return str(self.raw.get("action") or self.task.get("action") or "")

    @property
    def method(self) -> str:
        return str(self.task.get("method") or "")

    @property
    def session_id(self) -> int | None:
        session = self.task.get("session")
        return _int_or_none(session.get("id") if isinstance(session, dict) else session)

    @property
    def dataframe(self) -> tuple[int, str, str] | None:
        """The dataframe an extraction or preprocessing run makes: (id, name, database
        label); None for other runs."""
        frame = self.task.get("dataframe")
        if not isinstance(frame, dict):
            return None
        frame_id = _int_or_none(frame.get("id"))
        if frame_id is None:
            return None
        return frame_id, str(frame.get("name") or ""), str(frame.get("db_label") or "")

    @property
    def blob_storage_used(self) -> bool:
        return bool(self.raw.get("blob_storage_used"))


class HqNodeClient(V6NodeClient):
    """One 5.x node's session with HQ. ``login(api_key)`` takes a token for
    ``{node}-node-client``; every later call renews it when it is due."""

    api_path: ClassVar[str] = API_PATH
    token_refused_statuses: ClassVar[frozenset[int]] = frozenset({401, 422})
    run_type: ClassVar[type[Run]] = HqRun

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

    # -- runs ---------------------------------------------------------------------------

    def patch_run(self, run_id: int, **fields: Any) -> dict[str, Any]:
        """4.x's, and a killed run (only its log may change) refusing anything else is
        V6RunFinishedError too."""
        try:
            return super().patch_run(run_id, **fields)
        except V6ServerError as exc:
            if exc.status == 400 and "killed run" in str(exc):
                raise V6RunFinishedError(str(exc), 400) from None
            raise

    def post_columns(self, dataframe_id: int, columns: Sequence[tuple[str, str]]) -> None:
        """``POST session/dataframe/<id>/column``: this node's columns of a dataframe
        (name, dtype as pyarrow prints it), replacing what it reported before."""
        self._call("POST", f"/session/dataframe/{int(dataframe_id)}/column",
                   json=[{"name": name, "dtype": dtype} for name, dtype in columns])

    def session_ids(self, collaboration_id: int) -> set[int]:
        """The sessions HQ has in the collaboration (``GET session?collaboration_id=``,
        paged; a node may view its collaboration's sessions). Sorted by id: HQ 5.0.3 pages
        by OFFSET and sorts only when asked, so unsorted pages may skip a session."""
        return {session_id for item in self._pages(
                    "/session", {"collaboration_id": collaboration_id, "sort": "id",
                                 "per_page": SESSION_PAGE})
                if (session_id := _int_or_none(item.get("id"))) is not None}

    def session_gone(self, session_id: int) -> bool:
        """``GET session/<id>`` answers 404: HQ no longer has it (any other answer or
        error: it may still be there)."""
        try:
            self.get(f"/session/{int(session_id)}")
        except V6NotFoundError:
            return True
        return False

    def blob_store_enabled(self) -> bool:
        """Whether HQ keeps results in a blob store (5.0.3: Azure), which this node does
        not use."""
        return bool(self.get("/blobstream/status").get("blob_store_enabled"))
