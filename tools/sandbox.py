"""Start a grading kernel where the submission can reach only what it needs.

The grader (`tools/grade.py`) runs every notebook's kernel through this launcher: a kernelspec whose
argv is `python tools/sandbox.py kernel <plan.json> {connection_file}`. The plan (written by the grader)
names the kernel's jail (its only writable directory), the paths to expose read-only (autograder/, the
Python environment), the paths to hide (the repository with solutions/ and the source notebooks, the
course directory with the gradebook, $HOME, /tmp) and the environment to start from.

Modes (`plan["mode"]`):

* ``namespace`` (Linux, util-linux `unshare`): a private mount namespace where every hidden path is an
  empty tmpfs with only the exposed paths bound back into it (read-only), and a PID namespace whose
  init is this launcher: when the kernel exits or is killed, every process it started dies with it,
  `setsid` and double-fork included. As root the kernel drops to uid/gid 65534 (nobody); otherwise a
  user namespace maps the grader's own uid (the kernel has no more rights than the instructor, and
  sees none of the hidden paths).
* ``none`` (no namespaces available, e.g. macOS or a locked-down container): the same clean
  environment and jail as working directory, nothing hidden. The grader then kills every process that
  carries this run's marker in its environment. A warning says so; see docs/instructor.md.

Standard library only: it runs as the first thing of a fresh kernel process.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

MARKER = "FA_COURSE_GRADING_RUN"     # environment variable every grading process carries (mode none)
NOBODY = 65534

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_REMOUNT, _MS_BIND, _MS_REC = 1, 2, 4, 32, 4096, 16384
_MNT_DETACH = 2
_PR_SET_NO_NEW_PRIVS, _PR_SET_PDEATHSIG = 38, 1


def unshare_argv() -> list[str]:
    """The unshare(1) command line that gives a private mount + PID namespace (as any user)."""
    argv = ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private", "--mount-proc"]
    if os.geteuid() != 0:
        argv[1:1] = ["--user", "--map-root-user"]
    return argv


def namespaces_available() -> tuple[bool, str]:
    """(True, '') when `unshare` can give this user mount + PID namespaces, else (False, why)."""
    if not sys.platform.startswith("linux"):
        return False, f"{sys.platform} has no Linux namespaces"
    if shutil.which("unshare") is None:
        return False, "util-linux `unshare` is not installed"
    try:
        out = subprocess.run(unshare_argv() + ["true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"unshare failed: {exc}"
    if out.returncode:
        return False, f"unshare is not permitted here ({out.stderr.strip() or out.returncode}); " \
                      "unprivileged user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone)"
    return True, ""


# ---------------------------------------------------------------------------------------------
# system calls


_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source, target, fstype=None, flags=0, data=None):
    enc = (lambda s: s.encode() if isinstance(s, str) else s)
    _check(_libc.mount(enc(source), enc(str(target)), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {source} on {target}")


def _hide(path: Path):
    """An empty, read-only directory (or file) where `path` was."""
    if path.is_dir():
        _mount("none", path, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=755,size=64k")
    elif path.exists():
        _mount("/dev/null", path, None, _MS_BIND)


def _bind(fd: int, target: Path, writable: bool):
    # the exposed directory is reached through an O_PATH descriptor opened before anything was hidden
    target.mkdir(parents=True, exist_ok=True)
    _mount(f"/proc/self/fd/{fd}", target, None, _MS_BIND | _MS_REC)
    if not writable:
        try:
            _mount("none", target, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
        except OSError:
            pass   # inside a user namespace a locked mount may refuse: permissions still apply


# ---------------------------------------------------------------------------------------------
# the two stages


def kernel_env(plan) -> dict:
    """The kernel's environment: the plan's allowlist, nothing inherited from the grader."""
    jail = plan["jail"]
    env = {k: v for k, v in plan.get("env", {}).items() if v is not None}
    env.update(HOME=jail, TMPDIR=str(Path(jail) / "tmp"), IPYTHONDIR=str(Path(jail) / ".ipython"),
               MPLCONFIGDIR=str(Path(jail) / ".matplotlib"), TRITON_CACHE_DIR=str(Path(jail) / ".triton"),
               JUPYTER_RUNTIME_DIR=str(Path(jail) / ".jupyter"), PYTHONNOUSERSITE="1",
               PYTHONDONTWRITEBYTECODE="1")
    env[MARKER] = plan["marker"]
    return env


def _exec_kernel(plan, conn: str, extra: list[str]):
    os.chdir(plan["jail"])
    os.execve(plan["kernel_argv"][0], plan["kernel_argv"] + ["-f", conn] + extra, kernel_env(plan))


def host_stage(plan_path: str, connection_file: str, extra: list[str]):
    """Runs as the kernel the grader started: copy the connection file into the jail, enter the sandbox."""
    plan = json.loads(Path(plan_path).read_text())
    jail = Path(plan["jail"])
    for sub in ("tmp", ".ipython", ".matplotlib", ".triton", ".jupyter"):
        (jail / sub).mkdir(parents=True, exist_ok=True)
    conn = jail / ".jupyter" / "kernel-connection.json"
    shutil.copyfile(connection_file, conn)
    os.chmod(conn, 0o600)
    if plan["mode"] == "none":
        _exec_kernel(plan, str(conn), extra)
    argv = unshare_argv() + [sys.executable, "-I", str(Path(__file__).resolve()), "inside", plan_path, str(conn)] + extra
    os.execvp(argv[0], argv)


def inside_stage(plan_path: str, conn: str, extra: list[str]):
    """PID 1 of the new namespaces: hide, expose, then run the kernel as a child and outlive it by nothing."""
    plan = json.loads(Path(plan_path).read_text())
    jail = Path(plan["jail"])
    drop = os.geteuid() == 0 and plan.get("drop_to_nobody", True) and not _in_user_namespace()
    # descriptors first: once a parent directory is hidden its children cannot be named any more
    exposed = [(Path(p), os.open(p, os.O_PATH | os.O_DIRECTORY), False) for p in plan["expose"] if Path(p).is_dir()]
    exposed.append((jail, os.open(jail, os.O_PATH | os.O_DIRECTORY), True))
    for p in sorted(plan["hide"], key=len):
        _hide(Path(p))          # a path under one already hidden no longer exists: skipped
    for path, fd, writable in exposed:
        _bind(fd, path, writable)
        os.close(fd)
    if drop:
        for dirpath, dirnames, filenames in os.walk(jail):
            for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
                os.lchown(name, NOBODY, NOBODY)
    pid = os.fork()
    if pid == 0:
        _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        if drop:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
        _exec_kernel(plan, conn, extra)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: os.kill(pid, s))
    while True:   # init reaps every orphan; when the kernel goes, the namespace goes with it
        try:
            done, status = os.wait()
        except ChildProcessError:
            sys.exit(0)
        except InterruptedError:
            continue
        if done == pid:
            sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _in_user_namespace() -> bool:
    try:
        return Path("/proc/self/uid_map").read_text().split()[:3] != ["0", "0", "4294967295"]
    except OSError:
        return False


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] in ("kernel", "inside"):   # extra kernel arguments follow
        (host_stage if sys.argv[1] == "kernel" else inside_stage)(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        sys.exit("usage: sandbox.py kernel <plan.json> <connection_file> [kernel args]   (started by tools/grade.py)")
