"""The child's environment for one vantage6 run: the official node's contract, built here.

The official node (``vantage6/node/docker/task_manager.py``, 4.15.2) hands an algorithm
container a fixed set of variables, base32-encoded with ``=`` replaced by ``!``. The official
wrapper (``wrap_algorithm``) decodes *every* variable it finds, so the child must never get the
worker's whole environment: a plain value that happens to be valid base32 would silently change
(``ONSWG4TFOQ!!!!!!`` becomes ``secret``), an invalid one crashes the wrapper. Only a short list
of harmless variables passes from the worker unencoded.

Pure functions: nothing here touches the disk, the network or ``os.environ``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dss_console.sources.v6.settings import V6Database

ENV_VAR_EQUALS_REPLACEMENT = "!"

# Passed through from the worker unencoded. The wrapper decodes them too, but get_env_var()
# falls back to the raw value when decoding fails, and these hold paths and locale names
# that are rarely valid base32; TZ or USER values that are (e.g. "UTC" is not: 3 chars) are a
# known, harmless edge the official image never has because it sets none of them.
PASSTHROUGH = ("PATH", "HOME", "LANG", "TMPDIR", "USER", "LOGNAME", "TZ")
PASSTHROUGH_PREFIXES = ("LC_",)


def encode_env_value(value: str) -> str:
    """The node's encoding: base32 of the UTF-8 bytes, ``=`` padding written as ``!``."""
    return base64.b32encode(value.encode("utf-8")).decode("ascii").replace(
        "=", ENV_VAR_EQUALS_REPLACEMENT)


def decode_env_value(value: str) -> str:
    """Inverse of :func:`encode_env_value`; ValueError for text that is not encoded."""
    try:
        return base64.b32decode(value.replace(ENV_VAR_EQUALS_REPLACEMENT, "=")).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("not a base32-encoded environment value") from exc


@dataclass(frozen=True)
class RunFiles:
    """Where one run's files are (the node's per-run task folder, here the job's work dir)."""

    input: Path       # decrypted task input: JSON {"method", "args", "kwargs"}
    output: Path      # what the algorithm writes (the wrapper: JSON of the return value)
    token: Path       # the container token from POST /token/container
    tmp: Path         # shared by the runs of one job on this node (the node's job volume)


def requested_database_env(requested: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Variables from the task's ``databases`` list (what the researcher asked for).

    Each entry is ``{"label": ..., "parameters": <JSON string or dict, optional>}``; the
    parameters' ``query``, ``sheet_name`` and ``preprocessing`` become ``<LABEL>_QUERY`` etc.
    (preprocessing as JSON), exactly as the node does.
    """
    env: dict[str, str] = {}
    labels: list[str] = []
    for database in requested:
        label = str(database.get("label", ""))
        labels.append(label)
        raw = database.get("parameters")
        if isinstance(raw, str) and raw:
            try:
                params = json.loads(raw)
            except ValueError:
                params = {}
        elif isinstance(raw, dict):
            params = raw
        else:
            params = {}
        if not isinstance(params, dict):
            params = {}
        for key in ("query", "sheet_name", "preprocessing"):
            if key in params:
                value = params[key]
                env[f"{label.upper()}_{key.upper()}"] = (
                    json.dumps(value) if key == "preprocessing" else str(value))
    env["USER_REQUESTED_DATABASE_LABELS"] = ",".join(labels)
    return env


def configured_database_env(databases: Mapping[str, V6Database]) -> dict[str, str]:
    """``<LABEL>_DATABASE_URI``/``_TYPE``, ``<LABEL>_DB_PARAM_<KEY>`` and ``DB_LABELS``."""
    env: dict[str, str] = {}
    for label, db in databases.items():
        env[f"{label.upper()}_DATABASE_URI"] = db.uri
        env[f"{label.upper()}_DATABASE_TYPE"] = db.type
        for key, value in db.env.items():
            env[f"{label.upper()}_DB_PARAM_{key.upper()}"] = value
    env["DB_LABELS"] = ",".join(databases)
    return env


def run_environment(
    files: RunFiles,
    *,
    proxy_port: int,
    requested_databases: Sequence[Mapping[str, Any]],
    databases: Mapping[str, V6Database],
    algorithm_env: Mapping[str, str] | None = None,
    plain_env: Mapping[str, str] | None = None,
    base_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The complete environment of a run's child process (replaces, never extends, os.environ).

    ``proxy_port``: the local subtask proxy's port, or, when the algorithm may not call the
    server, a port that refuses every connection (``proxy.RefusingPort``; never ``0``, which
    HTTP clients read as port 80).
    ``algorithm_env``: the ``[v6] algorithm_env`` table (encoded, like the node's).
    ``plain_env``: ``PKG_NAME`` and the algorithm's own ``env`` table — the image's ``ENV``,
    which Docker passes unencoded. ``base_env``: where PATH, HOME, LANG… come from (the
    worker's environment; a parameter so the function stays pure).
    """
    encoded: dict[str, str] = {
        "INPUT_FILE": str(files.input),
        "OUTPUT_FILE": str(files.output),
        "TOKEN_FILE": str(files.token),
        "TEMPORARY_FOLDER": str(files.tmp),
        "HOST": "http://127.0.0.1",
        "PORT": str(proxy_port),
        "API_PATH": "",
    }
    encoded.update(requested_database_env(requested_databases))
    encoded.update(configured_database_env(databases))
    if algorithm_env:
        encoded.update(algorithm_env)
    for name, value in encoded.items():
        # The node refuses these too: a NUL or newline could smuggle a second variable.
        if "\x00" in name or "=" in name or not name:
            raise ValueError(f"invalid environment variable name {name!r}")
        if "\x00" in value:
            raise ValueError(f"environment variable {name} contains a NUL character")

    env: dict[str, str] = {}
    for name, value in (base_env or {}).items():
        if name in PASSTHROUGH or name.startswith(PASSTHROUGH_PREFIXES):
            env[name] = value
    env.update({name: encode_env_value(value) for name, value in encoded.items()})
    env.update(plain_env or {})
    return env
