"""Rebuilding a submission on the source notebook: the notebook that is graded (see `rebuild`)."""
from __future__ import annotations

import json
import os
import stat
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
    import copy

    import nbformat

    notes: list[str] = []
    src_cells = list(source.cells)
    rel_by_id = {grade_id(c): c for c in release.cells if grade_id(c)}
    ids = [grade_id(c) for c in src_cells]
    kind = {}
    for c in src_cells:
        gid = grade_id(c)
        kind[gid] = "solution" if is_solution(c) else "grade" if is_grade(c) else "locked"
    by_cellid = {}
    for c in src_cells:
        cid = c.get("id")
        if cid:
            by_cellid[cid] = grade_id(c)
    exact = {}
    for gid in ids:
        rc = rel_by_id.get(gid)
        if rc is not None:
            exact.setdefault((rc.cell_type, _norm(rc.source)), []).append(gid)

    sub_cells = [c for c in submission.cells if c.get("cell_type") in ("code", "markdown")]
    match: list = [None] * len(sub_cells)       # gid or None
    how: list = [None] * len(sub_cells)
    claimed: dict[str, int] = {}
    duplicate = [False] * len(sub_cells)

    def claim(i, gid, why):
        if gid in claimed:
            if kind[gid] == "solution":
                return False      # a second copy of a solution cell: kept as an extra cell
            duplicate[i] = True   # a second copy of a locked cell: dropped
            how[i] = f"copy of {gid}"
            return True
        claimed[gid] = i
        match[i], how[i] = gid, why
        return True

    # 1a. metadata / cell id / exact text
    for i, c in enumerate(sub_cells):
        meta_gid = c.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if meta_gid in kind and claim(i, meta_gid, "metadata"):
            continue
        cid = c.get("id")
        if cid in by_cellid and by_cellid[cid] in kind and sub_cells[i].cell_type == \
                src_cells[ids.index(by_cellid[cid])].cell_type and claim(i, by_cellid[cid], "cell id"):
            continue
        for gid in exact.get((c.cell_type, _norm(c.source)), []):
            if gid not in claimed or kind[gid] != "solution":
                if claim(i, gid, "text"):
                    break
    # 1b. fuzzy: release lines contained in an unidentified code cell
    scored = []
    for i, c in enumerate(sub_cells):
        if match[i] is None and not duplicate[i] and c.cell_type == "code":
            for gid in ids:
                if gid in claimed or kind[gid] == "locked" and src_cells[ids.index(gid)].cell_type != "code":
                    continue
                s = _containment(_skeleton(rel_by_id[gid]), c.source) if gid in rel_by_id else 0.0
                if s >= MATCH_THRESHOLD:
                    scored.append((-s, i, gid))
    for negs, i, gid in sorted(scored):
        if match[i] is None and not duplicate[i] and gid not in claimed:
            claim(i, gid, f"similar text ({-negs:.0%} of its lines)")
    # 1c. position: a solution cell between its identified neighbours
    for k, gid in enumerate(ids):
        if kind[gid] != "solution" or gid in claimed:
            continue
        before = [claimed[g] for g in ids[:k] if g in claimed]
        after = [claimed[g] for g in ids[k + 1:] if g in claimed]
        lo = max(before) if before else -1
        hi = min(after) if after else len(sub_cells)
        for i in range(lo + 1, hi):
            if match[i] is None and not duplicate[i] and sub_cells[i].cell_type == "code":
                claim(i, gid, "position")
                break

    # notes for the instructor
    for i, c in enumerate(sub_cells):
        gid = match[i]
        if duplicate[i]:
            notes.append(f"dropped a {how[i]}")
        elif gid and how[i] != "metadata":
            notes.append(f"{gid}: recognised by {how[i]}")
        if gid and kind[gid] != "solution" and gid in rel_by_id and \
                _norm(c.source) != _norm(rel_by_id[gid].source) and kind[gid] == "grade":
            notes.append(f"{gid}: edited test cell restored")
        elif gid and kind[gid] == "locked" and _norm(c.source) != _norm(rel_by_id[gid].source):
            notes.append(f"{gid}: edited locked cell restored")

    # extra cells follow the identified cell they followed in the submission
    extras: dict = {}
    last = None
    for i, c in enumerate(sub_cells):
        if match[i] is not None:
            last = match[i]
        elif not duplicate[i]:
            extras.setdefault(last, []).append(c)

    cells = []

    def add_extra(after):
        for c in extras.get(after, []):
            meta = {}
            if c.cell_type == "code":
                cells.append(nbformat.v4.new_code_cell(c.source, metadata=meta))
            else:
                cells.append(nbformat.v4.new_markdown_cell(c.source, metadata=meta))
    n_extra = sum(len(v) for v in extras.values())
    if n_extra:
        notes.append(f"{n_extra} cell(s) added by the student kept")

    add_extra(None)
    for sc in src_cells:
        gid = grade_id(sc)
        new = copy.deepcopy(sc)
        new.outputs = [] if new.cell_type == "code" else new.get("outputs")
        if new.cell_type != "code":
            new.pop("outputs", None)
        if kind[gid] == "solution":
            if gid in claimed:
                new.source = sub_cells[claimed[gid]].source
                cells.append(new)
            else:
                notes.append(f"{gid}: solution cell not found in the submission")
        elif kind[gid] == "grade" and gid not in claimed:
            if restore_deleted:
                notes.append(f"{gid}: deleted test cell restored")
                cells.append(new)
            else:
                notes.append(f"{gid}: test cell deleted from the submission: 0 points")
                new.source = (f"# The graded cell {gid} was deleted from the submitted notebook.\n"
                              f"raise AssertionError('the graded cell {gid} was deleted from the submitted "
                              f"notebook: it scores 0')")
                cells.append(new)
        else:
            cells.append(new)
        add_extra(gid)
    nb = nbformat.v4.new_notebook(cells=cells, metadata=copy.deepcopy(source.metadata))
    for c in nb.cells:
        if c.cell_type == "code":
            c.execution_count = None
    return nb, notes


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
