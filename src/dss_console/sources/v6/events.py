"""Push events from the vantage6 server: socket.io namespace ``/tasks`` (python-socketio).

Only a wake-up and a fast path: polling stays the backstop (vantage6#1372, #1829, #2386:
nodes that lose the socket and never come back). The server (4.15.2) sends a node

* ``new_task`` ``{id, parent_id}`` → :class:`NewWork`;
* ``kill_containers`` ``{kill_list: [{run_id, task_id, organization_id}], …}`` or
  ``{node_id, collaboration_id}`` (kill everything on a node) → :class:`WorkGone`;
* ``sync`` right after connecting, ``expired_token``/``invalid_token`` when the JWT is bad
  (then the token is refreshed and the socket reconnects).

Reconnection is ours, not python-socketio's: its built-in reconnect would present the same
(perhaps expired) token forever. A supervisor thread connects with the current token, waits
for the disconnect, backs off (1 s doubling to 30 s) and connects again; each connect
re-sends ``node_info_update`` and wakes the engine (work may have come while down).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from dss_console.core.interfaces import Connection, NewWork, SourceEvent, WorkGone
from dss_console.sources.v6.client import NodeIdentity, V6Error, V6NodeClient

log = logging.getLogger(__name__)

NAMESPACE = "/tasks"
_BACKOFF_START = 1.0
_BACKOFF_MAX = 30.0


class V6Events:
    """``start()`` once; ``close()`` disconnects and stops reconnecting. Callbacks run on
    python-socketio's threads: ``notify`` must be quick and thread-safe (engine.wake())."""

    # The server's events and the method each calls: a later server generation's subclass
    # adds or renames events here (sources/v6x5).
    HANDLERS: ClassVar[dict[str, str]] = {
        "connect": "_on_connect",
        "disconnect": "_on_disconnect",
        "new_task": "_on_new_task",
        "sync": "_on_new_task",
        "kill_containers": "_on_kill",
        "expired_token": "_on_bad_token",
        "invalid_token": "_on_bad_token",
    }

    def __init__(self, client: V6NodeClient, identity: NodeIdentity,
                 notify: Callable[[SourceEvent], None], *,
                 node_info: Callable[[], dict[str, Any]] | None = None) -> None:
        import socketio  # the v6 extra; imported here so the rest works without it

        self._client = client
        self._identity = identity
        self._notify = notify
        self._node_info = node_info
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._sio = socketio.Client(reconnection=False, ssl_verify=client.verify,
                                    logger=False, engineio_logger=False)
        for event, method in self.HANDLERS.items():
            self._sio.on(event, getattr(self, method), namespace=NAMESPACE)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._supervise, name="v6-socket", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        try:
            self._sio.disconnect()
        except Exception:  # already down; close() must not raise
            log.debug("socket disconnect on close failed", exc_info=True)
        if self._thread is not None:
            self._thread.join(10)

    # -- emitting (presence) -------------------------------------------------------------

    def algorithm_status_change(self, *, run_id: int, task_id: int, status: str,
                                parent_id: int | None = None) -> None:
        """Tell the collaboration a run's status changed (the UI shows it live)."""
        self._emit("algorithm_status_change", {
            "run_id": run_id, "task_id": task_id, "status": status, "parent_id": parent_id,
            "node_id": self._identity.node_id,
            "collaboration_id": self._identity.collaboration_id,
            "organization_id": self._identity.organization_id,
        })

    def node_info_update(self, info: dict[str, Any]) -> None:
        """The node's configuration summary (the server stores it for this session)."""
        self._emit("node_info_update", info)

    def ping(self) -> None:
        self._emit("ping", None)

    def _emit(self, event: str, data: Any) -> None:
        if not self.connected:
            return  # presence is best effort: the REST state is the truth
        try:
            self._sio.emit(event, data, namespace=NAMESPACE)
        except Exception:
            log.debug("socket emit %s failed", event, exc_info=True)

    # -- the connection -----------------------------------------------------------------

    def _supervise(self) -> None:
        backoff = _BACKOFF_START
        base = self._client.server_root
        while not self._stop.is_set():
            try:
                token = self._fresh_token()
                self._sio.connect(base, headers={"Authorization": f"Bearer {token}"},
                                  namespaces=[NAMESPACE], socketio_path="socket.io",
                                  wait_timeout=10)
                backoff = _BACKOFF_START
                self._sio.wait()  # returns when the connection is gone
            except V6Error as exc:
                log.info("socket: cannot refresh the token (%s); polling only for now",
                         type(exc).__name__)
            except Exception as exc:  # socketio.exceptions.ConnectionError and the like
                log.info("socket: connection failed (%s); polling only for now",
                         type(exc).__name__)
            self._set_connected(False)
            # Waiting on the stop event, not sleeping: close() ends the back-off at once.
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, _BACKOFF_MAX)

    def _fresh_token(self) -> str | None:
        """The token a (re)connect presents: the client's, refreshed when it has none."""
        token = self._client.access_token
        if token is None:
            self._client.refresh()
            token = self._client.access_token
        return token

    def _set_connected(self, up: bool) -> None:
        was = self._connected.is_set()
        if up:
            self._connected.set()
        else:
            self._connected.clear()
        if was != up:
            self._safe_notify(Connection(up))

    def _on_connect(self) -> None:
        self._set_connected(True)
        if self._node_info is not None:
            self.node_info_update(self._node_info())
        self._safe_notify(NewWork())  # work may have arrived while the socket was down

    def _on_disconnect(self, *args: Any) -> None:
        self._set_connected(False)

    def _on_new_task(self, data: Any = None) -> None:
        self._safe_notify(NewWork())

    def _on_kill(self, data: Any = None) -> None:
        if not isinstance(data, dict):
            return
        if data.get("node_id") is not None:
            if data.get("node_id") == self._identity.node_id:
                self._safe_notify(WorkGone((), all=True))
            return
        runs = tuple(int(item["run_id"]) for item in data.get("kill_list") or []
                     if isinstance(item, dict) and item.get("run_id") is not None
                     and item.get("organization_id") == self._identity.organization_id)
        if runs:
            self._safe_notify(WorkGone(runs))

    def _on_bad_token(self, data: Any = None) -> None:
        # Refresh, then drop the connection: the supervisor reconnects with the new token.
        try:
            self._client.refresh()
        except V6Error as exc:
            log.info("socket: token refresh failed (%s)", type(exc).__name__)
        threading.Thread(target=self._sio.disconnect, daemon=True).start()

    def _safe_notify(self, event: SourceEvent) -> None:
        try:
            self._notify(event)
        except Exception:  # a subscriber's bug must not kill the socket thread
            log.exception("v6 event handler failed")
