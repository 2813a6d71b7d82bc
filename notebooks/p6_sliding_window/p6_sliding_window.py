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
# # Problem 6: Sliding-window attention
#
# Causal attention costs `O(N^2)`: the last query of a 128k-token sequence looks at 128k keys.
# Mistral 7B, Gemma 2/3 and gpt-oss limit (some of) their layers to a *sliding window*: query `i`
# sees only the `W` most recent keys, itself included,
#
# $$\text{key } j \text{ visible from query } i \iff i - (W - 1) \le j \le i .$$
#
# A kernel that applies this mask but still loops over every key tile does the same `O(N^2)`
# work and throws most of it away. The point of this problem is to *not load* the tiles the
# window rules out, so the work grows with `N * W`.
#
# **What you will learn**
#
# * which key tiles a query tile needs under a window, and how to compute that range from
#   `start_m`, `BLOCK_M`, `BLOCK_N` and `W` with integer arithmetic;
# * how to split the range into phases so that only the tiles that need a mask get one: the
#   window's ragged left edge, an unmasked middle, the diagonal;
# * why a row can see *no* key in a tile once there is a window, why that produces NaN in a naive
#   online softmax, and the one-line guard that prevents it.
#
# **What you write**: the window mask (a small `@triton.jit` predicate) and the tile ranges
# (`lo`, `full_lo`, `full_hi`) of the kernel. GQA (Problem 5), the loop and the wrapper are given.
#
# **Points**: 10, in seven graded cells (basic 1, ragged 1, layout 1, head dims 1, GQA 2,
# sliding window 3, tile skipping 1). Each graded cell runs the visible checks you see, plus hidden cases of the
# same kind; the hidden window cases are sized in tiles (`W = 1`, `W = BLOCK_N`, `W = BLOCK_M`,
# `W` not a multiple of a tile) on whatever GPU runs them.

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
# ### The mask
#
# Rows are queries, columns keys, dark = visible. With `W = 6`, row 10 sees keys 5 to 10: a band
# of width `W` along the diagonal. (`W = 1` is the diagonal alone; `W >= N` is plain causal
# attention.) The same predicate is `autograder.masks.sliding_window(6)`, which the reference uses.

# %%
from autograder import plots

plots.show_mask(is_causal=True, window_size=6, n=32)

# %% [markdown]
# ### The tiles a program visits
#
# One program owns query rows `start_m ... start_m + BLOCK_M - 1`. The *first* row reaches back
# furthest, to key `start_m - (W - 1)`; the *last* row reaches furthest right, to its diagonal.
# So the program needs the key tiles from the one holding `start_m - (W - 1)` to the one holding
# the last row. Within that range there are three kinds of tiles:
#
# | phase | key range | mask | why |
# |---|---|---|---|
# | window edge | `[lo, full_lo)` | window | some keys are left of the window of some rows |
# | unmasked | `[full_lo, full_hi)` | none | every key is inside every row's window and at or before every row's diagonal |
# | diagonal | `[full_hi, hi)` | window | some keys are after the diagonal of some rows |
#
# where (all multiples of `BLOCK_N` except `hi`):
#
# * `lo`: `start_m - (W - 1)`, clamped at 0, rounded **down** to a tile start;
# * `full_lo`: the left end of the *last* row's window, `start_m + BLOCK_M - 1 - (W - 1)`,
#   clamped at 0, rounded **up** to a tile start; never below `lo`. A tile starting there is
#   inside the window of the last row, hence of every row (earlier rows' windows start earlier);
# * `full_hi`: the end of the tiles that lie at or before the *first* row's diagonal:
#   `start_m + 1` rounded **down**; never below `full_lo`. When `W` is smaller than a query tile,
#   `full_lo` can pass the diagonal: then there is no unmasked tile and the diagonal phase starts
#   at `full_lo`, so no tile is visited twice;
# * `hi = min(start_m + BLOCK_M, N)`, as in Problem 4.
#
# Here is the schedule for `N = 256`, 64-row query tiles, 32-key tiles and `W = 100`. Purple tiles
# are the window edge, green ones unmasked, red ones the diagonal; white tiles are never loaded.
# Pale pairs inside a colored tile are computed and masked away.

# %%
plots.show_tile_schedule(256, 64, 32, is_causal=True, window_size=100)

# %% [markdown]
# With a window smaller than a tile (`W = 20`) no tile is fully visible: every tile a program
# visits is masked, and most of each tile is thrown away. That is the price of tiles; it is still
# `O(N * W)`.

# %%
plots.show_tile_schedule(256, 64, 32, is_causal=True, window_size=20)

# %% [markdown]
# ### The work grows with N * W
#
# Each program visits about `(BLOCK_M + W) / BLOCK_N + 1` key tiles, whatever `N` is. With the GPU
# tile sizes (`BLOCK_M = 128`, `BLOCK_N = 64`) and `W = 1024`, doubling `N` doubles the tile visits
# of the window kernel, while causal attention quadruples them (`autograder.schedule` computes the
# reference kernel's schedule without running it):

# %%
from autograder import schedule

def tile_visits(n, **mask):
    c = schedule.counts(n, 128, 64, is_causal=True, **mask)
    return sum(c.values()) - c["skipped"]


print(f"{'N':>6s} {'causal':>8s} {'W=1024':>8s}   (key tiles visited, all programs of one head)")
for n in (4096, 8192, 16384, 32768):
    print(f"{n:6d} {tile_visits(n):8d} {tile_visits(n, window_size=1024):8d}")

# %% [markdown]
# ### A row that sees nothing: the `m_i = -inf` guard
#
# In Problems 4 and 5 every row saw key 0 in its first tile, so the running max `m_i` was finite
# after one tile. With a window that is no longer true. Take the CPU tier's tiles
# (`BLOCK_M = 32`, `BLOCK_N = 16`) and `W = 5`: the program of rows 32-63 starts at key tile
# 16-31 (row 32 sees keys 28-32), but row 40 sees keys 36-40, none of them in that tile. Its
# scores there are all `-inf`, so
#
# ```
# m_ij = max(m_i, max(qk) * qk_scale) = max(-inf, -inf) = -inf
# p    = exp2(qk * qk_scale - m_ij)    = exp2(-inf - (-inf)) = exp2(nan) = nan
# ```
#
# and the NaN stays in `l_i` and `acc` for good. The given loop subtracts 0 instead of `-inf`
# when a row has seen nothing yet:
#
# ```
# m_sub = tl.where(m_ij == float("-inf"), 0.0, m_ij)
# p     = exp2(qk * qk_scale - m_sub)   # exp2(-inf - 0) = 0: the row adds nothing
# alpha = exp2(m_i - m_sub)             # exp2(-inf - 0) = 0: there was nothing to rescale
# ```
#
# `m_i` itself stays `-inf` (it is the true maximum so far), so the first tile where the row does
# see a key starts it from scratch. Only the masked phases need the guard: the unmasked phase has
# no `-inf` score. Every real row sees at least its diagonal key, so `l_i > 0` at the end.

# %% [markdown]
# ## The kernel
#
# **Your part 1: the window mask.** `_visible(offs_m, offs_n, WINDOW)` returns the
# `[BLOCK_M, BLOCK_N]` boolean tile "key `offs_n[j]` is visible from query `offs_m[i]`": causal and
# inside the window, the formula at the top. It also has to hide keys `j >= N` of the ragged last
# tile; the causal part does that for every row that is stored (`j <= i < N`).

# %% solution="p6_mask" export=true
@triton.jit
def _visible(offs_m, offs_n, WINDOW):
    """[BLOCK_M, BLOCK_N] bool: key offs_n[j] visible from query offs_m[i] (causal, W keys)."""
    ### BEGIN SOLUTION
    causal = offs_n[None, :] <= offs_m[:, None]
    in_window = offs_n[None, :] > offs_m[:, None] - WINDOW          # j >= i - (W - 1)
    return causal & in_window
    ### END SOLUTION


# %% [markdown]
# The loop over key tiles `[lo, hi)` is given: Problem 5's, with the mode `CAUSAL_WINDOW` (your
# `_visible`) in place of `CAUSAL`, the `WINDOW` argument it needs, and the guard above.
#
# | `MASK` | keys visible | used for |
# |---|---|---|
# | `NO_MASK` | all | the unmasked phase; every key tile but the last, non-causal |
# | `BOUNDS` | `j < N` | the ragged last key tile, non-causal |
# | `CAUSAL_WINDOW` | `_visible` | window edge and diagonal phases |

# %% export=true
NO_MASK = tl.constexpr(0)         # every pair of the tile is visible
BOUNDS = tl.constexpr(1)          # key j visible when j < N
CAUSAL_WINDOW = tl.constexpr(3)   # key j visible from row i when i - (W - 1) <= j <= i: _visible


@triton.jit
def _attn_fwd_tiles(acc, l_i, m_i, q,
                    K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                    offs_m, offs_d, lo, hi, N, qk_scale, WINDOW,
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
        elif MASK == CAUSAL_WINDOW:
            visible = _visible(offs_m, offs_n, WINDOW)
            qk = tl.where(visible, qk, float("-inf"))
        # the online softmax update of Problem 3
        m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)     # new running max, log2 units
        if MASK == NO_MASK:
            m_sub = m_ij
        else:
            # a row with no visible key so far keeps m_ij = -inf: subtract 0, not -inf (no NaN)
            m_sub = tl.where(m_ij == float("-inf"), 0.0, m_ij)
        p = tl.math.exp2(qk * qk_scale - m_sub[:, None])     # [BLOCK_M, BLOCK_N], in [0, 1]
        alpha = tl.math.exp2(m_i - m_sub)                    # rescale of everything seen so far
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc)                  # acc += p @ v, fp32
        m_i = m_ij
    return acc, l_i, m_i


# %% [markdown]
# **Your part 2: the tile ranges.** In the kernel below, compute `lo`, `full_lo` and `full_hi` as
# described in "The tiles a program visits" (`hi` is given). Useful: `tl.maximum`, `tl.minimum`,
# `tl.cdiv(a, b)` (rounds up); `x // BLOCK_N * BLOCK_N` rounds a non-negative `x` down to a tile
# start. `WINDOW` is `W`, or `N` when the call has no window: then the ranges reduce to Problem 4's,
# `lo = full_lo = 0` and `full_hi` and `hi` are Problem 4's (`start_m` is a multiple of `BLOCK_M`,
# so `start_m + 1` and `start_m` round down to the same tile start). Only a ragged last query tile
# differs: its `last_m` lies past `N`, which can move `full_lo` right, so a few tiles that Problem 4
# runs unmasked run masked, with the same result.

# %% solution="p6_kernel" export=true
# Head count, window and sink sizes change from call to call without changing the code: one
# compiled kernel serves them all (Triton would compile a variant per value class, == 1 or
# % 16 == 0, which costs grading time). N and the strides stay specialised: measured on an H100,
# knowing N % 16 == 0 is worth 8-12%, and aligned strides are what allow vector loads.
@triton.jit(do_not_specialize=["N_Q_HEADS", "WINDOW"])
def _flash_attention_fwd(
    Q_ptr, K_ptr, V_ptr, O_ptr,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    N, N_Q_HEADS, qk_scale, WINDOW,
    GROUP: tl.constexpr, IS_CAUSAL: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    n_m = tl.cdiv(N, BLOCK_M)
    # which query tile, the fast index; causal: late tiles visit the most key tiles, so they go first
    pid_m = n_m - 1 - tl.program_id(0) % n_m if IS_CAUSAL else tl.program_id(0) % n_m
    pid_bh = tl.program_id(0) // n_m          # which (batch, head)
    b = pid_bh // N_Q_HEADS
    h = pid_bh % N_Q_HEADS
    Q_ptr += b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    O_ptr += b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    # GROUP consecutive query heads share one K/V head: read it in place, no copy
    kv_h = h // GROUP
    K_ptr += b.to(tl.int64) * stride_kb + kv_h.to(tl.int64) * stride_kh
    V_ptr += b.to(tl.int64) * stride_vb + kv_h.to(tl.int64) * stride_vh

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
        hi = tl.minimum(start_m + BLOCK_M, N)                # one past the last key any row here may see
        ### BEGIN SOLUTION
        # first key tile the window of the first row reaches
        lo = tl.maximum(start_m - (WINDOW - 1), 0) // BLOCK_N * BLOCK_N
        # from full_lo on, keys are inside the window of the last row, so of every row
        last_m = start_m + BLOCK_M - 1
        full_lo = tl.maximum(tl.cdiv(tl.maximum(last_m - (WINDOW - 1), 0), BLOCK_N) * BLOCK_N, lo)
        # before full_hi, keys are at or before the diagonal of the first row, so of every row
        full_hi = tl.maximum((start_m + 1) // BLOCK_N * BLOCK_N, full_lo)
        ### END SOLUTION
        # window edge: key tiles left of the window of some rows: window mask
        acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                                        offs_m, offs_d, lo, full_lo, N, qk_scale, WINDOW, CAUSAL_WINDOW, BLOCK_N)
        # unmasked: key tiles inside every row's window, left of the diagonal: no mask at all
        acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                                        offs_m, offs_d, full_lo, full_hi, N, qk_scale, WINDOW, NO_MASK, BLOCK_N)
        # diagonal: key tiles crossing the diagonal: window mask; tiles past hi are skipped
        acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                                        offs_m, offs_d, full_hi, hi, N, qk_scale, WINDOW, CAUSAL_WINDOW, BLOCK_N)
    else:
        # Problem 3: full key tiles with no mask, then the tail tile with the bounds mask
        n_full = N // BLOCK_N * BLOCK_N
        acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                                        offs_m, offs_d, 0, n_full, N, qk_scale, WINDOW, NO_MASK, BLOCK_N)
        acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                                        offs_m, offs_d, n_full, N, N, qk_scale, WINDOW, BOUNDS, BLOCK_N)

    # The one division. Every row < N saw its diagonal key, so l_i > 0; rows past N (padding, never
    # stored) may have seen no key at all: divide those by 1 rather than compute 0 / 0.
    acc = acc / tl.where(offs_m < N, l_i, 1.0)[:, None]
    o_ptrs = O_ptr + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od
    tl.store(o_ptrs, acc.to(O_ptr.dtype.element_ty), mask=offs_m[:, None] < N)


# %% [markdown]
# ## The wrapper
#
# Given. `validate_attention_inputs` rejects a window without `is_causal=True` and `W < 1`. A
# window of `N` keys or more is plain causal attention, so the wrapper passes `WINDOW = N` both
# then and when there is no window: one kernel, no special case.

# %% export=true
LOG2E = 1.4426950408889634   # log2(e): exp(x) = exp2(x * LOG2E)


def flash_attention_forward(q, k, v, is_causal=False, window_size=None, sink_size=None):
    """Causal sliding-window attention (key j visible from query i when i - (W-1) <= j <= i), or
    plain causal / non-causal attention, for q [B, Hq, N, D], k and v [B, Hkv, N, D], any strides."""
    B, Hq, Hkv, N, D = autograder.validate_attention_inputs(q, k, v, is_causal, window_size, sink_size)
    if sink_size is not None:
        raise ValueError("this kernel has no attention sinks (Problem 7 adds them)")
    o = torch.empty_like(q)
    cfg = attention_tiles(D, q.dtype, is_causal)
    grid = (triton.cdiv(N, cfg["BLOCK_M"]) * B * Hq,)
    qk_scale = 1.0 / math.sqrt(D) * LOG2E
    window = N if window_size is None else min(window_size, N)
    _flash_attention_fwd[grid](
        q, k, v, o, *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        N, Hq, qk_scale, window,
        GROUP=Hq // Hkv, IS_CAUSAL=is_causal, HEAD_DIM=D,
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return o


# %% [markdown]
# ## Try it
#
# Not graded. `W = 5` is smaller than a key tile: without the guard this case is full of NaN.
#
# `autograder.try_it` runs one case, prints the largest error and, if some rows are wrong, shows
# where (one panel per head); the graded checks below explain a failure in words. To look at the
# numbers yourself: `q, k, v = case.make_inputs()`, call your function, compare with
# `autograder.reference_attention(q, k, v, **case.mask_kwargs())`. On the CPU tier the kernel
# runs in the interpreter, so `print` inside it works.

# %%
case = autograder.Case("try", B=1, Hq=4, Hkv=2, N=70, D=16, is_causal=True, window_size=5)
out = autograder.try_it(flash_attention_forward, case)

# %% [markdown]
# ## Checks
#
# Each graded cell checks one family of cases against a float64 reference and explains the first
# failure. The first five families have no window (`WINDOW = N`): they check that the ranges
# reduce to Problem 4's and that GQA and the non-causal path still work.

# %% tests="p6_basic" points=1
autograder.check(6, flash_attention_forward, family="basic")
### BEGIN HIDDEN TESTS
autograder.check(6, flash_attention_forward, cases=[
    autograder.Case("basic", 2, 2, 2, 64, 32, is_causal=True, seed=601),
    autograder.Case("basic", 1, 2, 2, 96, 16, is_causal=True, seed=602, spread=3.0),
    autograder.Case("basic", 1, 2, 2, 60, 16, is_causal=True, window_size=3, seed=603, low_score=500.0),
])
### END HIDDEN TESTS

# %% tests="p6_ragged" points=1
autograder.check(6, flash_attention_forward, family="ragged")
### BEGIN HIDDEN TESTS
autograder.check(6, flash_attention_forward, cases=[
    autograder.Case("ragged", 2, 2, 1, 67, 16, is_causal=True, seed=611),
    autograder.Case("ragged", 1, 2, 2, 3, 32, is_causal=True, seed=612),
    autograder.Case("ragged", 1, 2, 2, 81, 16, is_causal=True, window_size=9, seed=613, spread=3.0),
])
### END HIDDEN TESTS

# %% tests="p6_layout" points=1
autograder.check(6, flash_attention_forward, family="layout")
### BEGIN HIDDEN TESTS
autograder.check(6, flash_attention_forward, cases=[
    autograder.Case("layout", 1, 4, 2, 45, 16, is_causal=True, layout="padded", seed=621),
    autograder.Case("layout", 1, 4, 2, 58, 32, is_causal=True, window_size=13, layout="bnhd", seed=622),
])
### END HIDDEN TESTS

# %% tests="p6_headdim" points=1
autograder.check(6, flash_attention_forward, family="headdim")
### BEGIN HIDDEN TESTS
autograder.check(6, flash_attention_forward, cases=[
    autograder.Case("headdim", 1, 2, 1, 29, 64, is_causal=True, window_size=7, seed=631),
    autograder.Case("headdim", 1, 2, 2, 21, 128, is_causal=True, window_size=20, seed=632),
])
### END HIDDEN TESTS

# %% tests="p6_gqa" points=2
autograder.check(6, flash_attention_forward, family="gqa")
### BEGIN HIDDEN TESTS
autograder.check(6, flash_attention_forward, cases=[
    autograder.Case("gqa", 1, 4, 2, 50, 16, is_causal=True, window_size=11, seed=641),
    autograder.Case("gqa", 1, 8, 2, 35, 16, is_causal=True, window_size=3, seed=642, layout="bnhd"),
    autograder.Case("gqa", 2, 4, 4, 41, 16, is_causal=False, seed=643),
])
### END HIDDEN TESTS

# %% [markdown]
# **Sliding window (3 points)**: `W = 1` (the diagonal alone), `W` below a tile, not a multiple of
# a tile, at least `N`, and a transposed layout. The cell also checks that the wrapper refuses a
# window without `is_causal=True` and `W < 1`.

# %% tests="p6_window" points=3
autograder.check(6, flash_attention_forward, family="window")

q, k, v = autograder.Case("try", B=1, Hq=2, Hkv=2, N=16, D=16).make_inputs()
for bad in (dict(is_causal=False, window_size=4), dict(is_causal=True, window_size=0)):
    try:
        flash_attention_forward(q, k, v, **bad)
    except ValueError as exc:
        print(f"{bad} rejected: {exc}")
    else:
        raise AssertionError(f"flash_attention_forward(q, k, v, **{bad}) must raise ValueError")
### BEGIN HIDDEN TESTS
# sized in tiles, so they hit the same edge cases with the CPU tier's tiles and any GPU's
_t = attention_tiles(16, autograder.DTYPE, True)
_BM, _BN = _t["BLOCK_M"], _t["BLOCK_N"]
_N = 3 * _BM + 5
autograder.check(6, flash_attention_forward, cases=[
    autograder.Case("window", 1, 2, 2, _N, 16, is_causal=True, window_size=1, seed=651),
    autograder.Case("window", 1, 4, 2, _N, 16, is_causal=True, window_size=_BN, seed=652),       # W = key tile
    autograder.Case("window", 1, 2, 1, _N, 16, is_causal=True, window_size=_BM, seed=653),       # W = query tile
    autograder.Case("window", 2, 2, 2, _N, 16, is_causal=True, window_size=_BN + 3, seed=654),   # not a multiple
    autograder.Case("window", 1, 2, 2, _N, 16, is_causal=True, window_size=_BM + _BN - 1, seed=655, spread=3.0),
    autograder.Case("window", 1, 8, 2, _N, 16, is_causal=True, window_size=2 * _BN + 1, seed=656, layout="bnhd"),
    autograder.Case("window", 1, 4, 4, _N, 16, is_causal=True, window_size=_N - 1, seed=657, layout="padded"),
    autograder.Case("window", 1, 2, 2, 2 * _BM + 1, 32, is_causal=True, window_size=_BM + 1, seed=658),
])
### END HIDDEN TESTS

# %% [markdown]
# **Tile skipping (1 point)**: the right output is not enough. The window is there so that the work
# grows with `N * W`, not `N^2`. This cell counts the key tiles your kernel visits at a fixed `W` for
# `N` and `2N` (on the CPU tier by watching the interpreter's loads, on a GPU by timing) and fails when
# they grow like `N^2`: a loop that starts at key 0 and lets the mask drop the rest is correct, and slow.
# The counts run on a single head; so the cell first checks the output on a few cases with the
# same mask and grouped-query heads: the point is for a kernel that is right and fast.

# %% tests="p6_skipping" points=1
from autograder.tile_skipping import check_tile_skipping
check_tile_skipping(6, flash_attention_forward)

# %% [markdown]
# ## Benchmark
#
# On a GPU this times your kernel with `W = 1024` at `N = 16384` and `N = 32768` next to the
# reference solution and FlexAttention with the same window (SDPA has no window: it is skipped).
# Time per call should roughly double from the first shape to the second: `O(N * W)`, not
# `O(N^2)`. On the CPU tier the cell only says it needs a GPU.

# %%
results = autograder.bench.benchmark(6, flash_attention_forward)

# %% [markdown]
# ## What to take away
#
# * **Skip, do not mask**: a mask makes the answer right; a loop that starts at the first tile
#   the window reaches makes it fast. Each program visits `~(BLOCK_M + W) / BLOCK_N` key tiles,
#   so the total work is `O(N * W)`.
# * **Masks only where needed**: the window's left edge and the diagonal are masked; tiles seen
#   in full by every row of the program run the mask-free loop. The three ranges are computed
#   from the first row (`lo`, `full_hi`) and the last row (`full_lo`) of the query tile.
# * **A row can see nothing in a tile**: keep `m_i = -inf` but subtract 0, so
#   `exp2(-inf - (-inf))` never happens.
# * One kernel covers `W = 1`, `W < BLOCK_N`, `W >= N` (plain causal) and GQA, by arithmetic
#   alone.
#
# **Common mistakes**
#
# * `j > i - W` written as `j >= i - W`: the window then holds `W + 1` keys (the autograder
#   names this off-by-one).
# * Rounding `lo` up instead of down: the first keys of the first row's window are skipped.
# * Rounding `full_lo` down: a tile partly left of the last row's window runs without a mask.
# * Not clamping `full_hi` at `full_lo` (or `full_lo` at `lo`) when `W` is small: ranges overlap
#   and a tile is counted twice, or run backwards.
# * Subtracting `m_ij` without the guard: NaN rows whenever `W` is smaller than a tile.
# * Looping from key 0 and relying on the mask: every check passes, and the kernel is as slow as
#   causal attention. The benchmark shows it.
