"""`grade.py release`: build the repository's notebooks, then register the assignments in the course's gradebook."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tools import course_format

from . import REPO
from .cells import read_nb
from .nbgrader_setup import nbgrader_config, quiet_traitlets


def cmd_release(args) -> int:
    course = args.course
    if not args.no_build:
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        rc = subprocess.call([sys.executable, str(REPO / "tools" / "build_course.py")], cwd=REPO, env=env)
        if rc:
            print(f"grade: tools/build_course.py failed (exit {rc})", file=sys.stderr)
            return rc
    slugs = course_format.find_slugs(REPO / "notebooks", ".ipynb")
    if args.assignment:
        slugs = [s for s in slugs if s in args.assignment]
    if not slugs:
        print("grade: no built notebooks under notebooks/<slug>/<slug>.ipynb", file=sys.stderr)
        return 2
    course.mkdir(parents=True, exist_ok=True)
    from nbgrader.converters import GenerateAssignment
    from nbgrader.coursedir import CourseDirectory

    quiet_traitlets()
    cfg = nbgrader_config(course)
    cfg.GenerateAssignment.force = True
    for slug in slugs:
        dst = course / "source" / slug
        if dst.exists():
            shutil.rmtree(dst)
        # the .py source holds the solutions in plain text: the course needs only the .ipynb
        shutil.copytree(REPO / "notebooks" / slug, dst,
                        ignore=shutil.ignore_patterns("*.py", "__pycache__", ".ipynb_checkpoints"))
        coursedir = CourseDirectory(config=cfg)
        coursedir.assignment_id = slug
        GenerateAssignment(coursedir=coursedir, config=cfg).start()
        # the students got the repo's release/: it must hold the same cells as the course's
        ours, theirs = course / "release" / slug / f"{slug}.ipynb", REPO / "release" / slug / f"{slug}.ipynb"
        if theirs.is_file():
            a = [(c.cell_type, c.source) for c in read_nb(ours).cells]
            b = [(c.cell_type, c.source) for c in read_nb(theirs).cells]
            if a != b:
                print(f"grade: warning: release/{slug} differs from the course's release: rebuild "
                      f"(python tools/build_course.py) before handing it out", file=sys.stderr)
        print(f"released {slug} into {course} (gradebook {course / 'gradebook.db'})")
    return 0
