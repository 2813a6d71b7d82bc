"""Reference solution: Problem 5: Grouped-query attention.

GENERATED from notebooks/p5_grouped_query_attention/p5_grouped_query_attention.py (its export=true cells) by `python tools/build_course.py`.
Do not edit: edit the notebook source and rebuild.
"""

import autograder  # first: picks the GPU or the CPU tier (Triton interpreter) before any kernel is defined

import math

import torch
import triton
import triton.language as tl

from autograder.tiles import attention_tiles


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
            # keys past N sit right of the diagonal of every real row: j <= i covers the bounds too
            qk = tl.where(offs_n[None, :] <= offs_m[:, None], qk, float("-inf"))
        # Every row sees key 0 in its first tile (causal or not), so m_ij is finite from the
        # first tile on and qk - m_ij never computes -inf - (-inf).
        m_ij = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.math.exp2(qk - m_ij[:, None])
        alpha = tl.math.exp2(m_i - m_ij)                                  # rescales what came before
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_ij
    return acc, l_i, m_i


# Head count, window and sink sizes change from call to call without changing the code: one
# compiled kernel serves them all (Triton would compile a variant per value class, == 1 or
# % 16 == 0, which costs grading time). N and the strides stay specialised: measured on an H100,
# knowing N % 16 == 0 is worth 8-12%, and aligned strides are what allow vector loads.
@triton.jit(do_not_specialize=["N_Q_HEADS"])
def _flash_attention_fwd(
    Q_ptr, K_ptr, V_ptr, O_ptr,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    N, N_Q_HEADS, qk_scale,
    GROUP: tl.constexpr, IS_CAUSAL: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # Causal rows near the end see the most keys: launch those query tiles first so the long
    # programs do not start last and leave the GPU idle at the end.
    n_m = tl.cdiv(N, BLOCK_M)                  # one grid axis: query tiles fast, (batch, head) pairs slow
    pid_m = n_m - 1 - tl.program_id(0) % n_m if IS_CAUSAL else tl.program_id(0) % n_m
    off_bh = tl.program_id(0) // n_m
    b = off_bh // N_Q_HEADS
    h = off_bh % N_Q_HEADS
    Q_ptr += b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    O_ptr += b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    # GROUP consecutive query heads share one K/V head: read it in place, no copy
    kv_h = h // GROUP
    K_ptr += b.to(tl.int64) * stride_kb + kv_h.to(tl.int64) * stride_kh
    V_ptr += b.to(tl.int64) * stride_vb + kv_h.to(tl.int64) * stride_vh

    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q_ptr + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd,
                mask=offs_m[:, None] < N, other=0.0)                      # [BLOCK_M, HEAD_DIM]

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)             # running max, base 2
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)                           # running sum of exp2
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)                 # running P @ V

    if IS_CAUSAL:
        # Problem 4's two phases. Key tiles ending at or before row start_m are visible to every
        # row of this query tile: no mask. The tiles after that, up to the last row, cross the
        # diagonal: causal mask.
        full_hi = (start_m + 1) // BLOCK_N * BLOCK_N
        hi = tl.minimum(start_m + BLOCK_M, N)
        acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                                        offs_m, offs_d, 0, full_hi, N, qk_scale, 0, BLOCK_N)
        acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                                        offs_m, offs_d, full_hi, hi, N, qk_scale, 2, BLOCK_N)
    else:
        # Problem 3: whole tiles without a mask, then the ragged last tile with a bounds mask
        n_full = N // BLOCK_N * BLOCK_N
        acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                                        offs_m, offs_d, 0, n_full, N, qk_scale, 0, BLOCK_N)
        acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                                        offs_m, offs_d, n_full, N, N, qk_scale, 1, BLOCK_N)

    acc = acc / l_i[:, None]                  # the one division, after the last tile
    tl.store(O_ptr + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od,
             acc.to(O_ptr.dtype.element_ty), mask=offs_m[:, None] < N)


def flash_attention_forward(q, k, v, is_causal=False, window_size=None, sink_size=None):
    """softmax(q k^T / sqrt(D) + mask) v for q [B, Hq, N, D], k and v [B, Hkv, N, D], any strides.

    Query head h reads K/V head h // (Hq // Hkv). This problem's kernel has no window or sinks:
    it raises if asked for them (Problems 6 and 7 add them)."""
    B, Hq, Hkv, N, D = autograder.validate_attention_inputs(q, k, v, is_causal, window_size, sink_size)
    if window_size is not None or sink_size is not None:
        raise ValueError("this kernel has no sliding window or sinks (Problems 6 and 7 add them)")
    o = torch.empty_like(q)
    cfg = attention_tiles(D, q.dtype, is_causal)
    grid = (triton.cdiv(N, cfg["BLOCK_M"]) * B * Hq,)
    qk_scale = 1.0 / math.sqrt(D) * 1.4426950408889634      # 1/sqrt(D) * log2(e): scores in base 2
    _flash_attention_fwd[grid](
        q, k, v, o, *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        N, Hq, qk_scale,
        GROUP=Hq // Hkv, IS_CAUSAL=is_causal, HEAD_DIM=D,
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return o
