"""Result records: one signed JSON file per (student, problem); the grades come from these only."""
from __future__ import annotations

import json
import os
from pathlib import Path


def results_path(course, student, slug) -> Path:
    return course / "results" / student / f"{slug}.json"


def _grading_key(course: Path) -> bytes:
    """The course's secret for signing results (created on first use, readable by the grader only)."""
    path = course / ".grading-key"
    if not path.is_file():
        import secrets
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def _signature(course: Path, result: dict) -> str:
    import hashlib
    import hmac
    body = json.dumps({k: v for k, v in result.items() if k != "signature"}, sort_keys=True).encode()
    return hmac.new(_grading_key(course), body, hashlib.sha256).hexdigest()


def save_result(course, result):
    """Signed and written atomically: a half-written or edited result never counts."""
    p = results_path(course, result["student"], result["assignment"])
    p.parent.mkdir(parents=True, exist_ok=True)
    result["signature"] = _signature(course, result)
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, p)


def load_result(course: Path, student: str, slug: str):
    """The autograde result of (student, slug); None when there is none. A result whose signature does
    not match (edited after grading) comes back with status `tampered` and every cell at 0."""
    p = results_path(course, student, slug)
    if not p.is_file():
        return None
    try:
        result = json.loads(p.read_text())
        ok = isinstance(result, dict) and result.get("signature") == _signature(course, result)
    except (ValueError, OSError):
        result, ok = {"student": student, "assignment": slug, "cells": {}, "notes": []}, False
    if not ok:
        result["status"] = "tampered"
        result["reason"] = f"{p.relative_to(course)} was changed after grading (signature mismatch): grade again"
        for cell in result.get("cells", {}).values():
            cell["score"] = 0.0
    return result


def submission_digest(course: Path, student: str, slug: str) -> str:
    """sha256 of every file of a submission (names and bytes): a changed submission is graded again.
    Links are not followed (a link counts by its target's name) and special files by their name only."""
    import hashlib
    import stat
    h = hashlib.sha256()
    d = course / "submitted" / student / slug
    if d.is_symlink() or not d.is_dir():
        return h.hexdigest()
    entries = []
    for top, dirs, files in os.walk(d):       # os.walk never descends into a linked folder
        entries += [Path(top) / n for n in dirs if (Path(top) / n).is_symlink()] + [Path(top) / n for n in files]
    for f in sorted(entries):
        mode = os.lstat(f).st_mode
        if stat.S_ISLNK(mode):
            body = b"link:" + os.fsencode(os.readlink(f))
        elif stat.S_ISREG(mode):
            fd = os.open(f, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as fh:
                body = fh.read()
        else:
            body = b"special"
        h.update(os.fsencode(f.relative_to(d)) + b"\0" + body + b"\0")
    return h.hexdigest()


# notes that `feedback` adds: grading again does not run feedback, so they are carried over
FEEDBACK_NOTES = ("printed hidden test code", "feedback withheld")


def keep_feedback_notes(before, result):
    """Copy the feedback-time notes of the previous result of an unchanged submission into `result`."""
    if not before or before.get("status") == "tampered" or \
            before.get("submission_sha256") != result.get("submission_sha256"):
        return
    for note in before.get("notes", []):
        if note.startswith(FEEDBACK_NOTES) and note not in result.setdefault("notes", []):
            result["notes"].append(note)


def release_digest(course: Path, slug: str) -> str:
    """sha256 of the problem's source and release notebooks: a new release grades every submission again."""
    import hashlib
    h = hashlib.sha256()
    for part in ("source", "release"):
        f = course / part / slug / f"{slug}.ipynb"
        h.update(f.read_bytes() if f.is_file() else b"")
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# units: one (student, problem) each. A worker writes its unit's state when it starts and the signed
# result when it ends; nothing else. The collector (collect.py) is the gradebook's one writer.


def unit_state_path(course: Path, student: str, slug: str) -> Path:
    return course / "units" / student / f"{slug}.json"


def mark_started(course: Path, student: str, slug: str, run_id: str = ""):
    """Where and when a worker took this unit: the summary's answer when no result follows."""
    import socket
    import time
    p = unit_state_path(course, student, slug)
    p.parent.mkdir(parents=True, exist_ok=True)
    env = os.environ
    job = f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '')}" if env.get("SLURM_ARRAY_JOB_ID") \
        else env.get("SLURM_JOB_ID", "")         # an array task as squeue and scancel name it: 123_4
    state = {"started": time.time(), "host": socket.gethostname(), "pid": os.getpid(), "run_id": run_id,
             "slurm_job": job}
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, p)


def unit_state(course: Path, student: str, slug: str) -> dict:
    try:
        return json.loads(unit_state_path(course, student, slug).read_text())
    except (OSError, ValueError):
        return {}


def missing_reason(course: Path, student: str, slug: str, run: dict = None) -> str:
    """Why a unit has no result from its latest grading: for the summary. `run`: the latest run's record
    (course/runs/), which names the Slurm task a unit was dealt to."""
    import time
    state = unit_state(course, student, slug)
    task = next((t["task"] for t in (run or {}).get("tasks", []) if [student, slug] in t["units"]), None)
    in_run = run is not None and [student, slug] in run.get("units", [])
    where = f" (Slurm job {task})" if task else ""
    if state and (not in_run or state.get("run_id") == run["run_id"]):
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(state["started"]))
        job = f", Slurm job {state['slurm_job']}" if state.get("slurm_job") else ""
        return (f"a worker took it at {when} on {state.get('host', '?')}{job} and left no result (it died, was "
                f"cancelled, or is still running): the next `autograde` grades it")
    if in_run:
        return (f"run {run['run_id']}{where} has no result for it: its task ended first (cancelled, failed, out of "
                f"time) or has not reached it yet; the next `autograde` grades it")
    return "not graded yet: run `python tools/grade.py autograde`"


def left_no_result(course: Path, student: str, slug: str, result: dict, run: dict = None) -> bool:
    """The unit's latest grading wrote no result: a worker took it after its result was written, or the
    latest run was given it and has none from it."""
    if run is not None and [student, slug] in run.get("units", []) and result.get("run_id") != run["run_id"]:
        return True
    state = unit_state(course, student, slug)
    try:
        written = results_path(course, student, slug).stat().st_mtime
    except OSError:
        return False
    return bool(state) and state.get("run_id") != result.get("run_id") and state["started"] > written


# ---------------------------------------------------------------------------------------------
# runs: a grading run's record (course/runs/<run>.json), what `status` and `summary` read


def save_run(course: Path, run: dict):
    d = course / "runs"
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{run['run_id']}.json.tmp"
    tmp.write_text(json.dumps(run, indent=1))
    os.replace(tmp, d / f"{run['run_id']}.json")


def latest_run(course: Path):
    runs = sorted((course / "runs").glob("*.json")) if (course / "runs").is_dir() else []
    return json.loads(runs[-1].read_text()) if runs else None
