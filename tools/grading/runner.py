"""`grade.py autograde`: every submission, each in a subprocess (`grade.py _one`) with a wall-clock limit."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import GRADE_SCRIPT, REPO
from ._tools import sandbox_tool
from .audit import quoted
from .autograde_one import finish_zero
from .course import refused, require_course, submissions
from .results import keep_feedback_notes, load_result, save_result, submission_digest
from .sandboxing import choose_sandbox, kill_marked, kill_tree, plan_file, release_memory


def run_one(course, student, slug, args) -> dict:
    import secrets
    before = load_result(course, student, slug)
    # `--student=NAME`: a name that starts with '-' is a value, not an option
    cmd = [sys.executable, str(GRADE_SCRIPT), "_one", f"--course={course}",
           f"--student={student}", f"--assignment={slug}", f"--cell-timeout={args.cell_timeout}"]
    if args.restore_deleted_tests:
        cmd.append("--restore-deleted-tests")
    cmd += ["--sandbox", args.sandbox, f"--memory-limit={args.memory_limit}"]
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)                # the kernel must not find the repository (solutions/)
    env[sandbox_tool.MARKER] = marker = secrets.token_hex(12)
    env.setdefault("TQDM_DISABLE", "1")        # progress bars are noise in feedback
    env.setdefault("PYTHONHASHSEED", "0")
    if args.tier:
        env["AUTOGRADER_TIER"] = args.tier
    if args.jobs > 1:
        env.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.time()
    logdir = course / "logs" / student
    logdir.mkdir(parents=True, exist_ok=True)
    rc = None
    with open(logdir / f"{slug}.log", "wb") as logf:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=args.timeout)
            why = f"the grading process exited with status {rc}" if rc else ""
        except subprocess.TimeoutExpired:
            why = f"the notebook ran longer than the {args.timeout} s limit and was stopped"
            kill_tree(proc.pid)      # the kernel too: it runs in a session of its own
            proc.wait()
    kill_marked(marker)               # whatever a submission started and detached (sandbox `none`)
    release_memory(plan_file(course, student, slug))     # the kernel's cgroup, if `_one` was killed
    result = load_result(course, student, slug)
    if not (rc == 0 and result and result.get("run") == marker and result.get("status") != "tampered"):
        if rc:
            tail = (logdir / f"{slug}.log").read_text(errors="replace").strip().splitlines()[-1:]
            why += f" ({tail[0][:200]})" if tail else ""
        result = finish_zero(course, student, slug, why or "no result",
                              {"student": student, "assignment": slug, "notes": [], "run": marker,
                               "submission_sha256": submission_digest(course, student, slug)}, t0)
    result["seconds"] = round(time.time() - t0, 1)
    keep_feedback_notes(before, result)
    save_result(course, result)
    return result


def up_to_date(course: Path, student: str, slug: str) -> bool:
    r = load_result(course, student, slug)
    return bool(r) and r.get("status") != "tampered" and \
        r.get("submission_sha256") == submission_digest(course, student, slug)


def cmd_autograde(args) -> int:
    course = args.course
    require_course(course)
    todo = submissions(course, args.assignment, args.student)
    not_graded = refused(course, args.assignment, args.student)
    for line in not_graded:
        print(f"grade: {line}", file=sys.stderr)
    if not args.force:
        todo = [(s, a) for s, a in todo if not up_to_date(course, s, a)]
    if not todo:
        print("grade: nothing to autograde: every submission is graded and unchanged since "
              "(use --force to grade again)")
        return 1 if not_graded else 0
    args.sandbox, warning = choose_sandbox(args.sandbox)
    if warning:
        print(f"grade: WARNING: {warning}", file=sys.stderr)
    print(f"autograding {len(todo)} submission(s), {args.jobs} at a time; cell timeout {args.cell_timeout} s, "
          f"notebook limit {args.timeout} s; sandbox: {args.sandbox}")

    def one(item):
        student, slug = item
        r = run_one(course, student, slug, args)
        got = sum(c["score"] for c in r["cells"].values())
        top = sum(c["max"] for c in r["cells"].values())
        extra = f"  ({quoted(r['reason'], 200)})" if r["status"] != "graded" else ""
        print(f"  {student:16s} {slug:28s} {got:5g}/{top:<4g} {r['seconds']:7.1f} s{extra}", flush=True)
        return r
    t0 = time.time()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(one, todo))
    print(f"autograded {len(todo)} submission(s) in {time.time() - t0:.1f} s")
    return 1 if not_graded else 0
