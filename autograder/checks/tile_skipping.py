"""Grade the algorithm, not only the output: which key tiles a kernel visits, which it masks.

A FlashAttention kernel with a sliding window can give the right answer while looping over every
key tile and letting the mask throw most of them away: the output is exact, the work is O(N^2)
instead of O(N * W). The checks of `autograder.check` cannot see that; this module can.

On the CPU tier the kernel runs in the Triton interpreter under `autograder.watch.probe.InterpreterProbe`,
which counts its 2-D loads of the key tensor (tile visits) and 2-D selects (masked tiles).

`check_tile_skipping(problem, fn)` first checks `fn`'s output on a few cases with the mask it counts
(grouped-query heads included from Problem 6 on), then runs `fn` on the same shape at N and 2N with a fixed window
(Problems 6, 7) and fails when the visits grow like N^2 instead of N; for Problem 4 it counts
masked tiles and returns a warning-level report when the kernel masks tiles that need no mask.
On a GPU tier it times the kernel at N and 2N instead (see `_gpu_scaling`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from .. import device
from ..bench import gpu_ms
from ..spec import problems
from ..spec.cases import Case
from ..spec.masks import attention_mask, dense_mask
from ..spec.reference import TOLERANCES, reference_attention
from ..spec.tiles import attention_tiles
from ..watch import record
from ..watch.probe import InterpreterProbe
from .attention import check
from .core import CheckFailed, NotImplementedYet, not_implemented
from .backward import GRAD_TOLERANCES, _close, make_inputs, reference_grads
from .failure import Failure

# ---------------------------------------------------------------------------------------------
# tile counts


@dataclass
class SkippingReport:
    """What a tile-skipping check measured: one type for every problem, tier and outcome.

    Measurements map a label to one value per entry of `sizes`. On the CPU tier the interpreter
    counts tiles: `visits` ("key" tiles loaded and "masked" score tiles forward; "query" and "key"
    tiles loaded by Problem 9's forward + backward) and, where the course computes them, `expected`
    (what a kernel that skips every tile its mask rules out does, with the same BLOCK_M x BLOCK_N).
    On a GPU `times_ms` holds `bench.gpu_ms` times instead. `ratio` is the number the verdict rests on:
    the growth from the first size to the second (Problems 6, 7, 9), causal over non-causal time
    (Problem 4 on a GPU), None where one shape is counted (Problem 4 on the CPU tier).

    `passed` is False when the kernel does work its mask rules out: Problems 6, 7 and 9 then raise
    TileSkippingFailed carrying the report; Problem 4 is not graded and returns it with `warnings`."""
    problem: int
    tier: str                                            # "cpu": counted in the interpreter, "gpu": timed
    sizes: Tuple[int, ...]                               # the sequence lengths N measured
    mask: dict
    passed: bool = True
    message: str = ""                                    # the verdict in a sentence (or the count, Problem 4)
    visits: Dict[str, Tuple[int, ...]] = field(default_factory=dict)
    expected: Dict[str, Tuple[int, ...]] = field(default_factory=dict)
    times_ms: Dict[str, Tuple[float, ...]] = field(default_factory=dict)
    ratio: Optional[float] = None
    block: Optional[Tuple[int, int]] = None              # (BLOCK_M, BLOCK_N) of `expected`
    warnings: List[str] = field(default_factory=list)

    def growth(self, label: str) -> float:
        """visits[label] (or times_ms[label]) at the last size over the first."""
        values = self.visits.get(label) or self.times_ms[label]
        return values[-1] / max(values[0], 1)

    def __str__(self):
        return "\n".join([self.message] + ["  warning: " + w for w in self.warnings])


class TileSkippingFailed(CheckFailed):
    """The output is right, the algorithm is not: `report` holds what was measured."""

    def __init__(self, report: SkippingReport):
        super().__init__(Failure(report.message))
        self.report = report


def needed_tiles(n, block_m, block_n, is_causal=False, window_size=None, sink_size=None):
    """(tiles that hold at least one visible pair, tiles that also hold a hidden or out-of-range pair)."""
    tm, tn = -(-n // block_m), -(-n // block_n)
    vis = torch.zeros(tm * block_m, tn * block_n, dtype=torch.bool)      # keys past N: hidden
    vis[:n, :n] = dense_mask(attention_mask(is_causal, window_size, sink_size), n)
    fake_row = torch.zeros(tm * block_m, 1, dtype=torch.bool)
    fake_row[n:] = True                                                  # rows past N are never stored
    v = vis.view(tm, block_m, tn, block_n)
    any_vis = v.any(3).any(1)                                            # [tm, tn]
    all_vis = (vis | fake_row).view(tm, block_m, tn, block_n).all(3).all(1)
    mixed = any_vis & ~all_vis
    return int(any_vis.sum()), int(mixed.sum())


def count_tiles(fn, problem, n, *, D=16, is_causal=True, window_size=None, sink_size=None, seed=0):
    """Run fn once on [1, 1, n, D] inputs under the probe; return (visits, masked, probe)."""
    case = Case("algorithm", 1, 1, 1, n, D, is_causal=is_causal, window_size=window_size,
                sink_size=sink_size, seed=seed)
    q, k, v = case.make_inputs()
    kwargs = case.mask_kwargs()
    probe = InterpreterProbe(watch=k)

    def run():
        with probe:
            return fn(q, k, v, **kwargs)
    out = record.call(run, (q, k, v), kwargs, observers=[probe])
    if probe.memory_error:
        raise CheckFailed(Failure(probe.memory_error, check=f"Problem {problem}"))
    if problems.get(problem).returns_lse:
        out = out[0]
    atol, rtol = TOLERANCES[q.dtype]
    if not torch.allclose(out.double(), reference_attention(q, k, v, **case.mask_kwargs()), atol=atol, rtol=rtol):
        raise CheckFailed(Failure(f"the output is wrong at N={n} {case.mask_kwargs()}: run "
                                  f"autograder.check({problem}, fn) first.", check=f"Problem {problem}"))
    return probe.counts.key_loads, probe.counts.selects_2d, probe


# ---------------------------------------------------------------------------------------------
# the public check

# fixed-window shapes: W well below N so the N * W and N^2 laws are far apart
_WINDOW_N = 256
_WINDOW_W = 16
_SINKS = 4


def check_tile_skipping(problem: int, fn, verbose: bool = True) -> SkippingReport:
    """Check that `fn` skips the key tiles its mask rules out (Problems 4, 6, 7); return a SkippingReport.

    Problems 6 and 7: raises TileSkippingFailed (an AssertionError) when the key-tile visits at a
    fixed window W grow faster than N (N -> 2N should about double them; visiting every causal
    tile quadruples them). Problem 4: the report's `warnings` say when the kernel masks tiles that
    need no mask (correct, but slower: a compare and a select per score on every tile)."""
    graded = problems.numbers(tile_skipping="forward")
    if problem not in graded:
        raise ValueError(f"tile skipping is graded for Problems {', '.join(map(str, graded))}, not {problem!r}; "
                         f"call check_tile_skipping(problem, fn)")
    _correctness_gate(fn, problem)
    if not device.interpreted():
        return _verdict(_gpu_scaling(fn, problem), verbose)
    cfg = attention_tiles(16, device.DTYPE, True)
    bm, bn = cfg["BLOCK_M"], cfg["BLOCK_N"]
    spec = problems.get(problem)
    if not spec.window:
        n = 100
        mask = dict(is_causal=True)
        visits, masked, _ = count_tiles(fn, problem, n, **mask)
        need_v, need_m = needed_tiles(n, bm, bn, **mask)
        report = SkippingReport(
            problem, "cpu", (n,), mask, block=(bm, bn),
            visits={"key": (visits,), "masked": (masked,)}, expected={"key": (need_v,), "masked": (need_m,)},
            message=f"Problem {problem}, N={n} {mask}: {visits} key-tile visits ({need_v} needed), "
                    f"{masked} masked tiles ({need_m} need a mask)")
        if visits > need_v:
            report.warnings.append(
                f"your kernel visits {visits} key tiles where {need_v} hold a visible key "
                f"(BLOCK_M={bm}, BLOCK_N={bn}): tiles right of the diagonal are loaded and masked away. "
                f"Stop the diagonal phase at min(start_m + BLOCK_M, N).")
        if masked > need_m:
            report.warnings.append(
                f"your kernel masks {masked} score tiles where only {need_m} need a mask (the ones that "
                f"cross the diagonal or stick out past N): the tiles left of the diagonal are visible to "
                f"every row, run them without tl.where (phase 1, MASK = NO_MASK). Correct, but slower.")
        report.passed = not report.warnings
        return _verdict(report, verbose)

    mask = dict(is_causal=True, window_size=_WINDOW_W, sink_size=_SINKS if spec.sinks else None)
    sizes = (_WINDOW_N, 2 * _WINDOW_N)
    counts = [count_tiles(fn, problem, n, **mask)[:2] for n in sizes]
    needed = [needed_tiles(n, bm, bn, **mask) for n in sizes]
    report = SkippingReport(
        problem, "cpu", sizes, mask, block=(bm, bn),
        visits={"key": tuple(c[0] for c in counts), "masked": tuple(c[1] for c in counts)},
        expected={"key": tuple(x[0] for x in needed), "masked": tuple(x[1] for x in needed)})
    report.ratio = growth = report.growth("key")
    (small, big), big_needed = report.visits["key"], report.expected["key"][1]
    causal_v = needed_tiles(2 * _WINDOW_N, bm, bn, is_causal=True)[0]
    # linear work doubles; quadratic quadruples. 2.6 leaves room for the ends of the sequence.
    report.passed = not (growth > 2.6 or big > 2 * big_needed + 4)
    if not report.passed:
        what = "window and the sink tiles" if spec.sinks else "window"
        report.message = (
            f"Problem {problem}: the output is right, but your kernel visits key tiles its mask rules out. "
            f"With W={_WINDOW_W}" + (f", S={_SINKS}" if spec.sinks else "") +
            f": {small} key-tile visits at N={sizes[0]}, {big} at N={sizes[1]} (x{growth:.1f}); "
            f"a sliding-window kernel does about {big_needed} at N={sizes[1]} and doubles with N "
            f"(O(N * W)), plain causal attention does {causal_v} and quadruples (O(N^2)). Start each "
            f"program's loop at the first key tile the {what} of its first row reaches "
            f"(lo = max(start_m - (W - 1), 0) // BLOCK_N * BLOCK_N), do not loop from key 0 and mask.")
    else:
        report.message = (f"Problem {problem}: key-tile visits grow x{growth:.1f} from N={sizes[0]} to N={sizes[1]} "
                          f"at W={_WINDOW_W}: O(N * W), tiles outside the window are skipped.")
    return _verdict(report, verbose)


def _verdict(report: SkippingReport, verbose: bool) -> SkippingReport:
    """Skipping under a window (Problems 6, 7, 9) is graded: a failing report is raised. Causal
    skipping (Problem 4) only warns."""
    if not report.passed and problems.get(report.problem).window:
        raise TileSkippingFailed(report)
    if verbose:
        print(report)
    return report


def _timed(fn, q, k, v, kwargs) -> float:
    """Milliseconds per call (bench.gpu_ms: the kernels, not the CPU's launch overhead, which would flatten
    the growth of a small case). Recorded as one number when grading: a replay has nothing to time."""
    key = ("gpu_ms", tuple(q.shape), tuple(k.shape), str(q.dtype))      # the inputs are seeded: shapes say which
    return record.call(lambda: gpu_ms(lambda: fn(q, k, v, **kwargs)), key, kwargs)


def _correctness_gate(fn, problem):
    """Tile counts grade a correct kernel only: check `fn` first on a few cases with the mask the
    counts use, grouped-query heads included from Problem 5 on (the counts run one head, where
    any head mapping looks right). A release stub raises NotImplementedYet (one line), a wrong
    kernel the check's own message."""
    spec = problems.get(problem)
    mask = dict(is_causal=True)
    if spec.window:
        mask.update(window_size=_WINDOW_W, sink_size=_SINKS if spec.sinks else None)
    heads = [(4, 2), (6, 1)] if spec.gqa else [(2, 2)]
    cases = [Case("skipping", 2, hq, hkv, 70, 16, seed=90 + i, **mask) for i, (hq, hkv) in enumerate(heads)]
    try:
        check(problem, fn, cases=cases, verbose=False)
    except NotImplementedYet:
        raise
    except CheckFailed as exc:
        raise CheckFailed(Failure(f"tile skipping is graded on a correct kernel, and this one is not: fix it with "
                                  f"autograder.check({problem}, flash_attention_forward) first.",
                                  check=f"Problem {problem}", detail=str(exc))) from None


def _gpu_scaling(fn, problem) -> SkippingReport:
    """GPU tier: time at N and 2N with a fixed window; work O(N * W) means about x2 (x4 for O(N^2)).

    For Problem 4 the time is compared with the number of attended pairs: a causal kernel that
    skips the tiles right of the diagonal runs in about half the time of the non-causal one."""
    spec = problems.get(problem)
    if not spec.window:
        B, H, N, D = 4, 16, 4096, 128
        times = {}
        for causal in (False, True):
            q, k, v = Case("algorithm", B, H, H, N, D, is_causal=causal).make_inputs()
            times[causal] = _timed(fn, q, k, v, dict(is_causal=causal))
        ratio = times[True] / times[False]
        report = SkippingReport(problem, "gpu", (N,), dict(is_causal=True), ratio=ratio,
                                times_ms={"non-causal": (times[False],), "causal": (times[True],)},
                                message=f"Problem 4: causal / non-causal time = {ratio:.2f} at N={N}")
        if ratio > 0.8:
            report.warnings.append(
                f"causal attention takes {ratio:.2f}x the time of non-causal attention at N={N}; it attends "
                f"about half the pairs, so a kernel that skips the tiles right of the diagonal takes about "
                f"0.5-0.65x. Check that the diagonal phase stops at min(start_m + BLOCK_M, N) and that the "
                f"tiles left of the diagonal run without a mask.")
        report.passed = not report.warnings
        return report
    W = 1024
    sizes = (8192, 16384)
    kw = dict(is_causal=True, window_size=W, sink_size=4 if spec.sinks else None)
    mask = Case("x", 1, 1, 1, 1, 16, **kw).mask_kwargs()
    times = []
    for n in sizes:
        q, k, v = Case("algorithm", 2, 16, 16, n, 128, **kw).make_inputs()
        times.append(_timed(fn, q, k, v, mask))
    growth = times[1] / times[0]
    report = SkippingReport(problem, "gpu", sizes, mask, ratio=growth,
                            times_ms={"forward": tuple(times)}, passed=growth <= 3.0)
    if not report.passed:
        report.message = (
            f"Problem {problem}: time grows x{growth:.1f} from N=8192 to N=16384 at W={W}: the work is "
            f"O(N^2), not O(N * W) (about x2). Start each program's loop at the first key tile its window reaches.")
    else:
        report.message = f"Problem {problem}: time x{growth:.2f} from N=8192 to N=16384 at W={W} (O(N * W): about x2)."
    return report


# ---------------------------------------------------------------------------------------------
# the backward (Problem 9): both loops must skip what the window hides


def _count_backward_loads(problem, fn, n, watch_name):
    """Run fn forward + backward on [1, 1, n, 16] with the window and sinks of the tile checks;
    return the 2-D loads of q (watch_name "q") or k ("k") during both passes."""
    case = Case("algorithm", 1, 1, 1, n, 16, is_causal=True, window_size=_WINDOW_W, sink_size=_SINKS)
    q, k, v, do, _ = make_inputs(case, problem)
    for t in (q, k, v):
        t.requires_grad_()
    probe = InterpreterProbe(watch=q if watch_name == "q" else k)
    kwargs = case.mask_kwargs()

    def run():
        with probe:
            return tuple(torch.autograd.grad(fn(q, k, v, **kwargs), (q, k, v), do))
    grads = record.call(run, (q, k, v, do, watch_name), kwargs, observers=[probe])
    if probe.memory_error:
        raise CheckFailed(Failure(probe.memory_error, check=f"Problem {problem}"))
    ref = reference_grads(q, k, v, do, case)
    if not all(_close(g.double(), ref[name], GRAD_TOLERANCES[q.dtype]) for g, name in zip(grads, ("dq", "dk", "dv"))):
        raise CheckFailed(Failure(f"the gradients are wrong at N={n} {case.mask_kwargs()}: run "
                                  f"autograder.check_backward({problem}, fn) first.", check=f"Problem {problem}"))
    return probe.counts.key_loads


def check_backward_tile_skipping(problem: int, fn, verbose: bool = True) -> SkippingReport:
    """Problem 9: fail (TileSkippingFailed) when the query tiles the dK/dV kernel visits (loads of q)
    or the key tiles the forward and the dQ kernel visit (loads of k) grow like N^2 at a fixed
    window; return a SkippingReport with the loads ("query", "key") at N and 2N."""
    graded = problems.numbers(tile_skipping="backward")
    if problem not in graded:
        raise ValueError(f"backward tile skipping is graded for Problem {', '.join(map(str, graded))}, not "
                         f"{problem!r}; call check_backward_tile_skipping(problem, fn)")
    if not device.interpreted():
        return _verdict(_gpu_backward_scaling(problem, fn), verbose)
    sizes = (_WINDOW_N, 2 * _WINDOW_N)
    mask = dict(is_causal=True, window_size=_WINDOW_W, sink_size=_SINKS)
    visits = {}
    from ..progress import tqdm_class
    runs = [(name, watch, m) for name, watch in (("query", "q"), ("key", "k")) for m in sizes]
    try:
        # four interpreted forward + backward passes (~10 s each on 2 cores): a bar says where it is
        with tqdm_class()(runs, desc=f"Problem {problem}: counting tile loads", disable=not verbose,
                          leave=False) as bar:
            for name, watch, m in bar:
                bar.set_postfix_str(f"{name} tiles at N={m}", refresh=True)
                visits[name] = visits.get(name, ()) + (_count_backward_loads(problem, fn, m, watch),)
    except Exception as exc:   # noqa: BLE001 - the release stub raises inside the kernel
        if not_implemented(exc):
            raise NotImplementedYet.of(f"Problem {problem}") from None
        raise
    report = SkippingReport(problem, "cpu", sizes, mask, visits=visits)
    growth = {name: report.growth(name) for name in visits}
    report.ratio = max(growth.values())
    where = {"query": ("the dK/dV kernel's loop over query tiles",
                       "a key tile is seen by the queries [start_n, start_n + BLOCK_N + W - 1) (to N only when it "
                       "holds sinks): stop the window phases at hi, not at N"),
             "key": ("the dQ kernel's (or the forward's) loop over key tiles",
                     "start at lo = max(start_m - (W - 1), 0) // BLOCK_N * BLOCK_N, as in Problem 7")}
    failing = [name for name in visits if growth[name] > 2.6]
    report.passed = not failing
    if failing:
        name = failing[0]
        (small, big), (loop, fix) = visits[name], where[name]
        report.message = (
            f"Problem {problem}: the gradients are right, but {loop} visits tiles the mask rules out. With "
            f"W={_WINDOW_W}, S={_SINKS}: {small} {name}-tile loads at N={sizes[0]}, {big} at N={sizes[1]} "
            f"(x{growth[name]:.1f}); work O(N * W) doubles with N, O(N^2) quadruples. {fix}.")
    else:
        report.message = (f"Problem {problem}: from N={sizes[0]} to N={sizes[1]} at W={_WINDOW_W}, S={_SINKS}, query-tile "
                          f"loads grow x{growth['query']:.1f} and key-tile loads x{growth['key']:.1f}: O(N * W) in "
                          f"both loops.")
    return _verdict(report, verbose)


def _gpu_backward_scaling(problem, fn) -> SkippingReport:
    W = 1024
    sizes = (8192, 16384)
    times = []
    for n in sizes:
        case = Case("algorithm", 1, 16, 16, n, 128, is_causal=True, window_size=W, sink_size=4)
        q, k, v = (t.requires_grad_() for t in case.make_inputs())

        def timed():
            out = fn(q, k, v, **case.mask_kwargs())
            do = torch.randn_like(out)
            return gpu_ms(lambda: torch.autograd.grad(out, (q, k, v), do, retain_graph=True))
        times.append(record.call(timed, ("backward gpu_ms", n)))     # a replay has nothing to time
    growth = times[1] / times[0]
    report = SkippingReport(problem, "gpu", sizes, case.mask_kwargs(), ratio=growth,
                            times_ms={"backward": tuple(times)}, passed=growth <= 3.0)
    if not report.passed:
        report.message = (f"Problem {problem}: the backward's time grows x{growth:.1f} from N=8192 to N=16384 at W={W}: "
                          f"O(N^2), not O(N * W) (about x2). Both backward loops must skip the tiles outside "
                          f"the window and the sinks.")
    else:
        report.message = f"Problem {problem}: backward time x{growth:.2f} from N=8192 to N=16384 at W={W} (O(N * W): about x2)."
    return report
