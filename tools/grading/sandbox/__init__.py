"""The kernel's sandbox: what a submission can see, write and leave behind.

Two sides, two processes:

    launcher.py     the kernel's first step, run by path as the kernelspec's argv (standard library only):
                    caps memory, builds the namespace jail, starts ipykernel inside it
    (this module)   the grader's side: choosing the mode, the plan and kernelspec the launcher reads,
                    reading back and removing the memory cap, killing what a run left
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from .. import REPO
from . import launcher


KERNEL_NAME = "fa-course-sandbox"
# passed from the grader to the kernel; everything else in the grader's environment stays behind
KERNEL_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "CUDA_VISIBLE_DEVICES", "CUDA_HOME", "LD_LIBRARY_PATH",
              "NVIDIA_VISIBLE_DEVICES", "AUTOGRADER_TIER", "TRITON_INTERPRET", "OMP_NUM_THREADS",
              "PYTHONHASHSEED", "TQDM_DISABLE")


def choose_sandbox(wanted: str) -> tuple[str, str]:
    """(mode, warning): `namespace` when the machine allows it (or `wanted` says so), else `none`."""
    if wanted == "none":
        return "none", "submissions run WITHOUT isolation (--sandbox none): see docs/instructor.md"
    ok, why = launcher.namespaces_available()
    if ok:
        return "namespace", ""
    if wanted == "namespace":
        raise SystemExit(f"grade: --sandbox namespace: {why}")
    return "none", (f"Linux namespaces are not available ({why}): submissions run WITHOUT isolation and could "
                    f"read the solutions and hidden tests; see docs/instructor.md")


DEFAULT_MEMORY_LIMIT = "8G"    # one kernel's memory (--memory-limit); the CPU tier's checks need well under 2 GiB
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text) -> int:
    """Bytes from `8G`, `512M`, `1.5G`, `1073741824` or `0` (no limit); ValueError with a one-line message."""
    t = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in _UNITS else ""
    try:
        value = float(t[:len(t) - len(unit)])
    except ValueError:
        raise ValueError(f"{text!r} is not a size (examples: 8G, 512M, 0 for no limit)") from None
    if value < 0 or value != value:
        raise ValueError(f"{text!r}: a size cannot be negative")
    return int(value * _UNITS[unit])


def human_size(n: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if n >= _UNITS[unit] and n % (_UNITS[unit] // 8 or 1) == 0:
            return f"{n / _UNITS[unit]:g} {unit}iB"
    return f"{n} bytes"


def exposed_paths() -> list[str]:
    """What the kernel needs besides the system runtime (/usr, /etc, ...; launcher.SYSTEM) to import
    autograder, torch, triton, ipykernel: the Python environment(s), autograder/, CUDA_HOME and the
    LD_LIBRARY_PATH directories. Never the repository itself (solutions/, notebooks/ with the hidden tests)."""
    env = Path(sys.prefix).resolve()
    keep = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), REPO / "autograder"}
    for entry in sys.path:
        p = Path(entry or ".").resolve()
        # inside the repository only the virtual environment's own entries (.venv/lib/...) count
        if p.is_dir() and (not p.is_relative_to(REPO) or p.is_relative_to(env)):
            keep.add(p)
    libs = [os.environ.get("CUDA_HOME", "")] + os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)
    for entry in filter(None, libs):
        p = Path(entry).resolve()
        if p.is_dir() and p != Path("/") and not p.is_relative_to(REPO):
            keep.add(p)
    top = []
    for p in sorted({q.resolve() for q in keep}, key=lambda q: len(q.parts)):
        if not any(p.is_relative_to(t) for t in top):
            top.append(p)
    return [str(p) for p in top]


def covered_paths(exposed: list[str]) -> list[str]:
    """Inside the exposed trees, what the kernel gets an empty private tmpfs over: an installed copy of the
    solutions (an old `pip install .`), and every world-writable directory (anyone on the host could leave
    files there for the kernel to read, or one kernel for the next). A walk of the Python trees: ~1 s."""
    cover = set()
    for e in exposed:
        cover |= {p for p in (set(Path(e).glob("solutions")) | set(Path(e).glob("*/site-packages/solutions"))
                              | set(Path(e).glob("lib/python3*/site-packages/solutions"))) if p.is_dir()}
        for dirpath, dirnames, _ in os.walk(e):
            for name in list(dirnames):
                path = os.path.join(dirpath, name)
                try:
                    world_writable = os.lstat(path).st_mode & 0o002
                except OSError:
                    continue
                if world_writable and not os.path.islink(path):
                    cover.add(Path(path))
                    dirnames.remove(name)          # covered whole: nothing below it is reachable
    return sorted(str(p) for p in cover)


# a run's walk of the exposed trees (covered_paths), done once by the process that starts its units and
# passed to each `grade.py _one` (never to a kernel: KERNEL_ENV is an allowlist)
COVER_ENV = "FA_COURSE_SANDBOX_COVER"


def cover_once(mode: str) -> dict:
    """{COVER_ENV: the exposed paths and covered_paths of them} for the units of one run, {} for mode none
    (or a list too long for an environment variable: each unit walks then). A directory can only become
    world-writable inside an exposed tree by its owner's hand (a world-writable one is covered whole,
    with everything later made below it): the walk at the start of a run holds for all of its units."""
    if mode != "namespace":
        return {}
    exposed = exposed_paths()
    text = json.dumps({"expose": exposed, "cover": covered_paths(exposed)})
    return {COVER_ENV: text} if len(text) < 100_000 else {}


def _cover(exposed: list[str]) -> list[str]:
    """covered_paths(exposed), from the run's walk (COVER_ENV) when it walked the same trees."""
    try:
        given = json.loads(os.environ.get(COVER_ENV) or "null")
    except ValueError:
        given = None
    if isinstance(given, dict) and given.get("expose") == exposed and isinstance(given.get("cover"), list) \
            and all(isinstance(p, str) for p in given["cover"]):
        return given["cover"]
    return covered_paths(exposed)


def sandboxed_kernel(course: Path, student: str, slug: str, workdir: Path, mode: str, result: dict,
                     memory_limit: int = 0) -> str:
    """Write this submission's jail, sandbox plan and kernelspec; return the kernel name to run.
    `memory_limit`: bytes for the kernel's whole process tree (0: no limit)."""
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
    plan = {"mode": mode, "jail": str(jail), "marker": os.environ.get(launcher.MARKER) or secrets.token_hex(8),
            "expose": exposed, "cover": _cover(exposed) if mode == "namespace" else [], "env": env,
            "memory_limit": int(memory_limit), "gpu": env.get("AUTOGRADER_TIER") != "cpu" and _gpu_nodes(),
            "kernel_argv": [sys.executable, "-m", "ipykernel_launcher"]}
    plan_path = plan_file(course, student, slug)
    for old in (plan_path, Path(launcher.memory_state_path(plan_path))):
        old.unlink(missing_ok=True)
    plan_path.write_text(json.dumps(plan, indent=1))
    spec_dir = base / f".{slug}.kernels" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-I", str(Path(launcher.__file__).resolve()), "kernel", str(plan_path),
                 "{connection_file}"],
        "display_name": "Python 3 (grading sandbox)", "language": "python",
        # the kernel sits behind unshare, which does not forward SIGINT: interrupt over the control channel
        "interrupt_mode": "message"}))
    os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(spec_dir.parent.parent),
                                                              os.environ.get("JUPYTER_PATH")) if p)
    result["sandbox"] = mode
    return KERNEL_NAME


def plan_file(course: Path, student: str, slug: str) -> Path:
    """The sandbox plan of a submission (beside its jail: the kernel never sees it)."""
    return course / "jails" / student / f".{slug}.sandbox.json"


def _gpu_nodes() -> bool:
    import glob
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def memory_state(plan_path: Path) -> dict:
    """How the launcher capped the kernel's memory ({"how": "cgroup1|cgroup2|rlimit|none|off", "limit": bytes,
    "cgroup": dir, "warning": ...}), {} when no kernel started."""
    try:
        return json.loads(Path(launcher.memory_state_path(plan_path)).read_text())
    except (OSError, ValueError):
        return {}


def memory_exceeded(plan_path: Path) -> str:
    """"memory limit exceeded (8 GiB)" when the kernel's cgroup killed a process for memory, else "".
    Read before `release_memory`. (Under the rlimit an allocation fails inside the kernel instead:
    `memory_error` reads that from a cell's error.)"""
    state = memory_state(plan_path)
    cg = Path(state.get("cgroup") or "/nonexistent")
    hit = False
    try:
        if state.get("how") == "cgroup2":
            events = dict(line.split() for line in (cg / "memory.events").read_text().splitlines())
            hit = int(events.get("oom_kill", 0)) > 0
        elif state.get("how") == "cgroup1":
            control = dict(line.split() for line in (cg / "memory.oom_control").read_text().splitlines())
            if "oom_kill" in control:        # Linux >= 4.13
                hit = int(control["oom_kill"]) > 0
            else:                            # older: the limit was reached at least once
                hit = int((cg / "memory.failcnt").read_text()) > 0
    except (OSError, ValueError):
        return ""
    return f"memory limit exceeded ({human_size(state['limit'])})" if hit else ""


def memory_error(plan_path: Path, text: str) -> str:
    """Under the rlimit, an error text that is an allocation failure means the limit was hit."""
    state = memory_state(plan_path)
    if state.get("how") == "rlimit" and any(k in text for k in ("MemoryError", "t allocate memory",
                                                                "DefaultCPUAllocator")):
        return f"memory limit exceeded ({human_size(state['limit'])})"
    return ""


def release_memory(plan_path: Path):
    """Kill what is left in the kernel's cgroup and remove the cgroup."""
    import time
    cg = memory_state(plan_path).get("cgroup")
    if not cg or not Path(cg).is_dir():
        return
    cg = Path(cg)
    for _ in range(50):
        try:
            pids = [int(x) for x in (cg / "cgroup.procs").read_text().split()]
        except OSError:
            pids = []
        for pid in pids:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        try:
            cg.rmdir()
            return
        except OSError:
            time.sleep(0.1)          # the killed processes are still exiting


def kill_marked(marker):
    """Kill every process whose environment carries this run's marker (what namespaces do not catch)."""
    if not marker:
        return
    import psutil
    me = os.getpid()
    procs = []
    for p in psutil.process_iter():
        try:
            if p.pid != me and p.environ().get(launcher.MARKER) == marker:
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
