"""The neutral command spec (core/command.py) and the DSS source's builder of it
(sources/dss/command.py): what an executor is handed, and what DSS puts in it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dss_console.core.command import (
    CommandSpec,
    CommandStartError,
    JobPaths,
    command_environment,
    fill_in,
    preflight,
)
from dss_console.core.output import ProgressChannel
from dss_console.engine.settings import ServiceCommand
from dss_console.sources.dss.command import (
    command_spec,
    placeholder_values,
    preflight_spec,
)


@pytest.fixture
def paths(tmp_path: Path) -> JobPaths:
    workdir = tmp_path / "ticket_00000042"
    return JobPaths(ticket_id=42, service_name="Demo", service_hash="ab" * 20,
                    workdir=workdir, input_dir=workdir / "input",
                    workspace=workdir / "input" / "t.itksnap",
                    result=workdir / "result.itksnap", engine_dir=workdir / ".dss")


# -- core: the environment, options, the program --------------------------------------------


def test_a_spec_that_does_not_inherit_gets_exactly_its_environment() -> None:
    spec = CommandSpec(argv=("x",), env={"A": "1", "PATH": "/opt/bin"}, inherit_env=False,
                       path_first=("/shim",))
    assert command_environment(spec, base={"HOME": "/home/x", "B": "2"}) == {
        "A": "1", "PATH": f"/shim{os.pathsep}/opt/bin"}


def test_an_inheriting_spec_gets_the_base_without_the_consoles_own_variables() -> None:
    base = {"PATH": "/usr/bin", "HOME": "/home/x", "DSS_CONSOLE_SECRET": "s3cret"}
    spec = CommandSpec(argv=("x",), env={"HOME": "/elsewhere", "DSS_CONSOLE_MINE": "kept"},
                       path_first=("/a", "/b"))
    env = command_environment(spec, base=base)
    assert env == {"PATH": os.pathsep.join(("/a", "/b", "/usr/bin")), "HOME": "/elsewhere",
                   "DSS_CONSOLE_MINE": "kept"}  # the spec's own settings are its business
    assert base["DSS_CONSOLE_SECRET"] == "s3cret"  # the base is not changed


def test_fill_in() -> None:
    values = {"ticket": "42", "name": "a b"}
    assert fill_in("--comment={ticket}:{name}:{{x}}", values) == "--comment=42:a b:{x}"
    with pytest.raises(CommandStartError) as info:
        fill_in("--x={tiket}", values)
    assert str(info.value) == ("unknown placeholder {tiket} in '--x={tiket}' (known: {ticket}, "
                               "{name}; write {{ and }} for literal braces)")
    with pytest.raises(CommandStartError, match="bad braces"):
        fill_in("--x={ticket", values)
    with pytest.raises(CommandStartError, match="no format spec or conversion"):
        fill_in("{ticket!r}", values)


def test_preflight_looks_for_the_program_only(tmp_path: Path) -> None:
    assert preflight(CommandSpec(argv=())) is None  # only a job knows its program
    assert preflight(CommandSpec(argv=("sh", "-c", "exit 1"))) is None
    assert preflight(CommandSpec(argv=("no-such-program-dss",))) == \
        "command not found: no-such-program-dss (not on the command's PATH)"
    assert preflight(CommandSpec(argv=("./relative.sh",))) is None  # relative to the job
    script = tmp_path / "tool"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    problem = preflight(CommandSpec(argv=(str(script),)))
    assert problem is not None and problem.startswith(f"not executable: {script}")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "private-tool").write_text("#!/bin/sh\n")
    (bin_dir / "private-tool").chmod(0o755)
    assert preflight(CommandSpec(argv=("private-tool",), env={"PATH": str(bin_dir)})) is None


# -- DSS: the spec of a ticket --------------------------------------------------------------


def test_the_dss_spec_of_a_ticket(paths: JobPaths) -> None:
    command = ServiceCommand(key="S", command="run {ticket} '{service} x' {workspace}",
                             env={"ASHS_HOOK_SCRIPT": "${DSS_HOOK}", "DSS_TICKET_ID": "no"},
                             cwd="sub", timeout=30.0)
    spec = command_spec(command, paths, nice=5)
    assert tuple(spec.argv) == ("run", "42", "Demo x", str(paths.workspace))
    assert spec.display == command.command and spec.inherit_env
    assert (spec.cwd, spec.timeout, spec.nice) == (paths.workdir / "sub", 30.0, 5)
    channel = ProgressChannel(paths.engine_dir)
    assert spec.env["ASHS_HOOK_SCRIPT"] == str(channel.hook_path)
    assert spec.env["DSS_TICKET_ID"] == "42"  # the job's values win over the service's
    assert spec.env["DSS_EVENTS"] == str(channel.events_path)
    assert spec.env["DSS_ABORT_FILE"] == str(channel.abort_path)
    assert spec.option_values == placeholder_values(paths)
    assert spec.path_first == () and spec.setup is None


def test_the_shim_is_a_setup_step_and_first_on_path(paths: JobPaths) -> None:
    spec = command_spec(ServiceCommand(key="S", command="itksnap-wt -h", itksnap_wt=True,
                                       env={"PATH": "/service/bin"}), paths)
    shim_dir = paths.engine_dir / "bin"
    assert spec.path_first == (str(shim_dir),)
    env = command_environment(spec, base={"PATH": "/usr/bin"})
    assert env["PATH"] == f"{shim_dir}{os.pathsep}/service/bin"
    assert spec.setup is not None
    spec.setup()
    assert os.access(shim_dir / "itksnap-wt", os.X_OK)


def test_a_template_that_does_not_expand_is_refused_by_the_builders(paths: JobPaths) -> None:
    command = ServiceCommand(key="S", command="run {tiket}")
    with pytest.raises(CommandStartError, match=r"unknown placeholder \{tiket\}"):
        preflight_spec(command)
    with pytest.raises(CommandStartError, match=r"unknown placeholder \{tiket\}"):
        command_spec(command, paths)
    with pytest.raises(CommandStartError, match="empty command"):
        command_spec(ServiceCommand(key="S", command="{workspace} x"),
                     JobPaths(**{**paths.__dict__, "workspace": None}))


def test_the_dss_preflight_spec_names_the_program_when_it_is_known() -> None:
    spec = preflight_spec(ServiceCommand(key="S", command="seg {ticket}", env={"PATH": "/x"}))
    assert tuple(spec.argv) == ("seg",) and spec.env == {"PATH": "/x"}
    assert tuple(preflight_spec(ServiceCommand(key="S", command="{workdir}/run")).argv) == ()
    shim = ServiceCommand(key="S", command="itksnap-wt -h", itksnap_wt=True)
    assert tuple(preflight_spec(shim).argv) == ()  # written into the job's engine dir
    assert tuple(preflight_spec(ServiceCommand(key="S", command="itksnap-wt -h")).argv) == \
        ("itksnap-wt",)
