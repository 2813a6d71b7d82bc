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
# # Problem 9: the backward with a sliding window, sinks and learned sink logits
#
# GPT-OSS-style models attend through a sliding window, keep StreamingLLM sink keys visible
# (Problem 7), and add one more ingredient: a **learned sink logit** per query head, `sink_h`,
# that joins every row's softmax denominator without contributing a value,
#
# $$P_{ij} = \frac{e^{s_{ij}}}{e^{\mathrm{sink}_h} + \sum_{j'} e^{s_{ij'}}}, \qquad O_i = \sum_j P_{ij} v_j ,$$
#
# so a head can put weight on "nothing" (the rows of `P` sum to less than 1). Fine-tuning such a
# model needs the backward of exactly this attention. This problem builds it on Problem 8.
#
# **What you will learn**
#
# * the dK/dV kernel works on the mask *transposed*: its tile has keys for rows and queries for
#   columns, and its loop visits the queries that see a key, the window read the other way round
#   (and for a sink key, something longer). Skipping the other query tiles keeps the backward
#   `O(N * W)`, like the forward;
# * the gradient of a learned logit that has no value vector: derive it, implement it in the
#   `delta` kernel, check it against autograd;
# * how much of Problem 8 carries over unchanged (the `dS` formula, the dQ kernel's loop = the
#   forward's ranges) and why.
#
# **What you write**: the sink logit's gradient, the mask of the dK/dV kernel's transposed tile,
# and the query-tile ranges of the dK/dV kernel (window and sink phases). The forward (Problem 7's
# ranges, plus the sink logit), the rest of the tile steps, the dQ kernel and the autograd wrapper
# are given.
#
# **Points**: 10, in seven graded cells (basic + GQA 1, ragged + layout 1, window 2, sinks 2,
# sink logits 2, tile skipping 1, training 1).

# %% export=true
import autograder  # first: picks the GPU or the CPU tier (Triton interpreter) before any kernel is defined

import math

import torch
import triton
import triton.language as tl

from autograder.tiles import attention_tiles, backward_tiles

# log2(e): exp(x) = exp2(x * LOG2E). A Python float for the wrappers, which fold it into qk_scale and pass
# that to the kernels. A @triton.jit body cannot read it: a global there must be a tl.constexpr (like the
# mask modes below), or it compiles only in the interpreter and fails on a GPU.
LOG2E = 1.4426950408889634

# %% [markdown]
# ## The idea
#
# ### Which queries see a key tile
#
# Key `j` is visible from query `i` when `j <= i` and (`j >= i - (W - 1)` or `j < S`). The
# forward reads that along a *row* (fixed `i`: which keys does query `i` see?). The dK/dV kernel
# reads it along a *column*: key `j`'s gradient collects from the queries that see `j`. Work out
# that set from the rule, for a key inside the window only and for a sink: it is what the rest of
# this problem is built on. For a key tile `[start_n, start_n + BLOCK_N)` the dK/dV kernel visits
# query tiles in four phases (rows `>= N` load as zeros with `lse = +inf`, so overshooting `N`
# inside a tile is harmless):
#
# | phase | query rows | mask |
# |---|---|---|
# | diagonal | `[start_n, start_n + BLOCK_N)` | `causal & (window \| sinks)` |
# | unmasked | `[full_lo, full_hi)`, `full_lo = start_n + BLOCK_N`: tiles whose every query sees every key of the tile | none |
# | window edge | `[full_hi, hi)`: the later tiles that see only some keys of the tile; `hi` ends the last of them | `causal & (window \| sinks)` |
# | sinks | `[hi, N)`, only when the key tile holds sinks (`start_n < S`) | `j < S` |
#
# Read along a row, the same mask gives the forward's ranges (Problem 7), which the dQ kernel
# reuses unchanged. The mask, `W = 6`, `S = 4`: a column is the set of queries a key's gradient
# collects from.

# %%
from autograder import plots

plots.show_mask(is_causal=True, window_size=6, sink_size=4, n=32)

# %% [markdown]
# The same mask in tiles (`N = 96`, `W = 40`, `S = 4`, `BLOCK_M = 16`, `BLOCK_N = 32`). Left, the
# dK/dV kernel: the program of key tile 0, which holds the sinks, walks down its column: its
# diagonal (masked), the unmasked run (empty here: no query tile below the diagonal sees all 32
# keys of the tile), the window's edge up to `hi`, then the sink phase from `hi` to `N`, where
# only the sink columns count. Right, the dQ kernel: one query tile's row, the forward's phases.
# A later key tile's column has no sink phase: it stops at its `hi`.

# %%
plots.show_backward_tiles(96, 16, 32, is_causal=True, window_size=40, sink_size=4)

# %% [markdown]
# ### The sink logit's gradient
#
# Write `lse_i = log(e^{sink_h} + sum_j e^{s_ij})` and `P_sink_i = exp(sink_h - lse_i)`, the
# weight of "nothing". Three facts are enough to derive `dL / d sink_h` yourself:
#
# * the formulas of Problem 8 are unchanged: `O_i = sum_j P_ij v_j` and `dS_ij = P_ij (dP_ij - delta_i)`
#   with `delta_i = dO_i . O_i` (the sink only changes `lse`, which the forward stores);
# * `O_i = sum_j exp(s_ij - lse_i) v_j` depends on `sink_h` only through `lse_i`: what happens to
#   every weight `exp(s_ij - lse_i)`, hence to `O_i`, when `lse_i` grows by a small `eps`?
# * `d lse_i / d sink_h` is the derivative of a log-sum-exp with respect to one of its terms.
#
# Chain them: `dL / d sink_h = sum over b, i of dO_i . (d O_i / d sink_h)`. The result is one more
# term in the kernel that already computes `delta`; mind its sign (raising a sink logit takes
# probability away from every key). The forward stores `lse` in base 2, `lse2 = lse * log2(e)`,
# so write `P_sink` with `exp2`.
#
# The forward starts each row's online softmax *from the sink*: `m_i = sink_h * log2(e)`, `l_i = 1`
# (a key with score `sink_h` and value 0), so `lse2` includes it and no row is ever empty.

# %% [markdown]
# ## The forward (given)
#
# Problem 7's kernel, renamed `_attn_fwd`, with its mask modes, its loop `_attn_fwd_tiles` and its
# four phases, plus the sink logit (where every row's online softmax starts) and the stored `lse2`.
# `_visible` is Problem 7's predicate with its indices broadcast by the caller, so that the dK/dV
# step below can ask it for the transposed tile.

# %% export=true
@triton.jit
def _visible(offs_m, offs_n, WINDOW, SINKS):
    """Key offs_n visible from query offs_m (causal, W keys, S sinks): Problem 7's predicate, with the
    indices broadcast by the caller (offs_m[:, None], offs_n[None, :]; or transposed)."""
    causal = offs_n <= offs_m
    in_window = offs_n > offs_m - WINDOW          # j >= i - (W - 1)
    is_sink = offs_n < SINKS
    return causal & (in_window | is_sink)


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
            visible = _visible(offs_m[:, None], offs_n[None, :], WINDOW, SINKS)
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


@triton.jit(do_not_specialize=["N_Q_HEADS", "WINDOW", "SINKS"])
def _attn_fwd(
    Q_ptr, K_ptr, V_ptr, O_ptr, LSE_ptr, Sink_ptr,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    N, N_Q_HEADS, qk_scale, WINDOW, SINKS,
    GROUP: tl.constexpr, IS_CAUSAL: tl.constexpr, HAS_SINK_LOGITS: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    n_m = tl.cdiv(N, BLOCK_M)
    # which query tile, the fast index; causal: late tiles visit the most key tiles, so they go first
    pid_m = n_m - 1 - tl.program_id(0) % n_m if IS_CAUSAL else tl.program_id(0) % n_m
    off_bh = tl.program_id(0) // n_m          # which (batch, head)
    b = off_bh // N_Q_HEADS
    h = off_bh % N_Q_HEADS
    Q_ptr += b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    O_ptr += b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    # GROUP consecutive query heads share one K/V head: read it in place, no copy
    kv_h = h // GROUP
    K_ptr += b.to(tl.int64) * stride_kb + kv_h.to(tl.int64) * stride_kh
    V_ptr += b.to(tl.int64) * stride_vb + kv_h.to(tl.int64) * stride_vh
    LSE_ptr += off_bh.to(tl.int64) * N                   # [B, Hq, N], contiguous

    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)             # [BLOCK_M] query rows of this program
    offs_d = tl.arange(0, HEAD_DIM)                      # [HEAD_DIM]
    # the query tile: loaded once, kept on chip for the whole loop; rows past N load as 0
    q_ptrs = Q_ptr + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=offs_m[:, None] < N, other=0.0)   # [BLOCK_M, HEAD_DIM], bf16/fp16

    if HAS_SINK_LOGITS:
        # start from the sink: a key with score sink_h (base 2) and value 0
        m_i = tl.zeros([BLOCK_M], dtype=tl.float32) + tl.load(Sink_ptr + h).to(tl.float32) * 1.4426950408889634
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32) + 1.0
    else:
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
        # whole tiles holding keys 0 .. S-1, but only those left of the window: the window phases
        # visit (and their mask counts) any sink at or after lo
        sink_hi = tl.minimum(tl.cdiv(SINKS, BLOCK_N) * BLOCK_N, lo)
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
    # the backward's only memory of P: one base-2 log-sum-exp per row (the sink logit included)
    tl.store(LSE_ptr + offs_m, m_i + tl.math.log2(l_i), mask=offs_m < N)


# %% [markdown]
# ## delta, and the sink logit's gradient
#
# **Your part 1.** The kernel computes `delta` for one query tile of one head (given). When the
# model has sink logits, add this tile's share of `d sink_h`: the sum over the tile's rows of the
# term you derived above. `sink_h` is at `Sink_ptr + h`; the tile's `lse2` is laid out as `delta`
# is stored (rows past `N` must contribute 0: which `other=` value makes their `P_sink` vanish?).
# Store the share at `DSink_ptr + pid`: the wrapper sums the partial results of all tiles and
# batches (a `[B, Hq, n_tiles]` tensor, `.sum((0, 2))`): deterministic, no atomics. A kernel cannot
# read the notebook's `LOG2E` (see the note where it is defined).

# %% solution="p9_dsink" export=true
@triton.jit
def _attn_bwd_delta(O_ptr, DO_ptr, Delta_ptr, LSE_ptr, Sink_ptr, DSink_ptr,
                    stride_ob, stride_oh, stride_on, stride_od,
                    stride_dob, stride_doh, stride_don, stride_dod,
                    N, N_Q_HEADS, HAS_SINK_LOGITS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    n_m = tl.cdiv(N, BLOCK_M)
    off_bh = tl.program_id(0) // n_m
    b = off_bh // N_Q_HEADS
    h = off_bh % N_Q_HEADS
    offs_m = tl.program_id(0) % n_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    in_rows = offs_m[:, None] < N
    o = tl.load(O_ptr + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
                + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od, mask=in_rows, other=0.0)
    do = tl.load(DO_ptr + b.to(tl.int64) * stride_dob + h.to(tl.int64) * stride_doh
                 + offs_m[:, None] * stride_don + offs_d[None, :] * stride_dod, mask=in_rows, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(Delta_ptr + off_bh.to(tl.int64) * N + offs_m, delta, mask=offs_m < N)
    if HAS_SINK_LOGITS:
        pid = tl.program_id(0)
        ### BEGIN SOLUTION
        sink2 = tl.load(Sink_ptr + h).to(tl.float32) * 1.4426950408889634
        lse = tl.load(LSE_ptr + off_bh.to(tl.int64) * N + offs_m, mask=offs_m < N, other=float("inf"))
        p_sink = tl.math.exp2(sink2 - lse)                                  # [BLOCK_M]
        tl.store(DSink_ptr + pid, -tl.sum(p_sink * delta, 0))
        ### END SOLUTION


# %% [markdown]
# ## The tile steps (Problem 8's, with Problem 7's masks)
#
# The modes are the forward's: `NO_MASK`, `BOUNDS` (`j < N`), `CAUSAL_WINDOW_SINKS` (`_visible`:
# `causal & (window | sinks)`) and `SINK_KEYS` (`j < S`).
#
# **Your part 2: the mask of the transposed tile.** `_bwd_dkdv_step` is the dK/dV kernel's step;
# all of it is given except its mask. The program owns a key tile, so its tile is *transposed*:
# `pT` is `[BLOCK_N, BLOCK_M]`, row `r` is key `offs_n[r]` and column `c` is query `offs_m[c]`.
# `pT` is recomputed from the scores and `lse` alone, so it is nonzero for *every* pair of the
# tile, including those the forward never let through: whatever the mask leaves in flows into
# `dV` and `dK`. Set `pT` to 0 where the pair is not visible, by mode:
#
# * `CAUSAL_WINDOW_SINKS` (the diagonal and window-edge phases): `_visible(i, j, WINDOW, SINKS)`,
#   the forward's predicate, is true when query `i` sees key `j`; it takes its indices broadcast
#   by the caller. The forward and the dQ step (below) ask it about a `[BLOCK_M, BLOCK_N]` tile of
#   queries x keys. Ask it about yours: which of `offs_m`, `offs_n` is the query here, and how
#   must each be broadcast for the answer to have `pT`'s shape?
# * `SINK_KEYS` (the sink phase): the query tiles past the window of every key of the tile, which
#   still see the tile's sink keys and nothing else. Which rows of `pT` survive, and which index
#   decides it?
# * `NO_MASK`: every pair counts. Rows past `N` load as zeros with `lse = +inf`, so their
#   probabilities are already exactly 0: no bounds mask is needed either.
#
# The checks recompute `dK, dV` with the masks people get wrong (query and key swapped, the
# window forgotten, the wrong sink test) and say which one yours matches.

# %% solution="p9_dkdv_mask" export=true
@triton.jit
def _bwd_dkdv_step(dk, dv, k, v, Q_ptr, DO_ptr, LSE_ptr, Delta_ptr,
                   stride_qn, stride_qd, stride_don, stride_dod,
                   start_m, offs_n, offs_d, N, qk_scale, WINDOW, SINKS,
                   MASK: tl.constexpr, BLOCK_M: tl.constexpr):
    offs_m = start_m + tl.arange(0, BLOCK_M)
    in_rows = offs_m[:, None] < N
    q = tl.load(Q_ptr + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd, mask=in_rows, other=0.0)
    do = tl.load(DO_ptr + offs_m[:, None] * stride_don + offs_d[None, :] * stride_dod, mask=in_rows, other=0.0)
    lse = tl.load(LSE_ptr + offs_m, mask=offs_m < N, other=float("inf"))     # [BLOCK_M], base 2
    delta = tl.load(Delta_ptr + offs_m, mask=offs_m < N, other=0.0)
    qkT = tl.dot(k, tl.trans(q)) * qk_scale                                 # [BLOCK_N, BLOCK_M]
    pT = tl.math.exp2(qkT - lse[None, :])
    ### BEGIN SOLUTION
    if MASK == CAUSAL_WINDOW_SINKS:
        pT = tl.where(_visible(offs_m[None, :], offs_n[:, None], WINDOW, SINKS), pT, 0.0)
    elif MASK == SINK_KEYS:
        pT = tl.where(offs_n[:, None] < SINKS, pT, 0.0)
    ### END SOLUTION
    dv += tl.dot(pT.to(do.dtype), do)
    dpT = tl.dot(v, tl.trans(do))                                           # [BLOCK_N, BLOCK_M]
    dsT = pT * (dpT - delta[None, :])
    dk += tl.dot(dsT.to(q.dtype), q)
    return dk, dv


# %% [markdown]
# Given: the dQ step (the same masks on the untransposed tile: a query tile's row of keys) and the
# loop that runs the dK/dV step over one phase's query tiles.

# %% export=true
@triton.jit
def _bwd_dq_step(dq, q, do, lse, delta, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                 start_n, offs_m, offs_d, N, qk_scale, WINDOW, SINKS,
                 MASK: tl.constexpr, BLOCK_N: tl.constexpr):
    offs_n = start_n + tl.arange(0, BLOCK_N)
    in_keys = offs_n[:, None] < N
    k = tl.load(K_ptr + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=in_keys, other=0.0)
    v = tl.load(V_ptr + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=in_keys, other=0.0)
    qk = tl.dot(q, tl.trans(k)) * qk_scale                                  # [BLOCK_M, BLOCK_N], base 2
    p = tl.math.exp2(qk - lse[:, None])
    if MASK == BOUNDS:
        p = tl.where((offs_n < N)[None, :], p, 0.0)
    elif MASK == CAUSAL_WINDOW_SINKS:
        p = tl.where(_visible(offs_m[:, None], offs_n[None, :], WINDOW, SINKS), p, 0.0)
    elif MASK == SINK_KEYS:
        p = tl.where((offs_n < SINKS)[None, :], p, 0.0)
    dp = tl.dot(do, tl.trans(v))                                            # [BLOCK_M, BLOCK_N]
    ds = p * (dp - delta[:, None])
    dq += tl.dot(ds.to(k.dtype), k)
    return dq


@triton.jit
def _bwd_dkdv_tiles(dk, dv, k, v, Q_ptr, DO_ptr, LSE_ptr, Delta_ptr,
                    stride_qn, stride_qd, stride_don, stride_dod,
                    lo, hi, offs_n, offs_d, N, qk_scale, WINDOW, SINKS,
                    MASK: tl.constexpr, BLOCK_M: tl.constexpr):
    # the query tiles [lo, hi) of one query head, one mask
    for start_m in range(lo, hi, BLOCK_M):
        start_m = tl.multiple_of(start_m, BLOCK_M)
        dk, dv = _bwd_dkdv_step(dk, dv, k, v, Q_ptr, DO_ptr, LSE_ptr, Delta_ptr,
                                stride_qn, stride_qd, stride_don, stride_dod,
                                start_m, offs_n, offs_d, N, qk_scale, WINDOW, SINKS, MASK, BLOCK_M)
    return dk, dv


# %% [markdown]
# ## The dK/dV kernel
#
# **Your part 3: the query-tile ranges.** `_dkdv_ranges` says where the phases of the table above
# end for the key tile `[start_n, start_n + BLOCK_N)`. The kernel loops
# `for start_m in range(lo, hi, BLOCK_M)`, so every bound is an exclusive end that falls on a query
# tile boundary: a multiple of `BLOCK_M`, or `N` (`start_n` and `BLOCK_N` are multiples of
# `BLOCK_M`). The diagonal phase is given, `[start_n, start_n + BLOCK_N)`, and the unmasked phase
# starts where it ends, at `full_lo = start_n + BLOCK_N`. The phases must cover every query tile
# that sees a key of the tile exactly once, and no other (the checks count the tiles loaded):
#
# * `hi`: the end of the window phases, the first tile boundary (or `N`) from which on no query
#   sees a key of the tile through the window. Derive it from the mask: which is the last query
#   that sees the tile's *last* key, and which query tile holds it? Never past `N`.
# * `full_hi`: the end of the unmasked phase. A tile `[a, a + BLOCK_M)` of `[full_lo, full_hi)`
#   runs with no mask at all, so every query of it must see every key of the tile, even the
#   *first*. `full_hi` is defined as the exclusive end of the last tile after the diagonal that
#   does: the largest `a + BLOCK_M` over those tiles. The tiles between `full_hi` and `hi` see
#   only part of the key tile and run masked (the window edge). Keep the phases in order,
#   `full_lo <= full_hi <= hi`, so they never overlap or run backwards: when no tile after the
#   diagonal sees every key (a window narrower than the key tile), the unmasked phase is empty.
#   A last query tile that runs past `N` may fall in either phase: every phase loads its rows
#   bounded by `N` (and their `lse` as infinity, so their `p` is 0), so only the mask decides.
# * `sink_hi`: the end of the sink phase `[hi, sink_hi)`. A key tile that holds a sink key
#   (`start_n < SINKS`): which queries after the window still see one of its keys? A tile with no
#   sink: an empty phase.
#
# `WINDOW` and `SINKS` are always numbers: the wrapper passes `WINDOW = N` when there is no window
# and `SINKS = 0` when there are no sinks, so the same four phases serve plain causal attention too.
# Check your bounds there: the diagonal, then every later query tile unmasked.

# %% solution="p9_dkdv_ranges" export=true
@triton.jit
def _dkdv_ranges(start_n, N, WINDOW, SINKS, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Query-tile bounds for the key tile [start_n, start_n + BLOCK_N): diagonal [start_n, start_n + BLOCK_N),
    unmasked [start_n + BLOCK_N, full_hi), window edge [full_hi, hi), sinks [hi, sink_hi)."""
    ### BEGIN SOLUTION
    # queries see a key for W rows after it: the window, transposed
    hi = tl.minimum(tl.cdiv(start_n + BLOCK_N + WINDOW - 1, BLOCK_M) * BLOCK_M, N)
    full_hi = tl.minimum(tl.maximum((start_n + WINDOW) // BLOCK_M * BLOCK_M, start_n + BLOCK_N), hi)
    # a tile holding sinks is seen by every later query
    sink_hi = tl.where(start_n < SINKS, N, hi)
    ### END SOLUTION
    return hi, full_hi, sink_hi


# %% [markdown]
# The rest of the dK/dV kernel is built as Problem 8's: a program per key tile and K/V head sums
# the steps of every query head of its group into `dk, dv` (`for g in range(GROUP)`,
# `h = kv_h * GROUP + g`), scales `dk` by `sm_scale` once and stores. One addition, for speed: the
# sink phase gets programs of its own.
#
# A key tile holding sinks is seen by every query, so its sink phase runs to `N`: with `N = 8192`
# and 8 query heads per K/V head that is 2048 query tiles, while the other tiles do a few dozen,
# and the whole backward would wait for that one program. And most of the work would be wasted:
# the phase's mask keeps only the `S` sink columns of a `BLOCK_N`-key tile (4 of 64 in GPT-OSS's
# shape).
#
# So a key tile's own program does the three window phases only (`_bwd_dkdv_window`). The wrapper
# launches `N_EXTRA` more programs per (batch, K/V head) after the key tiles
# (`_bwd_dkdv_sink_chunk`). Each takes a narrow block of `SINK_BLOCK` keys (the sinks rounded up to
# 16, the smallest tile `tl.dot` takes) and one chunk of `SINK_CHUNK` query rows of the sink phase,
# `[hi + c * SINK_CHUNK, ...)`, with `hi` from your `_dkdv_ranges` for the tile the block lies in.
# All of a sink tile's programs write float32 partials, and `_attn_bwd_sink_sum` adds them in a
# fixed order and rounds once (deterministic, no atomics).

# %% export=true
@triton.jit
def _bwd_dkdv_window(Q_ptr, DO_ptr, LSE_ptr, Delta_ptr, K_ptr, V_ptr, DK_ptr, DV_ptr, WDK_ptr, WDV_ptr,
                     stride_qh, stride_qn, stride_qd, stride_don, stride_dod, stride_doh,
                     stride_kn, stride_kd, stride_vn, stride_vd, stride_dkn, stride_dkd, stride_dvn, stride_dvd,
                     start_n, kv_h, off_bh, n_bh, N, qk_scale, sm_scale, WINDOW, SINKS, has_sink_phase,
                     GROUP: tl.constexpr, IS_CAUSAL: tl.constexpr,
                     HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # the key tile [start_n, start_n + BLOCK_N): its window phases, summed over the query-head group
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    in_keys = offs_n[:, None] < N
    k = tl.load(K_ptr + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=in_keys, other=0.0)
    v = tl.load(V_ptr + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=in_keys, other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    hi, full_hi, _ = _dkdv_ranges(start_n, N, WINDOW, SINKS, BLOCK_M, BLOCK_N)     # [hi, sink_hi): other programs
    diag_hi = tl.minimum(start_n + BLOCK_N, N)
    full_lo = start_n + BLOCK_N
    for g in range(GROUP):
        h = (kv_h * GROUP + g).to(tl.int64)
        Qh, DOh, LSEh, Deltah = Q_ptr + h * stride_qh, DO_ptr + h * stride_doh, LSE_ptr + h * N, Delta_ptr + h * N
        if IS_CAUSAL:
            dk, dv = _bwd_dkdv_tiles(dk, dv, k, v, Qh, DOh, LSEh, Deltah, stride_qn, stride_qd, stride_don,
                                     stride_dod, start_n, diag_hi, offs_n, offs_d, N, qk_scale, WINDOW, SINKS,
                                     CAUSAL_WINDOW_SINKS, BLOCK_M)
            dk, dv = _bwd_dkdv_tiles(dk, dv, k, v, Qh, DOh, LSEh, Deltah, stride_qn, stride_qd, stride_don,
                                     stride_dod, full_lo, full_hi, offs_n, offs_d, N, qk_scale, WINDOW, SINKS,
                                     NO_MASK, BLOCK_M)
            dk, dv = _bwd_dkdv_tiles(dk, dv, k, v, Qh, DOh, LSEh, Deltah, stride_qn, stride_qd, stride_don,
                                     stride_dod, full_hi, hi, offs_n, offs_d, N, qk_scale, WINDOW, SINKS,
                                     CAUSAL_WINDOW_SINKS, BLOCK_M)
        else:
            dk, dv = _bwd_dkdv_tiles(dk, dv, k, v, Qh, DOh, LSEh, Deltah, stride_qn, stride_qd, stride_don,
                                     stride_dod, 0, N, offs_n, offs_d, N, qk_scale, WINDOW, SINKS, NO_MASK, BLOCK_M)
    dk *= sm_scale
    if has_sink_phase & (start_n < SINKS):
        # float32 partials, each [sink tile, B * Hkv, BLOCK_N, HEAD_DIM]: the sink phase is added later
        part = ((start_n // BLOCK_N * n_bh + off_bh).to(tl.int64) * BLOCK_N
                + tl.arange(0, BLOCK_N)[:, None]) * HEAD_DIM + offs_d[None, :]
        tl.store(WDK_ptr + part, dk)
        tl.store(WDV_ptr + part, dv)
    else:
        tl.store(DK_ptr + offs_n[:, None] * stride_dkn + offs_d[None, :] * stride_dkd,
                 dk.to(DK_ptr.dtype.element_ty), mask=in_keys)
        tl.store(DV_ptr + offs_n[:, None] * stride_dvn + offs_d[None, :] * stride_dvd,
                 dv.to(DV_ptr.dtype.element_ty), mask=in_keys)


@triton.jit
def _bwd_dkdv_sink_chunk(Q_ptr, DO_ptr, LSE_ptr, Delta_ptr, K_ptr, V_ptr, SDK_ptr, SDV_ptr,
                         stride_qh, stride_qn, stride_qd, stride_don, stride_dod, stride_doh,
                         stride_kn, stride_kd, stride_vn, stride_vd,
                         block, chunk, kv_h, off_bh, n_bh, N, qk_scale, sm_scale, WINDOW, SINKS,
                         SINK_CHUNK, N_CHUNKS,
                         GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_N: tl.constexpr, SINK_BLOCK: tl.constexpr):
    # keys [block * SINK_BLOCK, + SINK_BLOCK), query rows: chunk `chunk` of their tile's sink phase
    start_s = block * SINK_BLOCK
    hi, full_hi, sink_hi = _dkdv_ranges(start_s // BLOCK_N * BLOCK_N, N, WINDOW, SINKS, BLOCK_M, BLOCK_N)
    chunk_lo = hi + chunk * SINK_CHUNK
    chunk_hi = tl.minimum(sink_hi, chunk_lo + SINK_CHUNK)
    offs_s = start_s + tl.arange(0, SINK_BLOCK)
    offs_d = tl.arange(0, HEAD_DIM)
    in_keys = offs_s[:, None] < N
    k = tl.load(K_ptr + offs_s[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=in_keys, other=0.0)
    v = tl.load(V_ptr + offs_s[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=in_keys, other=0.0)
    dk = tl.zeros([SINK_BLOCK, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([SINK_BLOCK, HEAD_DIM], dtype=tl.float32)
    for g in range(GROUP):
        h = (kv_h * GROUP + g).to(tl.int64)
        dk, dv = _bwd_dkdv_tiles(dk, dv, k, v, Q_ptr + h * stride_qh, DO_ptr + h * stride_doh, LSE_ptr + h * N,
                                 Delta_ptr + h * N, stride_qn, stride_qd, stride_don, stride_dod,
                                 chunk_lo, chunk_hi, offs_s, offs_d, N, qk_scale, WINDOW, SINKS, SINK_KEYS,
                                 BLOCK_M)
    dk *= sm_scale
    # float32 partials, each [sink block, chunk, B * Hkv, SINK_BLOCK, HEAD_DIM]
    part = (((block * N_CHUNKS + chunk) * n_bh + off_bh).to(tl.int64) * SINK_BLOCK
            + tl.arange(0, SINK_BLOCK)[:, None]) * HEAD_DIM + offs_d[None, :]
    tl.store(SDK_ptr + part, dk)
    tl.store(SDV_ptr + part, dv)


@triton.jit(do_not_specialize=["N_KV_HEADS", "WINDOW", "SINKS", "N_EXTRA"])
def _attn_bwd_dkdv(
    Q_ptr, K_ptr, V_ptr, DO_ptr, LSE_ptr, Delta_ptr, DK_ptr, DV_ptr, WDK_ptr, WDV_ptr, SDK_ptr, SDV_ptr,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    N, N_KV_HEADS, qk_scale, sm_scale, WINDOW, SINKS, SINK_CHUNK, N_CHUNKS, N_EXTRA,
    GROUP: tl.constexpr, IS_CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SINK_BLOCK: tl.constexpr,
):
    # one grid axis; per (batch, K/V head): its key tiles, then N_EXTRA sink-phase programs
    n_tiles = tl.cdiv(N, BLOCK_N)
    n_progs = n_tiles + N_EXTRA
    off_bh = tl.program_id(0) // n_progs
    n_bh = tl.num_programs(0) // n_progs
    b = off_bh // N_KV_HEADS
    kv_h = off_bh % N_KV_HEADS
    pid = tl.program_id(0) % n_progs
    Q_ptr += b.to(tl.int64) * stride_qb
    DO_ptr += b.to(tl.int64) * stride_dob
    K_ptr += b.to(tl.int64) * stride_kb + kv_h.to(tl.int64) * stride_kh
    V_ptr += b.to(tl.int64) * stride_vb + kv_h.to(tl.int64) * stride_vh
    LSE_ptr += b.to(tl.int64) * (N_KV_HEADS * GROUP) * N
    Delta_ptr += b.to(tl.int64) * (N_KV_HEADS * GROUP) * N
    if pid < n_tiles:
        _bwd_dkdv_window(Q_ptr, DO_ptr, LSE_ptr, Delta_ptr, K_ptr, V_ptr,
                         DK_ptr + b.to(tl.int64) * stride_dkb + kv_h.to(tl.int64) * stride_dkh,
                         DV_ptr + b.to(tl.int64) * stride_dvb + kv_h.to(tl.int64) * stride_dvh, WDK_ptr, WDV_ptr,
                         stride_qh, stride_qn, stride_qd, stride_don, stride_dod, stride_doh,
                         stride_kn, stride_kd, stride_vn, stride_vd, stride_dkn, stride_dkd, stride_dvn, stride_dvd,
                         tl.multiple_of(pid * BLOCK_N, BLOCK_N), kv_h, off_bh, n_bh, N, qk_scale, sm_scale,
                         WINDOW, SINKS, N_EXTRA > 0, GROUP, IS_CAUSAL, HEAD_DIM, BLOCK_M, BLOCK_N)
    else:
        _bwd_dkdv_sink_chunk(Q_ptr, DO_ptr, LSE_ptr, Delta_ptr, K_ptr, V_ptr, SDK_ptr, SDV_ptr,
                             stride_qh, stride_qn, stride_qd, stride_don, stride_dod, stride_doh,
                             stride_kn, stride_kd, stride_vn, stride_vd,
                             (pid - n_tiles) // N_CHUNKS, (pid - n_tiles) % N_CHUNKS, kv_h, off_bh, n_bh, N,
                             qk_scale, sm_scale, WINDOW, SINKS, SINK_CHUNK, N_CHUNKS,
                             GROUP, HEAD_DIM, BLOCK_M, BLOCK_N, SINK_BLOCK)


@triton.jit
def _attn_bwd_sink_sum(
    DK_ptr, DV_ptr, WDK_ptr, WDV_ptr, SDK_ptr, SDV_ptr,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    N, N_KV_HEADS, SINKS, N_CHUNKS, N_BH,
    HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, SINK_BLOCK: tl.constexpr, ROWS: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # one program per ROWS key rows of a sink tile (and batch, K/V head): the window partials, plus
    # (rows of a sink block) their N_CHUNKS sink-phase partials, BLOCK_C chunks at a time in a fixed
    # order; one rounding
    blocks = tl.cdiv(SINKS, BLOCK_N) * BLOCK_N // ROWS
    offs_r = tl.program_id(0) % blocks * ROWS + tl.arange(0, ROWS)                   # key rows
    off_bh = tl.program_id(0) // blocks
    b = off_bh // N_KV_HEADS
    kv_h = off_bh % N_KV_HEADS
    offs_d = tl.arange(0, HEAD_DIM)
    window = (((offs_r // BLOCK_N * N_BH + off_bh).to(tl.int64) * BLOCK_N + offs_r % BLOCK_N) * HEAD_DIM)[:, None] \
        + offs_d[None, :]                                                            # [ROWS, HEAD_DIM]
    dk = tl.load(WDK_ptr + window)
    dv = tl.load(WDV_ptr + window)
    sink_row = (offs_r < tl.cdiv(SINKS, SINK_BLOCK) * SINK_BLOCK)[None, :, None]
    offs_c = tl.arange(0, BLOCK_C)[:, None, None]
    for c0 in range(0, N_CHUNKS, BLOCK_C):                                            # [BLOCK_C, ROWS, HEAD_DIM]
        part = ((((offs_r // SINK_BLOCK * N_CHUNKS)[None, :, None] + c0 + offs_c) * N_BH + off_bh).to(tl.int64)
                * SINK_BLOCK + (offs_r % SINK_BLOCK)[None, :, None]) * HEAD_DIM + offs_d[None, None, :]
        take = sink_row & (c0 + offs_c < N_CHUNKS)
        dk += tl.sum(tl.load(SDK_ptr + part, mask=take, other=0.0), axis=0)
        dv += tl.sum(tl.load(SDV_ptr + part, mask=take, other=0.0), axis=0)
    in_rows = offs_r[:, None] < N
    tl.store(DK_ptr + b.to(tl.int64) * stride_dkb + kv_h.to(tl.int64) * stride_dkh + offs_r[:, None] * stride_dkn
             + offs_d[None, :] * stride_dkd, dk.to(DK_ptr.dtype.element_ty), mask=in_rows)
    tl.store(DV_ptr + b.to(tl.int64) * stride_dvb + kv_h.to(tl.int64) * stride_dvh + offs_r[:, None] * stride_dvn
             + offs_d[None, :] * stride_dvd, dv.to(DV_ptr.dtype.element_ty), mask=in_rows)


# %% [markdown]
# ## The dQ kernel (given)
#
# A query tile's key tiles are the forward's (Problem 7's four phases): the same ranges, the
# same masks, Problem 8's step. One difference: the sink phase steps through `SINK_BLOCK` keys at
# a time (the dK/dV kernel's narrow block), not `BLOCK_N`, so 4 sinks cost a 16-key tile, not 64.

# %% export=true
@triton.jit
def _bwd_dq_tiles(dq, q, do, lse, delta, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                  lo, hi, offs_m, offs_d, N, qk_scale, WINDOW, SINKS,
                  MASK: tl.constexpr, BLOCK_N: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        dq = _bwd_dq_step(dq, q, do, lse, delta, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                          start_n, offs_m, offs_d, N, qk_scale, WINDOW, SINKS, MASK, BLOCK_N)
    return dq


@triton.jit(do_not_specialize=["N_Q_HEADS", "WINDOW", "SINKS"])
def _attn_bwd_dq(
    Q_ptr, K_ptr, V_ptr, DO_ptr, LSE_ptr, Delta_ptr, DQ_ptr,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_dqb, stride_dqh, stride_dqn, stride_dqd,
    N, N_Q_HEADS, qk_scale, sm_scale, WINDOW, SINKS,
    GROUP: tl.constexpr, IS_CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SINK_BLOCK: tl.constexpr,
):
    n_m = tl.cdiv(N, BLOCK_M)                 # one grid axis: the query tile is the fast index
    pid_m = n_m - 1 - tl.program_id(0) % n_m if IS_CAUSAL else tl.program_id(0) % n_m
    off_bh = tl.program_id(0) // n_m
    b = off_bh // N_Q_HEADS
    h = off_bh % N_Q_HEADS
    kv_h = h // GROUP
    K_ptr += b.to(tl.int64) * stride_kb + kv_h.to(tl.int64) * stride_kh
    V_ptr += b.to(tl.int64) * stride_vb + kv_h.to(tl.int64) * stride_vh
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    in_rows = offs_m[:, None] < N
    q = tl.load(Q_ptr + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
                + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd, mask=in_rows, other=0.0)
    do = tl.load(DO_ptr + b.to(tl.int64) * stride_dob + h.to(tl.int64) * stride_doh
                 + offs_m[:, None] * stride_don + offs_d[None, :] * stride_dod, mask=in_rows, other=0.0)
    lse = tl.load(LSE_ptr + off_bh.to(tl.int64) * N + offs_m, mask=offs_m < N, other=float("inf"))
    delta = tl.load(Delta_ptr + off_bh.to(tl.int64) * N + offs_m, mask=offs_m < N, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    if IS_CAUSAL:
        hi = tl.minimum(start_m + BLOCK_M, N)
        lo = tl.maximum(start_m - (WINDOW - 1), 0) // BLOCK_N * BLOCK_N
        last_m = start_m + BLOCK_M - 1
        full_lo = tl.maximum(tl.cdiv(tl.maximum(last_m - (WINDOW - 1), 0), BLOCK_N) * BLOCK_N, lo)
        full_hi = tl.maximum((start_m + 1) // BLOCK_N * BLOCK_N, full_lo)
        # (SINK_BLOCK divides BLOCK_N, so lo is a whole number of sink blocks)
        sink_hi = tl.minimum(tl.cdiv(SINKS, SINK_BLOCK) * SINK_BLOCK, lo)
        dq = _bwd_dq_tiles(dq, q, do, lse, delta, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                           0, sink_hi, offs_m, offs_d, N, qk_scale, WINDOW, SINKS, SINK_KEYS, SINK_BLOCK)
        dq = _bwd_dq_tiles(dq, q, do, lse, delta, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                           lo, full_lo, offs_m, offs_d, N, qk_scale, WINDOW, SINKS, CAUSAL_WINDOW_SINKS, BLOCK_N)
        dq = _bwd_dq_tiles(dq, q, do, lse, delta, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                           full_lo, full_hi, offs_m, offs_d, N, qk_scale, WINDOW, SINKS, NO_MASK, BLOCK_N)
        dq = _bwd_dq_tiles(dq, q, do, lse, delta, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                           full_hi, hi, offs_m, offs_d, N, qk_scale, WINDOW, SINKS, CAUSAL_WINDOW_SINKS, BLOCK_N)
    else:
        n_full = N // BLOCK_N * BLOCK_N
        dq = _bwd_dq_tiles(dq, q, do, lse, delta, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                           0, n_full, offs_m, offs_d, N, qk_scale, WINDOW, SINKS, NO_MASK, BLOCK_N)
        dq = _bwd_dq_tiles(dq, q, do, lse, delta, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                           n_full, N, offs_m, offs_d, N, qk_scale, WINDOW, SINKS, BOUNDS, BLOCK_N)
    dq *= sm_scale
    tl.store(DQ_ptr + b.to(tl.int64) * stride_dqb + h.to(tl.int64) * stride_dqh
             + offs_m[:, None] * stride_dqn + offs_d[None, :] * stride_dqd, dq.to(DQ_ptr.dtype.element_ty),
             mask=in_rows)


# %% [markdown]
# ## The autograd wrapper (given)
#
# `sink_logits` is an optional `[Hq]` tensor (an `nn.Parameter` in a model); when given, the
# backward returns its gradient too.

# %% export=true
class FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, sink_logits, is_causal, window, sinks):
        B, Hq, N, D = q.shape
        Hkv = k.shape[1]
        o = torch.empty_like(q)
        lse = torch.empty((B, Hq, N), device=q.device, dtype=torch.float32)
        cfg = attention_tiles(D, q.dtype, is_causal)
        has_sink = sink_logits is not None
        sink = sink_logits.detach().float().contiguous() if has_sink else lse    # a placeholder pointer
        _attn_fwd[(triton.cdiv(N, cfg["BLOCK_M"]) * B * Hq,)](
            q, k, v, o, lse, sink, *q.stride(), *k.stride(), *v.stride(), *o.stride(),
            N, Hq, 1.0 / math.sqrt(D) * LOG2E, window, sinks,
            GROUP=Hq // Hkv, IS_CAUSAL=is_causal, HAS_SINK_LOGITS=has_sink, HEAD_DIM=D,
            BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
        ctx.save_for_backward(q, k, v, o, lse, sink)
        ctx.args = (is_causal, window, sinks, has_sink, sink_logits.dtype if has_sink else None)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, sink = ctx.saved_tensors
        is_causal, window, sinks, has_sink, sink_dtype = ctx.args
        B, Hq, N, D = q.shape
        Hkv = k.shape[1]
        cfg = backward_tiles(D, q.dtype)
        sm_scale = 1.0 / math.sqrt(D)
        n_tiles = triton.cdiv(N, cfg["BLOCK_M2"])
        delta = torch.empty_like(lse)
        dsink = torch.empty((B, Hq, n_tiles), device=q.device, dtype=torch.float32) if has_sink else delta
        _attn_bwd_delta[(n_tiles * B * Hq,)](
            o, do, delta, lse, sink, dsink, *o.stride(), *do.stride(), N, Hq,
            HAS_SINK_LOGITS=has_sink, HEAD_DIM=D, BLOCK_M=cfg["BLOCK_M2"])
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        common = dict(IS_CAUSAL=is_causal, GROUP=Hq // Hkv, HEAD_DIM=D,
                      num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
        bm, bn = cfg["BLOCK_M1"], cfg["BLOCK_N1"]
        # the sink phase: blocks of SINK_BLOCK keys (the sinks, rounded up to tl.dot's 16; a divisor of
        # both kernels' key tiles) x chunks of about a window's worth of query rows (whole query tiles)
        sink_block = min(max(triton.next_power_of_2(sinks), 16), cfg["BLOCK_N2"])
        chunk = triton.cdiv(max(window, 256 if q.is_cuda else 2 * bm), bm) * bm
        n_blocks = triton.cdiv(sinks, sink_block) if is_causal and window < N else 0
        n_chunks = triton.cdiv(N, chunk)
        n_extra = n_blocks * n_chunks
        n_bh = B * Hkv
        sink_rows = triton.cdiv(sinks, bn) * bn              # the key rows of the tiles holding sinks
        # float32 partials, every slot written: the sink tiles' window phases, the sink-phase chunks
        window_parts = torch.empty((2, sink_rows * n_bh * D if n_extra else 1),
                                   device=q.device, dtype=torch.float32)
        sink_parts = torch.empty((2, max(n_extra * n_bh * sink_block * D, 1)), device=q.device, dtype=torch.float32)
        _attn_bwd_dkdv[((triton.cdiv(N, bn) + n_extra) * n_bh,)](
            q, k, v, do, lse, delta, dk, dv, *window_parts, *sink_parts,
            *q.stride(), *k.stride(), *v.stride(), *do.stride(),
            *dk.stride(), *dv.stride(), N, Hkv, sm_scale * LOG2E, sm_scale, window, sinks, chunk, n_chunks, n_extra,
            BLOCK_M=bm, BLOCK_N=bn, SINK_BLOCK=sink_block, **common)
        if n_extra:
            # (one chunk at a time on the CPU: in the small cases the loop then takes several steps)
            # 16 rows a program; a few chunks at a time on a GPU (registers), all of them in the
            # interpreter (numpy: one big array beats many small ones)
            rows = 16
            _attn_bwd_sink_sum[(sink_rows // rows * n_bh,)](
                dk, dv, *window_parts, *sink_parts, *dk.stride(), *dv.stride(), N, Hkv, sinks, n_chunks, n_bh,
                HEAD_DIM=D, BLOCK_N=bn, SINK_BLOCK=sink_block, ROWS=rows,
                BLOCK_C=min(triton.next_power_of_2(n_chunks), 4 if q.is_cuda else 64))
        _attn_bwd_dq[(n_tiles * B * Hq,)](
            q, k, v, do, lse, delta, dq, *q.stride(), *k.stride(), *v.stride(), *do.stride(),
            *dq.stride(), N, Hq, sm_scale * LOG2E, sm_scale, window, sinks,
            BLOCK_M=cfg["BLOCK_M2"], BLOCK_N=cfg["BLOCK_N2"], SINK_BLOCK=sink_block, **common)
        dsink = dsink.sum((0, 2)).to(sink_dtype) if has_sink else None
        return dq, dk, dv, dsink, None, None, None


def flash_attention_forward(q, k, v, is_causal=False, window_size=None, sink_size=None, sink_logits=None):
    """Differentiable attention with a sliding window of `window_size` keys, `sink_size` sink keys
    (key j visible from query i when j <= i and (j >= i - (W - 1) or j < S)) and optional learned
    sink logits ([Hq]: exp(sink_h) joins each row's softmax denominator), for q [B, Hq, N, D],
    k and v [B, Hkv, N, D] (GQA), any strides. Forward and backward are Triton kernels."""
    B, Hq, Hkv, N, D = autograder.validate_attention_inputs(q, k, v, is_causal, window_size, sink_size)
    if sink_logits is not None:
        if not isinstance(sink_logits, torch.Tensor) or tuple(sink_logits.shape) != (Hq,) \
                or not sink_logits.is_floating_point() or sink_logits.device != q.device:
            raise ValueError(f"sink_logits must be a floating-point tensor of shape ({Hq},) (one logit per query "
                             f"head) on {q.device}, got {getattr(sink_logits, 'shape', type(sink_logits).__name__)}")
    window = N if window_size is None else min(window_size, N)
    sinks = 0 if sink_size is None else min(sink_size, N)
    return FlashAttention.apply(q, k, v, sink_logits, is_causal, window, sinks)


# %% [markdown]
# ## Try it
#
# Not graded. `W = 5`, `S = 12 > W`, with sink logits: prints the largest error of `O, dQ, dK, dV`
# and `d sink` against float64 autograd.

# %%
case = autograder.Case("try", B=1, Hq=4, Hkv=2, N=70, D=16, is_causal=True, window_size=5, sink_size=12,
                       sink_logits=True)
grads = autograder.try_backward(flash_attention_forward, case, problem=9)

# %% [markdown]
# ## Checks
#
# Each cell runs forward and backward against float64 autograd of the dense reference (with the
# sink logit as an extra softmax column) and names the mistake when it can: a dK/dV mask that swaps
# query and key, forgets the window or keeps the wrong sink rows; window bounds transposed in the
# dK/dV loop, a sink tile whose queries stop at the window, `d sink` with the wrong sign or base.

# %% tests="p9_basic" points=1
autograder.check_backward(9, flash_attention_forward, family="basic")
autograder.check_backward(9, flash_attention_forward, family="gqa")
### BEGIN HIDDEN TESTS
autograder.check_backward(9, flash_attention_forward, cases=[
    autograder.Case("gqa", 1, 8, 2, 33, 16, is_causal=True, window_size=7, sink_size=2, seed=901),
])
### END HIDDEN TESTS

# %% tests="p9_ragged" points=1
autograder.check_backward(9, flash_attention_forward, family="ragged")
autograder.check_backward(9, flash_attention_forward, family="layout")
### BEGIN HIDDEN TESTS
autograder.check_backward(9, flash_attention_forward, cases=[
    autograder.Case("ragged", 1, 2, 1, 45, 16, is_causal=True, window_size=10, sink_size=3, seed=911),
    autograder.Case("layout", 1, 4, 2, 29, 16, is_causal=True, window_size=6, sink_size=2, layout="padded", seed=912),
])
### END HIDDEN TESTS

# %% tests="p9_window" points=2
autograder.check_backward(9, flash_attention_forward, family="window")
### BEGIN HIDDEN TESTS
_t = backward_tiles(16, autograder.DTYPE)
_BM, _BN = _t["BLOCK_M1"], _t["BLOCK_N1"]
_N = 3 * _BN + 5
autograder.check_backward(9, flash_attention_forward, cases=[
    autograder.Case("window", 1, 2, 2, _N, 16, is_causal=True, window_size=_BM, seed=921),
    autograder.Case("window", 1, 2, 2, _N, 16, is_causal=True, window_size=_BM + 2, seed=924),
    autograder.Case("window", 1, 2, 1, _N, 16, is_causal=True, window_size=_BN + 1, seed=922),
    autograder.Case("window", 1, 4, 2, _N, 16, is_causal=True, window_size=_BM + _BN - 1, seed=923, layout="bnhd"),
])
### END HIDDEN TESTS

# %% tests="p9_sinks" points=2
autograder.check_backward(9, flash_attention_forward, family="sinks")
### BEGIN HIDDEN TESTS
autograder.check_backward(9, flash_attention_forward, cases=[
    autograder.Case("sinks", 1, 2, 2, _N, 16, is_causal=True, window_size=3, sink_size=_BN, seed=931),
    autograder.Case("sinks", 1, 2, 1, _N, 16, is_causal=True, window_size=5, sink_size=_BN + 2, seed=932),
    autograder.Case("sinks", 1, 2, 2, _N, 16, is_causal=True, window_size=1, sink_size=_BM + 1, seed=933),
    autograder.Case("sinks", 1, 2, 2, _N, 16, is_causal=True, window_size=7, sink_size=_N + 9, seed=934),
])
### END HIDDEN TESTS

# %% [markdown]
# **Sink logits (2 points)**: `d sink` against autograd, with and without a window, causal or not.
# The cell also checks that a wrongly shaped `sink_logits` is refused with a clear message.

# %% tests="p9_logits" points=2
autograder.check_backward(9, flash_attention_forward, family="logits")

q, k, v = autograder.Case("try", B=1, Hq=2, Hkv=2, N=16, D=16).make_inputs()
try:
    flash_attention_forward(q, k, v, is_causal=True, sink_logits=torch.zeros(3))
except ValueError as exc:
    print(f"sink_logits of shape (3,) for 2 heads rejected: {exc}")
else:
    raise AssertionError("flash_attention_forward must reject sink_logits whose shape is not (Hq,)")
### BEGIN HIDDEN TESTS
autograder.check_backward(9, flash_attention_forward, cases=[
    autograder.Case("logits", 2, 4, 1, 37, 16, is_causal=True, window_size=6, sink_size=3, sink_logits=True, seed=941),
    autograder.Case("logits", 1, 2, 2, 1, 32, is_causal=True, sink_logits=True, seed=942),
    autograder.Case("logits", 1, 2, 2, 41, 16, is_causal=True, window_size=1, sink_logits=True, seed=943,
                    spread=3.0),
])
### END HIDDEN TESTS

# %% [markdown]
# **Tile skipping (1 point)**: the output and the gradients right is not enough: with a window,
# the backward's work must grow with `N * W`. This cell counts the query tiles the dK/dV kernel
# loads and the key tiles the forward and dQ kernels load, at a fixed `W` for `N` and `2N` (on the
# CPU tier by watching the interpreter's loads, on a GPU by timing), and fails when either grows
# like `N^2`.

# %% tests="p9_skipping" points=1
from autograder.tile_skipping import check_backward_tile_skipping
check_backward_tile_skipping(9, flash_attention_forward)

# %% [markdown]
# ## Train with it
#
# The capstone of the course: the small GPT of Problem 8, now with a sliding window, sink keys
# and a learned sink logit per head in every layer, trained with your kernels and with PyTorch's
# attention from the same weights. The cell prints the configuration (on the CPU tier a window of
# 8 keys over 24 tokens, 2 sinks, learned logits; about a minute). The curves must coincide, compared
# as in Problem 8. **1 point.**
#
# On a GPU this is where the course pays off: four layers over 8 x 4096 tokens, a window of 512
# keys, 4 sinks, 300 steps. The cell then times a training step with your kernels, with PyTorch's SDPA (which
# has no window: it needs the dense 4096 x 4096 mask, computes every tile, and loses its
# FlashAttention backend) and with compiled FlexAttention (the same block-sparse idea as yours,
# generated from the mask), and prints and plots the three.

# %% tests="p9_training" points=1
from autograder import capstone

history = capstone.train_and_compare(flash_attention_forward, problem=9)

# %% [markdown]
# ## Benchmark
#
# On a GPU: the backward alone at window 1024 (with and without 4 sinks, `N = 16384`) and the
# narrow-window GQA shape of GPT-OSS (`Hq = 64, Hkv = 8, W = 128, S = 4`), next to the reference
# solution and FlexAttention with the same mask.

# %%
results = autograder.bench.benchmark_backward(9, flash_attention_forward)

# %% [markdown]
# ## What to take away
#
# * **A column of the mask is the dK/dV kernel's loop**: the window looks *forward* from a key
#   (`[j, j + W - 1]`) where it looked back from a query; sinks turn one key tile's loop into "to the end".
# * Both loops skip what the mask hides, so training costs `O(N * W)` like inference.
# * **Gradients of extra softmax terms are row-local**: the sink logit's gradient is
#   `-sum_i P_sink_i * delta_i`, one more line in the kernel that computes `delta`.
# * Starting the online softmax from the sink (`m_i = sink`, `l_i = 1`) means no row is ever empty.
#
# **Common mistakes**
#
# * In the transposed tile, `_visible` asked about the key as if it were the query (the shape comes
#   out right, the pairs do not); or the causal mask alone in the dK/dV step, so pairs outside the
#   window (which `pT`, recomputed from the scores, does not know are hidden) add to dK and dV.
# * `hi = start_n + BLOCK_N` (the diagonal only) or `start_n - (W - 1)` (the forward's bound): the
#   window transposed the wrong way. The autograder names it.
# * Forgetting the sink phase: the gradients of sink keys miss every query past their window.
# * `+sum(P_sink * delta)`: the sign. Raising a sink logit takes probability *away* from the keys.
