"""Benchmark attention implementations on the GPU: time, TFLOP/s, extra memory, and a plot.

Timing is `gpu_ms`: CUDA events around each call, warm-up, the L2 cache flushed before every run, the
median; and the GPU held back until the CPU has queued the whole call, so what is timed is the kernels,
not Python and launch overhead (see `gpu_ms`).
TFLOP/s counts only attended query-key pairs: 4 * B * Hq * D * pairs (two matmuls, 2 flops per
multiply-add), so a causal or windowed kernel is not credited for work the mask rules out.
Extra memory is the peak allocated during one call minus what was allocated before it (the inputs).
"""
from __future__ import annotations

import importlib
import math
import os
import time

import torch

from . import device
from .checks import failure
from .spec.masks import attention_mask
from .spec.problems import PROBLEMS, Shape
from .spec.reference import naive_attention


# Views of the registry (autograder.problems) under the names this module has always exported.
SHAPES = {n: list(p.bench_shapes) for n, p in PROBLEMS.items() if p.bench_shapes}
SOLUTION_MODULES = {n: p.module for n, p in PROBLEMS.items() if p.entry_point == "flash_attention_forward"}
BACKWARD_SHAPES = {n: list(p.backward_shapes) for n, p in PROBLEMS.items() if p.backward_shapes}


def reference_solution(problem: int):
    """The course's reference flash_attention_forward for `problem` (None if not generated yet)."""
    try:
        return importlib.import_module(SOLUTION_MODULES[problem]).flash_attention_forward
    except (ImportError, KeyError):
        return None


_FLUSH_BYTES = 256 * 2**20        # larger than any current GPU's L2 cache


def gpu_ms(fn, warmup_ms: float = 25, rep_ms: float = 100) -> float:
    """Median GPU time of `fn()` in milliseconds.

    Each run: the L2 cache is flushed, the GPU spins for about twice the CPU time one call takes to queue,
    then CUDA events bracket the call. The CPU has queued the whole call before the GPU reaches the first
    event, so Python, autograd and launch overhead is not counted. Without the spin a call whose kernels
    take less time than its CPU side (the backward of a small shape: about 0.45 ms of kernels behind
    0.25-0.45 ms of autograd and launches) is timed at the CPU's pace, which varies run to run.
    `triton.testing.do_bench` does the same minus the spin."""
    fn()                                                   # compile and allocate outside the timer
    torch.cuda.synchronize()
    flush = torch.empty(_FLUSH_BYTES, dtype=torch.int8, device="cuda")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    # the CPU cost of queuing one call, and the GPU time of one call, to size the spin and the run count
    t0 = time.perf_counter()
    start.record()
    fn()
    end.record()
    host_ms = (time.perf_counter() - t0) * 1e3
    torch.cuda.synchronize()
    est_ms = max(start.elapsed_time(end), 1e-3)
    spin = _spin_cycles_per_ms() * (2 * host_ms + 0.05) if hasattr(torch.cuda, "_sleep") else 0
    n_warmup = max(1, min(int(warmup_ms / est_ms), 1000))
    n_rep = max(5, min(int(rep_ms / est_ms), 1000))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n_rep)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n_rep)]
    for _ in range(n_warmup):
        fn()
    for i in range(n_rep):
        flush.zero_()
        if spin:
            torch.cuda._sleep(int(spin))
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    return float(torch.tensor([s.elapsed_time(e) for s, e in zip(starts, ends)]).median())


_SPIN = {}


def _spin_cycles_per_ms() -> float:
    """`torch.cuda._sleep` counts GPU clock cycles: how many make a millisecond on this GPU (measured once)."""
    dev = torch.cuda.current_device()
    if dev not in _SPIN:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(10**6)                          # clocks up before the measured spin
        start.record()
        torch.cuda._sleep(10**7)
        end.record()
        torch.cuda.synchronize()
        _SPIN[dev] = 10**7 / start.elapsed_time(end)
    return _SPIN[dev]


def _sdpa(backend_name):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    backend = getattr(SDPBackend, backend_name)
    F = torch.nn.functional

    def run(q, k, v, is_causal=False, window_size=None, sink_size=None):
        if window_size is not None or sink_size:
            raise NotImplementedError("SDPA's fused backends take no window or sink mask")
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, enable_gqa=q.shape[1] != k.shape[1])
    return run


def _flex(shape: Shape):
    """Compiled FlexAttention with the course's mask predicates; the block mask is built here,
    outside the timed region."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    # one shape after another would exceed dynamo's recompile limit and silently fall back to the
    # unfused (N x N, ~100x slower) path: start each shape from a clean compile cache
    torch._dynamo.reset()
    compiled = torch.compile(flex_attention, dynamic=False)
    block_mask = None
    if shape.is_causal:
        pred = attention_mask(**shape.mask_kwargs())
        block_mask = create_block_mask(lambda b, h, q_idx, kv_idx: pred(q_idx, kv_idx), None, None,
                                       shape.N, shape.N, device="cuda")

    def run(q, k, v, **_):
        return compiled(q, k, v, block_mask=block_mask, enable_gqa=q.shape[1] != k.shape[1])
    return run


def _naive_fits(shape: Shape, limit_gib=24):
    return shape.B * shape.Hq * shape.N * shape.N * 4 * 3 / 2**30 < limit_gib


def measure(fn, q, k, v, shape: Shape, name: str):
    """One record: median ms, TFLOP/s, extra GiB; or the reason it did not run."""
    kw = shape.mask_kwargs()
    rec = {"name": name, "shape": shape.describe(), "N": shape.N, "ms": math.nan, "tflops": math.nan,
           "extra_gib": math.nan, "note": ""}
    try:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        out = fn(q, k, v, **kw)
        torch.cuda.synchronize()
        rec["extra_gib"] = (torch.cuda.max_memory_allocated() - before) / 2**30
        del out
        ms = gpu_ms(lambda: fn(q, k, v, **kw))
    except (NotImplementedError, RuntimeError, ValueError, AssertionError, torch.OutOfMemoryError) as exc:
        rec["note"] = f"{type(exc).__name__}: {failure.summary(exc, 60)}"
        torch.cuda.empty_cache()
        return rec
    rec["ms"] = ms
    rec["tflops"] = shape.flops() / (ms * 1e-3) / 1e12
    return rec


def benchmark(problem: int, fn=None, shapes=None, baselines=("reference", "sdpa_flash", "sdpa_cudnn", "flex", "naive"),
              plot=True, verbose=True):
    """Time `fn` (your kernel) next to the reference solution, SDPA, FlexAttention and naive attention.

    Returns a list of records (dicts). On a machine without a GPU it prints why and returns []."""
    if os.environ.get("NBGRADER_EXECUTION"):
        # nbgrader sets this while validating or autograding: grading never waits on benchmarks
        if verbose:
            print("Benchmark skipped while grading (NBGRADER_EXECUTION is set).")
        return []
    if device.TIER != "gpu":
        if verbose:
            print(f"Benchmark skipped: it needs a CUDA GPU and this is the {device.TIER.upper()} tier "
                  "(interpreter timings say nothing about GPU speed). Run this cell on a GPU runtime.")
        return []
    shapes = shapes if shapes is not None else SHAPES.get(problem, [])
    from .progress import tqdm_class
    tqdm = tqdm_class()
    records = []
    for shape in tqdm(shapes, desc=f"benchmark P{problem}", disable=not verbose, leave=False):
        torch.manual_seed(0)
        dt = device.DTYPE
        q = torch.randn(shape.B, shape.Hq, shape.N, shape.D, device="cuda", dtype=dt)
        k = torch.randn(shape.B, shape.Hkv, shape.N, shape.D, device="cuda", dtype=dt)
        v = torch.randn(shape.B, shape.Hkv, shape.N, shape.D, device="cuda", dtype=dt)
        impls = []
        if fn is not None:
            impls.append(("yours", fn))
        for b in baselines:
            if b == "reference":
                ref = reference_solution(problem)
                if ref is not None and ref is not fn:
                    impls.append(("reference", ref))
            elif b == "sdpa_flash":
                impls.append(("SDPA flash", _sdpa("FLASH_ATTENTION")))
            elif b == "sdpa_cudnn":
                impls.append(("SDPA cuDNN", _sdpa("CUDNN_ATTENTION")))
            elif b == "flex":
                impls.append(("FlexAttention", _flex(shape)))
            elif b == "naive":
                if _naive_fits(shape):
                    impls.append(("naive", naive_attention))
                else:
                    records.append({"name": "naive", "shape": shape.describe(), "N": shape.N, "ms": math.nan,
                                    "tflops": math.nan, "extra_gib": math.nan,
                                    "note": "skipped: the N x N scores would not fit"})
            else:
                raise ValueError(f"unknown baseline {b!r}")
        for name, impl in impls:
            records.append(measure(impl, q, k, v, shape, name))
        del q, k, v
        torch.cuda.empty_cache()
    if verbose:
        print_table(records)
    if plot and records:
        try:
            from .teaching.plots import plot_benchmark
            return_fig = plot_benchmark(records)
            if verbose:
                _display(return_fig)
        except ImportError:
            pass
    return records


def _display(fig):
    try:
        from IPython.display import display
        display(fig)
    except ImportError:
        pass


def measure_backward(fn, q, k, v, shape: Shape, name: str):
    """One record for the backward alone: the forward runs outside the timer, then
    torch.autograd.grad(out, (q, k, v), dO) is timed. TFLOP/s = 2.5 x the forward's flops over the
    attended pairs (FlashAttention-2's convention: five matmuls where the forward has two)."""
    kw = shape.mask_kwargs()
    rec = {"name": name, "shape": shape.describe(), "N": shape.N, "ms": math.nan, "tflops": math.nan,
           "extra_gib": math.nan, "note": ""}
    try:
        q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
        out = fn(q, k, v, **kw)
        do = torch.randn_like(out)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        grads = torch.autograd.grad(out, (q, k, v), do, retain_graph=True)
        torch.cuda.synchronize()
        rec["extra_gib"] = (torch.cuda.max_memory_allocated() - before) / 2**30
        del grads
        ms = gpu_ms(lambda: torch.autograd.grad(out, (q, k, v), do, retain_graph=True))
    except (NotImplementedError, RuntimeError, ValueError, AssertionError, torch.OutOfMemoryError) as exc:
        rec["note"] = f"{type(exc).__name__}: {failure.summary(exc, 60)}"
        torch.cuda.empty_cache()
        return rec
    rec["ms"] = ms
    rec["tflops"] = 2.5 * shape.flops() / (ms * 1e-3) / 1e12
    return rec


def benchmark_backward(problem: int, fn=None, shapes=None, baselines=("reference", "sdpa_flash", "sdpa_cudnn", "flex"),
                       verbose=True):
    """Time the backward of `fn` (a differentiable attention) next to the reference solution, SDPA's
    FlashAttention-2 and cuDNN backends (no window or sinks) and compiled FlexAttention."""
    if os.environ.get("NBGRADER_EXECUTION") or device.TIER != "gpu":
        if verbose:
            print("Benchmark skipped: " + ("grading (NBGRADER_EXECUTION is set)." if device.TIER == "gpu" else
                  f"it needs a CUDA GPU and this is the {device.TIER.upper()} tier."))
        return []
    shapes = shapes if shapes is not None else BACKWARD_SHAPES.get(problem, [])
    records = []
    for shape in shapes:
        torch.manual_seed(0)
        q = torch.randn(shape.B, shape.Hq, shape.N, shape.D, device="cuda", dtype=device.DTYPE)
        k = torch.randn(shape.B, shape.Hkv, shape.N, shape.D, device="cuda", dtype=device.DTYPE)
        v = torch.randn(shape.B, shape.Hkv, shape.N, shape.D, device="cuda", dtype=device.DTYPE)
        impls = [("yours", fn)] if fn is not None else []
        for b in baselines:
            if b == "reference":
                ref = reference_solution(problem)
                if ref is not None and ref is not fn:
                    impls.append(("reference", ref))
            elif b == "sdpa_flash" and not (shape.window_size or shape.sink_size):
                impls.append(("SDPA flash", _sdpa("FLASH_ATTENTION")))
            elif b == "sdpa_cudnn" and not (shape.window_size or shape.sink_size):
                impls.append(("SDPA cuDNN", _sdpa("CUDNN_ATTENTION")))
            elif b == "flex":
                impls.append(("FlexAttention", _flex(shape)))
        for name, impl in impls:
            records.append(measure_backward(impl, q, k, v, shape, name))
        del q, k, v
        torch.cuda.empty_cache()
    if verbose:
        print("backward alone, TFLOP/s = 2.5 x forward flops over attended pairs")
        print_table(records)
    return records


def print_table(records):
    print(f"{'shape (B, Hq, Hkv, N, D) mask':42s} {'implementation':14s} {'ms':>9s} {'TFLOP/s':>8s} {'extra GiB':>9s}")
    for r in records:
        if math.isnan(r["ms"]):
            print(f"{r['shape']:42s} {r['name']:14s} {'-':>9s} {'-':>8s} {'-':>9s}  {r['note']}")
        else:
            print(f"{r['shape']:42s} {r['name']:14s} {r['ms']:9.3f} {r['tflops']:8.1f} {r['extra_gib']:9.3f}")
