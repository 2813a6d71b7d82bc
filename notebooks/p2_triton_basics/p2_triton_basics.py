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
# # Problem 2: Triton basics (10 points)
#
# Problem 3 writes FlashAttention as one Triton kernel. This problem builds the three skills that
# kernel is made of, one exercise each:
#
# | exercise | you write | the skill Problem 3 needs |
# |---|---|---|
# | **2a** `y = a * x + b` | a whole (tiny) kernel | program ids, offsets, a mask for the last tile, strides |
# | **2b** row log-sum-exp of `[M, N]` | the loop body of a tiled reduction | 2-D tiles, `other=-inf`, the running max `m_i` and sum `l_i` of online softmax |
# | **2c** copy `[B, H, N, D]` with any strides | the pointer arithmetic | a 2-D grid over (batch x head, row tiles), base offsets from strides |
#
# Each exercise has a kernel to complete (cells marked `# YOUR CODE HERE`), a wrapper that is
# given (it allocates the output and launches the kernel), and checks with points.
#
# **Where it runs.** On a CUDA GPU the kernels are compiled. Without one, `import autograder`
# switches Triton to its *interpreter* (`TRITON_INTERPRET=1`): the same kernels run on the CPU
# with NumPy, slowly but exactly, and `print(...)` works inside a kernel, which is handy for
# debugging. Set `AUTOGRADER_TIER=cpu` before starting Python to get the interpreter on a GPU machine too.

# %% export=true
import autograder  # first: picks the GPU or the CPU (interpreter) tier before any kernel is defined

import torch
import triton
import triton.language as tl

# %%
import functools

from autograder import triton_basics
from autograder.triton_basics import AxpbCase, CopyCase, RowCase

# %% [markdown]
# ## How a Triton kernel works
#
# A kernel is a function decorated with `@triton.jit`. Launching it as `kernel[grid](args...)`
# starts one **program** per grid point; all programs run the same code, in parallel, on
# different data. A program does not handle one element (as a CUDA thread does): it handles a
# whole **block** of elements at once, as a vector.
#
# | Triton | meaning |
# |---|---|
# | `tl.program_id(0)` | which program am I, along grid axis 0 (`pid`) |
# | `tl.arange(0, BLOCK)` | the vector `[0, 1, ..., BLOCK-1]`; `BLOCK` must be a power of two and a `tl.constexpr` |
# | `ptr + offs * stride` | a block of pointers: tensors arrive in the kernel as a pointer to their first element |
# | `tl.load(ptrs, mask=m, other=v)` | read where `m` is True, `v` where it is False (memory there is never touched) |
# | `tl.store(ptrs, vals, mask=m)` | write where `m` is True |
# | `tl.max(x, 1)`, `tl.sum(x, 1)` | reduce a 2-D block along axis 1 |
# | `tl.exp`, `tl.log`, `tl.maximum`, `tl.where` | element-wise math |
#
# Element `(i, j)` of a PyTorch tensor `x` lives at `x_ptr + i * x.stride(0) + j * x.stride(1)`.
# The wrapper passes the strides to the kernel, so one kernel handles contiguous tensors,
# transposed views and slices alike, without a copy.

# %% [markdown]
# ## 2a. A masked vector op: `y = a * x + b` (3 points)
#
# `x` has `n` elements (any `n`, stride `stride_x`); `y` is a new contiguous tensor. With
# `BLOCK = 4` and `n = 10` the grid has `cdiv(10, 4) = 3` programs:
#
# ```
# element index   0  1  2  3 | 4  5  6  7 | 8  9 10 11
# program         pid = 0    | pid = 1    | pid = 2
# offs            pid * BLOCK + tl.arange(0, BLOCK)
# mask = offs<n   T  T  T  T | T  T  T  T | T  T  F  F   <- lanes 10, 11 must not load or store
# ```
#
# The last program sticks out past the end of `x`: without the mask it reads and writes memory
# that is not yours (a crash on a GPU, garbage in the interpreter). In memory element `i` of
# `x` is at `X_ptr + i * stride_x` (`stride_x = 3` for `x = buf[::3]`); `y` is contiguous.
#
# **Write the whole kernel** (4 to 6 lines): the offsets of this program, the mask, a masked
# load, the arithmetic in float32, a masked store (`.to(Y_ptr.dtype.element_ty)` casts back to
# `y`'s dtype).

# %% solution="p2a_kernel" export=true
@triton.jit
def axpb_kernel(X_ptr, Y_ptr, a, b, n, stride_x, BLOCK: tl.constexpr):
    ### BEGIN SOLUTION
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)        # [BLOCK] element indices of this program
    mask = offs < n                                 # the last program sticks out past n
    x = tl.load(X_ptr + offs * stride_x, mask=mask)
    y = a * x.to(tl.float32) + b
    tl.store(Y_ptr + offs, y.to(Y_ptr.dtype.element_ty), mask=mask)
    ### END SOLUTION


# %% export=true
def axpb(x, a, b, BLOCK=256):
    """y = a * x + b for a 1-D tensor x (any stride); y is contiguous, x's dtype."""
    if x.dim() != 1:
        raise ValueError(f"x must be 1-D, got shape {tuple(x.shape)}")
    n = x.shape[0]
    y = torch.empty(n, dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(n, BLOCK),)               # one program per BLOCK elements, the last one partial
    axpb_kernel[grid](x, y, a, b, n, x.stride(0), BLOCK=BLOCK)
    return y


# %% [markdown]
# Try it on one input before the checks (the interpreter lets you `print` inside the kernel):

# %%
x = torch.arange(10, dtype=torch.float32, device=autograder.DEVICE)
try:
    print(axpb(x, 2.0, 1.0, BLOCK=4))        # expected: 1, 3, 5, ..., 19
except Exception as exc:   # the stub raises NotImplementedError (interpreter) or fails to compile (GPU)
    print(f"axpb failed: {type(exc).__name__}: {str(exc)[:300]}")

# %% [markdown]
# The checks run your function on several cases (ragged `n`, `n = 1`, strided `x`, float16 and
# float32) and explain the first failure. They also check that the work happens in your kernel:
# in this problem the wrapper may only allocate and launch, so any PyTorch arithmetic or copy
# (`x * a`, `.contiguous()`, `.clone()`, `.sum()`) is reported.

# %% tests="p2a_basic" points=1
triton_basics.check_2a(axpb, family="basic")

# %% tests="p2a_ragged" points=2
triton_basics.check_2a(axpb, family="ragged")
triton_basics.check_2a(axpb, family="strided")
### BEGIN HIDDEN TESTS
triton_basics.check_2a(functools.partial(axpb, BLOCK=64), cases=[
    AxpbCase("hidden", 65, torch.float32, seed=101), AxpbCase("hidden", 64, seed=102, a=0.0, b=7.0),
    AxpbCase("hidden", 2, torch.float32, stride=5, seed=103), AxpbCase("hidden", 129, stride=2, seed=104)])
triton_basics.check_2a(functools.partial(axpb, BLOCK=1024), cases=[
    AxpbCase("hidden", 3000 if autograder.TIER == "cpu" else 3_000_017, torch.float32, stride=2, seed=105)])
### END HIDDEN TESTS

# %% [markdown]
# ## 2b. Row log-sum-exp of an `[M, N]` matrix (4 points)
#
# For each row `i`: $\mathrm{lse}_i = \log \sum_j e^{x_{ij}}$, natural log, in float32. This is
# the softmax denominator that FlashAttention keeps per query row, and the kernel below is the
# skeleton of Problem 3's: each program owns `BLOCK_M` rows and walks over the columns in tiles
# of `BLOCK_N`, never holding a whole row.
#
# ```
#               start_n = 0    BLOCK_N   2*BLOCK_N      N (not a power of two)
#                  |------------|------------|-------|xxxx|    x: past N, load as -inf
#   pid 0  offs_m  [ tile      ][ tile      ][ tile  xxxx ]    -> m_i, l_i: BLOCK_M values
#   pid 1          [           ][           ][       xxxx ]
#   pid 2  rows>=M [xxxxxxxxxxx][xxxxxxxxxxx][xxxxxxxxxxxx]    x: past M, masked too
# ```
#
# **Why a running max.** `exp(x)` overflows float32 above `x = 88`, so compute
# $\mathrm{lse} = m + \log \sum_j e^{x_j - m}$ with `m` the row max. The max is not known before
# the last tile, so keep the max seen so far, `m_i`, and the sum `l_i` of `exp(x - m_i)`; when a
# new tile raises the max to `m_new`, the old terms were computed against a smaller max and get
# rescaled by $e^{m_i - m_{new}}$:
#
# $$m_{new} = \max(m_i, \max_j x_{ij}), \qquad
#   l_i \leftarrow l_i\, e^{m_i - m_{new}} + \sum_j e^{x_{ij} - m_{new}}, \qquad m_i \leftarrow m_{new}$$
#
# and at the end $\mathrm{lse}_i = m_i + \log l_i$. Start from `m_i = -inf`, `l_i = 0`.
#
# **Masked columns.** Load the columns past `N` (and rows past `M`) with `other=float("-inf")`:
# $e^{-\infty} = 0$, so they drop out of the sum, and they never win the max.
#
# **Rows that see only `-inf` so far.** Attention masks produce exactly this (a query whose
# window starts after the first tile). Then `m_new = -inf` and `exp(x - m_new)` is
# `exp(-inf - (-inf)) = exp(nan)`. Subtract a *safe* max instead: `m_safe = tl.where(m_new == -inf,
# 0, m_new)` gives `exp(-inf - 0) = 0`, as it should. A row of `-inf` only ends with `l_i = 0` and
# `lse = -inf + log 0 = -inf`, which is right.
#
# **Strides.** Element `(i, j)` is at `X_ptr + i * stride_xm + j * stride_xn`; a tile of pointers
# is `offs_m[:, None] * stride_xm + offs_n[None, :] * stride_xn` (`[BLOCK_M, BLOCK_N]`, by
# broadcasting). The checks pass transposed views (`stride_xn != 1`) and slices of wider
# matrices (`stride_xm > N`).
#
# **Write** the body of the loop (masked 2-D load as float32, the update above) and the final
# masked store of `m_i + log(l_i)`.

# %% solution="p2b_kernel" export=true
@triton.jit
def row_lse_kernel(X_ptr, LSE_ptr, M, N, stride_xm, stride_xn,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid = tl.program_id(0)
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)          # [BLOCK_M] rows of this program
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)     # running max of each row
    l_i = tl.zeros([BLOCK_M], tl.float32)                   # running sum of exp(x - m_i)
    for start_n in range(0, N, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)            # [BLOCK_N] columns of this tile
        ### BEGIN SOLUTION
        mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
        x = tl.load(X_ptr + offs_m[:, None] * stride_xm + offs_n[None, :] * stride_xn,
                    mask=mask, other=float("-inf")).to(tl.float32)          # [BLOCK_M, BLOCK_N]
        m_new = tl.maximum(m_i, tl.max(x, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)    # no -inf - -inf for empty rows
        l_i = l_i * tl.exp(m_i - m_safe) + tl.sum(tl.exp(x - m_safe[:, None]), 1)
        m_i = m_new
        ### END SOLUTION
    ### BEGIN SOLUTION
    tl.store(LSE_ptr + offs_m, m_i + tl.log(l_i), mask=offs_m < M)
    ### END SOLUTION


# %% export=true
def row_logsumexp(x, BLOCK_M=16, BLOCK_N=64):
    """log(sum(exp(x), dim=1)) of a 2-D tensor (any strides): [M] float32."""
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D [M, N], got shape {tuple(x.shape)}")
    M, N = x.shape
    lse = torch.empty(M, dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(M, BLOCK_M),)              # one program per BLOCK_M rows
    row_lse_kernel[grid](x, lse, M, N, x.stride(0), x.stride(1), BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N)
    return lse


# %%
x = torch.tensor([[0.0, 1.0, 2.0], [1000.0, 1000.0, float("-inf")]], device=autograder.DEVICE)
try:
    print(row_logsumexp(x), "expected", torch.logsumexp(x, 1))   # [2.4076, 1000.6931]
except Exception as exc:   # the stub raises NotImplementedError (interpreter) or fails to compile (GPU)
    print(f"row_logsumexp failed: {type(exc).__name__}: {str(exc)[:300]}")

# %% tests="p2b_basic" points=1
triton_basics.check_2b(row_logsumexp, family="basic")

# %% tests="p2b_ragged" points=1
triton_basics.check_2b(row_logsumexp, family="ragged")
### BEGIN HIDDEN TESTS
triton_basics.check_2b(functools.partial(row_logsumexp, BLOCK_M=4, BLOCK_N=32), cases=[
    RowCase("hidden", 9, 33, torch.float32, seed=201), RowCase("hidden", 4, 32, seed=202),
    RowCase("hidden", 3, 1, torch.float32, seed=203), RowCase("hidden", 1, 95, torch.float32, seed=204)])
### END HIDDEN TESTS

# %% tests="p2b_strided" points=1
triton_basics.check_2b(row_logsumexp, family="strided")

# %% tests="p2b_stable" points=1
triton_basics.check_2b(row_logsumexp, family="stable")
### BEGIN HIDDEN TESTS
triton_basics.check_2b(functools.partial(row_logsumexp, BLOCK_M=8, BLOCK_N=16), cases=[
    RowCase("hidden", 13, 70, torch.float32, masked=True, layout="transposed", seed=205),
    RowCase("hidden", 10, 40, masked=True, spread=30.0, layout="padded", seed=206)])
### END HIDDEN TESTS

# %% [markdown]
# ## 2c. Tiled copy of a `[B, H, N, D]` tensor (3 points)
#
# Attention inputs are `[B, H, N, D]` (batch, heads, sequence, head dim) with **any strides**:
# a `[B, N, H, D]` projection output viewed as `[B, H, N, D]` is not contiguous, and copying it
# first would cost as much memory traffic as the attention itself. Problem 3 reads such tensors
# tile by tile; here you copy one into a contiguous output with exactly that pointer arithmetic.
#
# The grid is 2-D: axis 0 enumerates the `B * H` (batch, head) pairs, axis 1 walks the rows of
# one head in tiles of `BLOCK_N`. (Why this order: CUDA allows 2^31 - 1 programs on axis 0 but
# only 65535 on axes 1 and 2, and `B * H` can pass 65535 where `cdiv(N, BLOCK_N)` does not.)
#
# ```
# grid = (B * H, cdiv(N, BLOCK_N))
#
#            off_bh = 0      1      2     ...   B*H-1         off_bh = program_id(0)
#            (b=0,h=0) (b=0,h=1) (b=0,h=2)                   b = off_bh // H,  h = off_bh % H
# pid_n = 0  [rows 0 .. BLOCK_N-1      ]  x [D]              pid_n = program_id(1)
# pid_n = 1  [rows BLOCK_N .. 2BLOCK_N-1]
# pid_n = 2  [rows ... N-1  | masked   ]                    mask = offs_n[:, None] < N
# ```
#
# One program handles the tile `x[b, h, offs_n, :]` of shape `[BLOCK_N, HEAD_DIM]`:
#
# $$\texttt{X\_ptr} + b \cdot \texttt{stride\_xb} + h \cdot \texttt{stride\_xh}
#   + \texttt{offs\_n[:, None]} \cdot \texttt{stride\_xn} + \texttt{offs\_d[None, :]} \cdot \texttt{stride\_xd}$$
#
# and the same with the output's strides for the store. `HEAD_DIM` is a power of two (as in
# attention: 16 to 128), so `offs_d = tl.arange(0, HEAD_DIM)` needs no mask. Convert `b` and `h`
# to `tl.int64` before multiplying by a stride: `b * stride_xb` overflows int32 once a tensor
# has more than 2^31 elements. The checks use contiguous inputs, `[B, N, H, D]` views,
# sliced head dims, `stride_xd != 1`, swapped batch/head dims and a broadcast head (`stride_xh = 0`).
#
# **Write** everything after the two program ids: `b` and `h`, the base pointers, the offsets,
# the masked load and store.

# %% solution="p2c_kernel" export=true
@triton.jit
def copy_bhnd_kernel(X_ptr, O_ptr, N, H,
                     stride_xb, stride_xh, stride_xn, stride_xd,
                     stride_ob, stride_oh, stride_on, stride_od,
                     HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr):
    off_bh = tl.program_id(0)       # which (batch, head) pair
    pid_n = tl.program_id(1)        # which tile of BLOCK_N rows
    ### BEGIN SOLUTION
    b = off_bh // H
    h = off_bh % H
    X_ptr += b.to(tl.int64) * stride_xb + h.to(tl.int64) * stride_xh
    O_ptr += b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)        # [BLOCK_N] rows of this tile
    offs_d = tl.arange(0, HEAD_DIM)                         # [HEAD_DIM]
    mask = offs_n[:, None] < N                              # the last tile may stick out
    tile = tl.load(X_ptr + offs_n[:, None] * stride_xn + offs_d[None, :] * stride_xd, mask=mask)
    tl.store(O_ptr + offs_n[:, None] * stride_on + offs_d[None, :] * stride_od, tile, mask=mask)
    ### END SOLUTION


# %% export=true
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


# %% tests="p2c_basic" points=1
triton_basics.check_2c(copy_bhnd, family="basic")

# %% tests="p2c_ragged" points=1
triton_basics.check_2c(copy_bhnd, family="ragged")
### BEGIN HIDDEN TESTS
triton_basics.check_2c(functools.partial(copy_bhnd, BLOCK_N=8), cases=[
    CopyCase("hidden", 1, 1, 9, 8, torch.float32, seed=301), CopyCase("hidden", 3, 2, 8, 16, seed=302),
    CopyCase("hidden", 2, 1, 3, 2, torch.float32, seed=303)])
### END HIDDEN TESTS

# %% tests="p2c_strided" points=1
triton_basics.check_2c(copy_bhnd, family="strided")
### BEGIN HIDDEN TESTS
triton_basics.check_2c(functools.partial(copy_bhnd, BLOCK_N=16), cases=[
    CopyCase("hidden", 3, 2, 21, 16, torch.float32, layout="bnhd", seed=304),
    CopyCase("hidden", 2, 4, 11, 8, layout="dn", seed=305),
    CopyCase("hidden", 4, 3, 5, 32, layout="hb", seed=306)])
### END HIDDEN TESTS

# %% [markdown]
# ## Benchmark: is the copy as fast as memory allows?
#
# A copy moves `2 * x.numel() * x.element_size()` bytes. On a GPU, compare your kernel with
# PyTorch's own strided copy (`.contiguous()`) on a `[B, N, H, D]` view; both should run close to
# the memory bandwidth (about 3 TB/s on an H100). The interpreter measures nothing useful, so the
# CPU tier skips this.

# %%
if autograder.TIER == "gpu":
    xb = torch.randn(8, 4096, 16, 128, device="cuda", dtype=autograder.DTYPE).transpose(1, 2)  # [B, H, N, D] view
    nbytes = 2 * xb.numel() * xb.element_size()
    for name, f in (("copy_bhnd (yours)", lambda: copy_bhnd(xb, BLOCK_N=64)),
                    ("torch .contiguous()", lambda: xb.contiguous())):
        ms = triton.testing.do_bench(f)
        print(f"{name:22s} {ms * 1e3:8.1f} us  {nbytes / (ms * 1e-3) / 1e9:7.1f} GB/s")
else:
    print("benchmark skipped: the CPU tier runs kernels in the interpreter; run this notebook on a GPU to time it")

# %% [markdown]
# ## What to take away
#
# * A program owns a **tile**; `pid * BLOCK + tl.arange(0, BLOCK)` are its indices, and every
#   load and store of a tile that can stick out of the tensor needs a **mask**. The grid is
#   `cdiv(size, BLOCK)`, rounded up, never down.
# * Tensors arrive as pointers; **strides** turn indices into addresses, so one kernel serves
#   every layout without copies. Base offsets (`b * stride_xb + h * stride_xh`) select a head.
# * A row reduction over tiles keeps a **running max `m_i` and sum `l_i`**, rescales `l_i` by
#   `exp(m_i - m_new)` when the max grows, loads out-of-bounds values as `-inf`, and guards the
#   `-inf - (-inf)` of rows that have seen nothing yet.
#
# Problem 3 combines all three: the grid (flattened to one axis, query tiles the fast index) and
# pointers of 2c for `Q`, `K`, `V` and `O`, the loop of
# 2b over key tiles, where each tile's scores come from `tl.dot(q, tl.trans(k))`, plus one more
# running quantity, the output accumulator `acc`, rescaled by the same factor as `l_i`.
