"""Gradescope: `grade.py gradescope` builds Problem 3's autograder.zip; its setup.sh and run_autograder run
here under a temporary root laid out as Gradescope does (source/, submission/, results/), in a fresh
virtual environment, and grade what tests/test_grading.py grades with grade.py, to the same scores.

test_gradescope_autograder is slow: setup.sh installs the CPU tier and the course's deps (1-2 min), then
five gradings (under 1 min each). The others take a second.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbgrader")

from test_grading import P3, P3_POINTS, _have, index_of, release, solved  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tools.grading.gradescope import LEAK_NOTICE, graded_cells, results_json, strip_solutions  # noqa: E402

pytestmark = pytest.mark.skipif(not _have(P3), reason="Problem 3 is not built yet")

FULL = {k: float(v) for k, v in P3_POINTS.items()}
ZERO = {k: 0.0 for k in P3_POINTS}
VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}


def _extract(zip_path: Path, dest: Path):
    """As Gradescope unpacks it: files with their modes (setup.sh and run_autograder executable)."""
    with zipfile.ZipFile(zip_path) as z:
        for info in z.infolist():
            target = dest / info.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(info))
            os.chmod(target, (info.external_attr >> 16) & 0o777 or 0o644)


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """(root, env): the zip built, unpacked into root/source and set up in a fresh venv (setup.sh)."""
    tmp = tmp_path_factory.mktemp("gradescope")
    out = subprocess.run([sys.executable, str(REPO / "tools" / "grade.py"), "gradescope", "-a", P3,
                          "--out", str(tmp / "zip")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    zip_path = tmp / "zip" / "autograder.zip"
    with zipfile.ZipFile(zip_path) as z:
        names = set(z.namelist())
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in z.infolist()}
    assert {"setup.sh", "run_autograder", "gradescope.json", "pyproject.toml", "nbgrader_config.py",
            "tools/grade.py", "autograder/checks/attention.py", "autograder/spec/attention_cases.csv",
            f"notebooks/{P3}/{P3}.ipynb", f"release/{P3}/{P3}.ipynb"} <= names
    assert modes["setup.sh"] & 0o111 and modes["run_autograder"] & 0o111
    assert not any(n.startswith("solutions/") or n.endswith(".py") and n.startswith("notebooks/") for n in names)
    root = tmp / "root"
    _extract(zip_path, root / "source")
    venv = tmp / "venv"
    env = dict(os.environ, GRADESCOPE_VENV=str(venv), GRADESCOPE_PYTHON=sys.executable, AUTOGRADER_ROOT=str(root))
    env.pop("PYTHONPATH", None)
    t0 = time.time()
    out = subprocess.run(["bash", str(root / "source" / "setup.sh")], cwd=root / "source", env=env,
                         capture_output=True, text=True, timeout=1200)
    print(out.stdout[-3000:], out.stderr[-3000:])
    print(f"setup.sh took {time.time() - t0:.0f} s")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (venv / "bin" / "python").is_file()
    return root, env


def run_autograder(root: Path, env: dict, files: dict) -> tuple[dict, str]:
    """Grade one submission ({file name: notebook}) as Gradescope would; (results.json, the log)."""
    for d in ("submission", "results"):
        shutil.rmtree(root / d, ignore_errors=True)
        (root / d).mkdir()
    for name, nb in files.items():
        nbformat.write(nb, str(root / "submission" / name))
    # Gradescope copies run_autograder to /autograder/ and runs it from there
    shutil.copy(root / "source" / "run_autograder", root / "run_autograder")
    t0 = time.time()
    out = subprocess.run([str(root / "run_autograder")], cwd=root, env=env, capture_output=True, text=True,
                         timeout=900)
    print(out.stdout[-4000:], out.stderr[-2000:])
    print(f"run_autograder took {time.time() - t0:.0f} s")
    assert out.returncode == 0
    return json.loads((root / "results" / "results.json").read_text()), out.stdout


def check_format(res: dict):
    """Gradescope's results.json: the keys this harness writes, with their types and values."""
    assert set(res) == {"score", "execution_time", "output", "visibility", "stdout_visibility", "tests"}
    assert isinstance(res["score"], float) and isinstance(res["execution_time"], int)
    assert isinstance(res["output"], str) and "\n" not in res["output"]
    assert res["visibility"] in VISIBILITY and res["stdout_visibility"] == "hidden"
    assert isinstance(res["tests"], list) and len(res["tests"]) == len(P3_POINTS)
    for t in res["tests"]:
        assert set(t) == {"name", "score", "max_score", "status", "output", "visibility"}
        assert isinstance(t["name"], str) and isinstance(t["output"], str) and "\n" not in t["output"]
        assert isinstance(t["score"], float) and isinstance(t["max_score"], float) and 0 <= t["score"] <= t["max_score"]
        assert t["status"] in ("passed", "failed") and t["visibility"] in VISIBILITY
        assert len(t["output"]) <= 300
    assert res["score"] == sum(t["score"] for t in res["tests"])
    # every graded cell of Problem 3 has hidden tests: hidden until the grades are published
    assert {t["visibility"] for t in res["tests"]} == {"after_published"} and res["visibility"] == "after_published"


def hidden_test_lines() -> set:
    """Lines inside the source notebook's hidden-test regions that the release does not show anyway."""
    src = nbformat.read(str(REPO / "notebooks" / P3 / f"{P3}.ipynb"), as_version=4)
    rel = nbformat.read(str(REPO / "release" / P3 / f"{P3}.ipynb"), as_version=4)
    public = {ln.strip() for c in rel.cells for ln in c.source.split("\n")}
    lines, inside = set(), False
    for c in src.cells:
        for ln in c.source.split("\n"):
            if "BEGIN HIDDEN TESTS" in ln:
                inside = True
            elif "END HIDDEN TESTS" in ln:
                inside = False
            elif inside and len(ln.strip()) > 12 and ln.strip() not in public:
                lines.add(ln.strip())
    assert lines
    return lines


def per_cell(res: dict) -> dict:
    return {t["name"].split(":")[0]: t["score"] for t in res["tests"]}


@pytest.fixture(scope="module")
def course_nbs(tmp_path_factory):
    """The repository's source and release of Problem 3 as a course directory: test_grading's helpers read it."""
    course = tmp_path_factory.mktemp("nbs")
    for kind, top in (("source", "notebooks"), ("release", "release")):
        (course / kind / P3).mkdir(parents=True)
        shutil.copy(REPO / top / P3 / f"{P3}.ipynb", course / kind / P3 / f"{P3}.ipynb")
    return course


@pytest.mark.slow
def test_gradescope_autograder(harness, course_nbs):
    root, env = harness
    c = course_nbs
    bug = solved(c, P3, p3_kernel=[("Q_ptr += b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh",
                                    "Q_ptr += b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh")])
    cheat = solved(c, P3)
    cheat.cells.insert(index_of(cheat, "p3_kernel") + 3, nbformat.v4.new_code_cell(
        "def flash_attention_forward(q, k, v, is_causal=False, window_size=None, sink_size=None):\n"
        "    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=is_causal)\n"))
    cases = {   # name: (files in the submission, per-cell scores grade.py gives them in tests/test_grading.py)
        "ref": ({f"{P3}.ipynb": solved(c, P3)}, FULL),
        "release": ({f"{P3}.ipynb": release(c, P3)}, ZERO),
        "bug": ({"my_attempt.ipynb": bug}, dict(FULL, p3_layout=0.0)),     # the only notebook: graded
        "cheat": ({f"{P3}.ipynb": cheat}, ZERO),
        "two": ({"a.ipynb": solved(c, P3), "b.ipynb": solved(c, P3)}, ZERO),   # which one? neither
    }
    secret = hidden_test_lines()
    got = {}
    for name, (files, expected) in cases.items():
        res, log = run_autograder(root, env, files)
        got[name] = res
        check_format(res)
        assert per_cell(res) == expected, (name, res)
        assert res["score"] == sum(expected.values())
        text = json.dumps(res)
        flat = " ".join(" ".join(s.split()) for t in res["tests"] for s in (t["name"], t["output"])) + res["output"]
        leaked = [ln for ln in secret if ln in flat or json.dumps(ln)[1:-1] in text]
        assert not leaked, (name, leaked)
        assert "differs from the course's release" not in log     # the zip's source releases as the students' one
    assert all(t["output"] == "passed" for t in got["ref"]["tests"])
    layout = next(t for t in got["bug"]["tests"] if t["name"].startswith("p3_layout"))
    assert layout["status"] == "failed" and layout["output"] not in ("", "passed")
    assert "cheating detected" in next(t for t in got["cheat"]["tests"] if t["name"].startswith("p3_basic"))["output"]
    assert all("2 notebooks" in t["output"] for t in got["two"]["tests"])
    assert "not graded" in got["two"]["output"]


def test_results_json_visibility_and_leaks():
    """Per cell: after_published when its test has a hidden part, else visible; outputs one line, cut, and
    replaced when they show a hidden test line."""
    hidden = "assert torch.allclose(secret_case(17), expected)  # a hidden check"
    cell = lambda gid, src: nbformat.v4.new_code_cell(src, metadata={"nbgrader": {
        "grade": True, "grade_id": gid, "points": 2, "locked": True, "solution": False}})
    nb = nbformat.v4.new_notebook(cells=[
        cell("p_open", "# an all-visible test\nassert f(1) == 2"),
        cell("p_hidden", f"assert f(2) == 3\n### BEGIN HIDDEN TESTS\n{hidden}\n### END HIDDEN TESTS")])
    cells = graded_cells(nb)
    assert [(c["id"], c["hidden"], c["description"]) for c in cells] == \
        [("p_open", False, "assert f(1) == 2"), ("p_hidden", True, "assert f(2) == 3")]
    result = {"status": "graded", "cells": {
        "p_open": {"score": 0.0, "max": 2.0, "why": "AssertionError: line one\nline two\x1b[31m" + "x" * 500},
        "p_hidden": {"score": 0.0, "max": 2.0, "why": f"NameError: in   {hidden}  "}}}
    res = results_json(cells, result, "", {hidden}, 3.7)
    check = {t["name"].split(":")[0]: t for t in res["tests"]}
    assert check["p_open"]["visibility"] == "visible" and check["p_hidden"]["visibility"] == "after_published"
    assert res["visibility"] == "after_published" and res["stdout_visibility"] == "hidden"
    out = check["p_open"]["output"]
    assert out.startswith("AssertionError: line one line two") and "\n" not in out and "\x1b" not in out
    assert len(out) <= 300
    assert check["p_hidden"]["output"] == LEAK_NOTICE
    # nothing graded: every test 0 with the reason
    res = results_json(cells, None, "the autograder failed: boom", {hidden}, 1)
    assert res["score"] == 0 and all(t["output"] == "the autograder failed: boom" for t in res["tests"])
    assert res["visibility"] == "after_published"
    res = results_json(cells[:1], {"status": "graded", "cells": {"p_open": {"score": 2.0, "max": 2.0, "why": ""}}},
                       "", set(), 1)
    assert res["visibility"] == "visible" and res["tests"][0]["output"] == "passed" and res["score"] == 2.0


def test_zip_source_has_no_solutions():
    """The zip's source notebook: solution regions emptied, hidden tests kept, the same release from it."""
    src = nbformat.read(str(REPO / "notebooks" / P3 / f"{P3}.ipynb"), as_version=4)
    rel = nbformat.read(str(REPO / "release" / P3 / f"{P3}.ipynb"), as_version=4)
    stripped = strip_solutions(src, rel)      # raises if nbgrader would release it differently
    solution = set()
    for c in src.cells:
        inside = False
        for ln in c.source.split("\n"):
            if "BEGIN SOLUTION" in ln or "END SOLUTION" in ln:
                inside = "BEGIN" in ln
            elif inside and ln.strip():
                solution.add(ln.strip())
    assert solution
    text = "\n".join(c.source for c in stripped.cells)
    assert not [ln for ln in solution if ln in {x.strip() for x in text.split("\n")}]
    assert text.count("BEGIN HIDDEN TESTS") == sum(c.source.count("BEGIN HIDDEN TESTS") for c in src.cells) > 0


def test_run_autograder_without_its_environment(tmp_path):
    """When the harness cannot even start, run_autograder still writes a results.json (score 0, the reason),
    replacing whatever was there."""
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "results.json").write_text('{"score": 10}')
    env = dict(os.environ, AUTOGRADER_ROOT=str(tmp_path), GRADESCOPE_VENV=str(tmp_path / "no-venv"))
    out = subprocess.run(["bash", str(REPO / "tools" / "gradescope" / "run_autograder")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    res = json.loads((tmp_path / "results" / "results.json").read_text())
    assert res["score"] == 0 and res["tests"] == [] and "autograder failed (exit 127)" in res["output"]
    assert res["stdout_visibility"] == "hidden"
