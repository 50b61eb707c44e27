"""The stand-in's HTTP side: stdlib ``ThreadingHTTPServer`` on 127.0.0.1, exactly the routes
HQ 5.0.3 (through python-keycloak 5.5.0) and the official 5.0.3 clients call.

| route | caller |
|---|---|
| ``GET /realms/{r}`` | HQ at start (realm ``public_key``), NodeClient's ``decode_token`` |
| ``GET /realms/{r}/.well-known/openid-configuration`` | UserClient (device flow) |
| ``POST /realms/{r}/protocol/openid-connect/token`` | everyone |
| ``POST /realms/{r}/protocol/openid-connect/auth/device`` | UserClient |
| ``GET``/``POST /realms/{r}/device`` | a person approving a device login |
| ``GET``/``POST /admin/realms/{r}/users``, ``GET``/``PUT``/``DELETE …/users/{id}`` | HQ |
| ``GET``/``POST /admin/realms/{r}/clients``, ``DELETE …/clients/{id}`` | HQ |
| ``GET``/``POST /admin/realms/{r}/clients/{id}/client-secret`` | HQ (API keys, recover) |

Anything else answers 404 and is remembered in :attr:`IdpStandin.unknown_routes`, so a test
sees at once when HQ or a client starts calling something the stand-in does not serve.
Requests are not logged: query strings and bodies carry usernames and secrets.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dss_console.sources.v6x5.standin.grants import NOTICE, Grants
from dss_console.sources.v6x5.standin.realm import KeycloakReply, Realm, admin_error

BIND_HOST = "127.0.0.1"
_MAX_BODY = 1 << 20

_Reply = tuple[int, Any, dict[str, str]]  # status, JSON value or HTML text, extra headers
_Route = Callable[["_Handler", dict[str, str]], _Reply]


def _json(status: int, value: Any = None, **headers: str) -> _Reply:
    return status, value, dict(headers)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # HTTP/1.0: one request per connection, so a stopped stand-in is gone for every client
    # at once (a kept-alive connection would go on being served by its thread: outage tests).
    protocol_version = "HTTP/1.0"
    server_version = f"dss-console-idp-standin ({NOTICE})"

    # -- plumbing --------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        return  # see the module docstring: no request log

    def _dispatch(self, method: str) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        self.query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query).items()}
        standin = self.server.standin
        for pattern, routes in _ROUTES:
            match = pattern.fullmatch(parsed.path)
            if match is None:
                continue
            route = routes.get(method)
            if route is None:
                break
            params = match.groupdict()
            try:
                if params.get("realm") != standin.realm.name:
                    raise admin_error(404, "Realm does not exist")
                if parsed.path.startswith("/admin/"):
                    standin.realm.check_admin(self.headers.get("Authorization"))
                status, value, headers = route(self, params)
            except KeycloakReply as reply:
                status, value, headers = reply.status, reply.body, {}
            except (ValueError, KeyError):
                status, value, headers = 400, {"error": "invalid request"}, {}
            self._send(status, value, headers)
            return
        standin.note_unknown(f"{method} {parsed.path}")
        self._send(404, {"error": "Unable to find matching target resource method"}, {})

    def _send(self, status: int, value: Any, headers: dict[str, str]) -> None:
        if isinstance(value, str):
            body, kind = value.encode("utf-8"), "text/html; charset=utf-8"
        elif value is None:
            body, kind = b"", ""
        else:
            body, kind = json.dumps(value).encode("utf-8"), "application/json"
        self.send_response(status)
        if kind:
            self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, text in headers.items():
            self.send_header(name, text)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            raise admin_error(413, "Request too large")
        return self.rfile.read(length) if length else b""

    def form(self) -> dict[str, str]:
        pairs = urllib.parse.parse_qs(self._body().decode("utf-8"), keep_blank_values=True)
        return {k: v[-1] for k, v in pairs.items()}

    def json_body(self) -> dict[str, Any]:
        value = json.loads(self._body() or b"{}")
        if not isinstance(value, dict):
            raise admin_error(400, "a JSON object is expected")
        return value

    @property
    def base(self) -> str:
        return self.server.standin.url

    def realm_url(self) -> str:
        return f"{self.base}/realms/{self.server.standin.realm.name}"

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- routes ----------------------------------------------------------------------------

    def realm_info(self, _: dict[str, str]) -> _Reply:
        return _json(200, self.server.standin.realm.info(self.realm_url()))

    def well_known(self, _: dict[str, str]) -> _Reply:
        issuer = self.realm_url()
        oidc = f"{issuer}/protocol/openid-connect"
        return _json(200, {
            "issuer": issuer, "token_endpoint": f"{oidc}/token",
            "device_authorization_endpoint": f"{oidc}/auth/device",
            "grant_types_supported": ["client_credentials", "password", "refresh_token",
                                      "urn:ietf:params:oauth:grant-type:device_code"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post",
                                                      "client_secret_basic"]})

    def token(self, _: dict[str, str]) -> _Reply:
        grants = self.server.standin.grants
        return _json(200, grants.token(self.realm_url(), self.form(),
                                       self.headers.get("Authorization")))

    def device_auth(self, _: dict[str, str]) -> _Reply:
        grants = self.server.standin.grants
        return _json(200, grants.device_authorization(self.realm_url(), self.form(),
                                                      self.headers.get("Authorization")))

    def device_form(self, _: dict[str, str]) -> _Reply:
        return 200, self.server.standin.grants.device_page(self.query.get("user_code", "")), {}

    def device_post(self, _: dict[str, str]) -> _Reply:
        status, page = self.server.standin.grants.device_submit(self.form())
        return status, page, {}

    def _admin_url(self, kind: str, uid: str) -> str:
        return f"{self.base}/admin/realms/{self.server.standin.realm.name}/{kind}/{uid}"

    def users(self, _: dict[str, str]) -> _Reply:
        return _json(200, self.server.standin.realm.list_users(self.query))

    def user_create(self, _: dict[str, str]) -> _Reply:
        uid = self.server.standin.realm.create_user(self.json_body())
        return _json(201, None, Location=self._admin_url("users", uid))

    def user_get(self, params: dict[str, str]) -> _Reply:
        return _json(200, self.server.standin.realm.get_user(params["id"]))

    def user_put(self, params: dict[str, str]) -> _Reply:
        self.server.standin.realm.update_user(params["id"], self.json_body())
        return _json(204)

    def user_delete(self, params: dict[str, str]) -> _Reply:
        self.server.standin.realm.delete_user(params["id"])
        return _json(204)

    def clients(self, _: dict[str, str]) -> _Reply:
        return _json(200, self.server.standin.realm.list_clients(self.query))

    def client_create(self, _: dict[str, str]) -> _Reply:
        uid = self.server.standin.realm.create_client(self.json_body())
        return _json(201, None, Location=self._admin_url("clients", uid))

    def client_delete(self, params: dict[str, str]) -> _Reply:
        self.server.standin.realm.delete_client(params["id"])
        return _json(204)

    def secret_get(self, params: dict[str, str]) -> _Reply:
        return _json(200, self.server.standin.realm.client_secret(params["id"]))

    def secret_new(self, params: dict[str, str]) -> _Reply:
        self._body()  # python-keycloak posts an empty JSON body
        return _json(200, self.server.standin.realm.client_secret(params["id"],
                                                                  regenerate=True))


_R = r"(?P<realm>[^/]+)"
_ID = r"(?P<id>[^/]+)"
_ROUTES: list[tuple[re.Pattern[str], dict[str, _Route]]] = [
    (re.compile(rf"/realms/{_R}"), {"GET": _Handler.realm_info}),
    (re.compile(rf"/realms/{_R}/\.well-known/openid-configuration"),
     {"GET": _Handler.well_known}),
    (re.compile(rf"/realms/{_R}/protocol/openid-connect/token"), {"POST": _Handler.token}),
    (re.compile(rf"/realms/{_R}/protocol/openid-connect/auth/device"),
     {"POST": _Handler.device_auth}),
    (re.compile(rf"/realms/{_R}/device"),
     {"GET": _Handler.device_form, "POST": _Handler.device_post}),
    (re.compile(rf"/admin/realms/{_R}/users"),
     {"GET": _Handler.users, "POST": _Handler.user_create}),
    (re.compile(rf"/admin/realms/{_R}/users/{_ID}"),
     {"GET": _Handler.user_get, "PUT": _Handler.user_put, "DELETE": _Handler.user_delete}),
    (re.compile(rf"/admin/realms/{_R}/clients"),
     {"GET": _Handler.clients, "POST": _Handler.client_create}),
    (re.compile(rf"/admin/realms/{_R}/clients/{_ID}"), {"DELETE": _Handler.client_delete}),
    (re.compile(rf"/admin/realms/{_R}/clients/{_ID}/client-secret"),
     {"GET": _Handler.secret_get, "POST": _Handler.secret_new}),
]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: IdpStandin


class IdpStandin:
    """``with IdpStandin(realm) as idp:`` — the realm served on 127.0.0.1 (``port=0``: any
    free port; a given port is reused by :meth:`restart`, for outage tests)."""

    def __init__(self, realm: Realm, port: int = 0) -> None:
        self.realm = realm
        self.grants = Grants(realm)
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._unknown: list[str] = []
        self._lock = threading.Lock()

    def start(self) -> IdpStandin:
        server = _Server((BIND_HOST, self._port), _Handler)
        server.standin = self
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="idp-standin",
                                        kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def restart(self) -> None:
        """Stop and serve again on the same port (device logins in progress are lost)."""
        self.stop()
        self.grants = Grants(self.realm)
        self.start()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """The auth server's URL (what ``KEYCLOAK_URL`` and ``--auth-url`` take)."""
        return f"http://{BIND_HOST}:{self._port}"

    @property
    def realm_url(self) -> str:
        return f"{self.url}/realms/{self.realm.name}"

    def note_unknown(self, route: str) -> None:
        with self._lock:
            self._unknown.append(route)

    @property
    def unknown_routes(self) -> list[str]:
        with self._lock:
            return list(self._unknown)

    def __enter__(self) -> IdpStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.stop()
