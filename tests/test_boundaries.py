"""The layering rules of design.md, enforced: the headless parts never import Qt."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def headless_modules() -> list[str]:
    """Every module of the package outside gui/ and the sources' window parts
    (sources/NAME/window/, Qt code the window loads) (walked, so a new one is covered too)."""
    import pkgutil

    import dss_console

    names = [info.name for info in pkgutil.walk_packages(dss_console.__path__, "dss_console.")
             if not info.name.startswith("dss_console.gui")
             and info.name.split(".")[1:4:2] != ["sources", "window"]
             and info.name != "dss_console.__main__"]
    assert "dss_console.engine.engine" in names and "dss_console.core.command" in names
    return names


HEADLESS_MODULES = headless_modules()


def test_headless_modules_import_without_qt() -> None:
    script = textwrap.dedent(f"""
        import importlib, importlib.abc, sys

        class BlockQt(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("PySide6", "shiboken6", "qasync", "PyQt5", "PyQt6"):
                    raise ImportError("Qt is blocked in headless code: " + name)
                return None

        sys.meta_path.insert(0, BlockQt())
        for name in {HEADLESS_MODULES!r}:
            importlib.import_module(name)
        from dss_console.cli import main
        try:
            main(["pro", "services", "--help"])
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        loaded = [m for m in sys.modules if m.split(".")[0] in ("PySide6", "qasync")]
        assert not loaded, loaded
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_protocol_layer_does_not_know_about_jobs_or_the_cli() -> None:
    script = textwrap.dedent("""
        import sys
        import dss_console.dss, dss_console.workspace
        bad = [m for m in sys.modules if m.startswith(("dss_console.engine",
               "dss_console.cli", "dss_console.commands", "dss_console.gui"))]
        assert not bad, bad
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
