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

Sessions (extraction, preprocessing, dataframes) are plan step 6: until then a run of those
actions, or a compute run asking for dataframes, is refused in words before it starts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from dss_console.core.command import JobPaths
from dss_console.core.interfaces import OutcomeKind, Refusal
from dss_console.core.presentation import Cells, Fact, Summary
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
    RunContext,
    SessionFiles,
    run_environment_5,
)
from dss_console.sources.v6x5.events import HqEvents
from dss_console.sources.v6x5.presentation import PRESENTATION, run_cells, run_summary

# What this node runs until sessions are built (plan step 6).
COMPUTE_ACTIONS = frozenset({"federated_compute", "central_compute", "postprocessing"})


class V6x5Source(V6Source):
    kind = "v6"  # its settings plug-in: the family's one [v6] table (plugins.SOURCE_SETTINGS)
    presentation = PRESENTATION
    events_class: ClassVar[type[V6Events]] = HqEvents
    proxy_input_field: ClassVar[str] = "arguments"

    client: HqNodeClient

    @classmethod
    def connect_hq(cls, server: str, api_key: str, settings: V6Settings, *, auth_url: str,
                   node: str, realm: str = DEFAULT_REALM, private_key_pem: bytes | None = None,
                   verify: bool | str = True, upload_public_key: bool = True) -> V6x5Source:
        """Log in through the auth server, learn who we are, check the key (as 4.x's
        :meth:`V6Source.connect`)."""
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
        return cls(client, identity, settings, cryptor)

    # -- refusals before a claim ---------------------------------------------------------

    def refuse_unconfigured(self) -> list[Refusal]:
        """4.x's refusals, then what this node cannot run yet: an action other than a
        computation, or a computation on dataframes (sessions: plan step 6), ended
        "failed" with words before it starts."""
        refused = super().refuse_unconfigured()
        done = {refusal.run_id for refusal in refused}
        for run in self._open_runs(keep=True):  # the answer 4.x's refusals just asked for
            if run.status != "pending" or run.id in done:
                continue
            reason = self._not_runnable(run)
            if reason is None or self.settings.algorithm_for(run.image) is None:
                continue
            try:
                self.client.patch_run(run.id, status="failed", finished_at=now_iso(),
                                      log=f"not started: {reason}")
            except (V6RunFinishedError, V6NotFoundError):
                continue
            refused.append(profile.refusal(run.id, run.image, OutcomeKind.FAILED, reason,
                                           self._claim_details(run)))
        return refused

    @staticmethod
    def _not_runnable(run: Run) -> str | None:
        action = run.action if isinstance(run, HqRun) else ""
        if action and action not in COMPUTE_ACTIONS:
            return (f"this node does not run {action!r} tasks yet (dss-console runs "
                    "computations only; session data is not supported yet)")
        if any(d.get("dataframe_id") is not None or d.get("type") == "dataframe"
               for d in run.databases):
            return ("this node has no session dataframes yet (dss-console runs computations "
                    "without data only)")
        if isinstance(run, HqRun) and run.blob_storage_used:
            return "the run's data is in a blob store, which this node does not use"
        return None

    def _claimable(self, run: Run) -> bool:
        # What this node cannot run yet is the next poll's to refuse, never claimed.
        return super()._claimable(run) and self._not_runnable(run) is None

    def unknown_databases(self, run: Run) -> list[str]:
        # A 5.x task asks for dataframes, not database labels (its extraction run names the
        # label: step 6); nothing here is a label this node lacks.
        return []

    # -- hooks -----------------------------------------------------------------------------

    def _container_token(self, run: Run) -> str | None:
        # HQ 5.0.3 gives a container token to central runs only (others: 401), and only a
        # run that gets the proxy (`subtasks = true`) gets one: without it PORT is 0 and the
        # official client would send the token to 127.0.0.1:80, to whatever listens there.
        algorithm = self.settings.algorithm_for(run.image)
        if isinstance(run, HqRun) and run.action == CENTRAL and algorithm is not None \
                and algorithm.subtasks:
            return self.client.container_token(run.task_id, run.image)
        return None

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
                     proxy_port: int | None, base_env: dict[str, str]) -> dict[str, str]:
        hq = run if isinstance(run, HqRun) else None
        # No sessions yet (step 6): the session folder is one of the run's own, empty.
        session = files.input.parent / "session"
        session.mkdir(mode=0o700, exist_ok=True)
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
            proxy_port=proxy_port, databases=run.databases,
            container_token=token, algorithm_env=self.settings.algorithm_env,
            plain_env=algorithm.plain_env(), base_env=base_env)

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


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
