"""Start a grading kernel where the submission can reach only what it needs.

The grader (`tools/grade.py`) runs every notebook's kernel through this launcher: a kernelspec whose
argv is `python -I tools/grading/sandbox/launcher.py kernel <plan.json> {connection_file}`. The plan
(written by the grader's side, tools/grading/sandbox/__init__.py) names the kernel's jail (its only
writable directory of the host), the paths to expose read-only (autograder/, the Python environment),
world-writable directories inside them to cover, the memory limit and the environment to start from.

Modes (`plan["mode"]`):

* ``namespace`` (Linux, util-linux `unshare`): private mount and PID namespaces. The kernel's file
  system is an ALLOWLIST: a fresh tmpfs root holding only the system runtime (/usr, /bin, /sbin, /lib*,
  /etc: read-only), the exposed paths (read-only), a minimal /dev (null, zero, full, random, urandom,
  tty, and the GPU's nodes), /sys (read-only), a /proc of the new PID namespace, the jail (read-write)
  and private, empty tmpfs for /tmp, /var (/var/tmp, /var/lock), /run (/run/lock) and /dev/shm. The
  launcher pivots into it and detaches the old root, so nothing else of the host can be reached, even
  with capabilities inside a user namespace. PID 1 of the namespace is this launcher: when the kernel
  exits or is killed, every process it started dies with it, `setsid` and double-fork included. As root
  the kernel drops to uid/gid 65534 (nobody); otherwise a user namespace maps the grader's own uid.
* ``none`` (no namespaces available, e.g. macOS or a locked-down container): the same clean
  environment and jail as working directory, nothing hidden. The grader then kills every process that
  carries this run's marker in its environment. A warning says so; see docs/instructor.md.

In both modes the host stage first puts the kernel under `plan["memory_limit"]` (bytes, 0 = off): a
cgroup (v2: memory.max; v1: memory.limit_in_bytes) that the grader reads and removes afterwards
(tools/grading/sandbox/__init__.py), else RLIMIT_DATA on a machine without a GPU. What was done is written
beside the plan (`<plan>.memory`).

Standard library only: it runs as the first thing of a fresh kernel process, by path and with `-I`
(neither its folder nor the repository is on sys.path: it imports nothing of the course). The grader
imports it too (as tools.grading.sandbox.launcher) for MARKER, namespaces_available and
memory_state_path.
"""
from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

MARKER = "FA_COURSE_GRADING_RUN"     # environment variable every grading process carries (mode none)
NOBODY = 65534

# the system runtime, read-only in the sandbox (a symlink on the host, /bin -> usr/bin, stays a symlink)
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# every place a process may write besides its jail: each sandbox gets its own, empty (directories made in
# a fresh tmpfs: /tmp, /var, /run and /dev/shm are tmpfs mounts of this sandbox alone)
SCRATCH = ("/tmp", "/var/tmp", "/var/lock", "/run/lock", "/dev/shm")

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT, _MS_BIND, _MS_REC = 1, 2, 4, 8, 32, 4096, 16384
_MNT_DETACH = 2
_PR_SET_NO_NEW_PRIVS, _PR_SET_PDEATHSIG = 38, 1
_CLONE_NEWNS, _CLONE_NEWUSER = 0x00020000, 0x10000000
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}


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


def _tmpfs(target, mode="755", size=None):
    opts = f"mode={mode}" + (f",size={size}" if size else "")
    _mount("tmpfs", target, "tmpfs", _MS_NOSUID | _MS_NODEV, opts)


def _mount_points(under: str) -> list[str]:
    """Mount points at or below `under`, parents first (from /proc/self/mountinfo)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4])   # \040 is a space
        if point == under or point.startswith(under.rstrip("/") + "/"):
            found.append(point)
    return sorted(set(found), key=len)


def _readonly(target: str, below=True, strict=True):
    """Remount `target` (and every mount below it) read-only, keeping the flags each already has (inside a
    user namespace a remount that drops nosuid, nodev or noexec of an inherited mount is refused).
    A failure stops the sandbox unless not `strict`."""
    bits = ((os.ST_NOSUID, _MS_NOSUID), (os.ST_NODEV, _MS_NODEV), (os.ST_NOEXEC, _MS_NOEXEC))
    for point in _mount_points(target) if below else [target]:
        try:
            have = os.statvfs(point).f_flag
            flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY       # no atime flag: a remount keeps them
            for st, ms in bits:
                flags |= ms if have & st else 0
            _mount("none", point, None, flags)
        except OSError as exc:
            if strict:
                raise
            print(f"sandbox: {point} stays writable ({exc})", file=sys.stderr)


def _bind(fd: int, target: Path, writable: bool):
    # the source is reached through an O_PATH descriptor opened before the new root covered anything
    if not target.exists():
        target.mkdir(parents=True, exist_ok=True) if os.path.isdir(f"/proc/self/fd/{fd}") else target.touch()
    _mount(f"/proc/self/fd/{fd}", target, None, _MS_BIND | _MS_REC)
    if not writable:
        _readonly(str(target))


def _place(root: Path, path: str, frames: list) -> Path:
    """Where `path` goes in the new root. Under a writable scratch place (a jail in /tmp) the directories
    leading to it are made in a tmpfs of their own (a frame), read-only once built: root inside a user
    namespace could otherwise write in them."""
    for scratch in ("/tmp", "/var", "/run", "/dev"):
        if path.startswith(scratch + "/"):
            first = root / scratch[1:] / Path(path).relative_to(scratch).parts[0]
            if first != root / path[1:] and first not in frames:
                first.mkdir(exist_ok=True)
                _mount("tmpfs", first, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=755,size=1m")
                frames.append(first)
    return root / path[1:]


def _open(path) -> int | None:
    try:
        return os.open(path, os.O_PATH)
    except OSError:
        return None


def build_root(plan, base: str) -> str:
    """Mount the sandbox's file system (module docstring) on `base` and return it; nothing of the host
    that the plan and SYSTEM do not name is in it."""
    jail = plan["jail"]
    # descriptors first: once `base` is covered, a source under it (a jail in /tmp) cannot be named
    system = {p: _open(p) for p in SYSTEM if os.path.isdir(p) and not os.path.islink(p)}
    links = {p: os.readlink(p) for p in SYSTEM if os.path.islink(p)}
    inside_system = lambda p: any(Path(p).is_relative_to(s) for s in list(system) + list(links))  # noqa: E731
    exposed = {p: _open(p) for p in plan["expose"] if os.path.isdir(p) and not inside_system(p)}
    devices = {f"/dev/{d}": _open(f"/dev/{d}") for d in DEVICES if os.path.exists(f"/dev/{d}")}
    for p in sorted(Path("/dev").glob("nvidia*")) + [Path("/dev/dri")]:
        if p.exists():
            devices[str(p)] = _open(p)
    proc, sys_fd, jail_fd = _open("/proc"), _open("/sys"), os.open(jail, os.O_PATH | os.O_DIRECTORY)
    size = plan.get("memory_limit") or None      # writes to a tmpfs are memory: bounded like the kernel

    r = Path(base)
    _tmpfs(r)
    for place in ("tmp", "var", "run", "dev"):
        (r / place).mkdir()
    _tmpfs(r / "tmp", "1777", size)
    _tmpfs(r / "var", "755", size)
    _tmpfs(r / "run", "755", size)
    _mount("tmpfs", r / "dev", "tmpfs", _MS_NOSUID | _MS_NOEXEC, "mode=755,size=64k")
    (r / "dev" / "shm").mkdir()
    _tmpfs(r / "dev" / "shm", "1777", size)
    for place in SCRATCH:
        (r / place[1:]).mkdir(exist_ok=True)
        os.chmod(r / place[1:], 0o1777)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, r / "dev" / name)
    for path, fd in devices.items():
        if fd is not None:
            _bind(fd, r / path[1:], writable=True)
    for name, fd in (("proc", proc), ("sys", sys_fd)):
        (r / name).mkdir()
        _mount(f"/proc/self/fd/{fd}", r / name, None, _MS_BIND | _MS_REC)
    _readonly(str(r / "sys"), strict=False)     # writing /sys takes capabilities of the host anyway
    for path, target in links.items():
        os.symlink(target, r / path[1:])
    frames = []
    for path, fd in sorted(system.items()) + sorted(exposed.items(), key=lambda kv: len(kv[0])):
        if fd is not None:
            _bind(fd, _place(r, path, frames), writable=False)
    for path in plan.get("cover", []):    # a world-writable directory in an exposed tree: private and empty
        if (r / path[1:]).is_dir():
            _tmpfs(r / path[1:], "1777", size)
    _bind(jail_fd, _place(r, jail, frames), writable=True)
    for frame in frames + [r / "dev"]:
        _readonly(str(frame), below=False)
    for fd in [proc, sys_fd, jail_fd, *system.values(), *exposed.values(), *devices.values()]:
        if fd is not None:
            os.close(fd)
    return str(r)


def pivot_into(root: str):
    """Make `root` the root of this mount namespace and detach the old one: not hidden, gone."""
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(f"pivot_root: unknown system call number on {os.uname().machine}")
    os.chdir(root)
    _check(_libc.syscall(ctypes.c_long(number), b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", _MNT_DETACH), "umount the old root")
    os.chdir("/")
    _mount("none", "/", None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)


def _lock_mounts():
    """Inside a user namespace the kernel runs as root of that namespace and could remount its read-only
    binds read-write (autograder/ belongs to the grader's uid): a nested user + mount namespace locks
    every mount flag and mount as it is."""
    uid, gid = os.getuid(), os.getgid()
    _check(_libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS), "unshare")
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
    Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")


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
    """Runs as the kernel the grader started: copy the connection file into the jail, cap memory, enter
    the sandbox."""
    plan = json.loads(Path(plan_path).read_text())
    jail = Path(plan["jail"])
    for sub in ("tmp", ".ipython", ".matplotlib", ".triton", ".jupyter"):
        (jail / sub).mkdir(parents=True, exist_ok=True)
    conn = jail / ".jupyter" / "kernel-connection.json"
    shutil.copyfile(connection_file, conn)
    os.chmod(conn, 0o600)
    state = cap_memory(plan)       # before unshare: everything the kernel starts inherits it
    Path(memory_state_path(plan_path)).write_text(json.dumps(state))
    if state.get("warning"):
        print(f"sandbox: WARNING: {state['warning']}", file=sys.stderr)
    if plan["mode"] == "none":
        _exec_kernel(plan, str(conn), extra)
    argv = unshare_argv() + [sys.executable, "-I", str(Path(__file__).resolve()), "inside", plan_path, str(conn)] + extra
    os.execvp(argv[0], argv)


def inside_stage(plan_path: str, conn: str, extra: list[str]):
    """PID 1 of the new namespaces: build the allowlisted root, pivot into it, then run the kernel as a
    child and outlive it by nothing."""
    plan = json.loads(Path(plan_path).read_text())
    jail = Path(plan["jail"])
    in_userns = _in_user_namespace()
    drop = os.geteuid() == 0 and plan.get("drop_to_nobody", True) and not in_userns
    base = next(p for p in ("/tmp", "/mnt", "/run", "/var/tmp") if os.path.isdir(p))   # any directory will do
    pivot_into(build_root(plan, base))
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
        elif in_userns:
            try:
                _lock_mounts()
            except OSError as exc:
                print(f"sandbox: cannot lock the kernel's mounts: {exc}", file=sys.stderr)
                os._exit(1)
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


# ---------------------------------------------------------------------------------------------
# memory


def memory_state_path(plan_path) -> str:
    """Where the host stage writes how it capped memory (read by the grader afterwards)."""
    return f"{plan_path}.memory"


def cap_memory(plan) -> dict:
    """Put this process (and so the kernel's whole tree) under plan["memory_limit"] bytes: a cgroup of its
    own where one can be made, else RLIMIT_DATA (RLIMIT_AS would break CUDA, which reserves address space
    far beyond the memory it uses; on a GPU machine without a cgroup nothing is capped, with a warning)."""
    limit = int(plan.get("memory_limit") or 0)
    if not limit:
        return {"how": "off", "limit": 0}
    why = "disabled by the plan"
    if plan.get("cgroup", True):
        made, why = _cgroup_cap(limit, f"fa-course-{plan['marker']}")
        if made:
            return dict(made, limit=limit)
    gpu = plan.get("gpu", any(Path("/dev").glob("nvidia[0-9]*")))
    if gpu:
        return {"how": "none", "limit": limit,
                "warning": f"memory is not limited: no memory cgroup ({why}) and an rlimit would break CUDA"}
    import resource
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    return {"how": "rlimit", "limit": limit, "why": why}


def cgroup_dirs() -> dict:
    """{2: directory, 1: directory}: this process's cgroup in the unified hierarchy and in cgroup v1's
    memory hierarchy, where they are mounted."""
    mounts = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, fs = left.split(), right.split()
        if fs and fs[0] == "cgroup2":
            mounts.setdefault(2, (fields[3], fields[4]))
        elif fs and fs[0] == "cgroup" and "memory" in fs[2].split(","):
            mounts.setdefault(1, (fields[3], fields[4]))
    dirs = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        version = 2 if number == "0" else 1 if "memory" in controllers.split(",") else None
        if version in mounts:
            root, point = mounts[version]
            if path == root or path.startswith(root.rstrip("/") + "/"):
                dirs[version] = Path(point) / os.path.relpath(path, root)
    return {v: d.resolve() for v, d in dirs.items() if d.is_dir()}


def _cgroup_cap(limit: int, name: str) -> tuple[dict, str]:
    errors = []
    for version, parent in sorted(cgroup_dirs().items(), reverse=True):
        child = parent / name
        try:
            if version == 2:
                if "memory" not in (parent / "cgroup.controllers").read_text().split():
                    errors.append("cgroup v2 has no memory controller here")
                    continue
                if "memory" not in (parent / "cgroup.subtree_control").read_text().split():
                    (parent / "cgroup.subtree_control").write_text("+memory")
                child.mkdir(exist_ok=True)
                (child / "memory.max").write_text(str(limit))
                if (child / "memory.swap.max").exists():
                    (child / "memory.swap.max").write_text("0")
            else:
                child.mkdir(exist_ok=True)
                (child / "memory.limit_in_bytes").write_text(str(limit))
                if (child / "memory.memsw.limit_in_bytes").exists():   # memory + swap: no swapping past it
                    (child / "memory.memsw.limit_in_bytes").write_text(str(limit))
            (child / "cgroup.procs").write_text(str(os.getpid()))
            return {"how": f"cgroup{version}", "cgroup": str(child)}, ""
        except OSError as exc:
            errors.append(f"cgroup v{version}: {exc.strerror or exc}")
            try:
                child.rmdir()
            except OSError:
                pass
    return {}, "; ".join(errors) or "no cgroup file system"


def _in_user_namespace() -> bool:
    try:
        return Path("/proc/self/uid_map").read_text().split()[:3] != ["0", "0", "4294967295"]
    except OSError:
        return False


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] in ("kernel", "inside"):   # extra kernel arguments follow
        (host_stage if sys.argv[1] == "kernel" else inside_stage)(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        sys.exit("usage: launcher.py kernel <plan.json> <connection_file> [kernel args]   (started by tools/grade.py)")
