"""The demo service, run as the runner runs it: a child process on a real ticket workspace."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dss_console.engine.settings import validate_command_template
from dss_console.resources.demo_service import demo_service_command, demo_service_launcher
from dss_console.resources.demo_service.segment import Reporter, otsu_threshold
from dss_console.sandbox.demo import make_demo_ticket_files
from dss_console.workspace import (
    MAIN_ROLE,
    SEGMENTATION_ROLE,
    NewLayer,
    Workspace,
    write_workspace,
)
from dss_console.workspace.nifti import read_nifti

MODULE = [sys.executable, "-m", "dss_console.resources.demo_service"]
ERROR_NO_TAG = '@dss error "No image tagged T1-MRI in the workspace"'


@pytest.fixture
def ticket(tmp_path: Path) -> Path:
    """The input workspace of a demo ticket (the sample image, tagged T1-MRI)."""
    workspace, _layer = make_demo_ticket_files(tmp_path / "inputs", 1)
    return workspace


def run_demo(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("DSS_")}
    child_env.update(env or {})
    return subprocess.run(
        [*MODULE, *map(str, args)],
        capture_output=True,
        text=True,
        env=child_env,
        timeout=60,
        check=False,
    )


def events(stdout: str) -> list[list[str]]:
    """The @dss lines of a run, split as the runner splits them."""
    return [shlex.split(line)[1:] for line in stdout.splitlines() if line.startswith("@dss ")]


def test_segments_the_sample_image(ticket: Path, tmp_path: Path) -> None:
    result = tmp_path / "work" / "result.itksnap"
    started = time.monotonic()
    done = run_demo(ticket, result)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    assert elapsed < 10  # about 0.1 s here, interpreter start included

    found = events(done.stdout)
    # Every stdout line is either a report or the tool's own chatter for the job's log.
    assert all(line.startswith(("@dss ", "[otsu-demo] ")) for line in done.stdout.splitlines())
    assert any(line.startswith("[otsu-demo] ") for line in done.stdout.splitlines())
    verbs = [e[0] for e in found]
    assert set(verbs) <= {"progress", "info", "attach"}, found
    progress = [float(e[1]) for e in found if e[0] == "progress"]
    assert all(len(e) == 2 for e in found if e[0] in ("progress", "info"))
    assert len(progress) >= 4
    assert progress == sorted(progress) and progress[0] > 0 and progress[-1] == 1.0
    infos = [e[1] for e in found if e[0] == "info"]
    threshold_lines = [i for i in infos if i.startswith("Otsu threshold: ")]
    assert len(threshold_lines) == 1
    threshold = float(threshold_lines[0].split(": ")[1])
    assert 120 < threshold < 900  # between the background and the bright ellipsoid
    # Without DSS_HOOK the attachment goes to stdout too, relative to the work dir.
    assert ["attach", "QC report", "qc.txt", "text/plain"] in found

    workspace = Workspace.load(result)
    assert len(workspace.layers) == 2
    main, seg = workspace.layers
    assert (main.role, main.nickname, main.tags) == (MAIN_ROLE, "T1", ("T1-MRI",))
    assert (seg.role, seg.nickname) == (SEGMENTATION_ROLE, "Otsu segmentation")
    assert main.path == Workspace.load(ticket).layers[0].path
    assert seg.path == result.parent / "segmentation.nii.gz"

    image = read_nifti(main.path)
    labels = read_nifti(seg.path)
    assert labels.dims == image.dims == (48, 48, 32)
    assert labels.dtype == "uint8"
    # Same geometry, so the segmentation overlays the image in ITK-SNAP.
    for name in ("spacing", "quatern", "qoffset", "srow", "qform_code", "sform_code", "qfac"):
        assert getattr(labels.header, name) == getattr(image.header, name), name
    assert set(labels.data) == {0, 1}
    count = sum(labels.data)
    assert 0.01 * len(labels.data) < count < 0.5 * len(labels.data)
    # Label 1 is exactly "above the threshold".
    assert all((v > threshold) == bool(lab) for v, lab in zip(image.data, labels.data, strict=True))

    qc = (result.parent / "qc.txt").read_text()
    assert f"Otsu threshold: {threshold:.1f}" in qc
    assert f"segmented voxels: {count} of {48 * 48 * 32}" in qc
    assert f"segmented volume: {count * 1.5 / 1000:.2f} ml" in qc  # voxels are 1 x 1 x 1.5 mm


HOOK_SCRIPT = """\
#!/bin/sh
# Records its working directory and arguments, one call per line, tab-separated.
{ printf '%s' "$PWD"; for arg in "$@"; do printf '\\t%s' "$arg"; done; printf '\\n'; } \\
    >> "$HOOK_LOG"
"""


@pytest.mark.skipif(os.name != "posix", reason="the test hook is a shell script")
def test_reports_through_the_hook(ticket: Path, tmp_path: Path) -> None:
    hook = tmp_path / "hook.sh"
    hook.write_text(HOOK_SCRIPT)
    hook.chmod(0o755)
    log = tmp_path / "hook.log"
    workdir = tmp_path / "job"
    result = workdir / "result" / "result.itksnap"
    done = run_demo(
        ticket,
        result,
        env={"DSS_HOOK": str(hook), "DSS_WORKDIR": str(workdir), "HOOK_LOG": str(log)},
    )
    assert done.returncode == 0, done.stdout + done.stderr

    calls = [line.split("\t") for line in log.read_text().splitlines()]
    assert [str(workdir), "progress", "0", "1", "0.6"] in calls
    assert [str(workdir), "attach", "QC report", "qc.txt", "text/plain"] in calls
    # The QC file is in the work dir the relative path is resolved against.
    assert "segmented voxels:" in (workdir / "qc.txt").read_text()
    assert not (result.parent / "qc.txt").exists()
    # Both channels are in use: the rest still arrives as @dss lines, nothing twice.
    found = events(done.stdout)
    assert any(e[0] == "progress" for e in found)
    assert any(e[0] == "info" and e[1].startswith("Otsu threshold: ") for e in found)
    assert not any(e[0] == "attach" for e in found)
    assert ["progress", "0.6"] not in found
    assert len(Workspace.load(result).layers) == 2


def test_a_failing_hook_falls_back_to_stdout(ticket: Path, tmp_path: Path) -> None:
    done = run_demo(
        ticket, tmp_path / "out" / "result.itksnap", env={"DSS_HOOK": str(tmp_path / "missing")}
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = events(done.stdout)
    assert ["progress", "0.6"] in found
    assert ["attach", "QC report", "qc.txt", "text/plain"] in found
    assert any(e[0] == "warning" and "DSS_HOOK" in e[1] for e in found)


def test_fail_with(ticket: Path, tmp_path: Path) -> None:
    result = tmp_path / "out" / "result.itksnap"
    done = run_demo(ticket, result, "--fail-with", 'Registration "diverged" \\ badly')
    assert done.returncode == 1
    found = events(done.stdout)
    assert found[-1] == ["error", 'Registration "diverged" \\ badly']
    assert not result.exists()


def test_untagged_main_image_is_used_with_a_warning(ticket: Path, tmp_path: Path) -> None:
    image = Workspace.load(ticket).layers[0].path
    untagged = write_workspace(tmp_path / "untagged.itksnap", [NewLayer(path=image)])
    result = tmp_path / "out" / "result.itksnap"
    done = run_demo(untagged, result)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ["warning", "No image tagged T1-MRI; using the main image"] in events(done.stdout)
    assert Workspace.load(result).layers[0].tags == ("T1-MRI",)


def test_no_tagged_and_no_main_image(ticket: Path, tmp_path: Path) -> None:
    image = Workspace.load(ticket).layers[0].path
    written = write_workspace(tmp_path / "w.itksnap", [NewLayer(path=image)])
    # write_workspace insists on a main layer; a hand-edited file need not have one.
    text = written.read_text().replace('value="MainRole"', 'value="OverlayRole"')
    written.write_text(text)
    result = tmp_path / "out" / "result.itksnap"
    done = run_demo(written, result)
    assert done.returncode == 1
    assert ERROR_NO_TAG in done.stdout.splitlines()
    assert not result.exists()


def test_unreadable_inputs(tmp_path: Path) -> None:
    bad = tmp_path / "bad.itksnap"
    bad.write_text("not a workspace")
    done = run_demo(bad, tmp_path / "out" / "result.itksnap")
    assert done.returncode == 1
    assert events(done.stdout)[-1][0] == "error"
    assert events(done.stdout)[-1][1].startswith("Cannot read the workspace: ")

    image = tmp_path / "broken.nii.gz"
    image.write_bytes(b"\x1f\x8b garbage")
    workspace = write_workspace(
        tmp_path / "w.itksnap", [NewLayer(path=image, tags=("T1-MRI",))]
    )
    done = run_demo(workspace, tmp_path / "out" / "result.itksnap")
    assert done.returncode == 1
    assert events(done.stdout)[-1][1].startswith("Cannot read the T1-MRI image: ")


def test_bad_arguments_exit_2(ticket: Path, tmp_path: Path) -> None:
    assert run_demo(ticket).returncode == 2
    assert run_demo(ticket, tmp_path / "r.itksnap", "--pace", "-1").returncode == 2


def test_pace_slows_it_down(ticket: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    done = run_demo(ticket, tmp_path / "out" / "result.itksnap", "--pace", "0.1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - started >= 0.5  # five pauses


# -- the command template --------------------------------------------------------------


def test_demo_service_command_runs(ticket: Path, tmp_path: Path) -> None:
    template = demo_service_command()
    validate_command_template(template)  # what the settings file would accept
    result = tmp_path / "out dir" / "result.itksnap"
    argv = [
        word.format(workspace=str(ticket), result=str(result)) for word in shlex.split(template)
    ]
    assert argv == [*MODULE, str(ticket), str(result)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSS_")}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert result.exists()


def test_demo_service_command_options(monkeypatch: pytest.MonkeyPatch) -> None:
    assert demo_service_command(0.5).endswith(" {workspace} {result} --pace 0.5")
    assert "--pace" not in demo_service_command(0)
    monkeypatch.setattr(sys, "executable", "/opt/my {python}/bin/python3")
    assert demo_service_command().startswith("'/opt/my {{python}}/bin/python3' -m ")
    validate_command_template(demo_service_command())
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert demo_service_launcher() == ["/opt/my {python}/bin/python3", "_demo-service"]
    assert demo_service_command(2).endswith(" _demo-service {workspace} {result} --pace 2")


# -- pieces ----------------------------------------------------------------------------


def test_otsu_threshold() -> None:
    assert otsu_threshold([10] * 50 + [12] * 50 + [200] * 30 + [210] * 30) == 106.0
    with pytest.raises(ValueError, match="single intensity"):
        otsu_threshold([3.0] * 10)
    # Many distinct float levels: the histogram path, still between the two clusters.
    values = [0.001 * i for i in range(5000)] + [100 + 0.001 * i for i in range(5000)]
    assert 5 < otsu_threshold(values) < 100


@pytest.mark.parametrize(
    "message",
    ["plain", "two words", 'say "hi"', "back\\slash", "it's", "$HOME `x`", "a\nb", "ünï", ""],
)
def test_report_lines_split_back(
    message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Reporter(None, tmp_path).info(message)
    line = capsys.readouterr().out
    assert line.count("\n") == 1
    assert shlex.split(line) == ["@dss", "info", message.replace("\n", " ")]
