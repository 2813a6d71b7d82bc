"""`grade.py autograde --executor slurm`: the run's units as a Slurm job array, submitted with submitit.

Each array task is one shard: `grade.py _shard` grades its units one after the other on its node, each
in a `grade.py _one` subprocess with its kernel in the sandbox, against the course directory on the
shared file system. Tasks write only their units' signed results; when the array ends (or at
`grade.py collect`) the collector writes the gradebook. `grade.py status` reads the run's record
(course/runs/<run>.json) and `squeue` while it runs.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

from . import GRADE_SCRIPT, REPO
from .course import UsageError
from .results import load_result, save_run

POLL_S = 5


def _shards(todo: list, n: int) -> list:
    """`todo` dealt round-robin into n shards: each task gets a mix of problems, so the tasks end together."""
    return [todo[i::n] for i in range(n) if todo[i::n]]


def shard_command(course: Path, spec: Path, args) -> list:
    cmd = [sys.executable, str(GRADE_SCRIPT), "_shard", f"--course={course}", f"--units={spec}",
           f"--cell-timeout={args.cell_timeout}", f"--timeout={args.timeout}", f"--sandbox={args.sandbox}",
           f"--memory-limit={args.memory_limit}"]
    if args.restore_deleted_tests:
        cmd.append("--restore-deleted-tests")
    if args.tier:
        cmd.append(f"--tier={args.tier}")
    return cmd


def slurm_autograde(course: Path, todo: list, args, run_id: str) -> int:
    try:
        import submitit
    except ImportError:
        raise UsageError("--executor slurm needs submitit: pip install submitit (or `pip install -e '.[course]'`)")
    from .runner import Progress, unit_line
    n = min(len(todo), args.max_parallel * max(1, args.shards_per_slot))
    shards = _shards(todo, n)
    folder = course / "slurm" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    commands = []
    for i, units in enumerate(shards):
        spec = folder / f"shard-{i:04d}.json"
        spec.write_text(json.dumps({"run_id": run_id, "units": [list(u) for u in units]}))
        commands.append(submitit.helpers.CommandFunction(shard_command(course, spec, args), cwd=str(REPO)))
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    longest = max(len(u) for u in shards)
    params = dict(timeout_min=math.ceil(args.time_per_unit * longest / 60) + 2, cpus_per_task=args.cpus_per_task,
                  slurm_array_parallelism=args.max_parallel, name=f"grade-{run_id}",
                  mem_gb=max(1, math.ceil(args.memory_limit / 2**30) + 2) if args.memory_limit else None)
    if args.partition:
        params["slurm_partition"] = args.partition
    if args.gpus_per_task:
        params["slurm_gpus_per_node"] = args.gpus_per_task
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    with executor.batch():
        jobs = [executor.submit(c) for c in commands]
    array = jobs[0].job_id.split("_")[0]
    run = {"run_id": run_id, "executor": "slurm", "array": array, "started": time.time(), "folder": str(folder),
           "tasks": [{"task": j.job_id, "units": [list(u) for u in s]} for j, s in zip(jobs, shards)],
           "units": [list(u) for u in todo], "parallel": args.max_parallel}
    save_run(course, run)
    print(f"submitted Slurm job array {array}: {len(shards)} task(s), at most {args.max_parallel} at once; "
          f"`python tools/grade.py status --course {course}` while it runs")
    if args.no_wait:
        print("not waiting (--no-wait): `python tools/grade.py collect` builds the gradebook when the array ends")
        return 0
    bar = Progress(len(todo), f"Slurm {array}")
    seen = set()
    while True:
        states = task_states(run)
        done = [tuple(u) for u in run["units"] if unit_done(course, tuple(u), run_id)]
        for u in done:
            if u not in seen:
                seen.add(u)
                bar.line(unit_line(load_result(course, *u)))
        if len(seen) == len(todo) or not any(s in ACTIVE for s in states.values()):
            break
        time.sleep(POLL_S)
    bar.close()
    missing = [u for u in run["units"] if tuple(u) not in seen]
    if missing:
        print(f"grade: {len(missing)} unit(s) without a result (their task ended first: cancelled, killed or out "
              f"of time); the next `autograde` grades them: " + ", ".join(f"{s}/{a}" for s, a in missing[:10]),
              file=sys.stderr)
    return 0


ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}


def task_states(run: dict) -> dict:
    """{task id: Slurm state} of the run's array tasks; a task Slurm no longer lists is ENDED."""
    out = subprocess.run(["squeue", "--array", "-h", "-j", run["array"], "-o", "%i|%T"], capture_output=True,
                         text=True, timeout=60)
    listed = {}
    for line in out.stdout.splitlines():
        task, _, state = line.partition("|")
        listed[task.strip()] = state.strip()
    return {t["task"]: listed.get(t["task"], "ENDED") for t in run["tasks"]}


def unit_done(course: Path, unit: tuple, run_id: str) -> bool:
    r = load_result(course, *unit)
    return bool(r) and r.get("run_id") == run_id
