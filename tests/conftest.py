"""Running the suite on every core (`make test` passes `-n <cores> --dist loadgroup` to pytest-xdist).

A worker computes a session or module fixture for itself, so the tests that share an expensive one go to
one worker together: every notebook executed (test_pipeline), every mutant graded (test_kill_rate), the
Gradescope harness, and the local Slurm cluster (two files start one: never two clusters at once). The
other tests go to whichever worker is free, which fills the cores that the long grading runs leave idle
(kernel starts, cell time-outs, Slurm's scheduling).
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


# tryfirst: xdist's worker reads the markers in its own pytest_collection_modifyitems, which pluggy calls
# before a conftest's; without it the groups were ignored and every worker computed the shared fixtures
# itself (both graded all 105 mutants; tests/test_xdist_groups.py)
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        group = GROUPS.get(item.module.__name__.rpartition(".")[2]) if item.module else None
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
