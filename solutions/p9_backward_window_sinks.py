"""Reference solution: Problem 9: the backward with a sliding window, sinks and learned sink logits.

GENERATED from notebooks/p9_backward_window_sinks/p9_backward_window_sinks.py (its export=true cells) by `python tools/build_course.py`.
Do not edit: edit the notebook source and rebuild.
"""

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
        sink2 = tl.load(Sink_ptr + h).to(tl.float32) * 1.4426950408889634
        lse = tl.load(LSE_ptr + off_bh.to(tl.int64) * N + offs_m, mask=offs_m < N, other=float("inf"))
        p_sink = tl.math.exp2(sink2 - lse)                                  # [BLOCK_M]
        tl.store(DSink_ptr + pid, -tl.sum(p_sink * delta, 0))


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
    if MASK == CAUSAL_WINDOW_SINKS:
        pT = tl.where(_visible(offs_m[None, :], offs_n[:, None], WINDOW, SINKS), pT, 0.0)
    elif MASK == SINK_KEYS:
        pT = tl.where(offs_n[:, None] < SINKS, pT, 0.0)
    dv += tl.dot(pT.to(do.dtype), do)
    dpT = tl.dot(v, tl.trans(do))                                           # [BLOCK_N, BLOCK_M]
    dsT = pT * (dpT - delta[None, :])
    dk += tl.dot(dsT.to(q.dtype), q)
    return dk, dv


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


@triton.jit
def _dkdv_ranges(start_n, N, WINDOW, SINKS, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Query-tile bounds for the key tile [start_n, start_n + BLOCK_N): diagonal [start_n, start_n + BLOCK_N),
    unmasked [start_n + BLOCK_N, full_hi), window edge [full_hi, hi), sinks [hi, sink_hi)."""
    # queries see a key for W rows after it: the window, transposed
    hi = tl.minimum(tl.cdiv(start_n + BLOCK_N + WINDOW - 1, BLOCK_M) * BLOCK_M, N)
    full_hi = tl.minimum(tl.maximum((start_n + WINDOW) // BLOCK_M * BLOCK_M, start_n + BLOCK_N), hi)
    # a tile holding sinks is seen by every later query
    sink_hi = tl.where(start_n < SINKS, N, hi)
    return hi, full_hi, sink_hi


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
