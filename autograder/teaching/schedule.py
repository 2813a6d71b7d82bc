"""Which (query tile, key tile) pairs the course's reference kernel visits, and in which phase.

One program of the kernel owns query rows [start_m, start_m + BLOCK_M) and walks key tiles of
BLOCK_N keys in up to four loops ("phases"). Each phase either applies a mask or trusts that
every pair of its tiles is visible; the bounds below are the kernel's, ported line by line, so the
pictures and the tests describe the kernel students write, not an idealised one.

    non-causal:  "full"         key tiles [0, N // BLOCK_N * BLOCK_N)        no mask
                 "tail"         the last partial key tile [.., N)            mask j < N
    causal:      "sinks"        [0, sink_hi): sink tiles left of the window  mask j < S
                 "window edge"  [lo, full_lo): the window's ragged left edge mask causal & (window | sinks)
                 "unmasked"     [full_lo, full_hi): seen by every row        no mask
                 "diagonal"     [full_hi, hi): the diagonal tile(s)          mask causal & (window | sinks)

Every key tile a query tile must read is visited exactly once; tiles no phase visits are skipped,
which is where causal, window and sink attention save their time.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch

from ..spec.masks import check_mask_args

NONCAUSAL_PHASES = ("full", "tail")
CAUSAL_PHASES = ("sinks", "window edge", "unmasked", "diagonal")
# one id (and one color in autograder.plots) per phase name across all problems; 0 = skipped
PHASE_IDS = {"full": 1, "tail": 2, "sinks": 3, "window edge": 4, "unmasked": 5, "diagonal": 6}
PHASE_NAMES = {v: k for k, v in PHASE_IDS.items()}
MASKED = {"full": False, "tail": True, "sinks": True, "window edge": True, "unmasked": False, "diagonal": True}


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _check(n, block_m, block_n, is_causal, window_size, sink_size):
    check_mask_args(is_causal, window_size, sink_size)
    for name, value in (("n", n), ("block_m", block_m), ("block_n", block_n)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def key_ranges(n: int, block_m: int, block_n: int, is_causal: bool = False,
               window_size: Optional[int] = None, sink_size: Optional[int] = None) -> List[Dict[str, Tuple[int, int]]]:
    """Per query tile, the key range [start, stop) each phase loops over with
    `for start_n in range(start, stop, BLOCK_N)` - the kernel's lo / full_lo / full_hi / sink_hi / hi."""
    _check(n, block_m, block_n, is_causal, window_size, sink_size)
    out = []
    for pid_m in range(_cdiv(n, block_m)):
        start_m = pid_m * block_m
        if not is_causal:
            n_full = n // block_n * block_n
            out.append({"full": (0, n_full), "tail": (n_full, n)})
            continue
        # the wrapper passes WINDOW = window_size or N and SINKS = sink_size or 0
        window = window_size or n
        sinks = sink_size or 0
        last_m = start_m + block_m - 1
        hi = min(start_m + block_m, n)
        lo = max(start_m - (window - 1), 0) // block_n * block_n
        full_lo = max(_cdiv(max(last_m - (window - 1), 0), block_n) * block_n, lo)
        full_hi = max((start_m + 1) // block_n * block_n, full_lo)
        sink_hi = min(_cdiv(sinks, block_n) * block_n, lo)
        out.append({"sinks": (0, sink_hi), "window edge": (lo, full_lo),
                    "unmasked": (full_lo, full_hi), "diagonal": (full_hi, hi)})
    return out


def phases(n: int, block_m: int, block_n: int, is_causal: bool = False,
           window_size: Optional[int] = None, sink_size: Optional[int] = None) -> Dict[str, List[Tuple[int, int]]]:
    """{phase name: [(query tile, key tile), ...]} in the kernel's loop order.

    Faithful to the kernel: when a loop's range reaches past the last key (the window-edge loop
    of a ragged last query tile can), the key tile index is >= cdiv(n, block_n); those visits
    load nothing (the loads are masked j < N) and `visits` leaves them out."""
    result = {name: [] for name in (CAUSAL_PHASES if is_causal else NONCAUSAL_PHASES)}
    for pid_m, ranges in enumerate(key_ranges(n, block_m, block_n, is_causal, window_size, sink_size)):
        for name, (start, stop) in ranges.items():
            result[name].extend((pid_m, start_n // block_n) for start_n in range(start, stop, block_n))
    return result


def visits(n: int, block_m: int, block_n: int, is_causal: bool = False,
           window_size: Optional[int] = None, sink_size: Optional[int] = None) -> torch.Tensor:
    """Int tensor [cdiv(n, block_m), cdiv(n, block_n)]: the PHASE_IDS id of the phase that visits
    each tile, 0 where the kernel skips it."""
    _check(n, block_m, block_n, is_causal, window_size, sink_size)
    tm, tn = _cdiv(n, block_m), _cdiv(n, block_n)
    grid = torch.zeros(tm, tn, dtype=torch.int64)
    for name, pairs in phases(n, block_m, block_n, is_causal, window_size, sink_size).items():
        for m, j in pairs:
            if j < tn:
                grid[m, j] = PHASE_IDS[name]
    return grid


def counts(n: int, block_m: int, block_n: int, is_causal: bool = False,
           window_size: Optional[int] = None, sink_size: Optional[int] = None) -> Dict[str, int]:
    """{phase name: number of tile visits}, plus "skipped": tiles of the grid no phase visits."""
    ph = phases(n, block_m, block_n, is_causal, window_size, sink_size)
    result = {name: len(pairs) for name, pairs in ph.items()}
    result["skipped"] = int((visits(n, block_m, block_n, is_causal, window_size, sink_size) == 0).sum())
    return result


# ---------------------------------------------------------------------------------------------
# the backward's dK/dV kernel: one program owns a key tile and walks the query tiles that see it

BACKWARD_CAUSAL_PHASES = ("diagonal", "unmasked", "window edge", "sinks")


def query_ranges(n: int, block_m: int, block_n: int, is_causal: bool = False,
                 window_size: Optional[int] = None, sink_size: Optional[int] = None) -> List[Dict[str, Tuple[int, int]]]:
    """Per key tile, the query range [start, stop) each phase of the dK/dV kernel loops over with
    `for start_m in range(start, stop, BLOCK_M)`: Problem 9's `_dkdv_ranges`, the window transposed
    (a key j is seen by the queries i in [j, j + W - 1], and by every later query when j < S).

        causal:      "diagonal"     [start_n, start_n + BLOCK_N)  mask causal & (window | sinks)
                     "unmasked"     [start_n + BLOCK_N, full_hi)  no mask
                     "window edge"  [full_hi, hi)                 mask causal & (window | sinks)
                     "sinks"        [hi, sink_hi)                 mask j < S (sink_hi = N for a tile holding sinks)
        non-causal:  "full"         [0, N)                        no mask (rows past N load as zeros)
    """
    _check(n, block_m, block_n, is_causal, window_size, sink_size)
    if block_n % block_m:
        raise ValueError(f"the dK/dV kernel steps BLOCK_M={block_m} query rows inside a BLOCK_N={block_n} key "
                         f"tile: BLOCK_N must be a multiple of BLOCK_M")
    window, sinks = window_size or n, sink_size or 0
    out = []
    for start_n in range(0, n, block_n):
        if not is_causal:
            out.append({"full": (0, n)})
            continue
        hi = min(_cdiv(start_n + block_n + window - 1, block_m) * block_m, n)
        full_hi = min(max((start_n + window) // block_m * block_m, start_n + block_n), hi)
        sink_hi = n if start_n < sinks else hi
        out.append({"diagonal": (start_n, min(start_n + block_n, n)), "unmasked": (start_n + block_n, full_hi),
                    "window edge": (full_hi, hi), "sinks": (hi, sink_hi)})
    return out


def backward_phases(n: int, block_m: int, block_n: int, is_causal: bool = False,
                    window_size: Optional[int] = None, sink_size: Optional[int] = None) -> Dict[str, List[Tuple[int, int]]]:
    """{phase name: [(query tile, key tile), ...]} of the dK/dV kernel, key tile by key tile."""
    result = {name: [] for name in (BACKWARD_CAUSAL_PHASES if is_causal else ("full",))}
    for key_tile, ranges in enumerate(query_ranges(n, block_m, block_n, is_causal, window_size, sink_size)):
        for name, (start, stop) in ranges.items():
            result[name].extend((start_m // block_m, key_tile) for start_m in range(start, stop, block_m))
    return result


def backward_visits(n: int, block_m: int, block_n: int, is_causal: bool = False,
                    window_size: Optional[int] = None, sink_size: Optional[int] = None) -> torch.Tensor:
    """Int tensor [cdiv(n, block_m), cdiv(n, block_n)]: the PHASE_IDS id of the dK/dV phase that visits each
    (query tile, key tile), 0 where the kernel skips it."""
    grid = torch.zeros(_cdiv(n, block_m), _cdiv(n, block_n), dtype=torch.int64)
    for name, pairs in backward_phases(n, block_m, block_n, is_causal, window_size, sink_size).items():
        for m, t in pairs:
            grid[m, t] = PHASE_IDS[name]
    return grid
