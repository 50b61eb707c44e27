"""``V6x5Source``: a vantage6 5.x node as the engine's job source (plan step 5: compute runs).

The 4.x node's flow (``sources/v6/source.py``: allowlist, claim, refusals, kill, restart
without running twice, subtasks, audit) through its hooks, with what 5.x does otherwise:

- the client is :class:`HqNodeClient` (``/hq``, the Keycloak token, ``HqRun``): the claim is
  4.x's ``GET run?state=open&node_id=…&include=task``, then ``PATCH`` ``initializing``;
- the run's input is its decrypted ``arguments`` (the keyword arguments, as JSON), and its
  method is the task's (``run.json`` keeps both; the gate reads them from there);
- the environment is 5.0.3's (:func:`run_environment_5`): session folder and file, action,
  method, ids; the container token only for a ``central_compute`` run (HQ refuses others);
- the end calls are 4.x's: ``PATCH active`` when the process started, then one ``PATCH``
  with status, result, log and finished_at;
- the socket is :class:`HqEvents` (``new_task_update``), subtask inputs go in ``arguments``.

Sessions (plan step 6): a ``data_extraction`` run reads one of ``[v6.databases]`` by the
label its dataframe names, a ``preprocessing`` run the dataframe it replaces; their output
(parquet, its columns read by ``session_step.py`` in the algorithm's Python) is staged in
``result_calls`` (what cannot be read ends the run ``unexpected output``), and the end call
posts the columns, commits it to the node's :class:`SessionStore` (once per run: a repeat
finds the commit) and completes the run — after any release gate, so a refused release
leaves the session as it was. A compute run gets its dataframes through
``USER_REQUESTED_DATAFRAMES`` and the real session folder (read-only under isolation); a
dataframe missing here ends it ``dataframe not found`` before it is claimed.
``delete_dataframe`` removes the file and is answered ``dataframe_deleted``; at each start
the sessions HQ no longer has are removed. Every commit and delete is a ledger record
(:class:`LedgerNote`: ids, name, SHA-256, size).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from dss_console.core.command import CommandSpec, JobPaths
from dss_console.core.executor import StartError
from dss_console.core.interfaces import (
    Failure,
    LedgerNote,
    OutboxCall,
    Outcome,
    OutcomeKind,
    Refusal,
    ResultRejected,
    SourceEvent,
)
from dss_console.core.presentation import Cells, Fact, Summary
from dss_console.engine.calls import finish_call
from dss_console.engine.settings import ServiceCommand
from dss_console.paths import data_dir
from dss_console.sources.v6 import crypto, profile
from dss_console.sources.v6.client import (
    NodeIdentity,
    Run,
    V6NotFoundError,
    V6RunFinishedError,
    now_iso,
)
from dss_console.sources.v6.environment import RunFiles
from dss_console.sources.v6.events import V6Events
from dss_console.sources.v6.gate import _arguments
from dss_console.sources.v6.node_keys import check_public_key, make_cryptor
from dss_console.sources.v6.run_record import input_summary
from dss_console.sources.v6.settings import V6Algorithm, V6Settings
from dss_console.sources.v6.source import V6Source
from dss_console.sources.v6x5.auth import DEFAULT_REALM
from dss_console.sources.v6x5.client import HqNodeClient, HqRun
from dss_console.sources.v6x5.environment import (
    CENTRAL,
    EXTRACTION,
    RunContext,
    SessionFiles,
    run_environment_5,
)
from dss_console.sources.v6x5.events import HqEvents
from dss_console.sources.v6x5.presentation import PRESENTATION, run_cells, run_summary
from dss_console.sources.v6x5.sessions import (
    DataframeNote,
    SessionStore,
    looks_like_parquet,
    session_step_script,
)

log = logging.getLogger(__name__)

COMPUTE_ACTIONS = frozenset({"federated_compute", "central_compute", "postprocessing"})
PREPROCESSING = "preprocessing"
SESSION_ACTIONS = frozenset({EXTRACTION, PREPROCESSING})  # they make a session dataframe
# 5.x statuses a failure's reason starts with (the reason travels in the journal's end
# call, so a restart sends the same status).
DATAFRAME_NOT_FOUND = "dataframe not found"
UNEXPECTED_OUTPUT = "unexpected output"
_STATUS_WORDS = (DATAFRAME_NOT_FOUND, UNEXPECTED_OUTPUT)
STEP_TIMEOUT = 300.0  # seconds for session_step.py (pyarrow reading a schema)
LEDGER_KIND = "session dataframe"
# The log of a failed central run this node gives no container token (issue 21): the
# official tools only say "Token not found".
NO_SUBTASKS_NOTE = ("this node gives this algorithm no token to call the server with: it "
                    "lets this algorithm create no subtasks (subtasks = true is not set for "
                    "it on this node)")


class SessionStepError(Exception):
    """``session_step.py`` could not read a committed dataframe: its words."""


class V6x5Source(V6Source):
    kind = "v6"  # its settings plug-in: the family's one [v6] table (plugins.SOURCE_SETTINGS)
    presentation = PRESENTATION
    events_class: ClassVar[type[V6Events]] = HqEvents
    proxy_input_field: ClassVar[str] = "arguments"

    client: HqNodeClient

    @classmethod
    def connect_hq(cls, server: str, api_key: str, settings: V6Settings, *, auth_url: str,
                   node: str, realm: str = DEFAULT_REALM, private_key_pem: bytes | None = None,
                   verify: bool | str = True, upload_public_key: bool = True,
                   data_root: Path | None = None) -> V6x5Source:
        """Log in through the auth server, learn who we are, check the key (as 4.x's
        :meth:`V6Source.connect`). ``data_root``: the worker's data dir (``--data-dir``),
        which keeps the session folders; None: the user's."""
        client = HqNodeClient(server, auth_url=auth_url, node=node, realm=realm or DEFAULT_REALM,
                              verify=verify)
        try:
            client.login(api_key)
            identity: NodeIdentity = client.whoami()
            cryptor = make_cryptor(identity, private_key_pem)
            if upload_public_key and isinstance(cryptor, crypto.RsaCryptor):
                check_public_key(client, identity, cryptor)
        except BaseException:
            client.close()
            raise
        return cls(client, identity, settings, cryptor, data_root=data_root)

    def __init__(self, client: HqNodeClient, identity: NodeIdentity, settings: V6Settings,
                 cryptor: crypto.PlainCryptor | crypto.RsaCryptor, *,
                 data_root: Path | None = None) -> None:
        super().__init__(client, identity, settings, cryptor)
        self.sessions = SessionStore(data_root if data_root is not None else data_dir(),
                                     client.api_url, identity.node_id)
        self._notify: Callable[[SourceEvent], None] | None = None
        self._pending_notes: list[DataframeNote] = []
        self._notes_lock = threading.Lock()
        self._commit_notes_lock = threading.Lock()
        self._state_lock = threading.Lock()

    # -- refusals before a claim ---------------------------------------------------------

    def refuse_unconfigured(self) -> list[Refusal]:
        """4.x's refusals, then what this node does not run, ended before it starts with
        words: an action it does not know, a database label it lacks, a session algorithm
        configured as a ``command``, a dataframe not here (``dataframe not found``)."""
        refused = super().refuse_unconfigured()
        done = {refusal.run_id for refusal in refused}
        for run in self._open_runs(keep=True):  # the answer 4.x's refusals just asked for
            if run.status != "pending" or run.id in done:
                continue
            if self.settings.algorithm_for(run.image) is None:
                continue
            found = self._not_runnable(run)
            if found is None:
                continue
            status, reason = found
            try:
                self.client.patch_run(run.id, status=status, finished_at=now_iso(),
                                      log=f"not started: {reason}")
            except (V6RunFinishedError, V6NotFoundError):
                continue
            refused.append(profile.refusal(run.id, run.image, OutcomeKind.FAILED, reason,
                                           self._claim_details(run)))
        return refused

    def _not_runnable(self, run: Run) -> tuple[str, str] | None:
        """(status, reason) for a run this node does not start, else None."""
        if not isinstance(run, HqRun):
            return None
        action = run.action
        if run.blob_storage_used:
            return "failed", "the run's data is in a blob store, which this node does not use"
        if action and action not in COMPUTE_ACTIONS | SESSION_ACTIONS:
            return "failed", f"this node does not run {action!r} tasks"
        algorithm = self.settings.algorithm_for(run.image)
        if action in SESSION_ACTIONS and algorithm is not None and algorithm.python is None:
            return "failed", (f"a {action} algorithm must be configured on this node with "
                              f"python and package (image {run.image!r} has a command): the "
                              "node reads the dataframe it makes with that python")
        wanted = [str(d.get("dataframe_name") or "") for d in run.databases
                  if d.get("dataframe_id") is not None or d.get("type") == "dataframe"]
        if action == EXTRACTION:
            frame = run.dataframe
            if frame is None or run.session_id is None:
                return "failed", "the extraction task names no session dataframe"
            label = _extraction_label(run)
            if label not in self.settings.databases:
                return "failed", f"database {label} is not configured on this node"
            wanted = []
        elif action == PREPROCESSING and run.dataframe is not None:
            wanted = [*wanted, run.dataframe[1]]
        if not wanted:
            return None
        if run.session_id is None:
            return DATAFRAME_NOT_FOUND, "the task asks for dataframes but names no session"
        try:
            missing = [name for name in dict.fromkeys(wanted)
                       if not self.sessions.has_dataframe(run.session_id, name)]
        except ValueError as exc:
            return "failed", str(exc)
        if missing:
            names = ", ".join(repr(name) for name in missing)
            return DATAFRAME_NOT_FOUND, (f"{DATAFRAME_NOT_FOUND}: {names} is not in session "
                                         f"{run.session_id} on this node")
        return None

    def _claimable(self, run: Run) -> bool:
        # What this node does not run is the next poll's to refuse, never claimed.
        return super()._claimable(run) and self._not_runnable(run) is None

    def unknown_databases(self, run: Run) -> list[str]:
        # A 5.x task asks for dataframes, not database labels; an extraction's label is
        # checked by _not_runnable, in the official node's words.
        return []

    # -- hooks -----------------------------------------------------------------------------

    def _container_token(self, run: Run) -> str | None:
        # HQ 5.0.3 gives a container token to central runs only (others: 401), and only a
        # run that gets the proxy (`subtasks = true`) gets one: without it PORT refuses and
        # a token would be of no use (and is not to be handed to whatever listens there).
        algorithm = self.settings.algorithm_for(run.image)
        if isinstance(run, HqRun) and run.action == CENTRAL and algorithm is not None \
                and algorithm.subtasks:
            return self.client.container_token(run.task_id, run.image)
        return None

    def _central_without_token(self, run: Run) -> bool:
        """A central run this node gives no container token: its algorithm may not create
        subtasks here. It still runs (a central step that only adds up its input needs no
        token); when it fails, its log says why, as the tools' "Token not found" does not."""
        algorithm = self.settings.algorithm_for(run.image)
        return (isinstance(run, HqRun) and run.action == CENTRAL and algorithm is not None
                and not algorithm.subtasks)

    def _record_extra(self, run: Run, data: bytes) -> dict[str, Any]:
        hq = run if isinstance(run, HqRun) else None
        extra: dict[str, Any] = {"action": hq.action if hq else "",
                                 "method": hq.method if hq else "",
                                 "session_id": hq.session_id if hq else None}
        summary = input_summary(data)
        if "format" not in summary and summary.get("method") is None:
            # A 5.x input is the keyword arguments themselves; the method is the task's.
            arguments = json.loads(data.decode("utf-8"))
            summary = {**summary, "method": extra["method"] or None,
                       "kwargs": sorted(arguments)}
        extra["input_summary"] = summary
        return extra

    def _claim_details(self, run: Run) -> dict[str, Any]:
        details = super()._claim_details(run)
        if isinstance(run, HqRun):
            details.update({"action": run.action, "method": run.method,
                            "session_id": run.session_id})
        return details

    def _environment(self, run: Run, algorithm: V6Algorithm, files: RunFiles,
                     proxy_port: int, base_env: dict[str, str]) -> dict[str, str]:
        hq = run if isinstance(run, HqRun) else None
        session = self._session_folder(run, files)
        database: tuple[str, str] | None = None
        params: dict[str, str] = {}
        if hq is not None and hq.action == EXTRACTION:
            label = _extraction_label(hq)
            configured = self.settings.databases.get(label)
            if configured is None:  # the settings changed since the claim
                raise StartError(f"database {label} is not configured on this node")
            database = (configured.uri, configured.type)
            params = dict(configured.env)
        context = RunContext(action=hq.action if hq else "", method=hq.method if hq else "",
                             task_id=run.task_id, node_id=self.identity.node_id,
                             organization_id=self.identity.organization_id,
                             collaboration_id=self.identity.collaboration_id)
        with self._lock:
            token = self._tokens.get(run.id)
        return run_environment_5(
            context, SessionFiles(input=files.input, output=files.output,
                                  session_folder=session,
                                  session_file=session / "session_state.parquet"),
            proxy_port=proxy_port, databases=run.databases, database=database,
            database_params=params, container_token=token,
            algorithm_env=self.settings.algorithm_env,
            plain_env=algorithm.plain_env(), base_env=base_env)

    def _session_folder(self, run: Run, files: RunFiles) -> Path:
        """The task's session folder here; a run without a session gets an empty one of
        its own (the wrapper expects the variables)."""
        session_id = run.session_id if isinstance(run, HqRun) else None
        if session_id is not None:
            return self.sessions.folder(session_id)
        folder = files.input.parent / "session"
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder

    def command_spec(self, ticket_id: int, command: ServiceCommand, paths: JobPaths,
                     nice: int) -> CommandSpec:
        """4.x's, and under isolation the session folder seen read-only (the node, not
        the algorithm, writes dataframes)."""
        spec = super().command_spec(ticket_id, command, paths, nice)
        run = self._run(ticket_id)
        session_id = run.session_id if isinstance(run, HqRun) else None
        if session_id is None:
            return spec
        folder = str(self.sessions.folder(session_id))
        return dataclasses.replace(spec, runtime_paths=(*spec.runtime_paths, folder))

    # -- session results -------------------------------------------------------------------

    def result_calls(self, ticket_id: int, result: Path, export_dir: Path,
                     shared_output: Callable[[], Path | None]) -> list[OutboxCall]:
        """A compute run: 4.x's. An extraction or preprocessing run: its output is checked
        (parquet, its columns readable: else the run ends ``unexpected output``) and staged
        with its columns; the one end call commits it and posts the columns before it
        completes the run (after a release gate: a refused release commits nothing); no
        result (as the official node)."""
        run = self._run(ticket_id)
        if not isinstance(run, HqRun) or run.action not in SESSION_ACTIONS:
            return super().result_calls(ticket_id, result, export_dir, shared_output)
        session_id, frame = run.session_id, run.dataframe
        if session_id is None or frame is None:
            raise ResultRejected("the task names no session dataframe",
                                 "the task names no session dataframe")
        name = frame[1]
        if self.sessions.committed(session_id, name, run.id) is None:
            if not looks_like_parquet(result):
                words = (f"{UNEXPECTED_OUTPUT}: the {run.action} algorithm's output is "
                         "not a parquet table")
                raise ResultRejected(words, words)
            columns = self._columns(run, result, name)
            self.sessions.stage(session_id, name, result, run.id, columns=columns,
                                image=run.image)
        return [finish_call(OutcomeKind.COMPLETED, output=shared_output(), final=True)]

    def set_finished(self, ticket_id: int, outcome: Outcome) -> None:
        """4.x's one PATCH. For a dataframe this run made: its columns (read when it was
        staged) go first, then the commit here (once per run: a repeat after a crash or a
        lost reply finds it), right before the completing PATCH. A run that did not succeed
        drops what it staged. A central run that failed without a container token says
        why in its log."""
        run = self._run(ticket_id)
        if outcome.kind in (OutcomeKind.FAILED, OutcomeKind.CRASHED) \
                and self._central_without_token(run):
            with self._lock:
                noted = NO_SUBTASKS_NOTE in self._notes.get(ticket_id, ())
            if not noted:  # once, however often the end call is repeated
                self._note(ticket_id, NO_SUBTASKS_NOTE)
        if (isinstance(run, HqRun) and run.action in SESSION_ACTIONS
                and run.dataframe is not None and run.session_id is not None):
            frame_id, name = run.dataframe[0], run.dataframe[1]
            if outcome.success:
                self._commit(run, run.session_id, frame_id, name)
            else:
                self.sessions.discard_staged(run.session_id, name, run.id)
        super().set_finished(ticket_id, outcome)

    def _commit(self, run: HqRun, session_id: int, frame_id: int, name: str) -> None:
        columns = self.sessions.columns(session_id, name, run.id)
        if columns is None:
            raise SessionStepError(f"the output of dataframe {name!r} is no longer staged "
                                   "on this node")
        self.client.post_columns(frame_id, columns)
        note = self.sessions.committed(session_id, name, run.id)
        if note is None:
            note = self.sessions.commit(session_id, name, run.id)
            self._state_add(run, name)
        self._ledger_commit(note)

    def _end_status(self, outcome: Outcome) -> str:
        if outcome.kind is OutcomeKind.FAILED:
            for words in _STATUS_WORDS:
                if outcome.reason.startswith(words):
                    return words
        return super()._end_status(outcome)

    def classify(self, error: BaseException) -> Failure:
        if isinstance(error, SessionStepError):
            return Failure.REFUSED
        return super().classify(error)

    def _python(self, run: Run) -> str:
        algorithm = self.settings.algorithm_for(run.image)
        if algorithm is None or algorithm.python is None:
            raise SessionStepError(f"image {run.image!r} has no python configured here to "
                                   "read its dataframe with")
        return algorithm.python

    def _columns(self, run: Run, output: Path, name: str) -> list[tuple[str, str]]:
        """The output's columns as HQ shows them: ``session_step.py columns`` run by the
        algorithm's Python (pyarrow stays out of this process). Read once, when the result
        is handed over: what cannot be read ends the run ``unexpected output``."""
        words = f"{UNEXPECTED_OUTPUT}: the columns of dataframe {name!r} could not be read"
        try:
            done = _session_step(self._python(run), "columns", str(output))
            if done.returncode != 0:
                raise ResultRejected(words, words)
            return [(str(c["name"]), str(c["dtype"])) for c in json.loads(done.stdout)]
        except (SessionStepError, OSError, subprocess.SubprocessError, ValueError,
                KeyError, TypeError) as exc:
            raise ResultRejected(words, words) from exc

    def _state_add(self, run: HqRun, name: str) -> None:
        """The session's state file gets the official node's row (a courtesy: algorithms
        do not read it, so a failure is logged, not fatal)."""
        if run.session_id is None:
            return
        try:
            python = self._python(run)
        except SessionStepError:
            log.warning("session state of session %s not updated", run.session_id)
            return
        self._state_row(python, run.session_id, run.action, name, "Session updated.")

    def _state_row(self, python: str, session_id: int, action: str, name: str,
                   message: str) -> None:
        """One row in the session's state file, written by ``session_step.py`` in an
        algorithm's Python (pyarrow stays out of the worker); one writer at a time (a
        commit and a delete may come together)."""
        state = self.sessions.folder(session_id) / "session_state.parquet"
        try:
            with self._state_lock:
                done = _session_step(python, "state-add", str(state), action,
                                     f"{name}.parquet", message, name)
            if done.returncode != 0:
                log.warning("session state of session %s not updated", session_id)
        except (OSError, subprocess.SubprocessError):
            log.warning("session state of session %s not updated", session_id)

    def _state_python(self, image: str | None) -> str | None:
        """The Python that notes a delete: the one of the algorithm that made the
        dataframe, else any configured algorithm's (each has the tools, so pyarrow)."""
        made = self.settings.algorithm_for(image) if image else None
        if made is not None and made.python is not None:
            return made.python
        return next((a.python for a in self.settings.algorithms.values()
                     if a.python is not None), None)

    # -- deletes, the reconcile, the ledger ------------------------------------------------

    def watch(self, notify: Callable[[SourceEvent], None]) -> None:
        """The socket (with ``delete_dataframe``), after removing the sessions HQ no longer
        has (a delete may have come while this node was away)."""
        if self._events is not None:
            return
        with self._notes_lock:
            self._notify = notify
        self._flush_ledger()
        self.reconcile_sessions()
        try:
            self._events = HqEvents(self.client, self.identity, notify,
                                    node_info=self.node_info,
                                    delete_dataframe=self.delete_dataframe)
        except ImportError:
            log.warning("python-socketio is not installed (pip install 'dss-console[v6]'): "
                        "no push events, new runs and kills are seen by polling only")
            return
        self._events.start()

    def delete_dataframe(self, session_id: int, name: str) -> None:
        """HQ's ``delete_dataframe``: the file goes and the session's state file notes it,
        as the official node does (the socket then answers ``dataframe_deleted``)."""
        image = self.sessions.made_by(session_id, name)
        note = self.sessions.delete_dataframe(session_id, name)
        if note is None:
            return
        self._ledger(note)
        python = self._state_python(image)
        if python is None:
            log.warning("session state of session %s not updated: no algorithm with a "
                        "python is configured", session_id)
            return
        self._state_row(python, session_id, "delete", name, "Dataframe deleted")

    def reconcile_sessions(self) -> None:
        """Remove the session folders of sessions HQ no longer has: not in its list
        (sorted by id, so no page skips one) and ``GET session/<id>`` answers 404."""
        local = self.sessions.session_ids()
        if not local:
            return
        try:
            known = self.client.session_ids(self.identity.collaboration_id)
        except Exception as exc:  # the next start tries again; a delete event still works
            log.warning("sessions not reconciled with the server: %s", exc)
            return
        for session_id in local:
            if session_id in known:
                continue
            # Not in the list: asked for itself before its data goes (a list may miss one).
            try:
                gone = self.client.session_gone(session_id)
            except Exception as exc:
                log.warning("session %s not reconciled with the server: %s", session_id, exc)
                continue
            if gone:
                for note in self.sessions.delete_session(session_id):
                    self._ledger(note)

    def _ledger(self, note: DataframeNote) -> bool:
        """Queue the note (the engine writes it before this returns); False when there is
        no ledger yet (engine.start recovers before it watches): a commit's note then waits
        in its record, a delete's here, until :meth:`watch`."""
        with self._notes_lock:
            notify = self._notify
            if notify is None:
                if note.action != "committed":
                    self._pending_notes.append(note)
                return False
        notify(LedgerNote(LEDGER_KIND, {
            "action": note.action, "session_id": note.session_id,
            "dataframe": note.dataframe, "run_id": note.run_id, "sha256": note.sha256,
            "size": note.size}))
        return True

    def _ledger_commit(self, note: DataframeNote) -> None:
        """A commit's note, once: its record says when it was queued (a crash between the
        two gives it again at most once more, the same facts: (action, session, dataframe,
        run, sha256) is its identity)."""
        with self._commit_notes_lock:  # the outbox's end call and watch() may both try
            if not self.sessions.noted(note) and self._ledger(note):
                self.sessions.mark_noted(note)

    def _flush_ledger(self) -> None:
        """What waited for the ledger: deletes made before it, commits whose note a crash
        or the missing ledger kept back."""
        with self._notes_lock:
            pending, self._pending_notes = self._pending_notes, []
        for note in pending:
            self._ledger(note)
        for note in self.sessions.unnoted():
            self._ledger_commit(note)

    def private_values(self) -> tuple[dict[str, str], dict[str, str]]:
        env, uris = super().private_values()
        uris["<session folder>"] = str(self.sessions.root)
        return env, uris

    # -- the gate and the window -----------------------------------------------------------

    def approval_facts(self, ticket_id: int, paths: JobPaths,
                       details: Mapping[str, Any]) -> tuple[Fact, ...]:
        """4.x's facts; a 5.x input is the arguments themselves and the method is the
        task's, so both are read here (values stay local, as 4.x's)."""
        facts = list(super().approval_facts(ticket_id, paths, details))
        record = _json(paths.input_dir / "run.json")
        arguments = _json(paths.input_dir / "input")
        extra: list[Fact] = []
        method = record.get("method") if isinstance(record, dict) else None
        if method and not any(f.label == "Method" for f in facts):
            extra.append(Fact("Method", str(method)))
        if isinstance(arguments, dict) and "kwargs" not in arguments:
            extra += _arguments({"kwargs": arguments})
        at = next((i for i, f in enumerate(facts) if f.label.startswith("Database")),
                  len(facts))
        return tuple(facts[:at] + extra + facts[at:])

    def job_cells(self, service_key: str, details: Mapping[str, Any]) -> Cells:
        return run_cells(details)

    def job_summary(self, service_key: str, details: Mapping[str, Any]) -> Summary | None:
        return run_summary(service_key, details)


def _extraction_label(run: HqRun) -> str:
    """The database an extraction reads: the label its dataframe names, else the one in
    the run's databases (the check before the claim and the run's environment both read
    it here, so they cannot differ)."""
    if run.dataframe is not None and run.dataframe[2]:
        return run.dataframe[2]
    return next((str(d.get("label")) for d in run.databases if d.get("label")), "")


def _session_step(python: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, "-I", str(session_step_script()), *args],
                          capture_output=True, text=True, timeout=STEP_TIMEOUT,
                          env={"PATH": os.environ.get("PATH", os.defpath)},
                          check=False)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
