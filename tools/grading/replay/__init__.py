"""The verdict of a graded cell does not come from the student's process alone (autograder/watch/record.py).

Two sides, two processes:

    replayer.py     run by path in a fresh process of the grader's, without student code: the graded
                    cells again, on the calls the student's kernel recorded
    (this module)   the grader's side: graded cells made to record their calls, and the replay's verdict
                    applied to the scores
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tools import course_format

from ..cells import is_grade
from ..sandbox import KERNEL_ENV
from ..score import zero_cells
from .replayer import free_names

REPLAYER = Path(__file__).resolve().parent / "replayer.py"     # run by path, in a process of its own

# a hidden region: the feedback strips it, so the student sees the test cell as released
REPLAY_CELL = (f"{course_format.BEGIN_HIDDEN}\n"
               "__import__('autograder.record').record.wrap_globals(globals(), {names!r})\n"
               f"{course_format.END_HIDDEN}\n")


def record_direct_calls(nb):
    """Graded cells record the direct calls they make of functions that earlier cells defined."""
    for cell in nb.cells:
        if is_grade(cell) and cell.cell_type == "code":
            try:
                names = free_names(cell.source)
            except SyntaxError:
                continue
            if names:
                cell.source = REPLAY_CELL.format(names=names) + cell.source


def confirm_by_replay(course, student, slug, rebuilt: Path, graded: Path, graded_nb, result, cell_timeout):
    """Replay the graded cells on the recorded calls (replayer.py, a process without student code);
    a cell that passed in the kernel but not in the replay scores 0, in the result, gradebook and notebook."""
    passed = [gid for gid, c in result["cells"].items() if c["score"] > 0]
    if not passed:
        return
    records = course / "jails" / student / slug / ".records"
    out = records.parent.parent / f".{slug}.replay.json"
    env = {k: os.environ[k] for k in KERNEL_ENV if k in os.environ}
    env.update(AUTOGRADER_REPLAY=str(records), HOME=str(records.parent.parent), MPLBACKEND="Agg")
    try:
        proc = subprocess.run([sys.executable, str(REPLAYER), str(rebuilt), str(out)],
                              env=env, cwd=str(records.parent.parent), capture_output=True, text=True,
                              timeout=max(60, cell_timeout * len(result["cells"])))
        verdict = json.loads(out.read_text()) if proc.returncode == 0 else {}
        trouble = "" if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
    except (subprocess.TimeoutExpired, OSError, ValueError) as exc:
        verdict, trouble = {}, f"{type(exc).__name__}"
    failed = {}
    for gid in passed:
        v = verdict.get(gid, {"ok": False, "why": f"the replay did not run ({trouble})"})
        result["cells"][gid]["replayed"] = bool(v["ok"])
        if not v["ok"]:
            failed[gid] = f"not confirmed when the grader replayed the recorded calls: {v['why']}"
    shutil.rmtree(records, ignore_errors=True)      # outputs of every call: large, and no longer needed
    zero_cells(graded, graded_nb, failed, "NotConfirmed", result)
