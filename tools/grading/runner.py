"""`grade.py autograde`: every unit (student, problem) graded by a worker: `grade.py _one`, a subprocess
with a wall-clock limit whose kernel runs in the sandbox. Workers write only their units' signed results;
the collector (collect.py) writes the gradebook. Where workers run is the executor's choice: threads of this
machine (`--jobs`), every GPU of the node (`--gpus`), or a Slurm job array through submitit (slurm.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import queue
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import GRADE_SCRIPT, REPO
from .audit import quoted
from .autograde_one import RUN_ID, finish_zero
from .course import UsageError, refused, require_course, submissions
from .collect import sync_gradebook
from .results import keep_feedback_notes, load_result, release_digest, save_result, save_run, submission_digest
from .sandbox import choose_sandbox, cover_once, kill_marked, kill_tree, launcher, plan_file, release_memory


def run_one(course, student, slug, args, env_extra=None) -> dict:
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
    env[launcher.MARKER] = marker = secrets.token_hex(12)
    env.setdefault("TQDM_DISABLE", "1")        # progress bars are noise in feedback
    env.setdefault("PYTHONHASHSEED", "0")
    if args.tier:
        env["AUTOGRADER_TIER"] = args.tier
    if args.jobs > 1:
        env.setdefault("OMP_NUM_THREADS", "1")
    env.update(env_extra or {})
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
                               "run_id": env.get(RUN_ID, ""), "release_sha256": release_digest(course, slug),
                               "submission_sha256": submission_digest(course, student, slug)}, t0)
    result["seconds"] = round(time.time() - t0, 1)
    keep_feedback_notes(before, result)
    save_result(course, result)
    return result


def up_to_date(course: Path, student: str, slug: str) -> bool:
    """Graded, and neither the submission nor the problem's release changed since."""
    r = load_result(course, student, slug)
    return bool(r) and r.get("status") != "tampered" and \
        r.get("submission_sha256") == submission_digest(course, student, slug) and \
        r.get("release_sha256") == release_digest(course, slug)


def new_run_id() -> str:
    import secrets
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def unit_line(r: dict) -> str:
    got = sum(c["score"] for c in r["cells"].values())
    top = sum(c["max"] for c in r["cells"].values())
    extra = f"  ({quoted(r['reason'], 200)})" if r["status"] != "graded" else ""
    return f"  {r['student']:16s} {r['assignment']:28s} {got:5g}/{top:<4g} {r.get('seconds', 0):7.1f} s{extra}"


class Progress:
    """Units done out of `total` with an ETA: a tqdm bar on a terminal; in a log, the count and ETA at the end
    of each unit's line. `line(text)` prints a finished unit's line and counts it."""

    def __init__(self, total: int, what: str):
        from tqdm import tqdm
        self.total, self.done, self.t0 = total, 0, time.time()
        self.bar = tqdm(total=total, desc=what, unit="unit", file=sys.stderr, dynamic_ncols=True,
                        mininterval=1.0) if sys.stderr.isatty() else None

    def line(self, text: str):
        from tqdm import tqdm
        self.done += 1
        if self.bar is not None:
            self.bar.write(text, file=sys.stdout)
            self.bar.update(1)
            return
        elapsed = time.time() - self.t0
        eta = elapsed / self.done * (self.total - self.done)
        print(f"{text}  [{self.done}/{self.total}, ETA {tqdm.format_interval(eta)}]", flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def gpu_slots(spec, per_gpu: int) -> list:
    """['0', '0', '1', '1', ...]: one worker slot per GPU and job, from `--gpus all|0,1,3`."""
    if spec is None:
        return []
    if spec == "all":
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=30)
            ids = out.stdout.split() if out.returncode == 0 else []
        except (OSError, subprocess.TimeoutExpired):
            ids = []
        if not ids:
            raise UsageError("--gpus all: nvidia-smi lists no GPU here; name them (--gpus 0,1) or leave --gpus out")
    else:
        ids = [g.strip() for g in spec.split(",") if g.strip()]
        if not ids or not all(g.isdigit() for g in ids):
            raise UsageError(f"--gpus {spec}: give `all` or GPU indices like 0,1,3")
    return [g for g in ids for _ in range(per_gpu)]


def local_autograde(course, todo, args, run_id) -> list:
    """Grade `todo` on this machine: `--jobs` threads, or one per GPU slot pinned with CUDA_VISIBLE_DEVICES."""
    slots = gpu_slots(args.gpus, args.jobs_per_gpu)
    free = queue.Queue()
    for slot in slots or [None] * max(1, args.jobs):
        free.put(slot)
    bar = Progress(len(todo), "autograde")
    cover = cover_once(args.sandbox)

    def one(item):
        slot = free.get()
        try:
            extra = {RUN_ID: run_id, **cover}
            if slot is not None:
                extra["CUDA_VISIBLE_DEVICES"] = slot
            r = run_one(course, *item, args, extra)
        finally:
            free.put(slot)
        bar.line(unit_line(r) + (f"  [GPU {slot}]" if slot is not None else ""))
        return r
    with ThreadPoolExecutor(max_workers=free.qsize()) as pool:
        results = list(pool.map(one, todo))
    bar.close()
    return results


def pending(course, args) -> tuple[list, list]:
    """(units to grade, lines about folders refused before grading)."""
    todo = submissions(course, args.assignment, args.student)
    not_graded = refused(course, args.assignment, args.student)
    if not args.force:
        todo = [(s, a) for s, a in todo if not up_to_date(course, s, a)]
    return todo, not_graded


def cmd_autograde(args) -> int:
    course = args.course
    require_course(course)
    todo, not_graded = pending(course, args)
    for line in not_graded:
        print(f"grade: {line}", file=sys.stderr)
    if not todo:
        print("grade: nothing to autograde: every submission is graded and unchanged since "
              "(use --force to grade again)")
        return 1 if not_graded else 0
    args.sandbox, warning = choose_sandbox(args.sandbox)
    if warning:
        print(f"grade: WARNING: {warning}", file=sys.stderr)
    run_id = new_run_id()
    where = {"local": (f"{len(gpu_slots(args.gpus, args.jobs_per_gpu))} GPU slot(s)" if args.gpus is not None
                       else f"{args.jobs} at a time")}.get(args.executor, f"Slurm partition {args.partition or 'default'}")
    print(f"autograding {len(todo)} submission(s), {where}; cell timeout {args.cell_timeout} s, "
          f"notebook limit {args.timeout} s; sandbox: {args.sandbox}; run {run_id}")
    t0 = time.time()
    if args.executor == "slurm":
        from .slurm import slurm_autograde
        rc = slurm_autograde(course, todo, args, run_id)
        if rc:
            return rc
    else:
        save_run(course, {"run_id": run_id, "executor": "local", "pid": os.getpid(), "started": t0,
                          "units": [list(u) for u in todo]})
        local_autograde(course, todo, args, run_id)
    n = sync_gradebook(course)
    print(f"autograded {len(todo)} submission(s) in {time.time() - t0:.1f} s; gradebook: {n} unit(s)")
    return 1 if not_graded else 0


def cmd_shard(args) -> int:
    """`grade.py _shard --units FILE`: a Slurm task's share of a run, one unit after the other."""
    spec = json.loads(Path(args.units).read_text())
    args.sandbox = choose_sandbox(args.sandbox)[0]
    cover = cover_once(args.sandbox)
    for student, slug in spec["units"]:
        r = run_one(args.course, student, slug, args, {RUN_ID: spec["run_id"], **cover})
        print(unit_line(r), flush=True)
    return 0
