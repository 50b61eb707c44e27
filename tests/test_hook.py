"""The job hook ($DSS_HOOK): argument checks, the abort file, concurrent appends, the
per-job script (also without the job's environment, as in a cluster job) and start-up cost."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dss_console.engine.hook import hook_command, hook_main, write_hook_script


@pytest.fixture
def job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    engine_dir = tmp_path / "job dir's \"engine\" $HOME `x`"  # quoting must survive this
    engine_dir.mkdir()
    events = engine_dir / "events.jsonl"
    events.write_bytes(b"")
    abort = engine_dir / "abort"
    monkeypatch.setenv("DSS_EVENTS", str(events))
    monkeypatch.setenv("DSS_ABORT_FILE", str(abort))
    return {"dir": engine_dir, "events": events, "abort": abort}


def events_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSS_")}
    env.update(extra)
    return env


# -- hook_main in this process ----------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["progress", "0", "1", "0.4"], ["progress", "0.5"], ["info", "Affine done"],
    ["warning", "x"], ["error", "two", "words"], ["attach", "Affine", "affine.mat"],
    ["attach", "Affine", "/abs/affine.mat", "text/plain"],
])
def test_a_call_appends_one_json_line(args: list[str], job: dict[str, Path],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(job["dir"].parent)
    before = time.time()
    assert hook_main(args) == 0
    [event] = events_of(job["events"])
    assert event["args"] == args
    assert event["pid"] == os.getpid()
    assert event["cwd"] == str(job["dir"].parent)  # relative paths are not resolved here
    assert before - 1 <= event["t"] <= time.time() + 1


def test_undecodable_arguments_survive(job: dict[str, Path]) -> None:
    name = os.fsdecode(b"caf\xe9.txt")  # a Latin-1 file name on a UTF-8 system
    assert hook_main(["attach", "desc", name]) == 0
    assert events_of(job["events"])[0]["args"][2] == name


@pytest.mark.parametrize(("args", "words"), [
    ([], "no verb"),
    (["progress", "0", "1"], "START END VALUE"),
    (["progress", "zero", "1", "0.5"], "numbers"),
    (["progress", "0", "1", "nan"], "finite"),
    (["info"], "needs a message"),
    (["attach", "only-description"], "DESCRIPTION FILE"),
    (["attach", "d", "f", "m", "extra"], "DESCRIPTION FILE"),
    (["log", "x"], "unknown verb"),
])
def test_misuse_prints_usage_and_returns_2(args: list[str], words: str, job: dict[str, Path],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert hook_main(args) == 2
    err = capsys.readouterr().err
    assert words in err
    assert "usage: $DSS_HOOK progress START END VALUE" in err
    assert job["events"].read_bytes() == b""


def test_missing_events_variable(job: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("DSS_EVENTS")
    assert hook_main(["info", "x"]) == 2
    assert "DSS_EVENTS is not set" in capsys.readouterr().err


def test_missing_events_file(job: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    job["events"].unlink()
    assert hook_main(["info", "x"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not job["events"].exists()  # not created somewhere by accident


def test_abort_file_makes_every_call_fail_with_255(job: dict[str, Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    job["abort"].write_text("status: failed\n")
    assert hook_main(["progress", "0", "1", "0.5"]) == 255
    err = capsys.readouterr().err
    assert err.strip() == ("dss hook: the ticket is no longer being processed "
                           "(status: failed) - aborting")
    assert job["events"].read_bytes() == b""


# -- the per-job script -----------------------------------------------------------------------


def test_script_is_private_and_executable(job: dict[str, Path]) -> None:
    script = write_hook_script(job["dir"], job["events"], job["abort"])
    assert script == job["dir"] / "hook"
    assert stat.S_IMODE(script.stat().st_mode) == 0o700
    text = script.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert '"$@"' in text
    # Rewriting it (a rerun) replaces it in place.
    assert write_hook_script(job["dir"], job["events"], job["abort"]) == script
    assert sorted(p.name for p in job["dir"].iterdir()) == ["events.jsonl", "hook"]


@pytest.mark.parametrize("shell", [None, "sh", "bash"])
def test_script_works_without_the_jobs_environment(shell: str | None,
                                                   job: dict[str, Path]) -> None:
    """A cluster job may not inherit DSS_EVENTS: the script carries the paths itself, and
    ASHS runs its hook as `bash $ASHS_HOOK_SCRIPT ...`."""
    script = write_hook_script(job["dir"], job["events"], job["abort"])
    argv = ([shell] if shell else []) + [str(script), "info", "from a node", "with spaces"]
    result = subprocess.run(argv, env=clean_env(), cwd=job["dir"].parent,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    [event] = events_of(job["events"])
    assert event["args"] == ["info", "from a node", "with spaces"]

    job["abort"].write_text("cancelled by the provider")
    result = subprocess.run(argv, env=clean_env(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 255
    assert "cancelled by the provider" in result.stderr


def test_environment_overrides_the_scripts_defaults(job: dict[str, Path],
                                                    tmp_path: Path) -> None:
    script = write_hook_script(job["dir"], job["events"], job["abort"])
    other = tmp_path / "other.jsonl"
    other.write_bytes(b"")
    result = subprocess.run([str(script), "info", "x"], env=clean_env(DSS_EVENTS=str(other)),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert len(events_of(other)) == 1
    assert job["events"].read_bytes() == b""


def test_script_usage_error_exits_2(job: dict[str, Path]) -> None:
    script = write_hook_script(job["dir"], job["events"], job["abort"])
    result = subprocess.run([str(script), "progress"], env=clean_env(), capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert "usage:" in result.stderr


# -- many writers -----------------------------------------------------------------------------


def test_concurrent_writers_never_mix_lines(job: dict[str, Path]) -> None:
    """Lines far longer than PIPE_BUF from many processes at once stay whole."""
    writers, calls, size = 8, 150, 20_000
    code = ("import sys\nfrom dss_console.engine.hook import hook_main\n"
            f"for i in range({calls}):\n"
            f"    assert hook_main(['info', sys.argv[1] * {size} + str(i)]) == 0\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, chr(ord("a") + n)],
                              env=os.environ.copy()) for n in range(writers)]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    events = events_of(job["events"])
    assert len(events) == writers * calls
    seen: dict[str, list[int]] = {}
    for event in events:
        text = event["args"][1]
        letter = text[0]
        assert text[:size] == letter * size
        seen.setdefault(letter, []).append(int(text[size:]))
    # Each writer's calls arrive in its own order.
    assert all(numbers == list(range(calls)) for numbers in seen.values())
    assert len(seen) == writers


# -- how it is started ------------------------------------------------------------------------


def test_hook_command_runs_the_module_in_isolated_mode() -> None:
    assert hook_command() == [sys.executable, "-I", "-m", "dss_console.engine.hook"]


def test_hook_command_of_a_frozen_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert hook_command() == [sys.executable, "_hook"]


def test_isolated_mode_ignores_a_hostile_pythonpath(job: dict[str, Path],
                                                    tmp_path: Path) -> None:
    # A cluster environment's PYTHONPATH (another Python's site-packages) must not break it.
    poison = tmp_path / "poison"
    poison.mkdir()
    (poison / "json.py").write_text("raise SystemExit('poisoned json imported')\n")
    env = clean_env(DSS_EVENTS=str(job["events"]), PYTHONPATH=str(poison))
    result = subprocess.run([*hook_command(), "info", "x"], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert len(events_of(job["events"])) == 1


def test_hook_imports_nothing_heavy() -> None:
    """It runs once per call: beyond the interpreter's own start-up it may load only itself
    and two small C modules (engine/__init__.py must stay empty of imports)."""
    code = ("import sys\nbefore = set(sys.modules)\nimport dss_console.engine.hook\n"
            "print(' '.join(sorted(set(sys.modules) - before)))\n")
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True,
                            text=True, timeout=30, check=True)
    added = set(result.stdout.split())
    assert added <= {"__future__", "dss_console", "dss_console.engine", "dss_console.engine.hook",
                     "fcntl", "_json"}, added


def test_hook_starts_fast(job: dict[str, Path]) -> None:
    script = write_hook_script(job["dir"], job["events"], job["abort"])
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run([str(script), "progress", "0", "1", "0.5"], env=clean_env(),
                       check=True, timeout=30)
        runs.append(time.perf_counter() - started)
    best = min(runs)
    print(f"hook call: best {best * 1000:.0f} ms of {len(runs)}")
    assert best < 1.0  # generous: a loaded CI machine; typically ~20 ms
    assert len(events_of(job["events"])) == 5
