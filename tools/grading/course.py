"""The course directory: its released assignments and submissions, and what to say when it is unusable."""
from __future__ import annotations

import sys
from pathlib import Path

from tools import course_format


def find_assignments(course: Path) -> list[str]:
    return course_format.find_slugs(course / "source", ".ipynb")


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


# nbgrader globs and strips student ids: such a name would grade someone else's notebook or none
GLOB_CHARS = set("*?[]")


def name_problem(name: str):
    """Why a student folder name cannot be graded (and how to rename it), or None when it can."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8: rename it with letters, digits, '-' or '_'"
    if name != name.strip():
        return f"its name starts or ends with whitespace: rename it to {name.strip()!r}"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "its name holds control characters: rename it with letters, digits, '-' or '_'"
    if GLOB_CHARS & set(name):
        return "its name holds one of * ? [ ] (a pattern to nbgrader): rename it without them"
    if name.startswith("."):
        return f"its name starts with '.' (hidden): rename it to {name.lstrip('.')!r}"
    return None


def _is_real_dir(p: Path) -> bool:
    return p.is_dir() and not p.is_symlink()


def refused(course: Path, assignments=None, students=None) -> list[str]:
    """One line for each submission folder that is not graded: a name nbgrader cannot take, a symlink."""
    sub = course / "submitted"
    out = []
    if not sub.is_dir():
        return out
    for sd in sorted(sub.iterdir()):
        if students and sd.name not in students:
            continue
        where = f"submitted/{sd.name!r}"
        if sd.is_symlink():
            out.append(f"{where} not graded: it is a symbolic link, not a folder: copy the folder there")
        elif sd.is_dir() and name_problem(sd.name):
            out.append(f"{where} not graded: {name_problem(sd.name)}")
        elif sd.is_dir():
            for ad in sorted(sd.iterdir()):
                if ad.is_symlink() and (not assignments or ad.name in assignments):
                    out.append(f"{where}/{ad.name!r} not graded: it is a symbolic link, not a folder: "
                               f"copy the folder there")
    return out


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
    # links are never followed: what a student submits is what lies inside submitted/<student>/<slug>/
    for sd in sorted(p for p in sub.iterdir() if _is_real_dir(p) and not name_problem(p.name)):
        if students and sd.name not in students:
            continue
        for ad in sorted(p for p in sd.iterdir() if _is_real_dir(p)):
            if assignments and ad.name not in assignments:
                continue
            if ad.name not in known:
                print(f"grade: skipping {ad}: {ad.name} is not a released assignment", file=sys.stderr)
                continue
            out.append((sd.name, ad.name))
    return out
