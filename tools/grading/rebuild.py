"""Rebuilding a submission on the source notebook: the notebook that is graded (see `rebuild`)."""
from __future__ import annotations

import copy
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .cells import grade_id, is_grade, is_solution, nonblank_lines

STUB_LINES = {"# YOUR CODE HERE", "raise NotImplementedError()", "raise NotImplementedError"}
MATCH_THRESHOLD = 0.6            # share of a release cell's lines a submitted cell must contain to be that cell


def _skeleton(cell) -> list[str]:
    """The lines of a release cell a student is not meant to change."""
    return [ln for ln in nonblank_lines(cell.source) if ln not in STUB_LINES]


def _norm(source: str) -> str:
    return "\n".join(ln.rstrip() for ln in source.strip("\n").split("\n"))


def _containment(skeleton: list[str], candidate: str) -> float:
    """Share of `skeleton`'s lines found in `candidate` (multiset), 0 when the skeleton is too short."""
    if len(skeleton) < 2:
        return 0.0
    pool = {}
    for ln in nonblank_lines(candidate):
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
    import nbformat

    src = _Source(source, release)
    found = _Identified(src, [c for c in submission.cells if c.get("cell_type") in ("code", "markdown")])
    found.by_evidence()
    found.by_similarity()
    found.by_position()
    notes = found.notes()
    extras = found.extras()
    n_extra = sum(len(v) for v in extras.values())
    if n_extra:
        notes.append(f"{n_extra} cell(s) added by the student kept")

    cells = _added_cells(extras.get(None, []))
    for sc in src.cells:
        gid = grade_id(sc)
        i = found.claimed.get(gid)
        new = _graded_copy(sc, src.kind[gid], found.seen[i].cell if i is not None else None, restore_deleted, notes)
        cells += [new] if new is not None else []
        cells += _added_cells(extras.get(gid, []))
    return nbformat.v4.new_notebook(cells=cells, metadata=copy.deepcopy(source.metadata)), notes


class _Source:
    """The source notebook's cells, looked up the ways rule 1 needs."""

    def __init__(self, source, release):
        self.cells = list(source.cells)
        self.ids = [grade_id(c) for c in self.cells]
        self.release = {grade_id(c): c for c in release.cells if grade_id(c)}
        self.kind = {grade_id(c): "solution" if is_solution(c) else "grade" if is_grade(c) else "locked"
                     for c in self.cells}
        self.by_cellid = {c.get("id"): grade_id(c) for c in self.cells if c.get("id")}
        self.exact = {}         # (cell type, release text) -> grade ids
        for gid in self.ids:
            rc = self.release.get(gid)
            if rc is not None:
                self.exact.setdefault((rc.cell_type, _norm(rc.source)), []).append(gid)

    def cell(self, gid):
        return self.cells[self.ids.index(gid)]


@dataclass
class _Seen:
    """A submitted cell and what rule 1 made of it."""
    cell: dict
    gid: str | None = None      # the source cell it is
    how: str | None = None      # the evidence, or "copy of <gid>" when dropped
    dropped: bool = False       # a second copy of a locked cell

    @property
    def open(self) -> bool:
        """Neither identified nor dropped yet."""
        return self.gid is None and not self.dropped


class _Identified:
    """Rule 1 over the submitted cells: one _Seen each, and the source cells claimed so far."""

    def __init__(self, src: _Source, sub_cells: list):
        self.src = src
        self.seen = [_Seen(c) for c in sub_cells]
        self.claimed: dict[str, int] = {}       # grade id -> index in seen

    def claim(self, i: int, gid: str, why: str) -> bool:
        """Submitted cell i is source cell gid (True), or a copy of one already claimed (dropped: True;
        a solution cell's copy stays open: False)."""
        if gid in self.claimed:
            if self.src.kind[gid] == "solution":
                return False      # a second copy of a solution cell: kept as an extra cell
            self.seen[i].dropped, self.seen[i].how = True, f"copy of {gid}"   # of a locked cell: dropped
            return True
        self.claimed[gid] = i
        self.seen[i].gid, self.seen[i].how = gid, why
        return True

    def by_evidence(self):
        """1a: nbgrader metadata, the cell id, the exact text of a release cell."""
        src = self.src
        for i, s in enumerate(self.seen):
            c = s.cell
            meta_gid = c.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            if meta_gid in src.kind and self.claim(i, meta_gid, "metadata"):
                continue
            cid = c.get("id")
            if cid in src.by_cellid:
                gid = src.by_cellid[cid]
                if gid in src.kind and c.cell_type == src.cell(gid).cell_type and self.claim(i, gid, "cell id"):
                    continue
            for gid in src.exact.get((c.cell_type, _norm(c.source)), []):
                if (gid not in self.claimed or src.kind[gid] != "solution") and self.claim(i, gid, "text"):
                    break

    def by_similarity(self):
        """1b: release lines contained in an unidentified code cell, best share first."""
        src, scored = self.src, []
        for i, s in enumerate(self.seen):
            if s.open and s.cell.cell_type == "code":
                for gid in src.ids:
                    if gid in self.claimed or src.kind[gid] == "locked" and src.cell(gid).cell_type != "code":
                        continue
                    share = _containment(_skeleton(src.release[gid]), s.cell.source) if gid in src.release else 0.0
                    if share >= MATCH_THRESHOLD:
                        scored.append((-share, i, gid))
        for negs, i, gid in sorted(scored):
            if self.seen[i].open and gid not in self.claimed:
                self.claim(i, gid, f"similar text ({-negs:.0%} of its lines)")

    def by_position(self):
        """1c: a solution cell still unidentified takes the first unidentified code cell between its
        identified neighbours."""
        ids = self.src.ids
        for k, gid in enumerate(ids):
            if self.src.kind[gid] != "solution" or gid in self.claimed:
                continue
            lo = max((self.claimed[g] for g in ids[:k] if g in self.claimed), default=-1)
            hi = min((self.claimed[g] for g in ids[k + 1:] if g in self.claimed), default=len(self.seen))
            for i in range(lo + 1, hi):
                if self.seen[i].open and self.seen[i].cell.cell_type == "code":
                    self.claim(i, gid, "position")
                    break

    def notes(self) -> list[str]:
        """For the instructor: what was dropped, how each cell was recognised, which locked cells were edited."""
        notes = []
        for s in self.seen:
            gid = s.gid
            if s.dropped:
                notes.append(f"dropped a {s.how}")
            elif gid and s.how != "metadata":
                notes.append(f"{gid}: recognised by {s.how}")
            kind = self.src.kind[gid] if gid else None
            if kind == "grade" and gid in self.src.release and _edited(s.cell, self.src.release[gid]):
                notes.append(f"{gid}: edited test cell restored")
            elif kind == "locked" and _edited(s.cell, self.src.release[gid]):
                notes.append(f"{gid}: edited locked cell restored")
        return notes

    def extras(self) -> dict:
        """Rule 4: the cells the student added, under the identified cell they followed (None: before any)."""
        extras, last = {}, None
        for s in self.seen:
            if s.gid is not None:
                last = s.gid
            elif not s.dropped:
                extras.setdefault(last, []).append(s.cell)
        return extras


def _edited(cell, release_cell) -> bool:
    return _norm(cell.source) != _norm(release_cell.source)


def _added_cells(cells) -> list:
    """Cells the student added: their text only."""
    import nbformat
    return [nbformat.v4.new_code_cell(c.source, metadata={}) if c.cell_type == "code"
            else nbformat.v4.new_markdown_cell(c.source, metadata={}) for c in cells]


def _graded_copy(sc, kind: str, submitted, restore_deleted: bool, notes: list):
    """Rules 2-3 for one source cell: a copy without outputs; a solution cell gets the `submitted` cell's
    text (None when the student's is not found, noted), a graded cell absent from the submission fails."""
    gid = grade_id(sc)
    new = copy.deepcopy(sc)
    if new.cell_type == "code":
        new.outputs, new.execution_count = [], None
    else:
        new.pop("outputs", None)
    if kind == "solution":
        if submitted is None:
            notes.append(f"{gid}: solution cell not found in the submission")
            return None
        new.source = submitted.source
    elif kind == "grade" and submitted is None:
        if restore_deleted:
            notes.append(f"{gid}: deleted test cell restored")
        else:
            notes.append(f"{gid}: test cell deleted from the submission: 0 points")
            new.source = (f"# The graded cell {gid} was deleted from the submitted notebook.\n"
                          f"raise AssertionError('the graded cell {gid} was deleted from the submitted "
                          f"notebook: it scores 0')")
    return new


def _is_regular(p: Path) -> bool:
    """A regular file itself, not a link to one (links could point at the instructor's files)."""
    try:
        return stat.S_ISREG(os.lstat(p).st_mode)
    except OSError:
        return False


def find_submitted_notebook(course: Path, student: str, slug: str):
    d = course / "submitted" / student / slug
    nb = d / f"{slug}.ipynb"
    if _is_regular(nb):
        return nb, None
    others = sorted(p for p in d.glob("*.ipynb") if _is_regular(p))
    if len(others) == 1:
        return others[0], f"notebook submitted as {others[0].name}"
    return None, ("no notebook submitted" if not others else f"{len(others)} notebooks, none named {slug}.ipynb")


def _read_no_follow(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(f"{path.name} is not a regular file")
        return f.read()


def copy_submission(src: Path, dst: Path, skip=(".ipynb", ".ipynb_checkpoints"), _under="") -> list[str]:
    """Copy the student's files from src to dst without following a link; returns notes on what was dropped.

    Symbolic links (they could point at the solutions or the grading key) and fifos, devices and
    sockets are never read or copied; names ending in `skip` are left out silently."""
    notes = []
    dst.mkdir(parents=True, exist_ok=True)
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        name = _under + entry.name
        if entry.is_symlink():
            notes.append(f"dropped {name!r}: a symbolic link (not read)")
        elif entry.is_dir(follow_symlinks=False):
            if not entry.name.endswith(skip):
                notes += copy_submission(Path(entry.path), dst / entry.name, skip, name + "/")
        elif not entry.is_file(follow_symlinks=False):
            notes.append(f"dropped {name!r}: not a regular file (fifo, device or socket)")
        elif not entry.name.endswith(skip):
            (dst / entry.name).write_bytes(_read_no_follow(Path(entry.path)))
    return notes


def read_submission(path: Path):
    """Whatever the JSON holds, as a v4 notebook; None when it is not a notebook at all."""
    import nbformat
    try:
        raw = json.loads(_read_no_follow(path).decode("utf-8", errors="replace"))
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
