"""The README's examples stay true: its settings file loads, its CLI verbs exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dss_console.cli import build_parser
from dss_console.engine.settings import load_settings
from settings_helpers import v6_of

README = Path(__file__).resolve().parents[1] / "README.md"


def test_settings_example_loads(tmp_path: Path) -> None:
    block = re.search(r"### Settings file.*?```toml\n(.*?)```", README.read_text(), re.S)
    assert block is not None
    path = tmp_path / "settings.toml"
    path.write_text(block.group(1))
    settings = load_settings(path)
    ashs = settings.command_for("ASHS-PMC-T1", "0" * 40)
    assert ashs is not None and ashs.timeout == 6 * 3600 and ashs.max_jobs == 2
    assert "{workspace}" in ashs.command and ashs.env["ASHS_HOOK_SCRIPT"] == "${DSS_HOOK}"


@pytest.mark.parametrize("verb", ["services", "available", "claim", "download", "progress",
                                  "log", "attach", "upload", "status", "success", "fail"])
def test_every_pro_verb_in_the_readme_exists(verb: str) -> None:
    assert f"`pro {verb}" in README.read_text()
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["pro", verb, "--help"])
    assert info.value.code == 0


def test_slurm_example_loads(tmp_path: Path) -> None:
    block = re.search(r"## Run on a SLURM cluster.*?```toml\n(.*?)```", README.read_text(), re.S)
    assert block is not None
    path = tmp_path / "settings.toml"
    path.write_text(block.group(1))
    ashs = load_settings(path).command_for("ASHS-PMC-T1", "0" * 40)
    assert ashs is not None and ashs.executor == "slurm"
    assert "--partition=gpu" in ashs.options["sbatch_options"] and "--job-name=ashs-{ticket}" in \
        ashs.options["sbatch_options"]


def test_every_worker_option_in_the_readme_exists() -> None:
    worker = next(a for a in build_parser()._subparsers._group_actions[0].choices.items()
                  if a[0] == "worker")[1]
    known = {opt for action in worker._actions for opt in action.option_strings}
    listed = re.findall(r"^\| `(--[a-z-]+)", README.read_text(), re.M)
    assert "--executor" in listed
    assert set(listed) <= known, set(listed) - known


def test_v6_example_loads(tmp_path: Path) -> None:
    block = re.search(r"## Run a vantage6 node.*?```toml\n(.*?)```", README.read_text(), re.S)
    assert block is not None
    path = tmp_path / "settings.toml"
    path.write_text(block.group(1))
    settings = load_settings(path)
    assert v6_of(settings) is not None
    assert "harbor2.vantage6.ai/demo/average" in v6_of(settings).algorithms


def test_settings_example_shows_notify_and_the_pause_settings(tmp_path: Path) -> None:
    block = re.search(r"### Settings file.*?```toml\n(.*?)```", README.read_text(), re.S)
    assert block is not None
    path = tmp_path / "settings.toml"
    path.write_text(block.group(1))
    settings = load_settings(path)
    assert settings.notify == ("decision", "failed")
    assert settings.pause_after_failures == 3 and settings.pause_window == 15 * 60


def test_install_names_every_extra() -> None:
    import tomllib

    pyproject = tomllib.loads((README.parent / "pyproject.toml").read_text())
    extras = set(pyproject["project"]["optional-dependencies"]) - {"test"}
    install = README.read_text().split("## Install", 1)[1].split("\n## ", 1)[0]
    for extra in extras:
        assert f"pip install 'dss-console[{extra}]'" in install, extra


def test_sandbox_sample_output_is_what_it_prints() -> None:
    """The banner's lines as `dss-console sandbox` prints them (test_sandbox_cli.py runs it):
    the login line passes the token on standard input, the worker line follows."""
    sample = README.read_text().split("$ dss-console sandbox", 1)[1].split("```", 1)[0]
    lines = [line.strip() for line in sample.strip().splitlines()[1:]]
    starts = ["DSS sandbox running at http://127.0.0.1:", "provider: sandboxlab    service: ",
              "ready tickets: ", "login token (works once): ", "log in:  echo ",
              "process the tickets with the demo service", "dss-console worker --server ",
              "Press Ctrl-C to stop."]
    assert len(lines) == len(starts), lines
    for line, start in zip(lines, starts, strict=True):
        assert line.startswith(start), (line, start)
    assert lines[4].endswith("--token-stdin") and "--exit-when-idle" in lines[6]


def test_isolation_example_loads(tmp_path: Path) -> None:
    from dss_console.executors.local import LocalExecutor

    block = re.search(r"## Isolation and limits.*?```toml\n(.*?)```", README.read_text(), re.S)
    assert block is not None
    path = tmp_path / "settings.toml"
    path.write_text(block.group(1))
    ashs = load_settings(path).command_for("ASHS-PMC-T1", "0" * 40)
    assert ashs is not None
    assert LocalExecutor.own_options(ashs.executor_options()) == {
        "memory": "8G", "processes": 256, "isolation": "sandbox", "network": False,
        "cpus": 2, "read_only": ["/opt/ashs"]}
