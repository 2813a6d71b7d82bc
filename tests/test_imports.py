"""The autograder's modules import each other without a circle.

A circle hidden by an import inside a function works until someone moves that import to the top
(or imports the modules in another order), then fails as a half-initialised module. So the graph
counts every import of an autograder module, at any depth of the file, not only the top-level ones.
"""
import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "autograder"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def imported_modules(path: Path) -> set:
    """The autograder modules `path` imports anywhere in it ("__init__" for the package itself)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = node.module
            elif node.level == 0 and node.module and node.module.split(".")[0] == "autograder":
                base = node.module.partition(".")[2] or None
            else:
                continue
            if base:
                found.add(base.split(".")[0])
            else:                           # `from . import x`: x is a module, or a name of __init__
                found.update(a.name if a.name in MODULES else "__init__" for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "autograder":
                    found.add(parts[1] if len(parts) > 1 else "__init__")
    return found


def import_graph(package: Path = PACKAGE) -> dict:
    return {p.stem: imported_modules(p) for p in sorted(package.glob("*.py"))}


def find_cycle(graph: dict):
    """One circle of the graph as a list of modules (first == last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_autograder_import_graph_has_no_cycle():
    graph = import_graph()
    unknown = {m for deps in graph.values() for m in deps} - set(graph)
    assert not unknown, f"imports of modules that do not exist: {sorted(unknown)}"
    cycle = find_cycle(graph)
    assert cycle is None, "autograder modules import each other in a circle: " + " -> ".join(cycle)


def test_the_cycle_finder_sees_a_circle_hidden_in_a_function(tmp_path):
    """The layout before issue 13: guard imported algorithm inside Guard.__enter__, algorithm imported check
    inside its functions. Only function-level imports close that circle."""
    for name, src in {
        "check.py": "from .guard import Guard\n",
        "guard.py": "class Guard:\n    def __enter__(self):\n        from .algorithm import InterpreterProbe\n",
        "algorithm.py": "def count():\n    from .check import TOLERANCES\n",
        "device.py": "",
    }.items():
        (tmp_path / name).write_text(src)
    assert find_cycle(import_graph(tmp_path)) == ["algorithm", "check", "guard", "algorithm"]


def test_every_module_imports_in_a_fresh_interpreter():
    """Each module alone, first thing in a new process (one process for all: each is its own
    `import autograder.<name>` with every autograder module dropped from sys.modules before it)."""
    code = "\n".join([
        "import importlib, sys",
        f"for name in {MODULES!r}:",
        "    for m in [m for m in sys.modules if m == 'autograder' or m.startswith('autograder.')]:",
        "        del sys.modules[m]",
        "    importlib.import_module('autograder.' + name)",
        "print('imported', len(" + repr(MODULES) + "))",
    ])
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "AUTOGRADER_TIER")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"imported {len(MODULES)}" in r.stdout
