"""The kernel's sandbox (tools/sandbox.py): what a submission can see, write and leave behind."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from . import REPO
from ._tools import sandbox_tool


KERNEL_NAME = "fa-course-sandbox"
# passed from the grader to the kernel; everything else in the grader's environment stays behind
KERNEL_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "CUDA_VISIBLE_DEVICES", "CUDA_HOME", "LD_LIBRARY_PATH",
              "NVIDIA_VISIBLE_DEVICES", "AUTOGRADER_TIER", "TRITON_INTERPRET", "OMP_NUM_THREADS",
              "PYTHONHASHSEED", "TQDM_DISABLE")


def choose_sandbox(wanted: str) -> tuple[str, str]:
    """(mode, warning): `namespace` when the machine allows it (or `wanted` says so), else `none`."""
    if wanted == "none":
        return "none", "submissions run WITHOUT isolation (--sandbox none): see docs/instructor.md"
    ok, why = sandbox_tool.namespaces_available()
    if ok:
        return "namespace", ""
    if wanted == "namespace":
        raise SystemExit(f"grade: --sandbox namespace: {why}")
    return "none", (f"Linux namespaces are not available ({why}): submissions run WITHOUT isolation and could "
                    f"read the solutions and hidden tests; see docs/instructor.md")


def exposed_paths() -> list[str]:
    """What the kernel needs to import autograder, torch, triton, ipykernel: the Python environment(s)
    and autograder/. Never the repository itself (solutions/, notebooks/ with the hidden tests)."""
    env = Path(sys.prefix).resolve()
    keep = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), REPO / "autograder"}
    for entry in sys.path:
        p = Path(entry or ".").resolve()
        # inside the repository only the virtual environment's own entries (.venv/lib/...) count
        if p.is_dir() and (not p.is_relative_to(REPO) or p.is_relative_to(env)):
            keep.add(p)
    top = []
    for p in sorted({q.resolve() for q in keep}, key=lambda q: len(q.parts)):
        if not any(p.is_relative_to(t) for t in top):
            top.append(p)
    return [str(p) for p in top]


def hidden_paths(course: Path, exposed: list[str]) -> list[str]:
    hide = {REPO, course, Path.home(), Path("/root"), Path("/tmp"), Path("/var/tmp"), Path("/dev/shm")}
    for e in exposed:      # an installed copy of the solutions (an old `pip install .`) stays out of reach
        hide |= set(Path(e).glob("solutions")) | set(Path(e).glob("*/site-packages/solutions")) \
            | set(Path(e).glob("lib/python3*/site-packages/solutions"))
    return sorted(str(p) for p in hide)


def sandboxed_kernel(course: Path, student: str, slug: str, workdir: Path, mode: str, result: dict) -> str:
    """Write this submission's jail, sandbox plan and kernelspec; return the kernel name to run."""
    import secrets
    base = course / "jails" / student
    jail = base / slug
    if jail.exists():
        shutil.rmtree(jail)
    # the student's own files travel; the rebuilt notebook (hidden tests inside) does not
    shutil.copytree(workdir, jail, ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
    exposed = exposed_paths()
    env = {k: os.environ[k] for k in KERNEL_ENV if k in os.environ}
    env.update(MPLBACKEND="Agg", AUTOGRADER_GRADING="1", AUTOGRADER_RECORD=str(jail / ".records"))
    (jail / ".records").mkdir()
    plan = {"mode": mode, "jail": str(jail), "marker": os.environ.get(sandbox_tool.MARKER) or secrets.token_hex(8),
            "expose": exposed, "hide": hidden_paths(course, exposed), "env": env,
            "kernel_argv": [sys.executable, "-m", "ipykernel_launcher"]}
    plan_path = base / f".{slug}.sandbox.json"
    plan_path.write_text(json.dumps(plan, indent=1))
    spec_dir = base / f".{slug}.kernels" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-I", str(Path(sandbox_tool.__file__).resolve()), "kernel", str(plan_path),
                 "{connection_file}"],
        "display_name": "Python 3 (grading sandbox)", "language": "python",
        # the kernel sits behind unshare, which does not forward SIGINT: interrupt over the control channel
        "interrupt_mode": "message"}))
    os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(spec_dir.parent.parent),
                                                              os.environ.get("JUPYTER_PATH")) if p)
    result["sandbox"] = mode
    return KERNEL_NAME


def kill_marked(marker):
    """Kill every process whose environment carries this run's marker (what namespaces do not catch)."""
    if not marker:
        return
    import psutil
    me = os.getpid()
    procs = []
    for p in psutil.process_iter():
        try:
            if p.pid != me and p.environ().get(sandbox_tool.MARKER) == marker:
                procs.append(p)
        except (psutil.Error, OSError):
            continue
    kill_procs(procs)


def kill_procs(procs):
    import psutil
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=10)


def kill_tree(pid: int):
    """Kill a process and every descendant (the kernel runs in its own session, so killpg misses it)."""
    import psutil
    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + [root]
    except psutil.NoSuchProcess:
        return
    kill_procs(procs)
