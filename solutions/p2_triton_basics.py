"""Reference solution: Problem 2: Triton basics (10 points).

GENERATED from notebooks/p2_triton_basics/p2_triton_basics.py (its export=true cells) by `python tools/build_course.py`.
Do not edit: edit the notebook source and rebuild.
"""

import autograder  # first: picks the GPU or the CPU (interpreter) tier before any kernel is defined

import torch
import triton
import triton.language as tl


@triton.jit
def axpb_kernel(X_ptr, Y_ptr, a, b, n, stride_x, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)        # [BLOCK] element indices of this program
    mask = offs < n                                 # the last program sticks out past n
    x = tl.load(X_ptr + offs * stride_x, mask=mask)
    y = a * x.to(tl.float32) + b
    tl.store(Y_ptr + offs, y.to(Y_ptr.dtype.element_ty), mask=mask)


def axpb(x, a, b, BLOCK=256):
    """y = a * x + b for a 1-D tensor x (any stride); y is contiguous, x's dtype."""
    if x.dim() != 1:
        raise ValueError(f"x must be 1-D, got shape {tuple(x.shape)}")
    n = x.shape[0]
    y = torch.empty(n, dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(n, BLOCK),)               # one program per BLOCK elements, the last one partial
    axpb_kernel[grid](x, y, a, b, n, x.stride(0), BLOCK=BLOCK)
    return y


@triton.jit
def row_lse_kernel(X_ptr, LSE_ptr, M, N, stride_xm, stride_xn,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid = tl.program_id(0)
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)          # [BLOCK_M] rows of this program
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)     # running max of each row
    l_i = tl.zeros([BLOCK_M], tl.float32)                   # running sum of exp(x - m_i)
    for start_n in range(0, N, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)            # [BLOCK_N] columns of this tile
        mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
        x = tl.load(X_ptr + offs_m[:, None] * stride_xm + offs_n[None, :] * stride_xn,
                    mask=mask, other=float("-inf")).to(tl.float32)          # [BLOCK_M, BLOCK_N]
        m_new = tl.maximum(m_i, tl.max(x, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)    # no -inf - -inf for empty rows
        l_i = l_i * tl.exp(m_i - m_safe) + tl.sum(tl.exp(x - m_safe[:, None]), 1)
        m_i = m_new
    tl.store(LSE_ptr + offs_m, m_i + tl.log(l_i), mask=offs_m < M)


def row_logsumexp(x, BLOCK_M=16, BLOCK_N=64):
    """log(sum(exp(x), dim=1)) of a 2-D tensor (any strides): [M] float32."""
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D [M, N], got shape {tuple(x.shape)}")
    M, N = x.shape
    lse = torch.empty(M, dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(M, BLOCK_M),)              # one program per BLOCK_M rows
    row_lse_kernel[grid](x, lse, M, N, x.stride(0), x.stride(1), BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N)
    return lse


@triton.jit
def copy_bhnd_kernel(X_ptr, O_ptr, N, H,
                     stride_xb, stride_xh, stride_xn, stride_xd,
                     stride_ob, stride_oh, stride_on, stride_od,
                     HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr):
    off_bh = tl.program_id(0)       # which (batch, head) pair
    pid_n = tl.program_id(1)        # which tile of BLOCK_N rows
    b = off_bh // H
    h = off_bh % H
    X_ptr += b.to(tl.int64) * stride_xb + h.to(tl.int64) * stride_xh
    O_ptr += b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)        # [BLOCK_N] rows of this tile
    offs_d = tl.arange(0, HEAD_DIM)                         # [HEAD_DIM]
    mask = offs_n[:, None] < N                              # the last tile may stick out
    tile = tl.load(X_ptr + offs_n[:, None] * stride_xn + offs_d[None, :] * stride_xd, mask=mask)
    tl.store(O_ptr + offs_n[:, None] * stride_on + offs_d[None, :] * stride_od, tile, mask=mask)


def copy_bhnd(x, BLOCK_N=32):
    """A contiguous copy of a [B, H, N, D] tensor with any strides (D a power of two)."""
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D [B, H, N, D], got shape {tuple(x.shape)}")
    B, H, N, D = x.shape
    if D < 1 or D & (D - 1):
        raise ValueError(f"head dim D must be a power of two (tl.arange needs one), got {D}")
    out = torch.empty(B, H, N, D, dtype=x.dtype, device=x.device)
    grid = (B * H, triton.cdiv(N, BLOCK_N))
    copy_bhnd_kernel[grid](x, out, N, H, *x.stride(), *out.stride(), HEAD_DIM=D, BLOCK_N=BLOCK_N)
    return out
