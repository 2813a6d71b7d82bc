"""Executed notebooks, recorded by content hash: `python tools/executed_notebooks.py` (part of `make build`).

Every notebook runs twice through nbgrader's own Validator (the code behind `nbgrader validate`):
the source with its solutions (every graded cell must pass) and the student release, inverted
(every graded cell must fail). In the Triton interpreter that is about 10 minutes on 2 cores, so
the outcome is recorded in tests/executed/<slug>.<source|release>.json under a key: the SHA-256 of
everything that decides it (the notebook, the autograder package, the build format, the pinned
versions in Makefile and pyproject.toml). tests/test_pipeline.py asserts on a record whose key
matches, executes the notebook itself when none does, and fails while a record is stale.

    python tools/executed_notebooks.py            # re-execute the stale ones (all cores), write records
    python tools/executed_notebooks.py --check    # list stale records, exit 1 if any
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECORDS = REPO / "tests" / "executed"
WHICH = {"source": "notebooks", "release": "release"}     # record name -> folder of the notebook
CELL_TIMEOUT = 600                                      # per cell: the Triton interpreter is slow

# What the outcome of executing a notebook depends on, besides the notebook itself.
_INPUT_GLOBS = ("autograder/**/*.py", "autograder/**/*.csv", "tools/course_format.py", "Makefile",
                "pyproject.toml", "nbgrader_config.py")


def key(notebook: Path, which: str, repo: Path = REPO) -> str:
    """SHA-256 over the notebook's bytes, which run it is, and every input file (name and bytes)."""
    h = hashlib.sha256(f"{which}\n".encode())
    h.update(Path(notebook).read_bytes())
    return hash_inputs(h, _INPUT_GLOBS, repo).hexdigest()


def hash_inputs(h, patterns, repo: Path = REPO):
    """Feed `h` the name and bytes of every file matching `patterns` (in order, sorted within each)."""
    for pattern in patterns:
        for path in sorted(repo.glob(pattern)):
            if "__pycache__" not in path.parts:
                h.update(f"\n{path.relative_to(repo).as_posix()}\n".encode())
                h.update(_relevant_bytes(path))
    return h


def _relevant_bytes(path: Path) -> bytes:
    """The Makefile matters only through the torch and triton versions it pins."""
    if path.name == "Makefile":
        return b"".join(line for line in path.read_bytes().splitlines(True)
                        if line.startswith((b"TORCH_VERSION", b"TRITON_VERSION")))
    return path.read_bytes()


def record_path(slug: str, which: str, records: Path = RECORDS) -> Path:
    return records / f"{slug}.{which}.json"


def load(slug: str, which: str, current_key: str, records: Path = RECORDS):
    """The recorded {"results", "notebook"} of this execution when its key matches, else None."""
    path = record_path(slug, which, records)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return data if data.get("key") == current_key else None


def _strip_images(nb: dict) -> dict:
    """Pictures are most of an executed notebook's bytes and no test reads them (test_colab renders
    its own): each PNG becomes a line saying how big it was."""
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "image/png" in data:
                data["image/png"] = f"(a PNG of {len(data['image/png'])} base64 characters, not recorded)"
    return nb


def execute(notebook: Path, which: str, env: dict = None) -> dict:
    """Run `notebook` through nbgrader's Validator in a fresh interpreter (inverted for the release):
    {"results": what nbgrader validate reports, "notebook": the executed notebook}, or {"error": ...}."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("MPLBACKEND", "Agg")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "executed.json"
        proc = subprocess.run([sys.executable, str(Path(__file__)), "--validate", str(notebook), which, str(out)],
                              env=env, capture_output=True, text=True, timeout=3 * 3600)
        if proc.returncode or not out.exists():
            return {"error": f"validator crashed (rc={proc.returncode}):\n{proc.stderr[-4000:]}"}
        return json.loads(out.read_text())


def _validate(notebook: str, which: str, out: str) -> None:
    """The subprocess: nbgrader's Validator, keeping the notebook it executed."""
    sys.path.insert(0, str(REPO))
    from tools.course_format import skip_iri_grammar
    skip_iri_grammar()         # 5-6 s of every process that imports nbgrader
    from nbgrader.validator import Validator
    from traitlets.config import Config

    class KeepingValidator(Validator):
        executed = None

        def _preprocess(self, nb):
            self.executed = super()._preprocess(nb)
            return self.executed

    cfg = Config()
    cfg.Execute.timeout = CELL_TIMEOUT
    cfg.Validator.invert = which == "release"
    validator = KeepingValidator(config=cfg)
    results = validator.validate(notebook)
    with open(out, "w") as f:
        json.dump({"results": results, "notebook": _strip_images(validator.executed or {}) or None}, f)


def stale(slugs, repo: Path = REPO, records: Path = RECORDS):
    """[(slug, which, notebook path, current key)] of the executions without a current record."""
    todo = []
    for slug in slugs:
        for which, folder in WHICH.items():
            path = repo / folder / slug / f"{slug}.ipynb"
            k = key(path, which, repo)
            if load(slug, which, k, records) is None:
                todo.append((slug, which, path, k))
    return todo


def refresh(slugs, jobs: int = None, records: Path = RECORDS) -> int:
    """Execute every stale notebook, `jobs` at a time; write a record for each. Returns how many failed
    to execute (a notebook whose checks fail is still recorded: the tests say what failed)."""
    todo = stale(slugs, records=records)
    records.mkdir(parents=True, exist_ok=True)
    if not todo:
        print("executed_notebooks: every record is current")
        return 0
    print(f"executed_notebooks: executing {len(todo)} notebook(s), {jobs or os.cpu_count()} at a time "
          f"(the Triton interpreter: up to a few minutes each)", flush=True)

    def run(item):
        slug, which, path, k = item
        t0 = time.perf_counter()
        data = execute(path, which)
        if "error" in data:
            print(f"  {slug} ({which}): {data['error']}", flush=True)
            return 1
        record_path(slug, which, records).write_text(json.dumps({"key": k, **data}, indent=0, sort_keys=True) + "\n")
        verdict = "ok" if data["results"] == {} else "CHECKS DISAGREE (see tests/test_pipeline.py)"
        print(f"  {slug} ({which}): {verdict}, {time.perf_counter() - t0:.0f} s", flush=True)
        return 0

    with ThreadPoolExecutor(max(1, jobs or os.cpu_count() or 1)) as pool:
        return sum(pool.map(run, todo))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="list stale records, exit 1 if any")
    parser.add_argument("--jobs", type=int, default=None, help="notebooks at a time (default: every core)")
    parser.add_argument("--validate", nargs=3, metavar=("NOTEBOOK", "WHICH", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("slugs", nargs="*", help="only these notebooks (default: all)")
    args = parser.parse_args(argv)
    if args.validate:
        _validate(*args.validate)
        return 0
    sys.path.insert(0, str(REPO))
    from tools import build_course
    slugs = args.slugs or build_course.find_slugs(REPO)
    if args.check:
        todo = stale(slugs)
        for slug, which, *_ in todo:
            print(f"stale: {record_path(slug, which).relative_to(REPO)}")
        if todo:
            print("executed_notebooks: run `make build` (or python tools/executed_notebooks.py) to re-execute them")
        return 1 if todo else 0
    return 1 if refresh(slugs, args.jobs) else 0


if __name__ == "__main__":
    sys.exit(main())
