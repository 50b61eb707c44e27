"""Push events from HQ 5.x: 4.x's :class:`V6Events` (our own reconnect loop, polling as the
backstop) with 5.0.3's event names. socket.io lives at the server root, namespace ``/tasks``,
the Keycloak token in the ``Authorization`` header, as in 4.x.

5.0.3 sends a node ``new_task_update`` ``{id, parent_id}`` where 4.x sent ``new_task``;
``kill_containers``, ``sync``, ``expired_token`` and ``invalid_token`` keep their 4.x shapes.
``delete_dataframe`` (answered with ``dataframe_deleted``) arrives with the sessions (plan §4,
step 6).
"""

from __future__ import annotations

from typing import ClassVar

from dss_console.sources.v6.events import V6Events
from dss_console.sources.v6x5.client import HqNodeClient


class HqEvents(V6Events):
    HANDLERS: ClassVar[dict[str, str]] = {
        **V6Events.HANDLERS,
        "new_task_update": "_on_new_task",
    }

    def _fresh_token(self) -> str | None:
        # A connect presents a token with life left (renewed first when due), not the last
        # one issued: HQ would answer an expired one with `expired_token` and a disconnect.
        client = self._client
        if isinstance(client, HqNodeClient) and client.credentials is not None:
            return client.credentials.token()
        return super()._fresh_token()
