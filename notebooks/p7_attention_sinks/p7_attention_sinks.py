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
# # Problem 7: Attention sinks + sliding window + GQA
#
# A sliding window alone has a flaw that StreamingLLM (Xiao et al., 2023) made famous: trained
# models put a lot of attention on the first few tokens, whatever they say, as a place to "park"
# probability mass. Once those tokens slide out of the window, quality collapses. The fix is to
# keep the first `S` keys, the *attention sinks*, visible to every query, on top of the window:
#
# $$\text{key } j \text{ visible from query } i \iff j \le i \ \text{and}\
#   \big(j \ge i - (W - 1) \ \text{or}\ j < S\big).$$
#
# This is the final kernel of the course: causal, sliding window, sinks, grouped-query attention,
# any layout, work `O(N * (W + S))`.
#
# **What you will learn**
#
# * how to compose masks: the visible set is `causal & (window | sinks)`, the same `or` of
#   predicates that `autograder.masks.or_masks(sliding_window(W), sinks(S))` builds;
# * how to add a phase to the kernel: the sink tiles left of the window get their own loop,
#   and its range must stop where the window's begins, so no sink key is counted twice;
# * why the sizes that look like edge cases (`S = 0`, `S > W`, `S` across a tile boundary,
#   `S >= N`) need no special code when the ranges are right.
#
# **What you write**: the combined mask (a `@triton.jit` predicate) and the end of the sink phase,
# `sink_hi`. The window ranges of Problem 6, GQA of Problem 5, the loop and the wrapper are given.
#
# **Points**: 10, in eight graded cells (basic 1, ragged 1, layout 1, head dims 1, GQA 1,
# sliding window 1, sinks 3, tile skipping 1). Each graded cell runs the visible checks you see, plus hidden cases
# of the same kind; the hidden sink cases are sized in tiles, so `S` crosses a tile boundary on
# whatever GPU runs them.

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
# `W = 6` and `S = 4`: the band of Problem 6, plus the first four columns below the diagonal.
# Rows 0-5 see keys 0-3 through the window anyway; from row 6 on, the sinks that have left the
# window stay visible.

# %%
from autograder import plots

plots.show_mask(is_causal=True, window_size=6, sink_size=4, n=32)

# %% [markdown]
# ### Four phases
#
# Problem 6's program visits the key tiles `[lo, hi)` in three phases: window edge (masked),
# unmasked, diagonal (masked). Sinks add key tiles *left* of `lo`: the tiles holding keys
# `0 ... S - 1`, up to `cdiv(S, BLOCK_N) * BLOCK_N`. But a sink tile at or after `lo` is already
# visited by the window phases, so the sink phase must stop at `lo`:
#
# | phase | key range | mask |
# |---|---|---|
# | sinks | `[0, sink_hi)`, `sink_hi = min(cdiv(S, BLOCK_N) * BLOCK_N, lo)` | `j < S` |
# | window edge | `[lo, full_lo)` | `causal & (window \| sinks)` |
# | unmasked | `[full_lo, full_hi)` | none |
# | diagonal | `[full_hi, hi)` | `causal & (window \| sinks)` |
#
# Every key tile is visited at most once, so every visible pair is counted exactly once:
#
# * a sink key left of `lo` is visited only by the sink phase; it is left of every row's window
#   (`lo` is at or before the first row's window start) and before every row's diagonal, so the
#   sink phase only needs `j < S`: no causal test, no window test;
# * a sink key at or after `lo` is visited only by the window phases, whose mask has the `| sinks`
#   term: it stays visible to a row whose window it has left (possible when `S` crosses into the
#   window edge tiles).
#
# The schedule for `N = 256`, 64-row query tiles, 32-key tiles, `W = 100` and `S = 40` (which ends
# inside key tile 1). Blue is the sink phase: the last program loads key tiles 0 and 1 for its 40
# sink keys; the earlier ones have no sink phase, because their window edge starts at tile 0 and
# covers the sinks (with the `| sinks` term of the mask).

# %%
plots.show_tile_schedule(256, 64, 32, is_causal=True, window_size=100, sink_size=40)

# %% [markdown]
# The kernel always starts from the sink tiles, before the window: they hold the keys every row
# can see (row `i >= j` sees sink `j`), so `m_i` becomes finite after one tile for every row.
# The window edge can still leave a row with no visible key in a tile (when `S = 0`, as in
# Problem 6), so the `m_i = -inf` guard of Problem 6 stays in the loop.

# %% [markdown]
# ## The kernel
#
# **Your part 1: the combined mask.** `_visible(offs_m, offs_n, WINDOW, SINKS)`, Problem 6's
# predicate with one more argument, returns the `[BLOCK_M, BLOCK_N]` boolean tile "key `offs_n[j]`
# visible from query `offs_m[i]`" of the formula at the top. Build it from three predicates:
# causal, in the window, is a sink. With `SINKS = 0` it must be exactly Problem 6's `_visible`.
# (Keys `j >= N` of a ragged last tile: the causal term hides them from every stored row, as in
# Problem 6.)

# %% solution="p7_mask" export=true
@triton.jit
def _visible(offs_m, offs_n, WINDOW, SINKS):
    """[BLOCK_M, BLOCK_N] bool: key offs_n[j] visible from query offs_m[i] (causal, W keys, S sinks)."""
    ### BEGIN SOLUTION
    causal = offs_n[None, :] <= offs_m[:, None]
    in_window = offs_n[None, :] > offs_m[:, None] - WINDOW          # j >= i - (W - 1)
    is_sink = offs_n[None, :] < SINKS
    return causal & (in_window | is_sink)
    ### END SOLUTION


# %% [markdown]
# The loop over key tiles `[lo, hi)` is given: Problem 6's, with the `SINKS` argument, the mode
# `CAUSAL_WINDOW_SINKS` (your `_visible`, now with sinks) in place of `CAUSAL_WINDOW`, and one more mode.
#
# | `MASK` | keys visible | used for |
# |---|---|---|
# | `NO_MASK` | all | the unmasked phase; every key tile but the last, non-causal |
# | `BOUNDS` | `j < N` | the ragged last key tile, non-causal |
# | `CAUSAL_WINDOW_SINKS` | `_visible` | window edge and diagonal phases |
# | `SINK_KEYS` | `j < S` | the sink phase |

# %% export=true
NO_MASK = tl.constexpr(0)               # every pair of the tile is visible
BOUNDS = tl.constexpr(1)                # key j visible when j < N
CAUSAL_WINDOW_SINKS = tl.constexpr(4)   # key j visible from row i when j <= i and (j >= i - (W - 1) or j < S)
SINK_KEYS = tl.constexpr(5)             # key j visible when j < S: sink tiles, left of every row's window


@triton.jit
def _attn_fwd_tiles(acc, l_i, m_i, q,
                    K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                    offs_m, offs_d, lo, hi, N, qk_scale, WINDOW, SINKS,
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
        elif MASK == CAUSAL_WINDOW_SINKS:
            visible = _visible(offs_m, offs_n, WINDOW, SINKS)
            qk = tl.where(visible, qk, float("-inf"))
        elif MASK == SINK_KEYS:
            qk = tl.where((offs_n < SINKS)[None, :], qk, float("-inf"))
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
# **Your part 2: the sink phase.** In the kernel below, compute `sink_hi`, the end of the sink
# phase `[0, sink_hi)`: the tiles that hold sink keys, rounded up to whole tiles, but never past
# `lo`, where the window phases take over. With `SINKS = 0` the phase must be empty. The window
# ranges (`lo`, `full_lo`, `full_hi`, `hi`) are Problem 6's, given.

# %% solution="p7_kernel" export=true
# Head count, window and sink sizes change from call to call without changing the code: one
# compiled kernel serves them all (Triton would compile a variant per value class, == 1 or
# % 16 == 0, which costs grading time). N and the strides stay specialised: measured on an H100,
# knowing N % 16 == 0 is worth 8-12%, and aligned strides are what allow vector loads.
@triton.jit(do_not_specialize=["N_Q_HEADS", "WINDOW", "SINKS"])
def _flash_attention_fwd(
    Q_ptr, K_ptr, V_ptr, O_ptr,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    N, N_Q_HEADS, qk_scale, WINDOW, SINKS,
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
        # first key tile the window of the first row reaches
        lo = tl.maximum(start_m - (WINDOW - 1), 0) // BLOCK_N * BLOCK_N
        # from full_lo on, keys are inside the window of the last row, so of every row
        last_m = start_m + BLOCK_M - 1
        full_lo = tl.maximum(tl.cdiv(tl.maximum(last_m - (WINDOW - 1), 0), BLOCK_N) * BLOCK_N, lo)
        # before full_hi, keys are at or before the diagonal of the first row, so of every row
        full_hi = tl.maximum((start_m + 1) // BLOCK_N * BLOCK_N, full_lo)
        ### BEGIN SOLUTION
        # whole tiles holding keys 0 .. S-1, but only those left of the window: the window phases
        # visit (and their mask counts) any sink at or after lo
        sink_hi = tl.minimum(tl.cdiv(SINKS, BLOCK_N) * BLOCK_N, lo)
        ### END SOLUTION
        # sinks: key tiles left of every row's window, before every row's diagonal: only j < S matters
        acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                                        offs_m, offs_d, 0, sink_hi, N, qk_scale, WINDOW, SINKS, SINK_KEYS, BLOCK_N)
        # window edge: key tiles left of the window of some rows: window mask
        acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                                        offs_m, offs_d, lo, full_lo, N, qk_scale, WINDOW, SINKS, CAUSAL_WINDOW_SINKS, BLOCK_N)
        # unmasked: key tiles inside every row's window, left of the diagonal: no mask at all
        acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                                        offs_m, offs_d, full_lo, full_hi, N, qk_scale, WINDOW, SINKS, NO_MASK, BLOCK_N)
        # diagonal: key tiles crossing the diagonal: window mask; tiles past hi are skipped
        acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                                        offs_m, offs_d, full_hi, hi, N, qk_scale, WINDOW, SINKS, CAUSAL_WINDOW_SINKS, BLOCK_N)
    else:
        # Problem 3: full key tiles with no mask, then the tail tile with the bounds mask
        n_full = N // BLOCK_N * BLOCK_N
        acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                                        offs_m, offs_d, 0, n_full, N, qk_scale, WINDOW, SINKS, NO_MASK, BLOCK_N)
        acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                                        offs_m, offs_d, n_full, N, N, qk_scale, WINDOW, SINKS, BOUNDS, BLOCK_N)

    # The one division. Every row < N saw its diagonal key, so l_i > 0; rows past N (padding, never
    # stored) may have seen no key at all: divide those by 1 rather than compute 0 / 0.
    acc = acc / tl.where(offs_m < N, l_i, 1.0)[:, None]
    o_ptrs = O_ptr + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od
    tl.store(o_ptrs, acc.to(O_ptr.dtype.element_ty), mask=offs_m[:, None] < N)


# %% [markdown]
# ## The wrapper
#
# Given. `validate_attention_inputs` rejects a window or sinks without `is_causal=True`, `W < 1`
# and `S < 0`. No window means `WINDOW = N` (plain causal, where sinks change nothing); no sinks
# means `SINKS = 0`, which turns the sink phase and the `| sinks` term off.

# %% export=true
LOG2E = 1.4426950408889634   # log2(e): exp(x) = exp2(x * LOG2E)


def flash_attention_forward(q, k, v, is_causal=False, window_size=None, sink_size=None):
    """Causal attention with a sliding window of `window_size` keys and `sink_size` attention sinks
    (key j visible from query i when j <= i and (j >= i - (W - 1) or j < S)), plain causal or
    non-causal attention, for q [B, Hq, N, D], k and v [B, Hkv, N, D] (GQA), any strides."""
    B, Hq, Hkv, N, D = autograder.validate_attention_inputs(q, k, v, is_causal, window_size, sink_size)
    o = torch.empty_like(q)
    cfg = attention_tiles(D, q.dtype, is_causal)
    grid = (triton.cdiv(N, cfg["BLOCK_M"]) * B * Hq,)
    qk_scale = 1.0 / math.sqrt(D) * LOG2E
    window = N if window_size is None else min(window_size, N)
    sinks = 0 if sink_size is None else min(sink_size, N)
    _flash_attention_fwd[grid](
        q, k, v, o, *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        N, Hq, qk_scale, window, sinks,
        GROUP=Hq // Hkv, IS_CAUSAL=is_causal, HEAD_DIM=D,
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return o


# %% [markdown]
# ## Try it
#
# Not graded. `S = 12 > W = 5`: the sink keys 5-11 are inside the window of the early rows and
# sinks for the later ones.
#
# `autograder.try_it` runs one case, prints the largest error and, if some rows are wrong, shows
# where (one panel per head); the graded checks below explain a failure in words. To look at the
# numbers yourself: `q, k, v = case.make_inputs()`, call your function, compare with
# `autograder.reference_attention(q, k, v, **case.mask_kwargs())`. On the CPU tier the kernel
# runs in the interpreter, so `print` inside it works.

# %%
case = autograder.Case("try", B=1, Hq=4, Hkv=2, N=70, D=16, is_causal=True, window_size=5, sink_size=12)
out = autograder.try_it(flash_attention_forward, case)

# %% [markdown]
# ## Checks
#
# Each graded cell checks one family of cases against a float64 reference and explains the first
# failure; for a mask mistake it names the key that is wrongly hidden or visible. The first six
# families have no sinks (`SINKS = 0`): your mask and sink phase must reduce to Problem 6 there.

# %% tests="p7_basic" points=1
autograder.check(7, flash_attention_forward, family="basic")
### BEGIN HIDDEN TESTS
autograder.check(7, flash_attention_forward, cases=[
    autograder.Case("basic", 2, 2, 2, 64, 32, is_causal=True, seed=701),
    autograder.Case("basic", 1, 2, 2, 96, 16, is_causal=True, sink_size=4, seed=702),   # sinks, no window
    autograder.Case("basic", 1, 2, 2, 60, 16, is_causal=True, window_size=5, sink_size=2, seed=703, low_score=500.0),
])
### END HIDDEN TESTS

# %% tests="p7_ragged" points=1
autograder.check(7, flash_attention_forward, family="ragged")
### BEGIN HIDDEN TESTS
autograder.check(7, flash_attention_forward, cases=[
    autograder.Case("ragged", 2, 2, 1, 67, 16, is_causal=True, window_size=10, sink_size=3, seed=711),
    autograder.Case("ragged", 1, 2, 2, 3, 32, is_causal=True, window_size=1, sink_size=1, seed=712),
    autograder.Case("ragged", 1, 2, 2, 81, 16, is_causal=True, window_size=9, sink_size=5, seed=713, spread=3.0),
])
### END HIDDEN TESTS

# %% tests="p7_layout" points=1
autograder.check(7, flash_attention_forward, family="layout")
### BEGIN HIDDEN TESTS
autograder.check(7, flash_attention_forward, cases=[
    autograder.Case("layout", 1, 4, 2, 45, 16, is_causal=True, window_size=8, sink_size=2,
                    layout="padded", seed=721),
    autograder.Case("layout", 1, 4, 2, 58, 32, is_causal=True, window_size=13, sink_size=17,
                    layout="bnhd", seed=722),
])
### END HIDDEN TESTS

# %% tests="p7_headdim" points=1
autograder.check(7, flash_attention_forward, family="headdim")
### BEGIN HIDDEN TESTS
autograder.check(7, flash_attention_forward, cases=[
    autograder.Case("headdim", 1, 2, 1, 29, 64, is_causal=True, window_size=7, sink_size=3, seed=731),
    autograder.Case("headdim", 1, 2, 2, 37, 128, is_causal=True, window_size=20, sink_size=1, seed=732),
])
### END HIDDEN TESTS

# %% tests="p7_gqa" points=1
autograder.check(7, flash_attention_forward, family="gqa")
### BEGIN HIDDEN TESTS
autograder.check(7, flash_attention_forward, cases=[
    autograder.Case("gqa", 1, 4, 2, 50, 16, is_causal=True, window_size=11, sink_size=4, seed=741),
    autograder.Case("gqa", 1, 8, 2, 35, 16, is_causal=True, window_size=3, sink_size=6, seed=742, layout="bnhd"),
    autograder.Case("gqa", 2, 4, 4, 41, 16, is_causal=False, seed=743),
])
### END HIDDEN TESTS

# %% tests="p7_window" points=1
autograder.check(7, flash_attention_forward, family="window")
### BEGIN HIDDEN TESTS
_t = attention_tiles(16, autograder.DTYPE, True)
_BM, _BN = _t["BLOCK_M"], _t["BLOCK_N"]
_N = 3 * _BM + 5
autograder.check(7, flash_attention_forward, cases=[
    autograder.Case("window", 1, 2, 2, _N, 16, is_causal=True, window_size=1, seed=751),
    autograder.Case("window", 1, 4, 2, _N, 16, is_causal=True, window_size=_BN, seed=752),
    autograder.Case("window", 2, 2, 2, _N, 16, is_causal=True, window_size=_BN + 3, sink_size=0, seed=753),
    autograder.Case("window", 1, 8, 2, _N, 16, is_causal=True, window_size=_BM + _BN - 1, seed=754, layout="bnhd"),
])
### END HIDDEN TESTS

# %% [markdown]
# **Sinks (3 points)**: `S = 0` (Problem 6), `S = 1`, `S > W`, `S` across a tile boundary,
# `W = 1` with sinks, and `W >= N`. The cell also checks that the wrapper refuses sinks without
# `is_causal=True` and `S < 0`.

# %% tests="p7_sinks" points=3
autograder.check(7, flash_attention_forward, family="sinks")

q, k, v = autograder.Case("try", B=1, Hq=2, Hkv=2, N=16, D=16).make_inputs()
for bad in (dict(is_causal=False, sink_size=4), dict(is_causal=True, window_size=4, sink_size=-1),
            dict(is_causal=False, window_size=4, sink_size=4)):
    try:
        flash_attention_forward(q, k, v, **bad)
    except ValueError as exc:
        print(f"{bad} rejected: {exc}")
    else:
        raise AssertionError(f"flash_attention_forward(q, k, v, **{bad}) must raise ValueError")
### BEGIN HIDDEN TESTS
# sized in tiles, so they hit the same edge cases with the CPU tier's tiles and any GPU's
_N = 3 * _BM + 5
autograder.check(7, flash_attention_forward, cases=[
    autograder.Case("sinks", 1, 2, 2, _N, 16, is_causal=True, window_size=4, sink_size=1, seed=761),
    autograder.Case("sinks", 1, 4, 2, _N, 16, is_causal=True, window_size=3, sink_size=_BN, seed=762),   # S = tile
    autograder.Case("sinks", 1, 2, 1, _N, 16, is_causal=True, window_size=5, sink_size=_BN + 2, seed=763),
    autograder.Case("sinks", 2, 2, 2, _N, 16, is_causal=True, window_size=_BN + 3, sink_size=2 * _BN - 1,
                    seed=764, layout="bnhd"),                                                         # S > W
    autograder.Case("sinks", 1, 8, 2, _N, 16, is_causal=True, window_size=_BM, sink_size=_BM + 1, seed=765),
    autograder.Case("sinks", 1, 4, 4, _N, 16, is_causal=True, window_size=1, sink_size=_BM + _BN + 1,
                    seed=766, layout="padded", spread=3.0),
    autograder.Case("sinks", 1, 2, 2, _N, 16, is_causal=True, window_size=7, sink_size=_N + 9, seed=767),  # S > N
    autograder.Case("sinks", 1, 2, 2, 2 * _BM + 1, 32, is_causal=True, window_size=_BN - 1, sink_size=3,
                    seed=768),
])
### END HIDDEN TESTS

# %% [markdown]
# **Tile skipping (1 point)**: the right output is not enough. The window is there so that the work
# grows with `N * W`, not `N^2`. This cell counts the key tiles your kernel visits at a fixed `W` for
# `N` and `2N` (on the CPU tier by watching the interpreter's loads, on a GPU by timing) and fails when
# they grow like `N^2`: a loop that starts at key 0 and lets the mask drop the rest is correct, and slow.
# The counts run on a single head; so the cell first checks the output on a few cases with the
# same mask and grouped-query heads: the point is for a kernel that is right and fast.

# %% tests="p7_skipping" points=1
from autograder.tile_skipping import check_tile_skipping
check_tile_skipping(7, flash_attention_forward)

# %% [markdown]
# ## Benchmark
#
# On a GPU this times your kernel with `S = 4` and `W = 1024` or `W = 256` at `N = 16384` and
# `N = 32768`, next to the reference solution and FlexAttention with the same mask (SDPA has no
# sinks or window: it is skipped). Four sink keys cost one extra key tile per program: the time
# should be within a few percent of Problem 6's. On the CPU tier the cell only says it needs a GPU.

# %%
results = autograder.bench.benchmark(7, flash_attention_forward)

# %% [markdown]
# ## What to take away
#
# * **Masks compose as predicates**: `causal & (window | sinks)`; each term is one comparison on
#   the tile's row and column indices.
# * **Phases compose as disjoint ranges**: sinks `[0, sink_hi)`, window edge, unmasked, diagonal.
#   Stopping the sink phase at `lo` is what makes every key counted exactly once; the `| sinks`
#   term of the window mask covers the sinks the window phases visit.
# * **Each phase gets the cheapest mask that is correct on its tiles**: none in the middle, `j < S`
#   on the sink tiles, the full predicate on the window's edge and the diagonal.
# * `S = 0`, `S > W`, `S >= N`, `S` across a tile boundary and `W = 1` are not special cases: the
#   ranges and the mask handle them by arithmetic.
#
# **Common mistakes**
#
# * `sink_hi = cdiv(S, BLOCK_N) * BLOCK_N` without `min(..., lo)`: when the window reaches the sink
#   tiles (early query tiles, or `S > W`), those keys are counted twice. The outputs are then
#   wrong in a way the autograder reports as a key tile counted twice.
# * `causal & in_window | is_sink`: `&` binds tighter than `|`, so sinks become visible to queries
#   *before* them (the autograder names this one).
# * `j <= S` instead of `j < S`: one sink too many.
# * Rounding `sink_hi` down: the partial last sink tile (when `S` is not a multiple of `BLOCK_N`)
#   is skipped for rows whose window does not reach it.
