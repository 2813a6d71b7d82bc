"""How fast a class is graded, per executor: units per minute and what the executor adds per unit.

    .venv/bin/python tools/bench_grading.py [--units 48] [--slurm] [--gpus all] [--out bench.json]

Builds a throwaway course in a temporary directory, submits a class of at least `--units` (student,
problem) units on Problems 1-3 (a third reference solutions, a third untouched releases, a third with a
planted bug), then grades all of them with the local executor at 1 and 2 workers (`--jobs`), through a
single-node Slurm started on this machine (`--slurm`: tests/slurm_cluster.py, as root; submitit), and on
every GPU of the node (`--gpus`). Each configuration grades every unit (`--force`). Prints a table:

    units/min      the class's throughput
    unit s         the mean time one unit took inside its worker (the `seconds` of its result)
    overhead s     wall time x workers / units - unit s: what the executor costs per unit
                   (starting tasks, polling, idle workers at the end)

A script, not a test: it takes minutes per configuration. docs/instructor.md, "Grading a large class",
holds the figures measured with it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# run by path: the repository takes the place of tools/ (the grader is imported as `tools.grading`)
sys.path[:] = [str(REPO), str(REPO / "tests")] + [p for p in sys.path if p != str(REPO / "tools")]
GRADE = [sys.executable, str(REPO / "tools" / "grade.py")]
PROBLEMS = ("p1_pytorch_flash_attention", "p2_triton_basics", "p3_flash_attention_forward")


def sh(args, env=None, timeout=7200):
    out = subprocess.run(GRADE + args, cwd=REPO, text=True, capture_output=True, env=env, timeout=timeout)
    if out.returncode:
        raise SystemExit(f"grade.py {' '.join(args[:1])} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return out.stdout


def make_class(course: Path, units: int, mix: str = "class") -> int:
    from submissions import release, solved, submit
    sh(["release", "--course", str(course), "--no-build", *[a for p in PROBLEMS for a in ("-a", p)]])
    bug = {"p3_flash_attention_forward": {"p3_kernel": [
        ("Q_ptr += b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh",
         "Q_ptr += b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh")]}}
    students = -(-units // len(PROBLEMS))
    for i in range(students):
        for slug in PROBLEMS:
            kind = i % 3 if mix == "class" else 1     # `release`: every unit an untouched release (fastest)
            nb = solved(course, slug) if kind == 0 else release(course, slug) if kind == 1 else \
                solved(course, slug, **bug.get(slug, {}))
            submit(course, f"s{i:03d}", slug, nb)
    return students * len(PROBLEMS)


def measure(course: Path, label: str, workers: int, args, env=None) -> dict:
    t0 = time.time()
    sh(["autograde", "--course", str(course), "--force", *args], env=env)
    wall = time.time() - t0
    results = [json.loads(p.read_text()) for p in (course / "results").rglob("*.json")]
    unit_s = statistics.mean(r["seconds"] for r in results)
    n = len(results)
    return {"executor": label, "workers": workers, "units": n, "wall_s": round(wall, 1),
            "units_per_min": round(n / wall * 60, 2), "unit_s": round(unit_s, 1),
            "overhead_s": round(wall * workers / n - unit_s, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--units", type=int, default=48, help="at least this many units (default 48)")
    ap.add_argument("--slurm", action="store_true", help="also through a single-node Slurm on this machine")
    ap.add_argument("--gpus", help="also on these GPUs (all|0,1,...), one worker each")
    ap.add_argument("--mix", choices=("class", "release"), default="class",
                    help="class: a third references, releases, planted bugs; release: untouched releases only")
    ap.add_argument("--out", type=Path, help="write the rows as JSON here")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        course = Path(tmp) / "course"
        n = make_class(course, a.units, a.mix)
        print(f"a class of {n} units ({a.mix}) on {', '.join(PROBLEMS)}", flush=True)
        limits = ["--cell-timeout", "120", "--timeout", "600"]
        for jobs in (1, 2):
            rows.append(measure(course, "local", jobs, [*limits, "--jobs", str(jobs)]))
            print(rows[-1], flush=True)
        if a.gpus:
            from tools.grading.runner import gpu_slots
            rows.append(measure(course, f"local --gpus {a.gpus}", len(gpu_slots(a.gpus, 1)), [*limits, "--gpus", a.gpus]))
            print(rows[-1], flush=True)
        if a.slurm:
            from slurm_cluster import SlurmCluster
            with SlurmCluster(Path(tmp) / "slurm", partition="grading") as cluster:
                rows.append(measure(course, "slurm", 2, [*limits, "--executor", "slurm", "--partition", "grading",
                                                         "--max-parallel", "2", "--cpus-per-task", "1",
                                                         "--time-per-unit", "600"], env=cluster.env))
                print(rows[-1], flush=True)
    print(f"\n{'executor':24s} {'workers':>7s} {'units':>5s} {'wall s':>8s} {'units/min':>9s} {'unit s':>7s} "
          f"{'overhead s':>10s}")
    for r in rows:
        print(f"{r['executor']:24s} {r['workers']:7d} {r['units']:5d} {r['wall_s']:8.1f} {r['units_per_min']:9.2f} "
              f"{r['unit_s']:7.1f} {r['overhead_s']:10.1f}")
    if a.out:
        a.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
