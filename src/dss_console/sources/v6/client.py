"""A vantage6 4.x node's REST client, written by hand on ``requests``.

Why not the official ``NodeClient``: it has no timeout on any call, retries a connection
error forever, refreshes the token on every status above 210 and reports failures as log
lines. The engine's outbox needs bounded calls and errors in four kinds, so every call here
has a timeout and every failure is one :class:`V6Error` subclass that
:func:`classify_v6_error` maps to transient / logged out / gone / refused.

Tokens and the API key never appear in an exception text or a log line: error messages carry
the method, the path (ids only) and the server's ``msg``, nothing from a request's headers.

Endpoints (read from vantage6-server 4.15.2 and checked against it):

=================================  ==============================================
``POST /token/node {api_key}``     ``{access_token, refresh_token, node_url, …}``
``POST /token/refresh``            refresh token as bearer → new access token
``GET /node/<id>``                 name, organization, collaboration, status
``GET /collaboration/<id>``        ``encrypted``
``GET /organization/<id>``         ``public_key`` (base64 PEM) · PATCH it to upload
``GET /run?state=open&node_id=N&include=task``  this node's open runs, paginated
``GET /run/<id>?include=task``     one run (404: gone)
``PATCH /run/<id>``                started_at/status/log/result/finished_at — note the
                                   server *overwrites* ``log``, ``result`` and
                                   ``finished_at`` with what the body has (None when absent)
``POST /token/container``          ``{task_id, image}`` → ``{container_token}``
=================================  ==============================================
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import requests

from dss_console.core.interfaces import Failure

TRANSIENT, LOGGED_OUT, GONE, REFUSED = (Failure.TRANSIENT, Failure.LOGGED_OUT, Failure.GONE,
                                        Failure.REFUSED)

DEFAULT_TIMEOUT = (10.0, 60.0)  # (connect, read) seconds: every call is bounded
API_PATH = "/api"
# vantage6.common.task_status.TaskStatus (4.15.2)
FINISHED_STATUSES = frozenset({"completed", "crashed", "failed", "start failed",
                               "non-existing Docker image", "killed by user", "not allowed",
                               "unknown error"})
FAILED_STATUSES = FINISHED_STATUSES - {"completed"}


# -- errors ------------------------------------------------------------------------------


class V6Error(Exception):
    """Any failure talking to the vantage6 server. ``status`` is the HTTP status or None."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class V6UnreachableError(V6Error):
    """No answer: connection refused, DNS, timeout, TLS handshake (transient)."""


class V6ServerError(V6Error):
    """An HTTP error answer. 5xx transient, others refused unless a subclass says more."""


class V6NotLoggedInError(V6ServerError):
    """The API key is not (or no longer) accepted, or the token cannot be refreshed."""


class V6NotFoundError(V6ServerError):
    """The run/task does not exist (any more): the researcher deleted it (gone)."""


class V6RunFinishedError(V6ServerError):
    """The run is already finished on the server (killed, or failed by a sibling): gone."""


class V6BadReplyError(V6Error):
    """The answer is not the JSON the API sends (a proxy's HTML page, a cut-off body)."""


def classify_v6_error(error: BaseException) -> Failure:
    """The engine's four kinds (see ``core/interfaces.py``)."""
    if isinstance(error, V6NotLoggedInError):
        return LOGGED_OUT
    if isinstance(error, V6NotFoundError | V6RunFinishedError):
        return GONE
    if isinstance(error, V6UnreachableError | V6BadReplyError):
        return TRANSIENT
    if isinstance(error, V6ServerError):
        if error.status is not None and (error.status >= 500 or error.status == 429):
            return TRANSIENT
        return REFUSED
    return REFUSED


# -- models ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeIdentity:
    """Who this API key is."""

    node_id: int
    name: str
    organization_id: int
    organization_name: str
    collaboration_id: int
    collaboration_name: str
    encrypted: bool


_RunT = TypeVar("_RunT", bound="Run")


@dataclass(frozen=True)
class Run:
    """One run (a task's execution at this organization), as ``GET /run…&include=task``."""

    id: int
    status: str
    task_id: int
    image: str
    input: str | None
    started_at: str | None
    finished_at: str | None
    task: dict[str, Any] = field(repr=False, default_factory=dict)
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    # The statuses that end a run (a later server generation has more).
    finished_statuses: ClassVar[frozenset[str]] = FINISHED_STATUSES

    @property
    def finished(self) -> bool:
        return self.finished_at is not None or self.status in self.finished_statuses

    @property
    def parent_id(self) -> int | None:
        parent = self.task.get("parent")
        if isinstance(parent, dict):
            return _int_or_none(parent.get("id"))
        return _int_or_none(parent)

    @property
    def job_id(self) -> int | None:
        return _int_or_none(self.task.get("job_id"))

    @property
    def init_org_id(self) -> int | None:
        org = self.task.get("init_org")
        return _int_or_none(org.get("id")) if isinstance(org, dict) else _int_or_none(org)

    @property
    def init_user_id(self) -> int | None:
        user = self.task.get("init_user")
        return _int_or_none(user.get("id")) if isinstance(user, dict) else _int_or_none(user)

    @property
    def databases(self) -> list[dict[str, Any]]:
        dbs = self.task.get("databases") or []
        return [d for d in dbs if isinstance(d, dict)]

    @classmethod
    def from_json(cls: type[_RunT], data: Mapping[str, Any]) -> _RunT:
        task = data.get("task")
        task = task if isinstance(task, dict) else {}
        run_id = _int_or_none(data.get("id"))
        task_id = _int_or_none(task.get("id") if task else _ref_id(data.get("task")))
        if run_id is None or task_id is None:
            raise V6BadReplyError("a run in the server's answer has no id or task id")
        return cls(id=run_id, status=str(data.get("status") or ""), task_id=task_id,
                   image=str(task.get("image") or ""), input=data.get("input"),
                   started_at=data.get("started_at"), finished_at=data.get("finished_at"),
                   task=dict(task), raw=dict(data))


def _ref_id(value: Any) -> Any:
    if isinstance(value, dict):
        return value.get("id")
    return value


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def now_iso() -> str:
    """The timestamp format the server parses (ISO 8601, UTC)."""
    return dt.datetime.now(dt.timezone.utc).isoformat()


def normalise_server_url(url: str, api_path: str = API_PATH) -> str:
    """``http://host:port`` or ``…/api`` → the API base URL ending in ``/api`` (``api_path``:
    another server generation's base, e.g. 5.x's ``/hq``)."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    return url if url.endswith(api_path) else url + api_path


PROBE_TIMEOUT = 5.0  # seconds: a version probe picks the plug-in, it must not hang a login


def server_major_version(api_url: str, verify: bool | str = True) -> str | None:
    """The major version ``GET <api_url>/version`` names (``{"version": "4.15.2"}`` → ``"4"``);
    None when the answer is no such JSON (another server generation, or no vantage6).
    V6UnreachableError when nothing answers."""
    try:
        reply = requests.get(api_url + "/version", timeout=PROBE_TIMEOUT, verify=verify)
    except requests.RequestException as exc:
        raise V6UnreachableError(f"GET /version: {_reason(exc)}") from None
    data = _json_or_none(reply)
    version = data.get("version") if reply.status_code == 200 and isinstance(data, dict) \
        else None
    if not isinstance(version, str) or not version[:1].isdigit():
        return None
    return version.split(".", 1)[0]


# -- the client --------------------------------------------------------------------------


class V6NodeClient:
    """One node's session. Thread-safe: one ``requests.Session`` behind a lock for the
    token, calls themselves run in parallel (requests' pool is thread-safe for this use).

    Seams for another server generation (``sources/v6x5``): ``api_path``, the statuses that
    mean "this token is not accepted" (one refresh and one retry), and ``access_token`` /
    ``refresh`` / ``login`` / ``whoami``, which a subclass overrides."""

    api_path: ClassVar[str] = API_PATH
    # 4.x answers an expired or unknown token with 401.
    token_refused_statuses: ClassVar[frozenset[int]] = frozenset({401})
    run_type: ClassVar[type[Run]] = Run  # what a run of this server is read as

    def __init__(self, server: str, *, verify: bool | str = True,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> None:
        self.api_url = normalise_server_url(server, self.api_path)
        self.timeout = timeout
        self._http = requests.Session()
        self._http.verify = verify
        self._lock = threading.Lock()
        self._api_key: str | None = None
        self._access: str | None = None
        self._refresh: str | None = None
        self.node_id: int | None = None

    # -- session -------------------------------------------------------------------------

    def login(self, api_key: str) -> None:
        """``POST /token/node``; V6NotLoggedInError when the key is not accepted."""
        try:
            data = self._call("POST", "/token/node", json={"api_key": api_key}, auth=False)
        except V6ServerError as exc:
            if exc.status == 400:  # the server checks the key's shape (a UUID) first
                raise V6NotLoggedInError("the API key is not accepted: not a vantage6 node "
                                         "API key (a UUID)", 400) from None
            raise
        access, refresh = data.get("access_token"), data.get("refresh_token")
        if not isinstance(access, str) or not access:
            raise V6BadReplyError("the login answer has no access token")
        with self._lock:
            self._api_key = api_key
            self._access = access
            self._refresh = refresh if isinstance(refresh, str) else None
        node_url = data.get("node_url")
        if isinstance(node_url, str) and node_url.rstrip("/").rsplit("/", 1)[-1].isdigit():
            self.node_id = int(node_url.rstrip("/").rsplit("/", 1)[-1])

    def refresh(self) -> None:
        """New access token with the refresh token; falls back to logging in with the API
        key (the node's own behaviour), so an expired refresh token is no outage."""
        with self._lock:
            refresh, api_key = self._refresh, self._api_key
        if refresh:
            try:
                data = self._call("POST", "/token/refresh", auth=False,
                                  headers={"Authorization": f"Bearer {refresh}"})
                access = data.get("access_token")
                if isinstance(access, str) and access:
                    with self._lock:
                        self._access = access
                        new_refresh = data.get("refresh_token")
                        if isinstance(new_refresh, str) and new_refresh:
                            self._refresh = new_refresh
                    return
            except V6NotLoggedInError:
                pass
        if api_key is None:
            raise V6NotLoggedInError("not logged in: no API key", 401)
        self.login(api_key)

    @property
    def verify(self) -> bool | str:
        """TLS verification as configured (True, or a CA bundle path): the socket uses it too."""
        verify: bool | str | None = self._http.verify
        return True if verify is None else verify

    @property
    def server_root(self) -> str:
        """The server without the API path: where socket.io lives."""
        return self.api_url[: -len(self.api_path)]

    @property
    def access_token(self) -> str | None:
        with self._lock:
            return self._access

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> V6NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- who am I -----------------------------------------------------------------------

    def whoami(self) -> NodeIdentity:
        """Node, organization, collaboration and whether it is encrypted."""
        node = self._node_record()
        node_id = self.node_id
        if node_id is None:
            raise V6NotLoggedInError("not logged in", 401)
        org_id = _int_or_none(_ref_id(node.get("organization")))
        collab_id = _int_or_none(_ref_id(node.get("collaboration")))
        if org_id is None or collab_id is None:
            raise V6BadReplyError("the node record has no organization or collaboration")
        org = self.get(f"/organization/{org_id}")
        collab = self.get(f"/collaboration/{collab_id}")
        return NodeIdentity(
            node_id=node_id, name=str(node.get("name") or ""),
            organization_id=org_id, organization_name=str(org.get("name") or ""),
            collaboration_id=collab_id, collaboration_name=str(collab.get("name") or ""),
            encrypted=bool(collab.get("encrypted")))

    def _node_record(self) -> dict[str, Any]:
        """This node's record (4.x: by the id the login answer named)."""
        if self.node_id is None:
            raise V6NotLoggedInError("not logged in", 401)
        return self.get(f"/node/{self.node_id}")

    # -- runs ---------------------------------------------------------------------------

    def open_runs(self, per_page: int = 100) -> list[Run]:
        """This node's runs without ``finished_at``, oldest first, every page."""
        if self.node_id is None:
            raise V6NotLoggedInError("not logged in", 401)
        runs = [self.run_type.from_json(item) for item in self._pages(
            "/run", {"state": "open", "node_id": self.node_id, "include": "task",
                     "per_page": per_page})]
        return sorted(runs, key=lambda r: r.id)

    def get_run(self, run_id: int) -> Run:
        """V6NotFoundError when the run is gone (the task was deleted)."""
        return self.run_type.from_json(self.get(f"/run/{int(run_id)}",
                                                params={"include": "task"}))

    def patch_run(self, run_id: int, **fields: Any) -> dict[str, Any]:
        """``PATCH /run/<id>``: V6RunFinishedError when the server already finished it."""
        try:
            return self._call("PATCH", f"/run/{int(run_id)}", json=fields)
        except V6ServerError as exc:
            if exc.status == 400 and "already finished" in str(exc):
                raise V6RunFinishedError(str(exc), 400) from None
            raise

    def container_token(self, task_id: int, image: str) -> str:
        """``POST /token/container``: the JWT an algorithm uses (and the proxy checks)."""
        try:
            data = self._call("POST", "/token/container",
                              json={"task_id": int(task_id), "image": image})
        except V6ServerError as exc:
            if exc.status == 400 and "already finished" in str(exc):
                raise V6RunFinishedError(str(exc), 400) from None
            if exc.status == 400 and "does not exist" in str(exc):
                raise V6NotFoundError(str(exc), 404) from None
            raise
        token = data.get("container_token")
        if not isinstance(token, str) or not token:
            raise V6BadReplyError("the container token answer has no token")
        return token

    # -- organizations ------------------------------------------------------------------

    def organization_public_key(self, org_id: int) -> str | None:
        key = self.get(f"/organization/{int(org_id)}").get("public_key")
        return key if isinstance(key, str) and key else None

    def upload_public_key(self, org_id: int, public_key_b64: str) -> None:
        self._call("PATCH", f"/organization/{int(org_id)}", json={"public_key": public_key_b64})

    # -- plumbing -----------------------------------------------------------------------

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self._call("GET", path, params=params)

    def request_raw(self, method: str, path: str, *, token: str, params: Any = None,
                    body: bytes | None = None, content_type: str | None = None
                    ) -> requests.Response:
        """One call with another bearer (the subtask proxy forwards an algorithm's calls
        with its container token). Returns the response as is; raises only V6Unreachable."""
        headers = {"Authorization": f"Bearer {token}"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            return self._http.request(method, self.api_url + path, params=params, data=body,
                                      headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise V6UnreachableError(f"{method} {path}: {_reason(exc)}") from None

    def _bearer(self) -> str:
        """The token a call carries (a subclass may renew it first, when it is due)."""
        token = self.access_token
        if token is None:
            raise V6NotLoggedInError("not logged in", 401)
        return token

    def _pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        page = 1
        while True:
            data = self._call("GET", path, params={**params, "page": page})
            items = data.get("data")
            if not isinstance(items, list):
                raise V6BadReplyError(f"GET {path}: the answer has no data list")
            yield from (item for item in items if isinstance(item, dict))
            links = data.get("links")
            links = links if isinstance(links, dict) else {}
            if not links.get("next") or not items or page >= 10_000:
                return
            page += 1

    def _call(self, method: str, path: str, *, auth: bool = True, retried: bool = False,
              headers: dict[str, str] | None = None, **kwargs: Any) -> dict[str, Any]:
        all_headers = dict(headers or {})
        if auth:
            all_headers["Authorization"] = f"Bearer {self._bearer()}"
        try:
            reply = self._http.request(method, self.api_url + path, headers=all_headers,
                                       timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise V6UnreachableError(f"{method} {path}: {_reason(exc)}") from None
        refused = reply.status_code in self.token_refused_statuses
        if refused and auth and not retried:
            # An expired access token: refresh once, then the call once more.
            self.refresh()
            return self._call(method, path, auth=auth, retried=True, headers=headers, **kwargs)
        if refused and auth:
            # Still refused with a fresh token: the server uses 401 for "not allowed" as well.
            raise V6ServerError(f"{method} {path}: not allowed (HTTP {reply.status_code}: "
                                f"{_server_msg(_json_or_none(reply))})", reply.status_code)
        return _decode(method, path, reply)


def _decode(method: str, path: str, reply: requests.Response) -> dict[str, Any]:
    where = f"{method} {path}"
    try:
        data = reply.json()
    except ValueError:
        data = None
    status = reply.status_code
    if status >= 400 or data is None:
        ctype = reply.headers.get("Content-Type", "")
        if data is None:
            kind = "an HTML page" if "html" in ctype.lower() else "no JSON"
            if status < 400:
                raise V6BadReplyError(f"{where}: the server answered {kind} (HTTP {status}): "
                                      "not a vantage6 API, or a proxy in between", status)
            msg = f"HTTP {status} with {kind}"
        else:
            msg = f"HTTP {status}: {_server_msg(data)}"
        if status == 401 and path.startswith("/token/"):
            raise V6NotLoggedInError(f"{where}: not accepted ({msg})", status)
        if status == 401:
            raise V6NotLoggedInError(f"{where}: {msg}", status)
        if status == 404:
            raise V6NotFoundError(f"{where}: {msg}", status)
        raise V6ServerError(f"{where}: {msg}", status)
    if not isinstance(data, dict):
        raise V6BadReplyError(f"{where}: the answer is JSON but not an object", status)
    return data


def _json_or_none(reply: requests.Response) -> Any:
    try:
        return reply.json()
    except ValueError:
        return None


def _server_msg(data: Any) -> str:
    if isinstance(data, dict):
        msg = data.get("msg") or data.get("message") or ""
        errors = data.get("errors")
        text = str(msg)
        if errors:
            text += f" {errors}"
        return text[:300] or "(no message)"
    return "(no message)"


def _reason(exc: requests.RequestException) -> str:
    # Never str(exc) of the request: urllib3 texts may quote the URL, never headers, but keep
    # it to the exception type plus the innermost reason to stay short and secret-free.
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS verification failed"
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect"
    return type(exc).__name__
