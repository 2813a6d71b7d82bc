"""Reading notebooks, and what a cell is: graded, a solution, its id, the lines of its hidden tests."""
from __future__ import annotations

from pathlib import Path

from tools import course_format

BEGIN_HIDDEN, END_HIDDEN = course_format.HIDDEN_WORDS


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


def nonblank_lines(source: str) -> list[str]:
    return [ln.strip() for ln in source.split("\n") if ln.strip()]
