"""`grade.py collect`: the gradebook's one writer. Workers (local threads, GPU slots, Slurm tasks) only
write their units' signed results; this turns those results into nbgrader's gradebook, then the
grades CSVs and the summary (`feedback` reads the gradebook it wrote)."""
from __future__ import annotations

import sys
from pathlib import Path

from .course import require_course, submissions
from .results import load_result


def sync_gradebook(course: Path, students=None, assignments=None) -> int:
    """Every graded unit's scores into the gradebook, as its signed result has them (a tampered result: 0).
    Manual scores are cleared: a grade comes from the latest autograde. Returns the number of units."""
    from nbgrader.api import Gradebook
    results = [r for s, a in submissions(course, assignments, students)
               if (r := load_result(course, s, a)) is not None]
    if not results:
        return 0
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for r in results:
            gb.update_or_create_student(r["student"])
            submission = gb.update_or_create_submission(r["assignment"], r["student"])
            cells = r.get("cells", {})
            for nbs in submission.notebooks:
                for grade in nbs.grades:
                    grade.auto_score = float(cells.get(grade.name, {}).get("score", 0.0))
                    grade.manual_score = None
                    grade.needs_manual_grade = False
        gb.db.commit()
    return len(results)


def cmd_collect(args) -> int:
    """The gradebook, grades CSVs and summary from the results on disk (after a Slurm run, or any time)."""
    from .report import cmd_export, cmd_summary
    course = args.course
    require_course(course)
    n = sync_gradebook(course, args.student, args.assignment)
    print(f"collected {n} graded unit(s) into {course / 'gradebook.db'}", file=sys.stderr)
    rc = cmd_export(args)
    return rc or cmd_summary(args)
