"""A real single-node Slurm cluster on localhost (tests/slurm_cluster.py) runs submitit jobs.

Starts slurmctld + slurmd + munged (apt-get installing slurm-wlm and munge first when missing, as
root), runs a 4-task submitit job array two at a time and checks the values returned, cancels a
long job and checks that submitit sees it end (CANCELLED, no result) without hanging, and checks
that no process of the cluster outlives the context manager. Skips where Slurm cannot run here (not
root and not installed, no apt-get); fails, with the daemons' logs, where it is installed but does
not come up.
"""
from __future__ import annotations

import os
import socket
import sys
import time

import pytest

submitit = pytest.importorskip("submitit")

from slurm_cluster import SlurmCluster, SlurmStartError, SlurmUnavailable  # noqa: E402

pytestmark = pytest.mark.slow

# The job's Python unpickles these functions: send them by value (tests/ is no package the job imports).
import cloudpickle  # noqa: E402  (a submitit dependency)

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def square_task(x: int) -> dict:
    start = time.time()
    return {"x": x, "square": x * x, "task": os.environ.get("SLURM_ARRAY_TASK_ID"),
            "job": os.environ.get("SLURM_JOB_ID"), "host": socket.gethostname(), "start": start,
            "end": time.time()}


def sleep_task(seconds: float, marker: str) -> str:
    with open(marker, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(seconds)
    return "not cancelled"


def _wait_for(cond, timeout: float, what: str, logs) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{logs()}")
        time.sleep(0.5)


def test_submitit_job_array_on_local_slurm(tmp_path):
    cluster = SlurmCluster(tmp_path / "slurm", partition="grading")
    try:
        cluster.start()
    except SlurmStartError:
        raise                                 # installed but broken: a failure, with the logs
    except SlurmUnavailable as e:
        pytest.skip(f"no Slurm here: {e}")
    folder = tmp_path / "submitit"

    def logs():
        job_logs = []
        for p in sorted(folder.glob("*.out")) + sorted(folder.glob("*.err")):
            job_logs.append(f"----- {p}\n{p.read_text(errors='replace')[-3000:]}")
        return cluster.logs() + "\n" + "\n".join(job_logs)

    try:
        with cluster, cluster.environ():
            print(f"\nslurm cluster up in {cluster.timings['startup_s']:.2f} s "
                  f"(apt-get install {cluster.timings.get('install_s', 0.0):.1f} s); "
                  f"node {cluster.nodename}: {cluster.hardware}")
            executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
            executor.update_parameters(slurm_partition="grading", timeout_min=5, cpus_per_task=1,
                                       slurm_array_parallelism=2, mem_gb=1, name="square")

            # ---- a 4-task array, at most 2 at a time
            t_submit = time.time()
            jobs = executor.map_array(square_task, [1, 2, 3, 4])
            assert len(jobs) == 4 and len({j.job_id.split("_")[0] for j in jobs}) == 1, [j.job_id for j in jobs]
            _wait_for(lambda: all(j.done() for j in jobs), 120, "the 4-task array", logs)
            results = [j.result() for j in jobs]
            t_all = time.time() - t_submit
            assert [r["square"] for r in results] == [1, 4, 9, 16]
            assert [r["task"] for r in results] == ["0", "1", "2", "3"]
            assert all(r["host"] == socket.gethostname() for r in results)
            # the result pickle can be there before Slurm has the task COMPLETED (RUNNING, COMPLETING)
            states = {j.job_id: [j.watcher.get_state(j.job_id, mode="force")] for j in jobs}
            print(f"array states when all results were in: { {k: v[0] for k, v in states.items()} }")

            def completed():
                jobs[0].watcher.update()
                for j in jobs:
                    if states[j.job_id][-1] != (st := j.watcher.get_state(j.job_id, mode="cache")):
                        states[j.job_id].append(st)
                return all(v[-1] == "COMPLETED" for v in states.values())

            _wait_for(completed, 30, f"Slurm to report the array COMPLETED ({states})", logs)
            # at most 2 tasks at a time (slurm_array_parallelism=2): no 3 runs overlap
            spans = sorted((r["start"], r["end"]) for r in results)
            assert all(spans[i + 2][0] >= spans[i][1] - 0.05 for i in range(len(spans) - 2)), spans
            starts = [r["start"] - t_submit for r in results]
            print(f"4-task array: submission to all 4 results {t_all:.1f} s, {t_all / 4:.2f} s a task; "
                  f"task starts after submission: {', '.join(f'{s:.1f}' for s in starts)} s")

            # ---- a long job, cancelled: submitit must see it end, with no result, without hanging
            executor.update_parameters(name="sleeper", timeout_min=10)
            marker = tmp_path / "sleeper.started"
            job = executor.submit(sleep_task, 300, str(marker))
            seen = []

            def running():         # Slurm says RUNNING and the function itself has started
                seen.append(job.watcher.get_state(job.job_id, mode="force"))
                return seen[-1] == "RUNNING" and marker.exists()

            _wait_for(running, 60, f"job {job.job_id} to run (states seen: {seen})", logs)
            print(f"long job {job.job_id} states before cancel: {sorted(set(seen), key=seen.index)}")
            t_cancel = time.time()
            job.cancel(check=True)
            after = []

            def ended():
                done = job.done(force_check=True)       # refreshes the watcher through sacct
                after.append(job.watcher.get_state(job.job_id, mode="cache"))
                return done

            _wait_for(ended, 60, f"cancelled job {job.job_id} to be done (states seen: {after})", logs)
            state = job.state
            print(f"cancelled job: done after {time.time() - t_cancel:.1f} s, state {state!r} "
                  f"(states seen after scancel: {sorted(set(after), key=after.index)})")
            assert state.startswith("CANCELLED"), state
            t0 = time.time()
            with pytest.raises(submitit.core.utils.UncompletedJobError):
                job.result()
            print(f"cancelled job: result() raised UncompletedJobError after {time.time() - t0:.1f} s")
            assert cluster.leftover_processes(), "the cluster's daemons should be alive inside the block"
        left = cluster.leftover_processes()
        assert not left, f"processes left after the cluster stopped: {left}"
        for name, p in cluster.procs.items():
            assert p.poll() is not None, f"{name} (pid {p.pid}) still running"
    except BaseException:
        print(logs())
        raise
