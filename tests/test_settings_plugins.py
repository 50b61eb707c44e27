"""Settings per plug-in: the core reads the top-level keys, each source its own tables."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import dss_console
from dss_console import plugins
from dss_console.engine.settings import (
    SettingsError,
    parse_settings,
    settings_to_toml,
)
from dss_console.engine.settings_reader import ServiceCommand, TableReader, read_job_kind
from dss_console.sources.v6.settings import V6SettingsError, parse_v6_settings
from settings_helpers import services_of, settings_with, v6_of
from toy_executor import TARGET

SRC = Path(dss_console.__file__).parent


def test_the_core_settings_module_loads_no_plug_in() -> None:
    script = textwrap.dedent("""
        import sys
        import dss_console.engine.settings
        loaded = [m for m in sys.modules
                  if m.startswith(("dss_console.sources.v6", "dss_console.sources"))]
        assert not loaded, loaded
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at module top) for every import in a file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, id(node) in top))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, id(node) in top) for alias in node.names)
    return found


def test_no_circle_between_the_core_and_the_v6_settings() -> None:
    core = [SRC / "engine" / "settings.py", SRC / "engine" / "settings_reader.py"]
    for path in core:
        runtime = [m for m, at_top in _imports(path) if at_top and "v6" in m.split(".")]
        assert not runtime, (path.name, runtime)
    # The v6 tables' parser imports the core at its top, nowhere else.
    v6 = _imports(SRC / "sources" / "v6" / "settings.py")
    assert ("dss_console.engine.settings_reader", True) in v6
    assert all(at_top for _, at_top in v6), v6


def test_each_source_owns_its_tables(tmp_path: Path) -> None:
    text = textwrap.dedent("""\
        concurrency = 2
        [services.Seg]
        command = "seg {result}"
        [v6.algorithms."img/avg:1"]
        command = "avg {input} {output}"
        max_jobs = 2
    """)
    settings = parse_settings(text, tmp_path / "settings.toml")
    assert list(settings.plugins) == list(plugins.SOURCE_SETTINGS) == ["dss", "v6"]
    assert settings.plugins["dss"].configured_keys() == ["Seg"]
    assert settings.plugins["v6"].configured_keys() == ["img/avg:1"]
    seg = settings.plugins["dss"].command_for("Seg", "a" * 40)
    assert seg is not None and seg.command == "seg {result}"
    # The v6 image as the engine's per-service record (the engine asks the plug-in alone).
    assert settings.plugins["v6"].command_for("img/avg:1", "img/avg:1") == ServiceCommand(
        key="img/avg:1", command="avg '{input}' '{output}'", max_jobs=2)
    assert settings.plugins["v6"].command_for("img/other", "img/other") is None
    assert settings == settings_with(concurrency=2, services=services_of(settings),
                                     v6=v6_of(settings))


@pytest.mark.parametrize(("text", "message"), [
    ('[services.X]\ncommand = "run"\nnice = 20', 'services."X".nice: must be 0 to 19, not 20'),
    ('[services.X]\ncommand = "run"\nnice = -1', 'services."X".nice: must be 0 to 19, not -1'),
    ('[v6.algorithms.x]\ncommand = "run"\nnice = -1',
     "v6.algorithms.x.nice: must be 0 to 19, not -1"),
    ('[v6.algorithms.x]\ncommand = "run"\nauto = false',
     "v6.algorithms.x: unknown key 'auto'"),
])
def test_shared_keys_read_alike(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "settings.toml"
    with pytest.raises(SettingsError) as info:
        parse_settings(text, path)
    assert str(info.value).startswith(f"{path}: {message}")


def test_a_table_read_alone_names_the_key_and_its_error_type() -> None:
    with pytest.raises(V6SettingsError, match=r"^v6\.log_limit: 'lots' is not a size"):
        parse_v6_settings({"log_limit": "lots"})
    reader = TableReader(None)
    assert read_job_kind(reader, {"timeout": "1h30m", "auto": False}, "t") == {
        "timeout": 5400.0, "auto": False}
    with pytest.raises(SettingsError, match=r"^t\.max_jobs: must be at least 1, not 0$"):
        read_job_kind(reader, {"max_jobs": 0}, "t")


def test_an_executor_reads_and_writes_its_own_keys(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(plugins.EXECUTORS, "toy", TARGET)
    path = tmp_path / "settings.toml"
    # B runs locally: SLURM's options are still checked and kept (switching finds them).
    settings = parse_settings(
        '[services.A]\ncommand = "run"\nexecutor = "toy"\ntoy_flags = ["+fast", "+quiet"]\n\n'
        '[services.B]\ncommand = "run"\nsbatch_options = ["--partition=gpu"]\n', path)
    a, b = services_of(settings)["A"], services_of(settings)["B"]
    assert (a.executor, a.options) == ("toy", {"toy_flags": ["+fast", "+quiet"]})
    assert (b.executor, b.options) == ("local", {"sbatch_options": ["--partition=gpu"]})
    text = settings_to_toml(settings)
    assert 'executor = "toy"\ntoy_flags = ["+fast", "+quiet"]' in text
    assert services_of(parse_settings(text, path)) == services_of(settings)

    with pytest.raises(SettingsError, match=r'services."A".toy_flags: must be an array'):
        parse_settings('[services.A]\ncommand = "run"\ntoy_flags = "+fast"\n', path)
    with pytest.raises(SettingsError, match="did you mean 'toy_flags'"):
        parse_settings('[services.A]\ncommand = "run"\ntoy_flag = ["+fast"]\n', path)


def test_the_service_tables_are_found_by_their_shape(tmp_path: Path) -> None:
    from dss_console.engine.settings import ServiceTables
    from dss_console.sources.dss.settings import dss_settings
    from dss_console.sources.v6.settings import v6_settings

    settings = parse_settings('[services.Seg]\ncommand = "seg {result}"\n',
                              tmp_path / "settings.toml")
    tables = settings.service_tables()
    assert tables is dss_settings(settings) and isinstance(tables, ServiceTables)
    assert not isinstance(v6_settings(settings), ServiceTables)  # its images are not tables
    # A copy with other tables: the original and the other plug-ins' settings are kept.
    new = settings.with_services({"X": ServiceCommand(key="X", command="x {result}")})
    assert list(dss_settings(new).services) == ["X"] and list(tables.services) == ["Seg"]
    assert v6_settings(new) is v6_settings(settings) and new.plugins is not settings.plugins
    # --command overrides stay first after with_services (the tables' other fields kept).
    overridden = settings.with_command_overrides(["Seg=other {result}"])
    again = overridden.with_services(dict(dss_settings(overridden).services))
    assert dss_settings(again).overridden == frozenset({"Seg"})
    # Without a source that reads service tables, the core says so instead of guessing.
    bare = dataclasses.replace(settings, plugins={"v6": v6_settings(settings)})
    assert bare.service_tables() is None and bare.command_for("Seg", "a" * 40) is None
    with pytest.raises(SettingsError, match="no source reads service tables"):
        bare.with_services({})
    with pytest.raises(SettingsError, match="--command: no source reads service tables"):
        bare.with_command_overrides(["Seg=x"])
    assert bare.with_command_overrides([]) == bare  # nothing asked, nothing refused
    # Two sources with service tables: which one a service belongs to is not guessed.
    twice = dataclasses.replace(settings, plugins={"dss": tables, "other": tables})
    for ask in (twice.service_tables, lambda: twice.with_services({}),
                lambda: twice.command_for("Seg", "a" * 40)):
        with pytest.raises(SettingsError, match="several sources read service tables"):
            ask()


def test_each_plug_in_reads_its_own_part_typed(tmp_path: Path) -> None:
    from dss_console.sources.dss.settings import dss_settings
    from dss_console.sources.v6.settings import v6_settings

    settings = parse_settings("", tmp_path / "settings.toml")
    swapped = dataclasses.replace(settings, plugins={"dss": settings.plugins["v6"],
                                                     "v6": settings.plugins["dss"]})
    with pytest.raises(TypeError, match="dss plug-in's settings are a V6Settings"):
        dss_settings(swapped)
    with pytest.raises(TypeError, match="v6 plug-in's settings are a DssSettings"):
        v6_settings(swapped)
