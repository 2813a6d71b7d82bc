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

LOG2E = 1.4426950408889634      # log2(e): exp(x) = exp2(x * LOG2E)


@triton.jit
def _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                    offs_m, offs_d, lo, hi, N, qk_scale,
                    MASK: tl.constexpr, BLOCK_N: tl.constexpr):
    # Online softmax over key tiles [lo, hi). MASK: 0 = none, 1 = bounds (j < N), 2 = causal (j <= i).
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k_ptrs = K_ptr + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
        v_ptrs = V_ptr + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
        if MASK == 0:
            k = tl.load(k_ptrs)                                           # [BLOCK_N, HEAD_DIM]
            v = tl.load(v_ptrs)
        else:
            k = tl.load(k_ptrs, mask=offs_n[:, None] < N, other=0.0)
            v = tl.load(v_ptrs, mask=offs_n[:, None] < N, other=0.0)
        qk = tl.dot(q, tl.trans(k)) * qk_scale                            # [BLOCK_M, BLOCK_N], base 2
        if MASK == 1:
            qk = tl.where((offs_n < N)[None, :], qk, float("-inf"))
        elif MASK == 2:
            qk = tl.where(offs_n[None, :] <= offs_m[:, None], qk, float("-inf"))
        m_ij = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.math.exp2(qk - m_ij[:, None])
        alpha = tl.math.exp2(m_i - m_ij)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
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
    n_m = tl.cdiv(N, BLOCK_M)                 # one grid axis: the query tile is the fast index
    pid_m = n_m - 1 - tl.program_id(0) % n_m if IS_CAUSAL else tl.program_id(0) % n_m
    off_bh = tl.program_id(0) // n_m
    b = off_bh // N_Q_HEADS
    h = off_bh % N_Q_HEADS
    kv_h = h // GROUP
    Q_ptr += b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    K_ptr += b.to(tl.int64) * stride_kb + kv_h.to(tl.int64) * stride_kh
    V_ptr += b.to(tl.int64) * stride_vb + kv_h.to(tl.int64) * stride_vh
    O_ptr += b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    LSE_ptr += off_bh.to(tl.int64) * N                                    # [B, Hq, N], contiguous

    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q_ptr + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd,
                mask=offs_m[:, None] < N, other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    if IS_CAUSAL:
        full_hi = (start_m + 1) // BLOCK_N * BLOCK_N
        hi = tl.minimum(start_m + BLOCK_M, N)
        acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                                        offs_m, offs_d, 0, full_hi, N, qk_scale, 0, BLOCK_N)
        acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                                        offs_m, offs_d, full_hi, hi, N, qk_scale, 2, BLOCK_N)
    else:
        n_full = N // BLOCK_N * BLOCK_N
        acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                                        offs_m, offs_d, 0, n_full, N, qk_scale, 0, BLOCK_N)
        acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                                        offs_m, offs_d, n_full, N, N, qk_scale, 1, BLOCK_N)
    acc = acc / l_i[:, None]
    tl.store(O_ptr + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od,
             acc.to(O_ptr.dtype.element_ty), mask=offs_m[:, None] < N)
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
    if MASK:
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
                                    start_m, offs_n, offs_d, N, qk_scale, True, BLOCK_M)
        lo = start_n + BLOCK_N
    else:
        lo = 0
    for start_m in range(lo, N, BLOCK_M):
        start_m = tl.multiple_of(start_m, BLOCK_M)
        dk, dv = _bwd_dkdv_step(dk, dv, k, v, Q_ptr, DO_ptr, LSE_ptr, Delta_ptr,
                                stride_qn, stride_qd, stride_don, stride_dod,
                                start_m, offs_n, offs_d, N, qk_scale, False, BLOCK_M)
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
    if MASK == 1:
        p = tl.where((offs_n < N)[None, :], p, 0.0)
    elif MASK == 2:
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
        full_hi = (start_m + 1) // BLOCK_N * BLOCK_N
        for start_n in range(0, full_hi, BLOCK_N):
            start_n = tl.multiple_of(start_n, BLOCK_N)
            dq = _bwd_dq_step(dq, q, do, lse, delta, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                              start_n, offs_m, offs_d, N, qk_scale, 0, BLOCK_N)
        for start_n in range(full_hi, tl.minimum(start_m + BLOCK_M, N), BLOCK_N):
            dq = _bwd_dq_step(dq, q, do, lse, delta, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                              start_n, offs_m, offs_d, N, qk_scale, 2, BLOCK_N)
    else:
        n_full = N // BLOCK_N * BLOCK_N
        for start_n in range(0, n_full, BLOCK_N):
            start_n = tl.multiple_of(start_n, BLOCK_N)
            dq = _bwd_dq_step(dq, q, do, lse, delta, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                              start_n, offs_m, offs_d, N, qk_scale, 0, BLOCK_N)
        for start_n in range(n_full, N, BLOCK_N):
            dq = _bwd_dq_step(dq, q, do, lse, delta, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                              start_n, offs_m, offs_d, N, qk_scale, 1, BLOCK_N)
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
