"""nbgrader's configuration for a course directory."""
from __future__ import annotations

import logging
from pathlib import Path

from . import DEFAULT_CELL_TIMEOUT, REPO


def nbgrader_config(course: Path, cell_timeout: int = DEFAULT_CELL_TIMEOUT, submitted: str = "submitted"):
    """The repo's nbgrader_config.py pointed at `course`, with the gradebook inside it."""
    from traitlets.config import Config, PyFileConfigLoader

    cfg = Config()
    cfg.merge(PyFileConfigLoader("nbgrader_config.py", path=str(REPO)).load_config())
    cfg.CourseDirectory.root = str(course)
    cfg.CourseDirectory.source_directory = "source"
    cfg.CourseDirectory.release_directory = "release"
    cfg.CourseDirectory.submitted_directory = submitted
    cfg.CourseDirectory.db_url = f"sqlite:///{course / 'gradebook.db'}"
    cfg.NbGrader.logfile = ""
    cfg.Execute.timeout = int(cell_timeout)
    cfg.Execute.interrupt_on_timeout = True
    cfg.Execute.error_on_timeout = {
        "ename": "CellTimeoutError",
        "evalue": f"this cell ran longer than {int(cell_timeout)} s and was interrupted",
        "traceback": [f"CellTimeoutError: this cell ran longer than {int(cell_timeout)} s and was interrupted"],
    }
    return cfg


def quiet_traitlets():
    for name in ("traitlets", "nbgrader", "GenerateAssignment", "Autograde", "GenerateFeedback"):
        logging.getLogger(name).setLevel(logging.WARNING)
