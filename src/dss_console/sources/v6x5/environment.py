"""The environment of a 5.x run's process, as vantage6 5.0.3's node builds a container's
(``vantage6/node/k8s/container_manager.py``: ``_create_volume_mounts``, ``run``,
``_encode_environment_variables``), so an unmodified algorithm written with
vantage6-algorithm-tools 5.x runs under ``wrap_algorithm()`` (plan §5).

Values the node encodes are base32 with ``=`` written as ``!`` (4.x's encoding, reused);
``CONTAINER_TOKEN`` and ``DB_PARAM_*`` go plain (a Kubernetes Secret upstream), as do
``PKG_NAME`` and the algorithm's own ``env`` table (the image's ``ENV``). As in 4.x the
environment *replaces* the worker's: the wrapper decodes every variable that decodes, so only
4.x's ``PASSTHROUGH`` names go through.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dss_console.sources.v6.environment import (
    PASSTHROUGH,
    PASSTHROUGH_PREFIXES,
    encode_env_value,
)

# vantage6.common.globals (5.0.3)
DATAFRAME_WITHIN_GROUP_SEPARATOR = ","
DATAFRAME_BETWEEN_GROUPS_SEPARATOR = ";"
EXTRACTION = "data_extraction"
CENTRAL = "central_compute"


@dataclass(frozen=True)
class RunContext:
    """What a 5.x run's environment says about it."""

    action: str             # run.action: data_extraction, preprocessing, federated_compute…
    method: str             # task.method: the algorithm's function
    task_id: int
    node_id: int
    organization_id: int
    collaboration_id: int


@dataclass(frozen=True)
class SessionFiles:
    """One run's files: its input and output in the job's work dir, and the session's."""

    input: Path
    output: Path
    session_folder: Path
    session_file: Path      # session_folder / "session_state.parquet"


def requested_dataframes(databases: Sequence[Mapping[str, Any]]) -> str:
    """``USER_REQUESTED_DATAFRAMES``: the task's dataframe names grouped by ``position``
    (``,`` within a group, ``;`` between groups), groups in position order."""
    groups: dict[int, list[str]] = {}
    for entry in databases:
        name = entry.get("dataframe_name") or entry.get("label")
        if not isinstance(name, str) or not name:
            continue
        position = entry.get("position")
        groups.setdefault(position if isinstance(position, int) else 0, []).append(name)
    return DATAFRAME_BETWEEN_GROUPS_SEPARATOR.join(
        DATAFRAME_WITHIN_GROUP_SEPARATOR.join(groups[p]) for p in sorted(groups))


def run_environment_5(
    run: RunContext,
    files: SessionFiles,
    *,
    proxy_port: int,
    databases: Sequence[Mapping[str, Any]] = (),
    database: tuple[str, str] | None = None,
    database_params: Mapping[str, str] | None = None,
    container_token: str | None = None,
    algorithm_env: Mapping[str, str] | None = None,
    plain_env: Mapping[str, str] | None = None,
    base_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The complete environment of a 5.x run's process (replaces, never extends, os.environ).

    ``databases``: the task's list (the dataframes of a compute run). ``database``: for an
    extraction, the labelled database's (uri, type). ``database_params``: its ``env`` table,
    passed as ``DB_PARAM_<KEY>``. ``container_token``: ``central_compute`` runs only.
    ``algorithm_env``: ``[v6] algorithm_env``; a name the node sets wins (the official node
    warns and skips it).
    """
    node_set: dict[str, str] = {
        "INPUT_FILE": str(files.input),
        "OUTPUT_FILE": str(files.output),
        "SESSION_FOLDER": str(files.session_folder),
        "SESSION_FILE": str(files.session_file),
        "HOST": "http://127.0.0.1",
        "PORT": str(proxy_port),
        "API_PATH": "",
        "ALGORITHM_METHOD": run.method,
        "FUNCTION_ACTION": run.action,
        "TASK_ID": str(run.task_id),
        "NODE_ID": str(run.node_id),
        "ORGANIZATION_ID": str(run.organization_id),
        "COLLABORATION_ID": str(run.collaboration_id),
    }
    if run.action == EXTRACTION:
        if database is None:
            raise ValueError("an extraction run needs its database's uri and type")
        node_set["DATABASE_URI"], node_set["DATABASE_TYPE"] = database
    else:
        node_set["USER_REQUESTED_DATAFRAMES"] = requested_dataframes(databases)
    encoded = {name: value for name, value in (algorithm_env or {}).items()
               if name not in node_set}
    encoded.update(node_set)
    plain: dict[str, str] = dict(plain_env or {})
    if run.action == EXTRACTION:
        plain.update({f"DB_PARAM_{key.upper()}": value
                      for key, value in (database_params or {}).items()})
    if run.action == CENTRAL and container_token:
        plain["CONTAINER_TOKEN"] = container_token
    for name, value in (*encoded.items(), *plain.items()):
        # The node refuses these too: a NUL or "=" could smuggle a second variable.
        if "\x00" in name or "=" in name or not name:
            raise ValueError(f"invalid environment variable name {name!r}")
        if "\x00" in value:
            raise ValueError(f"environment variable {name} contains a NUL character")
    env = {name: value for name, value in (base_env or {}).items()
           if name in PASSTHROUGH or name.startswith(PASSTHROUGH_PREFIXES)}
    env.update({name: encode_env_value(value) for name, value in encoded.items()})
    env.update(plain)
    return env
