"""The course's main job: check every reference solution on this machine's tier, print a
scoreboard, and on a GPU the benchmark table against SDPA, FlexAttention and naive attention.

    python -m autograder.scoreboard            # checks (+ benchmarks on a GPU)
    python -m autograder.scoreboard --no-bench
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time

import autograder
from autograder import bench, device, failure
from autograder.problems import PROBLEMS


def _check_problem(problem, module):
    checker = PROBLEMS[problem].checker
    if checker == "triton_basics":
        from autograder import triton_basics
        return triton_basics.check_all(module, verbose=False)
    if checker == "check_backward":
        return autograder.check_backward(problem, module.flash_attention_forward, verbose=False)
    return autograder.check(problem, module.flash_attention_forward, verbose=False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-bench", action="store_true", help="skip the GPU benchmark")
    parser.add_argument("--problems", type=int, nargs="*", choices=sorted(PROBLEMS), default=sorted(PROBLEMS))
    args = parser.parse_args(argv)

    # a row is printed as its problem finishes (the CPU tier takes from a second to a minute a problem);
    # the problem's number goes out first, so the line that is still open says what runs now
    print(f"\nScoreboard: reference solutions, {device.TIER.upper()} tier")
    print(f"{'problem':>7s}  {'cases':>5s}  {'seconds':>7s}  result")
    failed = 0
    for problem in args.problems:
        print(f"{problem:>7d}  ", end="", flush=True)
        try:
            module = importlib.import_module(PROBLEMS[problem].module)
        except ModuleNotFoundError:
            print(f"{'-':>5s}  {0.0:7.1f}  not built yet", flush=True)
            continue
        t0 = time.perf_counter()
        try:
            summary = _check_problem(problem, module)
            cases, result = str(summary.passed), "PASS"
        except AssertionError as exc:
            failed += 1
            cases, result = "-", "FAIL: " + failure.summary(exc, 70)
        print(f"{cases:>5s}  {time.perf_counter() - t0:7.1f}  {result}", flush=True)

    if not args.no_bench:
        if device.TIER != "gpu":
            print("\nBenchmarks skipped: no CUDA GPU (CPU tier). On a GPU this prints TFLOP/s next to SDPA and FlexAttention.")
        else:
            records = []
            for problem in sorted(bench.SHAPES):
                ref = bench.reference_solution(problem)
                if ref is not None:
                    print(f"benchmarking problem {problem} (forward) ...", flush=True)
                    records += bench.benchmark(problem, None, baselines=("reference", "sdpa_cudnn", "flex", "naive"),
                                               plot=False, verbose=False)
            print("\nBenchmark (bench.gpu_ms: median GPU time, L2 flushed, launch overhead excluded; TFLOP/s over attended pairs)")
            bench.print_table(records)
            records = []
            for problem in sorted(bench.BACKWARD_SHAPES):
                if bench.reference_solution(problem) is not None:
                    print(f"benchmarking problem {problem} (backward) ...", flush=True)
                    records += bench.benchmark_backward(problem, None, baselines=("reference", "sdpa_cudnn", "flex"),
                                                        verbose=False)
            print("\nBackward alone (TFLOP/s = 2.5 x forward flops over attended pairs)")
            bench.print_table(records)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
