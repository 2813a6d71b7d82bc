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
    python tools/grade.py gradescope -a SLUG      one problem's autograder.zip for Gradescope

The work is done by the package tools/grading/ (one module per job, listed in its __init__.py);
this file is the entry point that the `_one` and `_shard` subprocesses, Gradescope's run_autograder and
the tests run by path.
See docs/instructor.md.
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if sys.path[0] == str(HERE):        # run by path: the repository takes the place of tools/ (imports: `tools.`)
    sys.path[0] = str(HERE.parent)
elif str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))
from tools import course_format  # noqa: E402

course_format.skip_iri_grammar()
from tools.grading.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
