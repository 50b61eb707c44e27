"""Push events from HQ 5.x: 4.x's :class:`V6Events` (our own reconnect loop, polling as the
backstop) with 5.0.3's event names. socket.io lives at the server root, namespace ``/tasks``,
the Keycloak token in the ``Authorization`` header, as in 4.x.

5.0.3 sends a node ``new_task_update`` ``{id, parent_id}`` where 4.x sent ``new_task``;
``kill_containers``, ``sync``, ``expired_token`` and ``invalid_token`` keep their 4.x shapes.
``delete_dataframe`` ``{df_name, session_id}`` (a researcher deleted a dataframe, or its
session) goes to ``delete_dataframe`` (the session store removes the file) and is answered
with ``dataframe_deleted`` ``{df_name, session_id, node_id}``, as the official node answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

from dss_console.core.interfaces import SourceEvent
from dss_console.sources.v6.client import NodeIdentity
from dss_console.sources.v6.events import V6Events
from dss_console.sources.v6x5.client import HqNodeClient

log = logging.getLogger(__name__)


class HqEvents(V6Events):
    HANDLERS: ClassVar[dict[str, str]] = {
        **V6Events.HANDLERS,
        "new_task_update": "_on_new_task",
        "delete_dataframe": "_on_delete_dataframe",
    }

    def __init__(self, client: HqNodeClient, identity: NodeIdentity,
                 notify: Callable[[SourceEvent], None], *,
                 node_info: Callable[[], dict[str, Any]] | None = None,
                 delete_dataframe: Callable[[int, str], None] | None = None) -> None:
        self._delete_dataframe = delete_dataframe
        super().__init__(client, identity, notify, node_info=node_info)

    def _fresh_token(self) -> str | None:
        # A connect presents a token with life left (renewed first when due), not the last
        # one issued: HQ would answer an expired one with `expired_token` and a disconnect.
        client = self._client
        if isinstance(client, HqNodeClient) and client.credentials is not None:
            return client.credentials.token()
        return super()._fresh_token()

    def _on_delete_dataframe(self, data: Any = None) -> None:
        if not isinstance(data, dict):
            return
        session_id, name = data.get("session_id"), data.get("df_name")
        if not isinstance(session_id, int) or not isinstance(name, str) or not name:
            return
        if self._delete_dataframe is not None:
            try:
                self._delete_dataframe(session_id, name)
            except Exception:  # a bad name or a disk error must not kill the socket thread
                log.exception("deleting dataframe %r of session %s failed", name[:80],
                              session_id)
                return
        self._emit("dataframe_deleted", {"df_name": name, "session_id": session_id,
                                         "node_id": self._identity.node_id})
