"""nbgrader configuration of the course (used by tools/build_course.py and by the nbgrader CLI).

The course root is this repository: nbgrader's "source" notebooks are notebooks/<slug>/<slug>.ipynb
(generated from notebooks/<slug>/<slug>.py; never edit the .ipynb) and the student versions go to
release/<slug>/. Build both with `python tools/build_course.py`, not with `nbgrader generate_assignment`
by hand: the build script also normalises the output so that it is byte-for-byte reproducible.
"""
import os
import tempfile

c = get_config()  # noqa: F821 - injected by traitlets when it loads this file

_ROOT = os.path.dirname(os.path.abspath(__file__))

c.CourseDirectory.root = _ROOT
c.CourseDirectory.source_directory = "notebooks"
c.CourseDirectory.release_directory = "release"
# Never copied into a release: the jupytext sources (they hold the solutions), checkpoints, caches.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "*.py", "*.md"]

# The gradebook is instructor state, not part of the course: keep it out of the repository.
# (tools/build_course.py runs without any gradebook.) Override with NBGRADER_DB_URL to grade for real.
c.CourseDirectory.db_url = os.environ.get(
    "NBGRADER_DB_URL",
    "sqlite:///" + os.path.join(tempfile.gettempdir(), "flash-attention-course-gradebook.db"))
# nbgrader apps otherwise write .nbgrader.log into the working directory.
c.NbGrader.logfile = ""

# Notebooks run Triton in the interpreter on the CPU tier: a check cell can take minutes.
c.Execute.timeout = 600
