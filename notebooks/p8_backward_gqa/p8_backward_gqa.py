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
# # Problem 8: the backward pass (FlashAttention-2, causal, GQA)
#
# Problems 3-7 compute attention. To *train* with your kernel, PyTorch also needs the gradients
# `dQ, dK, dV` of a loss with respect to `q, k, v`, given `dO`, the gradient of the loss with
# respect to the output. The naive backward keeps the `N x N` matrix of probabilities `P` from the
# forward; FlashAttention-2 keeps only one number per query row, the log-sum-exp, and recomputes
# `P` tile by tile.
#
# **What you will learn**
#
# * the five equations of the attention backward, and the one trick (`delta`) that makes the
#   softmax's gradient a row-local correction;
# * why the backward is two kernels: one walks down a *column* of tiles (a key tile, every query
#   tile that sees it) for `dK, dV`; the other walks along a *row* (a query tile, every key tile it
#   sees) for `dQ`. Each accumulates in registers and writes once: no atomics;
# * GQA in reverse: a K/V head is read by `GROUP` query heads, so its gradient is the *sum* of
#   their contributions;
# * how to wrap kernels in a `torch.autograd.Function` so `loss.backward()` calls them.
#
# **What you write**: the tile step of the dK/dV kernel, the tile step of the dQ kernel, and the
# sum over the query-head group. The forward (which now also stores the log-sum-exp), the `delta`
# kernel, the loops over tiles, the causal phases and the autograd wrapper are given.
#
# **Points**: 10, in seven graded cells (basic 1, ragged 2, layout 1, head dims 1, GQA 2,
# autograd contract 1, training 2). Each runs the visible checks you see, plus hidden cases of
# the same kind.

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
# ### The equations
#
# For one head, with `s_ij = (q_i . k_j) / sqrt(D)` (masked scores are `-inf`), the forward is
#
# $$P_{ij} = \exp(s_{ij} - \mathrm{lse}_i), \qquad \mathrm{lse}_i = \log \sum_j e^{s_{ij}}, \qquad O_i = \sum_j P_{ij} v_j .$$
#
# Given `dO`, the chain rule gives, for every visible pair `(i, j)`:
#
# | gradient | formula | computed in |
# |---|---|---|
# | `dV_j` | `sum_i P_ij dO_i` | dK/dV kernel |
# | `dP_ij` | `dO_i . v_j` | both |
# | `dS_ij` | `P_ij (dP_ij - delta_i)`, with `delta_i = dO_i . O_i` | both |
# | `dQ_i` | `(1/sqrt(D)) sum_j dS_ij k_j` | dQ kernel |
# | `dK_j` | `(1/sqrt(D)) sum_i dS_ij q_i` | dK/dV kernel |
#
# `delta` is the softmax's Jacobian in disguise: `dS_ij = P_ij (dP_ij - sum_l P_il dP_il)`, and
# `sum_l P_il dP_il = dO_i . sum_l P_il v_l = dO_i . O_i`. One dot product per row, computed once
# by a small kernel before the two big ones, instead of a sum over all keys inside them.
#
# ### Recomputing P
#
# The forward stores `lse` for every row (4 bytes per row, not `4 N` bytes per row for `P`). The
# backward recomputes a tile of `P` from `q`, `k` and `lse` with one `exp2`, no max, no running
# sum: `lse` already holds the final normaliser. **Base 2**: the forward works on scores in base 2
# (`qk_scale = log2(e) / sqrt(D)`), and the `lse` it stores is the base-2 one,
# `lse2_i = m_i + log2(l_i) = lse_i * log2(e)`, so the backward computes
# `P = exp2(qk * qk_scale - lse2)`. (Problem 1 returned the natural-log `lse`; mixing the two is a
# classic bug, and the checks name it.)
#
# ### Two kernels, no atomics
#
# `dK_j` and `dV_j` sum over queries `i`; `dQ_i` sums over keys `j`. A program that owns a key
# tile can accumulate its `dK, dV` in registers while it streams over the query tiles, and write
# them once; a program that owns a query tile does the same for `dQ`. The price is that `P` and
# `dS` are recomputed in both kernels (FlashAttention-2's choice: about 2.5x the forward's
# matrix-multiply work in total, and no atomic adds).
#
# The dK/dV kernel's schedule for one key tile is the forward's, transposed: causal attention
# lets query `i` see key `j` when `i >= j`, so a key tile is seen by its own diagonal query tiles
# (masked) and by *every query tile below it* (unmasked). In the picture below (causal, `N = 64`),
# the left panel is the dK/dV kernel: the program of one key tile walks *down its column*, a query
# tile at a time. The right panel is the dQ kernel: the program of one query tile walks *along its
# row*, a key tile at a time, as the forward does. Colors are the phases (red: masked diagonal,
# green: no mask); pale pairs are computed in a masked tile and thrown away; white tiles are skipped.

# %%
from autograder import plots

plots.show_backward_tiles(64, 16, 32, is_causal=True)

# %% [markdown]
# | kernel | program owns | loops over | causal phases |
# |---|---|---|---|
# | dK/dV | key tile `[start_n, start_n + BLOCK_N)`, one K/V head | query tiles (`BLOCK_M` rows each) of every query head in its group | diagonal `[start_n, start_n + BLOCK_N)` masked, then `[start_n + BLOCK_N, N)` unmasked |
# | dQ | query tile `[start_m, start_m + BLOCK_M)`, one query head | key tiles (`BLOCK_N` keys each) | `[0, full_hi)` unmasked, diagonal `[full_hi, hi)` masked, `hi = min(start_m + BLOCK_M, N)` (Problem 4) |
#
# Each kernel takes its own `BLOCK_M` and `BLOCK_N`: the wrapper passes `backward_tiles`' `BLOCK_M1`,
# `BLOCK_N1` to the dK/dV kernel and `BLOCK_M2`, `BLOCK_N2` to the dQ kernel.

# %% [markdown]
# ## The forward, now with the log-sum-exp (given)
#
# Problem 5's kernel, renamed `_attn_fwd`, with one more output: `LSE_ptr`, a `[B, Hq, N]` float32
# tensor that gets `m_i + log2(l_i)` for every row. The inner loop `_attn_fwd_tiles` and its mask
# modes (`NO_MASK`, `BOUNDS`, `CAUSAL`) are Problem 5's, unchanged; the tile steps of the backward
# below take the same modes.

# %% export=true
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
            visible = (offs_n[None, :] <= offs_m[:, None]) & in_bounds[None, :]
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


@triton.jit(do_not_specialize=["N_Q_HEADS"])
def _attn_fwd(
    Q_ptr, K_ptr, V_ptr, O_ptr, LSE_ptr,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    N, N_Q_HEADS, qk_scale,
    GROUP: tl.constexpr, IS_CAUSAL: tl.constexpr,
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

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)   # running max, log2 units
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)                 # running sum of exp2
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)       # running sum of p @ v

    if IS_CAUSAL:
        full_hi = start_m // BLOCK_N * BLOCK_N           # key tile holding key start_m: first one to mask
        hi = tl.minimum(start_m + BLOCK_M, N)            # one past the last key any row here may see
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
    # the backward's only memory of P: one base-2 log-sum-exp per row
    tl.store(LSE_ptr + offs_m, m_i + tl.math.log2(l_i), mask=offs_m < N)


# %% [markdown]
# ## delta = rowsum(dO * O) (given)
#
# One program per query tile and head; `delta` is float32 `[B, Hq, N]`, like `lse`.

# %% export=true
@triton.jit
def _attn_bwd_delta(O_ptr, DO_ptr, Delta_ptr,
                    stride_ob, stride_oh, stride_on, stride_od,
                    stride_dob, stride_doh, stride_don, stride_dod,
                    N, N_Q_HEADS, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
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


# %% [markdown]
# ## The dK/dV kernel
#
# **Your part 1: one step.** `_bwd_dkdv_step` is called once per query tile. It holds the key tile
# `k, v` (`[BLOCK_N, HEAD_DIM]`) and the accumulators `dk, dv` (float32); it loads the query tile's
# `q, do` (`[BLOCK_M, HEAD_DIM]`), `lse` and `delta` (`[BLOCK_M]`, given), and must add the tile's
# contribution to `dv` and `dk`: the equations of the table above, restricted to this tile's
# pairs.
#
# Work *transposed*: the program owns keys, so let the keys be the rows. Then the tile of scores
# is `[BLOCK_N, BLOCK_M]` (`P^T` rather than `P`) and `dV_j = sum_i P_ij dO_i` and
# `dK_j = sum_i dS_ij q_i` become plain matrix products that land in `[BLOCK_N, HEAD_DIM]`, the
# shape of `dv` and `dk`. Work out, for each equation, which operand is transposed and what the
# row-wise quantities (`lse`, `delta`: one per *query*) become when queries are the columns.
#
# The mask: when `MASK == CAUSAL` (a tile on the key tile's diagonal), a pair only counts when its
# query may see its key. In this tile row `r` is key `offs_n[r]` and column `c` is query
# `offs_m[c]`: write that condition in those terms, the forward's rule read the other way round.
# The `1/sqrt(D)` of `dK` is applied once, after the loop (given).
#
# `tl.dot` operands in the input dtype, accumulators in float32: the tensor cores take 16-bit
# inputs and add in float32. Rows past `N` load as zeros with `lse = +inf`, so their probabilities
# are exactly 0: no bounds mask is needed on the scores. The checks name the usual mistakes
# (`delta` forgotten, the wrong base, a flipped or missing mask).

# %% solution="p8_dkdv_step" export=true
@triton.jit
def _bwd_dkdv_step(dk, dv, k, v, Q_ptr, DO_ptr, LSE_ptr, Delta_ptr,
                   stride_qn, stride_qd, stride_don, stride_dod,
                   start_m, offs_n, offs_d, N, qk_scale,
                   MASK: tl.constexpr, BLOCK_M: tl.constexpr):
    offs_m = start_m + tl.arange(0, BLOCK_M)
    in_rows = offs_m[:, None] < N
    q = tl.load(Q_ptr + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd, mask=in_rows, other=0.0)
    do = tl.load(DO_ptr + offs_m[:, None] * stride_don + offs_d[None, :] * stride_dod, mask=in_rows, other=0.0)
    lse = tl.load(LSE_ptr + offs_m, mask=offs_m < N, other=float("inf"))     # [BLOCK_M], base 2
    delta = tl.load(Delta_ptr + offs_m, mask=offs_m < N, other=0.0)
    ### BEGIN SOLUTION
    qkT = tl.dot(k, tl.trans(q)) * qk_scale                                 # [BLOCK_N, BLOCK_M]
    pT = tl.math.exp2(qkT - lse[None, :])
    if MASK == CAUSAL:
        pT = tl.where(offs_m[None, :] >= offs_n[:, None], pT, 0.0)
    dv += tl.dot(pT.to(do.dtype), do)
    dpT = tl.dot(v, tl.trans(do))                                           # [BLOCK_N, BLOCK_M]
    dsT = pT * (dpT - delta[None, :])
    dk += tl.dot(dsT.to(q.dtype), q)
    ### END SOLUTION
    return dk, dv


# %% [markdown]
# Given: `_bwd_dkdv_head` runs the steps of one query head over the query tiles that see the key
# tile, in the phases of the table above (the first one masked, the rest not).

# %% export=true
@triton.jit
def _bwd_dkdv_head(dk, dv, k, v, Q_ptr, DO_ptr, LSE_ptr, Delta_ptr,
                   stride_qn, stride_qd, stride_don, stride_dod,
                   start_n, offs_n, offs_d, N, qk_scale,
                   IS_CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    if IS_CAUSAL:
        # the query tiles on the key tile's diagonal need the mask; every later one sees all its keys
        diag_hi = tl.minimum(start_n + BLOCK_N, N)
        for start_m in range(start_n, diag_hi, BLOCK_M):
            dk, dv = _bwd_dkdv_step(dk, dv, k, v, Q_ptr, DO_ptr, LSE_ptr, Delta_ptr,
                                    stride_qn, stride_qd, stride_don, stride_dod,
                                    start_m, offs_n, offs_d, N, qk_scale, CAUSAL, BLOCK_M)
        full_lo = start_n + BLOCK_N
    else:
        full_lo = 0
    for start_m in range(full_lo, N, BLOCK_M):
        start_m = tl.multiple_of(start_m, BLOCK_M)
        dk, dv = _bwd_dkdv_step(dk, dv, k, v, Q_ptr, DO_ptr, LSE_ptr, Delta_ptr,
                                stride_qn, stride_qd, stride_don, stride_dod,
                                start_m, offs_n, offs_d, N, qk_scale, NO_MASK, BLOCK_M)
    return dk, dv


# %% [markdown]
# **Your part 2: the query-head group.** Each program owns one key tile (`start_n`) of
# batch `b`, K/V head `kv_h`. Query heads `kv_h * GROUP ... kv_h * GROUP + GROUP - 1` read this K/V
# head (Problem 5's rule, `kv_h = h // GROUP`), so `dK` and `dV` get a contribution from each of
# them: `dK` and `dV` of a K/V head are sums over its query heads.
#
# `_bwd_dkdv_head(dk, dv, k, v, ...)` (given) adds one query head's contribution, given pointers to
# that head's rows: `q` and `dO` (strided: `stride_qh`, `stride_doh`), `lse` and `delta` (both
# `[B, Hq, N]`, contiguous). The code above has already moved every pointer to batch `b`; what is
# left is to loop over the group, point at each head, and let every head add into the same
# accumulators, so the store after the loop writes the sum once. Offsets that multiply a head index
# by a stride need int64 (as the code above does for `b`): in int32, `h * stride_qh` overflows
# once one batch element of `q` holds 2^31 elements.

# %% solution="p8_dkdv_group" export=true
@triton.jit(do_not_specialize=["N_KV_HEADS"])
def _attn_bwd_dkdv(
    Q_ptr, K_ptr, V_ptr, DO_ptr, LSE_ptr, Delta_ptr, DK_ptr, DV_ptr,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    N, N_KV_HEADS, qk_scale, sm_scale,
    GROUP: tl.constexpr, IS_CAUSAL: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    n_n = tl.cdiv(N, BLOCK_N)                 # one grid axis: the key tile is the fast index
    off_bh = tl.program_id(0) // n_n
    b = off_bh // N_KV_HEADS
    kv_h = off_bh % N_KV_HEADS
    start_n = tl.program_id(0) % n_n * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    in_keys = offs_n[:, None] < N
    k = tl.load(K_ptr + b.to(tl.int64) * stride_kb + kv_h.to(tl.int64) * stride_kh
                + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=in_keys, other=0.0)
    v = tl.load(V_ptr + b.to(tl.int64) * stride_vb + kv_h.to(tl.int64) * stride_vh
                + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=in_keys, other=0.0)
    Q_ptr += b.to(tl.int64) * stride_qb
    DO_ptr += b.to(tl.int64) * stride_dob
    LSE_ptr += b.to(tl.int64) * (N_KV_HEADS * GROUP) * N                  # [B, Hq, N], contiguous
    Delta_ptr += b.to(tl.int64) * (N_KV_HEADS * GROUP) * N
    ### BEGIN SOLUTION
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    for g in range(GROUP):                     # every query head that reads this K/V head adds in
        h = (kv_h * GROUP + g).to(tl.int64)
        dk, dv = _bwd_dkdv_head(dk, dv, k, v, Q_ptr + h * stride_qh, DO_ptr + h * stride_doh,
                                LSE_ptr + h * N, Delta_ptr + h * N,
                                stride_qn, stride_qd, stride_don, stride_dod,
                                start_n, offs_n, offs_d, N, qk_scale, IS_CAUSAL, BLOCK_M, BLOCK_N)
    ### END SOLUTION
    dk *= sm_scale                             # dK = (1/sqrt(D)) dS^T q, the scale applied once
    tl.store(DK_ptr + b.to(tl.int64) * stride_dkb + kv_h.to(tl.int64) * stride_dkh
             + offs_n[:, None] * stride_dkn + offs_d[None, :] * stride_dkd, dk.to(DK_ptr.dtype.element_ty),
             mask=in_keys)
    tl.store(DV_ptr + b.to(tl.int64) * stride_dvb + kv_h.to(tl.int64) * stride_dvh
             + offs_n[:, None] * stride_dvn + offs_d[None, :] * stride_dvd, dv.to(DV_ptr.dtype.element_ty),
             mask=in_keys)


# %% [markdown]
# ## The dQ kernel
#
# **Your part 3: one step.** `_bwd_dq_step` holds the query tile `q, do` (`[BLOCK_M, HEAD_DIM]`),
# its `lse` and `delta` (`[BLOCK_M]`) and the accumulator `dq`; it loads one key tile `k, v`
# (given) and adds that tile's contribution to `dq`: part 1's quantities, now with queries as the
# rows (which row-wise values need no transposing any more?), and the row of the table above that
# gives `dQ`. Masks, chosen by `MASK` as in the forward: `CAUSAL` (`j <= i`) must set `p` to 0
# where the key is not visible. `BOUNDS` (keys past `N`, the ragged last tile of a non-causal
# row) is cheaper than it looks: keys past `N` load as zeros, so work out whether their `p` can
# reach `dq` at all before you mask it (the checks cover ragged `N` either way).

# %% solution="p8_dq_step" export=true
@triton.jit
def _bwd_dq_step(dq, q, do, lse, delta, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                 start_n, offs_m, offs_d, N, qk_scale,
                 MASK: tl.constexpr, BLOCK_N: tl.constexpr):
    offs_n = start_n + tl.arange(0, BLOCK_N)
    in_keys = offs_n[:, None] < N
    k = tl.load(K_ptr + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=in_keys, other=0.0)
    v = tl.load(V_ptr + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=in_keys, other=0.0)
    ### BEGIN SOLUTION
    qk = tl.dot(q, tl.trans(k)) * qk_scale                                  # [BLOCK_M, BLOCK_N], base 2
    p = tl.math.exp2(qk - lse[:, None])
    if MASK == BOUNDS:
        p = tl.where((offs_n < N)[None, :], p, 0.0)
    elif MASK == CAUSAL:
        p = tl.where(offs_n[None, :] <= offs_m[:, None], p, 0.0)
    dp = tl.dot(do, tl.trans(v))                                            # [BLOCK_M, BLOCK_N]
    ds = p * (dp - delta[:, None])
    dq += tl.dot(ds.to(k.dtype), k)
    ### END SOLUTION
    return dq


# %% [markdown]
# Given: the dQ kernel, one program per query tile and query head, with the forward's phases.

# %% export=true
@triton.jit(do_not_specialize=["N_Q_HEADS"])
def _attn_bwd_dq(
    Q_ptr, K_ptr, V_ptr, DO_ptr, LSE_ptr, Delta_ptr, DQ_ptr,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_dqb, stride_dqh, stride_dqn, stride_dqd,
    N, N_Q_HEADS, qk_scale, sm_scale,
    GROUP: tl.constexpr, IS_CAUSAL: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
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
        full_hi = start_m // BLOCK_N * BLOCK_N           # key tile holding key start_m: first one to mask
        hi = tl.minimum(start_m + BLOCK_M, N)            # one past the last key any row here may see
        for start_n in range(0, full_hi, BLOCK_N):
            start_n = tl.multiple_of(start_n, BLOCK_N)
            dq = _bwd_dq_step(dq, q, do, lse, delta, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                              start_n, offs_m, offs_d, N, qk_scale, NO_MASK, BLOCK_N)
        for start_n in range(full_hi, hi, BLOCK_N):
            dq = _bwd_dq_step(dq, q, do, lse, delta, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                              start_n, offs_m, offs_d, N, qk_scale, CAUSAL, BLOCK_N)
    else:
        n_full = N // BLOCK_N * BLOCK_N
        for start_n in range(0, n_full, BLOCK_N):
            start_n = tl.multiple_of(start_n, BLOCK_N)
            dq = _bwd_dq_step(dq, q, do, lse, delta, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                              start_n, offs_m, offs_d, N, qk_scale, NO_MASK, BLOCK_N)
        for start_n in range(n_full, N, BLOCK_N):
            dq = _bwd_dq_step(dq, q, do, lse, delta, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                              start_n, offs_m, offs_d, N, qk_scale, BOUNDS, BLOCK_N)
    dq *= sm_scale                             # dQ = (1/sqrt(D)) dS k, the scale applied once
    tl.store(DQ_ptr + b.to(tl.int64) * stride_dqb + h.to(tl.int64) * stride_dqh
             + offs_m[:, None] * stride_dqn + offs_d[None, :] * stride_dqd, dq.to(DQ_ptr.dtype.element_ty),
             mask=in_rows)


# %% [markdown]
# ## The autograd wrapper (given)
#
# `torch.autograd.Function` pairs a `forward` with its `backward`. `forward` runs the kernel and
# saves what the backward needs (`q, k, v, o, lse`: no `P`); `backward` gets `dO` and returns one
# gradient per input of `forward` (`None` for `is_causal`). `flash_attention_forward` is now
# differentiable: `flash_attention_forward(q, k, v).sum().backward()` fills `q.grad`, `k.grad`,
# `v.grad` with your kernels' results.

# %% export=true
class FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, is_causal):
        B, Hq, N, D = q.shape
        Hkv = k.shape[1]
        o = torch.empty_like(q)
        lse = torch.empty((B, Hq, N), device=q.device, dtype=torch.float32)
        cfg = attention_tiles(D, q.dtype, is_causal)
        _attn_fwd[(triton.cdiv(N, cfg["BLOCK_M"]) * B * Hq,)](
            q, k, v, o, lse, *q.stride(), *k.stride(), *v.stride(), *o.stride(),
            N, Hq, 1.0 / math.sqrt(D) * LOG2E,
            GROUP=Hq // Hkv, IS_CAUSAL=is_causal, HEAD_DIM=D,
            BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.is_causal = is_causal
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        B, Hq, N, D = q.shape
        Hkv = k.shape[1]
        cfg = backward_tiles(D, q.dtype)
        sm_scale = 1.0 / math.sqrt(D)
        delta = torch.empty_like(lse)
        _attn_bwd_delta[(triton.cdiv(N, cfg["BLOCK_M2"]) * B * Hq,)](
            o, do, delta, *o.stride(), *do.stride(), N, Hq, HEAD_DIM=D, BLOCK_M=cfg["BLOCK_M2"])
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        common = dict(IS_CAUSAL=ctx.is_causal, GROUP=Hq // Hkv, HEAD_DIM=D,
                      num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
        _attn_bwd_dkdv[(triton.cdiv(N, cfg["BLOCK_N1"]) * B * Hkv,)](
            q, k, v, do, lse, delta, dk, dv, *q.stride(), *k.stride(), *v.stride(), *do.stride(),
            *dk.stride(), *dv.stride(), N, Hkv, sm_scale * LOG2E, sm_scale,
            BLOCK_M=cfg["BLOCK_M1"], BLOCK_N=cfg["BLOCK_N1"], **common)
        _attn_bwd_dq[(triton.cdiv(N, cfg["BLOCK_M2"]) * B * Hq,)](
            q, k, v, do, lse, delta, dq, *q.stride(), *k.stride(), *v.stride(), *do.stride(),
            *dq.stride(), N, Hq, sm_scale * LOG2E, sm_scale,
            BLOCK_M=cfg["BLOCK_M2"], BLOCK_N=cfg["BLOCK_N2"], **common)
        return dq, dk, dv, None


def flash_attention_forward(q, k, v, is_causal=False, window_size=None, sink_size=None):
    """Differentiable FlashAttention (causal or not, GQA) for q [B, Hq, N, D], k and v [B, Hkv, N, D]:
    the forward and the backward are Triton kernels. No window or sinks (Problem 9 adds them)."""
    autograder.validate_attention_inputs(q, k, v, is_causal, window_size, sink_size)
    if window_size is not None or sink_size is not None:
        raise ValueError("this kernel has no sliding window or sinks (Problem 9 adds them)")
    return FlashAttention.apply(q, k, v, is_causal)


# %% [markdown]
# ## Try it
#
# Not graded. `autograder.try_backward` runs one case forward and backward and prints the largest
# error of `O, dQ, dK, dV` against float64 autograd of the reference. To look at the numbers
# yourself: `q, k, v = case.make_inputs()`, `q.requires_grad_()` (same for `k`, `v`),
# `flash_attention_forward(q, k, v, is_causal=True).backward(do)` with `do = torch.randn_like(q)`,
# then read `q.grad`.

# %%
case = autograder.Case("try", B=1, Hq=4, Hkv=2, N=40, D=16, is_causal=True)
grads = autograder.try_backward(flash_attention_forward, case)

# %% [markdown]
# ## Checks
#
# Each graded cell runs your function forward and backward on one family of cases and compares
# `O, dQ, dK, dV` with float64 autograd of the reference attention. The first failure says which
# gradient is off, where, and when it can tell, which mistake it looks like (a forgotten `delta`,
# `lse` in the wrong base, the scale missing, `dK/dV` not summed over the group, ...).

# %% tests="p8_basic" points=1
autograder.check_backward(8, flash_attention_forward, family="basic")
### BEGIN HIDDEN TESTS
autograder.check_backward(8, flash_attention_forward, cases=[
    autograder.Case("basic", 2, 2, 2, 48, 32, is_causal=True, seed=801),
    autograder.Case("basic", 1, 2, 2, 64, 16, is_causal=False, seed=802),
])
### END HIDDEN TESTS

# %% tests="p8_ragged" points=2
autograder.check_backward(8, flash_attention_forward, family="ragged")
### BEGIN HIDDEN TESTS
autograder.check_backward(8, flash_attention_forward, cases=[
    autograder.Case("ragged", 2, 2, 1, 45, 16, is_causal=True, seed=811),
    autograder.Case("ragged", 1, 2, 2, 3, 32, is_causal=True, seed=812),
    autograder.Case("ragged", 1, 2, 1, 37, 16, is_causal=False, seed=813, spread=3.0),
])
### END HIDDEN TESTS

# %% tests="p8_layout" points=1
autograder.check_backward(8, flash_attention_forward, family="layout")
### BEGIN HIDDEN TESTS
autograder.check_backward(8, flash_attention_forward, cases=[
    autograder.Case("layout", 1, 4, 2, 29, 16, is_causal=True, layout="padded", seed=821),
    autograder.Case("layout", 2, 2, 2, 21, 16, is_causal=False, layout="bhdn", seed=822),
])
### END HIDDEN TESTS

# %% tests="p8_headdim" points=1
autograder.check_backward(8, flash_attention_forward, family="headdim")
### BEGIN HIDDEN TESTS
autograder.check_backward(8, flash_attention_forward, cases=[
    autograder.Case("headdim", 1, 2, 1, 19, 128, is_causal=True, seed=831),
])
### END HIDDEN TESTS

# %% tests="p8_gqa" points=2
autograder.check_backward(8, flash_attention_forward, family="gqa")
### BEGIN HIDDEN TESTS
autograder.check_backward(8, flash_attention_forward, cases=[
    autograder.Case("gqa", 1, 8, 2, 33, 16, is_causal=True, seed=841),
    autograder.Case("gqa", 2, 6, 3, 26, 16, is_causal=False, layout="bnhd", seed=842),
])
### END HIDDEN TESTS

# %% [markdown]
# **The autograd contract (1 point)**: the output requires grad exactly when an input does (not
# under `torch.no_grad()`), gradients flow only to the inputs that ask for them (here only `k`),
# `dO` may be non-contiguous, and a second forward + backward adds into `k.grad`. All of this comes
# from `torch.autograd.Function` when `backward` returns one tensor per input of `forward` and
# addresses `dO` with its own strides.

# %% tests="p8_autograd" points=1
autograder.backward.check_autograd_contract(8, flash_attention_forward)

# %% [markdown]
# ## Train with it
#
# The capstone: a small GPT trained twice from the same initial weights, once with your attention
# and once with PyTorch's (`torch.nn.functional.scaled_dot_product_attention`), on a task generated
# here (no download): every sequence repeats a random phrase (on a GPU: draws its tokens from its
# own 4 of 64), so the model can only lower its loss by attending to earlier tokens, through your
# gradients. The two loss curves must coincide. The cell prints the model it trains: on the
# CPU tier one layer, 2 query heads sharing 1 K/V head, 24 tokens and 30 steps (about a minute in
# the interpreter, with a progress bar). On a GPU four layers train on 8 x 2048 tokens for 300 steps;
# in bf16 the curves agree step by step while the model starts learning, then rounding sends the two
# runs down their own, equally good paths (as it does between two of PyTorch's own attentions), so
# the cell compares the first 100 steps one by one and the last 60 as a mean. It then prints (and
# plots) a training step's time with your kernels, with PyTorch's SDPA
# (its FlashAttention backend) and with compiled FlexAttention: the end-to-end view of the kernels'
# speed that the benchmark below takes apart. **2 points.**

# %% tests="p8_training" points=2
from autograder import capstone

history = capstone.train_and_compare(flash_attention_forward, problem=8)

# %% [markdown]
# ## Benchmark
#
# On a GPU this times the backward alone (`torch.autograd.grad` of a forward done outside the
# timer) with the FlashAttention-2 FLOP convention, `2.5 x` the forward's matmul work over the
# attended pairs, next to the reference solution, SDPA (FlashAttention-2 and cuDNN backends) and
# FlexAttention. On the CPU tier it only says it needs a GPU.

# %%
results = autograder.bench.benchmark_backward(8, flash_attention_forward)

# %% [markdown]
# ## What to take away
#
# * The backward of attention is seven matrix products per pair of tiles, four in the dK/dV
#   kernel and three in the dQ kernel (the scores are recomputed in both), around one `exp2` each.
# * **Recompute, don't store**: `P` costs `N^2` memory; `lse` costs `N`. The forward's one extra
#   store buys a backward with the forward's memory footprint.
# * **`delta = rowsum(dO * O)`** turns the softmax's gradient into a per-row subtraction.
# * **Owner computes**: each gradient tile has exactly one program that owns it and loops over
#   everything that contributes to it; with GQA, that loop runs over the query heads of the group
#   too. No two programs write the same row: no atomics, deterministic results.
# * **Base 2 end to end**: `qk_scale = log2(e) / sqrt(D)`, the stored `lse` is base 2, and the
#   `1/sqrt(D)` of `dQ` and `dK` is applied once, outside the loops.
#
# **Common mistakes**
#
# * `dS` without its `delta` term: `dV` is right, `dQ` and `dK` are not.
# * `exp(qk - lse)` with base-2 scores, or a natural-log `lse` with `exp2`: every `P` is off by a
#   per-row factor.
# * The accumulators started afresh for every head of the group: only the last query head's
#   contribution survives.
# * The scale: `qk_scale` (with `log2(e)`) inside `exp2`, `sm_scale = 1/sqrt(D)` on `dQ` and `dK`.
