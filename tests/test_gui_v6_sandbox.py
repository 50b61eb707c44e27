"""`dss-console --sandbox v6`: the console window as the node of a local vantage6 server.

The end-to-end self-test runs the real console (a child process, offscreen), the real
vantage6-server 4.15.2 and the official vantage6-client as the researcher who posts the demo
tasks; the sandbox venv is the one v6_fixtures builds once per machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dss_console import cli
from dss_console.sources.v6 import venv as v6venv

from v6_fixtures import SERVER_TEST_TIMEOUT

EXE = Path(sys.executable).with_name("dss-console")


@pytest.mark.timeout(SERVER_TEST_TIMEOUT)
def test_v6_self_test_end_to_end(v6_python: Path, tmp_path: Path) -> None:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HOME=str(tmp_path / "home"),
               XDG_CONFIG_HOME=str(tmp_path / "c"), XDG_DATA_HOME=str(tmp_path / "d"),
               XDG_CACHE_HOME=str(tmp_path / "cache"), XDG_STATE_HOME=str(tmp_path / "s"),
               DSS_CONSOLE_KEYRING="off",
               # The venv the fixture built (the real user cache), not a new one in tmp_path.
               **{v6venv.ENV_OVERRIDE: os.environ[v6venv.ENV_OVERRIDE]})
    (tmp_path / "home").mkdir()
    shot = tmp_path / "shot.png"
    result = subprocess.run([str(EXE), "--sandbox", "v6", "--self-test", "--screenshot",
                             str(shot)], env=env, capture_output=True, text=True,
                            timeout=SERVER_TEST_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "self-test passed" in result.stdout
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "c" / "dss-console" / "window.ini").exists()  # layout untouched
    assert not list((tmp_path / "d").glob("**/v6-nodes.json"))  # no node remembered for real


@pytest.fixture
def gui_options(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """What `dss-console [flags]` would open the window with (the window is not opened)."""
    pytest.importorskip("PySide6")
    from dss_console.gui import app

    seen: list[object] = []
    monkeypatch.setattr(app, "run", lambda options: seen.append(options) or 0)
    return seen


@pytest.mark.parametrize(("argv", "kind"), [
    (["--sandbox"], "dss"),
    (["--sandbox", "dss"], "dss"),
    (["--sandbox", "v6"], "v6"),
    (["--sandbox", "--self-test"], "dss"),
    (["--sandbox", "v6", "--self-test"], "v6"),
    (["--self-test", "--sandbox"], "dss"),
    (["--sandbox=v6"], "v6"),
])
def test_sandbox_flag_kinds(gui_options: list[object], argv: list[str], kind: str) -> None:
    assert cli.main(argv) == 0
    (options,) = gui_options
    assert options.sandbox is True  # type: ignore[attr-defined]
    assert options.sandbox_source == kind  # type: ignore[attr-defined]
    assert options.self_test == ("--self-test" in argv)  # type: ignore[attr-defined]


def test_no_sandbox_flag(gui_options: list[object]) -> None:
    assert cli.main([]) == 0
    (options,) = gui_options
    assert options.sandbox is False  # type: ignore[attr-defined]


@pytest.mark.parametrize("argv", [
    ["--sandbox", "docker"],
    ["--sandbox", "login"],        # a verb after --sandbox is not a sandbox kind
    ["--self-test"],               # needs --sandbox
    ["--sandbox", "v6", "--screenshot", "x.png"],  # needs --self-test
])
def test_sandbox_flag_usage_errors(gui_options: list[object], argv: list[str],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert "usage error" in capsys.readouterr().err
    assert gui_options == []


def test_help_says_what_each_sandbox_is(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--sandbox [{dss,v6,v6x5}]" in text
    assert "--sandbox v6 --sandbox-version 5" in text and "Keycloak" in text
    assert "--sandbox v6" in text and "vantage6" in text
    assert "1-2 minutes, needs PyPI" in text
