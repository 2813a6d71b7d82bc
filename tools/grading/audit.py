"""What the grader reads in a submission, in its own process: the student's cells flagged for review,
one cheat voiding every graded cell that uses the refused function, and student text made inert.

Nothing here runs student code: cells are parsed (IPython's own transform first, so `!cmd` and `%%bash`
are seen as the calls they become), never executed.
"""
from __future__ import annotations

import ast
import json
import re

from .cells import grade_id, is_grade, is_solution
from .replay.replayer import free_names

CHEAT = "cheating detected"
MAX_STUDENT_TEXT = 300            # characters of student-made text in one console, summary or CSV line

# autograder modules whose objects only the checks should touch: the room that watches student code
# (guard, recorder, probe, the GPU compile check), by its room or by a module's own name
AUTOGRADER_INTERNAL = {"watch", "guard", "record", "probe", "gpu_compile"}


def _internal(parts) -> bool:
    return any(p in AUTOGRADER_INTERNAL or (p.startswith("_") and not p.startswith("__")) for p in parts)


# module -> why a student cell importing or using it is worth a look
MODULES = {
    "ctypes": "ctypes (raw memory and C calls)", "cffi": "cffi (C calls)", "gc": "gc (reaches any live object)",
    "inspect": "inspect (frames of the checking code)", "importlib": "importlib (loads modules from files)",
    "runpy": "runpy (runs files)", "imp": "imp (loads modules from files)",
    "subprocess": "subprocess (starts processes)", "multiprocessing": "multiprocessing (starts processes)",
    "pty": "pty (starts processes)", "socket": "socket (network)", "urllib": "urllib (network)",
    "requests": "requests (network)", "http": "http (network)", "shutil": "shutil (copies files)",
    "numpy": "numpy (work the cheat guard cannot see)", "threading": "threading (work the cheat guard cannot see)",
    "concurrent": "concurrent.futures (work the cheat guard cannot see)", "builtins": "builtins (replaces Python's own functions)",
}
ATTRS = {
    ("sys", "modules"): "sys.modules (swaps loaded modules)", ("sys", "_getframe"): "sys._getframe (frames)",
    ("sys", "settrace"): "sys.settrace (watches the checking code)",
    ("sys", "setprofile"): "sys.setprofile (watches the checking code)",
    ("os", "system"): "os.system (starts a process)", ("os", "popen"): "os.popen (starts a process)",
    ("os", "fork"): "os.fork (starts a process)", ("os", "posix_spawn"): "os.posix_spawn (starts a process)",
    ("os", "kill"): "os.kill (signals a process)", ("os", "_exit"): "os._exit (ends the kernel)",
}
PREFIXES = {("os", "exec"): "os.exec* (replaces the kernel)", ("os", "spawn"): "os.spawn* (starts a process)"}
NAMES = {"__import__": "__import__ (loads modules by name)", "exec": "exec (runs text as code)",
         "eval": "eval (runs text as code)", "compile": "compile (builds code from text)",
         "globals": "globals() (reaches the notebook's namespace)", "open": None}   # open: judged by its path
IPYTHON = {"system": "a shell command (!cmd)", "getoutput": "a shell command (!!cmd)",
           "run_cell_magic": "a cell magic (%%...)", "run_line_magic": "a line magic (%...)"}
OUTSIDE_PATH = re.compile(r"^(/|~|\.\.(/|$))|/\.\.(/|$)")


def _transform(source: str) -> str:
    try:
        from IPython.core.inputtransformer2 import TransformerManager
        return TransformerManager().transform_cell(source)
    except Exception:   # noqa: BLE001 - IPython missing or confused: the text as written
        return source


def _dotted(node) -> list[str]:
    """['torch', '_C', '_disable_current_modes'] for torch._C._disable_current_modes; [] otherwise."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id] + parts[::-1]
    return []


def _module_flags(module: str, names=()) -> list[str]:
    top = module.split(".")[0]
    out = []
    if top in MODULES:
        out.append(MODULES[top])
    if top == "torch" and any(p.startswith("_") for p in module.split(".")[1:] + list(names)):
        out.append(f"a private PyTorch API ({module})")
    if top == "autograder" and _internal(module.split(".")[1:] + list(names)):
        out.append(f"autograder internals ({module}: {', '.join(names) or module})")
    return out


def _node_flags(node) -> list[str]:
    if isinstance(node, ast.Import):
        return [f for a in node.names for f in _module_flags(a.name)]
    if isinstance(node, ast.ImportFrom):
        return _module_flags(node.module or "", [a.name for a in node.names])
    if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        chains = [".".join(_dotted(t)) for t in targets if isinstance(t, ast.Attribute)]
        return [f"replaces {c}" for c in chains if c.split(".")[0] in ("autograder", "torch", "triton", "builtins")]
    if isinstance(node, ast.Attribute) and not isinstance(node.value, ast.Attribute):
        chain = _dotted(node)
        if len(chain) < 2:
            return []
        head = tuple(chain[:2])
        if head in ATTRS:
            return [ATTRS[head]]
        for (mod, prefix), why in PREFIXES.items():
            if chain[0] == mod and chain[1].startswith(prefix):
                return [why]
        if chain[0] in MODULES and chain[0] not in ("numpy", "shutil"):
            return [MODULES[chain[0]]]
        return []
    if isinstance(node, ast.Attribute):
        return []
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and NAMES.get(node.id):
        return [NAMES[node.id]]
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Call) \
                and _dotted(node.func.value.func) == ["get_ipython"] and node.func.attr in IPYTHON:
            return [IPYTHON[node.func.attr]]
        if isinstance(node.func, ast.Attribute) and node.func.attr == "numpy" and not node.args:
            return ["Tensor.numpy() (work the cheat guard cannot see)"]
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and OUTSIDE_PATH.search(node.value) \
            and len(node.value) < 300 and "\n" not in node.value:
        return [f"a path outside the submission folder ({node.value!r})"]
    return []


def _chain_flags(node) -> list[str]:
    """Flags of a whole attribute chain, read once from its outermost node."""
    chain = _dotted(node)
    if chain[:1] == ["torch"] and any(p.startswith("_") and not p.startswith("__") for p in chain[1:]):
        return ["a private PyTorch API (" + ".".join(chain) + ")"]
    if chain[:1] == ["autograder"] and _internal(chain[1:]):
        return ["autograder internals (" + ".".join(chain) + ")"]
    return []


def _student_cells(nb):
    """(label, cell) of the cells whose text comes from the student: solution cells and added cells."""
    last = "the top"
    for cell in nb.cells:
        gid = grade_id(cell)
        if cell.cell_type == "code" and (is_solution(cell) or not gid):
            yield (gid if gid else f"a cell added after {last}"), cell
        if gid:
            last = gid


def static_flags(nb) -> list[dict]:
    """Every construct in the student's cells worth an instructor's look: {cell, line, what, code}.
    A flag is for review, never a score: honest code can use some of these."""
    flags = []
    for label, cell in _student_cells(nb):
        text = _transform(cell.source)
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        lines = text.split("\n")
        inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        seen = set()
        for node in ast.walk(tree):
            found = _node_flags(node)
            if isinstance(node, ast.Attribute) and id(node) not in inner:
                found += _chain_flags(node)
            for what in found:
                line = getattr(node, "lineno", 0)
                if (label, line, what) in seen:
                    continue
                seen.add((label, line, what))
                code = lines[line - 1].strip() if 0 < line <= len(lines) else ""
                flags.append({"cell": label, "line": line, "what": what, "code": inert(code, 120)})
    flags.sort(key=lambda f: (f["cell"], f["line"], f["what"]))
    return flags


def format_flag(flag: dict) -> str:
    return f"{flag['cell']} line {flag['line']}: {flag['what']}"


# ---------------------------------------------------------------------------------------------
# one cheat voids the function everywhere


def _defined_names(nb) -> set:
    """Names the notebook's given and student cells bind with def, class or assignment (imports and the
    tests' own variables excluded)."""
    out = set()
    for cell in nb.cells:
        if cell.cell_type != "code" or is_grade(cell):
            continue
        try:
            tree = ast.parse(_transform(cell.source))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                out.add(node.id)
    return out


def _uses(cell, defined) -> set:
    try:
        return set(free_names(_transform(cell.source))) & defined
    except SyntaxError:
        return set()


def _checked(cell, defined) -> set:
    """The functions a graded cell hands to a check (`autograder.check(3, flash_attention_forward)`)."""
    try:
        tree = ast.parse(_transform(cell.source))
    except SyntaxError:
        return set()
    passed = {a.id for n in ast.walk(tree) if isinstance(n, ast.Call)
              for a in list(n.args) + [k.value for k in n.keywords] if isinstance(a, ast.Name)}
    return passed & _uses(cell, defined)


def cheat_voids(nb, cells: dict) -> dict:
    """{grade_id: why} of every graded cell that still scores but uses a function a graded cell refused as a
    cheat. `nb` is the notebook that ran (the graded cells' text), `cells` the result's cells."""
    defined = _defined_names(nb)
    graded = {grade_id(c): c for c in nb.cells if is_grade(c) and c.cell_type == "code"}
    refused = {}                                 # function name -> (cell, why)
    for gid, c in cells.items():
        if CHEAT in c.get("why", "") and gid in graded:
            for name in sorted(_checked(graded[gid], defined)):
                refused.setdefault(name, (gid, c["why"]))
    out = {}
    for gid, c in cells.items():
        if c["score"] <= 0 or gid not in graded:
            continue
        hit = sorted(_uses(graded[gid], defined) & set(refused))
        if hit:
            where, why = refused[hit[0]]
            out[gid] = f"voided: {hit[0]} was refused as a cheat in {where} ({cut(why, 200)})"
    return out


# ---------------------------------------------------------------------------------------------
# student text is data


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(width - 3, 0)] + "..."


def inert(text, width: int = MAX_STUDENT_TEXT) -> str:
    """One line of plain text: control characters (newlines, ANSI escapes, carriage returns) become a space,
    then cut to `width`. What a student made can then not add lines to a console, summary or CSV."""
    return cut(" ".join(_CONTROL.sub(" ", str(text)).split()), width)


def quoted(text, width: int = MAX_STUDENT_TEXT) -> str:
    """`inert` text in quotes, for a line that mixes the grader's words and a submission's."""
    return json.dumps(inert(text, width), ensure_ascii=False)
