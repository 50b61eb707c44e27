"""The operator's gate on a vantage6 node worker (issue 20): `dss-console approvals show`
gives the requester's argument values only with --with-values, marked as shown here only;
never in --json, the worker's output, the journal or the server. Real worker process, real
vantage6-server 4.15.2, the official client as the researcher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dss_console.sources.v6.sandbox import V6Sandbox
from test_v6_worker import EXE, Worker, _login

from v6_fixtures import SERVER_TEST_TIMEOUT, Researcher, wait_for

pytestmark = pytest.mark.timeout(SERVER_TEST_TIMEOUT)

IMAGE = "v6-test-gated"
CANARY = "CANARY-v6-9d2e-not-for-anyone-else"
ECHO = "import json, sys\njson.dump({'mean': 1.5, 'count': 2}, open(sys.argv[1], 'w'))\n"


def test_argument_values_are_shown_here_only(v6_sandbox: V6Sandbox, tmp_path: Path,
                                             researchers: dict[str, Researcher]) -> None:
    home = tmp_path
    script = home / "echo.py"
    script.write_text(ECHO)
    demo = v6_sandbox.demo_settings()
    (home / "settings.toml").write_text(
        f'[v6.algorithms."{IMAGE}"]\ncommand = "{sys.executable} {script} {{output}}"\n'
        'approve = "both"\n\n[v6.databases.default]\n'
        f'uri = {json.dumps(demo["databases"]["default"]["uri"])}\ntype = "csv"\n')
    _login(home, v6_sandbox, "station-demo")
    env = dict(os.environ, XDG_DATA_HOME=str(home / "data"), DSS_CONSOLE_KEYRING="off")

    def approvals(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(EXE), "approvals", *args], env=env, capture_output=True,
                              text=True, timeout=60)

    def waiting() -> list[dict[str, Any]]:
        done = approvals("list", "--json")
        return json.loads(done.stdout) if done.returncode == 0 else []

    worker = Worker(home, v6_sandbox.url, "station-demo")
    try:
        researcher = researchers["demo"]
        task = researcher.create_task(IMAGE, "mean_of", [v6_sandbox.org_id("station")],
                                      note=CANARY)
        (run,) = researcher.call("runs", task_id=task)
        try:
            row = wait_for(lambda: next((r for r in waiting() if r["id"] == run["id"]), None),
                           60, "the run waiting for approval")
        except AssertionError:
            raise AssertionError(worker.output) from None
        assert row["gate"] == "run" and row["requester"]["key"].startswith("user:")
        plain = approvals("show", str(run["id"]))
        assert plain.returncode == 0, plain.stderr
        assert CANARY not in plain.stdout and "--with-values" in plain.stdout
        assert "Method: mean_of" in plain.stdout
        assert "Database default: (hidden" in plain.stdout  # what it maps to here
        shown = approvals("show", str(run["id"]), "--with-values")
        assert f"{CANARY} (shown here only)" in shown.stdout
        as_json = approvals("show", str(run["id"]), "--json")
        assert as_json.returncode == 0 and CANARY not in as_json.stdout
        assert any(f["label"] == "Argument note" and "value" not in f
                   for f in json.loads(as_json.stdout)["facts"])
        assert approvals("approve", str(run["id"])).returncode == 0
        wait_for(lambda: any(r["id"] == run["id"] and r["gate"] == "release"
                             for r in waiting()), 60, "the result held for release")
        preview = approvals("show", str(run["id"]), "--with-values")
        assert '"mean": 1.5' in preview.stdout  # the output, readable, here only
        assert researcher.call("results", task_id=task) in ([], [None])
        rejected = approvals("reject", str(run["id"]), "--message", "Not with this cohort")
        assert rejected.returncode == 0, rejected.stderr
        assert researcher.call("wait_task", task_id=task, timeout=60) == "failed"
        (ended,) = researcher.call("runs", task_id=task)
        assert "Not with this cohort" in ended["log"] and CANARY not in ended["log"]
    finally:
        code = worker.stop()
    assert code == 0, worker.output
    assert CANARY not in worker.output and "Traceback" not in worker.output
    for path in (home / "data").rglob("journal.sqlite3*"):
        assert CANARY.encode() not in path.read_bytes(), path
