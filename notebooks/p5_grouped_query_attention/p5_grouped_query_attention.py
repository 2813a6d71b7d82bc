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
# # Problem 5: Grouped-query attention
#
# Modern LLMs (Llama 2 70B and later, Mistral, Qwen) give the keys and values fewer heads than the
# queries. With 32 query heads and 8 K/V heads, four query heads share each K/V head: the KV cache
# is 4x smaller and decoding reads 4x fewer bytes, for almost no loss in quality. This is
# *grouped-query attention* (GQA); `Hkv = 1` is multi-query attention, `Hkv = Hq` is ordinary
# multi-head attention.
#
# **What you will learn**
# - the head mapping of GQA: query head `h` reads K/V head `h // (Hq // Hkv)`;
# - why a kernel shares K/V heads through *pointer arithmetic* instead of copying them
#   (`repeat_interleave` would multiply the K/V memory and traffic by `Hq // Hkv`);
# - that one rule covers MHA, GQA and MQA, causal and non-causal, with no other change to the
#   kernel of Problem 4.
#
# **What you write**: three lines, the K/V head of a program and the base pointers of its K and V.
# Everything else (the two-phase causal loop of Problem 4, the non-causal loop of Problem 3) is
# given.
#
# **Points**: 10, in five graded cells (basic 2, ragged sequence lengths 2, memory layouts 1,
# head dims 1, GQA 4). Each graded cell runs the visible checks you see, plus hidden cases of the
# same kind (other shapes, seeds, group sizes).

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
# q is `[B, Hq, N, D]`; k and v are `[B, Hkv, N, D]` with `Hq` a multiple of `Hkv`. The
# `GROUP = Hq // Hkv` *consecutive* query heads `g * GROUP ... (g + 1) * GROUP - 1` share K/V head
# `g`, so the K/V head of query head `h` is `h // GROUP`:
#
# ```
# Hq = 8, Hkv = 2, GROUP = 4
# query head h        0  1  2  3 | 4  5  6  7
# K/V head h // 4     0  0  0  0 | 1  1  1  1
# ```
#
# (Not `h % Hkv`: that would interleave the groups. The checks recognise that mistake.)
#
# A naive implementation expands K and V to `Hq` heads (`k.repeat_interleave(GROUP, dim=1)`) and
# calls the multi-head kernel. That allocates `GROUP` copies of K and V and makes the kernel read
# all of them. A kernel does not need the copy: each program already computes the address of its
# K/V head from strides. Point it at head `h // GROUP` and the `GROUP` programs of a group read the
# same K/V tiles, and nothing is allocated.
#
# The mask does not depend on heads: it is the causal mask of Problem 4 (or no mask), in every
# head: key j is visible from query i when j <= i.

# %%
from autograder import plots

plots.show_mask(is_causal=True, n=32)

# %% [markdown]
# The tile schedule for `N = 256` with 64-row query tiles and 32-key key tiles (the shape of the
# GPU tiles, smaller): each row of tiles is one program; green tiles run unmasked, red ones with
# the causal mask, white ones are never loaded.

# %%
plots.show_tile_schedule(256, 64, 32, is_causal=True)

# %% [markdown]
# The head mapping, computed the way the kernel computes it. The grid's slow index enumerates
# `(batch, query head)` pairs: `pid_bh = program_id(0) // n_m` is batch `pid_bh // Hq`, query head
# `pid_bh % Hq`.

# %%
Hq, Hkv = 8, 2
GROUP = Hq // Hkv
print("query head h :", list(range(Hq)))
print("K/V head     :", [h // GROUP for h in range(Hq)])

# %% [markdown]
# ## The kernel
#
# Given: `_attn_fwd_tiles`, Problem 4's inner loop, unchanged. It runs the online
# softmax over the key tiles `[lo, hi)` with one of three masks, chosen at compile time
# (`MASK` is a `tl.constexpr`, so each phase compiles to its own loop and the unmasked one carries
# no mask arithmetic at all):
#
# | `MASK` | keys visible | used for |
# |---|---|---|
# | `NO_MASK` | all | causal tiles left of the diagonal; every tile but the last, non-causal |
# | `BOUNDS` | `j < N` | the ragged last key tile, non-causal |
# | `CAUSAL` | `j <= i` and `j < N` | the tiles that cross the diagonal, causal |
#
# Scores are kept in log2 units: `qk_scale = log2(e) / sqrt(D)` folds the softmax scale and the
# change of base into one multiply, and `exp2` is a single instruction on the GPU.

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


# %% [markdown]
# ### Your turn: share the K/V head
#
# The program `(pid_m, off_bh)` computes query rows `pid_m * BLOCK_M ...` of batch `b`, query head
# `h`. The given code moves `Q_ptr` and `O_ptr` to the start of that `(b, h)` slice. Write:
#
# 1. `kv_h`, the K/V head this query head reads (`GROUP = Hq // Hkv` is a `tl.constexpr`);
# 2. the same move for `K_ptr` and `V_ptr`, to the start of the `(b, kv_h)` slice of k and v.
#
# Use k's and v's own strides (they may differ from q's: another layout, fewer heads), and cast
# the head and batch indices to `tl.int64` before multiplying, as the given lines do: `b * stride_qb`
# overflows 32 bits once a tensor has more than 2^31 elements.

# %% solution="p5_kernel" export=true
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
    n_m = tl.cdiv(N, BLOCK_M)
    # which query tile, the fast index; causal: late tiles visit the most key tiles, so they go first
    pid_m = n_m - 1 - tl.program_id(0) % n_m if IS_CAUSAL else tl.program_id(0) % n_m
    pid_bh = tl.program_id(0) // n_m          # which (batch, head)
    b = pid_bh // N_Q_HEADS
    h = pid_bh % N_Q_HEADS
    Q_ptr += b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    O_ptr += b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    ### BEGIN SOLUTION
    # GROUP consecutive query heads share one K/V head: read it in place, no copy
    kv_h = h // GROUP
    K_ptr += b.to(tl.int64) * stride_kb + kv_h.to(tl.int64) * stride_kh
    V_ptr += b.to(tl.int64) * stride_vb + kv_h.to(tl.int64) * stride_vh
    ### END SOLUTION

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


# %% [markdown]
# The wrapper is given. Note what it does *not* do: it never expands k or v. It passes their
# strides as they are and tells the kernel `GROUP = Hq // Hkv`. `validate_attention_inputs` rejects
# `Hq` not divisible by `Hkv` with a clear message before anything is launched.

# %% export=true
LOG2E = 1.4426950408889634   # log2(e): exp(x) = exp2(x * LOG2E)


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
    qk_scale = 1.0 / math.sqrt(D) * LOG2E
    _flash_attention_fwd[grid](
        q, k, v, o, *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        N, Hq, qk_scale,
        GROUP=Hq // Hkv, IS_CAUSAL=is_causal, HEAD_DIM=D,
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return o


# %% [markdown]
# Try it on one small case before the checks. With `Hq = 4, Hkv = 2`, query heads 0 and 1 read
# K/V head 0, heads 2 and 3 read K/V head 1.
#
# `autograder.try_it` runs one case, prints the largest error and, if some rows are wrong, shows
# where (one panel per head); the graded checks below explain a failure in words. To look at the
# numbers yourself: `q, k, v = case.make_inputs()`, call your function, compare with
# `autograder.reference_attention(q, k, v, **case.mask_kwargs())`. On the CPU tier the kernel
# runs in the interpreter, so `print` inside it works.

# %%
case = autograder.Case("try", B=1, Hq=4, Hkv=2, N=40, D=16, is_causal=True)
out = autograder.try_it(flash_attention_forward, case)

# %% [markdown]
# ## Checks
#
# Each cell below checks one family of cases against a float64 reference and explains the first
# failure (which case, which rows, and when it can tell, which mistake). The GQA family includes
# the non-causal path and the `bnhd` layout (k and v with strides that are not q's); the earlier
# families are multi-head attention (`GROUP = 1`), which your code must still get right.

# %% tests="p5_basic" points=2
autograder.check(5, flash_attention_forward, family="basic")
### BEGIN HIDDEN TESTS
autograder.check(5, flash_attention_forward, cases=[
    autograder.Case("basic", 2, 2, 2, 64, 32, is_causal=True, seed=501),
    autograder.Case("basic", 1, 3, 3, 96, 16, is_causal=False, seed=502),
    autograder.Case("basic", 1, 4, 2, 40, 16, is_causal=True, seed=503, low_score=600.0),   # 0/0 with m_i = 0
])
### END HIDDEN TESTS

# %% tests="p5_ragged" points=2
autograder.check(5, flash_attention_forward, family="ragged")
### BEGIN HIDDEN TESTS
autograder.check(5, flash_attention_forward, cases=[
    autograder.Case("ragged", 2, 4, 2, 67, 16, is_causal=True, seed=511),
    autograder.Case("ragged", 1, 4, 1, 3, 32, is_causal=True, seed=512),
    autograder.Case("ragged", 1, 2, 1, 51, 16, is_causal=False, seed=513, spread=3.0),
])
### END HIDDEN TESTS

# %% tests="p5_layout" points=1
autograder.check(5, flash_attention_forward, family="layout")
### BEGIN HIDDEN TESTS
autograder.check(5, flash_attention_forward, cases=[
    autograder.Case("layout", 2, 4, 2, 45, 16, is_causal=True, layout="padded", seed=521),
    autograder.Case("layout", 1, 6, 3, 38, 32, is_causal=False, layout="bnhd", seed=522),
])
### END HIDDEN TESTS

# %% tests="p5_headdim" points=1
autograder.check(5, flash_attention_forward, family="headdim")
### BEGIN HIDDEN TESTS
autograder.check(5, flash_attention_forward, cases=[
    autograder.Case("headdim", 1, 4, 2, 29, 64, is_causal=True, seed=531),
    autograder.Case("headdim", 1, 2, 1, 21, 128, is_causal=True, seed=532),
])
### END HIDDEN TESTS

# %% [markdown]
# The GQA cell also checks that the function refuses head counts that do not divide, with a
# message that says so, instead of silently reading the wrong heads.

# %% tests="p5_gqa" points=4
autograder.check(5, flash_attention_forward, family="gqa")

torch.manual_seed(0)   # seeded: the grader checks this call again with the same inputs
q = torch.randn(1, 6, 16, 16, device=autograder.DEVICE, dtype=autograder.DTYPE)
k = v = torch.randn(1, 4, 16, 16, device=autograder.DEVICE, dtype=autograder.DTYPE)
try:
    flash_attention_forward(q, k, v, is_causal=True)
except ValueError as exc:
    print("Hq=6, Hkv=4 rejected:", exc)
else:
    raise AssertionError("Hq=6 with Hkv=4 must raise ValueError: 6 query heads cannot be split into 4 groups")
### BEGIN HIDDEN TESTS
# group sizes 1, 2 and 4 with at least two K/V heads (a wrong head mapping shows), both masks
autograder.check(5, flash_attention_forward, cases=[
    autograder.Case("gqa", 1, 2, 2, 50, 16, is_causal=True, seed=541),
    autograder.Case("gqa", 2, 4, 2, 41, 16, is_causal=True, seed=542),
    autograder.Case("gqa", 1, 8, 2, 35, 32, is_causal=True, seed=543, layout="bnhd"),
    autograder.Case("gqa", 1, 8, 2, 35, 16, is_causal=False, seed=544),
    autograder.Case("gqa", 1, 4, 1, 70, 16, is_causal=True, seed=545, layout="padded"),
    autograder.Case("gqa", 2, 12, 3, 19, 16, is_causal=False, seed=546),
])
### END HIDDEN TESTS

# %% [markdown]
# ## Benchmark
#
# On a GPU this times your kernel on the course's GQA shape (`B=4, Hq=32, Hkv=8, N=4096, D=128`,
# causal) next to the reference solution, PyTorch SDPA (`enable_gqa=True`), FlexAttention and naive
# attention. On the CPU tier it only says that it needs a GPU.

# %%
results = autograder.bench.benchmark(5, flash_attention_forward)

# %% [markdown]
# ## What to take away
#
# - GQA is a change of *addressing*, not of math: query head `h` reads K/V head
#   `h // (Hq // Hkv)`, and the kernel gets there by moving the K/V base pointers. No copy of K or
#   V is made; the `GROUP` programs of a group read the same tiles.
# - The same kernel is MHA (`GROUP = 1`), GQA and MQA (`Hkv = 1`). Passing `GROUP` as a
#   `tl.constexpr` lets the compiler turn `h // GROUP` into a shift when `GROUP` is a power of two.
# - Strides, not shapes, locate data: k and v have their own strides, and in the `bnhd` layout they
#   differ from q's.
#
# Common mistakes
# - `kv_h = h % Hkv`: interleaves the groups (head 1 would read K/V head 1 instead of 0). The output
#   is still a valid attention, just with the wrong heads, so only a reference with `Hkv >= 2`
#   catches it.
# - Offsetting K and V with q's strides (`stride_qh`): right for MHA on one layout, wrong as soon as
#   `Hkv != Hq` (k's head stride is `N * D`, but its batch stride is `Hkv * N * D`, not q's `Hq * N * D`).
# - Forgetting the batch term for K and V: every batch then reads batch 0's keys.
# - Expanding with `repeat_interleave` in the wrapper: correct, but `GROUP` times the K/V memory
#   and traffic, which is exactly what GQA exists to avoid.
