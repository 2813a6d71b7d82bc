"""Run a submission's graded cells again in the grader's own process, on its recorded calls.

    AUTOGRADER_REPLAY=<records> python tools/grading/replay/replayer.py <rebuilt notebook.ipynb> <out.json>

The student's kernel recorded every call a check made of the student's functions (autograder.record).
Here the graded cells of the rebuilt notebook (hidden tests included) run once more, with fresh
`autograder` and `torch`, the notebook's own imports (those that bind a name the graded cells read),
and a stand-in for each name the cells take from earlier cells (the student's functions): a stand-in
answers a call with the recorded outputs for the same inputs. No student code runs in this process. Writes {grade_id: {"ok": bool, "why": str}}.

The grader's side (tools/grading/replay/__init__.py) runs this file by path and imports `free_names`
from it: standard library only at import. Run, it takes `autograder` from the installed course and
nothing from the repository: the repository is on sys.path only while course_format is imported.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import io
import json
import sys

TOOLS_OWN = {"get_ipython", "display", "In", "Out"}


def free_names(source: str, known=()) -> list[str]:
    """Names a cell reads but neither defines nor imports nor gets from builtins or `known`."""
    tree = ast.parse(source)
    defined = set(known) | set(dir(builtins)) | TOOLS_OWN
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            defined.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined |= {a.asname or a.name.split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            defined.add(node.name)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
    loads = [n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)]
    return sorted({n for n in loads if n not in defined})


def import_lines(source: str) -> list[str]:
    """The top-level import statements of a cell."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]


def bound_names(import_line: str) -> set | None:
    """The names an import statement binds (None for `from m import *`)."""
    node = ast.parse(import_line).body[0]
    if any(a.name == "*" for a in node.names):
        return None
    return {a.asname or a.name.split(".")[0] for a in node.names}


def read_names(source: str) -> set:
    """Every name a cell reads."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _meta(cell):
    return cell.get("metadata", {}).get("nbgrader", {})


def replay(nb) -> dict:
    """{grade_id: {"ok", "why"}} for every graded cell of `nb`: all of them run, in order, since a
    later cell may use what an earlier one defined."""
    from autograder import failure
    from autograder.record import Replayed

    ns = {"__name__": "__main__"}
    quiet = io.StringIO()
    # an import whose names no graded cell reads changes nothing here (P3's plotting import: matplotlib, ~1 s)
    wanted = set().union(*(read_names(c["source"]) for c in nb["cells"]
                           if c["cell_type"] == "code" and _meta(c).get("grade")))
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        exec("import autograder", ns)
        for cell in nb["cells"]:
            if cell["cell_type"] == "code" and not _meta(cell).get("solution") and not _meta(cell).get("grade"):
                for line in import_lines(cell["source"]):
                    names = bound_names(line)
                    if names is not None and not names & wanted:
                        continue
                    try:
                        exec(line, ns)
                    except Exception:   # noqa: BLE001 - an import the graded cells may not need
                        pass
    results = {}
    for cell in nb["cells"]:
        gid = _meta(cell).get("grade_id")
        if cell["cell_type"] != "code" or not _meta(cell).get("grade"):
            continue
        try:
            for name in free_names(cell["source"], known=ns):
                ns[name] = Replayed(name)
            code = compile(cell["source"], f"<graded cell {gid}>", "exec")
            with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                exec(code, ns)
            results[gid] = {"ok": True, "why": ""}
        except BaseException as exc:   # noqa: BLE001 - SystemExit, KeyboardInterrupt: the cell failed
            results[gid] = {"ok": False, "why": failure.cut(f"{type(exc).__name__}: {failure.summary(exc)}", 300)}
    return results


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    import nbformat
    results = replay(nbformat.read(argv[0], as_version=4))
    with open(argv[1], "w") as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    from pathlib import Path
    # run by path: sys.path[0] is this folder. The repository replaces it for one import, then goes:
    # the notebook's import lines run here, and must reach neither solutions/ nor the grader's modules
    sys.path[0] = str(Path(__file__).resolve().parents[3])
    from tools import course_format
    course_format.skip_iri_grammar()       # before anything imports nbformat
    del sys.path[0], sys.modules["tools.course_format"], sys.modules["tools"]
    sys.exit(main(sys.argv[1:]))
