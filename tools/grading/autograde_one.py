"""One submission, in its own subprocess (`grade.py _one`): rebuild, run under nbgrader, score, replay."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from ._failure import checks_failure
from .audit import cheat_voids, static_flags
from .cells import grade_id, is_grade, read_nb
from .nbgrader_setup import nbgrader_config, quiet_traitlets
from .rebuild import copy_submission, find_submitted_notebook, read_submission, rebuild
from .replay import confirm_by_replay, record_direct_calls
from .results import mark_started, release_digest, save_result, submission_digest
from .sandbox import (DEFAULT_MEMORY_LIMIT, choose_sandbox, kill_marked, launcher, memory_error, memory_exceeded,
                      memory_state, parse_size, plan_file, release_memory, sandboxed_kernel)
from .score import cell_score, save_autogrades_class, zero_cells

RUN_ID = "FA_COURSE_RUN_ID"     # the environment variable naming the run (batch of units) a worker belongs to

# s: the limit of every cell after one that ran past --cell-timeout. A function that loops forever would
# otherwise cost each later cell that calls it the full limit (20 minutes a notebook with the defaults).
HUNG_CELL_TIMEOUT = 30
# s, at most (half the cell limit when that is shorter): how long an interrupted cell has to stop (a
# kernel inside a long C call sees the interrupt only when it returns) before the kernel is killed
INTERRUPT_GRACE = 30


def cell_name(cell) -> str:
    return grade_id(cell) or cell.get("id") or "(no id)"


def bounded_execute(cell_timeout: int, timeouts: list):
    """nbgrader's Execute, but a notebook pays the full --cell-timeout once: after a cell timed out, every
    later cell gets HUNG_CELL_TIMEOUT. A timed-out cell's first error says what happened; `timeouts` gets
    (cell name, limit) for each, the last one being the cell that did not stop if the notebook failed."""
    from nbgrader.preprocessors import Execute
    short = min(cell_timeout, HUNG_CELL_TIMEOUT)
    grace = max(4, min(INTERRUPT_GRACE, cell_timeout // 2))

    class BoundedExecute(Execute):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.timeout_func = lambda cell: short if timeouts else cell_timeout
            self.quick_iopub = self.iopub_timeout

        async def _async_handle_timeout(self, timeout, cell=None):
            name = cell_name(cell) if cell is not None else "?"
            timeouts.append((name, timeout))
            text = f"cell {name} ran past the {timeout} s limit and was interrupted"
            self.error_on_timeout = {"ename": "CellTimeoutError", "evalue": text,
                                     "traceback": [f"CellTimeoutError: {text}"]}
            self.iopub_timeout = grace     # how long the interrupted cell has to end
            return await super()._async_handle_timeout(timeout, cell)

        def preprocess_cell(self, cell, resources, index):
            before = len(timeouts)
            try:
                return super().preprocess_cell(cell, resources, index)
            finally:
                self.iopub_timeout = self.quick_iopub
                if len(timeouts) > before:      # the timeout first: it is the cell's reason, not the
                    cell.outputs.sort(key=lambda o: o.get("ename") != "CellTimeoutError")  # KeyboardInterrupt

    return BoundedExecute


def grade_one(course: Path, student: str, slug: str, cell_timeout: int, restore_deleted: bool,
              sandbox: str = "none", memory_limit: int | None = None) -> dict:
    """Rebuild, then nbgrader-autograde one submission; returns the result record (also saved)."""
    t0 = time.time()
    result = {"student": student, "assignment": slug, "status": "graded", "reason": "", "notes": [],
              "submission_sha256": submission_digest(course, student, slug),
              "release_sha256": release_digest(course, slug), "run_id": os.environ.get(RUN_ID, ""),
              "run": os.environ.get(launcher.MARKER, "")}
    mark_started(course, student, slug, result["run_id"])
    # nbgrader reads submissions from <course>/rebuilt/: submitted/ stays as the student sent it
    dst_dir = course / "rebuilt" / student / slug
    nb, why_not = rebuild_submission(course, student, slug, dst_dir, restore_deleted, result)
    if nb is None:
        return finish_zero(course, student, slug, why_not, result, t0)

    timeouts = []       # (cell name, limit) of every cell that ran past its limit
    failure = run_autograde(course, student, slug, dst_dir, cell_timeout, sandbox, memory_limit, result, timeouts)
    plan = plan_file(course, student, slug)
    memory = memory_state(plan)
    result["memory"] = {k: memory[k] for k in ("how", "limit") if k in memory}
    if memory.get("warning"):
        result["notes"].append(memory["warning"])
    graded = course / "autograded" / student / slug / f"{slug}.ipynb"
    if failure or not graded.is_file():
        return finish_zero(course, student, slug, zero_reason(failure, timeouts, plan), result, t0, rebuilt=nb)

    graded_nb = read_nb(graded)
    result["cells"] = cell_results(graded_nb, plan)
    confirm_by_replay(course, student, slug, dst_dir / f"{slug}.ipynb", graded, graded_nb, result, cell_timeout)
    zero_cells(graded, graded_nb, cheat_voids(nb, result["cells"]), "Voided", result)
    result["seconds"] = round(time.time() - t0, 1)
    save_result(course, result)
    return result


def rebuild_submission(course: Path, student: str, slug: str, dst_dir: Path, restore_deleted: bool, result: dict):
    """(notebook, "") with the student's files and the rebuilt notebook written to `dst_dir`, or (None, why)
    when the submission holds no notebook to grade. Notes and static flags go to `result`."""
    import nbformat

    # links and special files are dropped here, before anything reads them
    if dst_dir.exists():
        shutil.rmtree(dst_dir)
    result["notes"] += copy_submission(course / "submitted" / student / slug, dst_dir)
    path, note = find_submitted_notebook(course, student, slug)
    if note:
        result["notes"].append(note)
    sub = read_submission(path) if path else None
    if sub is None:
        return None, note if path is None else "the submitted file is not a notebook"
    source = read_nb(course / "source" / slug / f"{slug}.ipynb")
    release = read_nb(course / "release" / slug / f"{slug}.ipynb")
    nb, notes = rebuild(sub, source, release, restore_deleted=restore_deleted)
    result["notes"] += notes
    result["flags"] = static_flags(nb)          # for the instructor's review: never a score
    record_direct_calls(nb)
    nbformat.write(nb, str(dst_dir / f"{slug}.ipynb"))
    return nb, ""


def run_autograde(course: Path, student: str, slug: str, dst_dir: Path, cell_timeout: int, sandbox: str,
                  memory_limit: int | None, result: dict, timeouts: list) -> list[str]:
    """nbgrader's Autograde of the rebuilt notebook (in `dst_dir`) in the sandboxed kernel; returns the
    failure, if any (["Error: message"]), and appends each cell that ran past its limit to `timeouts`."""
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.converters import Autograde
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, ClearOutput, DeduplicateIds,
                                        IgnorePattern, LimitOutput, OverwriteKernelspec)

    quiet_traitlets()
    cfg = nbgrader_config(course, cell_timeout, submitted="rebuilt")
    # nbgrader's Autograde needs a gradebook to write: this unit's own copy. The course's gradebook has
    # one writer, the collector (collect.py), which takes the scores from the signed result.
    cfg.CourseDirectory.db_url = f"sqlite:///{private_gradebook(course, student, slug)}"
    if memory_limit is None:
        memory_limit = parse_size(DEFAULT_MEMORY_LIMIT)
    cfg.Execute.kernel_name = sandboxed_kernel(course, student, slug, dst_dir, sandbox, result, memory_limit)
    # after the last cell the kernel is killed, not asked to exit: every output and recording is in by then
    # (a cell ends when the kernel is idle again, a recording is renamed into place inside its call), and
    # a kernel that imported torch takes ~1.7 s to tear its modules down. What it started dies with it
    # (the PID namespace; kill_marked for --sandbox none), as after a kernel that did not stop.
    cfg.Execute.shutdown_kernel = "immediate"
    cfg.Autograde.force = True
    cfg.Autograde.create_student = True
    # the rebuilt notebook already holds the source's locked cells (OverwriteCells would also
    # restore a deleted-test placeholder to the real test, handing out its points)
    cfg.Autograde.sanitize_preprocessors = [ClearOutput, DeduplicateIds, OverwriteKernelspec, CheckCellMetadata]
    cfg.Autograde.autograde_preprocessors = [bounded_execute(cell_timeout, timeouts), IgnorePattern,
                                             ClearMetadataPreprocessor, LimitOutput, save_autogrades_class(),
                                             AssignLatePenalties, CheckCellMetadata]
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
            failure.append(f"{type(exc).__name__}: {checks_failure.summary(exc)}".strip(": "))
            raise
    app.convert_single_notebook = convert
    try:
        app.start()
    except BaseException as exc:   # noqa: BLE001 - NbGraderException, SystemExit
        if not failure:
            failure.append(f"{type(exc).__name__}: {exc}")
    return failure


def zero_reason(failure: list[str], timeouts: list, plan: Path) -> str:
    """Why a notebook that nbgrader did not finish scores 0: the kernel died (of memory?), a cell did not
    stop when interrupted, the memory limit, or nbgrader's own error."""
    reason = failure[0] if failure else "nbgrader produced no autograded notebook"
    oom = memory_exceeded(plan)
    if "DeadKernelError" in reason or "Kernel died" in reason:
        return f"the kernel died: {oom}" if oom else "the kernel died (crash, segfault or out of memory): " + reason
    if timeouts and ("CellTimeoutError" in reason or "TimeoutError" in reason):
        name, limit = timeouts[-1]
        return f"cell {name} ran past the {limit} s limit and did not stop when interrupted: the kernel " \
               f"was stopped ({reason})"
    return f"{oom}: {reason}" if oom else reason


def cell_results(graded_nb, plan: Path) -> dict:
    """{grade id: {"score", "max", "why"}} of the executed notebook; a failure that was the memory limit says so."""
    cells = {}
    for cell in graded_nb.cells:
        if is_grade(cell):
            score, why = cell_score(cell)
            oom = memory_error(plan, why) if score == 0 and why else ""
            why = f"{oom}: {why}" if oom else why
            cells[grade_id(cell)] = {"score": score, "max": float(cell.metadata["nbgrader"]["points"]), "why": why}
    return cells


def private_gradebook(course: Path, student: str, slug: str) -> Path:
    """A copy of the course's gradebook for this unit alone (read, never written, here)."""
    import sqlite3
    path = course / "units" / student / f".{slug}.gradebook.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    with sqlite3.connect(f"file:{course / 'gradebook.db'}?mode=ro", uri=True) as src, sqlite3.connect(path) as dst:
        src.backup(dst)
    return path


def finish_zero(course, student, slug, reason, result, t0, rebuilt=None):
    """Every graded cell of this problem scores 0 with `reason`, in the result and the autograded notebook."""
    import nbformat

    result.update(status="zero", reason=reason)
    ran = course / "rebuilt" / student / slug / f"{slug}.ipynb"
    if "flags" not in result and ran.is_file() and not ran.is_symlink():   # the grading process died after rebuilding
        result["flags"] = static_flags(read_nb(ran))
    source = read_nb(course / "source" / slug / f"{slug}.ipynb")
    # this notebook becomes the student's feedback: never the source, whose solution cells hold the answers
    if rebuilt is None:
        rebuilt = read_nb(ran) if ran.is_file() and not ran.is_symlink() else \
            read_nb(course / "release" / slug / f"{slug}.ipynb")
    nb = rebuilt
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
    result["cells"] = {grade_id(c): {"score": 0.0, "max": float(c.metadata["nbgrader"]["points"]), "why": reason}
                       for c in source.cells if is_grade(c)}
    result["seconds"] = round(time.time() - t0, 1)
    save_result(course, result)
    return result


def cmd_one(args) -> int:
    mode = args.sandbox if args.sandbox != "auto" else choose_sandbox("auto")[0]
    try:
        grade_one(args.course, args.student[0], args.assignment[0], args.cell_timeout, args.restore_deleted_tests,
                  mode, args.memory_limit)
    finally:
        kill_marked(os.environ.get(launcher.MARKER))
        release_memory(plan_file(args.course, args.student[0], args.assignment[0]))
    return 0
