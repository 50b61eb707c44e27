"""What the core asks of an executor: run a job's command somewhere, follow it, stop it, and
find it again after the engine restarted.

The core chooses an executor by the name on the service's command (``executor = "local"``)
from a dict it is given; it never asks which kind it has. What is particular to one executor
(a process group, a cluster job id, a queue state) travels as :class:`ExecutorDetails`,
journaled by the core before the command may run and handed back to :meth:`Executor.recover`
after a restart. An executor that learns them only once the command exists (a local pid) holds
the command until ``on_details`` returned (the local executor's start gate), so an engine that
dies in between leaves nothing running that a restart could not find.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from dss_console.engine.protocol import Report

if TYPE_CHECKING:
    from dss_console.core.command import CommandSpec, JobPaths
    from dss_console.engine.settings_reader import TableReader

__all__ = [
    "DetailValue",
    "Executor",
    "ExecutorDetails",
    "JobRef",
    "OptionField",
    "OptionValue",
    "Recovery",
    "RunCallbacks",
    "RunHandle",
    "RunOutcome",
    "RunRequest",
    "StartError",
]

DetailValue = str | int | float | None
# A value an executor reads from a service's table (``sbatch_options``: a list of words).
OptionValue = str | bool | int | float | list[str]


@dataclass(frozen=True)
class OptionField:
    """One key an executor reads from a service's table, as the settings dialog edits it."""

    name: str  # the key in the table: "sbatch_options"
    label: str  # the dialog's row, "&" before its shortcut: "s&batch options"
    # How the dialog edits it: "words": one line split into words as a shell would (a
    # list); "choice": one of ``choices`` (a string); "switch": on or off (a boolean);
    # "value": one line kept as written, a number when it reads as one ("8G", 2, 0.5).
    kind: Literal["words", "choice", "switch", "value"]
    tip: str
    placeholder: str = ""  # an example, shown while the field is empty
    choices: tuple[str, ...] = ()  # "choice": the values offered

    @property
    def words(self) -> str:
        """The label in running text (problems, the accessible name)."""
        return self.label.replace("&", "")


@dataclass(frozen=True)
class ExecutorDetails:
    """Where and how a job's command runs, as its executor says (journaled, shown).

    The window shows ``label`` (amber while ``waiting``) and ``lines`` in its tooltip and
    detail; a command that waited in a queue (``queued_at`` set) has its run time counted
    from ``running_at``. ``data`` is the executor's own (what ``recover`` and ``follow``
    need): each report gives the keys it knows, ``None`` for one that no longer holds (a
    process that ended); keys it does not give keep their journaled value, and so do
    ``queued_at``, ``running_at``, ``ref`` and ``host`` when not given.
    """

    executor: str  # the executor's name: "local", "slurm"
    label: str = ""  # one line for the operator: "local", "SLURM 1234 · RUNNING on node7"
    # The label in full for the job's detail; its part before the first " · " names what
    # runs the command (shown bold). Empty: the label.
    summary: str = ""
    waiting: bool = False  # accepted, not running yet (a queued cluster job)
    queued_at: float | None = None  # epoch; handed to something that queues it
    running_at: float | None = None  # epoch; left the queue (its run time counts from here)
    lines: tuple[str, ...] = ()  # the full story, one fact a line
    ref: str | None = None  # the executor's own id of the command (a cluster job id)
    host: str | None = None  # the machine it runs on when not this one (kept out of output)
    data: Mapping[str, DetailValue] = field(default_factory=dict, hash=False)

    @property
    def queued(self) -> bool:
        """It went through a queue: its run time counts from ``running_at`` (none yet while
        it waits)."""
        return self.waiting or self.queued_at is not None or self.running_at is not None

    def merged(self, update: ExecutorDetails) -> ExecutorDetails:
        """These details as ``update`` (a later report of the same executor) changes them."""
        if update.executor != self.executor:
            return update
        data = {**self.data, **update.data}
        return ExecutorDetails(
            executor=self.executor, label=update.label or self.label,
            summary=update.summary or self.summary, waiting=update.waiting,
            queued_at=self.queued_at if update.queued_at is None else update.queued_at,
            running_at=self.running_at if update.running_at is None else update.running_at,
            lines=update.lines or self.lines, ref=update.ref or self.ref,
            host=update.host or self.host,
            data={key: value for key, value in data.items() if value is not None})

    def forgotten(self) -> ExecutorDetails:
        """The same for the operator, without what would let a restart follow or stop the
        command (it was stopped on purpose and is to run again)."""
        return ExecutorDetails(self.executor, label=self.label, summary=self.summary,
                               waiting=False,
                               queued_at=self.queued_at, running_at=self.running_at,
                               lines=self.lines, ref=self.ref, host=self.host)


@dataclass(frozen=True)
class RunOutcome:
    exit_code: int | None  # None when a signal ended it (then `signal` is set)
    signal: int | None
    stop_reason: str | None  # None if it ended by itself; else why it was stopped
    last_error: str | None  # text of the last `error` message (either channel)
    tail: list[str]  # the last output lines, both streams, in arrival order
    duration: float
    log_path: Path


class StartError(Exception):
    """The command could not be started; the message says why in words.

    ``retry_later``: nothing was started and nothing is wrong with the job (a cluster
    controller that does not answer): keep the job and try again; the message is the
    operator's note, ``details`` (if any) what the job shows meanwhile.
    ``configuration``: every job of the service would be refused the same way (options the
    cluster refuses): keep the job and pause the service; the message is the reason.
    """

    retry_later: bool = False
    configuration: bool = False

    def __init__(self, message: str, *, details: ExecutorDetails | None = None) -> None:
        super().__init__(message)
        self.details = details


@dataclass(frozen=True)
class JobRef:
    """A journal job's attempt, as an executor may name it outside the journal (so a run
    whose id never reached the journal is found after a crash)."""

    instance: str
    job_id: int
    attempt: int


@dataclass(frozen=True)
class RunRequest:
    spec: CommandSpec
    paths: JobPaths
    job: JobRef
    log_name: str  # in paths.engine_dir
    grace_period: float  # a stopped command's time to end before it is killed
    # The executor's own options from the service's settings (Executor.own_options); empty
    # when following a command whose service lost its settings meanwhile.
    options: Mapping[str, OptionValue] = field(default_factory=dict)
    # What a contained command must not see even under a path it is shown: the console's
    # data and config dirs, the work root (other jobs' dirs). The engine's to say.
    private_dirs: tuple[Path, ...] = ()


@dataclass(frozen=True)
class RunCallbacks:
    on_report: Callable[[Report], None]  # from the run's dispatcher thread, in order
    # Journaled at once; called before the command may run (the executor holds it until this
    # returns), then when what it says changes.
    on_details: Callable[[ExecutorDetails], None]
    on_note: Callable[[str, str], None]  # (level, text): for the operator, not the job's owner


@dataclass(frozen=True)
class Recovery:
    """What an executor found of a job's command after the engine restarted."""

    follow: bool = False  # it outlived the engine and can be followed: never run it again
    notes: tuple[str, ...] = ()  # what it did (stopped a leftover), for the operator


class RunHandle(ABC):
    """A started command."""

    @abstractmethod
    def wait(self, timeout: float | None = None) -> RunOutcome | None:
        """The outcome once the command ended and everything it reported was delivered;
        None if that has not happened within ``timeout`` seconds."""

    @abstractmethod
    def stop(self, reason: str, grace: float | None = None) -> None:
        """Stop it (the first reason is kept); killed after ``grace`` (default: the
        request's grace period). Returns at once; any thread."""


class Executor(ABC):
    """Runs commands. What a service's table says to an executor (its options) is read by the
    class, without an engine: the settings file and the settings dialog use it."""

    name: ClassVar[str]
    title: ClassVar[str]  # the settings dialog's choice: "Local process (...)"
    help: ClassVar[str] = ""  # rich text under the choice while it is chosen
    # Why the dialog's dry run is not what a job does (it runs a local process).
    dry_run_note: ClassVar[str] = ""
    option_fields: ClassVar[tuple[OptionField, ...]] = ()
    # The isolation and limit keys it reads from a service's (or algorithm's) table and the
    # file's [defaults] (docs/isolation-plan.md): "isolation", "memory"... Checked by the
    # settings reader, handed over in RunRequest.options.
    policy_keys: ClassVar[tuple[str, ...]] = ()
    # How the settings dialog edits them (an executor that reads a key another executor
    # declares shares that row: one row per key). Empty: the file is the only editor.
    policy_fields: ClassVar[tuple[OptionField, ...]] = ()

    @classmethod
    def parse_options(cls, reader: TableReader, table: Mapping[str, Any],
                      where: str) -> dict[str, OptionValue]:
        """This executor's keys (``option_fields``) of the service table ``where``, checked;
        keys the table does not give are left out."""
        return {}

    @classmethod
    def own_options(cls, options: Mapping[str, OptionValue]) -> dict[str, OptionValue]:
        """This executor's keys of a service's options (which hold every executor's)."""
        names = [option.name for option in cls.option_fields] + list(cls.policy_keys)
        return {name: options[name] for name in names if name in options}

    @classmethod
    def check_policy_value(cls, key: str, value: object) -> None:
        """Raises ValueError in words (without the key's name) when ``value`` of the
        isolation or limit key ``key`` (one of ``policy_keys``) is unusable."""
        return None

    @classmethod
    def check_option(cls, name: str, value: OptionValue) -> None:
        """Raises ValueError in words when ``value`` (as the dialog read it) is unusable
        for the option ``name``."""
        return None

    @classmethod
    def option_note(cls, name: str, value: OptionValue) -> str | None:
        """A warning in words for a usable value (it may still be what the operator
        wants)."""
        return None

    @abstractmethod
    def preflight(self, spec: CommandSpec, workroot: Path) -> str | None:
        """Why no job of this command can start here (checked before claiming), in words;
        None when it may start."""

    def options_problem(self, options: Mapping[str, OptionValue]) -> str | None:
        """Why no job with a service's ``options`` (``own_options``) can start here, in
        words (a sandbox this machine cannot run); None when they can. Checked before
        claiming, with ``preflight``."""
        return None

    def describe_options(self, options: Mapping[str, OptionValue]) -> str:
        """How a service's ``options`` (``own_options``: its isolation and limit keys among
        them) contain its commands here, in the operator's words for the window: "sandbox,
        no network, memory 8 GiB, 2 CPUs". "" when this executor has nothing to say."""
        return ""

    def details(self) -> ExecutorDetails:
        """What a job shows from the moment its run begins until this executor reports
        (journaled with the run's start)."""
        return ExecutorDetails(self.name, label=self.name)

    @abstractmethod
    def start(self, request: RunRequest, callbacks: RunCallbacks) -> RunHandle:
        """Start the command. Raises StartError in words."""

    def follow(self, request: RunRequest, callbacks: RunCallbacks,
               details: ExecutorDetails) -> RunHandle:
        """Follow again a command that outlived the engine (``recover`` said so)."""
        raise StartError(f"the {self.name} executor cannot follow a command after a restart")

    @abstractmethod
    def recover(self, details: ExecutorDetails, job: JobRef, grace: float) -> Recovery:
        """After a restart, for a job that was running: follow what outlived the engine,
        or clean it up (stop a leftover) so that the job can run again or fail."""

    def close(self) -> None:
        """The engine stops: end what the executor keeps for all its jobs."""
        return None
