"""The contract suite's adapters: everything that knows a source or an executor.

The cases (test_contract.py) speak only the neutral verbs of :class:`World` and :class:`Node`
and compare neutral words: a job's state here (``JobState`` values), the work's state on
the server as the requester sees it (:data:`REMOTE`), what the requester reads. Each
source and executor kind is one class here; a new kind (vantage6 5.x, Kubernetes) is one
more class and one more entry in :data:`SOURCES` / :data:`EXECUTORS`, and every call into
``dss_console`` sits in this file, so an engine refactor touches this file alone.

The rules that differ by source (what happens when a command cannot start, or a service
has no command; the words the requester reads) are written as expectations a source
returns (:class:`Expect`), never as ``if source == ...`` in a case.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import sys
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
from contract_program import ANSWER

from dss_console import plugins
from dss_console.core.presentation import JobView, Presentation
from dss_console.dss import DssClient
from dss_console.engine.engine import Engine
from dss_console.engine.journal import Journal
from dss_console.engine.settings import Settings, SettingsError, parse_settings
from dss_console.engine.states import JobState
from dss_console.engine.views import job_view
from dss_console.sandbox import Sandbox, SandboxError
from dss_console.sources.dss.source import DssSource
from dss_console.sources.v6.sandbox import V6Sandbox
from dss_console.sources.v6.source import V6Source
from settings_helpers import v6_of

from slurm_cluster import FAST_POLL
from waiting import process_gone, wait_for

PROGRAM = Path(__file__).with_name("contract_program.py")

# The work's state on its server, as its requester would describe it.
WAITING, OURS, SUCCEEDED, FAILED, GONE = "waiting", "ours", "succeeded", "failed", "gone"
REMOTE = (WAITING, OURS, SUCCEEDED, FAILED, GONE)

# The engine's timings in every case: short, so a case takes seconds, not minutes.
ENGINE_TIMINGS: dict[str, float] = {
    "status_interval": 0.5, "grace_period": 2.0, "retry_interval": 0.2,
    "outbox_backoff": 0.1, "outbox_max_backoff": 0.5}


@dataclass(frozen=True)
class Work:
    """One piece of work on a server: ``id`` is what the engine claims (a DSS ticket, a
    vantage6 run), ``ref`` what the requester holds (the ticket, the task)."""

    id: int
    ref: int


@dataclass(frozen=True)
class Seen:
    """What the requester can read of a piece of work."""

    remote: str
    messages: tuple[str, ...]
    attachments: tuple[str, ...]
    progress: float | None

    @property
    def text(self) -> str:
        return "\n".join(self.messages + self.attachments)


@dataclass(frozen=True)
class Expect:
    """How a rule ends a job: its state here (None: never claimed), on the server, words
    the requester reads (None: nothing promised), and whether Auto paused the service."""

    local: str | None
    remote: str
    says: str | None = None
    paused: bool = False


@dataclass(frozen=True)
class Words:
    """The fixed words a source's requester reads for the engine's own decisions."""

    exit_code: str          # {code}
    no_result: str
    cancelled: str          # {message}
    shutdown: str


# -- sources ---------------------------------------------------------------------------------


class SourceKind(ABC):
    """A job source: its server, its requester, its settings table, its rules."""

    name: str
    words: Words
    # What a command that cannot start (the provider's configuration) and work for a
    # service without a command lead to.
    start_failure: Expect
    unconfigured: Expect
    # Whether a job this console failed may run again once the server holds its end (DSS:
    # the claimant may turn its own failure into a success; a finished v6 run is final).
    retry_after_failure: bool

    @abstractmethod
    def open(self, request: pytest.FixtureRequest) -> None:
        """Take the servers and requesters this kind needs from pytest's fixtures."""

    @abstractmethod
    def new_service(self) -> str:
        """A service (DSS) / image (v6) of this test's own; its key."""

    @abstractmethod
    def template(self, words: list[str]) -> str:
        """The command template running contract_program.py: its result FORMAT, the mode
        (``words[0]``), this source's input and result placeholders, the other words."""

    @abstractmethod
    def settings(self, commands: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The settings file's tables for these services (key -> their table)."""

    @abstractmethod
    def connect(self, settings: Settings) -> Any:
        """A logged-in source object for an engine."""

    provider: str

    @abstractmethod
    def submit(self, key: str, note: str | None = None) -> Work:
        """The requester posts new work for a service (``note``: an argument value of the
        requester's, where the source's work carries arguments)."""

    # What the operator's gate shows of a job waiting for approval, as (label, value) a fact
    # must carry: the inputs (DSS), the requester's argument value (v6, local only).
    gate_fact: tuple[str, str | None] = ("", None)
    # Whether that fact's value is the requester's note (shown locally only).
    shows_note: bool = False

    @abstractmethod
    def seen(self, work: Work) -> Seen:
        """What the requester reads now."""

    @abstractmethod
    def result_delivered(self, work: Work) -> bool:
        """The requester can fetch the result contract_program.py wrote, and it is that."""

    @abstractmethod
    def take_away(self, work: Work) -> None:
        """The work leaves the provider while it runs (deleted / killed by the requester)."""

    @abstractmethod
    def outage(self) -> contextlib.AbstractContextManager[None]:
        """The server is away inside the block, back after it."""

    @abstractmethod
    def meet_unconfigured(self, node: Node, work: Work) -> None:
        """What brings work of a service without a command before the engine."""


class DssKind(SourceKind):
    name = "dss"
    words = Words(exit_code="command exited with code {code}",
                  no_result="the command finished without a result workspace",
                  cancelled="cancelled by the provider: {message}",
                  shutdown="provider shut down")
    # The provider's configuration, not the user's failure: the ticket stays claimed.
    start_failure = Expect(local=JobState.BLOCKED.value, remote=OURS)
    unconfigured = Expect(local=JobState.BLOCKED.value, remote=OURS)
    retry_after_failure = True

    def open(self, request: pytest.FixtureRequest) -> None:
        self.sandbox: Sandbox = request.getfixturevalue("sandbox")
        self.provider = self.sandbox.provider

    def new_service(self) -> str:
        return self.sandbox.register_service(f"Contract-{uuid.uuid4().hex[:8]}", "1.0.0", [
            {"name": "T1-MRI", "type": "MainImage", "hint": "T1 image", "required": True}])

    def template(self, words: list[str]) -> str:
        mode, *rest = words
        return shlex.join([sys.executable, str(PROGRAM), "workspace", mode]) + \
            " {workspace} {result} " + shlex.join(rest)

    def settings(self, commands: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {"services": commands}

    def connect(self, settings: Settings) -> Any:
        client = DssClient(self.sandbox.url, backoff=0.05, timeout=(2.0, 30.0))
        client.login(self.sandbox.fresh_token())
        return DssSource(client)

    gate_fact = ("Input files", None)

    def submit(self, key: str, note: str | None = None) -> Work:
        ticket = self.sandbox.add_ticket(key)
        return Work(id=ticket, ref=ticket)

    _REMOTE: ClassVar[dict[str, str]] = {"ready": WAITING, "claimed": OURS,
                                         "success": SUCCEEDED, "failed": FAILED,
                                         "timeout": FAILED}

    def seen(self, work: Work) -> Seen:
        try:
            detail = self.sandbox.admin.ticket_detail(work.ref)
        except SandboxError as exc:
            if "HTTP 500" in str(exc):  # a busy SQLite store; the caller asks again
                raise
            return Seen(GONE, (), (), None)
        status = str(detail.get("status", ""))
        log = detail.get("log") or []
        progress = detail.get("progress")
        return Seen(remote=self._REMOTE.get(status, GONE if status == "deleted" else status),
                    messages=tuple(str(e["message"]) for e in log),
                    attachments=tuple(str(a["description"]) for e in log
                                      for a in e.get("attachments") or []),
                    progress=None if progress is None else float(progress))

    def result_delivered(self, work: Work) -> bool:
        from dss_console.workspace import Workspace

        names = self.sandbox.admin.result_files(work.ref)
        if not names or names[-1] != f"ticket_{work.ref:08d}_results.itksnap":
            return False
        down = Path(self._scratch()) / f"result-{work.ref}"
        down.mkdir(parents=True, exist_ok=True)
        for index, name in enumerate(names):
            (down / name).write_bytes(self.sandbox.admin.download_file(work.ref, "results",
                                                                       index))
        layers = Workspace.load(down / names[-1]).layers
        return len(layers) == 1 and all(layer.path.is_file() for layer in layers)

    def _scratch(self) -> str:
        import tempfile

        return tempfile.mkdtemp(prefix="contract-dss-result-")

    def take_away(self, work: Work) -> None:
        self.sandbox.admin.delete_ticket(work.ref)

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        server = self.sandbox.public_server
        server.stop()
        try:
            yield
        finally:
            server.restart()

    def meet_unconfigured(self, node: Node, work: Work) -> None:
        # The operator's Run on a ticket of a service without a command (Auto never claims
        # one): claimed, then blocked until a command is configured.
        assert node.run_next(node.world.key_of(work))


class V6Kind(SourceKind):
    name = "v6"
    words = Words(exit_code="command exited with code {code}",
                  no_result="wrote no result",
                  cancelled="cancelled by the node operator: {message}",
                  shutdown="the node shut down")
    start_failure = Expect(local=JobState.FAILED.value, remote=FAILED,
                           says="could not be started on this node")
    # The node's allowlist: the run ends "not allowed" before anything is claimed.
    unconfigured = Expect(local=JobState.FAILED.value, remote=FAILED,
                          says="not configured on this node")
    retry_after_failure = False
    NODE = "station-demo"

    def open(self, request: pytest.FixtureRequest) -> None:
        self.sandbox: V6Sandbox = request.getfixturevalue("contract_v6")
        self.researcher: Any = request.getfixturevalue("contract_researcher")
        self.provider = self.NODE

    def new_service(self) -> str:
        return f"contract-{uuid.uuid4().hex[:8]}"

    def template(self, words: list[str]) -> str:
        mode, *rest = words
        return shlex.join([sys.executable, str(PROGRAM), "json", mode]) + \
            " {input} {output} " + shlex.join(rest)

    def settings(self, commands: dict[str, dict[str, Any]]) -> dict[str, Any]:
        demo = self.sandbox.demo_settings()
        return {"v6": {"algorithms": commands, "databases": demo["databases"]}}

    def connect(self, settings: Settings) -> Any:
        return V6Source.connect(self.sandbox.url, self.sandbox.node(self.NODE).api_key,
                                v6_of(settings))

    gate_fact = ("Method", None)
    shows_note = True

    def submit(self, key: str, note: str | None = None) -> Work:
        extra = {} if note is None else {"note": note}
        task = self.researcher.create_task(key, "contract", [self.sandbox.org_id("station")],
                                           **extra)
        (run,) = self.researcher.call("runs", task_id=task)
        return Work(id=int(run["id"]), ref=task)

    _FINISHED_GONE: ClassVar[frozenset[str]] = frozenset({"killed by user"})

    def seen(self, work: Work) -> Seen:
        (run,) = self.researcher.call("runs", task_id=work.ref)
        status = str(run["status"])
        remote = {"pending": WAITING, "initializing": OURS, "active": OURS,
                  "completed": SUCCEEDED}.get(status, GONE if status in self._FINISHED_GONE
                                               else FAILED)
        lines = tuple(str(run.get("log") or "").splitlines())
        # The run's log is one text: a message is a line, after its level.
        messages = tuple(re.sub(r"^(debug|info|warning|error): ", "", line) for line in lines)
        attachments = tuple(line.split(": ", 1)[1].rsplit(" (", 1)[0] for line in lines
                            if line.startswith("attachment kept on the node: "))
        progress = [float(line.split()[1]) / 100 for line in lines
                    if line.startswith("progress ") and line.endswith(" %")]
        return Seen(remote=remote, messages=messages, attachments=attachments,
                    progress=progress[-1] if progress else None)

    def result_delivered(self, work: Work) -> bool:
        return bool(self.researcher.call("results", task_id=work.ref) == [ANSWER])

    def take_away(self, work: Work) -> None:
        self.researcher.call("kill", task_id=work.ref)

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        server = self.sandbox.server
        assert server is not None
        server.stop()
        try:
            yield
        finally:
            server.restart()

    def meet_unconfigured(self, node: Node, work: Work) -> None:
        # Nothing to do: every poll refuses runs of images without a command.
        node.engine.wake()


class V6x5Kind(V6Kind):
    """A vantage6 5.x node (HQ 5.0.3 behind the Keycloak stand-in): 4.x's rules and words,
    its own server, login and researcher (the official 5.0.3 client, a service account)."""

    name = "v6x5"

    def open(self, request: pytest.FixtureRequest) -> None:
        self.sandbox: Any = request.getfixturevalue("contract_v6x5")
        self.researcher = request.getfixturevalue("contract_v6x5_researcher")
        self.provider = self.NODE

    def settings(self, commands: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {"v6": {"algorithms": commands}}  # compute runs use no database (step 5)

    def connect(self, settings: Settings) -> Any:
        from dss_console.sources.v6x5.source import V6x5Source

        return V6x5Source.connect_hq(
            self.sandbox.url, self.sandbox.node(self.NODE).api_key, v6_of(settings),
            auth_url=self.sandbox.auth_url, node=self.NODE, realm=self.sandbox.info["realm"])

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        hq = self.sandbox.hq
        assert hq is not None
        hq.stop()
        try:
            yield
        finally:
            hq.restart()


# -- executors -------------------------------------------------------------------------------


class ExecutorKind(ABC):
    name: str
    # Whether a command's program is looked for before the work is claimed and started
    # (here), or only where and when it runs (a cluster node).
    checks_program: bool = True

    @abstractmethod
    def open(self, request: pytest.FixtureRequest) -> None:
        """Take the cluster (if any) from pytest's fixtures and point the engine at it."""

    @abstractmethod
    def options(self) -> dict[str, Any]:
        """What a service's settings table says to run on this executor."""


class LocalKind(ExecutorKind):
    name = "local"

    def open(self, request: pytest.FixtureRequest) -> None:
        pass

    def options(self) -> dict[str, Any]:
        return {}  # the default: a child process of the engine


class SlurmKind(ExecutorKind):
    name = "slurm"
    checks_program = False

    def open(self, request: pytest.FixtureRequest) -> None:
        cluster = request.getfixturevalue("contract_slurm")
        monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
        for name, value in cluster.env.items():  # the engine finds it as sbatch does
            monkeypatch.setenv(name, value)
        for name, value in FAST_POLL.items():  # and asks it often: no 2 s waits per state
            monkeypatch.setenv(name, value)

    def options(self) -> dict[str, Any]:
        return {"executor": "slurm"}


SOURCES: dict[str, type[SourceKind]] = {"dss": DssKind, "v6": V6Kind, "v6x5": V6x5Kind}
EXECUTORS: dict[str, type[ExecutorKind]] = {"local": LocalKind, "slurm": SlurmKind}


@dataclass(frozen=True)
class Combination:
    source: str
    executor: str
    refused: str | None = None  # the settings' words when they refuse this combination

    @property
    def id(self) -> str:
        return f"{self.source}-{self.executor}"


# vantage6 runs are local processes today (engine/jobs.py: the source decides): a `[v6]`
# algorithm has no executor key, so the settings refuse one.
COMBINATIONS = (
    Combination("dss", "local"),
    Combination("dss", "slurm"),
    Combination("v6", "local"),
    Combination("v6", "slurm", refused="unknown key 'executor'"),
    Combination("v6x5", "local"),
    Combination("v6x5", "slurm", refused="unknown key 'executor'"),
)
RUNNABLE = tuple(c for c in COMBINATIONS if c.refused is None)


# -- one test's world ------------------------------------------------------------------------


@dataclass
class World:
    """One test's source, executor, scratch dir and the services it configured."""

    source: SourceKind
    executor: ExecutorKind
    tmp: Path
    commands: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    # More top-level settings (approval_timeout, approval_rules, ...).
    top: dict[str, Any] = field(default_factory=dict)
    _keys: dict[int, str] = field(default_factory=dict)

    @property
    def state(self) -> Path:
        path = self.tmp / "state"
        path.mkdir(exist_ok=True)
        return path

    # -- services ------------------------------------------------------------------------
    def service(self, mode: str, *args: str, approve: str | None = None) -> str:
        """A service whose command runs contract_program.py in ``mode`` (``approve``: the
        operator's gate, "run", "release" or "both")."""
        key = self.source.new_service()
        template = self.source.template([mode, str(self.state), *args])
        self.commands[key] = {"command": template, **self.executor.options(),
                              **({"approve": approve} if approve else {})}
        return key

    def broken_service(self) -> str:
        """A service whose command names a program that does not exist."""
        key = self.source.new_service()
        self.commands[key] = {"command": f"{self.tmp}/no-such-program {{workdir}}",
                              **self.executor.options()}
        return key

    def start_failure(self, *, auto: bool) -> Expect:
        """What a command whose program does not exist leads to, in Auto or by hand."""
        if not self.executor.checks_program:
            # The batch job runs and the shell cannot find it: a failed command.
            return Expect(local=JobState.FAILED.value, remote=FAILED,
                          says=self.source.words.exit_code.format(code=127))
        if auto:  # Auto's check before a claim: nothing claimed, the service paused
            return Expect(local=None, remote=WAITING, paused=True)
        return self.source.start_failure

    def bare_service(self) -> str:
        """A service this machine has no command for."""
        return self.source.new_service()

    def settings_text(self) -> str:
        tables = {"instance": "contract", "workroot": str(self.tmp / "work"),
                  "poll_interval": 0.2, "concurrency": 2, **self.top,
                  **self.source.settings(self.commands)}
        return _toml(tables)

    def settings(self) -> Settings:
        """The settings file the operator would write, read by the real loader."""
        return parse_settings(self.settings_text(), self.tmp / "settings.toml")

    def settings_refusal(self) -> str | None:
        try:
            self.settings()
        except SettingsError as exc:
            return str(exc)
        return None

    # -- the engine ----------------------------------------------------------------------
    def start(self, *, auto: bool = True, journal: Path | None = None) -> Node:
        settings = self.settings()
        source = self.source.connect(settings)
        path = journal or self.tmp / "journal.sqlite3"
        engine = Engine(settings, source, Journal(path), provider=self.source.provider,
                        executors=plugins.executors(), auto=auto, **ENGINE_TIMINGS)
        node = Node(self, engine, path)
        self.nodes.append(node)
        engine.start()
        return node

    def close(self) -> None:
        for node in self.nodes:
            node.stop()

    # -- the requester -------------------------------------------------------------------
    def submit(self, key: str, note: str | None = None) -> Work:
        work = self.source.submit(key, note)
        self._keys[work.id] = key
        return work

    def key_of(self, work: Work) -> str:
        return self._keys[work.id]

    def seen(self, work: Work) -> Seen:
        def answer() -> Seen | None:
            try:
                return self.source.seen(work)
            except SandboxError:  # an occasional HTTP 500 of the busy DSS store
                return None

        return wait_for(answer, 30, what=f"the requester's view of {work}")

    def wait_remote(self, work: Work, remote: str, timeout: float = 30.0) -> Seen:
        assert remote in REMOTE
        return wait_for(lambda: (seen := self.seen(work)).remote == remote and seen, timeout,
                        what=f"{work} to be {remote} on the server")

    def wait_says(self, work: Work, words: str, timeout: float = 30.0) -> Seen:
        return wait_for(lambda: (seen := self.seen(work)) and words in seen.text and seen,
                        timeout, what=f"the requester to read {words!r} for {work}")

    def result_delivered(self, work: Work) -> bool:
        return self.source.result_delivered(work)

    def take_away(self, work: Work) -> None:
        self.source.take_away(work)

    def outage(self) -> contextlib.AbstractContextManager[None]:
        return self.source.outage()

    def meet_unconfigured(self, node: Node, work: Work) -> None:
        self.source.meet_unconfigured(node, work)

    # -- the command's lives -------------------------------------------------------------
    def lives(self) -> list[int]:
        path = self.state / "lives"
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def wait_lives(self, count: int, timeout: float = 60.0) -> list[int]:
        return wait_for(lambda: len(lives := self.lives()) >= count and lives, timeout,
                        what=f"the command's life #{count} to start")

    def go(self) -> None:
        (self.state / "go").write_text("go")

    def wait_stopped(self, pids: list[int], timeout: float = 15.0) -> None:
        wait_for(lambda: all(process_gone(p) for p in pids), timeout,
                 what=f"processes {pids} to be stopped")


class Node:
    """One engine of the world: what the operator does and reads."""

    def __init__(self, world: World, engine: Engine, journal: Path) -> None:
        self.world = world
        self.engine = engine
        self.journal = journal
        self._stopped = False
        self._lock = threading.Lock()

    def _job(self, work: Work) -> Any:
        if not self._stopped:
            return self.engine.journal.latest_job_for_ticket(self.engine.source.key, work.id)
        # Stopped: what its journal says, as the next start will read it.
        journal = Journal(self.journal)
        try:
            return journal.latest_job_for_ticket(self.engine.source.key, work.id)
        finally:
            journal.close()

    def state(self, work: Work) -> str | None:
        job = self._job(work)
        return None if job is None else str(job.state.value)

    def wait(self, work: Work, *states: str, timeout: float = 30.0) -> str:
        wanted = {JobState(s) for s in states}
        return wait_for(lambda: (job := self._job(work)) is not None and job.state in wanted
                        and job.state.value, timeout,
                        what=f"{work} to be {' or '.join(states)} here")

    def history(self, work: Work) -> list[str]:
        job = self._job(work)
        assert job is not None and not self._stopped
        return [state for _, state, _ in self.engine.journal.transitions(job.job_id)]

    def reason(self, work: Work) -> str:
        job = self._job(work)
        return "" if job is None else job.reason or ""

    def workdir(self, work: Work) -> str:
        job = self._job(work)
        assert job is not None
        return str(job.workdir)

    def owed(self, work: Work) -> int:
        job = self._job(work)
        return 0 if job is None else int(job.owed)

    def view(self, work: Work) -> JobView:
        """The job as a window attached to this engine sees it."""
        job = self._job(work)
        assert job is not None
        return job_view(self.engine.source, job)

    def presentation(self) -> Presentation:
        return self.engine.source.presentation

    def run_next(self, key: str) -> bool:
        """The operator's Run: claim the service's next work by hand and run it."""
        return self.engine.claim_next([key], run=True) is not None

    def wait_paused(self, key: str, timeout: float = 30.0) -> str:
        """Why Auto stopped claiming for this service (waits until it has)."""
        return wait_for(lambda: next((v.paused for v in self.engine.services()
                                      if v.service_hash == key and v.paused), None),
                        timeout, what=f"service {key} to be paused")

    def cancel(self, work: Work, message: str) -> None:
        self.engine.cancel_job(self._job(work).job_id, message)

    def fail(self, work: Work, message: str) -> None:
        self.engine.fail_job(self._job(work).job_id, message)

    # -- the operator's gate -------------------------------------------------------------
    def words(self) -> Any:
        """The source's words for the engine's own decisions (what the requester reads)."""
        return self.engine.source.words

    def approve(self, work: Work) -> None:
        self.engine.approve_job(self._job(work).job_id)

    def reject(self, work: Work, message: str) -> None:
        self.engine.reject_job(self._job(work).job_id, message)

    def release(self, work: Work) -> None:
        self.engine.release_job(self._job(work).job_id)

    def approval(self, work: Work) -> Any:
        """What the operator reviews of a waiting job (facts, or a held result's preview)."""
        return self.engine.approval(self._job(work).job_id)

    def inputs_ready(self, work: Work) -> bool:
        job = self._job(work)
        return job is not None and bool(job.inputs_ready)

    def claim(self, key: str) -> bool:
        """The operator's Claim next (inputs fetched; the job then waits for Run)."""
        return self.engine.claim_next([key]) is not None

    def run(self, work: Work) -> None:
        """The operator's Run on a claimed job."""
        self.engine.run_job(self._job(work).job_id)

    def upload(self, work: Work, path: Path) -> None:
        """The operator's "Upload result…" with a file of their choosing."""
        self.engine.upload_result(self._job(work).job_id, path)

    def ledger_records(self, work: Work) -> list[dict[str, Any]]:
        """What the ledger holds or will hold of the work: the records its journal queued,
        and those a ledger writer already appended (any ledger file of this test)."""
        job = self._job(work)
        assert job is not None
        bodies = [r.body for r in self.engine.journal.queued_ledger(self.engine.source.key,
                                                                     limit=100_000)]
        for path in self.world.tmp.rglob("*.jsonl"):
            bodies += [json.loads(line) for line in path.read_text().splitlines() if line]
        return [b for b in bodies if (b.get("job") or {}).get("local") == job.job_id]

    def decision(self, work: Work) -> dict[str, Any]:
        job = self._job(work)
        return dict(job.decision) if job is not None else {}

    def stop(self, running: str | None = None) -> None:
        """Stop as a worker does on SIGTERM; ``running``: "resume" (work stays open and
        runs again at the next start) or "fail"."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        try:
            self.engine.shutdown(flush_timeout=10, job_timeout=15, running=running)
        finally:
            self.engine.journal.close()


def _toml(tables: dict[str, Any]) -> str:
    """A settings file from plain tables (strings, numbers, lists, nested tables)."""
    lines: list[str] = []

    def emit(prefix: list[str], table: dict[str, Any]) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        nested = {k: v for k, v in table.items() if isinstance(v, dict)}
        if prefix and scalars:
            lines.append("[" + ".".join(json.dumps(p) for p in prefix) + "]")
        for key, value in scalars.items():
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                # An array of tables, inline: [{service = "...", gate = "run"}]
                value_text = "[" + ", ".join("{" + ", ".join(
                    f"{json.dumps(k)} = {json.dumps(v)}" for k, v in item.items()) + "}"
                    for item in value) + "]"
                lines.append(f"{json.dumps(key)} = {value_text}")
                continue
            lines.append(f"{json.dumps(key)} = {json.dumps(value)}")
        for key, value in nested.items():
            if not value:
                lines.append("[" + ".".join(json.dumps(p) for p in [*prefix, key]) + "]")
            emit([*prefix, key], value)

    emit([], tables)
    return "\n".join(lines) + "\n"
