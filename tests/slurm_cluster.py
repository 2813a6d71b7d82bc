"""A real single-node Slurm cluster on localhost, for tests (a helper module, not a test file).

    with SlurmCluster(tmp_path / "slurm") as cluster:
        cluster.run(["sbatch", "--wrap", "true"])      # any Slurm client, pointed at this cluster
        with cluster.environ():                        # os.environ gets SLURM_CONF (and PATH): for
            ...                                        # libraries that shell out, e.g. submitit

What it does, all of it inside `workdir` (plus one short directory in /tmp for munged's socket,
whose path must stay under 108 bytes and whose parents must all be world-searchable):

* installs Debian's `slurm-wlm` and `munge` with apt-get when a daemon or client is missing (root
  only; `apt-get update` and one retry when the first install fails);
* starts a private `munged` (own key, socket, pid, log, seed; never the system's /run/munge);
* writes slurm.conf for this machine (CPUs, sockets, cores, RealMemory from `slurmd -C`; free TCP
  ports for slurmctld and slurmd) and points every Slurm command at it through SLURM_CONF (no
  cgroup.conf: proctrack/linuxproc and task/none use no cgroup);
* starts slurmctld and slurmd in the foreground (-D) as children, waits until `sinfo` shows the node
  idle, and on exit cancels every job, stops the daemons and munged and kills anything left that
  carries this cluster's SLURM_CONF in its environment (slurmstepd, job processes).

There is no slurmdbd, so the real `sacct` answers "Slurm accounting storage is disabled". Tools that
poll job states through sacct (submitit does) would then never see a job that ended without a
result (cancelled, killed, timed out) as finished. So `environ()` / `env` put a small `sacct` first
on PATH, written into workdir/bin, that answers `sacct -j ID ... -o FIELDS --parsable2` (the only
form submitit uses) from `squeue --states=all`: slurmctld keeps ended jobs for MinJobAge (1 h
here), long enough for any test. Pass `sacct_shim=False` to keep the real sacct.

Anything that keeps Slurm from starting raises `SlurmUnavailable` (not root and not installed, no
apt-get, the install failing, not Linux): a test may `pytest.skip(str(e))`. Daemons that were
installed but fail to come up raise `SlurmStartError` (a subclass) with their logs in the message.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DAEMONS = ("slurmctld", "slurmd", "munged")
CLIENTS = ("sbatch", "srun", "squeue", "scancel", "sinfo", "scontrol", "sacct", "munge", "unmunge")
APT_PACKAGES = ("slurm-wlm", "munge")
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class SlurmUnavailable(RuntimeError):
    """Slurm cannot run here (the reason is the message); a test may skip."""


class SlurmStartError(SlurmUnavailable):
    """Slurm is installed but its daemons did not come up; the message carries their logs."""


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + SBIN_PATH)


def missing_programs() -> list[str]:
    return [p for p in DAEMONS + CLIENTS if _which(p) is None]


def ensure_installed(timeout: float = 900, log=print) -> float:
    """Install slurm-wlm and munge with apt-get when any of their programs is missing.

    Returns the seconds spent installing (0.0 when nothing was missing). Raises SlurmUnavailable."""
    missing = missing_programs()
    if not missing:
        return 0.0
    if not sys.platform.startswith("linux"):
        raise SlurmUnavailable(f"Slurm needs Linux (missing: {' '.join(missing)})")
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"Slurm is not installed (missing: {' '.join(missing)}) and only root "
                               "may apt-get install it")
    apt = _which("apt-get")
    if apt is None:
        raise SlurmUnavailable(f"Slurm is not installed (missing: {' '.join(missing)}) and there is no apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", PATH=os.environ.get("PATH", "") + ":" + SBIN_PATH)
    install = [apt, "install", "-y", "--no-install-recommends", *APT_PACKAGES]
    t0 = time.monotonic()
    log(f"slurm_cluster: missing {' '.join(missing)}; running {' '.join(install)}")

    def attempt(cmd):
        try:
            return subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=max(1.0, timeout - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            raise SlurmUnavailable(f"{' '.join(cmd)} ran past {timeout:.0f} s") from None

    out = attempt(install)
    if out.returncode != 0:       # usually no package lists yet (a fresh container): update, retry once
        log(f"slurm_cluster: install failed (rc {out.returncode}): {out.stderr.strip()[-500:]}; apt-get update")
        upd = attempt([apt, "update"])
        if upd.returncode != 0:
            raise SlurmUnavailable(f"apt-get update failed (rc {upd.returncode}):\n{upd.stderr[-2000:]}")
        out = attempt(install)
    if out.returncode != 0:
        raise SlurmUnavailable(f"apt-get install {' '.join(APT_PACKAGES)} failed (rc {out.returncode}):\n"
                               f"{out.stdout[-1500:]}\n{out.stderr[-1500:]}")
    still = missing_programs()
    if still:
        raise SlurmUnavailable(f"after apt-get install, still missing: {' '.join(still)}")
    seconds = time.monotonic() - t0
    log(f"slurm_cluster: apt-get install {' '.join(APT_PACKAGES)} took {seconds:.1f} s")
    return seconds


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _node_hardware() -> dict[str, str]:
    """`slurmd -C`: NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, SLURM_CONF="/dev/null"))
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("NodeName=")), None)
    if out.returncode != 0 or line is None:
        raise SlurmStartError(f"slurmd -C failed (rc {out.returncode}): {out.stdout}{out.stderr}")
    return dict(kv.split("=", 1) for kv in line.split())


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


SACCT_SHIM = r'''#!{python}
"""sacct for a cluster without slurmdbd (written by tests/slurm_cluster.py): answers
`sacct [-j ID]... [-o FIELDS] [--parsable2]` from `squeue --states=all`, which keeps ended jobs for
MinJobAge. Fields: JobID, State, NodeList, JobName (others come back empty)."""
import subprocess, sys

args = sys.argv[1:]
ids, fields = [], ["JobID", "State", "NodeList"]
i = 0
while i < len(args):
    a = args[i]
    if a in ("-j", "--jobs"):
        ids += args[i + 1].split(","); i += 1
    elif a.startswith("--jobs="):
        ids += a.split("=", 1)[1].split(",")
    elif a in ("-o", "--format"):
        fields = args[i + 1].split(","); i += 1
    elif a.startswith("--format="):
        fields = a.split("=", 1)[1].split(",")
    i += 1                  # anything else (--parsable2, -X, ...) is ignored: output is always parsable2
cmd = ["squeue", "--noheader", "--states=all", "--array", "-o", "%i|%T|%N|%j"]
if ids:
    cmd += ["-j", ",".join(ids)]
out = subprocess.run(cmd, capture_output=True, text=True)
if out.returncode != 0 and "Invalid job id" not in out.stderr:
    sys.stderr.write(out.stderr)
    sys.exit(out.returncode)
rows = []
for line in out.stdout.splitlines():
    jid, state, nodes, name = (line.split("|") + ["", "", "", ""])[:4]
    rows.append({{"JobID": jid, "State": state, "NodeList": nodes, "JobName": name}})
sep = "|"
print(sep.join(fields))
for r in rows:
    print(sep.join(r.get(f, "") for f in fields))
'''


class SlurmCluster:
    """A single-node Slurm cluster (slurmctld + slurmd + munged) living in `workdir`."""

    def __init__(self, workdir: str | os.PathLike, partition: str = "grading", *, install: bool = True,
                 start_timeout: float = 90, install_timeout: float = 900, sacct_shim: bool = True,
                 debug: str = "info", log=print):
        self.workdir = Path(workdir).resolve()
        self.partition = partition
        self.install = install
        self.start_timeout = start_timeout
        self.install_timeout = install_timeout
        self.sacct_shim = sacct_shim
        self.debug = debug
        self.log = log
        self.timings: dict[str, float] = {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.conf = self.workdir / "etc" / "slurm.conf"
        self.logdir = self.workdir / "log"
        self.bindir = self.workdir / "bin"
        self.rundir: Path | None = None           # munged's socket directory, in /tmp
        self.nodename = ""
        self.hardware: dict[str, str] = {}
        self._started = False

    # ---------------------------------------------------------------- environment for callers
    @property
    def env(self) -> dict[str, str]:
        """os.environ plus SLURM_CONF (and the sacct shim first on PATH): for subprocess calls."""
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        path = env.get("PATH", "") + os.pathsep + SBIN_PATH
        if self.sacct_shim:
            path = str(self.bindir) + os.pathsep + path
        env["PATH"] = path
        return env

    @contextlib.contextmanager
    def environ(self):
        """Set SLURM_CONF and PATH in os.environ for the block (libraries that shell out: submitit)."""
        saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "PATH")}
        env = self.env
        os.environ["SLURM_CONF"], os.environ["PATH"] = env["SLURM_CONF"], env["PATH"]
        try:
            yield self
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def run(self, cmd: list[str], timeout: float = 30, check: bool = True, **kw) -> subprocess.CompletedProcess:
        """Run a Slurm client (sbatch, squeue, ...) against this cluster; output as text."""
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL, **kw)
        if check and out.returncode != 0:
            raise subprocess.CalledProcessError(out.returncode, cmd, out.stdout, out.stderr)
        return out

    # ---------------------------------------------------------------- logs
    def log_paths(self) -> list[Path]:
        paths = sorted(p for p in self.logdir.glob("*") if p.is_file()) if self.logdir.is_dir() else []
        # a daemon's stdout repeats its log file (-D logs to both): keep it only when the log is empty
        return [p for p in paths if p.suffix != ".stdout" or p.stat().st_size and not
                (p.with_suffix(".log").exists() and p.with_suffix(".log").stat().st_size)]

    def logs(self, tail: int = 60) -> str:
        """The last `tail` lines of every daemon log, for failure messages."""
        parts = []
        for p in self.log_paths():
            try:
                lines = p.read_text(errors="replace").splitlines()
            except OSError as e:
                lines = [f"<unreadable: {e}>"]
            parts.append(f"----- {p} (last {min(tail, len(lines))} of {len(lines)} lines)\n" + "\n".join(lines[-tail:]))
        return "\n".join(parts) or f"(no logs in {self.logdir})"

    # ---------------------------------------------------------------- start
    def __enter__(self) -> "SlurmCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if self._started:
            return
        if not sys.platform.startswith("linux"):
            raise SlurmUnavailable("Slurm needs Linux")
        if os.geteuid() != 0:
            # Daemons as another user would need SlurmUser = that user and no root-only paths: a
            # non-root run is not supported; the message says why a test skipped.
            raise SlurmUnavailable("starting slurmctld/slurmd needs root (SlurmUser=root)")
        t0 = time.monotonic()
        if self.install:
            self.timings["install_s"] = ensure_installed(self.install_timeout, log=self.log)
        missing = missing_programs()
        if missing:
            raise SlurmUnavailable(f"Slurm/munge programs missing: {' '.join(missing)}")
        self._started = True         # from here on, stop() cleans up whatever got started
        try:
            t1 = time.monotonic()
            self._write_files()
            self._start_munged()
            self._start_daemons()
            self._wait_idle()
            self.timings["startup_s"] = time.monotonic() - t1
            self.timings["total_s"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise

    def _write_files(self) -> None:
        w = self.workdir
        for sub in ("etc", "log", "run", "state", "spool", "bin", "munge"):
            (w / sub).mkdir(parents=True, exist_ok=True)
        (w / "munge").chmod(0o700)
        # munged's socket: a short path (sun_path is 108 bytes) whose every parent is world-searchable
        # (munged refuses otherwise, and pytest's tmp dirs are 0700).
        self.rundir = Path(tempfile.mkdtemp(prefix="slurm-munge-", dir="/tmp"))
        self.rundir.chmod(0o755)
        key = w / "munge" / "munge.key"
        if not key.exists():
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(1024))
        self.hardware = hw = _node_hardware()
        self.nodename = socket.gethostname().split(".")[0] or hw.get("NodeName", "localhost")
        ctld_port, slurmd_port = _free_ports(2)
        mem = int(hw.get("RealMemory", "1024"))
        # a job without --mem would otherwise get the whole node's memory and block every other job
        def_mem = max(1, mem // max(1, int(hw.get("CPUs", "1"))))
        # Job ids differ from one cluster to the next: submitit's watcher (one per process, shared by
        # every SlurmJob) caches states by job id, and a second cluster restarting at 1 would find
        # the first one's finished job 1 in that cache.
        self.first_job_id = 1000 + int(time.time() * 1000) % 60_000_000
        conf = f"""\
# Written by tests/slurm_cluster.py: a single-node test cluster living in {w}
ClusterName=testcluster
SlurmctldHost={self.nodename}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.rundir}/munge.socket
StateSaveLocation={w}/state
SlurmdSpoolDir={w}/spool
SlurmctldPidFile={w}/run/slurmctld.pid
SlurmdPidFile={w}/run/slurmd.pid
SlurmctldLogFile={self.logdir}/slurmctld.log
SlurmdLogFile={self.logdir}/slurmd.log
SlurmctldDebug={self.debug}
SlurmdDebug={self.debug}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU={def_mem}
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,bf_interval=1,default_queue_depth=1000
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
FirstJobId={self.first_job_id}
MailProg=/bin/true
# quick turnover (SIGKILL soon after scancel's SIGTERM: about 6-7 s here for a step whose process
# ignores SIGTERM, as submitit's does); ended jobs stay visible to squeue for 1 h (MinJobAge)
KillWait=2
MinJobAge=3600
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
MessageTimeout=20
NodeName={self.nodename} NodeAddr=127.0.0.1 NodeHostname={self.nodename} CPUs={hw.get('CPUs', '1')} \
Boards={hw.get('Boards', '1')} SocketsPerBoard={hw.get('SocketsPerBoard', '1')} \
CoresPerSocket={hw.get('CoresPerSocket', '1')} ThreadsPerCore={hw.get('ThreadsPerCore', '1')} \
RealMemory={mem} State=UNKNOWN
PartitionName={self.partition} Nodes={self.nodename} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""
        self.conf.write_text(conf)
        if self.sacct_shim:
            shim = self.bindir / "sacct"
            shim.write_text(SACCT_SHIM.format(python=sys.executable))
            shim.chmod(0o755)

    def _start_munged(self) -> None:
        # In the foreground, as our child: we reap it (no init may be there to reap a daemon); it
        # logs to stderr then (log/munged.stdout), not to a --log-file.
        w = self.workdir
        sock = self.rundir / "munge.socket"
        cmd = [_which("munged"), "--foreground", f"--socket={sock}", f"--key-file={w}/munge/munge.key",
               f"--pid-file={self.rundir}/munged.pid",
               f"--seed-file={w}/munge/munged.seed", "--num-threads=2"]
        with open(self.logdir / "munged.stdout", "wb") as out:
            self.procs["munged"] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                                    stderr=subprocess.STDOUT, start_new_session=True)
        self._wait(sock.exists, 15, f"munged to create {sock}")
        chk = subprocess.run(f"{_which('munge')} -n -S {sock} | {_which('unmunge')} -S {sock}", shell=True,
                             capture_output=True, text=True, timeout=30)
        if chk.returncode != 0:
            raise SlurmStartError(f"munge round trip failed: {chk.stdout}{chk.stderr}\n{self.logs()}")

    def _start_daemons(self) -> None:
        env = dict(self.env, SLURM_TEST_CLUSTER=str(self.conf))
        for name, args in (("slurmctld", ["-D", "-i"]), ("slurmd", ["-D", "-N", self.nodename])):
            out = open(self.logdir / f"{name}.stdout", "wb")
            self.procs[name] = subprocess.Popen([_which(name), *args, "-f", str(self.conf)], env=env,
                                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                                cwd=self.workdir, start_new_session=True)
            out.close()
            if name == "slurmctld":       # slurmd registers with slurmctld: let the controller listen first
                self._wait(lambda: self._ping(), 30, "slurmctld to answer `scontrol ping`")

    def _ping(self) -> bool:
        out = self.run(["scontrol", "ping"], check=False, timeout=20)
        return "UP" in out.stdout

    def _check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise SlurmStartError(f"{name} exited with status {p.returncode} while starting\n{self.logs()}")

    def _wait(self, cond, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            if cond():
                return
            if time.monotonic() > deadline:
                what = what() if callable(what) else what
                raise SlurmStartError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.logs()}")
            time.sleep(0.25)

    def node_state(self) -> str:
        out = self.run(["sinfo", "--noheader", "-N", "-o", "%t"], check=False, timeout=20)
        return out.stdout.strip()

    def _wait_idle(self) -> None:
        self._wait(lambda: self.node_state() == "idle", self.start_timeout,
                   lambda: f"node {self.nodename} to be idle in sinfo (state now: {self.node_state()!r}; "
                   f"`scontrol show node`: {self.run(['scontrol', 'show', 'node'], check=False).stdout.strip()})")

    # ---------------------------------------------------------------- stop
    def stop(self, timeout: float = 30) -> None:
        """Cancel every job, stop slurmd, slurmctld and munged, kill any process of this cluster left."""
        if not self._started:
            return
        self._started = False
        ctld = self.procs.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            try:
                self.run(["scancel", "--full", "--quiet", "--partition", self.partition], check=False, timeout=20)
                self.run(["scancel", "--quiet", "--user", "root"], check=False, timeout=20)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    left = self.run(["squeue", "--noheader", "-o", "%i", "--states=PENDING,RUNNING,COMPLETING,"
                                     "CONFIGURING,SUSPENDED"], check=False, timeout=20).stdout.strip()
                    if not left:
                        break
                    time.sleep(0.25)
            except (OSError, subprocess.SubprocessError):
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None:
                continue
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
        # slurmstepd (and what it ran) double-forks away from slurmd: find them by environment
        for pid in self.leftover_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.leftover_processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.rundir is not None:
            shutil.rmtree(self.rundir, ignore_errors=True)

    def leftover_processes(self) -> list[int]:
        """Live processes of this cluster: its daemons, munged, and anything whose environment or
        command line names this cluster's slurm.conf (slurmstepd and the jobs it runs)."""
        marks = [f"SLURM_TEST_CLUSTER={self.conf}".encode(), f"SLURM_CONF={self.conf}".encode(), str(self.conf).encode()]
        me = os.getpid()
        found = set()
        for p in self.procs.values():
            if p.poll() is None:
                found.add(p.pid)
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) == me:
                continue
            try:
                with open(f"/proc/{d}/environ", "rb") as f:
                    env = f.read()
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if any(m in env.split(b"\0") or m in cmd for m in marks[:2]) or marks[2] in cmd:
                if _pid_alive(int(d)):
                    found.add(int(d))
        found.discard(me)
        return sorted(found)
