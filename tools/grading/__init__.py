"""The grader behind tools/grade.py, one job per module:

    cells           reading notebooks; what a cell is (graded, solution, id) and its hidden-test lines
    nbgrader_setup  nbgrader's configuration for a course directory
    course          the course directory: released assignments, submissions, usage errors
    release         `release`: build the repository's notebooks and register them in the gradebook
    rebuild         the notebook to grade: the source notebook with the student's solution cells in it
    score           the score of an executed graded cell (nbgrader's SaveAutoGrades with that rule)
    results         signed result records, the submission and release checksums, units' start records
    sandbox/        the kernel's sandbox: the grader's side (jail, plan, kernelspec, memory cap read back,
                    killing what a run left) and launcher.py, the kernel's first step (its own process)
    replay/         graded cells confirmed on their recorded calls: the grader's side and replayer.py,
                    the replay (its own process, without student code)
    autograde_one   one submission, in its own subprocess (`grade.py _one`)
    runner          `autograde`: every unit in a worker subprocess with a wall-clock limit; local executor (--jobs,
                    --gpus); `_shard`, a Slurm task's units
    slurm           `autograde --executor slurm`: the run as a submitit job array; Slurm task states
    collect         `collect`: the gradebook's one writer, from the signed results
    status          `status`: the latest run's units done / running / failed / queued, ETA
    feedback        `feedback`: HTML without hidden tests, checked for leaks
    report          `export` and `summary`, from the signed results
    gradescope      `gradescope`: one problem's autograder.zip, and the harness run_autograder runs there
    cli             the command line

Imported one way, as `tools.grading`, with the repository root on sys.path: the entry points run by
path (tools/grade.py, replay/replayer.py) put it there first. _failure loads the checks' Failure by path.
"""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
# the `_one` and `_shard` subprocesses start from the entry point, by path, as the tests do
GRADE_SCRIPT = REPO / "tools" / "grade.py"
DEFAULT_COURSE = REPO / "course"
DEFAULT_CELL_TIMEOUT = 300       # s: one graded cell; the CPU tier's slowest check cell takes ~15 s
DEFAULT_TIMEOUT = 1200           # s: one whole notebook, kernel start included
