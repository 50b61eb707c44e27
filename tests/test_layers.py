"""The plug-in shape's layering (issue 18), read from the source with `ast`: the core knows no
source and no executor, the window knows no plug-in. A violation names the file and line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dss_console"

# What only a plug-in (or the composition root) may import: the plug-in folders, the server
# clients and their transports.
PLUG_IN_ONLY = ("dss_console.sources", "dss_console.executors", "dss_console.plugins",
                "dss_console.dss", "dss_console.sources.v6", "dss_console.workspace",
                "requests", "socketio", "engineio")
QT = ("PySide6", "shiboken6", "qasync")


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "dss_console":
            # `from dss_console import paths`: the modules it names.
            found += [(node.lineno, f"dss_console.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((PACKAGE / package).rglob("*.py")):
        for line, module in imports_of(path):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
    return found


@pytest.mark.parametrize("package", ["core"])
def test_the_core_imports_no_plug_in_no_client_and_no_qt(package: str) -> None:
    assert (PACKAGE / package / "__init__.py").exists()
    assert violations(package, PLUG_IN_ONLY + QT) == []


def test_the_scan_sees_an_import_it_must_refuse(tmp_path: Path) -> None:
    # The scanner itself can fail: a module importing a client inside a function is found.
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from dss_console.dss import DssClient\n    import requests\n")
    assert [m for _, m in imports_of(probe)] == ["dss_console.dss", "requests"]


# What engine/ may import of the package: the core, itself and the platform's paths (other
# packages and the stdlib are not this test's business).
ENGINE_MAY_IMPORT = ("dss_console.core", "dss_console.engine", "dss_console.paths")
# Imports of engine/ the refactor has not moved out yet (issue 18); the list only shrinks.
ENGINE_NOT_YET = {
    # The registry (each source's and executor's settings reader).
    "engine/settings.py imports dss_console.plugins",
    "engine/settings_reader.py imports dss_console.plugins",
}


def engine_imports_outside() -> set[str]:
    found = set()
    for path in sorted((PACKAGE / "engine").rglob("*.py")):
        for _, module in imports_of(path):
            if not module.startswith("dss_console") or any(
                    module == m or module.startswith(m + ".") for m in ENGINE_MAY_IMPORT):
                continue
            found.add(f"{path.relative_to(PACKAGE)} imports {module}")
    return found


def test_the_engine_imports_no_source_no_executor_and_no_window() -> None:
    # No v6/, sources/, executors/, gui/, dss/ or workspace/: what engine/ needs of a source
    # it asks through core/interfaces.py.
    found = engine_imports_outside()
    assert found - ENGINE_NOT_YET == set()
    assert ENGINE_NOT_YET - found == set(), "moved out: shrink ENGINE_NOT_YET"


def test_the_engine_scan_reads_a_package_level_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from dss_console import paths, plugins\n")
    assert [m for _, m in imports_of(probe)] == ["dss_console.paths", "dss_console.plugins"]


def test_the_engine_imports_no_executor() -> None:
    # The composition root (the worker command) gives the engine its executors by name
    # (plugins.executors()); the engine runs a command only through core.executor.
    assert violations("engine", ("dss_console.executors",)) == []


def test_the_executors_import_no_source() -> None:
    # An executor runs the core.command.CommandSpec its job's source built; a source's
    # command language (DSS placeholders, DSS_* variables, the itksnap-wt shim) is not its
    # business.
    assert violations("executors", ("dss_console.sources", "dss_console.dss",
                                    "dss_console.wt", "dss_console.workspace")) == []


# What the window may not import: a plug-in's folder or a server's client. It learns a
# source's words, columns and actions from the engine (core.presentation), and reaches the
# plug-ins before an engine runs through plugins.py only.
GUI_MAY_NOT_IMPORT = ("dss_console.sources", "dss_console.executors", "dss_console.dss",
                      "dss_console.workspace", "requests", "socketio")
# Imports of gui/ the refactor has not moved out yet; the list only shrinks. An ITK-SNAP
# workspace is a DSS job's input and result: the inputs inspector and the dry run read it in
# the window, where a DSS window part (sources/dss/window/, gui/source_window.py) should.
GUI_NOT_YET = {
    "gui/detail_pane.py imports dss_console.workspace",
    "gui/dry_run.py imports dss_console.workspace",
    "gui/selected_job.py imports dss_console.workspace",
}


def test_the_window_imports_no_plug_in_and_no_server_client() -> None:
    found = {line.split(":", 1)[0] + " imports " + line.rsplit(" imports ", 1)[1]
             for line in violations("gui", GUI_MAY_NOT_IMPORT)}
    assert found - GUI_NOT_YET == set()
    assert GUI_NOT_YET - found == set(), "moved out: shrink GUI_NOT_YET"


# Qt is the window's: gui/ and each source's window parts (sources/NAME/window/, what
# plugins.SOURCE_WINDOWS names) may import it, no other package module.
def qt_allowed(path: Path) -> bool:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] == "gui" or (len(parts) > 3 and parts[0] == "sources" and parts[2] == "window")


def test_qt_is_imported_only_by_the_window() -> None:
    found = [f"{path.relative_to(PACKAGE)}:{line} imports {module}"
             for path in sorted(PACKAGE.rglob("*.py")) if not qt_allowed(path)
             for line, module in imports_of(path)
             if any(module == q or module.startswith(q + ".") for q in QT)]
    assert found == []


def test_the_qt_rule_knows_the_window_folders() -> None:
    assert qt_allowed(PACKAGE / "gui" / "app.py")
    assert qt_allowed(PACKAGE / "sources" / "v6" / "window" / "settings_tab.py")
    assert not qt_allowed(PACKAGE / "sources" / "v6" / "settings.py")
    assert not qt_allowed(PACKAGE / "engine" / "window" / "x.py")


def test_every_source_window_is_in_its_sources_window_folder() -> None:
    from dss_console import plugins

    assert set(plugins.SOURCE_WINDOWS) <= set(plugins.SOURCES)
    for name, target in plugins.SOURCE_WINDOWS.items():
        assert target.startswith(f"dss_console.sources.{name}.window."), target


def test_the_worker_path_loads_no_qt() -> None:
    # The worker command, each source's plug-in, presentation and settings reader import
    # without Qt: the window parts are loaded by the window only (plugins.source_window).
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import importlib, importlib.abc, sys

        class BlockQt(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("PySide6", "shiboken6", "qasync"):
                    raise ImportError("Qt is blocked on the worker path: " + name)
                return None

        sys.meta_path.insert(0, BlockQt())
        import dss_console.commands.worker
        from dss_console import plugins
        for name in plugins.SOURCES:
            plugins.source_plugin(name)
            plugins.presentation(name)
            if name in plugins.SOURCE_SETTINGS:  # a family member may share its reader
                plugins.load(plugins.SOURCE_SETTINGS[name])
        loaded = [m for m in sys.modules if m.split(".")[0] in ("PySide6", "shiboken6", "qasync")
                  or ".window" in m]
        assert not loaded, loaded
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_4x_node_imports_nothing_of_the_5x_node() -> None:
    """sources/v6x5 reuses sources/v6, never the other way (docs/v6-5x-plan.md §1): the 4.x
    plug-in stays as it is tested, with no 5.x word in it."""
    assert violations("sources/v6", ("dss_console.sources.v6x5",)) == []
    assert violations("sources/v6x5", ("dss_console.sources.v6",))  # the scan sees reuse
