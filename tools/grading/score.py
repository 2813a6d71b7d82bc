"""Scoring: an error in a graded cell is 0, anything else full points."""
from __future__ import annotations

from ._failure import checks_failure
from .cells import grade_id


def cell_score(cell):
    """(score, why) of an executed graded cell.

    nbgrader's rule also zeroes a cell that wrote to stderr; progress bars and library warnings do,
    so here only an error output (or a cell that never ran) costs the points. A plain number as the
    cell's result is partial credit, as in nbgrader."""
    points = float(cell.metadata["nbgrader"]["points"])
    for out in cell.get("outputs", []):
        if out.output_type == "error":
            return 0.0, error_line(out)
    if cell.get("execution_count") is None:
        return 0.0, "the cell did not run"
    for out in cell.get("outputs", []):
        if out.output_type == "execute_result":
            text = out.get("data", {}).get("text/plain", "")
            try:
                value = float(text)
            except (TypeError, ValueError):
                continue
            return max(0.0, min(points, value)), "" if value >= points else f"partial credit {value:g}"
    return points, ""


def error_line(out) -> str:
    """`Name: summary`: a check's failure in one line (what went wrong, then the case), else the
    message's first line. The kernel's exception is gone: the output's text is all there is, and
    `Failure.parse` is the inverse of the autograder's own rendering."""
    why = checks_failure.Failure.parse(str(out.get("evalue", ""))).summary()
    text = f"{out.get('ename', 'Error')}: {why}" if why else str(out.get("ename", "Error"))
    return checks_failure.cut(text, 300)


def zero_cells(graded, graded_nb, reasons: dict, ename: str, result):
    """Graded cells `reasons` ({grade_id: why}) score 0: in the result and in the autograded notebook (an
    error output, which the feedback shows). The gradebook follows the result (collect.py)."""
    import nbformat
    if not reasons:
        return
    for gid, why in reasons.items():
        result["cells"][gid].update(score=0.0, why=why)
    for cell in graded_nb.cells:
        why = reasons.get(grade_id(cell))
        if why:
            cell.outputs.append(nbformat.v4.new_output("error", ename=ename, evalue=why, traceback=[f"{ename}: {why}"]))
    nbformat.write(graded_nb, str(graded))


def save_autogrades_class():
    from nbgrader.preprocessors import SaveAutoGrades

    class SaveAutoGradesOnErrors(SaveAutoGrades):
        """nbgrader's SaveAutoGrades with `cell_score` as the rule."""

        def _add_score(self, cell, resources):
            grade = self.gradebook.find_grade(cell.metadata["nbgrader"]["grade_id"], self.notebook_id,
                                              self.assignment_id, self.student_id)
            grade.auto_score = cell_score(cell)[0]
            grade.manual_score = None      # a re-grade is the whole truth: nothing set before survives it
            grade.needs_manual_grade = False
            self.gradebook.db.commit()
    return SaveAutoGradesOnErrors
