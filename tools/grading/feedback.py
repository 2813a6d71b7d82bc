"""`grade.py feedback`: nbgrader's feedback without hidden tests, and the check that none leaked."""
from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

from .cells import grade_id, hidden_lines, is_grade, nonblank_lines, read_nb, strip_hidden
from .course import find_assignments, require_course, submissions
from .nbgrader_setup import nbgrader_config, quiet_traitlets
from .results import load_result, save_result


LEAK_NOTICE = "[output removed by the grader: it showed hidden test code]"


def _output_text(out) -> str:
    parts = [out.get("text", ""), out.get("evalue", "")] + list(out.get("traceback", []))
    for value in out.get("data", {}).values():
        parts += value if isinstance(value, list) else [value if isinstance(value, str) else ""]
    return " ".join(" ".join(str(p) for p in parts).split())


def _feedback_preprocessor_class(secret: set, leaked: list):
    from nbgrader.preprocessors import NbGraderPreprocessor
    secret = {" ".join(ln.split()) for ln in secret}

    class HideTests(NbGraderPreprocessor):
        """Graded cells: hidden test code removed; errors cut to `Name: message` (no code context).
        Any cell: an output that shows a hidden test line (printed from `In`, a frame, a file) is replaced."""

        def preprocess_cell(self, cell, resources, index):
            if cell.cell_type == "code":
                # progress-bar widgets render as empty boxes in static HTML
                cell.outputs = [o for o in cell.get("outputs", []) if o.output_type != "display_data"
                                or "application/vnd.jupyter.widget-view+json" not in o.get("data", {})]
                import nbformat
                for i, out in enumerate(cell.outputs):
                    text = _output_text(out)
                    if any(ln in text for ln in secret):
                        leaked.append(grade_id(cell) or f"cell {index}")
                        cell.outputs[i] = nbformat.v4.new_output("stream", name="stdout", text=LEAK_NOTICE + "\n")
            if is_grade(cell) and cell.cell_type == "code":
                cell.source = strip_hidden(cell.source)
                for out in cell.get("outputs", []):
                    if out.output_type == "error":
                        out.traceback = [f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"]
            return cell, resources
    return HideTests


def _flag(course: Path, student: str, slug: str, note: str):
    """Add `note` to a result (re-signed), once."""
    r = load_result(course, student, slug)
    if r is not None and r.get("status") != "tampered" and note not in r.get("notes", []):
        r.setdefault("notes", []).append(note)
        save_result(course, r)


def cmd_feedback(args) -> int:
    from nbgrader.converters import GenerateFeedback
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.preprocessors import GetGrades
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor

    course = args.course
    require_course(course)
    quiet_traitlets()
    logging.getLogger("traitlets").setLevel(logging.ERROR)   # nbconvert's alt-text and config chatter
    secrets_by_slug = hidden_secrets(course)
    done = 0
    for student, slug in submissions(course, args.assignment, args.student):
        if not (course / "autograded" / student / slug / f"{slug}.ipynb").is_file():
            continue
        leaked: list = []
        cfg = nbgrader_config(course)
        cfg.GenerateFeedback.force = True
        cfg.GenerateFeedback.preprocessors = [_feedback_preprocessor_class(secrets_by_slug.get(slug, set()), leaked),
                                              GetGrades, CSSHTMLHeaderPreprocessor]
        coursedir = CourseDirectory(config=cfg)
        coursedir.assignment_id = slug
        coursedir.student_id = student
        GenerateFeedback(coursedir=coursedir, config=cfg).start()
        if leaked:
            note = f"printed hidden test code ({', '.join(sorted(set(leaked)))}): removed from the feedback"
            _flag(course, student, slug, note)
            print(f"grade: WARNING: {student} {slug}: {note}", file=sys.stderr)
        done += 1
    # the last line of defence: a feedback file that still shows a hidden line is withheld
    for f, line in verify_feedback(course, secrets_by_slug):
        f.unlink()
        student, slug = f.parent.parent.name, f.parent.name
        _flag(course, student, slug, "feedback withheld: it showed hidden test code")
        print(f"grade: HIDDEN TEST LEAK in {f.relative_to(course)} ({line!r}): file withheld, student flagged",
              file=sys.stderr)
    print(f"feedback for {done} submission(s) in {course / 'feedback'}")
    return 0


def hidden_secrets(course: Path) -> dict:
    """{slug: hidden test lines a student must never see} (lines the release shows anyway excluded)."""
    secret = {}
    for slug in find_assignments(course):
        lines = set()
        for c in read_nb(course / "source" / slug / f"{slug}.ipynb").cells:
            if is_grade(c):
                lines |= {ln for ln in hidden_lines(c.source) if len(ln) > 12}
        # a hidden line that the release shows anyway (e.g. `autograder.check(1, fn, cases=[`) is no secret
        release = read_nb(course / "release" / slug / f"{slug}.ipynb")
        public = {ln for c in release.cells for ln in nonblank_lines(c.source)}
        secret[slug] = lines - public
    return secret


def verify_feedback(course: Path, secrets_by_slug: dict = None) -> list:
    """(file, line) of every feedback file that contains a line of a hidden test."""
    import html as _html
    secret = hidden_secrets(course) if secrets_by_slug is None else secrets_by_slug
    leaks = []
    for f in sorted((course / "feedback").rglob("*.html")) if (course / "feedback").is_dir() else []:
        text = _html.unescape(re.sub(r"<[^>]+>", "", f.read_text(errors="replace")))
        text = " ".join(text.split())
        for ln in secret.get(f.parent.name, ()):
            if " ".join(ln.split()) in text:
                leaks.append((f, ln))
                break
    return leaks
