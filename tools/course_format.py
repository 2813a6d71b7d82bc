"""What the build (tools/build_course.py) and the grader (tools/grade.py) must agree on: the region
markers of a notebook and where each problem's notebook lives. Standard library only.
"""
from __future__ import annotations

import sys
from pathlib import Path

# nbgrader treats any line that *contains* these words as a region boundary, so the grader matches
# them the same way; a source writes the full marker line alone (tools/build_course.py checks that).
SOLUTION_WORDS = ("BEGIN SOLUTION", "END SOLUTION")
HIDDEN_WORDS = ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
BEGIN_SOLUTION, END_SOLUTION = (f"### {w}" for w in SOLUTION_WORDS)
BEGIN_HIDDEN, END_HIDDEN = (f"### {w}" for w in HIDDEN_WORDS)


def find_slugs(parent: Path, suffix: str) -> list[str]:
    """Problem slugs under `parent`: the folders <slug>/ that hold <slug><suffix>.

    notebooks/ with ".py" (the sources), notebooks/ or release/ with ".ipynb" (the built notebooks),
    a course's source/ with ".ipynb" (the released assignments)."""
    if not parent.is_dir():
        return []
    return sorted(d.name for d in parent.iterdir() if d.is_dir() and (d / f"{d.name}{suffix}").is_file())


def skip_iri_grammar():
    """Keep jsonschema from importing rfc3987_syntax: every process that imports nbformat, jupytext or
    nbgrader would otherwise build its Lark grammar, 5-6 s of a 2-core machine, to check the "iri"
    string formats that no notebook schema uses. The grader starts two such processes per submission
    (`grade.py _one` and the replay), so this is about a quarter of grading a submission on the CPU tier.
    Call it first thing in an entry point; where the module was already imported, nothing changes."""
    sys.modules.setdefault("rfc3987_syntax", None)
