"""Submissions as students make them, from a course made by `tools/grade.py release`: the untouched
release, the reference (the source's solution cells pasted into the release, delimiters dropped), the
reference with a planted change. The grading tests and tools/graded_reference_records.py build theirs here.
"""
from __future__ import annotations

from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent


def cells_by_id(nb):
    return {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells if "nbgrader" in c.metadata}


def solutions(course, slug):
    """The reference text of every solution cell (solution delimiters dropped, as a student would)."""
    src = nbformat.read(str(course / "source" / slug / f"{slug}.ipynb"), as_version=4)
    out = {}
    for gid, c in cells_by_id(src).items():
        if c.metadata["nbgrader"].get("solution"):
            out[gid] = "\n".join(ln for ln in c.source.split("\n") if "### BEGIN SOLUTION" not in ln
                                 and "### END SOLUTION" not in ln)
    return out


def release(course, slug):
    return nbformat.read(str(course / "release" / slug / f"{slug}.ipynb"), as_version=4)


def solved(course, slug, **replace):
    nb = release(course, slug)
    sols = solutions(course, slug)
    for gid, c in cells_by_id(nb).items():
        if gid in sols:
            c.source = sols[gid]
        for old, new in replace.get(gid, []):
            assert old in c.source, (gid, old)
            c.source = c.source.replace(old, new)
    return nb


def submit(course, student, slug, nb):
    d = course / "submitted" / student / slug
    d.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(d / f"{slug}.ipynb"))


def index_of(nb, gid):
    return next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == gid)
