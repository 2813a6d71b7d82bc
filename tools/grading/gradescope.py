"""`grade.py gradescope`: one problem's autograder.zip for Gradescope, and the harness it runs there.

Gradescope's autograder format: the zip's root holds `setup.sh` (run once, as root, to build the image)
and `run_autograder` (run for every submission). The zip is unpacked into /autograder/source/, the
student's files are in /autograder/submission/, and /autograder/results/results.json is the result.
Here `setup.sh` makes a virtual environment with the CPU tier and this course package (from the zip's
own copy), and `run_autograder` runs `grade.py _gradescope_run`: a throwaway course directory released
from the zip's notebooks, the submission put at submitted/<student>/<slug>/, `grade.py autograde` (the
same code as on the instructor's machine), then the signed result as results.json.

What the zip holds: autograder/, tools/, pyproject.toml, README.md, nbgrader_config.py, the release
notebook and the source notebook WITHOUT its solutions (its solution regions emptied, so nbgrader's
release of it is the students' release; the grader never reads a source solution cell), with the hidden
tests: the zip is instructor-private, uploaded to Gradescope only.

Paths and limits come from the environment (tests lay the harness out under a temporary root):

    AUTOGRADER_ROOT            /autograder       source/, submission/, results/ below it
    GRADESCOPE_VENV            /opt/fa-course-venv   the environment setup.sh makes, run_autograder uses
    GRADESCOPE_PYTHON          python3           the Python setup.sh makes it with (setup.sh only)
    GRADESCOPE_WORK            $AUTOGRADER_ROOT/work   the throwaway course directory (emptied each run)
    GRADESCOPE_CELL_TIMEOUT    from the zip (default GS_CELL_TIMEOUT)
    GRADESCOPE_TIMEOUT         from the zip (default GS_TIMEOUT)
    GRADESCOPE_MEMORY_LIMIT    from the zip (default GS_MEMORY_LIMIT)
    GRADESCOPE_SANDBOX         auto (namespace where the container allows it, else none with a warning)
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from tools import course_format

from . import GRADE_SCRIPT, REPO
from .audit import inert
from .cells import grade_id, is_grade, is_solution, read_nb, split_hidden
from .course import UsageError

# Gradescope's autograder timeout defaults to 10 minutes (the assignment's settings can raise it): the
# notebook gets 8 of them, the rest is for the release, the replay and the results
GS_CELL_TIMEOUT = 240     # s: one cell (the CPU tier's slowest check cell takes ~15 s on 2 cores)
GS_TIMEOUT = 480          # s: the whole notebook, kernel start included
GS_MEMORY_LIMIT = "3G"    # the kernel and all it starts; the container itself must have more (docs/instructor.md)
STUDENT = "student"       # the id of the one submission in the throwaway course
TEMPLATES = REPO / "tools" / "gradescope"
LEAK_NOTICE = "[removed by the grader: it showed hidden test code]"
MAX_OUTPUT = 300          # characters of one test's output


# ---------------------------------------------------------------------------------------------
# building the zip


def _makefile_version(name: str) -> str:
    m = re.search(rf"^{name}\s*:=\s*(\S+)", (REPO / "Makefile").read_text(), re.M)
    if not m:
        raise UsageError(f"Makefile has no {name}: cannot pin it in setup.sh")
    return m.group(1)


def strip_solutions(nb, release):
    """The source notebook without its solutions: every solution region emptied (its markers kept, so
    nbgrader still puts the stub there), a solution cell without markers reduced to the markers; outputs
    cleared. Checked: nbgrader's ClearSolutions of the result gives the release's solution cells."""
    import copy
    from nbgrader.preprocessors import ClearSolutions
    from .nbgrader_setup import nbgrader_config
    begin, end = course_format.BEGIN_SOLUTION, course_format.END_SOLUTION
    nb = copy.deepcopy(nb)
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
        if not is_solution(c):
            continue
        if course_format.SOLUTION_WORDS[0] not in c.source:
            c.source = f"{begin}\n{end}"
            continue
        keep, inside = [], False
        for line in c.source.split("\n"):
            if course_format.SOLUTION_WORDS[0] in line:
                inside = True
                keep.append(line)
            elif course_format.SOLUTION_WORDS[1] in line:
                inside = False
                keep.append(line)
            elif not inside:
                keep.append(line)
        c.source = "\n".join(keep)
    cleared, _ = ClearSolutions(config=nbgrader_config(REPO)).preprocess(copy.deepcopy(nb), {})
    ours = {grade_id(c): c.source for c in cleared.cells if is_solution(c)}
    theirs = {grade_id(c): c.source for c in release.cells if is_solution(c)}
    bad = sorted(g for g in ours if ours[g] != theirs.get(g))
    if bad:
        raise UsageError(f"the release's solution cells {', '.join(bad)} are not what nbgrader makes of the "
                         f"source: rebuild (python tools/build_course.py)")
    return nb


def _zip_files(slug: str, source_nb, release_path: Path, config: dict, versions: dict) -> dict:
    """{name in the zip: (bytes, mode)}."""
    import nbformat
    files = {}

    def add_tree(top: Path, pattern: str):
        for p in sorted(top.rglob(pattern)):
            rel = p.relative_to(REPO)
            if p.is_file() and "__pycache__" not in rel.parts and p.suffix != ".pyc":
                files[rel.as_posix()] = (p.read_bytes(), 0o644)
    for pattern in ("*.py", "*.csv"):          # the package and its data (the case tables)
        add_tree(REPO / "autograder", pattern)
    add_tree(REPO / "tools", "*.py")
    for name in ("pyproject.toml", "README.md", "nbgrader_config.py"):
        files[name] = ((REPO / name).read_bytes(), 0o644)
    files[f"notebooks/{slug}/{slug}.ipynb"] = (nbformat.writes(source_nb).encode() + b"\n", 0o644)
    files[f"release/{slug}/{slug}.ipynb"] = (release_path.read_bytes(), 0o644)
    files["gradescope.json"] = (json.dumps(config, indent=1).encode() + b"\n", 0o644)
    for script in ("setup.sh", "run_autograder"):
        text = (TEMPLATES / script).read_text()
        for key, value in versions.items():
            text = text.replace(f"@{key}@", value)
        files[script] = (text.encode(), 0o755)
    return files


def cmd_gradescope(args) -> int:
    slugs = args.assignment or []
    if len(slugs) != 1:
        raise UsageError("gradescope: name exactly one problem with -a SLUG (one autograder.zip per Gradescope "
                         "assignment)")
    slug = slugs[0]
    source_path = REPO / "notebooks" / slug / f"{slug}.ipynb"
    release_path = REPO / "release" / slug / f"{slug}.ipynb"
    if not source_path.is_file() or not release_path.is_file():
        known = ", ".join(course_format.find_slugs(REPO / "notebooks", ".ipynb")) or "none"
        raise UsageError(f"gradescope: {slug} is not built (notebooks/{slug}/{slug}.ipynb and release/{slug}/"
                         f"{slug}.ipynb): run `python tools/build_course.py`; built: {known}")
    source = strip_solutions(read_nb(source_path), read_nb(release_path))
    config = {"assignment": slug, "cell_timeout": args.cell_timeout, "timeout": args.timeout,
              "memory_limit": args.memory_limit}
    versions = {"TORCH_VERSION": _makefile_version("TORCH_VERSION"),
                "TRITON_VERSION": _makefile_version("TRITON_VERSION")}
    files = _zip_files(slug, source, release_path, config, versions)
    out = (args.out or REPO / "build" / "gradescope" / slug).resolve()
    out.mkdir(parents=True, exist_ok=True)
    target = out / "autograder.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(files):
            data, mode = files[name]
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))    # the same zip every time
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    os.replace(tmp, target)
    print(f"wrote {target} ({target.stat().st_size // 1024} KiB, {len(files)} files) for {slug}: upload it as "
          f"the autograder of a Gradescope programming assignment (it holds the hidden tests: keep it private). "
          f"Limits: cell {args.cell_timeout} s, notebook {args.timeout} s, memory {args.memory_limit} bytes")
    return 0


# ---------------------------------------------------------------------------------------------
# the harness: run_autograder, on Gradescope


def graded_cells(source) -> list[dict]:
    """Each graded cell of the source notebook: id, points, whether its test has hidden parts, and a
    short description (the first line of its visible part: the release shows it)."""
    out = []
    for c in source.cells:
        if is_grade(c):
            shown, hidden = split_hidden(c.source)
            first = next((ln.strip() for ln in shown if ln.strip() and not ln.strip().startswith("#")), "")
            out.append({"id": grade_id(c), "points": float(c.metadata["nbgrader"]["points"]),
                        "hidden": any(ln.strip() for ln in hidden), "description": first})
    return out


def scrub(text, secrets: set, width: int = MAX_OUTPUT) -> str:
    """One line of inert text, cut; LEAK_NOTICE when it shows a hidden test line (checked before the cut)."""
    flat = inert(text, 1 << 30)
    if any(" ".join(s.split()) in flat for s in secrets):      # both with runs of whitespace as one space
        return LEAK_NOTICE
    return inert(flat, width)


def results_json(cells: list[dict], result: dict | None, reason: str, secrets: set, seconds: float) -> dict:
    """Gradescope's results.json from a signed result (None: nothing graded, every test 0 with `reason`).
    A test whose cell has hidden parts is `after_published`, the others `visible`; the whole result is
    `after_published` when any test is (the total would tell the hidden ones)."""
    tests = []
    got = (result or {}).get("cells", {})
    for c in cells:
        r = got.get(c["id"]) or {"score": 0.0, "max": c["points"], "why": reason or "not graded"}
        score, top = float(r.get("score", 0.0)), float(r.get("max", c["points"]))
        why = r.get("why") or ("" if score >= top else "failed")
        tests.append({"name": scrub(f"{c['id']}: {c['description']}" if c["description"] else c["id"], secrets, 120),
                      "score": score, "max_score": top, "status": "passed" if score >= top else "failed",
                      "output": "passed" if score >= top and not why else scrub(why, secrets),
                      "visibility": "after_published" if c["hidden"] else "visible"})
    total = sum(t["score"] for t in tests)
    top = sum(t["max_score"] for t in tests)
    hidden = any(t["visibility"] != "visible" for t in tests)
    status = (result or {}).get("status", "zero")
    summary = f"{total:g}/{top:g}"
    if status != "graded":
        summary += f": not graded ({scrub((result or {}).get('reason') or reason, secrets, 200)})"
    if hidden:
        summary += ". Tests with hidden parts show their results once the instructor publishes the grades."
    return {"score": total, "execution_time": int(seconds), "output": summary,
            "visibility": "after_published" if hidden else "visible", "stdout_visibility": "hidden",
            "tests": tests}


def _run(cmd, env) -> int:
    """A grade.py step, its output on stdout (the autograder log: instructors only, stdout_visibility hidden)."""
    print("$", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=REPO, env=env, stdout=sys.stdout, stderr=subprocess.STDOUT)


def cmd_gradescope_run(args) -> int:
    from .feedback import secret_lines
    from .rebuild import copy_submission
    from .results import load_result

    t0 = time.time()
    root = Path(os.environ.get("AUTOGRADER_ROOT", "/autograder"))
    out_file = root / "results" / "results.json"
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.unlink(missing_ok=True)      # whatever was there is not this run's
    config = json.loads((REPO / "gradescope.json").read_text())
    slug = config["assignment"]
    cell_timeout = int(os.environ.get("GRADESCOPE_CELL_TIMEOUT") or config.get("cell_timeout") or GS_CELL_TIMEOUT)
    timeout = int(os.environ.get("GRADESCOPE_TIMEOUT") or config.get("timeout") or GS_TIMEOUT)
    memory = os.environ.get("GRADESCOPE_MEMORY_LIMIT") or config.get("memory_limit") or GS_MEMORY_LIMIT
    sandbox = os.environ.get("GRADESCOPE_SANDBOX") or "auto"
    source = read_nb(REPO / "notebooks" / slug / f"{slug}.ipynb")
    cells = graded_cells(source)
    secrets = secret_lines(source, read_nb(REPO / "release" / slug / f"{slug}.ipynb"))
    work = Path(os.environ.get("GRADESCOPE_WORK") or root / "work")
    course = work / "course"
    result, reason = None, ""
    try:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        env.pop("PYTHONPATH", None)
        if _run([sys.executable, GRADE_SCRIPT, "release", "--no-build", "-a", slug, f"--course={course}"], env):
            raise RuntimeError("the course could not be set up (grade.py release failed)")
        # the submission as the grader reads any other: links, fifos and devices dropped (with a note)
        dst = course / "submitted" / STUDENT / slug
        sub = root / "submission"
        notes = copy_submission(sub, dst, skip=(".ipynb_checkpoints",)) if sub.is_dir() and not sub.is_symlink() \
            else ["no submission folder"]
        for note in notes:
            print(f"submission: {inert(note)}")
        rc = _run([sys.executable, GRADE_SCRIPT, "autograde", f"--course={course}", "-a", slug, "--tier", "cpu",
                   f"--sandbox={sandbox}", f"--cell-timeout={cell_timeout}", f"--timeout={timeout}",
                   f"--memory-limit={memory}", "--force"], env)
        result = load_result(course, STUDENT, slug)
        if result is None:
            raise RuntimeError(f"grade.py autograde wrote no result (exit {rc})")
        if result.get("status") == "tampered":
            raise RuntimeError("the result was changed after grading (signature mismatch)")
    except Exception as exc:      # noqa: BLE001 - every failure still ends in a results.json
        result, reason = None, f"the autograder failed: {exc}"
        print(f"gradescope: {inert(reason, 1000)}")
    if result is not None:
        print(f"status: {result.get('status')} {inert(result.get('reason', ''))}")
        for note in result.get("notes", []):
            print(f"note: {inert(note)}")
        for flag in result.get("flags", []):
            print(f"flag for review: {inert(json.dumps(flag, ensure_ascii=False), 500)}")
        for gid, c in result.get("cells", {}).items():
            print(f"{gid}: {c['score']:g}/{c['max']:g} {inert(c.get('why', ''), 500)}")
    out = results_json(cells, result, reason, secrets, time.time() - t0)
    tmp = out_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    os.replace(tmp, out_file)
    print(f"results: {out['score']:g}/{sum(t['max_score'] for t in out['tests']):g} in {time.time() - t0:.1f} s "
          f"-> {out_file}")
    return 0
