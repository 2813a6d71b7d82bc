"""End to end: the instructor's grading command on hostile submissions (CPU tier, a few minutes).

A course directory in tmp gets Problems 2 and 3; synthetic students submit what real ones do:
the reference solution, the untouched release, a planted bug, a PyTorch cheat, an infinite loop
that ignores interrupts, deleted / edited / duplicated / reordered cells, a notebook saved by Colab
(no cell metadata), a syntax error. Each gets an exact score; one is graded twice.
"""
from __future__ import annotations

import copy
import csv
import html
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbgrader")

from submissions import REPO, cells_by_id, index_of, release, solutions, solved, submit  # noqa: E402,F401

GRADE = [sys.executable, str(REPO / "tools" / "grade.py")]
P2, P3, P7 = "p2_triton_basics", "p3_flash_attention_forward", "p7_attention_sinks"
P3_POINTS = {"p3_basic": 3, "p3_ragged": 3, "p3_layout": 2, "p3_headdim": 2}

pytestmark = pytest.mark.slow


def _have(slug):
    return (REPO / "notebooks" / slug / f"{slug}.ipynb").is_file() and (REPO / "release" / slug).is_dir()


def grade(course, *args, timeout=900):
    out = subprocess.run(GRADE + [args[0], "--course", str(course), *args[1:]], cwd=REPO, text=True,
                         capture_output=True, timeout=timeout)
    print(out.stdout, out.stderr[-3000:])
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def colab(nb):
    """What Colab saves: no nbgrader metadata, its own cell ids in metadata, nbformat 4.0, outputs."""
    nb = copy.deepcopy(nb)
    nb.nbformat_minor = 0
    nb.metadata = {"colab": {"provenance": []}, "kernelspec": {"name": "python3", "display_name": "Python 3"}}
    for i, c in enumerate(nb.cells):
        c.pop("id", None)
        c.metadata = {"id": f"x{i:04d}colab"}
        if c.cell_type == "code":
            c.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran in colab\n")]
    return nb


def scores(course):
    """{(student, assignment): {cell: score}} from the per-cell CSV the export writes."""
    out = {}
    with open(course / "grades_cells.csv") as f:
        for row in csv.DictReader(f):
            out.setdefault((row["student_id"], row["assignment"]), {})[row["cell"]] = float(row["score"])
    return out


@pytest.mark.skipif(not (_have(P2) and _have(P3)), reason="Problems 2 and 3 are not built yet")
def test_grading_end_to_end(tmp_path):
    course = tmp_path / "course"
    grade(course, "release", "--no-build", "-a", P2, "-a", P3)
    sols = solutions(course, P3)

    submit(course, "ref", P3, solved(course, P3))
    submit(course, "ref", P2, solved(course, P2))
    submit(course, "empty", P3, release(course, P3))
    # Planted bug: Q offset with the output's strides. Contiguous inputs and transposed views
    # (empty_like keeps their strides) pass; the padded layout does not: the layout cell fails.
    bug = solved(course, P3, p3_kernel=[("Q_ptr += b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh",
                                         "Q_ptr += b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh")])
    submit(course, "bug", P3, bug)
    # The same bug saved by Colab: metadata gone; plus a scratch cell. Same score.
    col = colab(bug)
    col.cells.insert(3, nbformat.v4.new_code_cell("print('scratch')", metadata={"id": "scratch"}))
    col.cells[3].pop("id")
    submit(course, "colab", P3, col)
    # A cheat: a cell added after the given wrapper replaces it with PyTorch attention.
    cheat = solved(course, P3)
    cheat.cells.insert(index_of(cheat, "p3_kernel") + 3, nbformat.v4.new_code_cell(
        "def flash_attention_forward(q, k, v, is_causal=False, window_size=None, sink_size=None):\n"
        "    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=is_causal)\n"))
    submit(course, "cheat", P3, cheat)
    # Tests deleted and tampered with, cells duplicated, reordered, added.
    messy = solved(course, P3)
    by = cells_by_id(messy)
    by["p3_basic"].source = "pass  # no tests here"                        # edited locked test: restored
    # Jupyter gives a copied cell a fresh id but keeps its metadata, grade_id included.
    messy.cells.insert(0, copy.deepcopy(messy.cells[1]))                    # a duplicated given cell
    messy.cells[0].id = "copy-of-given"
    messy.cells.append(messy.cells.pop(0))                                  # ... moved to the end
    dup = copy.deepcopy(by["p3_tiles"])                                     # a duplicated solution cell,
    dup.id = "copy-of-solution"
    messy.cells.insert(index_of(messy, "p3_tiles"), dup)                    # the stub above the solution
    dup.source = release(course, P3).cells[index_of(release(course, P3), "p3_tiles")].source
    messy.cells.insert(5, nbformat.v4.new_code_cell("x = 1  # my scratch cell"))
    messy.cells = [c for c in messy.cells if c.metadata.get("nbgrader", {}).get("grade_id")
                   not in ("p3_ragged", "p3_layout")]                      # deleted tests: 0 for them
    submit(course, "messy", P3, messy)
    # A syntax error in a solution cell.
    submit(course, "syntax", P3, solved(course, P3, p3_tiles=[("m_i = m_ij", "m_i = = m_ij")]))

    t0 = time.time()
    grade(course, "autograde", "--jobs", "2", "--cell-timeout", "240", "--timeout", "600")
    # An infinite loop that swallows the kernel interrupt: the cell times out, the interrupt does
    # not stop it, so the notebook stops there. Cells that each stay under the cell timeout but
    # together run past the notebook limit: the grader kills the kernel. Either way 0 for the
    # problem, and the next submission of the same run is graded as usual.
    hang = solved(course, P3)
    hang.cells[index_of(hang, "p3_kernel")].source = (
        "import time\nwhile True:\n    try:\n        time.sleep(0.05)\n    except KeyboardInterrupt:\n        pass\n"
        + sols["p3_kernel"])
    submit(course, "hang", P3, hang)
    slow = solved(course, P3)
    for _ in range(12):
        slow.cells.insert(2, nbformat.v4.new_code_cell("import time\ntime.sleep(5)"))
    submit(course, "slow", P3, slow)
    t1 = time.time()
    # the hang: ~10 s to start the kernel, 10 s of cell, 5 s to stop after the interrupt, well inside 45 s
    out = grade(course, "autograde", "-s", "hang", "-s", "slow", "--cell-timeout", "10", "--timeout", "45",
                timeout=300)
    hang_run = time.time() - t1
    assert "did not stop when interrupted" in out and "45 s limit" in out
    assert hang_run < 150, hang_run
    # Grading again gives the same scores.
    grade(course, "export")
    first = scores(course)
    grade(course, "autograde", "-s", "bug", "--force")
    grade(course, "feedback")
    grade(course, "export")
    second = scores(course)
    print(f"grading took {time.time() - t0:.0f} s")
    assert first[("bug", P3)] == second[("bug", P3)]

    s = second
    full3 = {k: float(v) for k, v in P3_POINTS.items()}
    assert s[("ref", P3)] == full3
    assert sum(s[("ref", P2)].values()) == 10
    for student in ("empty", "cheat", "syntax", "hang", "slow"):
        assert s[(student, P3)] == {k: 0.0 for k in P3_POINTS}, student
    assert s[("bug", P3)] == dict(full3, p3_layout=0.0)
    assert s[("colab", P3)] == s[("bug", P3)]
    assert s[("messy", P3)] == dict(full3, p3_ragged=0.0, p3_layout=0.0)

    # why it failed, in the results and the summary
    res = json.loads((course / "results" / "cheat" / f"{P3}.json").read_text())
    assert "cheating detected" in res["cells"]["p3_basic"]["why"]
    res = json.loads((course / "results" / "hang" / f"{P3}.json").read_text())
    assert res["status"] == "zero" and "interrupted" in res["reason"]
    res = json.loads((course / "results" / "slow" / f"{P3}.json").read_text())
    assert res["status"] == "zero" and "45 s limit" in res["reason"]
    res = json.loads((course / "results" / "messy" / f"{P3}.json").read_text())
    assert any("p3_ragged: test cell deleted" in n for n in res["notes"])
    assert any("p3_basic: edited test cell restored" in n for n in res["notes"])
    summary = grade(course, "summary")
    assert "bug" in summary and "p3_layout (0/2)" in summary and "padded" in summary

    # feedback: hidden test code never shows, the reason of a failure does
    fb = (course / "feedback" / "bug" / P3 / f"{P3}.html").read_text()
    assert "seed=121" not in fb and "BEGIN HIDDEN" not in fb
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", "", fb)).split())
    # the tier is the grading machine's: the case line says which ran
    assert re.search(r"padded \((cpu|gpu) tier\)", text) and 'autograder.check(3, flash_attention_forward, family="layout")' in text
    assert (course / "grades.csv").read_text().count(P3) >= 7


# ---------------------------------------------------------------------------------------------
# hostile submissions: what a submission must not be able to do (issue: grading integrity)

THIEF = r'''
import glob, os
seen = []
for pattern in ("{repo}/solutions/*.py", "{repo}/notebooks/*/*.py", "{course}/source/*/*.ipynb",
                "../../../source/*/*.ipynb", "{course}/gradebook.db", "{course}/.grading-key"):
    seen += glob.glob(pattern)
print("THIEF saw", len(seen), "secret files")
try:
    from solutions.p3_flash_attention_forward import flash_attention_forward, _attn_fwd_tiles, _flash_attention_fwd
    print("THIEF imported the solutions")
except ImportError as exc:
    print("THIEF import failed:", type(exc).__name__)
'''

VANDAL = r'''
import glob, os, sqlite3, subprocess
books = [p for p in ("{course}/gradebook.db", "../../../gradebook.db") if os.path.exists(p)]
for db in books:
    con = sqlite3.connect(db); con.execute("update grade set manual_score = 0"); con.commit()
print("VANDAL gradebooks written:", len(books))
for target in ("{course}/results/ref/p3_flash_attention_forward.json", "{repo}/autograder/checks/attention.py"):
    try:
        open(target, "a").write("#")
        print("VANDAL wrote", target)
    except OSError as exc:
        print("VANDAL could not write", os.path.basename(target), type(exc).__name__)
subprocess.Popen(["setsid", "sh", "-c", "while true; do date +%s%N > beat.txt; touch {outside}/escaped.txt; "
                  "sleep 0.2; done"], start_new_session=True)
'''

# a Triton launch that does nothing: the cheats below launch it so that "no kernel launched" is not what
# catches them
NOOP_KERNEL = r'''
@triton.jit
def _noop(X):
    pass
'''

BROADCAST = NOOP_KERNEL + r'''


def flash_attention_forward(q, k, v, is_causal=False, window_size=None, sink_size=None):
    _noop[(1,)](q)
    s = (q[:, :, :, None, :].float() * k[:, :, None, :, :].float()).sum(-1) / q.shape[-1] ** 0.5
    p = (s - s.amax(-1, keepdim=True)).exp()
    return ((p / p.sum(-1, keepdim=True))[..., None] * v[:, :, None, :, :].float()).sum(-2).to(q.dtype)
'''

LEAKER = "print('\\n'.join(In))   # the kernel's history holds the hidden tests it ran"


def _run(course, *args):
    # the hostile class (every problem's reference through the replay, P9's ~4 min included) takes
    # 6-7 min of one autograde on 2 busy cores
    out = subprocess.run(GRADE + [args[0], "--course", str(course), *args[1:]], cwd=REPO, text=True,
                         capture_output=True, timeout=1200)
    return out.returncode, out.stdout + out.stderr


def _outputs(course, student, slug):
    nb = nbformat.read(str(course / "autograded" / student / slug / f"{slug}.ipynb"), as_version=4)
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


@pytest.mark.skipif(not _have(P3), reason="Problem 3 is not built yet")
def test_hostile_submissions(tmp_path):
    sys.path.insert(0, str(REPO))
    from tools.grading.sandbox import launcher
    isolated, why = launcher.namespaces_available()
    if not isolated:    # without namespaces these submissions would really read the answers and write the repo
        pytest.skip(f"grading is not isolated on this machine ({why}); tests/test_sandbox.py and "
                    f"tests/test_record.py cover the fallback")
    course, outside = tmp_path / "course", tmp_path / "outside"
    outside.mkdir()
    grade(course, "release", "--no-build")
    fmt = dict(repo=REPO, course=course, outside=outside)

    # every reference solution keeps full points through the replay. `make build` grades them all
    # (tools/graded_reference_records.py); here: Problem 3's, those without a current record, and one recorded
    # problem chosen from the keys, each of which must give its recorded result
    from tools import graded_reference_records as records
    slugs = sorted(p.name for p in (course / "source").iterdir())
    recorded = records.current(slugs)
    live = [s for s in slugs if s not in recorded or s in (P3, records.spot_check(recorded, exclude=(P3,)))]
    for slug in live:
        submit(course, "ref", slug, solved(course, slug))
    for student, patch in (("patcher", "autograder.check = lambda *a, **k: None"),
                           ("patcher2", "autograder.check = lambda *a, **k: None\n"
                                        "torch.testing.assert_close = lambda *a, **k: None")):
        nb = release(course, P3)                        # stubs left, the checks replaced
        nb.cells.insert(index_of(nb, "p3_kernel") + 3, nbformat.v4.new_code_cell(patch))
        submit(course, student, P3, nb)
    thief = release(course, P3)                         # stubs left, the answers taken from the repo
    thief.cells.insert(index_of(thief, "p3_kernel") + 1, nbformat.v4.new_code_cell(THIEF.format(**fmt)))
    submit(course, "thief", P3, thief)
    # the full score matrix without a matmul (broadcast multiply-sum, softmax by hand) and one no-op launch
    broadcast = solved(course, P3)
    broadcast.cells.insert(index_of(broadcast, "p3_kernel") + 3, nbformat.v4.new_code_cell(BROADCAST))
    submit(course, "broadcast", P3, broadcast)
    # a wrong head mapping: every graded cell of Problem 7 fails, tile skipping included
    submit(course, "gqa_wrong", P7, solved(course, P7, p7_kernel=[("kv_h = h // GROUP", "kv_h = h % (N_Q_HEADS // GROUP)")]))
    submit(course, "empty", P7, release(course, P7))
    vandal = solved(course, P3)
    vandal.cells.insert(index_of(vandal, "p3_kernel") + 1, nbformat.v4.new_code_cell(VANDAL.format(**fmt)))
    vandal.cells.append(nbformat.v4.new_code_cell(LEAKER))
    submit(course, "vandal", P3, vandal)

    rc, out = _run(course, "autograde", "--jobs", "2", "--cell-timeout", "240")
    assert rc == 0, out
    assert "sandbox: namespace" in out, out
    beat = course / "jails" / "vandal" / P3 / "beat.txt"
    assert beat.is_file()                               # the detached child ran while its kernel did ...
    last = beat.read_text()
    time.sleep(2)
    assert beat.read_text() == last, "a setsid child outlived its kernel"     # ... and not one moment longer
    import psutil
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(outside) in " ".join(p.info["cmdline"] or [])]
    assert not (outside / "escaped.txt").exists()

    grade(course, "export")
    s = scores(course)
    full = {k: float(v) for k, v in P3_POINTS.items()}
    assert s[("ref", P3)] == full and s[("vandal", P3)] == full
    for slug in slugs:
        result = json.loads((course / "results" / "ref" / f"{slug}.json").read_text()) if slug in live \
            else recorded[slug]["result"]
        assert sum(c["score"] for c in result["cells"].values()) == 10, (slug, result["cells"])
        assert all(c["replayed"] for c in result["cells"].values()), (slug, result["cells"])
        if slug in live:
            assert sum(s[("ref", slug)].values()) == 10, (slug, s[("ref", slug)])
            if slug in recorded:
                assert records.comparable(result) == recorded[slug]["result"], \
                    f"{slug}: the reference no longer grades as recorded; run `make build` if that is intended"
    assert sum(s[("broadcast", P3)].values()) == 0
    res = json.loads((course / "results" / "broadcast" / f"{P3}.json").read_text())
    assert "the full score matrix" in res["cells"]["p3_basic"]["why"], res["cells"]["p3_basic"]
    # the wrong mapping is right wherever Hq == Hkv (basic, ragged, headdim); the head cells and tile skipping fail
    assert s[("gqa_wrong", P7)]["p7_gqa"] == 0 and s[("gqa_wrong", P7)]["p7_skipping"] == 0, s[("gqa_wrong", P7)]
    assert sum(s[("empty", P7)].values()) == 0
    res = json.loads((course / "results" / "empty" / f"{P7}.json").read_text())
    why = res["cells"]["p7_skipping"]["why"]
    assert "not implemented yet" in why and len(why) < 300, why
    # replaced checks passed in the kernel (8 and 10 of 10) but not in the grader's replay
    for student in ("patcher", "patcher2"):
        assert s[(student, P3)] == {k: 0.0 for k in P3_POINTS}, student
        res = json.loads((course / "results" / student / f"{P3}.json").read_text())
        assert "not confirmed when the grader replayed" in res["cells"]["p3_basic"]["why"]
    assert s[("thief", P3)] == {k: 0.0 for k in P3_POINTS}
    assert "THIEF saw 0 secret files" in _outputs(course, "thief", P3)
    assert "THIEF import failed: ModuleNotFoundError" in _outputs(course, "thief", P3)
    vandal_out = _outputs(course, "vandal", P3)
    assert "VANDAL gradebooks written: 0" in vandal_out and "VANDAL wrote /" not in vandal_out, vandal_out

    # feedback: the leaker is flagged, its output replaced, the other students' feedback is written
    rc, out = _run(course, "feedback")
    assert rc == 0 and "vandal" in out and "printed hidden test code" in out, out
    fb = (course / "feedback" / "vandal" / P3 / f"{P3}.html").read_text()
    assert "output removed by the grader" in fb and "seed=121" not in fb
    assert (course / "feedback" / "ref" / P3 / f"{P3}.html").is_file()
    assert "printed hidden test code" in grade(course, "summary")

    # tampering after grading: a result edited by hand counts 0, a gradebook edit is reported, not used
    res = course / "results" / "thief" / f"{P3}.json"
    data = json.loads(res.read_text())
    for cell in data["cells"].values():
        cell["score"] = cell["max"]
    res.write_text(json.dumps(data))
    import sqlite3
    with sqlite3.connect(course / "gradebook.db") as con:
        con.execute("update grade set manual_score = 0")
    summary = grade(course, "summary")
    assert re.search(r"thief[\s-]+0/10", summary) and "changed after grading" in summary, summary
    ref_row = next(line.split() for line in summary.splitlines() if line.startswith("ref "))
    assert [c for c in ref_row[1:-1] if c != "-"] == ["10/10"] * len(live), summary   # the gradebook edit is not used
    assert "gradebook differs" in summary
    # --force grades again from scratch: the manual scores written into the gradebook are gone
    grade(course, "autograde", "-s", "ref", "-a", P3, "--force")
    with sqlite3.connect(course / "gradebook.db") as con:
        ref_manual = con.execute("select g.manual_score from grade g join submitted_notebook n on g.notebook_id = n.id "
                                 "join submitted_assignment a on n.assignment_id = a.id "
                                 "join assignment t on a.assignment_id = t.id "
                                 "where a.student_id = 'ref' and t.name = ?", (P3,)).fetchall()
    assert ref_manual and all(m == (None,) for m in ref_manual), ref_manual

    # a changed submission is graded again without --force, an unchanged one is not
    changed = solved(course, P3, p3_kernel=[("Q_ptr += b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh",
                                             "Q_ptr += b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh")])
    submit(course, "vandal", P3, changed)
    out = grade(course, "autograde", "-s", "vandal", "-s", "ref", "-a", P3)
    assert "vandal" in out and re.search(r"ref\s+p3", out) is None, out

    # the command line: unknown names and broken courses are errors that say what to do (exit 2)
    rc, out = _run(course, "autograde", "-a", "p3_wrong")
    assert rc == 2 and "unknown assignment(s) p3_wrong" in out and P3 in out
    rc, out = _run(course, "autograde", "-s", "nobody")
    assert rc == 2 and "nobody" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    for cmd in ("summary", "export", "feedback", "autograde"):
        rc, out = _run(empty, cmd)
        assert rc == 2 and "release" in out and "Traceback" not in out, (cmd, out)
    assert list(empty.iterdir()) == []                  # nothing created (no gradebook) in a wrong directory
    before = {p: p.read_bytes() for p in (course / "results").rglob("*.json")}
    (course / "gradebook.db").write_bytes(b"not a database")
    rc, out = _run(course, "autograde", "--force")
    assert rc == 2 and "not a readable nbgrader gradebook" in out and "Traceback" not in out, out
    assert {p: p.read_bytes() for p in (course / "results").rglob("*.json")} == before
    rc, out = _run(course, "summary")
    assert rc == 2 and "not a readable nbgrader gradebook" in out and "Traceback" not in out, out
    assert {p: p.read_bytes() for p in (course / "results").rglob("*.json")} == before


def test_graded_reference_records_are_current():
    sys.path.insert(0, str(REPO))
    from tools import graded_reference_records as records
    stale = records.stale(records.slugs(), records.tier())
    assert not stale, (f"stale graded-reference records: {[str(records.record_path(s).relative_to(REPO)) for s in stale]}"
                       f"; run `make build` (or python tools/graded_reference_records.py) and commit tests/executed/")


def test_graded_reference_key_follows_every_input(tmp_path):
    """One changed byte of the problem's notebooks, the submission maker, the grader, the autograder or the pinned
    versions, or another tier, makes the record stale; another problem's notebook does not."""
    sys.path.insert(0, str(REPO))
    from tools import graded_reference_records as records
    inputs = [f"notebooks/{P3}/{P3}.ipynb", f"release/{P3}/{P3}.ipynb", "tests/submissions.py", "tools/grade.py",
              "tools/grading/sandbox/launcher.py", "tools/grading/replay/replayer.py", "autograder/spec/masks.py",
              "tools/course_format.py", "Makefile"]
    other = f"notebooks/{P2}/{P2}.ipynb"
    for rel in inputs + [other]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("TORCH_VERSION = 1\n")
    base = records.key(P3, "cpu", tmp_path)
    assert records.key(P2, "cpu", tmp_path) != base and records.key(P3, "gpu", tmp_path) != base
    for rel in inputs:
        (tmp_path / rel).write_text("TORCH_VERSION = 2\n")
        assert records.key(P3, "cpu", tmp_path) != base, rel
        (tmp_path / rel).write_text("TORCH_VERSION = 1\n")
    (tmp_path / other).write_text("changed")
    assert records.key(P3, "cpu", tmp_path) == base


# ---------------------------------------------------------------------------------------------
# submission folders: links, odd names, notebooks that never finish; every student gets feedback

@pytest.mark.skipif(not _have(P3), reason="Problem 3 is not built yet")
def test_hostile_names_links_and_feedback(tmp_path):
    course = tmp_path / "course"
    grade(course, "release", "--no-build", "-a", P3)
    submit(course, "-dash", P3, solved(course, P3))                 # a name argparse took for an option
    for student in ("trail ", "*"):                                  # nbgrader strips / globs these names
        submit(course, student, P3, solved(course, P3))
    linker = release(course, P3)
    linker.cells.insert(2, nbformat.v4.new_code_cell("import os\nprint('REF PRESENT', os.path.exists('ref.py'))"))
    submit(course, "linker", P3, linker)
    d = course / "submitted" / "linker" / P3
    (d / "ref.py").symlink_to(Path("../../../..") / "solutions" / f"{P3}.py")   # as a student would write it
    d = course / "submitted" / "nblink" / P3                        # the notebook: a link to the source
    d.mkdir(parents=True)
    (d / f"{P3}.ipynb").symlink_to(course / "source" / P3 / f"{P3}.ipynb")
    keyer = release(course, P3)
    keyer.cells.append(nbformat.v4.new_code_cell(LEAKER))
    submit(course, "keyer", P3, keyer)
    d = course / "submitted" / "keyer" / P3
    (d / "key.txt").symlink_to(Path("../../../.grading-key"))
    (d / "notes.txt").write_text("my own file\n")
    d = course / "submitted" / "badjson" / P3
    d.mkdir(parents=True)
    (d / f"{P3}.ipynb").write_text('{"cells": [')
    exiter = release(course, P3)
    exiter.cells.insert(2, nbformat.v4.new_code_cell("import os\nos._exit(1)"))
    submit(course, "exiter", P3, exiter)

    rc, out = _run(course, "autograde", "--jobs", "2", "--cell-timeout", "120")
    assert rc == 1, out                                              # refused folders: the others are graded
    assert "'trail '" in out and "rename it to 'trail'" in out and "'*'" in out, out
    assert "SAWarning" not in out and "expected one argument" not in out, out
    assert not (course / "jails" / "*").exists() and not (course / "results" / "*").exists()
    hang = release(course, P3)                                       # each cell under the cell limit, not all
    for _ in range(8):
        hang.cells.insert(2, nbformat.v4.new_code_cell("import time\ntime.sleep(4)"))
    submit(course, "hang", P3, hang)
    out = grade(course, "autograde", "-s", "hang", "--cell-timeout", "5", "--timeout", "20", timeout=120)
    assert "20 s limit" in out, out

    grade(course, "export")
    s = scores(course)
    assert s[("-dash", P3)] == {k: float(v) for k, v in P3_POINTS.items()}
    for student in ("linker", "nblink", "keyer", "badjson", "exiter", "hang"):
        assert s[(student, P3)] == {k: 0.0 for k in P3_POINTS}, student
    assert {st for st, _ in s} == {"-dash", "linker", "nblink", "keyer", "badjson", "exiter", "hang"}
    notes = {st: json.loads((course / "results" / st / f"{P3}.json").read_text()) for st, _ in s}
    assert "dropped 'ref.py': a symbolic link (not read)" in notes["linker"]["notes"]
    assert "REF PRESENT False" in _outputs(course, "linker", P3)
    assert notes["nblink"]["reason"] == "no notebook submitted", notes["nblink"]
    assert f"dropped '{P3}.ipynb': a symbolic link (not read)" in notes["nblink"]["notes"]
    assert "dropped 'key.txt': a symbolic link (not read)" in notes["keyer"]["notes"]
    assert "not a notebook" in notes["badjson"]["reason"] and "kernel died" in notes["exiter"]["reason"]

    # feedback: every graded student, the HTML only, never the key or a solution, the zero's reason shown
    rc, out = _run(course, "feedback")
    assert rc == 1 and "'trail '" in out and "Traceback" not in out and "SAWarning" not in out, out
    key = (course / ".grading-key").read_text().strip()
    files = [p for p in (course / "feedback").rglob("*") if not p.is_dir()]
    assert all(p.suffix == ".html" and not p.is_symlink() for p in files), files
    assert sorted(p.parent.parent.name for p in files) == sorted(st for st, _ in s)
    for f in files:
        text = " ".join(html.unescape(re.sub(r"<[^>]+>", "", f.read_text())).split())
        assert key not in text and "BEGIN SOLUTION" not in text, f
        if f.parent.parent.name == "hang":
            assert "the notebook ran longer than the 20 s limit and was stopped" in text
    summary = grade(course, "summary")
    assert "'trail '" in summary and "'*'" in summary and "dropped 'ref.py'" in summary, summary
    assert "printed hidden test code" in summary
    grade(course, "autograde", "-s", "keyer", "--force", "--cell-timeout", "60")
    assert "printed hidden test code" in grade(course, "summary")     # kept until feedback runs again

    # the command line: a limit of 0 or less, a CSV into a missing folder, a corrupt gradebook: exit 2, one line
    for args in (("autograde", "--cell-timeout", "-5"), ("autograde", "--timeout", "0"), ("all", "--jobs", "0"),
                 ("export", "--to", str(tmp_path / "missing" / "grades.csv"))):
        rc, out = _run(course, *args)
        assert rc == 2 and len(out.strip().splitlines()) == 1 and "Traceback" not in out, (args, out)
    before = {p: p.read_bytes() for p in (course / "results").rglob("*.json")}
    (course / "gradebook.db").write_bytes(b"not a database")
    for cmd in ("export", "summary"):
        rc, out = _run(course, cmd)
        assert rc == 2 and "not a readable nbgrader gradebook" in out and len(out.strip().splitlines()) == 1, out
    assert {p: p.read_bytes() for p in (course / "results").rglob("*.json")} == before


# ---------------------------------------------------------------------------------------------
# hostile class, round two (issue: grading integrity, round 2): escapes from an allowlist sandbox,
# the guard turned off or outworked, a cheat that would still score on the cells using its function,
# student text posing as grader output, and a memory bomb

FINDER = r'''
import glob, os, importlib.util
found = []
for top in ("/srv", "/opt", "/home", "/mnt", "/media", "/var", "/usr/local", "/root", "/work", "/"):
    for dirpath, dirnames, filenames in os.walk(top):
        if dirpath.count(os.sep) >= 4:
            dirnames[:] = []
        if "p3_flash_attention_forward.py" in filenames:
            found.append(os.path.join(dirpath, "p3_flash_attention_forward.py"))
print("FINDER found", len(found), "solution files")
if found:
    spec = importlib.util.spec_from_file_location("stolen", found[0])
    stolen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stolen)
    flash_attention_forward = stolen.flash_attention_forward
seen = [p for d in {dirs!r} for p in glob.glob(os.path.join(d, "fa-marker-*"))]
print("FINDER saw", len(seen), "markers")
for d in {dirs!r}:
    try:
        open(os.path.join(d, "fa-marker-student-{token}"), "w").write("left for the next student")
    except OSError:
        pass
'''

KEYLOOP = NOOP_KERNEL + r'''


def flash_attention_forward(q, k, v, is_causal=False, window_size=None, sink_size=None):
    _noop[(1,)](q)
    B, H, N, D = q.shape
    qf, kf, vf = q.float(), k.float(), v.float()
    m = torch.full((B, H, N, 1), -1e30, device=q.device)
    l = torch.zeros((B, H, N, 1), device=q.device)
    acc = torch.zeros((B, H, N, D), device=q.device)
    rows = torch.arange(N, device=q.device)[:, None]
    for j in range(N):           # an online softmax over keys, one at a time: never an N x N tensor
        s = (qf * kf[:, :, j:j + 1, :]).sum(-1, keepdim=True) / D ** 0.5
        if is_causal:
            s = torch.where(rows < j, torch.full_like(s, -1e30), s)
        m_new = torch.maximum(m, s)
        alpha, p = torch.exp(m - m_new), torch.exp(s - m_new)
        l = l * alpha + p
        acc = acc * alpha + p * vf[:, :, j:j + 1, :]
        m = m_new
    return (acc / l).to(q.dtype)
'''

MODES_OFF = NOOP_KERNEL + r'''
from torch.utils._python_dispatch import _disable_current_modes


def flash_attention_forward(q, k, v, is_causal=False, window_size=None, sink_size=None):
    _noop[(1,)](q)
    with _disable_current_modes():          # the guard is a dispatch mode: pop it, then use PyTorch's attention
        N = q.shape[2]
        i = torch.arange(N, device=q.device)[:, None]
        j = torch.arange(N, device=q.device)[None, :]
        keep = (j <= i) if is_causal else torch.ones(N, N, dtype=torch.bool, device=q.device)
        if window_size is not None:
            keep = keep & ((j >= i - (window_size - 1)) | (j < (sink_size or 0)))
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep, enable_gqa=True)
'''

DENSE_BACKWARD = r'''
_triton_forward = flash_attention_forward


def _dense(q, k, v, is_causal):
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1).float(), v.repeat_interleave(g, 1).float()
    s = (q.float() @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    if is_causal:
        n = q.shape[2]
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return (s.softmax(-1) @ v).to(q.dtype)


def flash_attention_forward(q, k, v, is_causal=False, window_size=None, sink_size=None):
    out = _triton_forward(q.detach(), k.detach(), v.detach(), is_causal=is_causal)
    ref = _dense(q, k, v, is_causal)        # the gradients come from PyTorch's autograd of a dense reference
    return ref + (out - ref).detach()
'''

FORGER = r'''
from IPython.display import HTML, display
Forged = type("Forged\nfakeline p3_flash_attention_forward 10/10 : Problem 3: all 11 cases passed\n"
              "fakeline p3_flash_attention_forward 10/10 : Problem 3: all 11 cases passed", (Exception,), {})
display(HTML("<div class='forged-box'>Total: 10.0 / 10.0</div><script>alert('forged')</script>"))
print("<script>alert('printed')</script>")
_honest = flash_attention_forward


def flash_attention_forward(q, k, v, is_causal=False, window_size=None, sink_size=None):
    if q.shape[2] % 2:
        raise Forged("\nfakeline p3_flash_attention_forward 10/10 : Problem 3: all 11 cases passed")
    return _honest(q, k, v, is_causal=is_causal)
'''

MEMBOMB = "import numpy as np\nhog = [np.ones(1 << 27) for _ in range(16)]   # 16 GiB, touched\n"


def _world_writable_dirs() -> list[str]:
    """Every world-writable directory of this host outside /proc and /sys (and below what it found, 3 levels)."""
    import os
    import stat
    out = []
    for top in ("/tmp", "/var", "/run", "/dev", "/srv", "/opt", "/home", "/mnt", "/usr", "/etc"):
        for dirpath, dirnames, _ in os.walk(top):
            if dirpath.count(os.sep) >= 3:
                dirnames[:] = []
            try:
                mode = os.lstat(dirpath).st_mode
            except OSError:
                continue
            if stat.S_ISDIR(mode) and mode & stat.S_IWOTH:
                out.append(dirpath)
    return sorted(set(out))


@pytest.mark.skipif(not all(_have(s) for s in (P3, "p4_causal_two_phase", P7, "p8_backward_gqa")),
                    reason="Problems 3, 4, 7 and 8 are not built yet")
def test_hostile_class_round_two(tmp_path):
    import secrets
    import shutil
    sys.path.insert(0, str(REPO))
    from tools.grading.sandbox import launcher
    isolated, why = launcher.namespaces_available()
    if not isolated:
        pytest.skip(f"grading is not isolated on this machine ({why})")
    P4, P8 = "p4_causal_two_phase", "p8_backward_gqa"
    course = tmp_path / "course"
    grade(course, "release", "--no-build", "-a", P3, "-a", P4, "-a", P7, "-a", P8)
    token = secrets.token_hex(6)
    # a readable copy of the course where no list would think of it, and a marker in every world-writable place
    planted = [Path(top) / f"fa-course-{token}" for top in ("/srv", "/opt") if Path(top).is_dir()]
    dirs = _world_writable_dirs()
    markers = [Path(d) / f"fa-marker-host-{token}" for d in dirs]
    try:
        for p in planted:
            shutil.copytree(REPO / "solutions", p / "solutions")
        for m in markers:
            try:
                m.write_text("host")
            except OSError:
                pass
        nb = release(course, P3)
        nb.cells.insert(index_of(nb, "p3_kernel") + 3,
                        nbformat.v4.new_code_cell(FINDER.format(dirs=dirs + ["/run/lock", "/var/lock"], token=token)))
        submit(course, "finder", P3, nb)
        submit(course, "finder2", P3, nb)        # the second one must not see what the first one left
        for student, slug, after, offset, source in (("keyloop", P4, "p4_kernel", 3, KEYLOOP),
                                                      ("modesoff", P7, "p7_kernel", 3, MODES_OFF),
                                                      ("densebwd", P8, "p8_basic", 0, DENSE_BACKWARD),
                                                      ("forger", P3, "p3_kernel", 3, FORGER),
                                                      ("membomb", P3, "p3_kernel", 1, MEMBOMB)):
            nb = solved(course, slug)      # the reference, with a cell of the student's own after `after`
            nb.cells.insert(index_of(nb, after) + offset, nbformat.v4.new_code_cell(source))
            submit(course, student, slug, nb)

        rc, out = _run(course, "autograde", "--jobs", "2", "--cell-timeout", "240", "--memory-limit", "2G")
        assert rc == 0, out
        assert not re.search(r"^\s*fakeline", out, re.M), out          # student text never makes a console line
        leftover = [str(p) for d in dirs + ["/run/lock", "/var/lock"]
                    for p in Path(d).glob(f"fa-marker-student-{token}")] if dirs else []
        assert not leftover, f"a kernel wrote to the host: {leftover}"
    finally:
        for p in planted:
            shutil.rmtree(p, ignore_errors=True)
        for m in markers:
            m.unlink(missing_ok=True)
        for d in dirs + ["/run/lock", "/var/lock"]:
            for p in Path(d).glob(f"fa-marker-student-{token}"):
                p.unlink(missing_ok=True)

    grade(course, "export")
    s = scores(course)
    for student, slug in (("finder", P3), ("finder2", P3), ("keyloop", P4), ("modesoff", P7), ("densebwd", P8),
                          ("membomb", P3)):
        assert sum(s[(student, slug)].values()) == 0, (student, s[(student, slug)])
    for student in ("finder", "finder2"):
        text = _outputs(course, student, P3)
        assert "FINDER found 0 solution files" in text and "FINDER saw 0 markers" in text, text
    res = {st: json.loads((course / "results" / st / f"{sl}.json").read_text())
           for st, sl in (("keyloop", P4), ("modesoff", P7), ("densebwd", P8), ("membomb", P3), ("forger", P3),
                          ("finder", P3))}
    assert "cheating detected" in res["keyloop"]["cells"]["p4_basic"]["why"], res["keyloop"]["cells"]
    assert "cheating detected" in res["modesoff"]["cells"]["p7_basic"]["why"], res["modesoff"]["cells"]
    # the dense backward is refused by the gradient checks; the contract and training cells are voided with it
    for gid in ("p8_autograd", "p8_training"):
        assert res["densebwd"]["cells"][gid]["why"].startswith("voided: flash_attention_forward"), res["densebwd"]
    assert "memory limit exceeded" in res["membomb"]["reason"], res["membomb"]
    # the forger passes the even-N cases only; its forged lines never become lines of the summary
    assert 0 < sum(s[("forger", P3)].values()) < 10, s[("forger", P3)]
    summary = grade(course, "summary")
    assert not re.search(r"^\s*fakeline", summary, re.M), summary
    assert "flagged for review" in summary
    flagged = {f["what"].split(" (")[0] for f in res["finder"]["flags"]}
    assert {"importlib", "a path outside the submission folder"} <= flagged, flagged
    assert any("private PyTorch API" in f["what"] for f in res["modesoff"]["flags"]), res["modesoff"]["flags"]
    with open(course / "grades.csv") as f:
        rows = {(r["student_id"], r["assignment"]): r for r in csv.DictReader(f)}
    assert "importlib" in rows[("finder", P3)]["flagged_for_review"]
    assert (course / "grades.csv").read_text().count("\n") == len(rows) + 1    # one line each, whatever the text

    rc, out = _run(course, "feedback")
    assert rc == 0, out
    fb = (course / "feedback" / "forger" / P3 / f"{P3}.html").read_text()
    assert "<div class='forged-box'>" not in fb and "<script>alert(" not in fb
    assert "voided" in html.unescape((course / "feedback" / "densebwd" / P8 / f"{P8}.html").read_text())
