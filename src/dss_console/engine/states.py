"""Job states and the transitions the engine allows."""

from __future__ import annotations

import enum


class JobState(str, enum.Enum):
    CLAIMED = "claimed"          # the ticket is ours; waiting to run (inputs may be fetched)
    DOWNLOADING = "downloading"  # fetching the ticket's input files
    RUNNING = "running"          # the service command runs
    BLOCKED = "blocked"          # the command cannot start (provider's configuration): the
                                 # ticket stays claimed until the command is fixed or failed
    UPLOADING = "uploading"      # exporting and sending the result, then `success`
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"      # stopped locally (operator, shutdown) or the ticket went away
    INTERRUPTED = "interrupted"  # found mid-flight after a crash or restart
    # The operator's gate (engine/gate.py): nothing is computed or sent while a job waits,
    # and no thread waits with it; a decision (channel request) starts a fresh execution.
    AWAITING_APPROVAL = "awaiting_approval"  # inputs fetched; the command waits for a yes
    AWAITING_RELEASE = "awaiting_release"    # the command succeeded; its result waits to leave

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    @property
    def is_active(self) -> bool:
        """Uses a slot: something is being fetched or computed."""
        return self in (JobState.DOWNLOADING, JobState.RUNNING)

    @property
    def is_waiting(self) -> bool:
        """Waits for a person's decision (approve, release or reject)."""
        return self in WAITING


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
WAITING = frozenset({JobState.AWAITING_APPROVAL, JobState.AWAITING_RELEASE})

ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.CLAIMED: frozenset({JobState.DOWNLOADING, JobState.RUNNING, JobState.FAILED,
                                 JobState.CANCELLED, JobState.INTERRUPTED, JobState.UPLOADING,
                                 JobState.BLOCKED, JobState.AWAITING_APPROVAL}),
    JobState.DOWNLOADING: frozenset({JobState.RUNNING, JobState.CLAIMED, JobState.FAILED,
                                     JobState.CANCELLED, JobState.INTERRUPTED,
                                     JobState.BLOCKED, JobState.AWAITING_APPROVAL}),
    JobState.RUNNING: frozenset({JobState.UPLOADING, JobState.FAILED, JobState.CANCELLED,
                                 JobState.INTERRUPTED, JobState.BLOCKED,
                                 JobState.AWAITING_RELEASE}),
    JobState.BLOCKED: frozenset({JobState.DOWNLOADING, JobState.RUNNING, JobState.FAILED,
                                 JobState.CANCELLED, JobState.INTERRUPTED,
                                 JobState.AWAITING_APPROVAL}),
    # An approval binds to the inputs: a re-fetch (a new container token) goes through
    # DOWNLOADING and comes back here when they changed.
    JobState.AWAITING_APPROVAL: frozenset({JobState.DOWNLOADING, JobState.RUNNING,
                                           JobState.BLOCKED, JobState.FAILED,
                                           JobState.CANCELLED}),
    JobState.AWAITING_RELEASE: frozenset({JobState.UPLOADING, JobState.FAILED,
                                          JobState.CANCELLED}),
    JobState.UPLOADING: frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED,
                                   JobState.INTERRUPTED}),
    JobState.INTERRUPTED: frozenset({JobState.DOWNLOADING, JobState.RUNNING,
                                     JobState.UPLOADING, JobState.FAILED, JobState.CANCELLED,
                                     JobState.CLAIMED, JobState.BLOCKED,
                                     JobState.AWAITING_APPROVAL}),
    # Retry run: a finished job whose ticket is still ours may be run again.
    JobState.FAILED: frozenset({JobState.DOWNLOADING, JobState.RUNNING, JobState.UPLOADING,
                                JobState.BLOCKED, JobState.AWAITING_APPROVAL}),
    JobState.CANCELLED: frozenset({JobState.DOWNLOADING, JobState.RUNNING, JobState.UPLOADING,
                                   JobState.FAILED, JobState.BLOCKED,
                                   JobState.AWAITING_APPROVAL}),
    JobState.SUCCEEDED: frozenset(),
}


class TransitionError(Exception):
    pass


def check_transition(old: JobState, new: JobState) -> None:
    if new not in ALLOWED[old]:
        raise TransitionError(f"a job cannot go from {old.value} to {new.value}")
