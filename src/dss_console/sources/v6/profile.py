"""How a vantage6 node's runs behave and read in the core (the engine asks the source's
``rules`` and ``words``, never its kind).

A run's inputs come from ``fetch_inputs`` (decrypted input, a fresh container token for each
life of the run), its command is ``V6Source.command`` → (argv, env) run *exactly* (the official
wrapper base32-decodes every variable it sees), and its end is one ``finish`` call carrying an
:class:`Outcome` (result + log + status in one PATCH).
"""

from __future__ import annotations

from typing import Any

from dss_console.core.interfaces import JobWords, OutcomeKind, Refusal, Rules
from dss_console.sources.v6.settings import V6Algorithm, V6Settings

# What the operator reads for a run left open at shutdown (on_shutdown = "leave").
V6_LEFT_OPEN = ("dss-console stopped while the run was in flight; the run stays open on the "
                "server and runs again when the worker starts")
V6_NOT_AGAIN = "a finished vantage6 run cannot run again"
V6_SHUTDOWN_REASON = "the node shut down"  # what a vantage6 researcher reads
V6_CANCEL_REASON = "cancelled by the node operator"  # a vantage6 researcher's words
# A run's command could not be prepared or started (the detail names local paths).
V6_USER_START_FAILED = ("the algorithm could not be started on this node; the node's "
                        "operator has been notified")
OUTPUT_SEND_INTERVAL = 5.0  # the run's log on the server follows the output this often

WORDS = JobWords(
    job="run", cancelled=V6_CANCEL_REASON, shut_down=V6_SHUTDOWN_REASON,
    left_open=V6_LEFT_OPEN, gone="the run is no longer open on the server",
    unconfigured="this image is not configured on this node (any more)",
    start_failed=V6_USER_START_FAILED, killed=f"{V6_NOT_AGAIN} (killed on the server)",
    no_operator_result=("a vantage6 run's result is its algorithm's output; there is no "
                        "workspace to upload"),
    # The operator's gate, in the researcher's words (the run's log).
    awaiting_approval="waiting for the node operator's approval before it runs",
    awaiting_release="finished; the result waits for the node operator's review",
    rejected="rejected by the node operator",
    decision_timed_out="the node operator made no decision in time")


def rules(settings: V6Settings) -> Rules:
    """A researcher waits for every run: one that cannot run ends at once (not allowed,
    start failed); a finished run is immutable (no rescue); each life of a run needs its own
    container token; the run's log follows the output; `[v6] on_shutdown` decides whether a
    shutdown leaves runs open."""
    return Rules(unconfigured="refuse", start_failure="fail", rescue_own_failure=False,
                 command_may_finish=False, refetch_on_restart=True,
                 output_interval=OUTPUT_SEND_INTERVAL,
                 leave_open_on_shutdown=settings.on_shutdown == "leave",
                 shutdown_keeps_manual_claims=False, operator_result=False)


def preflight_program(algorithm: V6Algorithm) -> str | None:
    """The program, for the executor's preflight (is it on PATH, is it executable); None
    when its name has a placeholder (checked at start)."""
    program = algorithm.argv_template()[0]
    return None if "{" in program else program


def requester_words(details: dict[str, Any]) -> str:
    """'research / alice'; ids where the server would not tell the node a name."""
    org = details.get("init_org") or (f"org {details['init_org_id']}"
                                      if details.get("init_org_id") is not None else None)
    user = details.get("init_user") or (f"user {details['init_user_id']}"
                                        if details.get("init_user_id") is not None else None)
    return " / ".join(part for part in (org, user) if part) or "unknown"


def refusal(run_id: int, image: str, outcome: OutcomeKind, reason: str,
            details: dict[str, Any]) -> Refusal:
    """A run the node ended before claiming it, with the operator's line for it."""
    word = "not allowed" if outcome is OutcomeKind.NOT_ALLOWED else "refused"
    task = details.get("task_id")
    note = (f"run {run_id}" + (f" (task {task})" if task is not None else "")
            + f": {word}: {reason}; image {image!r}, asked by {requester_words(details)}")
    return Refusal(run_id, image, outcome, reason, details, note=note,
                   not_retryable=V6_NOT_AGAIN)
