"""The grader's parts without a kernel or nbgrader run: rebuilding a submission on the source notebook,
signed results, the submission checksum, hidden-test regions, slug discovery. Synthetic notebooks,
built here with nbformat; tests/test_grading.py runs the whole grader end to end."""
from __future__ import annotations

import copy
import json
import stat
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tools import course_format  # noqa: E402
from tools.grading.cells import grade_id, hidden_lines, split_hidden, strip_hidden  # noqa: E402
from tools.grading.rebuild import rebuild  # noqa: E402
from tools.grading.results import load_result, results_path, save_result, submission_digest  # noqa: E402

B, E = course_format.BEGIN_HIDDEN, course_format.END_HIDDEN

# (kind, grade id, source text, release text); release None: the same text as the source
CELLS = [
    ("md", "p9_md_intro", "# Problem 9\nWrite `add_one` and `double`.", None),
    ("code", "p9_code_given", "import math\nSCALE = 2\nOFFSET = 1", None),
    ("solution", "p9_add_one",
     'def add_one(x):\n    """x plus one."""\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION',
     'def add_one(x):\n    """x plus one."""\n    # YOUR CODE HERE\n    raise NotImplementedError()'),
    ("grade", "p9_add_one_test",
     f"assert add_one(1) == 2\nassert add_one(2) == 3\n{B}\nassert add_one(-7) == -6\n{E}",
     "assert add_one(1) == 2\nassert add_one(2) == 3"),
    ("md", "p9_md_double", "## Double\nMultiply by `SCALE`.", None),
    ("solution", "p9_double",
     'def double(x):\n    """x times SCALE."""\n    ### BEGIN SOLUTION\n    return SCALE * x\n    ### END SOLUTION',
     'def double(x):\n    """x times SCALE."""\n    # YOUR CODE HERE\n    raise NotImplementedError()'),
    ("grade", "p9_double_test",
     f"assert double(3) == 6\nassert double(0) == 0\n{B}\nassert double(-4) == -8\n{E}",
     "assert double(3) == 6\nassert double(0) == 0"),
]
ANSWERS = {"p9_add_one": 'def add_one(x):\n    """x plus one."""\n    return x + 1',
           "p9_double": 'def double(x):\n    """x times SCALE."""\n    return x * SCALE'}
SOURCE_IDS = [c[1] for c in CELLS]


def _cell(kind, gid, text):
    meta = {"nbgrader": {"grade_id": gid, "locked": kind != "solution", "schema_version": 3,
                         "solution": kind == "solution", "grade": kind == "grade"}}
    if kind == "grade":
        meta["nbgrader"]["points"] = 2
    cell = (nbformat.v4.new_markdown_cell if kind == "md" else nbformat.v4.new_code_cell)(text, metadata=meta)
    cell.id = gid.replace("_", "-")       # as tools/build_course.py names them
    return cell


def notebooks():
    """(source, release) of the synthetic problem."""
    source = nbformat.v4.new_notebook(cells=[_cell(k, g, s) for k, g, s, _ in CELLS])
    release = nbformat.v4.new_notebook(cells=[_cell(k, g, s if r is None else r) for k, g, s, r in CELLS])
    return source, release


def submitted():
    """The release as a student hands it in: solutions written, outputs and execution counts present."""
    _, release = notebooks()
    sub = copy.deepcopy(release)
    for c in sub.cells:
        if grade_id(c) in ANSWERS:
            c.source = ANSWERS[grade_id(c)]
        if c.cell_type == "code":
            c.execution_count = 3
            c.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
    return sub


def strip_metadata(nb, ids=True):
    """What Colab leaves of a notebook: no nbgrader metadata (and, with ids=True, no cell ids)."""
    for c in nb.cells:
        c.metadata = {}
        if ids:
            c.pop("id", None)
    return nb


def by_id(nb):
    return {grade_id(c): c for c in nb.cells if grade_id(c)}


def run_cells(nb) -> dict:
    """Execute the rebuilt notebook's code cells in order, like Restart & Run All; {grade id: error or None}."""
    ns, out = {}, {}
    for c in nb.cells:
        if c.cell_type == "code":
            try:
                exec(c.source, ns)
                out[grade_id(c)] = None
            except Exception as exc:  # noqa: BLE001 - the failure is the result
                out[grade_id(c)] = exc
    return out


def rebuilt(sub, **kw):
    source, release = notebooks()
    return rebuild(sub, source, release, **kw)


# ---------------------------------------------------------------------------------------------
# rebuild: identifying the submitted cells


def test_intact_submission_is_the_source_with_the_students_solutions():
    nb, notes = rebuilt(submitted())
    assert [grade_id(c) for c in nb.cells] == SOURCE_IDS
    cells = by_id(nb)
    assert cells["p9_add_one"].source == ANSWERS["p9_add_one"]
    assert B in cells["p9_add_one_test"].source          # hidden tests come back from the source
    assert all(c.execution_count is None and c.outputs == [] for c in nb.cells if c.cell_type == "code")
    assert notes == []
    assert set(run_cells(nb).values()) == {None}


def test_cell_ids_identify_cells_whose_nbgrader_metadata_is_gone():
    nb, notes = rebuilt(strip_metadata(submitted(), ids=False))
    assert [grade_id(c) for c in nb.cells] == SOURCE_IDS
    assert by_id(nb)["p9_double"].source == ANSWERS["p9_double"]
    assert "p9_double: recognised by cell id" in notes


def test_colab_stripped_notebook_matched_by_text_and_fuzzy_containment():
    sub = strip_metadata(submitted())
    nb, notes = rebuilt(sub)
    assert [grade_id(c) for c in nb.cells] == SOURCE_IDS
    assert by_id(nb)["p9_add_one"].source == ANSWERS["p9_add_one"]
    assert by_id(nb)["p9_double"].source == ANSWERS["p9_double"]
    assert "p9_add_one_test: recognised by text" in notes
    assert "p9_code_given: recognised by text" in notes
    assert "p9_add_one: recognised by similar text (100% of its lines)" in notes
    assert set(run_cells(nb).values()) == {None}


def test_a_rewritten_solution_without_metadata_is_found_by_position():
    sub = strip_metadata(submitted())
    sub.cells[5].source = "double = lambda x: x * SCALE"    # none of the release's lines left
    nb, notes = rebuilt(sub)
    assert by_id(nb)["p9_double"].source == "double = lambda x: x * SCALE"
    assert "p9_double: recognised by position" in notes
    assert [grade_id(c) for c in nb.cells] == SOURCE_IDS


def test_fuzzy_match_needs_most_of_the_release_lines():
    sub = strip_metadata(submitted())
    sub.cells[2].source = "add_one = lambda x: x + 1"
    # half of the release's fixed lines, below MATCH_THRESHOLD: an added cell, not the solution
    half = 'def add_one(x):\n    return 0'
    sub.cells.insert(4, nbformat.v4.new_code_cell(half))
    nb, notes = rebuilt(sub)
    assert by_id(nb)["p9_add_one"].source == "add_one = lambda x: x + 1"
    assert "p9_add_one: recognised by position" in notes
    sources = [c.source for c in nb.cells]
    assert sources.index(half) == sources.index(by_id(nb)["p9_add_one_test"].source) + 1


# ---------------------------------------------------------------------------------------------
# rebuild: what comes from the source, what from the submission


def test_edited_locked_and_test_cells_are_restored_from_the_source():
    sub = submitted()
    sub.cells[1].source = "import math\nSCALE = 3\nOFFSET = 1"
    sub.cells[3].source = "pass  # no test"
    nb, notes = rebuilt(sub)
    source, _ = notebooks()
    assert by_id(nb)["p9_code_given"].source == by_id(source)["p9_code_given"].source
    assert by_id(nb)["p9_add_one_test"].source == by_id(source)["p9_add_one_test"].source
    assert "p9_code_given: edited locked cell restored" in notes
    assert "p9_add_one_test: edited test cell restored" in notes


def test_deleted_test_cell_becomes_a_failing_placeholder():
    sub = submitted()
    del sub.cells[6]                                       # p9_double_test
    nb, notes = rebuilt(sub)
    assert [grade_id(c) for c in nb.cells] == SOURCE_IDS   # the graded cell keeps its id and points
    errors = run_cells(nb)
    assert isinstance(errors["p9_double_test"], AssertionError)
    assert "deleted" in str(errors["p9_double_test"]) and errors["p9_add_one_test"] is None
    assert "p9_double_test: test cell deleted from the submission: 0 points" in notes


def test_deleted_test_cell_restored_when_asked():
    sub = submitted()
    del sub.cells[6]
    nb, notes = rebuilt(sub, restore_deleted=True)
    source, _ = notebooks()
    assert by_id(nb)["p9_double_test"].source == by_id(source)["p9_double_test"].source
    assert "p9_double_test: deleted test cell restored" in notes
    assert run_cells(nb)["p9_double_test"] is None


def test_duplicated_solution_keeps_every_copy_in_order():
    sub = submitted()
    second = copy.deepcopy(sub.cells[2])
    second.source = 'def add_one(x):\n    """x plus one."""\n    return x + 100'
    sub.cells.insert(3, second)
    nb, _ = rebuilt(sub)
    sources = [c.source for c in nb.cells]
    first = sources.index(ANSWERS["p9_add_one"])
    assert sources[first + 1] == second.source            # the later copy runs last, as in the kernel
    assert grade_id(nb.cells[first + 2]) == "p9_add_one_test"
    assert isinstance(run_cells(nb)["p9_add_one_test"], AssertionError)


def test_duplicated_locked_cell_is_dropped():
    sub = submitted()
    sub.cells.insert(4, copy.deepcopy(sub.cells[3]))      # a second copy of the test cell
    nb, notes = rebuilt(sub)
    assert [grade_id(c) for c in nb.cells] == SOURCE_IDS
    assert "dropped a copy of p9_add_one_test" in notes


def test_cells_the_student_added_stay_after_the_cell_they_followed():
    sub = submitted()
    sub.cells.insert(3, nbformat.v4.new_code_cell("print(add_one(41))"))
    sub.cells.insert(4, nbformat.v4.new_markdown_cell("my notes"))
    sub.cells.insert(0, nbformat.v4.new_markdown_cell("my name"))
    nb, notes = rebuilt(sub)
    order = [grade_id(c) or c.source for c in nb.cells]
    assert order == ["my name", "p9_md_intro", "p9_code_given", "p9_add_one", "print(add_one(41))", "my notes",
                     "p9_add_one_test", "p9_md_double", "p9_double", "p9_double_test"]
    extra = nb.cells[4]
    assert extra.metadata == {} and extra.outputs == []   # an added cell is neither graded nor locked
    assert "3 cell(s) added by the student kept" in notes


def test_missing_solution_cell_is_noted_and_its_test_fails():
    sub = submitted()
    del sub.cells[5]                                       # p9_double, the solution
    sub.cells[4].source = "## Double"                     # and nothing of it left around
    nb, notes = rebuilt(sub)
    assert "p9_double" not in by_id(nb)
    assert "p9_double: solution cell not found in the submission" in notes
    assert isinstance(run_cells(nb)["p9_double_test"], NameError)


# ---------------------------------------------------------------------------------------------
# hidden-test regions


def test_split_hidden_drops_markers_and_separates_the_hidden_lines():
    source = f"visible = 1\n{B}\nsecret = 2\n\n{E}\nafter = 3\n"
    shown, hidden = split_hidden(source)
    assert shown == ["visible = 1", "after = 3", ""]
    assert hidden == ["secret = 2", ""]
    assert strip_hidden(source) == "visible = 1\nafter = 3"
    assert hidden_lines(source) == ["secret = 2"]


def test_hidden_region_recognised_as_nbgrader_does_whatever_the_comment_prefix():
    # nbgrader hides any line containing the words: the feedback must strip what nbgrader hides
    source = "a = 1\n  # BEGIN HIDDEN TESTS\nb = 2\n## END HIDDEN TESTS\nc = 3"
    assert strip_hidden(source) == "a = 1\nc = 3"
    assert hidden_lines(source) == ["b = 2"]


def test_several_hidden_regions_and_none():
    source = f"a\n{B}\nh1\n{E}\nb\n{B}\nh2\n{E}"
    assert split_hidden(source) == (["a", "b"], ["h1", "h2"])
    assert split_hidden("only = 'visible'") == (["only = 'visible'"], [])


# ---------------------------------------------------------------------------------------------
# signed results and the submission checksum


def _result(student="ada", slug="p9_demo"):
    return {"student": student, "assignment": slug, "status": "graded", "reason": "", "notes": [],
            "cells": {"p9_add_one_test": {"score": 2.0, "max": 2.0, "why": ""},
                      "p9_double_test": {"score": 0.0, "max": 2.0, "why": "AssertionError: "}}}


def test_saved_result_loads_back_unchanged(tmp_path):
    save_result(tmp_path, _result())
    got = load_result(tmp_path, "ada", "p9_demo")
    assert got["status"] == "graded"
    assert got["cells"] == _result()["cells"]
    key = tmp_path / ".grading-key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600       # the key is the grader's alone
    assert load_result(tmp_path, "ada", "p1_other") is None


def test_edited_result_is_tampered_and_scores_nothing(tmp_path):
    save_result(tmp_path, _result())
    path = results_path(tmp_path, "ada", "p9_demo")
    data = json.loads(path.read_text())
    data["cells"]["p9_double_test"]["score"] = 2.0
    path.write_text(json.dumps(data))
    got = load_result(tmp_path, "ada", "p9_demo")
    assert got["status"] == "tampered" and "signature mismatch" in got["reason"]
    assert {c["score"] for c in got["cells"].values()} == {0.0}


def test_result_signed_with_another_courses_key_is_tampered(tmp_path):
    other = tmp_path / "other"
    save_result(other, _result())
    mine = tmp_path / "mine"
    save_result(mine, _result(slug="p9_first"))              # creates this course's key
    results_path(mine, "ada", "p9_demo").write_text(results_path(other, "ada", "p9_demo").read_text())
    assert load_result(mine, "ada", "p9_demo")["status"] == "tampered"


def test_unreadable_result_is_tampered(tmp_path):
    save_result(tmp_path, _result())
    results_path(tmp_path, "ada", "p9_demo").write_text("{not json")
    got = load_result(tmp_path, "ada", "p9_demo")
    assert got["status"] == "tampered" and got["cells"] == {}


def _submit(course, files):
    d = course / "submitted" / "ada" / "p9_demo"
    d.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data)
    return d


def test_submission_checksum_follows_names_and_bytes(tmp_path):
    files = {"p9_demo.ipynb": b"{}", "data/input.txt": b"1 2 3"}
    digest = submission_digest(_submit(tmp_path / "a", files).parents[2], "ada", "p9_demo")
    same = submission_digest(_submit(tmp_path / "b", files).parents[2], "ada", "p9_demo")
    assert digest == same
    changed = submission_digest(_submit(tmp_path / "c", {**files, "data/input.txt": b"1 2 4"}).parents[2],
                                "ada", "p9_demo")
    renamed = submission_digest(_submit(tmp_path / "d", {"p9_demo.ipynb": b"{}", "data/inputs.txt": b"1 2 3"})
                                .parents[2], "ada", "p9_demo")
    added = submission_digest(_submit(tmp_path / "e", {**files, "extra.py": b""}).parents[2], "ada", "p9_demo")
    assert len({digest, changed, renamed, added}) == 4


# ---------------------------------------------------------------------------------------------
# slug discovery


def test_find_slugs_takes_folders_holding_their_own_file(tmp_path):
    for name, files in {"p1_a": ["p1_a.py"], "p2_b": ["p2_b.ipynb"], "p3_c": ["other.py"], "p4_d": []}.items():
        (tmp_path / name).mkdir()
        for f in files:
            (tmp_path / name / f).write_text("")
    (tmp_path / "p5_e.py").write_text("")                   # a file, not a folder
    assert course_format.find_slugs(tmp_path, ".py") == ["p1_a"]
    assert course_format.find_slugs(tmp_path, ".ipynb") == ["p2_b"]
    assert course_format.find_slugs(tmp_path / "missing", ".py") == []


@pytest.mark.parametrize("marker", [course_format.BEGIN_HIDDEN, course_format.END_HIDDEN,
                                    course_format.BEGIN_SOLUTION, course_format.END_SOLUTION])
def test_markers_are_what_the_built_notebooks_use(marker):
    built = [p for p in (REPO / "notebooks").glob("*/*.py")]
    assert any(marker in p.read_text(encoding="utf-8") for p in built), marker


# ---------------------------------------------------------------------------------------------
# hostile submission folders: links, special files, odd names; the command line's limits

from tools.grading.course import UsageError, name_problem, refused, submissions  # noqa: E402
from tools.grading.rebuild import copy_submission, find_submitted_notebook, read_submission  # noqa: E402
from tools.grading.results import keep_feedback_notes  # noqa: E402


def _hostile_folder(tmp_path):
    """A submission holding links to a secret file and folder, a fifo, a nested file and a notebook link."""
    import os
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "answers.py").write_text("SECRET = 42\n")
    d = _submit(tmp_path / "course", {"p9_demo.ipynb": b"{}", "data/input.txt": b"1 2 3"})
    (d / "ref.py").symlink_to(secret / "answers.py")
    (d / "data" / "deep.py").symlink_to(secret / "answers.py")
    (d / "stolen").symlink_to(secret)
    os.mkfifo(d / "pipe")
    return d, secret


def test_copy_submission_drops_links_and_special_files(tmp_path):
    d, _ = _hostile_folder(tmp_path)
    out = tmp_path / "rebuilt"
    notes = copy_submission(d, out)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["data", "data/input.txt"]
    assert (out / "data" / "input.txt").read_bytes() == b"1 2 3"
    assert not any(p.is_symlink() for p in out.rglob("*"))
    text = "\n".join(notes)
    for name in ("'ref.py'", "'data/deep.py'", "'stolen'"):
        assert f"dropped {name}: a symbolic link" in text, notes
    assert "dropped 'pipe': not a regular file" in text


def test_a_linked_notebook_is_not_read(tmp_path):
    d, secret = _hostile_folder(tmp_path)
    source = secret / "source.ipynb"
    nbformat.write(notebooks()[0], str(source))
    (d / "p9_demo.ipynb").unlink()
    (d / "p9_demo.ipynb").symlink_to(source)
    course = d.parents[2]
    assert find_submitted_notebook(course, "ada", "p9_demo") == (None, "no notebook submitted")
    assert read_submission(d / "p9_demo.ipynb") is None          # even when asked directly
    (d / "mine.ipynb").write_text(nbformat.writes(submitted()))
    path, note = find_submitted_notebook(course, "ada", "p9_demo")
    assert path == d / "mine.ipynb" and read_submission(path) is not None


def test_submission_checksum_does_not_follow_links(tmp_path):
    d, secret = _hostile_folder(tmp_path)
    course = d.parents[2]
    before = submission_digest(course, "ada", "p9_demo")
    (secret / "answers.py").write_text("SECRET = 43\n")            # what a link points at changes: no regrade
    (secret / "more.py").write_text("")
    assert submission_digest(course, "ada", "p9_demo") == before
    (d / "ref.py").unlink()
    (d / "ref.py").symlink_to(secret / "more.py")                   # the link itself changes: graded again
    assert submission_digest(course, "ada", "p9_demo") != before


@pytest.mark.parametrize("name, ok", [("ada", True), ("-dash", True), ("Ada Lovelace", True), ("élodie", True),
                                      ("trail ", False), (" lead", False), ("*", False), ("a?b", False),
                                      ("[x]", False), (".hidden", False), ("tab\there", False)])
def test_student_names_nbgrader_cannot_take_are_refused_with_a_rename_hint(name, ok):
    why = name_problem(name)
    assert (why is None) == ok, why
    if not ok:
        assert "rename" in why


def test_odd_names_and_linked_folders_are_refused_not_graded(tmp_path):
    course = tmp_path / "course"
    (course / "source" / "p9_demo").mkdir(parents=True)
    nbformat.write(notebooks()[0], str(course / "source" / "p9_demo" / "p9_demo.ipynb"))
    for student in ("ada", "-dash", "trail ", "*"):
        d = course / "submitted" / student / "p9_demo"
        d.mkdir(parents=True)
        (d / "p9_demo.ipynb").write_text("{}")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "p9_demo").mkdir(parents=True)
    (course / "submitted" / "linked").symlink_to(elsewhere)                       # a student folder that is a link
    (course / "submitted" / "bob").mkdir()
    (course / "submitted" / "bob" / "p9_demo").symlink_to(elsewhere / "p9_demo")  # an assignment folder that is one
    assert submissions(course, None, None) == [("-dash", "p9_demo"), ("ada", "p9_demo")]
    lines = refused(course)
    assert len(lines) == 4, lines
    assert any("'*'" in ln and "rename" in ln for ln in lines)
    assert any("'trail '" in ln and "rename it to 'trail'" in ln for ln in lines)
    assert any("'linked'" in ln and "symbolic link" in ln for ln in lines)
    assert any("'bob'/'p9_demo'" in ln and "symbolic link" in ln for ln in lines)
    assert refused(course, students=["ada"]) == []
    with pytest.raises(UsageError):
        submissions(course, None, ["nobody"])


def test_grading_again_keeps_the_notes_feedback_added(tmp_path):
    old = dict(_result(), submission_sha256="abc", notes=["printed hidden test code (p9_x): removed from the feedback",
                                                          "p9_add_one: recognised by text"])
    new = dict(_result(), submission_sha256="abc", notes=[])
    keep_feedback_notes(old, new)
    assert new["notes"] == ["printed hidden test code (p9_x): removed from the feedback"]
    changed = dict(_result(), submission_sha256="def", notes=[])
    keep_feedback_notes(old, changed)                              # a new submission earns its own flags
    assert changed["notes"] == []


def test_feedback_folder_keeps_only_the_html(tmp_path):
    from tools.grading.feedback import _keep_only_html
    d, secret = _hostile_folder(tmp_path)
    (d / "p9_demo.html").write_text("<html></html>")
    (d / "key.txt").symlink_to(secret / "answers.py")
    _keep_only_html(d)
    assert [p.name for p in d.iterdir()] == ["p9_demo.html"]
    assert (secret / "answers.py").is_file()                      # a link is removed, never what it points at


def _cli(tmp_path, capsys, *argv):
    from tools.grading.cli import main
    rc = main([argv[0], "--course", str(tmp_path), *argv[1:]])
    err = capsys.readouterr().err
    return rc, err


@pytest.mark.parametrize("argv", [("autograde", "--cell-timeout", "-5"), ("autograde", "--timeout", "0"),
                                  ("all", "--jobs", "0"), ("export", "--to", "no/such/dir/grades.csv")])
def test_command_line_limits_and_paths_are_checked_before_any_work(tmp_path, capsys, argv):
    rc, err = _cli(tmp_path, capsys, *argv)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["export", "summary"])
def test_export_and_summary_refuse_a_corrupt_gradebook(tmp_path, capsys, command):
    (tmp_path / "source").mkdir()
    (tmp_path / "gradebook.db").write_bytes(b"not a database")
    rc, err = _cli(tmp_path, capsys, command)
    assert rc == 2 and "not a readable nbgrader gradebook" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "grades.csv").exists()
