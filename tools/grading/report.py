"""`grade.py export` and `grade.py summary`: grades from the signed results, compared with the gradebook."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

from .audit import format_flag, inert, quoted
from .course import refused, require_course, submissions
from .results import latest_run, left_no_result, load_result, missing_reason


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
    require_course(course)
    results = graded_results(course, args.student, args.assignment)
    to = Path(args.to or course / "grades.csv")
    cells_csv = to.with_name(to.stem + "_cells.csv")
    with open(to, "w", newline="") as f, open(cells_csv, "w", newline="") as g:
        total, cells = csv.writer(f), csv.writer(g)
        total.writerow(["student_id", "assignment", "score", "max_score", "status", "reason", "flagged_for_review"])
        cells.writerow(["student_id", "assignment", "cell", "score", "max_score", "why"])
        for (student, slug), r in sorted(results.items()):
            got = sum(c["score"] for c in r["cells"].values())
            top = sum(c["max"] for c in r["cells"].values())
            flags = "; ".join(format_flag(f) for f in r.get("flags", []))
            total.writerow([student, slug, f"{got:g}", f"{top:g}", r.get("status", ""), inert(r.get("reason", "")),
                            flags])
            for gid, c in sorted(r["cells"].items()):
                cells.writerow([student, slug, gid, f"{c['score']:g}", f"{c['max']:g}", inert(c.get("why", ""))])
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
    failures, flagged = [], []
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
            # reasons and notes carry text from the student's process: quoted, one line each
            if res.get("status") in ("zero", "tampered"):
                failures.append(f"{p} {s}: 0 points: {quoted(res.get('reason'))}")
            else:
                for gid, c in sorted(cells.items()):
                    if c["score"] < c["max"]:
                        failures.append(f"{p} {s} {gid} ({c['score']:g}/{c['max']:g}): {quoted(c.get('why', ''))}")
            for n in res.get("notes", []):
                if "recognised by" not in n:
                    failures.append(f"{p} {s}: note: {quoted(n)}")
            flagged += [f"{p} {s} {format_flag(f)}: {quoted(f['code'], 120)}" for f in res.get("flags", [])]
        lines.append(row + f"{got_all:g}/{top_all:g}".rjust(10))
    if not people:
        lines.append("(no graded submissions yet: run `python tools/grade.py autograde`)")
    units = submissions(course, assignments, students)
    run = latest_run(course)
    missing = [(st, a) for st, a in units if (st, a) not in results]
    if missing:
        lines += ["", "submissions without a result:"] + [f"  {st} {a}: {missing_reason(course, st, a, run)}"
                                                          for st, a in missing]
    stale = [(st, a) for st, a in units
             if (st, a) in results and left_no_result(course, st, a, results[(st, a)], run)]
    if stale:
        lines += ["", "units whose latest grading left no result (the table shows the one before):"] + \
            [f"  {st} {a}: {missing_reason(course, st, a, run)}" for st, a in stale]
    not_graded = refused(course, assignments, students)
    if not_graded:
        lines += ["", "submission folders not graded (fix them, then autograde again):"] \
            + ["  " + n for n in not_graded]
    if failures:
        lines += ["", "failed graded cells and notes:"] + ["  " + f for f in failures]
    if flagged:
        lines += ["", "flagged for review (constructs in the students' own cells worth a look; not scored):"] \
            + ["  " + f for f in flagged]
    mismatches = gradebook_mismatches(course, results)
    if mismatches:
        lines += ["", "the gradebook differs from the signed autograde results (changed outside the grader; "
                      "this table uses the results):"] + ["  " + m for m in mismatches]
    return "\n".join(lines)


def cmd_summary(args) -> int:
    require_course(args.course)
    print(summary_table(args.course, args.student, args.assignment))
    return 0
