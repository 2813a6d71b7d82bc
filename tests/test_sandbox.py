"""The grading kernel's sandbox (tools/grading/sandbox/launcher.py), started directly: what a process
inside can see, write and leave behind. Fast (no nbgrader, no kernel); on a GPU machine it also compiles
and runs a Triton kernel inside, as the graded notebooks do."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tools.grading.sandbox import launcher  # noqa: E402

LAUNCHER = REPO / "tools" / "grading" / "sandbox" / "launcher.py"   # run by path, as the kernelspec does

ISOLATED, WHY = launcher.namespaces_available()

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
              str(secret_file), str(REPO / "autograder" / "checks" / "attention.py"), sys.executable]
    writes = [str(REPO / "autograder" / "checks" / "attention.py"), str(course / "gradebook.db"), str(jail / "mine.txt")]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PROBE_PATHS": json.dumps(probes),
           "PROBE_WRITES": json.dumps(writes), "SECRET_TOKEN": "leaked"}
    if gpu:
        env["PROBE_GPU"] = "1"
    plan = {"mode": mode, "jail": str(jail), "marker": "test-marker",
            "expose": [str(REPO / "autograder"), sys.prefix, sys.base_prefix],
            "env": {k: v for k, v in env.items() if k != "SECRET_TOKEN"},
            "kernel_argv": [sys.executable, "-c", INSIDE]}
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan))
    log = tmp_path / "log.txt"
    with open(log, "w") as f:      # a file, not a pipe: a detached child (mode none) keeps its end open
        proc = subprocess.run([sys.executable, "-I", str(LAUNCHER), "kernel", str(plan_path),
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
    if os.geteuid() == 0 and not launcher._in_user_namespace():     # root in a user namespace keeps its uid
        assert report["uid"] == launcher.NOBODY
    assert stopped, "a setsid child outlived the sandboxed process"


def test_no_sandbox_mode_still_cleans_environment(tmp_path):
    """`none`: nothing hidden, but a clean environment and the jail as working directory; the grader
    kills the marked processes (kill_marked, tools/grading/sandbox/__init__.py)."""
    import psutil
    from tools.grading.sandbox import kill_marked
    report, probes, writes, _ = _launch(tmp_path, "none")
    assert "SECRET_TOKEN" not in report["env"] and report["cwd"] == str(Path(writes[2]).parent)
    kill_marked("test-marker")

    def ours(proc):         # other tests (a hostile student in test_grading) run beat.txt loops of their own
        try:
            return Path(proc.cwd()).is_relative_to(tmp_path)
        except psutil.Error:
            return False

    left = [p for p in psutil.process_iter(["cmdline"]) if "beat.txt" in " ".join(p.info["cmdline"] or []) and ours(p)]
    assert not left, left


@pytest.mark.gpu
@pytest.mark.skipif(not ISOLATED, reason=f"no Linux namespaces here: {WHY}")
def test_namespace_sandbox_runs_triton_on_the_gpu(tmp_path):
    report, *_, stopped = _launch(tmp_path, "namespace", gpu=True)
    assert report["gpu"] == 48.0 and stopped


# ---------------------------------------------------------------------------------------------
# the allowlist: nothing of the host that the plan does not name, and nothing that outlives a kernel

PROBE = r"""
import json, os, sys
probe = json.loads(os.environ["PROBE"])
report = {"top": sorted(os.listdir("/")), "sees": [p for p in probe["planted"] if os.path.lexists(p)],
          "seen_before": [p for p in probe["mine"] if os.path.lexists(p)], "wrote": [], "refused": []}
for p in probe["mine"] + probe["forbidden"]:
    try:
        with open(p, "w") as f:
            f.write("x")
        report["wrote"].append(p)
    except OSError:
        report["refused"].append(p)
import torch
report["torch"] = float(torch.ones(3).sum())
open("report.json", "w").write(json.dumps(report))
"""


def _world_writable(seconds=20.0) -> list[str]:
    """Every world-writable directory of the host (not /proc, /sys), walked for at most `seconds`."""
    import os
    import stat
    found, t0 = [], time.time()
    for dirpath, dirnames, _ in os.walk("/"):
        if time.time() - t0 > seconds:
            break
        if dirpath == "/":
            dirnames[:] = [d for d in dirnames if d not in ("proc", "sys")]
        for name in list(dirnames):
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o002 and os.access(path, os.W_OK):
                found.append(path)
    return found


def _run_plan(tmp_path, name, plan):
    plan_path = tmp_path / f"{name}.json"
    plan_path.write_text(json.dumps(plan))
    conn = tmp_path / "conn.json"
    conn.write_text("{}")
    with open(tmp_path / f"{name}.log", "w") as f:
        proc = subprocess.run([sys.executable, "-I", str(LAUNCHER), "kernel", str(plan_path),
                               str(conn)], stdout=f, stderr=f, timeout=300)
    return proc.returncode, (tmp_path / f"{name}.log").read_text(), plan_path


@pytest.mark.skipif(not ISOLATED, reason=f"no Linux namespaces here: {WHY}")
def test_namespace_sandbox_is_an_allowlist(tmp_path):
    """A copy of the course at a path nobody thought to hide, and a marker in every world-writable
    directory of the host: the sandboxed process sees none of them, writes only in its jail and its
    private scratch places, and what it writes there reaches neither the host nor the next sandbox."""
    import os
    import secrets
    import shutil
    from tools.grading.sandbox import covered_paths, exposed_paths

    token = f"fa-course-test-{secrets.token_hex(6)}"
    planted = []
    for top in ("/srv", "/opt"):
        try:
            shutil.copytree(REPO / "solutions", Path(top) / token / "course" / "solutions")
            planted.append(str(Path(top) / token / "course" / "solutions"))
        except OSError:
            pass
    scratch = ["/tmp", "/var/tmp", "/run/lock", "/var/lock", "/dev/shm"]
    writable = sorted(set(_world_writable()) | {p for p in scratch if os.path.isdir(p)})
    for d in writable:
        try:
            Path(d, token).write_text("left by another process")
            planted.append(str(Path(d, token)))
        except OSError:
            pass
    mine = [f"{p}/{token}.mine" for p in scratch]
    try:
        assert len(planted) >= 4, planted
        exposed = exposed_paths()
        runs = []
        for n in range(2):
            jail = tmp_path / f"jail{n}"
            jail.mkdir()
            forbidden = ["/usr/" + token, "/etc/" + token, "/" + token, str(REPO / "autograder" / token),
                         sys.prefix + "/" + token, str(tmp_path / token)]
            plan = {"mode": "namespace", "jail": str(jail), "marker": f"{token}-{n}", "expose": exposed,
                    "cover": covered_paths(exposed), "memory_limit": 0,
                    "env": {"PATH": "/usr/bin:/bin", "PROBE": json.dumps(
                        {"planted": planted, "mine": mine + [str(jail / "mine.txt")], "forbidden": forbidden})},
                    "kernel_argv": [sys.executable, "-c", PROBE]}
            rc, log, _ = _run_plan(tmp_path, f"plan{n}", plan)
            assert rc == 0, log
            runs.append(json.loads((jail / "report.json").read_text()))
            for p in mine:        # nothing the sandbox wrote in its scratch places is on the host
                assert not os.path.lexists(p), p
        first, second = runs
        assert first["sees"] == [] and second["sees"] == [], (first["sees"], second["sees"])
        assert second["seen_before"] == [], second["seen_before"]     # not even the previous sandbox's files
        assert sorted(first["wrote"]) == sorted(mine + [str(tmp_path / "jail0" / "mine.txt")]), first
        assert all(p in first["refused"] for p in forbidden[:-1])
        allowed = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "dev", "proc", "sys", "tmp",
                   "var", "run"} | {Path(p).parts[1] for p in exposed + [str(tmp_path)]}
        assert set(first["top"]) <= allowed, set(first["top"]) - allowed
        assert first["torch"] == 3.0
    finally:
        for p in planted:
            path = Path(p)
            if path.is_dir():
                shutil.rmtree(path.parent.parent, ignore_errors=True)      # /srv/<token>
            else:
                path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# the memory cap

ALLOCATE = r"""
import sys
b = bytearray(int(sys.argv[1]) << 20)
for i in range(0, len(b), 4096):      # touch every page: untouched pages cost nothing
    b[i] = 1
open("done.txt", "w").write("ok")
"""


@pytest.mark.parametrize("how", ["cgroup", "rlimit"])
def test_memory_cap_stops_a_kernel_that_allocates_too_much(tmp_path, how):
    from tools.grading.sandbox import memory_error, memory_exceeded, memory_state, release_memory
    mode = "namespace" if ISOLATED else "none"
    results = {}
    for name, mib in (("over", 2048), ("under", 32)):
        jail = tmp_path / name
        jail.mkdir()
        plan = {"mode": mode, "jail": str(jail), "marker": f"memtest-{how}-{name}-{time.time_ns()}",
                "expose": [str(REPO / "autograder"), sys.prefix, sys.base_prefix], "memory_limit": 256 << 20,
                "cgroup": how == "cgroup", "gpu": False, "env": {"PATH": "/usr/bin:/bin"},
                "kernel_argv": [sys.executable, "-c", ALLOCATE, str(mib)]}
        rc, log, plan_path = _run_plan(tmp_path, name, plan)
        state = memory_state(plan_path)
        if how == "cgroup" and not state.get("how", "").startswith("cgroup"):
            pytest.skip(f"no memory cgroup here: {state.get('why') or state}")
        results[name] = (rc, log, plan_path, state, (jail / "done.txt").exists())
    rc, log, plan_path, state, done = results["over"]
    assert rc != 0 and not done, log
    if how == "cgroup":
        assert memory_exceeded(plan_path) == "memory limit exceeded (256 MiB)", state
        release_memory(plan_path)
        assert not Path(state["cgroup"]).exists()
    else:
        assert state["how"] == "rlimit" and "MemoryError" in log, log
        assert memory_error(plan_path, "MemoryError: ") == "memory limit exceeded (256 MiB)"
    rc, log, plan_path, state, done = results["under"]
    assert rc == 0 and done, log
    assert memory_exceeded(plan_path) == ""
    release_memory(plan_path)
