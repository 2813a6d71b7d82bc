"""The command line of tools/grade.py."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

from . import DEFAULT_CELL_TIMEOUT, DEFAULT_COURSE, DEFAULT_TIMEOUT, REPO
from .autograde_one import cmd_one
from .course import UsageError
from .feedback import cmd_feedback
from .gradescope import GS_CELL_TIMEOUT, GS_MEMORY_LIMIT, GS_TIMEOUT, cmd_gradescope, cmd_gradescope_run
from .release import cmd_release
from .report import cmd_export, cmd_summary
from .collect import cmd_collect
from .runner import cmd_autograde, cmd_shard
from .status import cmd_status
from .sandbox import DEFAULT_MEMORY_LIMIT, parse_size

DESCRIPTION = "Grade the course: release, autograde every submission, feedback, grades CSV, summary table."


def cmd_all(args) -> int:
    if not (args.course / "gradebook.db").is_file() or args.rebuild:
        rc = cmd_release(args)
        if rc:
            return rc
    worst = 0
    for step in (cmd_autograde, cmd_feedback, cmd_export, cmd_summary):
        rc = step(args)
        if rc == 2 or (args.executor == "slurm" and args.no_wait):
            return rc           # --no-wait: the results come later (`collect`, then `feedback`)
        worst = max(worst, rc)      # 1: some submissions failed; the others still get every step
    return worst


def check_args(args):
    """Before any work: limits of 0 or less would switch a limit off or grade nothing; --to needs its folder."""
    for opt in ("cell_timeout", "timeout", "jobs", "jobs_per_gpu", "cpus_per_task", "time_per_unit", "max_parallel",
                "shards_per_slot"):
        value = getattr(args, opt, None)
        if value is not None and value < 1:
            raise UsageError(f"--{opt.replace('_', '-')} {value}: must be at least 1")
    to = getattr(args, "to", None)
    if to is not None and to.is_dir():
        raise UsageError(f"--to {to} is a folder: give the CSV file's path, e.g. {to / 'grades.csv'}")
    if to is not None and not to.resolve().parent.is_dir():
        raise UsageError(f"--to {to}: the folder {to.resolve().parent} does not exist: create it first")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--course", type=Path, default=DEFAULT_COURSE,
                        help=f"course directory (default: {DEFAULT_COURSE.relative_to(REPO)}/ in the repository)")
    common.add_argument("--assignment", "-a", action="append", help="only this problem slug (repeatable)")
    common.add_argument("--student", "-s", action="append", help="only this student id (repeatable)")
    grading = argparse.ArgumentParser(add_help=False)
    grading.add_argument("--cell-timeout", type=int, default=DEFAULT_CELL_TIMEOUT,
                         help=f"seconds one cell may run before it is interrupted (default {DEFAULT_CELL_TIMEOUT})")
    grading.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT,
                         help=f"seconds one notebook may take in all (default {DEFAULT_TIMEOUT})")
    grading.add_argument("--jobs", "-j", type=int, default=1, help="(student, notebook) pairs graded at once (default 1)")
    grading.add_argument("--force", action="store_true", help="grade again what was graded already")
    grading.add_argument("--tier", choices=("cpu", "gpu"), help="force the autograder tier (default: this machine's)")
    grading.add_argument("--sandbox", choices=("auto", "namespace", "none"), default="auto",
                         help="isolate each kernel in Linux namespaces (auto: when the machine allows it)")
    grading.add_argument("--memory-limit", default=DEFAULT_MEMORY_LIMIT, metavar="SIZE",
                         help=f"memory of one kernel and everything it starts, e.g. 8G, 512M; 0: no limit "
                              f"(default {DEFAULT_MEMORY_LIMIT}; a cgroup, else RLIMIT_DATA without a GPU)")
    grading.add_argument("--restore-deleted-tests", action="store_true",
                         help="run a deleted test cell from the source instead of scoring it 0")
    where = grading.add_argument_group("where workers run (docs/instructor.md, 'Grading a large class')")
    where.add_argument("--executor", choices=("local", "slurm"), default="local",
                       help="local: this machine (--jobs, --gpus); slurm: a job array through submitit")
    where.add_argument("--gpus", metavar="all|0,1,3", help="local: one worker per GPU (and --jobs-per-gpu), "
                                                          "pinned with CUDA_VISIBLE_DEVICES; replaces --jobs")
    where.add_argument("--jobs-per-gpu", type=int, default=1, help="local with --gpus: workers per GPU (default 1)")
    where.add_argument("--partition", help="slurm: the partition (default: the cluster's default)")
    where.add_argument("--gpus-per-task", type=int, default=0, help="slurm: GPUs per array task (default 0: CPU tier)")
    where.add_argument("--cpus-per-task", type=int, default=2, help="slurm: CPUs per array task (default 2)")
    where.add_argument("--time-per-unit", type=int, default=DEFAULT_TIMEOUT, metavar="S",
                       help=f"slurm: seconds one unit may take; a task's time limit is this times its units "
                            f"(default {DEFAULT_TIMEOUT}, the notebook limit)")
    where.add_argument("--max-parallel", type=int, default=8, help="slurm: array tasks running at once (default 8)")
    where.add_argument("--shards-per-slot", type=int, default=1,
                       help="slurm: tasks per parallel slot; more, shorter tasks lose less to a failure (default 1)")
    where.add_argument("--no-wait", action="store_true",
                       help="slurm: return once submitted; `status` shows progress, `collect` builds the gradebook")
    p = sub.add_parser("release", parents=[common], help="build the course and register it in the gradebook")
    p.add_argument("--no-build", action="store_true", help="do not run tools/build_course.py first")
    p.set_defaults(fn=cmd_release)
    sub.add_parser("autograde", parents=[common, grading], help="grade every submission").set_defaults(fn=cmd_autograde)
    sub.add_parser("feedback", parents=[common], help="HTML feedback without hidden tests").set_defaults(fn=cmd_feedback)
    p = sub.add_parser("export", parents=[common], help="grades CSV (and per-cell CSV)")
    p.add_argument("--to", type=Path, help="CSV path (default <course>/grades.csv)")
    p.set_defaults(fn=cmd_export)
    sub.add_parser("summary", parents=[common], help="student x problem table").set_defaults(fn=cmd_summary)
    p = sub.add_parser("all", parents=[common, grading], help="release if needed, autograde, feedback, export, summary")
    p.add_argument("--no-build", action="store_true", help="do not run tools/build_course.py first")
    p.add_argument("--rebuild", action="store_true", help="release again even if the course exists")
    p.add_argument("--to", type=Path, help="CSV path (default <course>/grades.csv)")
    p.set_defaults(fn=cmd_all)
    sub.add_parser("status", parents=[common], help="the latest run: done / running / failed / queued, ETA") \
        .set_defaults(fn=cmd_status)
    p = sub.add_parser("collect", parents=[common], help="gradebook, grades CSV and summary from the results")
    p.add_argument("--to", type=Path, help="CSV path (default <course>/grades.csv)")
    p.set_defaults(fn=cmd_collect)
    p = sub.add_parser("_one", parents=[common, grading])   # internal: one submission, in a subprocess
    p.set_defaults(fn=cmd_one)
    p = sub.add_parser("_shard", parents=[common, grading])   # internal: a Slurm task's units
    p.add_argument("--units", required=True)
    p.set_defaults(fn=cmd_shard)
    p = sub.add_parser("gradescope", help="one problem's autograder.zip for Gradescope (docs/instructor.md)")
    p.add_argument("--assignment", "-a", action="append", help="the problem slug (exactly one)")
    p.add_argument("--out", type=Path, help="folder for autograder.zip (default build/gradescope/<slug>/)")
    p.add_argument("--cell-timeout", type=int, default=GS_CELL_TIMEOUT,
                   help=f"seconds one cell may run on Gradescope (default {GS_CELL_TIMEOUT})")
    p.add_argument("--timeout", type=int, default=GS_TIMEOUT,
                   help=f"seconds one notebook may take on Gradescope (default {GS_TIMEOUT}; keep it under the "
                        f"assignment's autograder timeout, 10 minutes unless raised)")
    p.add_argument("--memory-limit", default=GS_MEMORY_LIMIT, metavar="SIZE",
                   help=f"memory of the grading kernel on Gradescope (default {GS_MEMORY_LIMIT}; 0: no limit)")
    p.set_defaults(fn=cmd_gradescope, course=DEFAULT_COURSE)
    # internal: what run_autograder runs on Gradescope (settings from the environment, see gradescope.py)
    sub.add_parser("_gradescope_run").set_defaults(fn=cmd_gradescope_run, course=DEFAULT_COURSE)
    args = parser.parse_args(argv)
    args.course = args.course.resolve()
    # nbgrader shells out to `alembic` (gradebook migrations): the one next to this Python
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # nbgrader's gradebook code trips SQLAlchemy's autoflush and deprecation warnings: noise to an instructor
    from sqlalchemy.exc import SADeprecationWarning, SAWarning
    warnings.filterwarnings("ignore", category=SAWarning)
    warnings.filterwarnings("ignore", category=SADeprecationWarning)
    try:
        check_args(args)
        if hasattr(args, "memory_limit"):
            try:
                args.memory_limit = parse_size(args.memory_limit)
            except ValueError as exc:
                raise UsageError(f"--memory-limit: {exc}") from None
        return args.fn(args)
    except UsageError as exc:
        print(f"grade: {exc}", file=sys.stderr)
        return 2

