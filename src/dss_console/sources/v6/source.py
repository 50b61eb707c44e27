"""``V6Source``: a vantage6 4.x node as the engine's job source (prototype of the new seam).

Implements the seam proposed in ``shared/v6-node.md`` section 3 (types in
:mod:`dss_console.core.interfaces`) on the hand-written REST client. Ticket ids are *run* ids;
"service hash" is the image string exactly as researchers post it.

What the engine must do around it, in order, per run:

1. each poll: ``refuse_unconfigured()`` (ends runs of images with no command "not allowed"
   when ``unknown_images = "refuse"``), then ``available(images)``; ``claim(images, …)``
   while slots are free. A run whose task has a parent (``is_subtask(run_id)``) is a
   subtask: it must start even when every slot is taken (its parent holds one and waits).
   ``claim`` already returns subtasks first.
2. journal the claim, then ``fetch_inputs(run_id, workdir)`` (decrypted input, ``run.json``,
   container token), then ``command(run_id, workdir)`` → ``(argv, env)``: run argv with
   exactly env (never ``os.environ`` on top), in its own process group, cwd as configured.
3. right after the process started: ``mark_active(run_id)``.
4. while it runs: ``send_output(run_id, output_log)`` now and then (outbox kind ``output``:
   consecutive ones collapse; the source reads the tail at send time), ``send_log`` /
   ``send_progress`` for the command's own reports, ``remote_state(run_id)`` every few
   seconds (GONE → stop the process group: killed by the researcher or deleted), and
   ``watch(notify)`` pushes ``WorkGone`` for an immediate stop and ``NewWork`` to wake up.
5. at the end, through the outbox after everything queued before it:
   ``set_finished(run_id, Outcome(kind, result=workdir/"output", output=output_log,
   reason))`` — one PATCH with result, log, status and finished_at. A finished run is
   immutable: an error classified GONE there means "already ended on the server", done.
6. shutdown: ``close()``. Runs still in flight stay open on the server (the node's own
   behaviour) and are re-run at the next start, unless ``on_shutdown = "fail"``.

After a crash/restart: for each journalled run not finished locally, ``remote_state``
first: OURS → re-run from scratch (the old process group is stopped first), anything else
→ record the server's end and do not run it again.
"""

from __future__ import annotations

import json
import logging
import os
import string
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from dss_console.core.command import CommandSpec, JobPaths
from dss_console.core.interfaces import (
    ClaimedWork,
    Ending,
    Failure,
    OutboxCall,
    Outcome,
    OutcomeKind,
    Refusal,
    RemoteState,
    RemoteStatus,
    Rules,
    Source,
    SourceEvent,
    SourceService,
)
from dss_console.core.presentation import Cells, Summary
from dss_console.engine.calls import finish_call
from dss_console.engine.redact import SHARED_SUFFIX, tail_text
from dss_console.engine.settings import ServiceCommand
from dss_console.sources.v6 import crypto, profile
from dss_console.sources.v6.audit import ledger_fields
from dss_console.sources.v6.client import (
    FAILED_STATUSES,
    GONE,
    NodeIdentity,
    Run,
    V6NodeClient,
    V6NotFoundError,
    V6RunFinishedError,
    classify_v6_error,
    now_iso,
)
from dss_console.sources.v6.environment import RunFiles, run_environment
from dss_console.sources.v6.events import V6Events
from dss_console.sources.v6.gate import V6Gate
from dss_console.sources.v6.node_keys import (
    V6KeyError,
    V6KeyMismatchError,
    check_public_key,
    key_mismatch_message,
    make_cryptor,
)
from dss_console.sources.v6.presentation import PRESENTATION, run_cells, run_summary
from dss_console.sources.v6.profile import V6_NOT_AGAIN
from dss_console.sources.v6.proxy import RefusingPort, SubtaskProxy
from dss_console.sources.v6.run_record import (
    claim_details,
    input_summary,
    sha256_hex,
    write_private,
)
from dss_console.sources.v6.settings import V6Algorithm, V6Settings, v6_settings

if TYPE_CHECKING:
    from dss_console.engine.settings import Settings

log = logging.getLogger(__name__)

SNAPSHOT_AGE = 0.5  # seconds an open-runs answer may serve the next call of the same poll

_STATUS_FOR = {
    OutcomeKind.COMPLETED: "completed",
    OutcomeKind.CRASHED: "crashed",
    OutcomeKind.START_FAILED: "start failed",
    OutcomeKind.FAILED: "failed",
    OutcomeKind.CANCELLED: "failed",  # vantage6 has no cancelled status
    OutcomeKind.NOT_ALLOWED: "not allowed",
    OutcomeKind.KILLED: "killed by user",
    OutcomeKind.REJECTED: "failed",  # the operator's rejection: its words are in the log
}


# The operator's reason as the engine words it; the researcher reads it after one prefix.
_CANCEL_PREFIXES = ("cancelled by the node operator", "cancelled by the provider")


def cancel_words(reason: str) -> str:
    """'cancelled by the node operator: <why>', whatever prefix the reason came with."""
    text = reason.strip()
    stripped = True
    while stripped:
        stripped = False
        for prefix in _CANCEL_PREFIXES:
            if text.startswith(prefix):
                text = text[len(prefix):].lstrip(":").strip()
                stripped = True
    return _CANCEL_PREFIXES[0] + (f": {text}" if text else "")


def _labels(labels: list[str]) -> str:
    quoted = ", ".join(repr(label) for label in labels)
    return f"database {quoted} is" if len(labels) == 1 else f"databases {quoted} are"


class V6Source(V6Gate, Source):  # V6Gate: what the operator's gate shows (v6/gate.py)
    kind = "v6"
    words = profile.WORDS
    presentation = PRESENTATION
    # A later server generation's hooks (sources/v6x5): its socket's events, the field a
    # subtask's input travels in.
    events_class: ClassVar[type[V6Events]] = V6Events
    proxy_input_field: ClassVar[str] = "input"

    def __init__(self, client: V6NodeClient, identity: NodeIdentity, settings: V6Settings,
                 cryptor: crypto.PlainCryptor | crypto.RsaCryptor) -> None:
        self.client = client
        self.identity = identity
        self.settings = settings
        self.cryptor = cryptor
        self.key = f"{client.api_url}#node-{identity.node_id}"
        self._lock = threading.Lock()
        self._runs: dict[int, Run] = {}
        self._notes: dict[int, list[str]] = {}
        self._outputs: dict[int, Path] = {}
        self._tokens: dict[int, str] = {}
        self._details: dict[int, dict[str, Any]] = {}
        self._names: dict[tuple[str, int], str | None] = {}
        self._gone: dict[int, str] = {}
        self._proxy: SubtaskProxy | None = None
        self._refusing: RefusingPort | None = None
        self._events: V6Events | None = None
        # One poll asks refuse_unconfigured → available → claim in a row: the open runs
        # fetched by the first serve the next call once, within a moment (a run created
        # meanwhile is the next poll's; the socket's NewWork makes that one come at once).
        self._snapshot: tuple[float, list[Run]] | None = None

    @classmethod
    def connect(cls, server: str, api_key: str, settings: V6Settings, *,
                private_key_pem: bytes | None = None, verify: bool | str = True,
                upload_public_key: bool = True) -> V6Source:
        """Log in, learn who we are, check the key; upload our public key when the
        organization has none, as the official node does at start. Another organization's
        key (or an old one) is refused: replacing the registered key silently would stop
        every other node of the organization decrypting (``v6 login --replace-public-key``
        does it on purpose)."""
        client = V6NodeClient(server, verify=verify)
        try:
            client.login(api_key)
            identity = client.whoami()
            cryptor = make_cryptor(identity, private_key_pem)
            if upload_public_key and isinstance(cryptor, crypto.RsaCryptor):
                check_public_key(client, identity, cryptor)
        except BaseException:
            client.close()
            raise
        return cls(client, identity, settings, cryptor)

    # -- discovery -----------------------------------------------------------------------

    def services(self) -> list[SourceService]:
        """Configured images, then images of open runs without a command ("no command")."""
        seen = {image: SourceService(image, image, "command" if alg.command else "wrapper")
                for image, alg in self.settings.algorithms.items()}
        for run in self.client.open_runs():
            if run.image and run.image not in seen:
                seen[run.image] = SourceService(run.image, run.image, "no command")
        return list(seen.values())

    def available(self, service_hashes: Sequence[str]) -> dict[str, int]:
        wanted = set(service_hashes)
        counts: dict[str, int] = {}
        for run in self._open_runs(keep=True):
            if run.status == "pending" and run.image in wanted:
                counts[run.image] = counts.get(run.image, 0) + 1
        return counts

    def refuse_unconfigured(self) -> list[Refusal]:
        """Each poll, before any claim: end pending runs this node will not run, in words
        the researcher reads in the run's log. An image with no command: "not allowed"
        (the allowlist; left alone when ``unknown_images = "leave"``). A configured image
        asking for a database label this node does not have: "failed" before it starts, as
        the official node does. Returns what was refused (for the journal and the audit)."""
        refuse_images = self.settings.unknown_images == "refuse"
        refused = []
        for run in self._open_runs(keep=True, fresh=True):
            if run.status != "pending":
                continue
            if self.settings.algorithm_for(run.image) is None:
                if not refuse_images:
                    continue
                status, outcome = "not allowed", OutcomeKind.NOT_ALLOWED
                reason = f"image {run.image!r} is not configured on this node"
                log_line = f"{reason} (dss-console runs configured images only)"
            else:
                missing = self.unknown_databases(run)
                if not missing:
                    continue
                status, outcome = "failed", OutcomeKind.FAILED
                reason = (f"{_labels(missing)} not available on this node (it has: "
                          f"{', '.join(sorted(self.settings.databases)) or 'none'})")
                log_line = f"not started: {reason}"
            try:
                self.client.patch_run(run.id, status=status, finished_at=now_iso(),
                                      log=log_line)
            except (V6RunFinishedError, V6NotFoundError):
                continue
            details = self._claim_details(run)
            if outcome is OutcomeKind.FAILED:
                details["unknown_databases"] = self.unknown_databases(run)
            refused.append(profile.refusal(run.id, run.image, outcome, reason, details))
        return refused

    def unknown_databases(self, run: Run) -> list[str]:
        """The database labels the run's task asks for that this node does not have."""
        labels = [str(d.get("label")) for d in run.databases if d.get("label") is not None]
        return [label for label in labels if label not in self.settings.databases]

    def claim(self, service_hashes: Sequence[str], provider: str = "",
              instance: str = "", *, subtasks_only: bool = False) -> ClaimedWork | None:
        """The oldest pending run of these images, subtasks first; marked ``initializing``.

        vantage6 has no atomic claim: one worker per node is the rule (the engine's
        instance lock per ``source.key``). A run already started by someone else is
        skipped, not fought over. ``subtasks_only``: only runs whose task has a parent."""
        wanted = set(service_hashes)

        def pending(runs: list[Run]) -> list[Run]:
            return [r for r in runs if r.status == "pending" and r.image in wanted
                    and (r.parent_id is not None or not subtasks_only)
                    and self._claimable(r)]

        candidates = pending(self._open_runs())
        if not candidates and not subtasks_only:
            # The poll's answer may predate a run created a moment ago (an operator's
            # Claim next right after the task): finding nothing, ask once more. (A full
            # node's every poll looks for subtasks: those stay one request a poll.)
            candidates = pending(self._open_runs(fresh=True))
        candidates.sort(key=lambda r: (r.parent_id is None, r.id))
        for run in candidates:
            try:
                self.client.patch_run(run.id, started_at=now_iso(), status="initializing",
                                      log=self._log_text(run.id))
            except (V6RunFinishedError, V6NotFoundError):
                continue
            with self._lock:
                self._runs[run.id] = run
            return ClaimedWork(run.id, run.image, details=self._claim_details(run))
        return None

    def _claimable(self, run: Run) -> bool:
        # A run asking for a database this node lacks is the next poll's to refuse.
        return not self.unknown_databases(run)

    def claim_subtask(self, service_hashes: Sequence[str], provider: str = "",
                      instance: str = "") -> ClaimedWork | None:
        """A pending subtask run: the engine claims these even when every slot is taken
        (the parent holds one and waits for its subtasks)."""
        return self.claim(service_hashes, provider, instance, subtasks_only=True)

    def is_subtask(self, ticket_id: int) -> bool:
        run = self._run(ticket_id)
        return run.parent_id is not None

    # -- inputs and the command ---------------------------------------------------------

    def run_files(self, ticket_id: int, workdir: Path) -> RunFiles:
        run = self._run(ticket_id)
        job = run.job_id if run.job_id is not None else run.task_id
        return RunFiles(input=workdir / "input", output=workdir / "output",
                        token=workdir / "token", tmp=workdir.parent / f"v6-job-{job}" / "tmp")

    def fetch_inputs(self, ticket_id: int, dest: Path,
                     progress: Callable[[int, int | None], None] | None = None) -> list[Path]:
        """Decrypted input, ``run.json`` (the local audit record) and the container token."""
        run = self.client.get_run(ticket_id)
        if run.finished:
            raise V6RunFinishedError(f"run {ticket_id} already ended ({run.status})", 400)
        with self._lock:
            self._runs[ticket_id] = run
        files = self.run_files(ticket_id, dest)
        dest.mkdir(parents=True, exist_ok=True, mode=0o700)
        files.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = self.cryptor.decrypt(run.input or "") if run.input else b""
        write_private(files.input, data)
        record = {
            "run_id": run.id, "task_id": run.task_id, "job_id": run.job_id,
            "parent_id": run.parent_id, "image": run.image,
            "task_name": run.task.get("name"), "init_org_id": run.init_org_id,
            "init_user_id": run.init_user_id, "databases": run.databases,
            "collaboration_id": self.identity.collaboration_id,
            "input_sha256": sha256_hex(data), "input_summary": input_summary(data),
            **self._record_extra(run, data),
        }
        write_private(dest / "run.json", json.dumps(record, indent=1).encode("utf-8"))
        claimed = self._claim_details(run)  # may ask the server: not under the lock
        with self._lock:
            self._details[ticket_id] = {**claimed, **{
                k: record[k] for k in ("collaboration_id", "input_sha256", "input_summary")}}
        token = self._container_token(run)
        if token is not None:
            write_private(files.token, token.encode("utf-8"))
            with self._lock:
                self._tokens[ticket_id] = token
            if self._proxy is not None:
                self._proxy.allow(token)
        if progress is not None:
            progress(len(data), len(data))
        return [files.input, *([files.token] if token is not None else []), dest / "run.json"]

    # Hooks a later server generation overrides (4.x: every run gets a container token).
    def _container_token(self, run: Run) -> str | None:
        return self.client.container_token(run.task_id, run.image)

    def _record_extra(self, run: Run, data: bytes) -> dict[str, Any]:
        return {}

    def _environment(self, run: Run, algorithm: V6Algorithm, files: RunFiles,
                     proxy_port: int, base_env: dict[str, str]) -> dict[str, str]:
        return run_environment(
            files, proxy_port=proxy_port, requested_databases=run.databases,
            databases=self.settings.databases, algorithm_env=self.settings.algorithm_env,
            plain_env=algorithm.plain_env(), base_env=base_env)

    def run_details(self, ticket_id: int) -> dict[str, Any]:
        """What the console and the audit show about a fetched run: task, who asked (with
        names where this node may read them), databases, input hash and summary."""
        with self._lock:
            details = dict(self._details.get(ticket_id) or {})
        org_id, user_id = details.get("init_org_id"), details.get("init_user_id")
        if org_id is not None:
            details["init_org"] = self._name("organization", org_id, "name")
        if user_id is not None:
            details["init_user"] = self._name("user", user_id, "username")
        return details

    def ledger_details(self, details: Mapping[str, Any]) -> dict[str, Any]:
        """The audit's fields, for the ledger: task, job, parent, collaboration, who asked (ids
        and names), database labels, the input's SHA-256 and its summary (method, argument
        *names*, counts). Never an argument value or a database's URI."""
        return ledger_fields(details)

    def _claim_details(self, run: Run) -> dict[str, Any]:
        """The run's own details, which node ran it (the audit names the node) and who
        asked, by name where this node may read it (the server refuses a node its users:
        then the id stays)."""
        details = {**claim_details(run), "node": self.identity.name}
        if run.init_org_id is not None:
            details["init_org"] = self._name("organization", run.init_org_id, "name")
        if run.init_user_id is not None:
            details["init_user"] = self._name("user", run.init_user_id, "username")
        return {k: v for k, v in details.items() if v is not None or k not in (
            "init_org", "init_user")}

    def _name(self, kind: str, item_id: int, field_name: str) -> str | None:
        """An organization's or user's name, asked once per engine (a node may not read
        users: then None, and the id stays what the console shows)."""
        key = (kind, int(item_id))
        with self._lock:
            if key in self._names:
                return self._names[key]
        try:
            value = self.client.get(f"/{kind}/{int(item_id)}").get(field_name)
            name = str(value) if isinstance(value, str) and value else None
        except Exception:  # a name is a courtesy; the id is what counts
            name = None
        with self._lock:
            self._names[key] = name
        return name

    def command(self, ticket_id: int, workdir: Path,
                base_env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
        """argv and the *complete* environment of the run's process (see environment.py).
        Raises KeyError for an image with no command (the engine refused it before)."""
        run = self._run(ticket_id)
        algorithm = self.settings.algorithm_for(run.image)
        if algorithm is None:
            raise KeyError(f"no command configured for image {run.image!r}")
        files = self.run_files(ticket_id, workdir)
        proxy_port = self._ensure_proxy() if algorithm.subtasks else self._refusing_port()
        env = self._environment(run, algorithm, files, proxy_port,
                                base_env if base_env is not None else dict(os.environ))
        return expand_argv(algorithm, run, workdir, files), env

    # -- reporting ----------------------------------------------------------------------

    def mark_active(self, ticket_id: int) -> None:
        self.client.patch_run(ticket_id, status="active", log=self._log_text(ticket_id))
        self._status_event(ticket_id, "active")

    def killed_remotely(self, ticket_id: int) -> bool:
        """The run that went away was "killed by user" there, as last seen (not "deleted":
        the server no longer knows it). Told once (a long-lived worker keeps nothing per
        run)."""
        with self._lock:
            return self._gone.pop(ticket_id, None) == "killed by user"

    def remote_state(self, ticket_id: int) -> RemoteState:
        return self.remote_status(ticket_id).state

    def remote_status(self, ticket_id: int) -> RemoteStatus:
        try:
            run = self.client.get_run(ticket_id)
        except V6NotFoundError:
            with self._lock:
                self._gone[ticket_id] = "deleted"
            return RemoteStatus(RemoteState.GONE, "deleted")
        if run.status == "killed by user":
            with self._lock:
                self._gone[ticket_id] = run.status
            return RemoteStatus(RemoteState.GONE, run.status)
        if run.status == "completed":
            return RemoteStatus(RemoteState.SUCCEEDED, run.status)
        if run.status in FAILED_STATUSES or run.finished_at is not None:
            return RemoteStatus(RemoteState.FAILED, run.status)
        return RemoteStatus(RemoteState.OURS, run.status)

    def not_retryable(self, status: RemoteStatus) -> str:
        # A finished run is immutable on a vantage6 server: there is no rescue.
        return f"{V6_NOT_AGAIN} (it is {status.words} on the server)"

    def send_progress(self, ticket_id: int, value: float) -> None:
        self._note(ticket_id, f"progress {round(value * 100)} %")
        self.client.patch_run(ticket_id, log=self._log_text(ticket_id))

    def send_log(self, ticket_id: int, level: str, message: str) -> None:
        self._note(ticket_id, f"{level}: {message}")
        self.client.patch_run(ticket_id, log=self._log_text(ticket_id))

    def send_output(self, ticket_id: int, output: Path) -> None:
        """The run's log becomes the notes plus the tail of ``output`` (read now)."""
        with self._lock:
            self._outputs[ticket_id] = output
        self.client.patch_run(ticket_id, log=self._log_text(ticket_id))

    def send_attachment(self, ticket_id: int, description: str, path: Path,
                        mime_type: str | None) -> None:
        self._note(ticket_id, f"attachment kept on the node: {description} ({path.name})")
        self.client.patch_run(ticket_id, log=self._log_text(ticket_id))

    def send_result_file(self, ticket_id: int, path: Path, name: str) -> None:
        """Nothing to upload separately: the result travels with ``set_finished``."""

    def set_finished(self, ticket_id: int, outcome: Outcome) -> None:
        """One PATCH: result (encrypted for the task's initiating organization), log,
        status and finished_at. GONE-classified error: the run already ended there."""
        run = self._run(ticket_id)
        if outcome.output is not None:
            with self._lock:
                self._outputs[ticket_id] = outcome.output
        if outcome.kind is OutcomeKind.CANCELLED:
            self._note(ticket_id, cancel_words(outcome.reason))
        elif outcome.reason:
            self._note(ticket_id, outcome.reason)
        fields: dict[str, Any] = {"status": self._end_status(outcome),
                                  "finished_at": now_iso(), "log": self._log_text(ticket_id)}
        if outcome.result is not None and outcome.result.is_file():
            data = outcome.result.read_bytes()
            public = None
            if isinstance(self.cryptor, crypto.RsaCryptor):
                if run.init_org_id is None:
                    raise crypto.CryptoError("the task names no initiating organization")
                public = self.client.organization_public_key(run.init_org_id)
            fields["result"] = self.cryptor.encrypt(data, public)
        self.client.patch_run(ticket_id, **fields)
        self._status_event(ticket_id, fields["status"])
        self._forget(ticket_id)

    def _end_status(self, outcome: Outcome) -> str:
        """The run status an outcome is sent as (a later generation has more words)."""
        return _STATUS_FOR[outcome.kind]

    def refuse(self, ticket_id: int, reason: str) -> None:
        """End a claimed run as "not allowed" (its image lost its command meanwhile)."""
        self.set_finished(ticket_id, Outcome(OutcomeKind.NOT_ALLOWED, reason=reason))

    def classify(self, error: BaseException) -> Failure:
        if isinstance(error, crypto.CryptoError):
            return Failure.REFUSED
        return classify_v6_error(error)

    def default_provider(self) -> str:
        """A node claims as itself."""
        return self.identity.name

    # -- the engine's rules, the command and how a run ends (v6/profile.py) ---------------

    @property
    def rules(self) -> Rules:
        return profile.rules(self.settings)

    def configured_services(self) -> list[SourceService]:
        """An image configured just now is claimable from the next poll, not the next
        services refresh (its name is all a v6 "service" is)."""
        return [SourceService(image, image, "configured") for image in self.settings.algorithms]

    def shares_output_tail(self, settings: Settings) -> bool:
        return v6_settings(settings).send_output_tail

    def preflight_spec(self, key: str, command: ServiceCommand) -> CommandSpec | None:
        algorithm = self.settings.algorithm_for(key)
        program = profile.preflight_program(algorithm) if algorithm else None
        return CommandSpec(argv=(program,), display=program) if program is not None else None

    def command_spec(self, ticket_id: int, command: ServiceCommand, paths: JobPaths,
                     nice: int) -> CommandSpec:
        """Exactly :meth:`command`'s argv and environment, in the directory the inputs were
        fetched to, with no other environment (the official v6 wrapper base32-decodes every
        variable it sees); the template is only for display."""
        argv, env = self.command(ticket_id, paths.input_dir)
        algorithm = self.settings.algorithm_for(self._run(ticket_id).image)
        subtasks = algorithm is not None and algorithm.subtasks
        return CommandSpec(argv=tuple(argv), display=command.command, env=env,
                           inherit_env=False, timeout=command.timeout,
                           cwd=Path(paths.workdir, command.cwd) if command.cwd
                           else Path(paths.workdir), nice=nice,
                           # In a sandbox without network: the proxy, relayed; its python's
                           # environment shown; the run dir (output, tmp) writable.
                           loopback_port=self._ensure_proxy() if subtasks else None,
                           runtime_paths=self._sandbox_paths(algorithm),
                           writable_inputs=True)

    def _sandbox_paths(self, algorithm: V6Algorithm | None) -> tuple[str, ...]:
        """What a sandboxed run must see read-only: its python's environment and the
        node's database files (a URI that is a local path)."""
        found = environment_paths(algorithm.python) if algorithm and algorithm.python else ()
        files = tuple(os.path.abspath(database.uri) for database in
                      self.settings.databases.values() if os.path.exists(database.uri))
        return (*found, *files)

    def result_path(self, paths: JobPaths) -> Path:
        return paths.input_dir / "output"

    def missing_result(self, result: Path) -> str:
        # The official wrapper always writes it; a command that does not has failed to
        # deliver, whatever its exit code says.
        return "the command exited 0 but wrote no result (its {output} file / OUTPUT_FILE)"

    def result_calls(self, ticket_id: int, result: Path, export_dir: Path,
                     shared_output: Callable[[], Path | None]) -> list[OutboxCall]:
        return [finish_call(OutcomeKind.COMPLETED, result=result, output=shared_output(),
                            final=True)]

    def failure_calls(self, ending: Ending) -> list[OutboxCall]:
        """One call: status, reason and the output's tail as the run's log (v6 has no
        cancelled status: an operator's stop is sent as failed, the reason says so)."""
        return [finish_call(ending.kind, reason=ending.reason, output=ending.shared_output())]

    def started_calls(self) -> list[OutboxCall]:
        # Through the outbox: a server that does not answer right now must not fail the
        # run; a run killed meanwhile (gone) stops it.
        return [("active", {})]

    def update_settings(self, settings: Settings) -> None:
        self.settings = v6_settings(settings)

    def log_limit(self) -> int:
        return self.settings.log_limit

    def private_values(self) -> tuple[dict[str, str], dict[str, str]]:
        """What a run's output may show that is the node's own: the configured variables
        (every image's and the databases') and the databases' URIs (placeholder → URI)."""
        env = dict(self.settings.algorithm_env)
        for algorithm in self.settings.algorithms.values():
            env.update(algorithm.env)
        uris: dict[str, str] = {}
        for label, database in self.settings.databases.items():
            uris[f"<database:{label}>"] = database.uri
            env.update({f"{label.upper()}_DB_PARAM_{k.upper()}": v
                        for k, v in database.env.items()})
        return env, uris

    # -- push and lifetime --------------------------------------------------------------

    def watch(self, notify: Callable[[SourceEvent], None]) -> None:
        """Start the socket; ``notify`` gets NewWork / WorkGone / Connection events."""
        if self._events is not None:
            return
        try:
            self._events = self.events_class(self.client, self.identity, notify,
                                             node_info=self.node_info)
        except ImportError:
            # python-socketio is the optional `v6` extra: without it, polling alone.
            log.warning("python-socketio is not installed (pip install 'dss-console[v6]'): "
                        "no push events, new runs and kills are seen by polling only")
            return
        self._events.start()

    @property
    def events(self) -> V6Events | None:
        return self._events

    def node_info(self) -> dict[str, Any]:
        """What ``node_info_update`` shares: labels and images, never paths or secrets."""
        return {"database_labels": list(self.settings.databases),
                "database_types": {k: v.type for k, v in self.settings.databases.items()},
                "allowed_algorithms": list(self.settings.algorithms),
                "runner": "dss-console (local commands)"}

    def job_cells(self, service_key: str, details: Mapping[str, Any]) -> Cells:
        return run_cells(details)

    def job_summary(self, service_key: str, details: Mapping[str, Any]) -> Summary | None:
        return run_summary(service_key, details)

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None
        if self._refusing is not None:
            self._refusing.close()
            self._refusing = None
        self.client.close()

    # -- internals ----------------------------------------------------------------------

    def _open_runs(self, *, keep: bool = False, fresh: bool = False) -> list[Run]:
        """The open runs: the snapshot left by the previous call if it is recent (and used
        once), else asked now; ``keep`` leaves this answer for the next call; ``fresh``
        (a poll's first call) always asks."""
        with self._lock:
            snapshot, self._snapshot = self._snapshot, None
        if (snapshot is not None and not fresh
                and time.monotonic() - snapshot[0] < SNAPSHOT_AGE):
            runs = snapshot[1]
        else:
            runs = self.client.open_runs()
        if keep:
            # A served snapshot keeps its age: handing it on must not make old news young.
            taken = snapshot[0] if snapshot is not None and runs is snapshot[1] else \
                time.monotonic()
            with self._lock:
                self._snapshot = (taken, runs)
        return runs

    def _run(self, ticket_id: int) -> Run:
        with self._lock:
            run = self._runs.get(ticket_id)
        if run is None:
            run = self.client.get_run(ticket_id)
            with self._lock:
                self._runs[ticket_id] = run
        return run

    def _ensure_proxy(self) -> int:
        with self._lock:
            if self._proxy is None:
                self._proxy = SubtaskProxy(self.client, self.cryptor,
                                           input_field=self.proxy_input_field)
                self._proxy.start()
                for token in self._tokens.values():
                    self._proxy.allow(token)
            return self._proxy.port

    def _refusing_port(self) -> int:
        with self._lock:
            if self._refusing is None:
                self._refusing = RefusingPort()
            return self._refusing.port

    def _note(self, ticket_id: int, line: str) -> None:
        with self._lock:
            self._notes.setdefault(ticket_id, []).append(line)

    def _log_text(self, ticket_id: int) -> str:
        with self._lock:
            notes = list(self._notes.get(ticket_id, ()))
            output = self._outputs.get(ticket_id)
        parts = list(notes)
        # Only a copy the engine redacted for the server (send_output_tail): never the raw
        # log, whatever path a call names.
        if output is not None and output.name.endswith(SHARED_SUFFIX):
            parts.append(tail_text(output, self.settings.log_limit))
        return "\n".join(parts)

    def _status_event(self, ticket_id: int, status: str) -> None:
        if self._events is None:
            return
        run = self._run(ticket_id)
        self._events.algorithm_status_change(run_id=run.id, task_id=run.task_id,
                                             status=status, parent_id=run.parent_id)

    def _forget(self, ticket_id: int) -> None:
        with self._lock:
            token = self._tokens.pop(ticket_id, None)
            self._notes.pop(ticket_id, None)
            self._outputs.pop(ticket_id, None)
            self._details.pop(ticket_id, None)
        if token is not None and self._proxy is not None:
            self._proxy.revoke(token)


def expand_argv(algorithm: V6Algorithm, run: Run, workdir: Path, files: RunFiles) -> list[str]:
    values = {"run": str(run.id), "task": str(run.task_id), "image": run.image,
              "workdir": str(workdir), "input": str(files.input), "output": str(files.output),
              "token": str(files.token), "tmp": str(files.tmp)}
    formatter = string.Formatter()
    if algorithm.command is None:
        return algorithm.argv_template()  # the wrapper shorthand has no placeholders
    return [formatter.vformat(word, (), values) for word in algorithm.argv_template()]


__all__ = ["GONE", "ClaimedWork", "SourceService", "V6KeyError", "V6KeyMismatchError", "V6Source",
           "check_public_key", "claim_details", "input_summary", "key_mismatch_message",
           "make_cryptor", "tail_text"]


def environment_paths(python: str) -> tuple[str, ...]:
    """What an algorithm's ``python`` needs to see in a sandbox: its environment (a venv's
    prefix) and, for a venv, the interpreter it was made from (pyvenv.cfg's ``home``)."""
    program = Path(python).expanduser()
    found = [program.absolute().parent.parent, Path(os.path.realpath(program)).parent.parent]
    config = found[0] / "pyvenv.cfg"
    try:
        for line in config.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip():
                home = Path(value.strip())
                found += [home.parent, Path(os.path.realpath(home)).parent]
    except OSError:
        pass  # not a venv: its prefix is all
    # The system is shown anyway; "/" (a python in /bin) would show everything.
    system = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc")
    return tuple(dict.fromkeys(str(path) for path in found
                               if len(path.parts) > 1 and path.parts[1] not in system))
