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
                "dss_console.dss", "dss_console.v6", "dss_console.workspace",
                "requests", "socketio", "engineio")
QT = ("PySide6", "shiboken6", "qasync")


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
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


def test_the_engine_imports_no_executor() -> None:
    # The composition root (the worker command) gives the engine its executors by name
    # (plugins.executors()); the engine runs a command only through core.executor.
    assert violations("engine", ("dss_console.executors",)) == []
