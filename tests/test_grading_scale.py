"""Grading a class on an engine instructors already run: a real single-node Slurm (Debian's slurm-wlm,
started by tests/slurm_cluster.py) through submitit, against the local executor.

A class of 7 units over 3 problems (a reference of each, a planted bug, a PyTorch cheat, a hang, an
untouched release) is graded with `--executor local`, then again with `--executor slurm`: grades.csv is the
same byte for byte. Then a run whose task is cancelled with scancel mid-run: `status` names the units it
left, the summary says why they are missing, and the next run grades only those. Skips where Slurm cannot
start here (not root and not installed); CI runs as root and installs it.
"""
from __future__ import annotations

import json
import subprocess
import time

import pytest

pytest.importorskip("nbgrader")
pytest.importorskip("submitit")

from slurm_cluster import SlurmCluster, SlurmStartError, SlurmUnavailable  # noqa: E402
from test_grading import GRADE, P2, P3, REPO, _have, index_of, release, solved, submit  # noqa: E402

pytestmark = pytest.mark.slow
P1 = "p1_pytorch_flash_attention"

CHEAT = ("def flash_attention_forward(q, k, v, is_causal=False, window_size=None, sink_size=None):\n"
         "    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=is_causal)\n")
HANG = "import time\nwhile True:\n    time.sleep(0.05)\n"
LIMITS = ["--cell-timeout", "20", "--timeout", "300", "--jobs", "2", "--memory-limit", "4G"]


def _grade(course, *args, env=None, timeout=900):
    out = subprocess.run(GRADE + [args[0], "--course", str(course), *args[1:]], cwd=REPO, text=True,
                         capture_output=True, timeout=timeout, env=env)
    print(out.stdout[-4000:], out.stderr[-3000:])
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def _class(course):
    """Every outcome a unit can have, once: 7 units of 5 students over 3 problems (each unit costs 20-40 s of
    a core on the CPU tier, and the class is graded twice)."""
    bug = [("Q_ptr += b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh",
            "Q_ptr += b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh")]
    cheat = solved(course, P3)
    cheat.cells.insert(index_of(cheat, "p3_kernel") + 3, __import__("nbformat").v4.new_code_cell(CHEAT))
    hang = solved(course, P2)
    hang.cells.insert(3, __import__("nbformat").v4.new_code_cell(HANG))    # interrupted after 20 s; the rest runs
    plan = {
        "ref": {P1: solved(course, P1), P2: solved(course, P2), P3: solved(course, P3)},
        "bug": {P3: solved(course, P3, p3_kernel=bug)},
        "cheat": {P3: cheat},
        "hang": {P2: hang},
        "empty": {P1: release(course, P1)},
    }
    for student, nbs in plan.items():
        for slug, nb in nbs.items():
            submit(course, student, slug, nb)


@pytest.mark.skipif(not all(_have(s) for s in (P1, P2, P3)), reason="Problems 1-3 are not built yet")
def test_slurm_grades_like_local_and_a_cancelled_task_regrades_only_its_units(tmp_path):
    course = tmp_path / "course"
    _grade(course, "release", "--no-build", "-a", P1, "-a", P2, "-a", P3)
    _class(course)
    t0 = time.time()
    local = _grade(course, "autograde", *LIMITS)
    t_local = time.time() - t0
    _grade(course, "export")
    local_csv = (course / "grades.csv").read_bytes()
    assert local.count("[") >= 7 and "ETA" in local, local            # a progress count and ETA on every unit

    cluster = SlurmCluster(tmp_path / "slurm", partition="grading")
    try:
        cluster.start()
    except SlurmStartError:
        raise
    except SlurmUnavailable as exc:
        pytest.skip(f"no Slurm here: {exc}")
    try:
        env = cluster.env
        slurm = [*LIMITS, "--executor", "slurm", "--partition", "grading", "--max-parallel", "2",
                 "--cpus-per-task", "1", "--time-per-unit", "300"]
        t0 = time.time()
        out = _grade(course, "autograde", "--force", *slurm, env=env)
        t_slurm = time.time() - t0
        assert "submitted Slurm job array" in out, out
        _grade(course, "export", env=env)
        assert (course / "grades.csv").read_bytes() == local_csv
        rows = (course / "grades.csv").read_text().splitlines()
        assert len(rows) == 8 and any(r.startswith(f"ref,{P3},10,") for r in rows), rows
        assert any(r.startswith(f"cheat,{P3},0,") for r in rows) and any(r.startswith(f"bug,{P3},8,") for r in rows)
        print(f"7 units: local (2 jobs) {t_local:.0f} s, Slurm (2 tasks) {t_slurm:.0f} s")

        # a run cut short: four changed submissions, two tasks of two units; the first task is cancelled
        # while it grades its first unit
        for student, slug in (("ref", P1), ("ref", P2), ("ref", P3), ("empty", P1)):
            (course / "submitted" / student / slug / "notes.txt").write_text("changed\n")
        out = _grade(course, "autograde", *slurm, "--no-wait", env=env)
        run = json.loads(sorted((course / "runs").glob("*.json"))[-1].read_text())
        assert len(run["units"]) == 4 and len(run["tasks"]) == 2, run
        first = run["tasks"][0]
        state = course / "units" / first["units"][0][0] / f"{first['units'][0][1]}.json"
        deadline = time.time() + 300
        while not (state.is_file() and json.loads(state.read_text()).get("run_id") == run["run_id"]):
            assert time.time() < deadline, cluster.logs()
            time.sleep(0.5)
        cluster.run(["scancel", first["task"]])
        deadline = time.time() + 600
        while True:
            status = _grade(course, "status", env=env)
            if "running 0" in status and "queued 0" in status:
                break
            assert time.time() < deadline, status
            time.sleep(3)
        assert "failed 2" in status and "done 2" in status, status
        lost = {tuple(u) for u in first["units"]}
        summary = _grade(course, "summary", env=env)
        assert "latest grading left no result" in summary, summary
        for student, slug in lost:     # the one its worker had started, and the one it never reached
            line = next(ln for ln in summary.splitlines() if ln.startswith(f"  {student} {slug}: "))
            assert f"Slurm job {first['task']}" in line and "the next `autograde` grades it" in line, line
        out = _grade(course, "autograde", *LIMITS, env=env)
        graded = {(ln.split()[0], ln.split()[1]) for ln in out.splitlines() if ln.startswith("  ") and "/" in ln}
        assert graded == lost, (graded, lost, out)
        _grade(course, "export", env=env)
        assert (course / "grades.csv").read_bytes() == local_csv
    finally:
        cluster.stop()
    assert not cluster.leftover_processes()


@pytest.mark.skipif(not _have(P2), reason="Problem 2 is not built yet")
def test_gpus_pin_one_worker_per_gpu(tmp_path):
    """`--gpus 0,1`: two workers, each unit's kernel sees only its slot's GPU (CUDA_VISIBLE_DEVICES); on a
    machine without GPUs the CPU tier runs, which is enough to see the pinning."""
    import re

    import nbformat
    from test_grading import _outputs, _run
    course = tmp_path / "course"
    _grade(course, "release", "--no-build", "-a", P2)
    for student in ("a", "b", "c"):
        nb = release(course, P2)
        nb.cells.insert(3, nbformat.v4.new_code_cell("import os\nprint('CVD', os.environ.get('CUDA_VISIBLE_DEVICES'))"))
        submit(course, student, P2, nb)
    out = _grade(course, "autograde", "--gpus", "0,1", "--tier", "cpu", "--cell-timeout", "60")
    slots = dict(re.findall(r"^\s+(\w)\s+p2_triton_basics.*\[GPU (\d)\]", out, re.M))
    assert sorted(slots) == ["a", "b", "c"] and set(slots.values()) == {"0", "1"}, out
    for student, gpu in slots.items():
        assert f"CVD {gpu}" in _outputs(course, student, P2)
    for bad in ("x", "0,a", ""):
        rc, text = _run(course, "autograde", "--force", "--gpus", bad)
        assert rc == 2 and len(text.strip().splitlines()) == 1 and "--gpus" in text, (bad, text)
