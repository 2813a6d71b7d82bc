"""Every problem's reference graded by the instructor's grader, recorded by content hash:
`python tools/graded_reference_records.py` (part of `make build`).

tests/test_grading.py's hostile class asserts that each reference solution keeps full points through the
whole grading path: the submission rebuilt, run in the sandboxed kernel, its graded cells replayed by a
process without student code. Grading all nine takes about 6 minutes on 2 cores (353 s measured; Problem 9
alone 171 s, Problem 8 92 s), so each outcome is recorded in tests/executed/graded_reference.<slug>.json
under a key: the SHA-256 of everything that decides it (the problem's source and release notebooks, how
the submission is made from them, the grader, the autograder package, the build format, the pinned
versions, the tier). The test grades live every reference without a current record, Problem 3's, and one
recorded problem chosen from the keys, and asserts that those give their recorded result;
test_graded_reference_records_are_current fails while a record is stale.

    python tools/graded_reference_records.py            # re-grade the references whose record is stale
    python tools/graded_reference_records.py --check    # list stale records, exit 1 if any
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECORDS = REPO / "tests" / "executed"
STUDENT = "ref"
# the limits test_hostile_submissions grades with: a record must be what that run would give
LIMITS = ("--cell-timeout", "240")

sys.path[:0] = [str(REPO), str(REPO / "tests")]
from tools.executed_notebooks import _INPUT_GLOBS, hash_inputs  # noqa: E402

# what grading a reference depends on besides its notebooks (tests/submissions.py makes the submission)
_GRADER_GLOBS = ("tests/submissions.py", "tools/grade.py", "tools/grading/**/*.py")


def slugs(repo: Path = REPO) -> list:
    return sorted(p.name for p in (repo / "release").iterdir() if (p / f"{p.name}.ipynb").is_file())


def tier() -> str:
    import autograder        # picks the tier: the grading kernel, on this machine, picks the same
    return autograder.TIER


def key(slug: str, tier_: str, repo: Path = REPO) -> str:
    h = hashlib.sha256(f"graded reference {slug} {tier_} {' '.join(LIMITS)}\n".encode())
    return hash_inputs(h, (f"notebooks/{slug}/{slug}.ipynb", f"release/{slug}/{slug}.ipynb") + _GRADER_GLOBS
                       + _INPUT_GLOBS, repo).hexdigest()


def record_path(slug: str, records: Path = RECORDS) -> Path:
    return records / f"graded_reference.{slug}.json"


def current(slugs_, tier_: str = None, records: Path = RECORDS) -> dict:
    """{slug: {"key", "result"}} of the references whose record is current."""
    tier_ = tier_ or tier()
    out = {}
    for slug in slugs_:
        path = record_path(slug, records)
        if path.is_file():
            data = json.loads(path.read_text())
            if data.get("key") == key(slug, tier_):
                out[slug] = data
    return out


def spot_check(recorded: dict, exclude=()) -> str | None:
    """One recorded problem to grade live and compare with its record: chosen anew whenever a record changes."""
    names = sorted(s for s in recorded if s not in exclude)
    if not names:
        return None
    digest = hashlib.sha256("".join(recorded[s]["key"] for s in names).encode()).hexdigest()
    return names[int(digest, 16) % len(names)]


def comparable(result: dict) -> dict:
    """What grading the reference again must reproduce: the verdict of each graded cell (replay included), the
    notes and flags; not who, when, how long, or how this machine enforced the memory limit."""
    cells = {gid: {k: c.get(k) for k in ("score", "max", "why", "replayed")} for gid, c in result["cells"].items()}
    return {"status": result["status"], "reason": result["reason"], "notes": result.get("notes", []),
            "flags": result.get("flags", []), "cells": cells}


def _grade_cli(*args, timeout=7200) -> str:
    out = subprocess.run([sys.executable, str(REPO / "tools" / "grade.py"), *args], cwd=REPO, text=True,
                         capture_output=True, timeout=timeout)
    if out.returncode:
        raise SystemExit(f"grade.py {args[0]} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out.stdout


def grade(slugs_, jobs: int) -> dict:
    """{slug: comparable result} of each reference, graded in a throwaway course as the hostile class is."""
    from submissions import solved, submit
    with tempfile.TemporaryDirectory() as tmp:
        course = Path(tmp) / "course"
        _grade_cli("release", "--course", str(course), "--no-build", *[a for s in slugs_ for a in ("-a", s)])
        for slug in slugs_:
            submit(course, STUDENT, slug, solved(course, slug))
        print(_grade_cli("autograde", "--course", str(course), "--jobs", str(jobs), *LIMITS).rstrip(), flush=True)
        return {slug: comparable(json.loads((course / "results" / STUDENT / f"{slug}.json").read_text()))
                for slug in slugs_}


def stale(slugs_, tier_: str) -> list:
    recorded = current(slugs_, tier_)
    return [s for s in slugs_ if s not in recorded]


def refresh(slugs_, jobs: int = None) -> int:
    tier_ = tier()
    todo = stale(slugs_, tier_)
    if not todo:
        print("graded_reference_records: every record is current")
        return 0
    jobs = jobs or os.cpu_count() or 1
    print(f"graded_reference_records: grading the references of {', '.join(todo)} ({tier_} tier), {jobs} at a "
          f"time (Problems 8 and 9 take minutes each)", flush=True)
    t0 = time.perf_counter()
    results = grade(todo, jobs)
    RECORDS.mkdir(parents=True, exist_ok=True)
    bad = []
    for slug in todo:
        result = results[slug]
        record_path(slug).write_text(json.dumps({"key": key(slug, tier_), "result": result}, indent=1,
                                                sort_keys=True) + "\n")
        if any(c["score"] != c["max"] for c in result["cells"].values()):
            bad.append(slug)
    print(f"graded_reference_records: {len(todo)} recorded in {time.perf_counter() - t0:.0f} s", flush=True)
    for slug in bad:     # recorded all the same: the test says which cell lost points, and why
        print(f"graded_reference_records: the reference of {slug} did not get full points", file=sys.stderr)
    return 1 if bad else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="list stale records, exit 1 if any")
    parser.add_argument("--jobs", type=int, default=None, help="notebooks at a time (default: every core)")
    parser.add_argument("slugs", nargs="*", help="only these problems (default: all)")
    args = parser.parse_args(argv)
    chosen = args.slugs or slugs()
    unknown = sorted(set(chosen) - set(slugs()))
    if unknown:
        parser.error(f"unknown problem(s) {', '.join(unknown)}; choose from {', '.join(slugs())}")
    if args.check:
        todo = stale(chosen, tier())
        for slug in todo:
            print(f"stale: {record_path(slug).relative_to(REPO)}")
        if todo:
            print("graded_reference_records: run `make build` (or python tools/graded_reference_records.py) "
                  "to re-grade them")
        return 1 if todo else 0
    return refresh(chosen, args.jobs)


if __name__ == "__main__":
    sys.exit(main())
