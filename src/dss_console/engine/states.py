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

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    @property
    def is_active(self) -> bool:
        """Uses a slot: something is being fetched or computed."""
        return self in (JobState.DOWNLOADING, JobState.RUNNING)


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.CLAIMED: frozenset({JobState.DOWNLOADING, JobState.RUNNING, JobState.FAILED,
                                 JobState.CANCELLED, JobState.INTERRUPTED, JobState.UPLOADING,
                                 JobState.BLOCKED}),
    JobState.DOWNLOADING: frozenset({JobState.RUNNING, JobState.CLAIMED, JobState.FAILED,
                                     JobState.CANCELLED, JobState.INTERRUPTED,
                                     JobState.BLOCKED}),
    JobState.RUNNING: frozenset({JobState.UPLOADING, JobState.FAILED, JobState.CANCELLED,
                                 JobState.INTERRUPTED, JobState.BLOCKED}),
    JobState.BLOCKED: frozenset({JobState.DOWNLOADING, JobState.RUNNING, JobState.FAILED,
                                 JobState.CANCELLED, JobState.INTERRUPTED}),
    JobState.UPLOADING: frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED,
                                   JobState.INTERRUPTED}),
    JobState.INTERRUPTED: frozenset({JobState.DOWNLOADING, JobState.RUNNING,
                                     JobState.UPLOADING, JobState.FAILED, JobState.CANCELLED,
                                     JobState.CLAIMED, JobState.BLOCKED}),
    # Retry run: a finished job whose ticket is still ours may be run again.
    JobState.FAILED: frozenset({JobState.DOWNLOADING, JobState.RUNNING, JobState.UPLOADING,
                                JobState.BLOCKED}),
    JobState.CANCELLED: frozenset({JobState.DOWNLOADING, JobState.RUNNING, JobState.UPLOADING,
                                   JobState.FAILED, JobState.BLOCKED}),
    JobState.SUCCEEDED: frozenset(),
}


class TransitionError(Exception):
    pass


def check_transition(old: JobState, new: JobState) -> None:
    if new not in ALLOWED[old]:
        raise TransitionError(f"a job cannot go from {old.value} to {new.value}")
