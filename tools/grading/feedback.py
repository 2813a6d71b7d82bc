"""`grade.py feedback`: nbgrader's feedback without hidden tests, and the check that none leaked."""
from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

from .cells import grade_id, hidden_lines, is_grade, nonblank_lines, read_nb, strip_hidden
from .course import find_assignments, require_course, submissions
from .course import refused as course_refused
from .nbgrader_setup import nbgrader_config, quiet_traitlets
from .results import load_result, save_result


LEAK_NOTICE = "[output removed by the grader: it showed hidden test code]"


def _output_text(out) -> str:
    parts = [out.get("text", ""), out.get("evalue", "")] + list(out.get("traceback", []))
    for value in out.get("data", {}).values():
        parts += value if isinstance(value, list) else [value if isinstance(value, str) else ""]
    return " ".join(" ".join(str(p) for p in parts).split())


# what an output may show in the feedback: every output comes from the student's kernel, so nothing
# that a browser would run or lay out as markup (text/html, SVG, JavaScript, Markdown, LaTeX)
SAFE_MIMETYPES = ("text/plain", "image/png", "image/jpeg", "image/gif")


def _inert_outputs(outputs) -> list:
    """The outputs with only SAFE_MIMETYPES left (as plain text when nothing else is); widgets dropped."""
    import nbformat
    out = []
    for o in outputs:
        data = o.get("data")
        if data is None:
            out.append(o)
            continue
        if "application/vnd.jupyter.widget-view+json" in data:
            continue          # progress-bar widgets render as empty boxes in static HTML
        kept = {k: v for k, v in data.items() if k in SAFE_MIMETYPES}
        if not kept:
            raw = next(iter(data.values()), "")
            kept = {"text/plain": raw if isinstance(raw, str) else "".join(raw) if isinstance(raw, list) else str(raw)}
        out.append(nbformat.from_dict(dict(o, data=kept)))
    return out


def _as_text(source: str) -> str:
    """Markdown that shows `source` literally: an indented code block, which no line can leave."""
    return "*(a cell you added, shown as text)*\n\n" + "\n".join("    " + ln for ln in source.split("\n"))


def locked_markdown(course: Path, slug: str) -> dict:
    """{grade_id: text} of the instructor's markdown cells: the only markdown rendered as such."""
    return {grade_id(c): c.source for c in read_nb(course / "source" / slug / f"{slug}.ipynb").cells
            if c.cell_type == "markdown" and grade_id(c)}


def _feedback_preprocessor_class(secret: set, leaked: list, trusted_markdown: dict):
    from nbgrader.preprocessors import NbGraderPreprocessor
    secret = {" ".join(ln.split()) for ln in secret}

    class HideTests(NbGraderPreprocessor):
        """Graded cells: hidden test code removed; errors cut to `Name: message` (no code context).
        Any cell: an output that shows a hidden test line (printed from `In`, a frame, a file) is replaced.
        Student text is data: outputs keep plain text and images only, and markdown that is not the
        instructor's is shown as text, so a printed `<script>` or a fake score box stays text."""

        def preprocess_cell(self, cell, resources, index):
            if cell.cell_type == "raw" or \
                    (cell.cell_type == "markdown" and trusted_markdown.get(grade_id(cell)) != cell.source):
                cell.cell_type, cell.source, cell.attachments = "markdown", _as_text(cell.source), {}
                cell.metadata.pop("format", None)
                cell.metadata.pop("raw_mimetype", None)
            if cell.cell_type == "code":
                cell.outputs = _inert_outputs(cell.get("outputs", []))
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


def _html_only_feedback_class(failure: list):
    from nbgrader.converters import GenerateFeedback

    class HtmlOnlyFeedback(GenerateFeedback):
        """nbgrader's feedback without the other files of autograded/ (the student's own, the source's):
        feedback/ holds only the HTML the grader wrote. The first error is kept for a one-line report."""

        def init_assignment(self, assignment_id, student_id):
            pass

        def convert_single_notebook(self, filename):
            try:
                super().convert_single_notebook(filename)
            except Exception as exc:
                failure.append(f"{type(exc).__name__}: {exc}")
                raise
    return HtmlOnlyFeedback


def _keep_only_html(folder: Path):
    """Remove whatever is not an HTML file of ours (older runs copied the submission's files here)."""
    import shutil
    for p in folder.iterdir() if folder.is_dir() and not folder.is_symlink() else ():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.is_symlink() or not p.is_file() or p.suffix != ".html":
            p.unlink()


def cmd_feedback(args) -> int:
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.preprocessors import GetGrades
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor

    course = args.course
    require_course(course)
    quiet_traitlets()
    # nbconvert's alt-text and config chatter; nbgrader's own tracebacks: each failure is reported in one line
    logging.getLogger("traitlets").setLevel(logging.CRITICAL)
    secrets_by_slug = hidden_secrets(course)
    done = 0
    failed = course_refused(course, args.assignment, args.student)
    for student, slug in submissions(course, args.assignment, args.student):
        if not (course / "autograded" / student / slug / f"{slug}.ipynb").is_file():
            failed.append(f"{student} {slug}: not autograded yet: run `python tools/grade.py autograde -s {student}`")
            continue
        leaked: list = []
        cfg = nbgrader_config(course)
        cfg.GenerateFeedback.force = True
        cfg.GenerateFeedback.preprocessors = [_feedback_preprocessor_class(secrets_by_slug.get(slug, set()), leaked,
                                                                          locked_markdown(course, slug)),
                                              GetGrades, CSSHTMLHeaderPreprocessor]
        coursedir = CourseDirectory(config=cfg)
        coursedir.assignment_id = slug
        coursedir.student_id = student
        failure: list = []
        out_dir = course / "feedback" / student / slug
        try:
            _html_only_feedback_class(failure)(coursedir=coursedir, config=cfg).start()
        except (Exception, SystemExit) as exc:   # one submission's failure never stops the others' feedback
            failure.append(f"{type(exc).__name__}: {exc}")
        _keep_only_html(out_dir)
        if failure or not (out_dir / f"{slug}.html").is_file():
            (out_dir / f"{slug}.html").unlink(missing_ok=True)     # an older page would show an older grade
            failed.append(f"{student} {slug}: {(failure or ['nbgrader wrote no HTML'])[0][:300]}")
            continue
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
    for line in failed:
        print(f"grade: no feedback for {line}", file=sys.stderr)
    return 1 if failed else 0


def hidden_secrets(course: Path) -> dict:
    """{slug: hidden test lines a student must never see} (lines the release shows anyway excluded)."""
    return {slug: secret_lines(read_nb(course / "source" / slug / f"{slug}.ipynb"),
                               read_nb(course / "release" / slug / f"{slug}.ipynb"))
            for slug in find_assignments(course)}


def secret_lines(source, release) -> set:
    """The hidden test lines of a source notebook that its release does not show anyway."""
    lines = set()
    for c in source.cells:
        if is_grade(c):
            lines |= {ln for ln in hidden_lines(c.source) if len(ln) > 12}
    # a hidden line that the release shows anyway (e.g. `autograder.check(1, fn, cases=[`) is no secret
    public = {ln for c in release.cells for ln in nonblank_lines(c.source)}
    return lines - public


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
