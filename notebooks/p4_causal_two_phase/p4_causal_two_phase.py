# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Problem 4: causal FlashAttention in two phases
#
# A language model's query `i` may only look at keys `j <= i`: the causal mask. Half of the
# `N x N` score matrix is hidden, so a good causal kernel should take about half the time of the
# non-causal one. Masking every score and then computing it anyway saves nothing. In this problem
# you extend Problem 3's kernel so that it **skips** the key tiles a query tile cannot see, runs
# the tiles it fully sees **without any mask**, and pays for the mask only on the few tiles that
# cross the diagonal.
#
# **What you will learn**
#
# * how to classify (query tile, key tile) pairs as skipped, fully visible or partially visible,
#   and turn that into loop bounds;
# * the two-phase loop: off-diagonal tiles with no mask at all, then the diagonal tiles with the
#   causal (and bounds) mask, for any `BLOCK_M`, `BLOCK_N` and any `N`;
# * why the kernel runs the heaviest query tiles first.
#
# **What you write**: the causal mask of a diagonal tile, and the key range of each phase. The
# rest (Problem 3's loop and online softmax, the non-causal path) is given.
#
# **Points**: 10, in four graded cells (basic 3, ragged sequence lengths 3, memory layouts 2,
# head dims 2); each also runs hidden cases of the same kind.

# %% export=true
import autograder  # first: picks the GPU or the CPU tier (Triton interpreter) before any kernel is defined

import math

import torch
import triton
import triton.language as tl

from autograder.tiles import attention_tiles

# %% [markdown]
# ## The idea
#
# Program `pid_m` owns query rows `[start_m, start_m + BLOCK_M)` with `start_m = pid_m * BLOCK_M`.
# Row `i` sees keys `0 .. i`. Look at the key tiles from the point of view of this query tile:
#
# * a key tile that ends before the tile's **first** row, `start_m`, is visible to **every** row
#   of the tile: all its keys are `< start_m <= i`. No mask is needed, not even a bounds mask
#   (its keys are `< start_m < N`). These are the off-diagonal tiles, **phase 1**;
# * a key tile that starts after the tile's **last** row is visible to **no** row: skip it;
# * the tiles in between cross the diagonal: some pairs are visible, some are not. They need
#   the causal mask (and, for the last query tile, the bounds mask `j < N`). **Phase 2**.
#
# With `start_m` known, the bounds are two lines of integer arithmetic:
#
# ```
# phase 1 (no mask):        key tiles [0,       full_hi)   full_hi = start_m // BLOCK_N * BLOCK_N
# phase 2 (causal mask):    key tiles [full_hi, hi)        hi = min(start_m + BLOCK_M, N)
# skipped:                  key tiles [hi, N)
# ```
#
# `full_hi`, the end of the fully visible tiles, is the start of the key tile that holds key
# `start_m` (the first row's own key): every tile before it ends before `start_m`. `hi` is one past
# the last row of the tile (or `N`). (The later forward kernels keep these names: the unmasked key
# tiles of a query tile end at `full_hi`, the ones it visits at `hi`.)
# Nothing here assumes `BLOCK_M == BLOCK_N`: with the CPU tier's `BLOCK_M = 32`, `BLOCK_N = 16`
# (chosen on purpose), each query tile has **two** diagonal key tiles; on a GPU with
# `BLOCK_M = 128`, `BLOCK_N = 64`, also two. A kernel that assumes one diagonal tile per query
# tile passes on square tiles and fails here.
#
# The picture shows the schedule for `N = 96`. Each band of rows is one query tile, one program.
# Green tiles are phase 1 ("unmasked" in the legend), red ones phase 2 ("diagonal"); pale pairs
# inside a red tile are computed and then thrown away by the mask; white tiles are never loaded.
# Phase 2 costs about `cdiv(BLOCK_M, BLOCK_N)` masked tiles per query tile, phase 1 does the rest
# of the work mask-free, and the skipped triangle is the time causal attention saves.

# %%
from autograder.plots import show_tile_schedule

show_tile_schedule(96, 32, 16, is_causal=True)

# %% [markdown]
# **Why no NaN guard.** With masks, a row can see no key at all in a tile: its scores there are all
# `-inf`. If its running max were still `-inf`, the update would compute `exp2(-inf - (-inf))` =
# NaN. Here that cannot happen: the first tile a program visits (tile 0 in phase 1, or the first
# diagonal tile) contains key `full_hi <= start_m <= i`, visible to every row. So `m_i` is finite
# after the first tile and a later all-masked row just gets `p = 0`, `alpha = 1`. (Sliding
# windows in Problem 6 break this argument; you will need the guard there.)
#
# **Heavy tiles first.** Query tile `pid_m` visits about `pid_m + 1` key tiles: the last tiles of
# a sequence cost many times more than the first. A GPU runs a launch in waves, starting
# programs roughly in increasing program id as earlier ones finish. If the heaviest programs
# start last, the launch ends with a few long programs on an otherwise idle GPU. Reversing the
# order within each head (`pid_m = n_m - 1 - program_id % n_m`) starts the heavy tiles first and leaves the
# light ones to fill the gaps at the end: the classic "longest job first" rule for scheduling
# jobs on parallel machines. It costs one subtraction and changes no result. Measured with this
# kernel on an H100 (bf16, 16 heads, D = 128): at B = 1, N = 16384, where the heaviest program
# visits 256 key tiles and the lightest 2, 2.2 ms instead of 2.7 ms; at B = 8, N = 2048, 10%
# faster; at B = 2, N = 8192, no difference.
#
# **Non-causal calls still work.** `is_causal=False` runs Problem 3's path (full tiles, then the
# masked tail). Later problems build on this kernel, and the checks call both.

# %% [markdown]
# ## The kernel
#
# `_attn_fwd_tiles` is Problem 3's loop, generalised with a `MASK` mode (a `tl.constexpr`, so each
# mode compiles to its own loop and `NO_MASK` contains no mask code at all):
#
# * `NO_MASK`: full tiles, every pair visible (non-causal full tiles, causal phase 1);
# * `BOUNDS`: the non-causal tail tile, key `j` visible when `j < N`;
# * `CAUSAL`: diagonal tiles, key `j` visible from row `i` when `j <= i` and `j < N`.
#
# **Your part 1: the causal mask.** Set `visible`, a `[BLOCK_M, BLOCK_N]` boolean: row `offs_m[r]`
# sees key `offs_n[c]`. Broadcasting `offs_m[:, None]` against `offs_n[None, :]` builds it.
# (For rows `< N`, `j <= i` already implies `j < N`; keep `in_bounds` anyway so the mode is right on
# its own, for every row it is given.)

# %% solution="p4_mask" export=true
NO_MASK = tl.constexpr(0)   # every pair of the tile is visible
BOUNDS = tl.constexpr(1)    # key j visible when j < N
CAUSAL = tl.constexpr(2)    # key j visible from row i when j <= i and j < N


@triton.jit
def _attn_fwd_tiles(acc, l_i, m_i, q,
                    K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                    offs_m, offs_d, lo, hi, N, qk_scale,
                    MASK: tl.constexpr, BLOCK_N: tl.constexpr):
    """Fold key tiles [lo, hi) into the running state (acc, l_i, m_i) of one query tile."""
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)          # aligned: lets the compiler vectorise loads
        offs_n = start_n + tl.arange(0, BLOCK_N)             # [BLOCK_N] key indices of this tile
        k_ptrs = K_ptr + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd   # [BLOCK_N, HEAD_DIM]
        v_ptrs = V_ptr + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd   # [BLOCK_N, HEAD_DIM]
        in_bounds = offs_n < N
        if MASK == NO_MASK:     # a full tile: no mask, the fastest load there is
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        else:                   # a tile may stick out past N: keys there load as 0, the mask below hides them
            k = tl.load(k_ptrs, mask=in_bounds[:, None], other=0.0)
            v = tl.load(v_ptrs, mask=in_bounds[:, None], other=0.0)
        # 16-bit operands straight into the tensor cores, fp32 accumulation
        qk = tl.dot(q, tl.trans(k))                          # [BLOCK_M, BLOCK_N] fp32, unscaled
        if MASK == BOUNDS:
            qk = tl.where(in_bounds[None, :], qk, float("-inf"))
        elif MASK == CAUSAL:
            ### BEGIN SOLUTION
            visible = (offs_n[None, :] <= offs_m[:, None]) & in_bounds[None, :]
            ### END SOLUTION
            qk = tl.where(visible, qk, float("-inf"))
        # the online softmax update of Problem 3
        m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)     # new running max, log2 units
        p = tl.math.exp2(qk * qk_scale - m_ij[:, None])      # [BLOCK_M, BLOCK_N], in [0, 1]
        alpha = tl.math.exp2(m_i - m_ij)                     # rescale of everything seen so far
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc)                  # acc += p @ v, fp32
        m_i = m_ij
    return acc, l_i, m_i


# %% [markdown]
# **Your part 2: the phases.** In `_flash_attention_fwd`, compute `full_hi` and `hi` (see
# the table in "The idea"): phase 1 runs key tiles `[0, full_hi)` with `NO_MASK`, phase 2 runs
# `[full_hi, hi)` with `CAUSAL`. Both loops step by `BLOCK_N` from their `lo`, so `full_hi`
# must be a multiple of `BLOCK_N`; `hi` need not be (the loop stops at the first tile that
# starts at or past it). `tl.minimum` takes the smaller of two values.

# %% solution="p4_kernel" export=true
# Head count, window and sink sizes change from call to call without changing the code: one
# compiled kernel serves them all (Triton would compile a variant per value class, == 1 or
# % 16 == 0, which costs grading time). N and the strides stay specialised: measured on an H100,
# knowing N % 16 == 0 is worth 8-12%, and aligned strides are what allow vector loads.
@triton.jit(do_not_specialize=["N_HEADS"])
def _flash_attention_fwd(
    Q_ptr, K_ptr, V_ptr, O_ptr,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    N, N_HEADS, qk_scale,
    IS_CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    n_m = tl.cdiv(N, BLOCK_M)
    # which query tile, the fast index; causal: late tiles visit the most key tiles, so they go first
    pid_m = n_m - 1 - tl.program_id(0) % n_m if IS_CAUSAL else tl.program_id(0) % n_m
    pid_bh = tl.program_id(0) // n_m          # which (batch, head)
    b = pid_bh // N_HEADS
    h = pid_bh % N_HEADS
    Q_ptr += b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    K_ptr += b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    V_ptr += b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh
    O_ptr += b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh

    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)             # [BLOCK_M] query rows of this program
    offs_d = tl.arange(0, HEAD_DIM)                      # [HEAD_DIM]
    # the query tile: loaded once, kept on chip for the whole loop; rows past N load as 0
    q_ptrs = Q_ptr + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=offs_m[:, None] < N, other=0.0)   # [BLOCK_M, HEAD_DIM], bf16/fp16

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)   # running max, log2 units
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)                 # running sum of exp2
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)       # running sum of p @ v

    if IS_CAUSAL:
        ### BEGIN SOLUTION
        full_hi = start_m // BLOCK_N * BLOCK_N           # key tile holding key start_m: first one to mask
        hi = tl.minimum(start_m + BLOCK_M, N)            # one past the last key any row here may see
        ### END SOLUTION
        # phase 1: key tiles left of the diagonal, visible to every row: no mask at all
        acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                                        offs_m, offs_d, 0, full_hi, N, qk_scale, NO_MASK, BLOCK_N)
        # phase 2: key tiles crossing the diagonal: causal + bounds mask; tiles past hi are skipped
        acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                                        offs_m, offs_d, full_hi, hi, N, qk_scale, CAUSAL, BLOCK_N)
    else:
        # Problem 3: full key tiles with no mask, then the tail tile with the bounds mask
        n_full = N // BLOCK_N * BLOCK_N
        acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                                        offs_m, offs_d, 0, n_full, N, qk_scale, NO_MASK, BLOCK_N)
        acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                                        offs_m, offs_d, n_full, N, N, qk_scale, BOUNDS, BLOCK_N)

    acc = acc / l_i[:, None]                  # the one division, after the last tile
    o_ptrs = O_ptr + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od
    tl.store(o_ptrs, acc.to(O_ptr.dtype.element_ty), mask=offs_m[:, None] < N)


# %% [markdown]
# ## The wrapper
#
# Given, and the same as Problem 3's except that it passes `IS_CAUSAL` (a `tl.constexpr`: the
# causal and the non-causal kernels are compiled separately, neither carries the other's code) and
# asks the tile table for causal tiles. The kernel itself works out the phases for whatever
# `BLOCK_M`, `BLOCK_N` and `N` it gets, so the wrapper needs no special case for ragged `N` or
# unequal tiles. Sliding windows (Problem 6), sinks (Problem 7) and grouped-query attention
# (Problem 5) are refused with a `ValueError` that says where they come.

# %% export=true
LOG2E = 1.4426950408889634   # log2(e): exp(x) = exp2(x * LOG2E)


def flash_attention_forward(q, k, v, is_causal=False, window_size=None, sink_size=None):
    """softmax(q k^T / sqrt(D) + causal mask) v for q, k, v of shape [B, H, N, D] (any strides)."""
    B, H, H_kv, N, D = autograder.validate_attention_inputs(q, k, v, is_causal, window_size, sink_size)
    if window_size is not None or sink_size is not None:
        raise ValueError("this is Problem 4's kernel: sliding windows are Problem 6, attention sinks Problem 7")
    if H_kv != H:
        raise ValueError(f"q has {H} heads and k/v have {H_kv}: grouped-query attention is Problem 5")
    o = torch.empty_like(q)
    cfg = attention_tiles(D, q.dtype, causal=is_causal)
    grid = (triton.cdiv(N, cfg["BLOCK_M"]) * B * H,)
    qk_scale = 1.0 / math.sqrt(D) * LOG2E
    _flash_attention_fwd[grid](
        q, k, v, o,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        N, H, qk_scale,
        IS_CAUSAL=is_causal, HEAD_DIM=D, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return o


# %% [markdown]
# ## Try it
#
# Not graded: one causal case next to the naive PyTorch attention, with a picture of where the
# output is wrong, if anywhere (one panel per head; rows are queries, columns the head dim). A
# mistake in the phase bounds shows up as bands of wrong rows, one band per query tile.

# %%
# prints max |error| and, when some rows are wrong, shows where (one panel per head)
out = autograder.try_it(flash_attention_forward,
                        autograder.Case("try", B=1, Hq=2, Hkv=2, N=70, D=32, seed=0, is_causal=True))

# %% [markdown]
# ## Checks
#
# One graded cell per family of cases. All visible cases are causal; the basic cell also checks
# that `is_causal=False` still gives Problem 3's answer.
#
# **Basic (3 points)**

# %% tests="p4_basic" points=3
autograder.check(4, flash_attention_forward, family="basic")
autograder.check(4, flash_attention_forward, cases=[              # the non-causal path still works
    autograder.Case("full", 1, 2, 2, 50, 16, seed=41, is_causal=False),
])
### BEGIN HIDDEN TESTS
_f32 = torch.float32 if autograder.TIER == "cpu" else None   # a GPU runs fp32 tl.dot as TF32: 16-bit only
_cases = [
    autograder.Case("basic", 2, 3, 3, 64, 32, seed=141, is_causal=True),                 # N a multiple of both tiles
    autograder.Case("basic", 1, 2, 2, 96, 16, dtype=_f32, seed=142, is_causal=True),
    autograder.Case("basic", 1, 1, 1, 32, 16, seed=143, spread=4.0, is_causal=True),     # one query tile
    autograder.Case("full", 1, 1, 1, 45, 32, seed=144, spread=4.0, is_causal=False),
    autograder.Case("basic", 1, 2, 2, 70, 16, seed=145, low_score=250.0, is_causal=True),  # 0/0 with m_i = 0
]
if autograder.TIER == "gpu":   # sizes around multiples of the GPU tiles (BLOCK_M = 128, BLOCK_N = 64)
    _cases += [
        autograder.Case("basic", 2, 4, 4, 1024, 64, seed=401, is_causal=True),
        autograder.Case("basic", 1, 2, 2, 2048, 128, seed=402, spread=4.0, is_causal=True),
    ]
autograder.check(4, flash_attention_forward, cases=_cases)
for _kw in (dict(window_size=8), dict(sink_size=2)):     # windows and sinks are later problems
    try:
        flash_attention_forward(*autograder.Case("basic", 1, 1, 1, 16, 16).make_inputs(), is_causal=True, **_kw)
    except ValueError:
        pass
    else:
        raise AssertionError(f"flash_attention_forward(..., {_kw}) must raise ValueError (Problems 6, 7)")
### END HIDDEN TESTS

# %% [markdown]
# **Ragged sequence lengths (3 points)**: `N` not a multiple of any tile (the last query tile is
# short and its diagonal tiles are cut by `N`), smaller than a tile, one token, peaky rows.

# %% tests="p4_ragged" points=3
autograder.check(4, flash_attention_forward, family="ragged")
### BEGIN HIDDEN TESTS
_f32 = torch.float32 if autograder.TIER == "cpu" else None   # a GPU runs fp32 tl.dot as TF32: 16-bit only
_cases = [
    autograder.Case("ragged", 1, 2, 2, 17, 16, seed=151, is_causal=True),
    autograder.Case("ragged", 2, 1, 1, 31, 32, seed=152, is_causal=True),
    autograder.Case("ragged", 1, 1, 1, 33, 16, seed=153, spread=4.0, is_causal=True),    # 1-row last query tile
    autograder.Case("ragged", 1, 2, 2, 2, 16, dtype=_f32, seed=154, is_causal=True),
    autograder.Case("ragged", 1, 1, 1, 111, 16, seed=155, spread=4.0, is_causal=True),
    autograder.Case("full", 1, 1, 1, 77, 16, seed=156, is_causal=False),
]
if autograder.TIER == "gpu":   # sizes around multiples of the GPU tiles (BLOCK_M = 128, BLOCK_N = 64)
    _cases += [
        autograder.Case("ragged", 1, 2, 2, 129, 64, seed=411, is_causal=True),
        autograder.Case("ragged", 2, 1, 1, 63, 128, seed=412, is_causal=True),
        autograder.Case("ragged", 1, 2, 2, 1025, 64, seed=413, spread=4.0, is_causal=True),
    ]
autograder.check(4, flash_attention_forward, cases=_cases)
### END HIDDEN TESTS

# %% [markdown]
# **Memory layouts (2 points)**: transposed `[B, N, H, D]` views and a head dim sliced out of a
# wider tensor.

# %% tests="p4_layout" points=2
autograder.check(4, flash_attention_forward, family="layout")
### BEGIN HIDDEN TESTS
_f32 = torch.float32 if autograder.TIER == "cpu" else None   # a GPU runs fp32 tl.dot as TF32: 16-bit only
_cases = [
    autograder.Case("layout", 1, 3, 3, 45, 32, layout="bnhd", seed=161, is_causal=True),
    autograder.Case("layout", 2, 1, 1, 20, 16, layout="padded", dtype=_f32, seed=162, is_causal=True),
    autograder.Case("layout", 1, 2, 2, 64, 16, layout="bnhd", seed=163, spread=4.0, is_causal=True),
    autograder.Case("layout", 1, 2, 2, 40, 16, layout="bhdn", seed=164, is_causal=True),   # stride_qd != 1
]
if autograder.TIER == "gpu":   # sizes around multiples of the GPU tiles (BLOCK_M = 128, BLOCK_N = 64)
    _cases += [
        autograder.Case("layout", 1, 4, 4, 1000, 128, layout="bnhd", seed=421, is_causal=True),
        autograder.Case("layout", 2, 2, 2, 640, 64, layout="padded", seed=422, is_causal=True),
    ]
autograder.check(4, flash_attention_forward, cases=_cases)
### END HIDDEN TESTS

# %% [markdown]
# **Head dims (2 points)**

# %% tests="p4_headdim" points=2
autograder.check(4, flash_attention_forward, family="headdim")
### BEGIN HIDDEN TESTS
_f32 = torch.float32 if autograder.TIER == "cpu" else None   # a GPU runs fp32 tl.dot as TF32: 16-bit only
_cases = [
    autograder.Case("headdim", 1, 1, 1, 40, 16, seed=171, is_causal=True),
    autograder.Case("headdim", 1, 1, 1, 21, 64, dtype=_f32, seed=172, is_causal=True),
    autograder.Case("headdim", 2, 1, 1, 19, 128, seed=173, is_causal=True),
]
if autograder.TIER == "gpu":   # sizes around multiples of the GPU tiles (BLOCK_M = 128, BLOCK_N = 64)
    _cases += [
        autograder.Case("headdim", 1, 2, 2, 640, 16, seed=431, is_causal=True),
        autograder.Case("headdim", 1, 2, 2, 777, 32, seed=432, is_causal=True),
        autograder.Case("headdim", 1, 2, 2, 1024, 128, seed=433, spread=4.0, is_causal=True),
    ]
autograder.check(4, flash_attention_forward, cases=_cases)
### END HIDDEN TESTS

# %% [markdown]
# **Does your kernel skip the work the mask rules out?** (not graded) A kernel that masks every tile,
# or loads tiles right of the diagonal, is correct and slower. This cell counts the key tiles your
# kernel visits and masks (on the CPU tier in the interpreter; on a GPU it compares causal time with
# non-causal time) and prints a warning for each kind of wasted work.

# %%
from autograder.tile_skipping import check_tile_skipping
tile_report = check_tile_skipping(4, flash_attention_forward)

# %% [markdown]
# ## Benchmark
#
# On a GPU: your kernel next to the reference solution, SDPA and FlexAttention on causal shapes.
# TFLOP/s count only the visible pairs (about half), so a kernel that masks instead of skipping
# shows half the TFLOP/s of Problem 3, and a good two-phase kernel shows about the same. For
# scale, on an H100 the reference solution reaches about 390 TFLOP/s at D = 64 and 470-500 at
# D = 128, SDPA's FlashAttention-2 backend 260-330 and cuDNN 410-580.

# %%
results = autograder.bench.benchmark(4, flash_attention_forward)

# %% [markdown]
# ## What to take away
#
# * **Skip, don't mask**: a tile nobody can see is never loaded. Causal attention then costs about
#   half of full attention.
# * **Mask only the diagonal**: tiles left of the diagonal are visible to every row of the query
#   tile, so they run Problem 3's mask-free loop. Only about `cdiv(BLOCK_M, BLOCK_N)` tiles per query
#   tile pay for the mask.
# * **Bounds from the first and last row**: `full_hi = start_m // BLOCK_N * BLOCK_N` (from the
#   first row), `hi = min(start_m + BLOCK_M, N)` (from the last row and `N`). No assumption
#   that `BLOCK_M == BLOCK_N` or that `N` is a multiple of anything.
# * **Heavy tiles first**: reverse the query-tile order so the launch ends with light programs.
# * **`tl.constexpr` switches** (`IS_CAUSAL`, `MASK`) compile away: each loop carries only the
#   mask it needs.
#
# **Common mistakes**
#
# * `full_hi` computed from the last row instead of the first: fully visible tiles are the ones
#   every row sees, so the first (smallest) row decides.
# * One diagonal tile per query tile (`hi = full_hi + BLOCK_N`): with `BLOCK_M = 2 * BLOCK_N`
#   the second half of each query tile loses its last keys.
# * `hi = start_m + BLOCK_M` without the `min` with `N`: still correct thanks to the bounds
#   mask, but the last query tile may then spend a loop iteration on a key tile past the end.
# * `j < i` instead of `j <= i`: a query must see its own key. Row 0 then sees nothing and becomes
#   NaN; the autograder reports which keys flip.
# * Masking in phase 1 "to be safe", or looping phase 2 over all remaining keys: still correct,
#   and the benchmark shows the lost time.
