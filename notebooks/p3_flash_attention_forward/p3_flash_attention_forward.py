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
# # Problem 3: FlashAttention forward in Triton (non-causal)
#
# In Problem 1 you computed attention block by block in PyTorch with an online softmax; in
# Problem 2 you wrote your first Triton kernels. Now the two meet: one Triton kernel that
# computes
#
# $$O = \mathrm{softmax}\!\left(\frac{Q K^\top}{\sqrt{D}}\right) V$$
#
# for `q`, `k`, `v` of shape `[B, H, N, D]` without ever writing the `N x N` score matrix to
# memory.
#
# **What you will learn**
#
# * how a FlashAttention kernel splits the work: one program per (query tile, batch x head),
#   the query tile stays on chip while key/value tiles stream past it;
# * the online softmax update (`m_i`, `l_i`, `acc`) and why the rescale factor is exact;
# * why the kernel uses `exp2` with `log2(e)` folded into the scale, and feeds bf16/fp16 tiles
#   straight into `tl.dot` with fp32 accumulation;
# * how to handle any sequence length (a mask-free loop over full key tiles, then one masked
#   tail tile) and any memory layout (pointer arithmetic from strides).
#
# **What you write**: the pointer arithmetic (batch/head offsets, K/V tile pointers) and the
# online softmax update inside the loop. Everything else is given and explained.
#
# **Points**: 10, in four graded cells (basic 3, ragged sequence lengths 3, memory layouts 2,
# head dims 2). Each graded cell runs the visible checks you see, plus hidden cases of the same
# kind (other shapes and seeds).

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
# **Why a kernel at all.** Naive attention writes the scores `S = Q K^T` (`B * H * N * N`
# numbers) to GPU memory (HBM), reads them back for the softmax, writes `P`, reads it back for
# `P @ V`. At `N = 8192` that is 128 MiB of scores per head; the tensor cores finish the
# matrix products long before the memory traffic is done. FlashAttention keeps one tile of
# scores in registers, uses it, and throws it away: HBM sees only `Q`, `K`, `V` (read) and `O`
# (written).
#
# **The grid.** Program `(pid_m, pid_bh)` owns rows `[pid_m * BLOCK_M, (pid_m + 1) * BLOCK_M)`
# of one (batch, head). It loads its `[BLOCK_M, D]` query tile once, then walks over the keys
# in tiles of `BLOCK_N`:
#
# ```
# for each key tile j:                       # K_j, V_j: [BLOCK_N, D], loaded from HBM
#     S_j = Q_tile @ K_j^T                   # [BLOCK_M, BLOCK_N], in registers only
#     fold S_j and V_j into (m_i, l_i, acc)  # the online softmax
# O_tile = acc / l_i                         # one division, one store
# ```
#
# **Online softmax, with a short derivation.** Take one query row with scores $s_j$. Its output
# is $o = \sum_j e^{s_j} v_j / \sum_j e^{s_j}$. Subtracting the same constant $m$ from every
# score changes nothing (it cancels between numerator and denominator), and $m = \max_j s_j$
# keeps every exponent $\le 0$, so nothing overflows. After some key tiles, keep
#
# $$m = \max_{\text{seen}} s_j, \qquad \ell = \sum_{\text{seen}} e^{s_j - m}, \qquad a = \sum_{\text{seen}} e^{s_j - m}\, v_j .$$
#
# A new tile $T$ arrives with a new maximum $m' = \max(m, \max_{j \in T} s_j)$. Every old term
# was computed against $m$; rewrite it against $m'$:
# $e^{s_j - m} = e^{s_j - m'} \cdot e^{m' - m}$, so $e^{s_j - m'} = \alpha\, e^{s_j - m}$ with
# $\alpha = e^{m - m'} \le 1$. Hence
#
# $$\ell' = \alpha\,\ell + \sum_{j \in T} e^{s_j - m'}, \qquad a' = \alpha\, a + \sum_{j \in T} e^{s_j - m'}\, v_j, \qquad m \leftarrow m'.$$
#
# This is exact, not an approximation: after the last tile, $a / \ell$ is the softmax output.
# In the kernel, `m_i`, `l_i` are `[BLOCK_M]` vectors (one entry per query row), `acc` is
# `[BLOCK_M, D]`, and $\sum_{j \in T} e^{s_j - m'} v_j$ is the matrix product `p @ V_j`. The
# first tile needs no special case: start from `m_i = -inf`, `l_i = 0`, `acc = 0`; then
# $\alpha = e^{-\infty} = 0$ wipes the (empty) past.
#
# **exp2 with the scale folded in.** GPUs compute $2^x$ in one instruction (`ex2`); `exp(x)`
# is `ex2(x * log2(e))`, an extra multiply per score. Since
# $e^{s - m} = 2^{(s - m)\log_2 e}$, we measure scores in "log2 units" from the start:
# `qk_scale = (1 / sqrt(D)) * log2(e)`, so `qk * qk_scale` is the scaled score times
# `log2(e)`, and `m_i` lives in the same units. One multiply per score covers both the
# `1/sqrt(D)` scale and the change of base.
#
# **Precision.** `q`, `k`, `v` arrive in bf16 (fp16 on older GPUs and on the CPU tier). Feed
# them to `tl.dot` as they are: the tensor cores multiply 16-bit inputs and accumulate in fp32,
# so `qk` comes out fp32. Do not `.to(tl.float32)` the tiles before `tl.dot`: that forces the
# slow fp32 (TF32 at best) path and doubles the registers the tiles take; on an H100 it made
# this kernel 2-7x slower. The probabilities `p` are cast back to `v`'s dtype for the second
# product, `acc` stays fp32.
#
# **Ragged N.** `N` need not be a multiple of `BLOCK_N`. Masking every tile costs a compare and
# a select per score; only the last tile can stick out past `N`. So the kernel runs the loop
# twice: over the `N // BLOCK_N` full tiles with no mask at all, then over the tail
# `[N // BLOCK_N * BLOCK_N, N)` (zero or one tile) with a bounds mask: out-of-range keys load as
# 0 and get score `-inf`, hence weight `exp2(-inf) = 0`. Query rows past `N` (in the last query
# tile) are computed on zero queries and simply not stored.
#
# **Any layout.** The function receives tensors with arbitrary strides: contiguous
# `[B, H, N, D]`, a transposed view of `[B, N, H, D]`, a head dim sliced out of a bigger one...
# Never assume contiguity: element `[b, h, n, d]` of `q` lives at
# `q_ptr + b*stride_qb + h*stride_qh + n*stride_qn + d*stride_qd`. No `.contiguous()` copies.
#
# The picture shows the tiles for `N = 77` with the CPU tier's tiles (`BLOCK_M = 32`,
# `BLOCK_N = 16`): each band of rows is one query tile, that is one program, and it visits every
# key tile (column) left to right. The last column (keys 64-76) is the masked tail. The last
# query tile is short too (rows 64-76): it still has `BLOCK_M` rows in the kernel, the ones past
# `N` are computed on zero queries and never stored.

# %%
from autograder.plots import show_tile_schedule

# one row of tiles = one program, walking left to right over the key tiles
show_tile_schedule(77, 32, 16, is_causal=False)

# %% [markdown]
# ## The kernel
#
# Two `@triton.jit` functions. `_attn_fwd_tiles` folds a range of key tiles `[lo, hi)` into the
# running state of one query tile; it is called twice, once with `MASKED=False` (full tiles) and
# once with `MASKED=True` (the tail). Because `MASKED` is a `tl.constexpr`, Triton compiles two
# versions of the loop and the unmasked one contains no mask code at all.
#
# **Your part 1: K/V tile pointers.** `k_ptrs` and `v_ptrs` are `[BLOCK_N, HEAD_DIM]` blocks of
# pointers to rows `offs_n` of `K` and `V` (already offset to the right batch and head), built
# the same way as `q_ptrs` in the kernel below.
#
# **Your part 2: the online softmax update.** `qk` holds the raw scores `q . k` (fp32, not yet
# scaled; `-inf` at out-of-range keys). Compute, per row, the new maximum `m_ij` in log2 units,
# the probabilities `p` (`exp2` of the scaled scores minus `m_ij`), the rescale `alpha`, then
# update `l_i`, `acc` and `m_i`. `tl.dot(a, b, acc)` returns `acc + a @ b` in one instruction
# sequence; `tl.max(x, 1)` and `tl.sum(x, 1)` reduce over keys.

# %% solution="p3_tiles" export=true
@triton.jit
def _attn_fwd_tiles(acc, l_i, m_i, q,
                    K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                    offs_d, lo, hi, N, qk_scale,
                    MASKED: tl.constexpr, BLOCK_N: tl.constexpr):
    """Fold key tiles [lo, hi) into the running state (acc, l_i, m_i) of one query tile."""
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)          # aligned: lets the compiler vectorise loads
        offs_n = start_n + tl.arange(0, BLOCK_N)             # [BLOCK_N] key indices of this tile
        ### BEGIN SOLUTION
        k_ptrs = K_ptr + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd   # [BLOCK_N, HEAD_DIM]
        v_ptrs = V_ptr + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd   # [BLOCK_N, HEAD_DIM]
        ### END SOLUTION
        in_bounds = offs_n < N
        if MASKED:      # the tail tile: keys past N load as 0, scores there become -inf below
            k = tl.load(k_ptrs, mask=in_bounds[:, None], other=0.0)
            v = tl.load(v_ptrs, mask=in_bounds[:, None], other=0.0)
        else:           # a full tile: no mask, the fastest load there is
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        # 16-bit operands straight into the tensor cores, fp32 accumulation
        qk = tl.dot(q, tl.trans(k))                          # [BLOCK_M, BLOCK_N] fp32, unscaled
        if MASKED:
            qk = tl.where(in_bounds[None, :], qk, float("-inf"))
        ### BEGIN SOLUTION
        m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)     # new running max, log2 units
        p = tl.math.exp2(qk * qk_scale - m_ij[:, None])      # [BLOCK_M, BLOCK_N], in [0, 1]
        alpha = tl.math.exp2(m_i - m_ij)                     # rescale of everything seen so far
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc)                  # acc += p @ v, fp32
        m_i = m_ij
        ### END SOLUTION
    return acc, l_i, m_i


# %% [markdown]
# `_flash_attention_fwd` is one program of the grid. The grid is one axis of
# `cdiv(N, BLOCK_M) * B * H` programs (see the wrapper for why): `tl.program_id(0)` splits into the
# query tile `pid_m` and the (batch, head) pair `pid_bh`; `b` and `h` are recovered from `pid_bh`.
#
# **Your part 3: batch/head offsets.** Move `Q_ptr`, `K_ptr`, `V_ptr` and `O_ptr` to the start
# of head `h` of batch `b`, using each tensor's own strides (they can all differ: `o` is a fresh
# tensor, `q` may be a strided view). Convert `b` and `h` to `tl.int64` first: `b * stride_qb`
# overflows int32 once a tensor holds more than 2^31 elements (e.g. B=8, H=32, N=32768, D=128),
# and the kernel then reads the wrong memory silently.

# %% solution="p3_kernel" export=true
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
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    n_m = tl.cdiv(N, BLOCK_M)
    pid_m = tl.program_id(0) % n_m            # which query tile: the fast index
    pid_bh = tl.program_id(0) // n_m          # which (batch, head)
    b = pid_bh // N_HEADS
    h = pid_bh % N_HEADS
    ### BEGIN SOLUTION
    Q_ptr += b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    K_ptr += b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    V_ptr += b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh
    O_ptr += b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    ### END SOLUTION

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)     # [BLOCK_M] query rows of this program
    offs_d = tl.arange(0, HEAD_DIM)                      # [HEAD_DIM]
    # the query tile: loaded once, kept on chip for the whole loop; rows past N load as 0
    q_ptrs = Q_ptr + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=offs_m[:, None] < N, other=0.0)   # [BLOCK_M, HEAD_DIM], bf16/fp16

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)   # running max, log2 units
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)                 # running sum of exp2
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)       # running sum of p @ v

    n_full = N // BLOCK_N * BLOCK_N
    acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                                    offs_d, 0, n_full, N, qk_scale, False, BLOCK_N)      # full tiles: no mask
    acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K_ptr, V_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                                    offs_d, n_full, N, N, qk_scale, True, BLOCK_N)       # the tail, if any

    acc = acc / l_i[:, None]                  # the one division, after the last tile
    o_ptrs = O_ptr + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od
    tl.store(o_ptrs, acc.to(O_ptr.dtype.element_ty), mask=offs_m[:, None] < N)


# %% [markdown]
# ## The wrapper
#
# Given. It validates the inputs with the same function the reference uses (so bad shapes get
# the same clear error everywhere), picks tile sizes from the course's table for this GPU, and
# launches `cdiv(N, BLOCK_M) * B * H` programs on one grid axis. One axis, because CUDA allows
# 2^31 - 1 programs on axis 0 but only 65535 on axes 1 and 2, and `B * H` can pass 65535 (a large
# batch of many heads). Query tiles are the fast index: programs of the same head run side by side
# and share its K/V tiles in L2 (measured on an H100: with `B * H` as the fast index instead, the
# kernel is 15% slower at B = 4, H = 16, N = 4096). Every stride goes to the kernel, the head dim's
# included, so no input is copied.
#
# Causal attention is Problem 4; grouped-query attention is Problem 5. This function refuses
# them with a `ValueError` that says where to go.

# %% export=true
LOG2E = 1.4426950408889634   # log2(e): exp(x) = exp2(x * LOG2E)


def flash_attention_forward(q, k, v, is_causal=False, window_size=None, sink_size=None):
    """softmax(q k^T / sqrt(D)) v for q, k, v of shape [B, H, N, D] (any strides); returns [B, H, N, D]."""
    B, H, H_kv, N, D = autograder.validate_attention_inputs(q, k, v, is_causal, window_size, sink_size)
    if is_causal:
        raise ValueError("this is Problem 3's non-causal kernel: causal attention is Problem 4 "
                         "(sliding windows Problem 6, sinks Problem 7)")
    if H_kv != H:
        raise ValueError(f"q has {H} heads and k/v have {H_kv}: grouped-query attention is Problem 5")
    o = torch.empty_like(q)
    cfg = attention_tiles(D, q.dtype, causal=False)
    grid = (triton.cdiv(N, cfg["BLOCK_M"]) * B * H,)
    qk_scale = 1.0 / math.sqrt(D) * LOG2E
    _flash_attention_fwd[grid](
        q, k, v, o,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        N, H, qk_scale,
        HEAD_DIM=D, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return o


# %% [markdown]
# ## Try it
#
# Not graded: one small case against the naive PyTorch attention, so you can see your numbers
# (and `print` inside the kernel on the CPU tier, where it runs in the interpreter).

# %%
case = autograder.Case("try", B=1, Hq=2, Hkv=2, N=50, D=32, seed=0)
BLOCK_N = attention_tiles(case.D, case.resolved_dtype)["BLOCK_N"]
print(f"N={case.N}, BLOCK_N={BLOCK_N}: {case.N // BLOCK_N} full key tile(s) and a tail of {case.N % BLOCK_N} keys")
out = autograder.try_it(flash_attention_forward, case)

# %% [markdown]
# ## Checks
#
# Each graded cell checks one family of cases and prints one line per case. When a case fails,
# the message names the case, where the output is wrong and, when it can tell, which mistake
# produces exactly that output (a missing scale, `exp` instead of `exp2`, no final division...).
# The checks also make sure the output comes from your Triton kernel (no PyTorch op may build a
# tensor the size of the `N x N` score matrix, with a matmul or an elementwise product) and that
# rows you never write are caught (fresh outputs are filled with a poison value).
#
# **Basic (3 points)**: small shapes, fp16/bf16 and fp32.

# %% tests="p3_basic" points=3
autograder.check(3, flash_attention_forward, family="basic")
### BEGIN HIDDEN TESTS
_f32 = torch.float32 if autograder.TIER == "cpu" else None   # a GPU runs fp32 tl.dot as TF32: 16-bit only
_cases = [
    autograder.Case("basic", 2, 3, 3, 64, 32, seed=101),                     # N a multiple of both tiles
    autograder.Case("basic", 1, 2, 2, 96, 16, dtype=_f32, seed=102),
    autograder.Case("basic", 1, 1, 1, 32, 16, seed=103, spread=4.0),         # peaky rows, one query tile
    autograder.Case("basic", 1, 2, 2, 50, 32, dtype=_f32, seed=104, low_score=900.0),   # rows 0/0 with m_i = 0
]
if autograder.TIER == "gpu":   # sizes around multiples of the GPU tiles (BLOCK_M = 128, BLOCK_N = 64)
    _cases += [
        autograder.Case("basic", 2, 4, 4, 1024, 64, seed=301),
        autograder.Case("basic", 1, 2, 2, 2048, 128, seed=302, spread=4.0),
    ]
autograder.check(3, flash_attention_forward, cases=_cases)
try:    # causal calls must be refused with a ValueError that points to Problem 4
    flash_attention_forward(*autograder.Case("basic", 1, 1, 1, 16, 16).make_inputs(), is_causal=True)
except ValueError as exc:
    assert "Problem 4" in str(exc), exc
else:
    raise AssertionError("flash_attention_forward(..., is_causal=True) must raise ValueError (Problem 4)")
### END HIDDEN TESTS

# %% [markdown]
# **Ragged sequence lengths (3 points)**: `N` not a multiple of any tile, smaller than a tile,
# a single token, and peaky softmax rows (large scores) across many tiles.

# %% tests="p3_ragged" points=3
autograder.check(3, flash_attention_forward, family="ragged")
### BEGIN HIDDEN TESTS
_f32 = torch.float32 if autograder.TIER == "cpu" else None   # a GPU runs fp32 tl.dot as TF32: 16-bit only
_cases = [
    autograder.Case("ragged", 1, 2, 2, 17, 16, seed=111),                    # one full key tile + 1
    autograder.Case("ragged", 2, 1, 1, 31, 32, seed=112),                    # one short query tile
    autograder.Case("ragged", 1, 1, 1, 33, 16, seed=113, spread=4.0),        # peaky rows, 1-key tail
    autograder.Case("ragged", 1, 2, 2, 2, 16, dtype=_f32, seed=114),
    autograder.Case("ragged", 1, 1, 1, 95, 16, seed=115, spread=4.0),
]
if autograder.TIER == "gpu":   # sizes around multiples of the GPU tiles (BLOCK_M = 128, BLOCK_N = 64)
    _cases += [
        autograder.Case("ragged", 1, 2, 2, 129, 64, seed=311),
        autograder.Case("ragged", 2, 1, 1, 63, 128, seed=312),
        autograder.Case("ragged", 1, 2, 2, 1025, 64, seed=313, spread=4.0),
    ]
autograder.check(3, flash_attention_forward, cases=_cases)
### END HIDDEN TESTS

# %% [markdown]
# **Memory layouts (2 points)**: `q`, `k`, `v` as transposed views of `[B, N, H, D]` tensors and
# with the head dim sliced out of a wider tensor: only the strides tell where rows are.

# %% tests="p3_layout" points=2
autograder.check(3, flash_attention_forward, family="layout")
### BEGIN HIDDEN TESTS
_f32 = torch.float32 if autograder.TIER == "cpu" else None   # a GPU runs fp32 tl.dot as TF32: 16-bit only
_cases = [
    autograder.Case("layout", 1, 3, 3, 45, 32, layout="bnhd", seed=121),
    autograder.Case("layout", 2, 1, 1, 20, 16, layout="padded", seed=122, dtype=_f32),
    autograder.Case("layout", 1, 2, 2, 64, 16, layout="bnhd", seed=123, spread=4.0),
    autograder.Case("layout", 1, 2, 2, 40, 16, layout="bhdn", seed=124),   # stride_qd != 1
]
if autograder.TIER == "gpu":   # sizes around multiples of the GPU tiles (BLOCK_M = 128, BLOCK_N = 64)
    _cases += [
        autograder.Case("layout", 1, 4, 4, 1000, 128, layout="bnhd", seed=321),
        autograder.Case("layout", 2, 2, 2, 640, 64, layout="padded", seed=322),
    ]
autograder.check(3, flash_attention_forward, cases=_cases)
### END HIDDEN TESTS

# %% [markdown]
# **Head dims (2 points)**: `HEAD_DIM` is a `tl.constexpr`: each head dim compiles its own kernel.

# %% tests="p3_headdim" points=2
autograder.check(3, flash_attention_forward, family="headdim")
### BEGIN HIDDEN TESTS
_f32 = torch.float32 if autograder.TIER == "cpu" else None   # a GPU runs fp32 tl.dot as TF32: 16-bit only
_cases = [
    autograder.Case("headdim", 1, 1, 1, 40, 16, seed=131),
    autograder.Case("headdim", 1, 1, 1, 21, 64, dtype=_f32, seed=132),
    autograder.Case("headdim", 2, 1, 1, 19, 128, seed=133),
]
if autograder.TIER == "gpu":   # sizes around multiples of the GPU tiles (BLOCK_M = 128, BLOCK_N = 64)
    _cases += [
        autograder.Case("headdim", 1, 2, 2, 640, 16, seed=331),
        autograder.Case("headdim", 1, 2, 2, 777, 32, seed=332),
        autograder.Case("headdim", 1, 2, 2, 1024, 128, seed=333, spread=4.0),
    ]
autograder.check(3, flash_attention_forward, cases=_cases)
### END HIDDEN TESTS

# %% [markdown]
# ## Benchmark
#
# On a GPU this times your kernel next to the course's reference solution, PyTorch's SDPA
# (FlashAttention-2 and cuDNN backends), FlexAttention and naive attention, and plots TFLOP/s.
# A kernel at this stage should land within a small factor of SDPA; if it is several times
# slower, look for an `.to(tl.float32)` before a `tl.dot`, or a mask on every tile. For scale, on
# an H100 the reference solution reaches about 440 TFLOP/s at D = 64 and 500 at D = 128, SDPA's
# FlashAttention-2 backend 300-350 and cuDNN 460-610. On the CPU tier the cell only says it
# needs a GPU.

# %%
results = autograder.bench.benchmark(3, flash_attention_forward)

# %% [markdown]
# ## What to take away
#
# * **One program per (query tile, batch x head)**, the query tile on chip, K/V streamed
#   through: HBM traffic is `O(N * D)` per head instead of `O(N^2)`.
# * **The online softmax is exact**: when the running max grows from `m` to `m'`, everything
#   accumulated so far is multiplied by `alpha = exp2(m - m')`. Divide by `l_i` once, at the end.
# * **exp2 with `log2(e)` folded into `qk_scale`**: one multiply per score for both the
#   `1/sqrt(D)` scale and the change of base.
# * **16-bit operands into `tl.dot`, fp32 accumulation**; cast `p` down for the second product.
# * **Mask only where needed**: full tiles without a mask, one masked tail tile.
# * **Strides, not shapes**: every tensor brings its own four strides.
#
# **Common mistakes**
#
# * Forgetting to rescale `acc` (or `l_i`) by `alpha`: right when the max never changes, wrong
#   on peaky rows. The `spread=3` and `spread=4` cases catch it.
# * Scaling twice or not at all: `m_ij` must be in the same units as `qk * qk_scale`.
# * Updating `m_i` before computing `alpha`: then `alpha` is always 1.
# * Starting `m_i` at 0 instead of `-inf`: right until every score of a row is very negative;
#   then `exp2(qk - 0)` underflows to 0 and the row is `0 / 0`. A basic case has such rows.
# * `exp` with `qk_scale` (or `exp2` with `1/sqrt(D)` alone): the autograder recognises both.
# * Upcasting `q`, `k` to fp32 before `tl.dot`: correct, and several times slower.
# * Loading the tail tile without `mask=` / `other=0.0`: out-of-bounds reads, NaN or garbage.
# * Assuming contiguity (`h * N * D` instead of `h * stride_qh`): the layout cases fail.
