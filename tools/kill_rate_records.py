"""The kill-rate suite's verdicts, recorded by content hash: `python tools/kill_rate_records.py` (part of `make build`).

tests/test_kill_rate.py grades every mutant of tests/mutants.py (a reference solution with one
planted mistake, or a cheat) through its notebook's graded cells: about 9 minutes of the Triton
interpreter on 2 idle cores (534 s measured for 109). Each problem's verdicts (its reference's and its mutants') are recorded in
tests/executed/kill_rate.p<N>.json under a key: the SHA-256 of everything that decides them (the
problem's notebook source, the mutant catalog and its grader, the autograder package, the build
format, the pinned versions). The suite asserts on a current record, grades live whatever has
none, re-grades a few recorded mutants live on every run to check the record, and fails while a
record is stale.

    python tools/kill_rate_records.py            # re-grade the problems whose record is stale
    python tools/kill_rate_records.py --check    # list stale records, exit 1 if any
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
RECORDS = TESTS / "executed"
# "survivors": the hidden tests run only on mutants the visible cells miss (references: always)
HIDDEN = "survivors"

sys.path[:0] = [str(REPO), str(TESTS)]
from tools.executed_notebooks import _INPUT_GLOBS, hash_inputs  # noqa: E402


def _mutants():
    import mutants        # tests/mutants.py: imports autograder, which picks the tier
    return mutants


def names(problem: int) -> list:
    """The reference and the graded mutants (bugs and cheats) of `problem`, in catalog order."""
    m = _mutants()
    return [m.reference_name(problem)] + [x.name for x in m.MUTANTS if x.problem == problem and x.kind in ("bug", "cheat")]


def key(problem: int, repo: Path = REPO) -> str:
    slug = _mutants().SLUGS[problem]
    h = hashlib.sha256(f"kill rate {problem} {HIDDEN}\n".encode())
    return hash_inputs(h, (f"notebooks/{slug}/{slug}.py", "tests/mutants.py", "tools/build_course.py")
                       + _INPUT_GLOBS, repo).hexdigest()


def record_path(problem: int, records: Path = RECORDS) -> Path:
    return records / f"kill_rate.p{problem}.json"


def load(problem: int, records: Path = RECORDS):
    """{name: verdict} of `problem` when its record is current, else None."""
    path = record_path(problem, records)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return data["results"] if data.get("key") == key(problem) else None


def hidden_mode(name: str) -> str:
    return "always" if _mutants().reference_problem(name) is not None else HIDDEN


def _init_worker(paths):
    sys.path[:0] = paths


def grade(names_, workers: int = 2, progress=None) -> dict:
    """{name: verdict}, graded in `workers` spawned processes (the interpreter's state stays theirs)."""
    ctx = multiprocessing.get_context("spawn")
    out = {}
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                initargs=([str(REPO), str(TESTS)],)) as pool:
        futures = {pool.submit(_mutants().evaluate, n, hidden_mode(n)): n for n in names_}
        for done, future in enumerate(cf.as_completed(futures), 1):
            out[futures[future]] = future.result()
            if progress:
                progress(done, len(names_))
    return out


def comparable(verdict: dict) -> dict:
    """What a re-grade must reproduce: everything but the time it took."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in verdict.items() if k != "seconds"}


def stale(problems) -> list:
    return [p for p in problems if load(p) is None]


def refresh(problems, workers: int = None) -> int:
    todo = stale(problems)
    if not todo:
        print("kill_rate_records: every record is current")
        return 0
    todo_names = [n for p in todo for n in names(p)]
    workers = workers or os.cpu_count() or 1
    print(f"kill_rate_records: grading {len(todo_names)} references and mutants of problem(s) "
          f"{', '.join(map(str, todo))}, {workers} at a time (about 10 s each)", flush=True)
    t0 = time.perf_counter()

    def progress(done, total):
        if done % 10 == 0 or done == total:
            print(f"  {done}/{total} graded ({time.perf_counter() - t0:.0f} s)", flush=True)

    results = grade(todo_names, workers, progress)
    RECORDS.mkdir(parents=True, exist_ok=True)
    for p in todo:
        verdicts = {n: comparable(results[n]) for n in names(p)}
        record_path(p).write_text(json.dumps({"key": key(p), "results": verdicts}, indent=1, sort_keys=True) + "\n")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="list stale records, exit 1 if any")
    parser.add_argument("--jobs", type=int, default=None, help="mutants at a time (default: every core)")
    parser.add_argument("problems", nargs="*", type=int, help="only these problems (default: all)")
    args = parser.parse_args(argv)
    problems = args.problems or sorted(_mutants().SLUGS)
    if args.check:
        todo = stale(problems)
        for p in todo:
            print(f"stale: {record_path(p).relative_to(REPO)}")
        if todo:
            print("kill_rate_records: run `make build` (or python tools/kill_rate_records.py) to re-grade them")
        return 1 if todo else 0
    return refresh(problems, args.jobs)


if __name__ == "__main__":
    sys.exit(main())
