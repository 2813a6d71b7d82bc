"""`grade.py status`: the latest run's units, done / running / failed / queued, with an ETA."""
from __future__ import annotations

import os
import time

from .course import require_course
from .results import latest_run, load_result, unit_state


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (OSError, ValueError, TypeError):
        return False


def run_status(course, run: dict) -> dict:
    """{"done", "running", "failed", "queued"}: lists of units, and "eta_s" (None when unknown)."""
    run_id = run["run_id"]
    out = {"done": [], "running": [], "failed": [], "queued": []}
    seconds = []

    def done(u):
        r = load_result(course, *u)
        if r and r.get("run_id") == run_id:
            seconds.append(r.get("seconds", 0))
            return True
        return False

    def started(u):
        return unit_state(course, *u).get("run_id") == run_id

    if run["executor"] == "slurm":
        from .slurm import ACTIVE, task_states
        states = task_states(run)
        for t in run["tasks"]:
            state = states.get(t["task"], "ENDED")
            current = state == "RUNNING"          # a task grades its units in order: the first left is running
            for u in map(tuple, t["units"]):
                if done(u):
                    out["done"].append(u)
                elif state not in ACTIVE:
                    out["failed"].append(u)
                elif current:
                    out["running"].append(u)
                    current = False
                else:
                    out["queued"].append(u)
        parallel = run.get("parallel", 1)
    else:
        alive = _alive(run.get("pid"))
        for u in map(tuple, run["units"]):
            if done(u):
                out["done"].append(u)
            elif not alive:
                out["failed"].append(u)
            elif started(u):
                out["running"].append(u)
            else:
                out["queued"].append(u)
        parallel = max(1, len(out["running"]))
    left = len(out["running"]) + len(out["queued"])
    out["eta_s"] = (sum(seconds) / len(seconds)) * left / max(1, parallel) if seconds and left else (0 if not left else None)
    return out


def cmd_status(args) -> int:
    course = args.course
    require_course(course, gradebook=False)
    run = latest_run(course)
    if run is None:
        print("no grading run yet: `python tools/grade.py autograde`")
        return 0
    st = run_status(course, run)
    age = time.time() - run["started"]
    where = f"Slurm job array {run['array']}" if run["executor"] == "slurm" else f"local (pid {run.get('pid')})"
    print(f"run {run['run_id']} ({where}), started {age / 60:.1f} min ago: {len(run['units'])} unit(s)")
    eta = st["eta_s"]
    eta_text = "done" if eta == 0 else "unknown (no unit finished yet)" if eta is None else f"about {eta / 60:.1f} min"
    print(f"  done {len(st['done'])}   running {len(st['running'])}   failed {len(st['failed'])}   "
          f"queued {len(st['queued'])}   ETA {eta_text}")
    for name in ("running", "failed"):
        for s, a in st[name][:20]:
            print(f"  {name:8s} {s}/{a}")
    if st["failed"]:
        print("  failed units have no result from this run: `python tools/grade.py autograde` grades them again")
    return 0
