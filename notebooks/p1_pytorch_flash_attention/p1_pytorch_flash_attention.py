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
# # Problem 1: FlashAttention in PyTorch (blockwise online softmax)
#
# Attention computes, for `q`, `k`, `v` of shape `[B, H, N, D]` (batch, heads, sequence, head dim),
#
# $$S = \frac{Q K^\top}{\sqrt{D}} \;\; [N, N], \qquad P = \mathrm{softmax}(S) \text{ row by row}, \qquad O = P V \;\; [N, D].$$
#
# Written like that, it stores the `N x N` matrix `S` for every head: at `N = 32768` that is
# 4 GiB per head in float32, and reading and writing it dominates the run time. FlashAttention
# computes exactly the same `O` while never holding more than one `BLOCK_M x BLOCK_N` tile of `S`.
# This problem writes that algorithm in plain PyTorch, so you can see every step and print
# every tensor; Problem 3 turns the same loops into a Triton kernel.
#
# **What you will learn**
#
# * the **online softmax**: a running max `m_i`, a running sum `l_i` and an unnormalised output
#   `acc`, updated tile by tile, with one division at the very end;
# * why the rescale factor $e^{m_{old} - m_{new}}$ makes the result exact, not an approximation;
# * how **masks** (causal, sliding window, attention sinks) enter as `-inf` scores, and the one
#   pitfall they bring (`-inf - (-inf) = nan`);
# * how a sequence length that is not a multiple of the tile size is handled with a **bounds mask**.
#
# **What you write**: the body of the key loop (scores, mask, online-softmax update) and the
# final normalisation. Loops, tiles and allocation are given.
#
# **Points**: 10 (basic 1, ragged lengths 2, layouts and head dims 1, non-causal 1, causal 2,
# window and sinks 1, hidden cases 2).

# %% export=true
import autograder  # first: picks the GPU or the CPU tier

import math

import torch
import torch.nn.functional as F

from autograder.masks import attention_mask

# %%
import functools
import time

from autograder import Case, masks, plots

# %% [markdown]
# ## 1. Tiles of the score matrix
#
# Split the queries into tiles of `BLOCK_M` rows and the keys into tiles of `BLOCK_N` rows. One
# query tile and one key tile give one tile of scores, `[BLOCK_M, BLOCK_N]`. The outer loop walks
# over query tiles (in Problem 3 they become parallel programs); the inner loop walks over key
# tiles, left to right, and folds each tile of scores into the running state of the query rows.
# Here `N = 77` with `BLOCK_M = 32`, `BLOCK_N = 16`: the last tiles stick out past `N`
# (the orange ones need the bounds mask `j < N`).

# %%
plots.show_tile_schedule(77, 32, 16, is_causal=False)

# %% [markdown]
# ## 2. Online softmax
#
# For one query row, softmax needs the max and the sum over **all** keys:
# $o = \sum_j \frac{e^{s_j - m}}{\ell} v_j$ with $m = \max_j s_j$ (subtracting it keeps `exp`
# from overflowing) and $\ell = \sum_j e^{s_j - m}$. The keys arrive one tile at a time, so keep
# for each query row
#
# * `m_i`: the max of the scores seen so far (start `-inf`),
# * `l_i`: the sum of $e^{s_j - m_i}$ over the keys seen so far (start `0`),
# * `acc`: the sum of $e^{s_j - m_i} v_j$, a `[D]` vector (start `0`), **not** divided by `l_i` yet.
#
# For a new tile of scores `s` (`[BLOCK_M, BLOCK_N]`) and values `v` (`[BLOCK_N, D]`):
#
# $$m_{new} = \max\big(m_i,\ \max_j s_{ij}\big), \qquad \alpha = e^{m_i - m_{new}}, \qquad p_{ij} = e^{s_{ij} - m_{new}}$$
# $$\ell_i \leftarrow \alpha\, \ell_i + \sum_j p_{ij}, \qquad \mathrm{acc}_i \leftarrow \alpha\, \mathrm{acc}_i + \sum_j p_{ij} v_j, \qquad m_i \leftarrow m_{new}$$
#
# Why it is exact: every term already in `l_i` and `acc` was computed as $e^{s - m_{old}}$;
# multiplying by $\alpha$ turns it into $e^{s - m_{new}}$, so after every tile `l_i` and `acc` are
# exactly the sums over the keys seen so far, relative to the current max. After the last tile:
#
# $$O_i = \mathrm{acc}_i / \ell_i \quad \text{(one division per row, at the end)}, \qquad \mathrm{lse}_i = m_i + \log \ell_i .$$
#
# `lse` (the natural-log log-sum-exp of the row's scaled scores) is what a backward pass needs
# to recompute `P` without storing it; the function returns it as a second output.
#
# In PyTorch, with the batch and head dims in front: `s = q_tile @ k_tile.transpose(-1, -2) * sm_scale`
# is `[B, H, BLOCK_M, BLOCK_N]`, the row max is `s.amax(-1)`, the row sum `p.sum(-1)`, and
# $\sum_j p_{ij} v_j$ for the whole tile is `p @ v_tile`.

# %% [markdown]
# ## 3. Masks
#
# A mask says which keys a query may see. The course writes masks as predicates on index
# tensors (`autograder.masks`, in the style of attention-gym): `mask_fn(q_idx, kv_idx)` is True
# where query `i` sees key `j`:
#
# * causal: `j <= i`;
# * sliding window of `W` keys: `j <= i` and `j >= i - (W - 1)` (the window counts the diagonal);
# * sinks: the first `S` keys stay visible to every query at or after them: `j < S` and `j <= i`.
#
# `attention_mask(is_causal, window_size, sink_size)` returns the predicate for the function's
# arguments. For a tile with query indices `offs_m` (`[BLOCK_M]`) and key indices `offs_n`
# (`[BLOCK_N]`), `mask_fn(offs_m[:, None], offs_n[None, :])` is the `[BLOCK_M, BLOCK_N]` mask of
# the tile. A hidden pair gets the score `-inf`, so $e^{-\infty} = 0$ removes it from `l_i` and `acc`.
#
# **The pitfall.** With a window, a query row can see *no key at all* in a tile (the tile is left
# of its window). If it has seen nothing before either, then `m_i = -inf`, `m_new = -inf`, and
# $e^{s - m_{new}} = e^{-\infty - (-\infty)} = e^{\text{nan}}$. Subtract a safe max instead:
# `m_safe = torch.where(m_new == -inf, 0, m_new)`; then $\alpha = e^{-\infty - 0} = 0$ and
# $p = e^{-\infty - 0} = 0$, as they should be. (Keep `m_i = m_new`, not `m_safe`.)

# %%
fig = plots.show_mask(is_causal=True, window_size=6, sink_size=2, n=24)
fig

# %% [markdown]
# ## 4. Ragged sequence lengths: the bounds mask
#
# `N` is rarely a multiple of the tile size. The given code pads `q`, `k`, `v` with zeros up to
# whole tiles, so every tile has the same shape; this is what a masked `tl.load(..., other=0.0)`
# does in Triton. The padded keys have score `0`, not `-inf`: **your mask must also hide keys
# `j >= N`** (`offs_n < N`). Padded query rows compute garbage that is never stored (the given
# code writes back only rows `< N`).
#
# ## 5. Your turn
#
# Fill in the two regions of `flash_attention_forward`:
#
# 1. inside the key loop: the scores of the tile (scaled by `sm_scale`), the mask
#    (`mask_fn` and the bounds), then the online-softmax update of `m_i`, `l_i`, `acc`;
# 2. after the key loop: `o_tile = acc / l_i` and `lse_tile = m_i + log(l_i)` (per row).
#
# Compute in float32 (the tiles are converted for you); the given code casts `O` back to `q`'s dtype.

# %% solution="p1_forward" export=true
def flash_attention_forward(q, k, v, is_causal=False, window_size=None, sink_size=None, block_m=64, block_n=64):
    """Attention of q [B, Hq, N, D] over k, v [B, Hkv, N, D] (any strides), one BLOCK_M x BLOCK_N tile
    of scores at a time. Returns (O [B, Hq, N, D] in q's dtype, lse [B, Hq, N] float32)."""
    B, Hq, Hkv, N, D = autograder.validate_attention_inputs(q, k, v, is_causal, window_size, sink_size)
    mask_fn = attention_mask(is_causal, window_size, sink_size)   # (q_idx, kv_idx) -> visible
    sm_scale = 1.0 / math.sqrt(D)
    if Hkv != Hq:   # grouped-query attention (Problem 5): query head h reads K/V head h // (Hq // Hkv)
        k = k.repeat_interleave(Hq // Hkv, dim=1)
        v = v.repeat_interleave(Hq // Hkv, dim=1)
    # pad the sequence dim with zeros up to whole tiles (a masked load with other=0.0 in Triton)
    q_pad = F.pad(q, (0, 0, 0, -N % block_m))                     # [B, H, N_pad_m, D]
    k_pad = F.pad(k, (0, 0, 0, -N % block_n))                     # [B, H, N_pad_n, D]
    v_pad = F.pad(v, (0, 0, 0, -N % block_n))
    o = torch.empty_like(q)                                       # [B, H, N, D]
    lse = torch.empty(B, Hq, N, dtype=torch.float32, device=q.device)

    for start_m in range(0, N, block_m):
        offs_m = start_m + torch.arange(block_m, device=q.device)            # [BLOCK_M] query indices
        q_tile = q_pad[:, :, start_m:start_m + block_m].float()              # [B, H, BLOCK_M, D]
        m_i = torch.full((B, Hq, block_m), float("-inf"), device=q.device)   # running row max
        l_i = torch.zeros(B, Hq, block_m, device=q.device)                   # running sum of exp
        acc = torch.zeros(B, Hq, block_m, D, device=q.device)                # unnormalised output
        for start_n in range(0, N, block_n):
            offs_n = start_n + torch.arange(block_n, device=q.device)        # [BLOCK_N] key indices
            k_tile = k_pad[:, :, start_n:start_n + block_n].float()          # [B, H, BLOCK_N, D]
            v_tile = v_pad[:, :, start_n:start_n + block_n].float()          # [B, H, BLOCK_N, D]
            ### BEGIN SOLUTION
            s = (q_tile @ k_tile.transpose(-1, -2)) * sm_scale                # [B, H, BLOCK_M, BLOCK_N]
            visible = mask_fn(offs_m[:, None], offs_n[None, :]) & (offs_n < N)[None, :]
            s = s.masked_fill(~visible, float("-inf"))
            m_new = torch.maximum(m_i, s.amax(-1))                           # [B, H, BLOCK_M]
            m_safe = torch.where(m_new == float("-inf"), 0.0, m_new)         # rows that saw no key yet
            alpha = torch.exp(m_i - m_safe)                                  # rescales the old sums
            p = torch.exp(s - m_safe[..., None])                             # [B, H, BLOCK_M, BLOCK_N]
            l_i = l_i * alpha + p.sum(-1)
            acc = acc * alpha[..., None] + p @ v_tile
            m_i = m_new
            ### END SOLUTION
        ### BEGIN SOLUTION
        o_tile = acc / l_i[..., None]                                        # the one division
        lse_tile = m_i + torch.log(l_i)
        ### END SOLUTION
        rows = min(block_m, N - start_m)                                     # query rows < N only
        o[:, :, start_m:start_m + rows] = o_tile[:, :, :rows].to(o.dtype)
        lse[:, :, start_m:start_m + rows] = lse_tile[:, :, :rows]
    return o, lse


# %% [markdown]
# Try it on a small input against naive attention (which builds the whole `N x N` matrix):

# %%
q, k, v = Case("demo", B=1, Hq=2, Hkv=2, N=10, D=16, dtype=torch.float32).make_inputs()
try:
    o, lse = flash_attention_forward(q, k, v, is_causal=True, block_m=4, block_n=4)
    o_naive, lse_naive = autograder.naive_attention(q, k, v, is_causal=True, return_lse=True)
    print("max |O - naive| =", (o - o_naive).abs().max().item(), "  max |lse - naive| =",
          (lse - lse_naive).abs().max().item())
except NotImplementedError:
    print("flash_attention_forward is not implemented yet")

# %% [markdown]
# ## 6. Checks
#
# `autograder.check(1, fn, family=...)` runs a family of cases and explains the first failure
# (which case, which rows, and when it can tell, which mistake). It also refuses a full `N x N`
# score matrix for `N > 64`, and PyTorch's own attention: the tiles must really be used.

# %% tests="p1_basic" points=1
autograder.check(1, flash_attention_forward, family="basic")

# %% tests="p1_ragged" points=2
autograder.check(1, flash_attention_forward, family="ragged")

# %% tests="p1_layout" points=1
autograder.check(1, flash_attention_forward, family="layout")
autograder.check(1, flash_attention_forward, family="headdim")

# %% tests="p1_full" points=1
autograder.check(1, flash_attention_forward, family="full")

# %% [markdown]
# The causal mask, then the sliding window and sinks: with the predicates they need no new code.

# %% tests="p1_causal" points=2
_big = autograder.TIER == "gpu"
autograder.check(1, flash_attention_forward, cases=[
    Case("causal", 1, 2, 2, 1000 if _big else 64, 64 if _big else 16, is_causal=True, seed=41),
    Case("causal", 2, 2, 2, 777 if _big else 77, 32, is_causal=True, seed=42),
    Case("causal", 1, 1, 1, 1, 16, is_causal=True, seed=43),
    Case("causal", 1, 2, 2, 2085 if _big else 130, 64, is_causal=True, spread=3.0, layout="bnhd", seed=44),
])

# %% tests="p1_window" points=1
autograder.check(1, flash_attention_forward, cases=[
    Case("window", 1, 2, 2, 1500 if _big else 150, 16, is_causal=True, window_size=5, seed=51),
    Case("window", 1, 2, 2, 1000 if _big else 100, 32, is_causal=True, window_size=70, seed=52),
    Case("sinks", 1, 2, 2, 1000 if _big else 130, 16, is_causal=True, window_size=8, sink_size=4, seed=53),
    Case("sinks", 2, 1, 1, 700 if _big else 90, 16, is_causal=True, window_size=1, sink_size=1, seed=54),
])

# %% tests="p1_hidden" points=2
# Tile sizes other than the defaults (16 x 32 here); hidden tests add other shapes and seeds,
# tiny N, grouped-query heads and more tile sizes.
autograder.check(1, functools.partial(flash_attention_forward, block_m=16, block_n=32), family="ragged")
### BEGIN HIDDEN TESTS
_f32 = torch.float32
autograder.check(1, flash_attention_forward, cases=[
    Case("hidden", 2, 3, 3, 2, 16, seed=61), Case("hidden", 1, 2, 2, 3, 32, is_causal=True, dtype=_f32, seed=62),
    Case("hidden", 1, 4, 2, 65 if not _big else 1031, 64, seed=63),
    Case("hidden", 1, 8, 2, 70 if not _big else 999, 16, is_causal=True, window_size=9, sink_size=3, seed=64),
    Case("hidden", 1, 2, 2, 70 if not _big else 700, 16, is_causal=True, window_size=9, seed=70, low_score=250.0),
])
autograder.check(1, functools.partial(flash_attention_forward, block_m=16, block_n=32), cases=[
    Case("hidden", 1, 2, 2, 100 if not _big else 1000, 16, seed=65, spread=4.0),
    Case("hidden", 2, 2, 2, 47, 32, is_causal=True, layout="padded", seed=66),
    Case("hidden", 1, 2, 2, 90 if not _big else 900, 16, is_causal=True, window_size=20, seed=67),
    Case("hidden", 1, 1, 1, 33, 64, is_causal=True, window_size=3, sink_size=17, dtype=_f32, seed=68),
])
autograder.check(1, functools.partial(flash_attention_forward, block_m=8, block_n=8), cases=[
    Case("hidden", 1, 2, 2, 20, 16, is_causal=True, window_size=4, seed=69, layout="bnhd")])
### END HIDDEN TESTS

# %% [markdown]
# ## 7. Timing against naive attention
#
# Both versions run PyTorch operations, so this is not the speed-up FlashAttention gets on a GPU:
# that comes from keeping tiles in on-chip memory inside one kernel (Problem 3 onwards); here
# every tile costs a dozen small operations, and on a GPU a dozen kernel launches. What it shows
# is memory: naive attention allocates the `[B, H, N, N]` score matrix, the tiled version
# at most `[B, H, BLOCK_M, BLOCK_N]`.

# %%
def seconds(f):
    if autograder.TIER == "gpu":
        torch.cuda.synchronize()      # GPU work is asynchronous: wait before and after
    t0 = time.perf_counter()
    f()
    if autograder.TIER == "gpu":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


B, H, D = 1, 4, 64
for N in (512, 1024):
    q, k, v = Case("bench", B, H, H, N, D, dtype=torch.float32).make_inputs()
    try:
        t_flash = seconds(lambda: flash_attention_forward(q, k, v, is_causal=True))
    except NotImplementedError:
        print("flash_attention_forward is not implemented yet")
        break
    t_naive = seconds(lambda: autograder.naive_attention(q, k, v, is_causal=True))
    print(f"N={N:5d}: tiled {t_flash * 1e3:7.1f} ms (largest score tile {B * H * 64 * 64 * 4 / 2**10:6.0f} KiB), "
          f"naive {t_naive * 1e3:7.1f} ms (score matrix {B * H * N * N * 4 / 2**20:6.1f} MiB)")

# %% [markdown]
# ## What to take away
#
# * Softmax over a row does not need the whole row at once: a running max `m_i`, a running sum
#   `l_i` and an unnormalised `acc`, rescaled by $e^{m_{old} - m_{new}}$ when the max grows, give
#   the exact result after the last tile, with **one division at the end**.
# * `lse = m_i + log(l_i)` comes for free and is all a backward pass needs.
# * Masks are predicates on `(offs_m, offs_n)`; hidden pairs become `-inf`. A row that has seen
#   no visible key needs a safe max so that `-inf - (-inf)` never happens.
# * Padding to whole tiles plus a bounds mask (`offs_n < N`) handles any `N`.
#
# This version still visits every key tile, even tiles the causal mask hides entirely.
# Problem 3 moves these loops into a Triton kernel (one program per query tile); Problem 4
# skips the hidden tiles and drops the mask where a tile is fully visible.
