"""The node's parquet work for a 5.x session, run by the *algorithm's* Python (plan §4).

    python -I session_step.py columns FILE
        the dataframe's columns as JSON lines' one list: [{"name", "dtype"}], the dtype as
        pyarrow prints it (what HQ shows the researcher); exit 3 when FILE is no parquet
        (the run then ends "unexpected output")
    python -I session_step.py state-init FILE
        the session's state file, empty, unless it exists
    python -I session_step.py state-add FILE ACTION DF_FILE MESSAGE DATAFRAME
        one row appended (replaced atomically)

A resource, not a module (``sessions.session_step_script()`` finds it): a frozen bundle
carries resources as files, modules only compiled. Why a script: reading a parquet needs
pyarrow (tens of MiB resident), and the worker must
stay small; vantage6-algorithm-tools 5.x depends on pyarrow, so the algorithm's Python has
it. Standard library and pyarrow only: nothing of dss-console is importable there.
The state file has the official node's columns (action, file, timestamp, message,
dataframe); every value is a string, the timestamp ISO 8601 UTC.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import sys
from typing import Any

STATE_COLUMNS = ("action", "file", "timestamp", "message", "dataframe")
EXIT_USAGE, EXIT_NOT_PARQUET = 2, 3


def _pyarrow() -> tuple[Any, Any]:
    """pyarrow and pyarrow.parquet: there in the algorithm's Python, not in the console's
    (so not imported by name, and untyped here)."""
    return importlib.import_module("pyarrow"), importlib.import_module("pyarrow.parquet")


def columns(path: str) -> int:
    _, pq = _pyarrow()
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # pyarrow's ArrowInvalid, OSError: not a parquet file
        print(f"not a parquet file: {type(exc).__name__}", file=sys.stderr)
        return EXIT_NOT_PARQUET
    print(json.dumps([{"name": field.name, "dtype": str(field.type)} for field in schema]))
    return 0


def _state_schema() -> Any:
    pa, _ = _pyarrow()
    return pa.schema([(name, pa.string()) for name in STATE_COLUMNS])


def _write(table: Any, path: str) -> None:
    _, pq = _pyarrow()
    temp = f"{path}.tmp{os.getpid()}"
    pq.write_table(table, temp)
    os.chmod(temp, 0o600)
    os.replace(temp, path)


def state_init(path: str) -> int:
    if not os.path.exists(path):
        _write(_state_schema().empty_table(), path)
    return 0


def state_add(path: str, action: str, df_file: str, message: str, dataframe: str) -> int:
    pa, pq = _pyarrow()
    state_init(path)
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    row = pa.table({"action": [action], "file": [df_file], "timestamp": [now],
                    "message": [message], "dataframe": [dataframe]}, schema=_state_schema())
    _write(pa.concat_tables([pq.read_table(path).cast(_state_schema()), row]), path)
    return 0


def main(argv: list[str]) -> int:
    verb, args = (argv[0], argv[1:]) if argv else ("", [])
    if verb == "columns" and len(args) == 1:
        return columns(args[0])
    if verb == "state-init" and len(args) == 1:
        return state_init(args[0])
    if verb == "state-add" and len(args) == 5:
        return state_add(*args)
    print(__doc__, file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
