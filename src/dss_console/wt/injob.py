"""Inside a job: reports for the job's own ticket go through the job's events file.

The engine starts a service's command with ``DSS_TICKET_ID`` and ``DSS_EVENTS`` set; what
the command says about that ticket (log, progress, attachments) is then appended to the
events file by the same writer as ``$DSS_HOOK``, so the engine relays it in order through
its journaled outbox, across server outages. Calls about other tickets go to the server.
"""

from __future__ import annotations

import contextlib
import io
import os

from dss_console.engine.hook import hook_main

from .cmdline import WtError

__all__ = ["job_ticket", "report_to_job"]


def job_ticket() -> int | None:
    """The ticket the engine started this process for, if any."""
    if not os.environ.get("DSS_EVENTS"):
        return None
    try:
        return int(os.environ.get("DSS_TICKET_ID", ""))
    except ValueError:
        return None


def report_to_job(args: list[str]) -> None:
    """One hook call (``progress S E V``, ``info MSG``, ``attach DESC FILE [MIME]``)."""
    problem = io.StringIO()
    with contextlib.redirect_stderr(problem):
        code = hook_main(args)
    if code != 0:
        # The hook's own words ("dss hook: the ticket is no longer being processed ...").
        message = problem.getvalue().strip().splitlines()
        raise WtError(message[0] if message else f"the job's hook refused {args[0]}")
