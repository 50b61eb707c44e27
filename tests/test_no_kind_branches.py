"""Issue 18's "done when", read from the source with `ast`: the engine, the core and the window
hold no branch on a source's or an executor's name, no `# type: ignore` is left in the core,
and no module has grown into several. A violation names the file and line."""

from __future__ import annotations

import ast
from pathlib import Path

from dss_console import plugins

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dss_console"
LAYERS = ("core", "engine", "gui")
# The names the registry gives the plug-ins: comparing with one of them is a branch on a kind.
# Not the default executor's: a service table without `executor` (and a journal written before
# the executor column) means it, and is read as that name.
KIND_NAMES = (set(plugins.SOURCES) | set(plugins.EXECUTORS)) - {"local"}
# What old code used to tell a vantage6 job by.
KIND_ATTRIBUTES = {"v6", "is_v6", "is_slurm"}
# Sites the refactor has not reached yet; the set only shrinks (empty since the sources'
# window parts moved to sources/*/window/ and Settings lost its `v6` accessor).
NOT_YET: set[str] = set()
MAX_LINES = 800


def kind_branches(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[tuple[int, str]] = []
    def kind_constants(node: ast.AST) -> list[str]:
        """The registered names ``node`` spells: a constant, or one in a literal tuple,
        list or set (``source in ("v6", "x")``)."""
        items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
        return [item.value for item in items
                if isinstance(item, ast.Constant) and item.value in KIND_NAMES]

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                found += [(node.lineno, f"compares with {name!r}")
                          for name in kind_constants(operand)]
        elif isinstance(node, ast.Subscript):
            found += [(node.lineno, f"looks up {name!r}") for name in kind_constants(node.slice)]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "get" and node.args:
            found += [(node.lineno, f"looks up {name!r}") for name in kind_constants(node.args[0])]
        elif isinstance(node, ast.MatchValue):
            found += [(node.value.lineno, f"matches {name!r}")
                      for name in kind_constants(node.value)]
        elif isinstance(node, ast.Attribute) and node.attr in KIND_ATTRIBUTES:
            found.append((node.lineno, f"reads .{node.attr}"))
        elif isinstance(node, ast.Name) and node.id in KIND_ATTRIBUTES:
            found.append((node.lineno, f"names {node.id}"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and "#node-" in node.value:
            found.append((node.lineno, "builds or reads a '#node-' key"))
    return found


def layer_files() -> list[Path]:
    return [p for layer in LAYERS for p in sorted((PACKAGE / layer).rglob("*.py"))]


def test_no_layer_branches_on_a_source_or_an_executor() -> None:
    found = {f"{path.relative_to(PACKAGE)} {what}"
             for path in layer_files() for _, what in kind_branches(path)}
    assert found - NOT_YET == set()
    assert NOT_YET - found == set(), "gone: shrink NOT_YET"


def test_the_scan_finds_each_kind_of_branch(tmp_path: Path) -> None:
    # The scanner itself can fail: each pattern it looks for is found in a probe.
    probe = tmp_path / "probe.py"
    probe.write_text('if job.source == "v6": pass\n'
                     'if "slurm" != executor: pass\n'
                     'x = self.v6\n'
                     'key = f"{url}#node-{node_id}"\n'
                     'if source in ("dss", "other"): pass\n'
                     'words = WORDS["v6"]\n'
                     'rule = RULES.get("slurm")\n'
                     'match executor:\n'
                     '    case "slurm": pass\n')
    whats = [what for _, what in sorted(kind_branches(probe))]
    assert whats == ["compares with 'v6'", "compares with 'slurm'", "reads .v6",
                     "builds or reads a '#node-' key", "compares with 'dss'",
                     "looks up 'v6'", "looks up 'slurm'", "matches 'slurm'"]


def test_the_core_and_the_engine_hold_no_type_ignore() -> None:
    found = [f"{path.relative_to(PACKAGE)}:{number}"
             for layer in ("core", "engine")
             for path in sorted((PACKAGE / layer).rglob("*.py"))
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if "type: ignore" in line]
    assert found == []


def test_no_module_holds_several_jobs_by_its_size() -> None:
    # A guide, not a rule of style: past ~800 lines a module has several responsibilities.
    found = {str(path.relative_to(PACKAGE)): lines
             for path in sorted(PACKAGE.rglob("*.py"))
             if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert found == {}
