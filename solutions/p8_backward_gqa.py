"""Reference solution: Problem 8: the backward pass (FlashAttention-2, causal, GQA).

GENERATED from notebooks/p8_backward_gqa/p8_backward_gqa.py (its export=true cells) by `python tools/build_course.py`.
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
    qkT = tl.dot(k, tl.trans(q)) * qk_scale                                 # [BLOCK_N, BLOCK_M]
    pT = tl.math.exp2(qkT - lse[None, :])
    if MASK == CAUSAL:
        pT = tl.where(offs_m[None, :] >= offs_n[:, None], pT, 0.0)
    dv += tl.dot(pT.to(do.dtype), do)
    dpT = tl.dot(v, tl.trans(do))                                           # [BLOCK_N, BLOCK_M]
    dsT = pT * (dpT - delta[None, :])
    dk += tl.dot(dsT.to(q.dtype), q)
    return dk, dv


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
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    for g in range(GROUP):                     # every query head that reads this K/V head adds in
        h = (kv_h * GROUP + g).to(tl.int64)
        dk, dv = _bwd_dkdv_head(dk, dv, k, v, Q_ptr + h * stride_qh, DO_ptr + h * stride_doh,
                                LSE_ptr + h * N, Delta_ptr + h * N,
                                stride_qn, stride_qd, stride_don, stride_dod,
                                start_n, offs_n, offs_d, N, qk_scale, IS_CAUSAL, BLOCK_M, BLOCK_N)
    dk *= sm_scale                             # dK = (1/sqrt(D)) dS^T q, the scale applied once
    tl.store(DK_ptr + b.to(tl.int64) * stride_dkb + kv_h.to(tl.int64) * stride_dkh
             + offs_n[:, None] * stride_dkn + offs_d[None, :] * stride_dkd, dk.to(DK_ptr.dtype.element_ty),
             mask=in_keys)
    tl.store(DV_ptr + b.to(tl.int64) * stride_dvb + kv_h.to(tl.int64) * stride_dvh
             + offs_n[:, None] * stride_dvn + offs_d[None, :] * stride_dvd, dv.to(DV_ptr.dtype.element_ty),
             mask=in_keys)


@triton.jit
def _bwd_dq_step(dq, q, do, lse, delta, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                 start_n, offs_m, offs_d, N, qk_scale,
                 MASK: tl.constexpr, BLOCK_N: tl.constexpr):
    offs_n = start_n + tl.arange(0, BLOCK_N)
    in_keys = offs_n[:, None] < N
    k = tl.load(K_ptr + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=in_keys, other=0.0)
    v = tl.load(V_ptr + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=in_keys, other=0.0)
    qk = tl.dot(q, tl.trans(k)) * qk_scale                                  # [BLOCK_M, BLOCK_N], base 2
    p = tl.math.exp2(qk - lse[:, None])
    if MASK == BOUNDS:
        p = tl.where((offs_n < N)[None, :], p, 0.0)
    elif MASK == CAUSAL:
        p = tl.where(offs_n[None, :] <= offs_m[:, None], p, 0.0)
    dp = tl.dot(do, tl.trans(v))                                            # [BLOCK_M, BLOCK_N]
    ds = p * (dp - delta[:, None])
    dq += tl.dot(ds.to(k.dtype), k)
    return dq


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
