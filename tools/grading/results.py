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
