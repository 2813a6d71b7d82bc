"""Grade the course: release, autograde every submission, feedback, grades CSV, summary table.

nbgrader does the bookkeeping (gradebook, autograded/ and feedback/ folders, CSV export); this tool
wraps it so that hostile or broken submissions cost their author points and nothing else:

* every (student, problem) runs in its own subprocess and its own kernel, with a per-cell timeout
  (the cell is interrupted and scores 0) and a wall-clock limit for the whole notebook (the
  subprocess and its kernel are killed; every graded cell of that problem scores 0);
* before nbgrader sees a submission it is *rebuilt* from the instructor's source notebook (see
  `rebuild`): every locked cell (instructions, given code, tests with their hidden part) comes from
  the source, only the student's solution cells and extra cells come from the submission. Cell
  metadata lost by Colab, duplicated, reordered, edited or deleted cells are handled there;
* feedback shows the visible test code, the printed check rows and the first error message of a
  failed graded cell, never the hidden test code (it is stripped and tracebacks are cut to the
  message; `feedback` then verifies the HTML).

Commands (run from the repository root; `--course` defaults to ./course, which git ignores):

    python tools/grade.py release                 rebuild release/ (tools/build_course.py), set up the course
    python tools/grade.py autograde [--force]     grade every course/submitted/<student>/<problem>/
    python tools/grade.py feedback                course/feedback/<student>/<problem>/<problem>.html
    python tools/grade.py export                  course/grades.csv (nbgrader) + course/grades_cells.csv
    python tools/grade.py summary                 student x problem table, failures named
    python tools/grade.py all                     release (if needed), autograde, feedback, export, summary

See docs/instructor.md.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import replay as replay_tool  # noqa: E402 - tools/replay.py, the graded cells again on the recorded calls
import sandbox as sandbox_tool  # noqa: E402 - tools/sandbox.py, the kernel launcher
DEFAULT_COURSE = REPO / "course"
DEFAULT_CELL_TIMEOUT = 300       # s: one graded cell; the CPU tier's slowest check cell takes ~15 s
DEFAULT_TIMEOUT = 1200           # s: one whole notebook, kernel start included

BEGIN_HIDDEN, END_HIDDEN = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"
STUB_LINES = {"# YOUR CODE HERE", "raise NotImplementedError()", "raise NotImplementedError"}
MATCH_THRESHOLD = 0.6            # share of a release cell's lines a submitted cell must contain to be that cell

log = logging.getLogger("grade")


# ---------------------------------------------------------------------------------------------
# nbgrader configuration


def nbgrader_config(course: Path, cell_timeout: int = DEFAULT_CELL_TIMEOUT, submitted: str = "submitted"):
    """The repo's nbgrader_config.py pointed at `course`, with the gradebook inside it."""
    from traitlets.config import Config, PyFileConfigLoader

    cfg = Config()
    cfg.merge(PyFileConfigLoader("nbgrader_config.py", path=str(REPO)).load_config())
    cfg.CourseDirectory.root = str(course)
    cfg.CourseDirectory.source_directory = "source"
    cfg.CourseDirectory.release_directory = "release"
    cfg.CourseDirectory.submitted_directory = submitted
    cfg.CourseDirectory.db_url = f"sqlite:///{course / 'gradebook.db'}"
    cfg.NbGrader.logfile = ""
    cfg.Execute.timeout = int(cell_timeout)
    cfg.Execute.interrupt_on_timeout = True
    cfg.Execute.error_on_timeout = {
        "ename": "CellTimeoutError",
        "evalue": f"this cell ran longer than {int(cell_timeout)} s and was interrupted",
        "traceback": [f"CellTimeoutError: this cell ran longer than {int(cell_timeout)} s and was interrupted"],
    }
    return cfg


def _quiet_traitlets():
    for name in ("traitlets", "nbgrader", "GenerateAssignment", "Autograde", "GenerateFeedback"):
        logging.getLogger(name).setLevel(logging.WARNING)


def read_nb(path: Path):
    import nbformat
    return nbformat.read(str(path), as_version=4)


def is_grade(cell) -> bool:
    return bool(cell.metadata.get("nbgrader", {}).get("grade"))


def is_solution(cell) -> bool:
    return bool(cell.metadata.get("nbgrader", {}).get("solution"))


def grade_id(cell):
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def split_hidden(source: str) -> tuple[list[str], list[str]]:
    """(lines outside, lines inside) the hidden-test regions of a cell; marker lines dropped."""
    shown, hidden, inside = [], [], False
    for line in source.split("\n"):
        if BEGIN_HIDDEN in line:
            inside = True
        elif END_HIDDEN in line:
            inside = False
        else:
            (hidden if inside else shown).append(line)
    return shown, hidden


def strip_hidden(source: str) -> str:
    return "\n".join(split_hidden(source)[0]).rstrip("\n")


def hidden_lines(source: str) -> list[str]:
    return [line.strip() for line in split_hidden(source)[1] if line.strip()]


# ---------------------------------------------------------------------------------------------
# release: build the repo, then register the assignments in the course's gradebook


def find_assignments(course: Path) -> list[str]:
    src = course / "source"
    return sorted(d.name for d in src.iterdir() if (d / f"{d.name}.ipynb").is_file()) if src.is_dir() else []


def cmd_release(args) -> int:
    course = args.course
    if not args.no_build:
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        rc = subprocess.call([sys.executable, str(REPO / "tools" / "build_course.py")], cwd=REPO, env=env)
        if rc:
            print(f"grade: tools/build_course.py failed (exit {rc})", file=sys.stderr)
            return rc
    slugs = sorted(d.name for d in (REPO / "notebooks").iterdir() if (d / f"{d.name}.ipynb").is_file())
    if args.assignment:
        slugs = [s for s in slugs if s in args.assignment]
    if not slugs:
        print("grade: no built notebooks under notebooks/<slug>/<slug>.ipynb", file=sys.stderr)
        return 2
    course.mkdir(parents=True, exist_ok=True)
    from nbgrader.converters import GenerateAssignment
    from nbgrader.coursedir import CourseDirectory

    _quiet_traitlets()
    cfg = nbgrader_config(course)
    cfg.GenerateAssignment.force = True
    for slug in slugs:
        dst = course / "source" / slug
        if dst.exists():
            shutil.rmtree(dst)
        # the .py source holds the solutions in plain text: the course needs only the .ipynb
        shutil.copytree(REPO / "notebooks" / slug, dst,
                        ignore=shutil.ignore_patterns("*.py", "__pycache__", ".ipynb_checkpoints"))
        coursedir = CourseDirectory(config=cfg)
        coursedir.assignment_id = slug
        GenerateAssignment(coursedir=coursedir, config=cfg).start()
        # the students got the repo's release/: it must hold the same cells as the course's
        ours, theirs = course / "release" / slug / f"{slug}.ipynb", REPO / "release" / slug / f"{slug}.ipynb"
        if theirs.is_file():
            a = [(c.cell_type, c.source) for c in read_nb(ours).cells]
            b = [(c.cell_type, c.source) for c in read_nb(theirs).cells]
            if a != b:
                print(f"grade: warning: release/{slug} differs from the course's release: rebuild "
                      f"(python tools/build_course.py) before handing it out", file=sys.stderr)
        print(f"released {slug} into {course} (gradebook {course / 'gradebook.db'})")
    return 0


# ---------------------------------------------------------------------------------------------
# rebuilding a submission on the source notebook


def _lines(source: str) -> list[str]:
    return [ln.strip() for ln in source.split("\n") if ln.strip()]


def _skeleton(cell) -> list[str]:
    """The lines of a release cell a student is not meant to change."""
    return [ln for ln in _lines(cell.source) if ln not in STUB_LINES]


def _norm(source: str) -> str:
    return "\n".join(ln.rstrip() for ln in source.strip("\n").split("\n"))


def _containment(skeleton: list[str], candidate: str) -> float:
    """Share of `skeleton`'s lines found in `candidate` (multiset), 0 when the skeleton is too short."""
    if len(skeleton) < 2:
        return 0.0
    pool = {}
    for ln in _lines(candidate):
        pool[ln] = pool.get(ln, 0) + 1
    hit = 0
    for ln in skeleton:
        if pool.get(ln, 0):
            pool[ln] -= 1
            hit += 1
    return hit / len(skeleton)


def rebuild(submission, source, release, restore_deleted: bool = False):
    """The notebook to grade: the source notebook with the student's solution cells in it.

    Returns (notebook, notes). Rules, in the order they are applied:

    1. Identify each submitted cell with a source cell, strongest evidence first: nbgrader
       metadata grade_id; the nbformat cell id (Jupyter keeps it, it is the grade id with '-');
       the exact text of a release cell; then, for code cells whose metadata is gone (Colab),
       the share of a release cell's fixed lines (everything but `# YOUR CODE HERE` /
       `raise NotImplementedError()`) that the cell contains (>= MATCH_THRESHOLD, best first);
       last, a solution cell still unidentified takes the first unidentified code cell placed
       between its two neighbouring identified cells.
    2. Locked cells (text, given code, tests) always come from the source notebook, hidden tests
       included: editing one changes nothing; copies of one are dropped.
    3. A graded (test) cell absent from the submission scores 0: it is replaced by a cell that
       fails with that explanation (or restored when restore_deleted=True).
    4. Solution cells and cells the student added keep their text and the student's order
       relative to the cell they followed; a duplicated solution cell keeps every copy in order,
       exactly as "Restart & Run All" would run them.
    """
    import copy

    import nbformat

    notes: list[str] = []
    src_cells = list(source.cells)
    rel_by_id = {grade_id(c): c for c in release.cells if grade_id(c)}
    ids = [grade_id(c) for c in src_cells]
    kind = {}
    for c in src_cells:
        gid = grade_id(c)
        kind[gid] = "solution" if is_solution(c) else "grade" if is_grade(c) else "locked"
    by_cellid = {}
    for c in src_cells:
        cid = c.get("id")
        if cid:
            by_cellid[cid] = grade_id(c)
    exact = {}
    for gid in ids:
        rc = rel_by_id.get(gid)
        if rc is not None:
            exact.setdefault((rc.cell_type, _norm(rc.source)), []).append(gid)

    sub_cells = [c for c in submission.cells if c.get("cell_type") in ("code", "markdown")]
    match: list = [None] * len(sub_cells)       # gid or None
    how: list = [None] * len(sub_cells)
    claimed: dict[str, int] = {}
    duplicate = [False] * len(sub_cells)

    def claim(i, gid, why):
        if gid in claimed:
            if kind[gid] == "solution":
                return False      # a second copy of a solution cell: kept as an extra cell
            duplicate[i] = True   # a second copy of a locked cell: dropped
            how[i] = f"copy of {gid}"
            return True
        claimed[gid] = i
        match[i], how[i] = gid, why
        return True

    # 1a. metadata / cell id / exact text
    for i, c in enumerate(sub_cells):
        meta_gid = c.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if meta_gid in kind and claim(i, meta_gid, "metadata"):
            continue
        cid = c.get("id")
        if cid in by_cellid and by_cellid[cid] in kind and sub_cells[i].cell_type == \
                src_cells[ids.index(by_cellid[cid])].cell_type and claim(i, by_cellid[cid], "cell id"):
            continue
        for gid in exact.get((c.cell_type, _norm(c.source)), []):
            if gid not in claimed or kind[gid] != "solution":
                if claim(i, gid, "text"):
                    break
    # 1b. fuzzy: release lines contained in an unidentified code cell
    scored = []
    for i, c in enumerate(sub_cells):
        if match[i] is None and not duplicate[i] and c.cell_type == "code":
            for gid in ids:
                if gid in claimed or kind[gid] == "locked" and src_cells[ids.index(gid)].cell_type != "code":
                    continue
                s = _containment(_skeleton(rel_by_id[gid]), c.source) if gid in rel_by_id else 0.0
                if s >= MATCH_THRESHOLD:
                    scored.append((-s, i, gid))
    for negs, i, gid in sorted(scored):
        if match[i] is None and not duplicate[i] and gid not in claimed:
            claim(i, gid, f"similar text ({-negs:.0%} of its lines)")
    # 1c. position: a solution cell between its identified neighbours
    for k, gid in enumerate(ids):
        if kind[gid] != "solution" or gid in claimed:
            continue
        before = [claimed[g] for g in ids[:k] if g in claimed]
        after = [claimed[g] for g in ids[k + 1:] if g in claimed]
        lo = max(before) if before else -1
        hi = min(after) if after else len(sub_cells)
        for i in range(lo + 1, hi):
            if match[i] is None and not duplicate[i] and sub_cells[i].cell_type == "code":
                claim(i, gid, "position")
                break

    # notes for the instructor
    for i, c in enumerate(sub_cells):
        gid = match[i]
        if duplicate[i]:
            notes.append(f"dropped a {how[i]}")
        elif gid and how[i] != "metadata":
            notes.append(f"{gid}: recognised by {how[i]}")
        if gid and kind[gid] != "solution" and gid in rel_by_id and \
                _norm(c.source) != _norm(rel_by_id[gid].source) and kind[gid] == "grade":
            notes.append(f"{gid}: edited test cell restored")
        elif gid and kind[gid] == "locked" and _norm(c.source) != _norm(rel_by_id[gid].source):
            notes.append(f"{gid}: edited locked cell restored")

    # extra cells follow the identified cell they followed in the submission
    extras: dict = {}
    last = None
    for i, c in enumerate(sub_cells):
        if match[i] is not None:
            last = match[i]
        elif not duplicate[i]:
            extras.setdefault(last, []).append(c)

    cells = []

    def add_extra(after):
        for c in extras.get(after, []):
            meta = {}
            if c.cell_type == "code":
                cells.append(nbformat.v4.new_code_cell(c.source, metadata=meta))
            else:
                cells.append(nbformat.v4.new_markdown_cell(c.source, metadata=meta))
    n_extra = sum(len(v) for v in extras.values())
    if n_extra:
        notes.append(f"{n_extra} cell(s) added by the student kept")

    add_extra(None)
    for sc in src_cells:
        gid = grade_id(sc)
        new = copy.deepcopy(sc)
        new.outputs = [] if new.cell_type == "code" else new.get("outputs")
        if new.cell_type != "code":
            new.pop("outputs", None)
        if kind[gid] == "solution":
            if gid in claimed:
                new.source = sub_cells[claimed[gid]].source
                cells.append(new)
            else:
                notes.append(f"{gid}: solution cell not found in the submission")
        elif kind[gid] == "grade" and gid not in claimed:
            if restore_deleted:
                notes.append(f"{gid}: deleted test cell restored")
                cells.append(new)
            else:
                notes.append(f"{gid}: test cell deleted from the submission: 0 points")
                new.source = (f"# The graded cell {gid} was deleted from the submitted notebook.\n"
                              f"raise AssertionError('the graded cell {gid} was deleted from the submitted "
                              f"notebook: it scores 0')")
                cells.append(new)
        else:
            cells.append(new)
        add_extra(gid)
    nb = nbformat.v4.new_notebook(cells=cells, metadata=copy.deepcopy(source.metadata))
    for c in nb.cells:
        if c.cell_type == "code":
            c.execution_count = None
    return nb, notes


# ---------------------------------------------------------------------------------------------
# scoring: an error in a graded cell is 0, anything else full points


def cell_score(cell):
    """(score, why) of an executed graded cell.

    nbgrader's rule also zeroes a cell that wrote to stderr; progress bars and library warnings do,
    so here only an error output (or a cell that never ran) costs the points. A plain number as the
    cell's result is partial credit, as in nbgrader."""
    points = float(cell.metadata["nbgrader"]["points"])
    for out in cell.get("outputs", []):
        if out.output_type == "error":
            return 0.0, error_line(out)
    if cell.get("execution_count") is None:
        return 0.0, "the cell did not run"
    for out in cell.get("outputs", []):
        if out.output_type == "execute_result":
            text = out.get("data", {}).get("text/plain", "")
            try:
                value = float(text)
            except (TypeError, ValueError):
                continue
            return max(0.0, min(points, value)), "" if value >= points else f"partial credit {value:g}"
    return points, ""


def error_line(out) -> str:
    """`Name: message`, the message cut to its first two non-empty lines (check's case + reason)."""
    lines = [ln.strip() for ln in str(out.get("evalue", "")).split("\n") if ln.strip()]
    why = " ".join(lines[:2]) if lines and lines[0].endswith(":") else (lines[0] if lines else "")
    text = f"{out.get('ename', 'Error')}: {why}" if why else str(out.get("ename", "Error"))
    return text if len(text) <= 300 else text[:297] + "..."


def _save_autogrades_class():
    from nbgrader.preprocessors import SaveAutoGrades

    class SaveAutoGradesOnErrors(SaveAutoGrades):
        """nbgrader's SaveAutoGrades with `cell_score` as the rule."""

        def _add_score(self, cell, resources):
            grade = self.gradebook.find_grade(cell.metadata["nbgrader"]["grade_id"], self.notebook_id,
                                              self.assignment_id, self.student_id)
            grade.auto_score = cell_score(cell)[0]
            grade.manual_score = None      # a re-grade is the whole truth: nothing set before survives it
            grade.needs_manual_grade = False
            self.gradebook.db.commit()
    return SaveAutoGradesOnErrors


# ---------------------------------------------------------------------------------------------
# one submission (runs in its own subprocess: `grade.py _one`)


def results_path(course, student, slug) -> Path:
    return course / "results" / student / f"{slug}.json"


def find_submitted_notebook(course: Path, student: str, slug: str):
    d = course / "submitted" / student / slug
    nb = d / f"{slug}.ipynb"
    if nb.is_file():
        return nb, None
    others = sorted(p for p in d.glob("*.ipynb"))
    if len(others) == 1:
        return others[0], f"notebook submitted as {others[0].name}"
    return None, ("no notebook submitted" if not others else f"{len(others)} notebooks, none named {slug}.ipynb")


def _read_submission(path: Path):
    """Whatever the JSON holds, as a v4 notebook; None when it is not a notebook at all."""
    import nbformat
    try:
        raw = json.loads(path.read_text(encoding="utf-8", errors="replace"))
        nb = nbformat.reads(json.dumps(raw), as_version=4)
    except Exception:   # noqa: BLE001 - not JSON, not a notebook
        return None
    cells = []
    for c in nb.get("cells", []):
        if not isinstance(c, dict) or c.get("cell_type") not in ("code", "markdown", "raw"):
            continue
        src = c.get("source", "")
        c["source"] = "".join(src) if isinstance(src, list) else str(src)
        c.setdefault("metadata", {})
        cells.append(c)
    nb.cells = cells
    return nb


def grade_one(course: Path, student: str, slug: str, cell_timeout: int, restore_deleted: bool,
              sandbox: str = "none") -> dict:
    """Rebuild, then nbgrader-autograde one submission; returns the result record (also saved)."""
    import nbformat
    from nbgrader.converters import Autograde
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.preprocessors import ClearOutput, DeduplicateIds, OverwriteKernelspec, CheckCellMetadata

    t0 = time.time()
    result = {"student": student, "assignment": slug, "status": "graded", "reason": "", "notes": [],
              "submission_sha256": submission_digest(course, student, slug),
              "run": os.environ.get(sandbox_tool.MARKER, "")}
    path, note = find_submitted_notebook(course, student, slug)
    if note:
        result["notes"].append(note)
    sub = _read_submission(path) if path else None
    if sub is None:
        return _finish_zero(course, student, slug, note if path is None else "the submitted file is not a notebook",
                            result, t0)
    source = read_nb(course / "source" / slug / f"{slug}.ipynb")
    release = read_nb(course / "release" / slug / f"{slug}.ipynb")
    nb, notes = rebuild(sub, source, release, restore_deleted=restore_deleted)
    result["notes"] += notes
    record_direct_calls(nb)

    # nbgrader reads submissions from <course>/rebuilt/: submitted/ stays as the student sent it
    src_dir = course / "submitted" / student / slug
    dst_dir = course / "rebuilt" / student / slug
    if dst_dir.exists():
        shutil.rmtree(dst_dir)
    shutil.copytree(src_dir, dst_dir, ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
    nbformat.write(nb, str(dst_dir / f"{slug}.ipynb"))

    _quiet_traitlets()
    cfg = nbgrader_config(course, cell_timeout, submitted="rebuilt")
    cfg.Execute.kernel_name = sandboxed_kernel(course, student, slug, dst_dir, sandbox, result)
    cfg.Autograde.force = True
    cfg.Autograde.create_student = True
    # the rebuilt notebook already holds the source's locked cells (OverwriteCells would also
    # restore a deleted-test placeholder to the real test, handing out its points)
    cfg.Autograde.sanitize_preprocessors = [ClearOutput, DeduplicateIds, OverwriteKernelspec, CheckCellMetadata]
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.preprocessors import AssignLatePenalties, Execute, IgnorePattern, LimitOutput
    cfg.Autograde.autograde_preprocessors = [Execute, IgnorePattern, ClearMetadataPreprocessor, LimitOutput,
                                             _save_autogrades_class(), AssignLatePenalties, CheckCellMetadata]
    coursedir = CourseDirectory(config=cfg)
    coursedir.assignment_id = slug
    coursedir.student_id = student
    app = Autograde(coursedir=coursedir, config=cfg)
    failure = []
    original = app.convert_single_notebook

    def convert(filename):
        try:
            original(filename)
        except Exception as exc:   # noqa: BLE001 - recorded, then nbgrader's own handling runs
            failure.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip(": "))
            raise
    app.convert_single_notebook = convert
    try:
        app.start()
    except BaseException as exc:   # noqa: BLE001 - NbGraderException, SystemExit
        if not failure:
            failure.append(f"{type(exc).__name__}: {exc}")
    graded = course / "autograded" / student / slug / f"{slug}.ipynb"
    if failure or not graded.is_file():
        reason = failure[0] if failure else "nbgrader produced no autograded notebook"
        if "DeadKernelError" in reason or "Kernel died" in reason:
            reason = "the kernel died (crash, segfault or out of memory): " + reason
        elif "CellTimeoutError" in reason or "TimeoutError" in reason:
            reason = f"a cell ran past the {cell_timeout} s limit and did not stop when interrupted ({reason})"
        return _finish_zero(course, student, slug, reason, result, t0, rebuilt=nb)
    result["cells"] = {}
    graded_nb = read_nb(graded)
    for cell in graded_nb.cells:
        if is_grade(cell):
            score, why = cell_score(cell)
            result["cells"][grade_id(cell)] = {"score": score, "max": float(cell.metadata["nbgrader"]["points"]),
                                               "why": why}
    confirm_by_replay(course, student, slug, dst_dir / f"{slug}.ipynb", graded, graded_nb, result, cell_timeout)
    result["seconds"] = round(time.time() - t0, 1)
    _save_result(course, result)
    return result


# ---------------------------------------------------------------------------------------------
# the verdict of a graded cell does not come from the student's process alone (autograder/record.py)

REPLAY_CELL = ("### BEGIN HIDDEN TESTS\n"
               "__import__('autograder.record').record.wrap_globals(globals(), {names!r})\n"
               "### END HIDDEN TESTS\n")


def record_direct_calls(nb):
    """Graded cells record the direct calls they make of functions that earlier cells defined."""
    for cell in nb.cells:
        if is_grade(cell) and cell.cell_type == "code":
            try:
                names = replay_tool.free_names(cell.source)
            except SyntaxError:
                continue
            if names:
                cell.source = REPLAY_CELL.format(names=names) + cell.source


def confirm_by_replay(course, student, slug, rebuilt: Path, graded: Path, graded_nb, result, cell_timeout):
    """Replay the graded cells on the recorded calls (tools/replay.py, a process without student code);
    a cell that passed in the kernel but not in the replay scores 0, in the result, gradebook and notebook."""
    import nbformat
    from nbgrader.api import Gradebook

    passed = [gid for gid, c in result["cells"].items() if c["score"] > 0]
    if not passed:
        return
    records = course / "jails" / student / slug / ".records"
    out = records.parent.parent / f".{slug}.replay.json"
    env = {k: os.environ[k] for k in KERNEL_ENV if k in os.environ}
    env.update(AUTOGRADER_REPLAY=str(records), HOME=str(records.parent.parent), MPLBACKEND="Agg")
    try:
        proc = subprocess.run([sys.executable, str(REPO / "tools" / "replay.py"), str(rebuilt), str(out)],
                              env=env, cwd=str(records.parent.parent), capture_output=True, text=True,
                              timeout=max(60, cell_timeout * len(result["cells"])))
        verdict = json.loads(out.read_text()) if proc.returncode == 0 else {}
        trouble = "" if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
    except (subprocess.TimeoutExpired, OSError, ValueError) as exc:
        verdict, trouble = {}, f"{type(exc).__name__}"
    failed = {}
    for gid in passed:
        v = verdict.get(gid, {"ok": False, "why": f"the replay did not run ({trouble})"})
        result["cells"][gid]["replayed"] = bool(v["ok"])
        if not v["ok"]:
            failed[gid] = f"not confirmed when the grader replayed the recorded calls: {v['why']}"
            result["cells"][gid].update(score=0.0, why=failed[gid])
    shutil.rmtree(records, ignore_errors=True)      # outputs of every call: large, and no longer needed
    if not failed:
        return
    for cell in graded_nb.cells:
        if grade_id(cell) in failed:
            cell.outputs.append(nbformat.v4.new_output("error", ename="NotConfirmed", evalue=failed[grade_id(cell)],
                                                       traceback=[f"NotConfirmed: {failed[grade_id(cell)]}"]))
    nbformat.write(graded_nb, str(graded))
    with _DB_LOCK, Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for gid in failed:
            grade = gb.find_grade(gid, slug, slug, student)
            grade.auto_score = 0.0
            grade.manual_score = None
        gb.db.commit()


def _grading_key(course: Path) -> bytes:
    """The course's secret for signing results (created on first use, readable by the grader only)."""
    path = course / ".grading-key"
    if not path.is_file():
        import secrets
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def _signature(course: Path, result: dict) -> str:
    import hashlib
    import hmac
    body = json.dumps({k: v for k, v in result.items() if k != "signature"}, sort_keys=True).encode()
    return hmac.new(_grading_key(course), body, hashlib.sha256).hexdigest()


def _save_result(course, result):
    """Signed and written atomically: a half-written or edited result never counts."""
    p = results_path(course, result["student"], result["assignment"])
    p.parent.mkdir(parents=True, exist_ok=True)
    result["signature"] = _signature(course, result)
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, p)


def load_result(course: Path, student: str, slug: str):
    """The autograde result of (student, slug); None when there is none. A result whose signature does
    not match (edited after grading) comes back with status `tampered` and every cell at 0."""
    p = results_path(course, student, slug)
    if not p.is_file():
        return None
    try:
        result = json.loads(p.read_text())
        ok = isinstance(result, dict) and result.get("signature") == _signature(course, result)
    except (ValueError, OSError):
        result, ok = {"student": student, "assignment": slug, "cells": {}, "notes": []}, False
    if not ok:
        result["status"] = "tampered"
        result["reason"] = f"{p.relative_to(course)} was changed after grading (signature mismatch): grade again"
        for cell in result.get("cells", {}).values():
            cell["score"] = 0.0
    return result


def submission_digest(course: Path, student: str, slug: str) -> str:
    """sha256 of every file of a submission (names and bytes): a changed submission is graded again."""
    import hashlib
    h = hashlib.sha256()
    d = course / "submitted" / student / slug
    for f in sorted(q for q in d.rglob("*") if q.is_file()):
        h.update(str(f.relative_to(d)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


_DB_LOCK = threading.Lock()


def _finish_zero(course, student, slug, reason, result, t0, rebuilt=None):
    """Every graded cell of this problem scores 0 with `reason`, in the gradebook and the autograded notebook."""
    import nbformat
    from nbgrader.api import Gradebook

    result.update(status="zero", reason=reason)
    source = read_nb(course / "source" / slug / f"{slug}.ipynb")
    nb = rebuilt if rebuilt is not None else source
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            if is_grade(cell):
                cell.outputs = [nbformat.v4.new_output("error", ename="NotGraded", evalue=reason,
                                                       traceback=[f"NotGraded: {reason}"])]
    out_dir = course / "autograded" / student / slug
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(out_dir / f"{slug}.ipynb"))
    with _DB_LOCK, Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        gb.update_or_create_student(student)
        submission = gb.update_or_create_submission(slug, student)
        for nbs in submission.notebooks:
            for grade in nbs.grades:
                grade.auto_score = 0.0
                grade.manual_score = None
                grade.needs_manual_grade = False
        gb.db.commit()
    result["cells"] = {grade_id(c): {"score": 0.0, "max": float(c.metadata["nbgrader"]["points"]), "why": reason}
                       for c in source.cells if is_grade(c)}
    result["seconds"] = round(time.time() - t0, 1)
    _save_result(course, result)
    return result


def cmd_one(args) -> int:
    mode = args.sandbox if args.sandbox != "auto" else choose_sandbox("auto")[0]
    try:
        grade_one(args.course, args.student[0], args.assignment[0], args.cell_timeout, args.restore_deleted_tests,
                  mode)
    finally:
        kill_marked(os.environ.get(sandbox_tool.MARKER))
    return 0


# ---------------------------------------------------------------------------------------------
# the kernel's sandbox (tools/sandbox.py): what a submission can see, write and leave behind

KERNEL_NAME = "fa-course-sandbox"
# passed from the grader to the kernel; everything else in the grader's environment stays behind
KERNEL_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "CUDA_VISIBLE_DEVICES", "CUDA_HOME", "LD_LIBRARY_PATH",
              "NVIDIA_VISIBLE_DEVICES", "AUTOGRADER_TIER", "TRITON_INTERPRET", "OMP_NUM_THREADS",
              "PYTHONHASHSEED", "TQDM_DISABLE")


def choose_sandbox(wanted: str) -> tuple[str, str]:
    """(mode, warning): `namespace` when the machine allows it (or `wanted` says so), else `none`."""
    if wanted == "none":
        return "none", "submissions run WITHOUT isolation (--sandbox none): see docs/instructor.md"
    ok, why = sandbox_tool.namespaces_available()
    if ok:
        return "namespace", ""
    if wanted == "namespace":
        raise SystemExit(f"grade: --sandbox namespace: {why}")
    return "none", (f"Linux namespaces are not available ({why}): submissions run WITHOUT isolation and could "
                    f"read the solutions and hidden tests; see docs/instructor.md")


def _exposed_paths() -> list[str]:
    """What the kernel needs to import autograder, torch, triton, ipykernel: the Python environment(s)
    and autograder/. Never the repository itself (solutions/, notebooks/ with the hidden tests)."""
    keep = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), REPO / "autograder"}
    for entry in sys.path:
        p = Path(entry or ".").resolve()
        if p.is_dir() and p != REPO and p != REPO / "tools" and not p.is_relative_to(REPO / "tools"):
            keep.add(p)
    top = []
    for p in sorted({q.resolve() for q in keep}, key=lambda q: len(q.parts)):
        if not any(p.is_relative_to(t) for t in top):
            top.append(p)
    return [str(p) for p in top]


def _hidden_paths(course: Path, exposed: list[str]) -> list[str]:
    hide = {REPO, course, Path.home(), Path("/root"), Path("/tmp"), Path("/var/tmp"), Path("/dev/shm")}
    for e in exposed:      # an installed copy of the solutions (an old `pip install .`) stays out of reach
        hide |= set(Path(e).glob("solutions")) | set(Path(e).glob("*/site-packages/solutions")) \
            | set(Path(e).glob("lib/python3*/site-packages/solutions"))
    return sorted(str(p) for p in hide)


def sandboxed_kernel(course: Path, student: str, slug: str, workdir: Path, mode: str, result: dict) -> str:
    """Write this submission's jail, sandbox plan and kernelspec; return the kernel name to run."""
    import secrets
    base = course / "jails" / student
    jail = base / slug
    if jail.exists():
        shutil.rmtree(jail)
    # the student's own files travel; the rebuilt notebook (hidden tests inside) does not
    shutil.copytree(workdir, jail, ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
    exposed = _exposed_paths()
    env = {k: os.environ[k] for k in KERNEL_ENV if k in os.environ}
    env.update(MPLBACKEND="Agg", AUTOGRADER_GRADING="1", AUTOGRADER_RECORD=str(jail / ".records"))
    (jail / ".records").mkdir()
    plan = {"mode": mode, "jail": str(jail), "marker": os.environ.get(sandbox_tool.MARKER) or secrets.token_hex(8),
            "expose": exposed, "hide": _hidden_paths(course, exposed), "env": env,
            "kernel_argv": [sys.executable, "-m", "ipykernel_launcher"]}
    plan_path = base / f".{slug}.sandbox.json"
    plan_path.write_text(json.dumps(plan, indent=1))
    spec_dir = base / f".{slug}.kernels" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-I", str(Path(sandbox_tool.__file__).resolve()), "kernel", str(plan_path),
                 "{connection_file}"],
        "display_name": "Python 3 (grading sandbox)", "language": "python",
        # the kernel sits behind unshare, which does not forward SIGINT: interrupt over the control channel
        "interrupt_mode": "message"}))
    os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(spec_dir.parent.parent),
                                                              os.environ.get("JUPYTER_PATH")) if p)
    result["sandbox"] = mode
    return KERNEL_NAME


def kill_marked(marker):
    """Kill every process whose environment carries this run's marker (what namespaces do not catch)."""
    if not marker:
        return
    import psutil
    me = os.getpid()
    procs = []
    for p in psutil.process_iter():
        try:
            if p.pid != me and p.environ().get(sandbox_tool.MARKER) == marker:
                procs.append(p)
        except (psutil.Error, OSError):
            continue
    _kill(procs)


def _kill(procs):
    import psutil
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=10)


# ---------------------------------------------------------------------------------------------
# autograde: every submission, each in a subprocess with a wall-clock limit


def _kill_tree(pid: int):
    """Kill a process and every descendant (the kernel runs in its own session, so killpg misses it)."""
    import psutil
    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + [root]
    except psutil.NoSuchProcess:
        return
    _kill(procs)


def run_one(course, student, slug, args) -> dict:
    import secrets
    cmd = [sys.executable, str(Path(__file__).resolve()), "_one", "--course", str(course),
           "--student", student, "--assignment", slug, "--cell-timeout", str(args.cell_timeout)]
    if args.restore_deleted_tests:
        cmd.append("--restore-deleted-tests")
    cmd += ["--sandbox", args.sandbox]
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)                # the kernel must not find the repository (solutions/)
    env[sandbox_tool.MARKER] = marker = secrets.token_hex(12)
    env.setdefault("TQDM_DISABLE", "1")        # progress bars are noise in feedback
    env.setdefault("PYTHONHASHSEED", "0")
    if args.tier:
        env["AUTOGRADER_TIER"] = args.tier
    if args.jobs > 1:
        env.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.time()
    logdir = course / "logs" / student
    logdir.mkdir(parents=True, exist_ok=True)
    rc = None
    with open(logdir / f"{slug}.log", "wb") as logf:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=args.timeout)
            why = f"the grading process exited with status {rc}" if rc else ""
        except subprocess.TimeoutExpired:
            why = f"the notebook ran longer than the {args.timeout} s limit and was stopped"
            _kill_tree(proc.pid)      # the kernel too: it runs in a session of its own
            proc.wait()
    kill_marked(marker)               # whatever a submission started and detached (sandbox `none`)
    result = load_result(course, student, slug)
    if not (rc == 0 and result and result.get("run") == marker and result.get("status") != "tampered"):
        if rc:
            tail = (logdir / f"{slug}.log").read_text(errors="replace").strip().splitlines()[-1:]
            why += f" ({tail[0][:200]})" if tail else ""
        result = _finish_zero(course, student, slug, why or "no result",
                              {"student": student, "assignment": slug, "notes": [], "run": marker,
                               "submission_sha256": submission_digest(course, student, slug)}, t0)
    result["seconds"] = round(time.time() - t0, 1)
    _save_result(course, result)
    return result


class UsageError(Exception):
    """A command line or course directory the grader cannot work with: printed, exit status 2."""


def require_course(course: Path, gradebook: bool = True):
    """The course directory exists (and its gradebook opens), or a UsageError that says what to run."""
    if not (course / "source").is_dir():
        raise UsageError(f"{course} is not a course directory (no source/): run "
                         f"`python tools/grade.py release --course {course}` first")
    if gradebook:
        db = course / "gradebook.db"
        if not db.is_file():
            raise UsageError(f"{course} has no gradebook: run `python tools/grade.py release --course {course}`")
        import sqlite3
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
                con.execute("select count(*) from grade").fetchone()
        except sqlite3.Error as exc:
            raise UsageError(f"{db} is not a readable nbgrader gradebook ({exc}): restore it from a backup or "
                             f"release again into a new course directory; results/ is left as it is") from None


def submissions(course: Path, assignments, students) -> list[tuple[str, str]]:
    """(student, slug) of every submission, only those named by -s/-a; unknown names are a UsageError."""
    sub = course / "submitted"
    known = set(find_assignments(course))
    unknown = sorted(set(assignments or ()) - known)
    if unknown:
        raise UsageError(f"unknown assignment(s) {', '.join(unknown)}; released: {', '.join(sorted(known)) or 'none'}")
    present = {p.name for p in sub.iterdir() if p.is_dir()} if sub.is_dir() else set()
    missing = sorted(set(students or ()) - present)
    if missing:
        raise UsageError(f"no submissions from student(s) {', '.join(missing)} under {sub}")
    out = []
    if not sub.is_dir():
        return out
    for sd in sorted(p for p in sub.iterdir() if p.is_dir()):
        if students and sd.name not in students:
            continue
        for ad in sorted(p for p in sd.iterdir() if p.is_dir()):
            if assignments and ad.name not in assignments:
                continue
            if ad.name not in known:
                print(f"grade: skipping {ad}: {ad.name} is not a released assignment", file=sys.stderr)
                continue
            out.append((sd.name, ad.name))
    return out


def up_to_date(course: Path, student: str, slug: str) -> bool:
    r = load_result(course, student, slug)
    return bool(r) and r.get("status") != "tampered" and \
        r.get("submission_sha256") == submission_digest(course, student, slug)


def cmd_autograde(args) -> int:
    course = args.course
    require_course(course)
    todo = submissions(course, args.assignment, args.student)
    if not args.force:
        todo = [(s, a) for s, a in todo if not up_to_date(course, s, a)]
    if not todo:
        print("grade: nothing to autograde: every submission is graded and unchanged since "
              "(use --force to grade again)")
        return 0
    args.sandbox, warning = choose_sandbox(args.sandbox)
    if warning:
        print(f"grade: WARNING: {warning}", file=sys.stderr)
    print(f"autograding {len(todo)} submission(s), {args.jobs} at a time; cell timeout {args.cell_timeout} s, "
          f"notebook limit {args.timeout} s; sandbox: {args.sandbox}")

    def one(item):
        student, slug = item
        r = run_one(course, student, slug, args)
        got = sum(c["score"] for c in r["cells"].values())
        top = sum(c["max"] for c in r["cells"].values())
        extra = f"  ({r['reason']})" if r["status"] != "graded" else ""
        print(f"  {student:16s} {slug:28s} {got:5g}/{top:<4g} {r['seconds']:7.1f} s{extra}", flush=True)
        return r
    t0 = time.time()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(one, todo))
    print(f"autograded {len(todo)} submission(s) in {time.time() - t0:.1f} s")
    return 0


# ---------------------------------------------------------------------------------------------
# feedback without hidden tests


LEAK_NOTICE = "[output removed by the grader: it showed hidden test code]"


def _output_text(out) -> str:
    parts = [out.get("text", ""), out.get("evalue", "")] + list(out.get("traceback", []))
    for value in out.get("data", {}).values():
        parts += value if isinstance(value, list) else [value if isinstance(value, str) else ""]
    return " ".join(" ".join(str(p) for p in parts).split())


def _feedback_preprocessor_class(secret: set, leaked: list):
    from nbgrader.preprocessors import NbGraderPreprocessor
    secret = {" ".join(ln.split()) for ln in secret}

    class HideTests(NbGraderPreprocessor):
        """Graded cells: hidden test code removed; errors cut to `Name: message` (no code context).
        Any cell: an output that shows a hidden test line (printed from `In`, a frame, a file) is replaced."""

        def preprocess_cell(self, cell, resources, index):
            if cell.cell_type == "code":
                # progress-bar widgets render as empty boxes in static HTML
                cell.outputs = [o for o in cell.get("outputs", []) if o.output_type != "display_data"
                                or "application/vnd.jupyter.widget-view+json" not in o.get("data", {})]
                import nbformat
                for i, out in enumerate(cell.outputs):
                    text = _output_text(out)
                    if any(ln in text for ln in secret):
                        leaked.append(grade_id(cell) or f"cell {index}")
                        cell.outputs[i] = nbformat.v4.new_output("stream", name="stdout", text=LEAK_NOTICE + "\n")
            if is_grade(cell) and cell.cell_type == "code":
                cell.source = strip_hidden(cell.source)
                for out in cell.get("outputs", []):
                    if out.output_type == "error":
                        out.traceback = [f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"]
            return cell, resources
    return HideTests


def _flag(course: Path, student: str, slug: str, note: str):
    """Add `note` to a result (re-signed), once."""
    r = load_result(course, student, slug)
    if r is not None and r.get("status") != "tampered" and note not in r.get("notes", []):
        r.setdefault("notes", []).append(note)
        _save_result(course, r)


def cmd_feedback(args) -> int:
    from nbgrader.converters import GenerateFeedback
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.preprocessors import GetGrades
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor

    course = args.course
    require_course(course)
    _quiet_traitlets()
    logging.getLogger("traitlets").setLevel(logging.ERROR)   # nbconvert's alt-text and config chatter
    secrets_by_slug = hidden_secrets(course)
    done = 0
    for student, slug in submissions(course, args.assignment, args.student):
        if not (course / "autograded" / student / slug / f"{slug}.ipynb").is_file():
            continue
        leaked: list = []
        cfg = nbgrader_config(course)
        cfg.GenerateFeedback.force = True
        cfg.GenerateFeedback.preprocessors = [_feedback_preprocessor_class(secrets_by_slug.get(slug, set()), leaked),
                                              GetGrades, CSSHTMLHeaderPreprocessor]
        coursedir = CourseDirectory(config=cfg)
        coursedir.assignment_id = slug
        coursedir.student_id = student
        GenerateFeedback(coursedir=coursedir, config=cfg).start()
        if leaked:
            note = f"printed hidden test code ({', '.join(sorted(set(leaked)))}): removed from the feedback"
            _flag(course, student, slug, note)
            print(f"grade: WARNING: {student} {slug}: {note}", file=sys.stderr)
        done += 1
    # the last line of defence: a feedback file that still shows a hidden line is withheld
    for f, line in verify_feedback(course, secrets_by_slug):
        f.unlink()
        student, slug = f.parent.parent.name, f.parent.name
        _flag(course, student, slug, "feedback withheld: it showed hidden test code")
        print(f"grade: HIDDEN TEST LEAK in {f.relative_to(course)} ({line!r}): file withheld, student flagged",
              file=sys.stderr)
    print(f"feedback for {done} submission(s) in {course / 'feedback'}")
    return 0


def hidden_secrets(course: Path) -> dict:
    """{slug: hidden test lines a student must never see} (lines the release shows anyway excluded)."""
    secret = {}
    for slug in find_assignments(course):
        lines = set()
        for c in read_nb(course / "source" / slug / f"{slug}.ipynb").cells:
            if is_grade(c):
                lines |= {ln for ln in hidden_lines(c.source) if len(ln) > 12}
        # a hidden line that the release shows anyway (e.g. `autograder.check(1, fn, cases=[`) is no secret
        public = {ln for c in read_nb(course / "release" / slug / f"{slug}.ipynb").cells for ln in _lines(c.source)}
        secret[slug] = lines - public
    return secret


def verify_feedback(course: Path, secrets_by_slug: dict = None) -> list:
    """(file, line) of every feedback file that contains a line of a hidden test."""
    import html as _html
    secret = hidden_secrets(course) if secrets_by_slug is None else secrets_by_slug
    leaks = []
    for f in sorted((course / "feedback").rglob("*.html")) if (course / "feedback").is_dir() else []:
        text = _html.unescape(re.sub(r"<[^>]+>", "", f.read_text(errors="replace")))
        text = " ".join(text.split())
        for ln in secret.get(f.parent.name, ()):
            if " ".join(ln.split()) in text:
                leaks.append((f, ln))
                break
    return leaks


# ---------------------------------------------------------------------------------------------
# export and summary


def gradebook_scores(course: Path):
    """{(student, slug): {grade_id: score}} as nbgrader's gradebook has them (manual scores win)."""
    from nbgrader.api import Gradebook
    out = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for a in gb.assignments:
            for sub in a.submissions:
                out[(sub.student.id, a.name)] = {g.name: float(g.score) for nbs in sub.notebooks for g in nbs.grades}
    return out


def graded_results(course: Path, students=None, assignments=None) -> dict:
    """{(student, slug): signed result} of every graded submission (the grades come from these, only)."""
    out = {}
    for student, slug in submissions(course, assignments, students):
        r = load_result(course, student, slug)
        if r is not None:
            out[(student, slug)] = r
    return out


def gradebook_mismatches(course: Path, results: dict) -> list[str]:
    """Where the gradebook's scores differ from the signed results: changed outside the grader."""
    if not (course / "gradebook.db").is_file():
        return []
    try:
        book = gradebook_scores(course)
    except Exception as exc:   # noqa: BLE001 - a broken gradebook does not stop the CSV or the summary
        return [f"the gradebook could not be read ({type(exc).__name__}): compare by hand"]
    out = []
    for (student, slug), r in sorted(results.items()):
        theirs = book.get((student, slug), {})
        for gid, cell in sorted(r.get("cells", {}).items()):
            if gid in theirs and abs(theirs[gid] - cell["score"]) > 1e-9:
                out.append(f"{student} {slug} {gid}: gradebook {theirs[gid]:g}, autograde result {cell['score']:g}")
    return out


def cmd_export(args) -> int:
    course = args.course
    require_course(course, gradebook=False)
    results = graded_results(course, args.student, args.assignment)
    to = Path(args.to or course / "grades.csv")
    cells_csv = to.with_name(to.stem + "_cells.csv")
    with open(to, "w", newline="") as f, open(cells_csv, "w", newline="") as g:
        total, cells = csv.writer(f), csv.writer(g)
        total.writerow(["student_id", "assignment", "score", "max_score", "status", "reason"])
        cells.writerow(["student_id", "assignment", "cell", "score", "max_score", "why"])
        for (student, slug), r in sorted(results.items()):
            got = sum(c["score"] for c in r["cells"].values())
            top = sum(c["max"] for c in r["cells"].values())
            total.writerow([student, slug, f"{got:g}", f"{top:g}", r.get("status", ""), r.get("reason", "")])
            for gid, c in sorted(r["cells"].items()):
                cells.writerow([student, slug, gid, f"{c['score']:g}", f"{c['max']:g}", c.get("why", "")])
    for m in gradebook_mismatches(course, results):
        print(f"grade: WARNING: {m} (the CSV uses the signed autograde result)", file=sys.stderr)
    print(f"wrote {to} and {cells_csv} ({len(results)} graded submission(s))")
    return 0


def summary_table(course: Path, students=None, assignments=None) -> str:
    results = graded_results(course, students, assignments)
    slugs = sorted({a for _, a in results})
    people = sorted({s for s, _ in results})
    short = {s: s.split("_", 1)[0] for s in slugs}
    head = f"{'student':16s}" + "".join(f"{short[s]:>10s}" for s in slugs) + f"{'total':>10s}"
    lines = [head, "-" * len(head)]
    failures = []
    for p in people:
        row, got_all, top_all = f"{p:16s}", 0.0, 0.0
        for s in slugs:
            res = results.get((p, s))
            if res is None:
                row += f"{'-':>10s}"
                continue
            cells = res.get("cells", {})
            got = sum(c["score"] for c in cells.values())
            top = sum(c["max"] for c in cells.values())
            got_all, top_all = got_all + got, top_all + top
            row += f"{got:g}/{top:g}".rjust(10)
            if res.get("status") in ("zero", "tampered"):
                failures.append(f"{p} {s}: 0 points: {res.get('reason')}")
            else:
                for gid, c in sorted(cells.items()):
                    if c["score"] < c["max"]:
                        failures.append(f"{p} {s} {gid} ({c['score']:g}/{c['max']:g}): {c.get('why', '')}")
            for n in res.get("notes", []):
                if "recognised by" not in n:
                    failures.append(f"{p} {s}: note: {n}")
        lines.append(row + f"{got_all:g}/{top_all:g}".rjust(10))
    if not people:
        lines.append("(no graded submissions yet: run `python tools/grade.py autograde`)")
    if failures:
        lines += ["", "failed graded cells and notes:"] + ["  " + f for f in failures]
    mismatches = gradebook_mismatches(course, results)
    if mismatches:
        lines += ["", "the gradebook differs from the signed autograde results (changed outside the grader; "
                      "this table uses the results):"] + ["  " + m for m in mismatches]
    return "\n".join(lines)


def cmd_summary(args) -> int:
    require_course(args.course, gradebook=False)
    print(summary_table(args.course, args.student, args.assignment))
    return 0


def cmd_all(args) -> int:
    if not (args.course / "gradebook.db").is_file() or args.rebuild:
        rc = cmd_release(args)
        if rc:
            return rc
    for step in (cmd_autograde, cmd_feedback, cmd_export, cmd_summary):
        rc = step(args)
        if rc:
            return rc
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--course", type=Path, default=DEFAULT_COURSE,
                        help=f"course directory (default: {DEFAULT_COURSE.relative_to(REPO)}/ in the repository)")
    common.add_argument("--assignment", "-a", action="append", help="only this problem slug (repeatable)")
    common.add_argument("--student", "-s", action="append", help="only this student id (repeatable)")
    grading = argparse.ArgumentParser(add_help=False)
    grading.add_argument("--cell-timeout", type=int, default=DEFAULT_CELL_TIMEOUT,
                         help=f"seconds one cell may run before it is interrupted (default {DEFAULT_CELL_TIMEOUT})")
    grading.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT,
                         help=f"seconds one notebook may take in all (default {DEFAULT_TIMEOUT})")
    grading.add_argument("--jobs", "-j", type=int, default=1, help="(student, notebook) pairs graded at once (default 1)")
    grading.add_argument("--force", action="store_true", help="grade again what was graded already")
    grading.add_argument("--tier", choices=("cpu", "gpu"), help="force the autograder tier (default: this machine's)")
    grading.add_argument("--sandbox", choices=("auto", "namespace", "none"), default="auto",
                         help="isolate each kernel in Linux namespaces (auto: when the machine allows it)")
    grading.add_argument("--restore-deleted-tests", action="store_true",
                         help="run a deleted test cell from the source instead of scoring it 0")
    p = sub.add_parser("release", parents=[common], help="build the course and register it in the gradebook")
    p.add_argument("--no-build", action="store_true", help="do not run tools/build_course.py first")
    p.set_defaults(fn=cmd_release)
    sub.add_parser("autograde", parents=[common, grading], help="grade every submission").set_defaults(fn=cmd_autograde)
    sub.add_parser("feedback", parents=[common], help="HTML feedback without hidden tests").set_defaults(fn=cmd_feedback)
    p = sub.add_parser("export", parents=[common], help="grades CSV (and per-cell CSV)")
    p.add_argument("--to", type=Path, help="CSV path (default <course>/grades.csv)")
    p.set_defaults(fn=cmd_export)
    sub.add_parser("summary", parents=[common], help="student x problem table").set_defaults(fn=cmd_summary)
    p = sub.add_parser("all", parents=[common, grading], help="release if needed, autograde, feedback, export, summary")
    p.add_argument("--no-build", action="store_true", help="do not run tools/build_course.py first")
    p.add_argument("--rebuild", action="store_true", help="release again even if the course exists")
    p.add_argument("--to", type=Path, help="CSV path (default <course>/grades.csv)")
    p.set_defaults(fn=cmd_all)
    p = sub.add_parser("_one", parents=[common, grading])   # internal: one submission, in a subprocess
    p.set_defaults(fn=cmd_one)
    args = parser.parse_args(argv)
    args.course = args.course.resolve()
    # nbgrader shells out to `alembic` (gradebook migrations): the one next to this Python
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.fn(args)
    except UsageError as exc:
        print(f"grade: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
