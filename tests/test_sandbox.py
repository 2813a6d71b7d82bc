"""The grading kernel's sandbox (tools/sandbox.py), started directly: what a process inside can see,
write and leave behind. Fast (no nbgrader, no kernel); on a GPU machine it also compiles and runs a
Triton kernel inside, as the graded notebooks do."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import sandbox  # noqa: E402

ISOLATED, WHY = sandbox.namespaces_available()

INSIDE = r'''
import json, os, subprocess, sys
report = {"uid": os.getuid(), "cwd": os.getcwd(), "argv": sys.argv[1:]}
report["sees"] = {p: os.path.exists(p) for p in json.loads(os.environ["PROBE_PATHS"])}
report["writes"] = {}
for p in json.loads(os.environ["PROBE_WRITES"]):
    try:
        open(p, "a").close()
        report["writes"][p] = True
    except OSError:
        report["writes"][p] = False
report["env"] = sorted(os.environ)
subprocess.Popen(["setsid", "sh", "-c", "while true; do date +%s%N > beat.txt; sleep 0.1; done"],
                 start_new_session=True)
import time; time.sleep(0.5)
if os.environ.get("PROBE_GPU"):
    # @triton.jit reads its function's source: from a file here (a notebook cell's is in linecache)
    open("fill_kernel.py", "w").write(
        "import triton, triton.language as tl\n"
        "@triton.jit\n"
        "def fill(X, value):\n"
        "    tl.store(X + tl.arange(0, 16), tl.full((16,), value, tl.float32))\n")
    sys.path.insert(0, os.getcwd())
    import torch, fill_kernel
    x = torch.zeros(16, device="cuda")
    fill_kernel.fill[(1,)](x, 3.0)
    report["gpu"] = x.sum().item()
open("report.json", "w").write(json.dumps(report))
'''


def _launch(tmp_path, mode, gpu=False):
    course = tmp_path / "course"
    jail = course / "jails" / "s" / "p"
    jail.mkdir(parents=True)
    (course / "gradebook.db").write_text("secret")
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("secret")
    conn = tmp_path / "conn.json"
    conn.write_text("{}")
    probes = [str(REPO / "solutions"), str(REPO / "notebooks"), str(REPO / ".git"), str(course / "gradebook.db"),
              str(secret_file), str(REPO / "autograder" / "check.py"), sys.executable]
    writes = [str(REPO / "autograder" / "check.py"), str(course / "gradebook.db"), str(jail / "mine.txt")]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PROBE_PATHS": json.dumps(probes),
           "PROBE_WRITES": json.dumps(writes), "SECRET_TOKEN": "leaked"}
    if gpu:
        env["PROBE_GPU"] = "1"
    plan = {"mode": mode, "jail": str(jail), "marker": "test-marker",
            "expose": [str(REPO / "autograder"), sys.prefix, sys.base_prefix],
            "hide": [str(REPO), str(course), str(tmp_path), "/root", str(Path.home()), "/tmp"],
            "env": {k: v for k, v in env.items() if k != "SECRET_TOKEN"},
            "kernel_argv": [sys.executable, "-c", INSIDE]}
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan))
    log = tmp_path / "log.txt"
    with open(log, "w") as f:      # a file, not a pipe: a detached child (mode none) keeps its end open
        proc = subprocess.run([sys.executable, "-I", str(REPO / "tools" / "sandbox.py"), "kernel", str(plan_path),
                               str(conn), "--extra"], env=dict(env, SECRET_TOKEN="leaked"), stdout=f, stderr=f,
                              timeout=300)
    assert proc.returncode == 0, log.read_text()
    report = json.loads((jail / "report.json").read_text())
    beat = jail / "beat.txt"
    last = beat.read_text()
    time.sleep(0.5)
    return report, probes, writes, beat.read_text() == last


@pytest.mark.skipif(not ISOLATED, reason=f"no Linux namespaces here: {WHY}")
def test_namespace_sandbox_hides_answers_and_kills_detached_children(tmp_path):
    report, probes, writes, stopped = _launch(tmp_path, "namespace")
    solutions, notebooks, git, gradebook, secret, check_py, python = probes
    assert report["argv"][-2].endswith("kernel-connection.json") and report["argv"][-1] == "--extra"
    assert not any(report["sees"][p] for p in (solutions, notebooks, git, gradebook, secret))
    assert report["sees"][check_py] and report["sees"][python]          # autograder and Python stay
    assert report["writes"] == {writes[0]: False, writes[1]: False, writes[2]: True}
    assert "SECRET_TOKEN" not in report["env"] and "PYTHONPATH" not in report["env"]
    assert report["cwd"].endswith("jails/s/p")
    import os
    if os.geteuid() == 0:
        assert report["uid"] == sandbox.NOBODY
    assert stopped, "a setsid child outlived the sandboxed process"


def test_no_sandbox_mode_still_cleans_environment(tmp_path):
    """`none`: nothing hidden, but a clean environment and the jail as working directory; the grader
    kills the marked processes (kill_marked, tools/grading/sandboxing.py)."""
    import psutil
    from grading.sandboxing import kill_marked
    report, probes, writes, _ = _launch(tmp_path, "none")
    assert "SECRET_TOKEN" not in report["env"] and report["cwd"] == str(Path(writes[2]).parent)
    kill_marked("test-marker")
    assert not [p for p in psutil.process_iter(["cmdline"]) if "beat.txt" in " ".join(p.info["cmdline"] or [])]


@pytest.mark.gpu
@pytest.mark.skipif(not ISOLATED, reason=f"no Linux namespaces here: {WHY}")
def test_namespace_sandbox_runs_triton_on_the_gpu(tmp_path):
    report, *_, stopped = _launch(tmp_path, "namespace", gpu=True)
    assert report["gpu"] == 48.0 and stopped
