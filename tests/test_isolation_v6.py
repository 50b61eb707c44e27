"""Issue 19 on a vantage6 node: the demo algorithm with subtasks, in the sandbox without
network, run by a real `dss-console worker --source v6` for the real vantage6-server; its
subtasks reach the node's proxy through the relay and nothing else."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dss_console.engine.settings import load_settings, settings_to_toml
from dss_console.isolation import probe, probe_limits
from dss_console.sources.v6.sandbox import DEMO_IMAGE, V6Sandbox
from dss_console.sources.v6.settings import new_algorithm_policy, parse_v6_settings
from settings_helpers import settings_with
from test_v6_worker import DEMO_AGE_MEAN, Worker, _login

from v6_fixtures import SERVER_TEST_TIMEOUT, Researcher

NO_SANDBOX = probe() or (None if probe_limits().kind in ("cgroup1", "cgroup2")
                         else "no usable cgroup")
if os.environ.get("DSS_CONSOLE_REQUIRE_SANDBOX") and NO_SANDBOX:
    raise RuntimeError(f"DSS_CONSOLE_REQUIRE_SANDBOX is set but {NO_SANDBOX}")
pytestmark = [pytest.mark.timeout(SERVER_TEST_TIMEOUT),
              pytest.mark.skipif(NO_SANDBOX is not None, reason=str(NO_SANDBOX))]


def test_a_sandboxed_algorithm_with_subtasks_completes_through_the_relay(
        tmp_path: Path, v6_sandbox: V6Sandbox, researchers: dict[str, Researcher]) -> None:
    table = v6_sandbox.demo_settings()
    # As a new entry is written: a sandbox without network (subtasks through the relay).
    table["algorithms"][DEMO_IMAGE].update(new_algorithm_policy())
    assert table["algorithms"][DEMO_IMAGE]["network"] is False
    settings = settings_with(v6=parse_v6_settings(table))
    (tmp_path / "settings.toml").write_text(settings_to_toml(settings))
    assert 'isolation = "sandbox"' in (tmp_path / "settings.toml").read_text()
    _login(tmp_path, v6_sandbox, "station-demo")
    worker = Worker(tmp_path, v6_sandbox.url, "station-demo", "--concurrency", "1")
    try:
        worker.wait_line(r"worker .* on .*#node-\d+")
        researcher = researchers["demo"]
        task_id = researcher.create_task(DEMO_IMAGE, "central_mean",
                                         [v6_sandbox.org_id("station")], column="age")
        assert researcher.call("wait_task", task_id=task_id, timeout=90) == "completed", \
            worker.output
        assert researcher.call("results", task_id=task_id) == [
            {"mean": pytest.approx(DEMO_AGE_MEAN), "count": 40, "organizations": 1}]
    finally:
        code = worker.stop()
    assert code == 0, worker.output
    assert "Traceback" not in worker.output, worker.output


def test_the_sandbox_demo_is_written_as_a_new_algorithm_entry_is(tmp_path: Path) -> None:
    # `dss-console v6 sandbox` and `--sandbox v6` show the default a new entry gets: the
    # demo runs in the sandbox, without network, where this machine can run one.
    from dss_console.commands.v6 import sandbox_settings_toml
    from dss_console.sources.v6.settings import v6_settings

    info = {"python": "/usr/bin/python3",
            "demo": {"image": DEMO_IMAGE, "package": "v6_demo", "pythonpath": "/opt/demo",
                     "csv": "/opt/demo/demo.csv"}}
    path = tmp_path / "settings.toml"
    path.write_text(sandbox_settings_toml(info))
    demo = v6_settings(load_settings(path)).algorithms[DEMO_IMAGE]
    assert demo.policy == new_algorithm_policy()
    assert demo.approve == "both"  # the operator's gate, so people see it (issue 20)
