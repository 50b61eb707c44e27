"""The loopback proxy through which a running algorithm reaches the server (subtasks).

The official node runs one for its containers; an algorithm's ``AlgorithmClient`` talks to
``HOST:PORT`` + ``API_PATH`` from its environment with its container token. Here:

* only ``Authorization: Bearer <container token>`` values this worker issued pass (401
  otherwise) — another local user's process cannot borrow the node's rights;
* ``POST /task``: in an encrypted collaboration each ``organizations[i].input`` (base64 of
  the serialized input, as the algorithm client sends it) is re-encrypted for that
  organization's public key;
* ``GET /result…`` and ``GET /run…``: every ``result`` is decrypted with this
  organization's key and handed back base64 (what the algorithm client decodes);
* anything else is forwarded unchanged, with the algorithm's own token.

Bound to 127.0.0.1 on a free port; one ThreadingHTTPServer per worker (all runs share it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dss_console.sources.v6 import crypto
from dss_console.sources.v6.client import V6Error, V6NodeClient

log = logging.getLogger(__name__)

_MAX_BODY = 64 * 1024 * 1024
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length",
                "content-encoding", "server", "date"}


class SubtaskProxy:
    """``start()`` → port; ``allow(token)`` per run, ``revoke(token)`` when it ends."""

    def __init__(self, client: V6NodeClient, cryptor: crypto.PlainCryptor | crypto.RsaCryptor,
                 *, input_field: str = "input") -> None:
        self.client = client
        self.cryptor = cryptor
        # Where a new task carries each organization's input: 4.x "input"; a later server
        # generation names it otherwise (5.x: "arguments").
        self.input_field = input_field
        self._allowed: set[str] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the subtask proxy is not running")
        return int(self._server.server_address[1])

    def start(self) -> int:
        if self._server is not None:
            return self.port
        proxy = self

        class Handler(_Handler):
            owner = proxy

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="v6-proxy",
                                        daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def allow(self, token: str) -> None:
        with self._lock:
            self._allowed.add(_digest(token))

    def revoke(self, token: str) -> None:
        with self._lock:
            self._allowed.discard(_digest(token))

    def allowed(self, token: str) -> bool:
        with self._lock:
            return _digest(token) in self._allowed

    # -- payload rewriting ---------------------------------------------------------------

    def encrypt_task_inputs(self, body: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(self.cryptor, crypto.RsaCryptor):
            return body
        field = self.input_field
        for org in body.get("organizations") or []:
            if not isinstance(org, dict) or not org.get(field):
                continue
            plain = crypto.b64decode(str(org[field]))
            public = self.client.organization_public_key(int(org["id"]))
            org[field] = crypto.rsa_encrypt(plain, public)
        return body

    def decrypt_results(self, data: Any) -> Any:
        if not isinstance(self.cryptor, crypto.RsaCryptor):
            return data
        items = data.get("data") if isinstance(data, dict) and "data" in data else [data]
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and isinstance(item.get("result"), str) and item["result"]:
                try:
                    item["result"] = crypto.b64encode(self.cryptor.decrypt(item["result"]))
                except crypto.CryptoError:
                    # Not for us (another organization's result): leave it unreadable.
                    log.info("proxy: a result could not be decrypted with this node's key")
        return data


class RefusingPort:
    """A loopback port nothing answers on, held for the worker's life: the ``PORT`` of a run
    that may not call the server. ``0`` would not do: HTTP clients read port 0 as the
    scheme's default and would send the run's token to whatever listens on 127.0.0.1:80.
    Bound and never listening, the port refuses every connection at once, and no other
    process can bind it while it is held."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]

    def close(self) -> None:
        self._socket.close()


def _digest(token: str) -> str:
    # Only digests are kept, so a memory dump of the allow-list shows no usable token.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    owner: SubtaskProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("proxy: %s", format % args)

    def do_GET(self) -> None:
        self._forward("GET")

    def do_POST(self) -> None:
        self._forward("POST")

    def do_PATCH(self) -> None:
        self._forward("PATCH")

    def do_DELETE(self) -> None:
        self._forward("DELETE")

    def do_PUT(self) -> None:
        self._forward("PUT")

    def _forward(self, method: str) -> None:
        auth = self.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not token or not self.owner.allowed(token):
            self._reply(401, {"msg": "this proxy accepts only tokens its node issued"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            self._reply(413, {"msg": "request too large"})
            return
        body = self.rfile.read(length) if length else None
        path, _, query = self.path.partition("?")
        # API_PATH is "" in the child's environment, so paths arrive without /api.
        if path.startswith("/api/"):
            path = path[4:]
        try:
            if method == "POST" and path.rstrip("/") == "/task" and body:
                payload = self.owner.encrypt_task_inputs(json.loads(body))
                body = json.dumps(payload).encode("utf-8")
            reply = self.owner.client.request_raw(
                method, path + ("?" + query if query else ""), token=token, body=body,
                content_type=self.headers.get("Content-Type"))
        except (V6Error, crypto.CryptoError, ValueError) as exc:
            self._reply(502, {"msg": f"proxy: {exc}"})
            return
        content = reply.content
        if method == "GET" and path.startswith(("/result", "/run")) and reply.ok:
            with contextlib.suppress(ValueError):  # not JSON: pass it on untouched
                content = json.dumps(self.owner.decrypt_results(reply.json())).encode("utf-8")
        self.send_response(reply.status_code)
        for name, value in reply.headers.items():
            if name.lower() not in _HOP_HEADERS:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def _reply(self, status: int, data: dict[str, Any]) -> None:
        content = json.dumps(data).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)
