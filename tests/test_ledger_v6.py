"""The ledger of a real vantage6 node worker (vantage6-server 4.15.2, the official client as
the researcher): every step of a run is a chained record, runs refused as not allowed are in
it, `v6 audit` reads it, and no argument value reaches it or its exports (a canary)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dss_console.sources.v6.sandbox import DEMO_IMAGE, V6Sandbox
from test_ledger import assert_chained
from test_v6_worker import Worker, _login, _write_settings

from v6_fixtures import SERVER_TEST_TIMEOUT, Researcher

pytestmark = pytest.mark.timeout(SERVER_TEST_TIMEOUT)

EXE = Path(sys.executable).with_name("dss-console")
CANARY_SECONDS = 0.0123457  # an argument value: never in the ledger or an export
UNKNOWN_IMAGE = "harbor2.example/ledger-unknown:1"


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, XDG_DATA_HOME=str(home / "data"), DSS_CONSOLE_KEYRING="off")
    return subprocess.run([str(EXE), *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_every_step_of_a_v6_run_and_its_refusals_are_in_the_ledger(
        v6_sandbox: V6Sandbox, researchers: dict[str, Researcher], tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    _write_settings(home, v6_sandbox)
    _login(home, v6_sandbox, "station-demo-enc")
    researcher = researchers["demo-enc"]
    station = v6_sandbox.org_id("station")
    done = researcher.create_task(DEMO_IMAGE, "wait", [station], seconds=CANARY_SECONDS)
    refused = researcher.create_task(UNKNOWN_IMAGE, "anything", [station])
    worker = Worker(home, v6_sandbox.url, "station-demo-enc", "--exit-when-idle")
    try:
        assert worker.proc.wait(120) == 0, worker.output
    finally:
        if worker.proc.poll() is None:
            worker.kill()
    assert researcher.call("wait_task", task_id=done, timeout=30) == "completed"
    assert researcher.call("wait_task", task_id=refused, timeout=30) == "not allowed"
    (run,) = [r["id"] for r in researcher.call("runs", task_id=done)]
    (refused_run,) = [r["id"] for r in researcher.call("runs", task_id=refused)]

    (path,) = (home / "data" / "dss-console" / "ledger").glob("*.jsonl")
    found = assert_chained(path)
    steps = [r for r in found if r.get("job", {}).get("id") == run]
    assert [r["kind"] for r in steps] == ["claim", "inputs", "start", "upload", "delivered",
                                          "end"]
    claim = steps[0]
    assert claim["source"].endswith(f"#node-{v6_sandbox.node('station-demo-enc').id}")
    assert claim["service"]["key"] == DEMO_IMAGE
    details = steps[1]["data"]["details"]
    assert details["task_id"] == done and details["databases"] == ["default"]
    assert details["input_summary"]["method"] == "wait"
    assert details["input_summary"]["kwargs"] == ["seconds"]  # the name, never the value
    assert len(details["input_sha256"]) == 64
    assert steps[-1]["data"]["outcome"] == "completed"
    refusal = [r for r in found if r.get("job", {}).get("id") == refused_run]
    assert [r["kind"] for r in refusal] == ["refusal"]
    assert refusal[0]["data"]["outcome"] == "not_allowed"
    assert "not configured on this node" in refusal[0]["data"]["reason"]
    assert refusal[0]["service"]["key"] == UNKNOWN_IMAGE

    # `v6 audit` reads the ledger: both runs, in today's words.
    table = _cli(home, "v6", "audit", "--json")
    assert table.returncode == 0, table.stderr
    rows = {row["run_id"]: row for row in json.loads(table.stdout)}
    assert rows[run]["outcome"] == "completed" and rows[run]["input_method"] == "wait"
    assert rows[run]["input_kwargs"] == ["seconds"] and rows[run]["task_id"] == done
    assert rows[refused_run]["outcome"] == "not allowed"
    assert rows[run]["duration_s"] is not None

    # The canary: no argument value in the ledger, its exports or the audit.
    exported_csv = _cli(home, "audit", "export", "--csv")
    exported_json = _cli(home, "audit", "export", "--json")
    assert exported_csv.returncode == exported_json.returncode == 0
    ends = [r for r in csv.DictReader(io.StringIO(exported_csv.stdout, newline=""))
            if r["kind"] == "end"]
    assert [e["job_id"] for e in ends] == [str(run)]
    for text in (path.read_text(), exported_csv.stdout, exported_json.stdout, table.stdout):
        assert str(CANARY_SECONDS) not in text and str(home) not in text
    assert _cli(home, "audit", "verify").returncode == 0
