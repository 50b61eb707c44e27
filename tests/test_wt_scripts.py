"""Provider scripts written for itksnap-wt run unchanged with the `dss-console wt --shim`
on PATH: a claim loop on its own, and an ASHS-style service script run by the real worker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dss_console.sandbox import Sandbox
from dss_console.workspace import MAIN_ROLE, SEGMENTATION_ROLE, Workspace
from dss_console.wt.labels import read_label_table
from dss_console.wt.shim import SHIM_NAME, shim_command, write_shim
from test_worker_cli import Worker

from test_engine import TAGS

EXE = Path(sys.executable).with_name("dss-console")
DATA = Path(__file__).with_name("wt_data")


@pytest.fixture
def env(tmp_path: Path, sandbox: Sandbox) -> Iterator[dict[str, str]]:
    """Logged in (dss-console login), with the shim made by `wt --shim` first on PATH."""
    env = dict(os.environ, HOME=str(tmp_path / "home"), XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_CONFIG_HOME=str(tmp_path / "config"), DSS_CONSOLE_KEYRING="off")
    subprocess.run([str(EXE), "login", "--server", sandbox.url, "--token",
                    sandbox.fresh_token()], env=env, check=True, capture_output=True)
    made = subprocess.run([str(EXE), "wt", "--shim", str(tmp_path / "bin")], env=env,
                          capture_output=True, text=True, check=True)
    assert made.stdout == f"{tmp_path / 'bin' / SHIM_NAME}\n"
    env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}"
    yield env


@pytest.fixture
def service(sandbox: Sandbox) -> str:
    return sandbox.register_service(f"WtScript-{uuid.uuid4().hex[:8]}", "1.0.0", TAGS)


def test_write_shim_runs_dss_console_wt(tmp_path: Path) -> None:
    shim = write_shim(tmp_path / "bin")
    assert os.access(shim, os.X_OK) and shim.name == "itksnap-wt"
    assert shim_command()[-2:] == ["dss_console", "wt"]
    result = subprocess.run([str(shim), "-annot-list"], capture_output=True, text=True)
    assert result.returncode == 255
    assert result.stderr == ("dss-console wt: -annot-list (command 1): not supported by "
                             "dss-console wt: -annot-list\n")


def test_frozen_bundle_shim_runs_the_binary_itself(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", "/opt/dss console/dss-console")
    text = write_shim(tmp_path).read_text()
    assert text.endswith("exec '/opt/dss console/dss-console' wt \"$@\"\n")


def check_result(workspace: Path, nickname: str, labels: dict[int, str]) -> None:
    ws = Workspace.load(workspace)  # the project's own reader
    assert [layer.role for layer in ws.layers] == [MAIN_ROLE, SEGMENTATION_ROLE]
    assert ws.layers[0].tags == ("T1-MRI",)
    assert ws.layers[1].nickname == nickname
    assert all(layer.path.is_file() for layer in ws.layers)
    table = read_label_table(ws.layer_folder(0))
    assert {index: label.label for index, label in table.items()} == labels


def test_claim_loop_script(env: dict[str, str], sandbox: Sandbox, service: str,
                           tmp_path: Path) -> None:
    tickets = [sandbox.add_ticket(service) for _ in range(2)]
    run = subprocess.run(["bash", str(DATA / "claim_loop.sh"), service, sandbox.provider,
                          str(tmp_path / "work"), str(DATA / "labels.txt")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run
    assert run.stdout.splitlines()[-1] == "no more tickets"
    for ticket in tickets:
        assert sandbox.admin.ticket_status(ticket) == "success"
        detail = sandbox.admin.ticket_detail(ticket)
        assert "Segmenting layer_000_" in " ".join(e["message"] for e in detail["log"])
        names = sandbox.admin.result_files(ticket)
        down = tmp_path / "downloads" / str(ticket)
        down.mkdir(parents=True)
        for index, name in enumerate(names):
            (down / name).write_bytes(sandbox.admin.download_file(ticket, "results", index))
        check_result(down / f"ticket_{ticket:08d}_results.itksnap", "Hippocampus",
                     {1: "CA1", 2: "CA2", 3: "Dentate gyrus"})


def test_ashs_style_script_run_by_the_worker(env: dict[str, str], sandbox: Sandbox,
                                             service: str, tmp_path: Path) -> None:
    ticket = sandbox.add_ticket(service)
    command = (f"bash {DATA / 'ashs_style.sh'} {{ticket}} {{workdir}} {{workspace}} {{result}} "
               f"{DATA / 'labels.txt'}")
    worker = Worker(env, "--command", f"{service}={command}", "--workdir", str(tmp_path / "work"),
                    "--poll-interval", "0.2", "--instance", "ci-node", "--exit-when-idle")
    try:
        assert worker.finish(timeout=120) == 0, "\n".join(worker.lines)
    finally:
        worker.kill()
    assert worker.saw("succeeded"), "\n".join(worker.lines)
    assert sandbox.admin.ticket_status(ticket) == "success"
    messages = [e["message"] for e in sandbox.admin.ticket_detail(ticket)["log"]]
    assert messages.index("ASHS-style run started") < messages.index("Segmentation done")
    names = sandbox.admin.result_files(ticket)
    down = tmp_path / "downloads"
    down.mkdir()
    for index, name in enumerate(names):
        (down / name).write_bytes(sandbox.admin.download_file(ticket, "results", index))
    check_result(down / f"ticket_{ticket:08d}_results.itksnap", "Right hippocampus",
                 {101: "Right CA1", 102: "Right CA2", 103: "Right Dentate gyrus"})
