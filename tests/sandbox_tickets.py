"""A demo ticket made for one test and deleted after it (the ``ready_ticket`` fixture's body,
also used on its own by the test of that fixture)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from dss_console.sandbox import Sandbox, SandboxError


@contextlib.contextmanager
def new_ready_ticket(sandbox: Sandbox) -> Iterator[int]:
    """A new ``ready`` demo ticket; deleted afterwards so the queue stays empty."""
    ticket_id = sandbox.add_ticket()
    try:
        yield ticket_id
    finally:
        # Teardown must not mask the test's own outcome.
        with contextlib.suppress(SandboxError):
            sandbox.admin.delete_ticket(ticket_id)
