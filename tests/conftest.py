"""Running the suite on every core (`make test` passes `-n <cores> --dist loadgroup` to pytest-xdist).

A worker computes a session or module fixture for itself, so the tests that share an expensive one go to
one worker together: every notebook executed (test_pipeline), every mutant graded (test_kill_rate), the
Gradescope harness, and the local Slurm cluster (two files start one: never two clusters at once). The
other tests go to whichever worker is free, which fills the cores that the long grading runs leave idle
(kernel starts, cell time-outs, Slurm's scheduling).

The longest work goes first: xdist hands out work in collection order (`make test` passes
--no-loadscope-reorder; by default it would order scopes by how many tests they hold), so a long test
collected late would run alone at the end while the other core idles (18% of a 2-core run's CPU idle before, 5% after,
by vmstat).
"""
from __future__ import annotations

import pytest

# module file name -> the group its tests share
GROUPS = {
    "test_pipeline": "notebooks", "test_kill_rate": "mutants", "test_gradescope": "gradescope",
    "test_slurm_cluster": "slurm", "test_grading_scale": "slurm", "test_check": "check",
    "test_guard_hostile": "guard", "test_record": "record", "test_triton_basics": "triton_basics",
    "test_publish": "publish",
}


# the longest tests and groups, longest first (seconds on 2 busy cores, a fresh clone's `make test --durations`):
# the grading runs end to end, each grading units in two processes of its own
LONGEST_FIRST = (
    "test_grading_scale.py::test_slurm_grades_like_local",          # ~410 with its group (a real Slurm)
    "test_grading.py::test_hostile_submissions",                    # ~330 (two references live, one of them P9)
    "test_gradescope.py::test_gradescope_autograder",               # ~305 (setup.sh builds a venv)
    "test_grading.py::test_grading_end_to_end",                     # ~230
    "test_grading.py::test_hostile_class_round_two",                # ~105
    "test_grading.py::test_hostile_names_links_and_feedback",       # ~95
)


def _rank(item) -> int:
    path = item.nodeid.split("::", 1)[0].rpartition("/")[2] + "::" + item.nodeid.split("::", 1)[-1]
    return next((i for i, name in enumerate(LONGEST_FIRST) if path.startswith(name)), len(LONGEST_FIRST))


# tryfirst: xdist's worker reads the markers in its own pytest_collection_modifyitems, which pluggy calls
# before a conftest's; without it the groups were ignored and every worker computed the shared fixtures
# itself (both graded all 105 mutants; tests/test_xdist_groups.py)
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        group = GROUPS.get(item.module.__name__.rpartition(".")[2]) if item.module else None
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=_rank)           # stable: the rest keep their order
