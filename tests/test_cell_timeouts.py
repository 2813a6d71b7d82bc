"""The grader's cell limits (tools/grading/autograde_one.py `bounded_execute`): a notebook pays the full
--cell-timeout once; after that every cell gets the short limit, and the reason says what happened.
A plain kernel, no nbgrader course, no sandbox: about 20 s."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tools.grading import autograde_one  # noqa: E402

LOOP = "import time\nwhile True:\n    time.sleep(0.05)\n"
DEAF = "import time\nwhile True:\n    try:\n        time.sleep(0.05)\n    except KeyboardInterrupt:\n        pass\n"


def _notebook(*sources):
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src, id=f"c{i}") for i, src in enumerate(sources)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _errors(cell):
    return [o for o in cell.outputs if o.output_type == "error"]


def test_after_one_timeout_every_cell_gets_the_short_limit(monkeypatch):
    monkeypatch.setattr(autograde_one, "HUNG_CELL_TIMEOUT", 2)
    timeouts = []
    ex = autograde_one.bounded_execute(6, timeouts)(kernel_name="python3")
    nb = _notebook(LOOP, "x = 1", "time.sleep(0.5); y = 2", LOOP)
    t0 = time.time()
    ex.preprocess(nb, {"metadata": {"path": str(REPO)}})
    took = time.time() - t0
    assert timeouts == [("c0", 6), ("c3", 2)]
    first = _errors(nb.cells[0])[0]
    assert first.ename == "CellTimeoutError" and first.evalue == "cell c0 ran past the 6 s limit and was interrupted"
    assert not _errors(nb.cells[1]) and not _errors(nb.cells[2])
    assert _errors(nb.cells[3])[0].evalue == "cell c3 ran past the 2 s limit and was interrupted"
    assert took < 6 + 2 + 20, took


def test_a_cell_that_ignores_the_interrupt_stops_the_notebook():
    from nbclient.exceptions import CellTimeoutError
    timeouts = []
    ex = autograde_one.bounded_execute(3, timeouts)(kernel_name="python3")
    with pytest.raises(CellTimeoutError):
        ex.preprocess(_notebook(DEAF, "z = 3"), {"metadata": {"path": str(REPO)}})
    assert timeouts == [("c0", 3)]
