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


def module_names(package: Path = PACKAGE) -> list:
    """Every module of the package as a dotted path below it: "device", "checks.attention";
    a subpackage's __init__ is its own name ("checks"), the package's is "__init__"."""
    names = []
    for p in sorted(package.rglob("*.py")):
        parts = p.relative_to(package).with_suffix("").parts
        names.append(".".join(parts[:-1]) if parts[-1] == "__init__" and len(parts) > 1 else ".".join(parts))
    return names


MODULES = [m for m in module_names() if m != "__init__"]


def _short_names(package):
    """autograder's short names (`autograder.masks` is spec/masks.py), read from its __init__."""
    init = package / "__init__.py"
    for node in ast.walk(ast.parse(init.read_text())) if init.exists() else ():
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "PUBLIC_MODULES":
            return ast.literal_eval(node.value)
    return {}


def imported_modules(path: Path, package: Path = PACKAGE) -> set:
    """The autograder modules `path` imports anywhere in it ("__init__" for the package itself)."""
    known, short = set(module_names(package)), _short_names(package)
    here = list(path.relative_to(package).parent.parts)          # the subpackage `path` is in

    def resolve(dotted):
        dotted = short.get(dotted, dotted)
        while dotted and dotted not in known:       # a name inside a module: the module imports it
            dotted = dotted.rpartition(".")[0]
        return dotted or "__init__"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)] if node.level - 1 <= len(here) else []
                prefix = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "autograder":
                prefix = node.module.partition(".")[2]
            else:
                continue
            for a in node.names:           # `from .x import y`: y is a module of x, or a name in x
                found.add(resolve(f"{prefix}.{a.name}" if prefix else a.name))
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "autograder":
                    found.add(resolve(".".join(parts[1:])))
    found.discard(_name(path, package))
    return found


def _name(path, package):
    parts = path.relative_to(package).with_suffix("").parts
    return ".".join(parts[:-1]) if parts[-1] == "__init__" and len(parts) > 1 else ".".join(parts)


def import_graph(package: Path = PACKAGE) -> dict:
    return {_name(p, package): imported_modules(p, package) for p in sorted(package.rglob("*.py"))}


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


def test_the_wheel_holds_every_room_and_the_case_tables_but_no_solutions(tmp_path):
    """What Colab's setup cell installs (pip, not editable): every autograder subpackage and the CSV case
    tables next to spec/cases.py; never the reference solutions."""
    import shutil
    import zipfile
    src = tmp_path / "src"          # a clean copy: a build/ folder left in the checkout would be packed instead
    shutil.copytree(ROOT / "autograder", src / "autograder", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for table in ("attention_cases.csv", "triton_basics_cases.csv"):
        assert f"autograder/spec/{table}" in names, sorted(names)
    rooms = {p.parent.name for p in (ROOT / "autograder").glob("*/__init__.py")}
    assert rooms and all(f"autograder/{room}/__init__.py" in names for room in rooms), sorted(names)
    assert not [n for n in names if n.startswith(("solutions/", "notebooks/", "tests/"))], sorted(names)


def test_progress_bars_are_text_where_ipywidgets_is_missing(monkeypatch):
    """A plain venv has Jupyter without ipywidgets: tqdm.auto's widget bar would warn "IProgress not found"
    on every check. The checks then draw text bars."""
    import importlib.util
    import tqdm.std
    from autograder import progress
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ipywidgets" else real(name, *a))
    assert progress.tqdm_class() is tqdm.std.tqdm
