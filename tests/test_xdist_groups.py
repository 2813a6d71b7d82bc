"""`make test` runs on every core with `--dist loadgroup`: the tests that share an expensive fixture
(tests/conftest.py's GROUPS) must all run on one worker, or each worker computes the fixture again."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("xdist")
HERE = Path(__file__).resolve().parent


def test_a_group_runs_on_one_worker(tmp_path):
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    body = ("import os, pytest\n@pytest.mark.parametrize('i', range(12))\ndef test_x(i):\n"
            "    with open(os.path.join({out!r}, os.environ['PYTEST_XDIST_WORKER'] + '.{name}'), 'a') as f:\n"
            "        f.write('x')\n")
    for name in ("test_kill_rate", "test_other"):       # a grouped file ("mutants") and an ungrouped one
        (tmp_path / f"{name}.py").write_text(body.format(out=str(tmp_path), name=name))
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:benchmark",
                          "-n", "2", "--dist", "loadgroup", str(tmp_path)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    grouped = sorted(p.name for p in tmp_path.glob("gw*.test_kill_rate"))
    assert len(grouped) == 1, f"the 'mutants' group ran on {grouped}"
    assert len(grouped and (tmp_path / grouped[0]).read_text()) == 12


def test_the_longest_tests_start_first(tmp_path):
    """With make test's flags, the first test each worker runs is one of conftest.LONGEST_FIRST, though the
    file holding them is collected after short tests and a group of them (which xdist's default order,
    by tests per scope, would send first)."""
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    log = ("import os, time\n"
           "def _log(name):\n"
           "    with open(os.path.join({out!r}, os.environ['PYTEST_XDIST_WORKER'] + '.log'), 'a') as f:\n"
           "        f.write(name + '\\n')\n")
    short = "".join(f"def test_short_{i}():\n    _log('short')\n" for i in range(8))
    for name in ("test_algorithm", "test_kill_rate"):      # ungrouped, and a group ("mutants") of 8
        (tmp_path / f"{name}.py").write_text(log.format(out=str(tmp_path)) + short)
    (tmp_path / "test_grading.py").write_text(log.format(out=str(tmp_path)) + short + "".join(
        f"def {name}():\n    _log({name!r})\n    time.sleep(0.5)\n"
        for name in ("test_hostile_submissions", "test_grading_end_to_end")))
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:benchmark",
                          "-n", "2", "--dist", "loadgroup", "--no-loadscope-reorder", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    firsts = sorted(p.read_text().split()[0] for p in tmp_path.glob("gw*.log"))
    assert firsts == ["test_grading_end_to_end", "test_hostile_submissions"], firsts
