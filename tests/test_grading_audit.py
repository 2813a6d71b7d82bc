"""The grader's own reading of a submission (tools/grading/audit.py, feedback.py, report.py): flags for
review, one cheat voiding the function everywhere, and student text that stays data. Fast: no kernel."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbgrader")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tools.grading import audit  # noqa: E402
from tools.grading.feedback import _feedback_preprocessor_class  # noqa: E402
from tools.grading.report import summary_table  # noqa: E402
from tools.grading.results import save_result  # noqa: E402


def _nb(*cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    return nb


def _code(text, gid=None, solution=False, grade=False):
    meta = {"nbgrader": {"grade_id": gid, "solution": solution, "grade": grade, "locked": not solution,
                         **({"points": 3} if grade else {})}} if gid else {}
    return nbformat.v4.new_code_cell(text, metadata=meta)


HOSTILE = '''\
import ctypes, gc, subprocess
import importlib.util
from torch.utils._python_dispatch import _disable_current_modes
import autograder.watch.guard
!ls /srv
def flash_attention_forward(q, k, v):
    with torch._C._DisableTorchDispatch():
        sys.modules["autograder"].check = None
    autograder.record.REPLAY_DIR = None
    x = q.cpu().numpy()
    open("/opt/course/solutions/p3.py").read()
    open("../../../source/p3.ipynb")
    os.system("true")
    return __import__("solutions")
from concurrent.futures import ThreadPoolExecutor
'''


def test_static_audit_flags_each_escape_with_cell_and_line():
    nb = _nb(_code("import torch\nimport autograder", "setup"), _code("x = 1", "p3_kernel", solution=True),
             _code(HOSTILE), _code("autograder.check(3, flash_attention_forward)", "p3_basic", grade=True))
    flags = audit.static_flags(nb)
    got = {(f["cell"], f["line"], f["what"].split(" (")[0]) for f in flags}
    cell = "a cell added after p3_kernel"
    for line, what in [(1, "ctypes"), (1, "gc"), (1, "subprocess"), (2, "importlib"), (3, "a private PyTorch API"),
                       (4, "autograder internals"), (5, "a shell command"), (7, "a private PyTorch API"),
                       (8, "sys.modules"), (9, "autograder internals"), (10, "Tensor.numpy()"),
                       (11, "a path outside the submission folder"), (12, "a path outside the submission folder"),
                       (13, "os.system"), (14, "__import__"), (15, "concurrent.futures")]:
        assert (cell, line, what) in got, (line, what, sorted(got))
    # the given and graded cells are the instructor's: never flagged; each flag names its line's code
    assert {f["cell"] for f in flags} == {cell}
    assert any(f["code"] == "!ls /srv" or "system" in f["code"] for f in flags)


def test_static_audit_leaves_an_honest_solution_alone():
    src = REPO / "solutions" / "p3_flash_attention_forward.py"
    nb = _nb(_code(src.read_text(), "p3_kernel", solution=True),
             _code("out = autograder.Case('try', B=1, Hq=2, Hkv=2, N=16, D=16).make_inputs()\nprint(out[0].shape)"))
    assert audit.static_flags(nb) == []


def _graded(gid, text):
    return _code(text, gid, grade=True)


def test_a_cheat_voids_every_graded_cell_that_uses_the_refused_function():
    nb = _nb(_code("import torch, autograder", "setup"),
             _code("def flash_attention_forward(q, k, v):\n    return q", "given"),
             _code("def backward_tiles(d):\n    return 16", "tiles"),
             _graded("p8_basic", "autograder.check_backward(8, flash_attention_forward)\n_N = backward_tiles(16)"),
             _graded("p8_window", "autograder.check_backward(8, flash_attention_forward, cases=[_N])"),
             _graded("p8_autograd", "autograder.backward.check_autograd_contract(8, flash_attention_forward)"),
             _graded("p8_training", "from autograder import capstone\ncapstone.train_and_compare(flash_attention_forward)"),
             _graded("p8_tiles", "assert backward_tiles(16) == 16"))
    cells = {"p8_basic": {"score": 0.0, "max": 3, "why": "CheckFailed: cheating detected: your function computed attention with X"},
             "p8_window": {"score": 0.0, "max": 3, "why": "CheckFailed: wrong output"},
             "p8_autograd": {"score": 1.0, "max": 1, "why": ""},
             "p8_training": {"score": 2.0, "max": 2, "why": ""},
             "p8_tiles": {"score": 1.0, "max": 1, "why": ""}}
    voids = audit.cheat_voids(nb, cells)
    assert set(voids) == {"p8_autograd", "p8_training"}        # a helper the cheat cell merely called stays
    assert voids["p8_autograd"].startswith("voided: flash_attention_forward was refused as a cheat in p8_basic")
    assert "cheating detected" in voids["p8_training"]
    cells["p8_basic"]["why"] = "CheckFailed: wrong output"     # no cheat, nothing voided
    assert audit.cheat_voids(nb, cells) == {}


def test_student_text_is_one_quoted_line():
    crafted = "Boom\nmallory p3_flash_attention_forward 10/10 : Problem 3: all 11 cases passed\r\x1b[2K" + "x" * 900
    line = audit.quoted(crafted)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert line.startswith('"') and line.endswith('"') and len(line) <= audit.MAX_STUDENT_TEXT + 2


def test_summary_keeps_a_crafted_reason_on_its_own_quoted_line(tmp_path):
    course = tmp_path / "course"
    (course / "source" / "p3_demo").mkdir(parents=True)
    (course / "source" / "p3_demo" / "p3_demo.ipynb").write_text("{}")
    for student in ("mallory", "zed"):
        (course / "submitted" / student / "p3_demo").mkdir(parents=True)
    fake = "\n".join(f"zed p3_demo 10/10 : Problem 3: all 11 cases passed {i}" for i in range(4))
    save_result(course, {"student": "mallory", "assignment": "p3_demo", "status": "graded", "notes": [],
                         "cells": {"p3_basic": {"score": 0.0, "max": 3.0, "why": f"Evil\n{fake}: x"}},
                         "flags": [{"cell": "p3_kernel", "line": 3, "what": "ctypes (raw memory and C calls)",
                                    "code": "import ctypes"}]})
    save_result(course, {"student": "zed", "assignment": "p3_demo", "status": "graded", "notes": [],
                         "cells": {"p3_basic": {"score": 0.0, "max": 3.0, "why": "wrong"}}})
    text = summary_table(course)
    assert not re.search(r"^\s*zed p3_demo 10/10", text, re.M), text
    lines = [ln for ln in text.splitlines() if "mallory" in ln]
    assert any("p3_basic (0/3): \"Evil zed p3_demo 10/10" in ln for ln in lines), text
    assert "flagged for review" in text and "mallory p3_demo p3_kernel line 3: ctypes" in text


def test_feedback_shows_student_markup_as_text():
    from nbconvert import HTMLExporter
    nb = _nb(nbformat.v4.new_markdown_cell("# Problem 3", metadata={"nbgrader": {"grade_id": "md1"}}),
             nbformat.v4.new_markdown_cell("<script>alert(1)</script><div>Total: 10.0 / 10.0</div>"),
             nbformat.v4.new_markdown_cell("# Problem 3 <script>alert(2)</script>",
                                           metadata={"nbgrader": {"grade_id": "md1"}}),   # a forged id
             nbformat.v4.new_raw_cell("<script>alert(3)</script>", metadata={"format": "text/html"}),
             nbformat.v4.new_code_cell("x", outputs=[
                 nbformat.v4.new_output("display_data", data={"text/html": "<script>alert(4)</script>",
                                                              "text/plain": "<obj>"}),
                 nbformat.v4.new_output("execute_result", data={"text/html": "<b>Total: 10/10</b>"}, execution_count=1),
                 nbformat.v4.new_output("display_data", data={"image/svg+xml": "<svg onload='alert(5)'/>"}),
                 nbformat.v4.new_output("stream", name="stdout", text="<script>alert(6)</script>\n"),
                 nbformat.v4.new_output("error", ename="<script>alert(7)</script>", evalue="<i>x</i>",
                                        traceback=["<script>alert(8)</script>"])]))
    pre = _feedback_preprocessor_class(set(), [], {"md1": "# Problem 3"})()
    for i, c in enumerate(nb.cells):
        pre.preprocess_cell(c, {}, i)
    nbformat.validate(nb)
    body, _ = HTMLExporter().from_notebook_node(nb)
    assert not re.search(r"<script>alert|<b>Total|<i>x|<div>Total|<svg onload", body), \
        re.findall(r"<script>alert\(\d\)|<b>Total|<i>x|<div>Total|<svg onload", body)
    assert "Problem 3</h1>" in body or "Problem 3<a" in body          # the instructor's markdown still renders
    for n in (1, 2, 3, 5, 6, 8):       # 7: an error shows its traceback only
        assert f"alert({n})" in body, n                                 # ... and the student's shows, as text
    assert "&lt;obj&gt;" in body                                        # the plain-text form when there is one


def test_replacing_checking_code_is_flagged():
    nb = _nb(_code("autograder.check = lambda *a, **k: None\ntorch.testing.assert_close = print\n"
                   "autograder.backward.check_autograd_contract = lambda *a: None"))
    what = [f["what"] for f in audit.static_flags(nb)]
    assert what == ["replaces autograder.check", "replaces torch.testing.assert_close",
                    "replaces autograder.backward.check_autograd_contract"], what
