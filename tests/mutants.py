"""A catalog of planted mistakes ("mutants") in the reference solutions, and how to build and grade them.

Each mutant is a reference solution module (`solutions/<slug>.py`) with one or a few exact snippets
replaced: a mistake a student could plausibly make, or a cheat. `tests/test_kill_rate.py` runs every
mutant through the notebook's graded cells (the visible code a student runs, then the hidden tests)
and asserts that the checks catch it with a message that names the mistake (`words`).

A snippet must occur exactly once in the module source; when a notebook changes and a snippet no
longer matches, `build` fails loudly, so the catalog cannot silently drift out of sync.

Kinds: "bug" (a wrong answer that must be caught), "cheat" (a right answer from forbidden means:
PyTorch attention, the autograder's reference, PyTorch math instead of the kernel), and "slow"
(a right answer with the wrong algorithm: graded by `autograder.tile_skipping.check_tile_skipping`,
not by the output checks).
"""
from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

from autograder.problems import PROBLEMS   # importing autograder picks the tier before any kernel is defined

REPO = Path(__file__).resolve().parent.parent

SLUGS = {n: p.slug for n, p in PROBLEMS.items() if p.entry_point == "flash_attention_forward"}


@dataclass(frozen=True)
class Mutant:
    name: str
    problem: int
    edits: Tuple[Tuple[str, str], ...]   # (exact snippet, replacement); each snippet found exactly once
    description: str
    words: Tuple[str, ...]               # the failure message must contain all of them (case-insensitive)
    kind: str = "bug"                    # "bug", "cheat" or "slow"
    cell: str = ""                       # when set: the visible graded cell that must catch it

    @property
    def slug(self):
        return SLUGS[self.problem]


def M(name, problem, edits, description, words, kind="bug", cell=""):
    if isinstance(edits[0], str):
        edits = (edits,)
    if isinstance(words, str):
        words = (words,)
    return Mutant(name, problem, tuple(tuple(e) for e in edits), description, tuple(words), kind, cell)


SDPA_CHEAT = ("    o = torch.empty_like(q)\n",
              "    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=is_causal)\n")

MUTANTS = [
    # ---------------------------------------------------------------- Problem 1 (PyTorch, blockwise)
    M("p1_acc_not_rescaled", 1,
      ("acc = acc * alpha[..., None] + p @ v_tile", "acc = acc + p @ v_tile"),
      "acc is not multiplied by alpha when the running max grows", ("acc is not rescaled", "torch.exp"),
      cell="p1_basic"),
    M("p1_l_not_rescaled", 1,
      ("l_i = l_i * alpha + p.sum(-1)", "l_i = l_i + p.sum(-1)"),
      "l_i is not multiplied by alpha when the running max grows", ("l_i is not rescaled", "torch.exp"),
      cell="p1_basic"),
    M("p1_lse_log2", 1,
      ("lse_tile = m_i + torch.log(l_i)", "lse_tile = (m_i + torch.log(l_i)) * 1.4426950408889634"),
      "lse returned in log2 units (log2-sum-exp2) instead of the natural log", "natural log"),
    M("p1_tile_local_causal", 1,
      ("visible = mask_fn(offs_m[:, None], offs_n[None, :])",
       "visible = mask_fn(offs_m[:, None] - start_m, offs_n[None, :] - start_n)"),
      "the causal mask compares indices inside the tile, not positions in the sequence", "inside the tile"),
    M("p1_padded_keys_visible", 1,
      ("visible = mask_fn(offs_m[:, None], offs_n[None, :]) & (offs_n < N)[None, :]",
       "visible = mask_fn(offs_m[:, None], offs_n[None, :])"),
      "bounds mask dropped: the zero-padded keys past N take part in the softmax", "past N"),
    M("p1_no_guard", 1,
      ("m_safe = torch.where(m_new == float(\"-inf\"), 0.0, m_new)", "m_safe = m_new"),
      "no m_i = -inf guard: NaN when a row sees no key in a tile (window below a tile)", "m_i = -inf"),
    M("p1_m_i_starts_at_zero", 1,
      ("m_i = torch.full((B, Hq, block_m), float(\"-inf\"), device=q.device)",
       "m_i = torch.zeros(B, Hq, block_m, device=q.device)"),
      "the running max starts at 0: rows whose scores are all very negative underflow to 0/0",
      "m_i must start at -inf"),
    M("p1_broadcast_scores", 1,
      ("    for start_m in range(0, N, block_m):",
       "    s = (q.float()[:, :, :, None, :] * k.float()[:, :, None, :, :]).sum(-1) * sm_scale\n"
       "    s = s.masked_fill(~mask_fn(torch.arange(N)[:, None], torch.arange(N)[None, :]), float('-inf'))\n"
       "    m = s.amax(-1, keepdim=True)\n"
       "    e = torch.exp(s - m)\n"
       "    l = e.sum(-1, keepdim=True)\n"
       "    o = (e[..., None] * v.float()[:, :, None, :, :]).sum(-2) / l\n"
       "    return o.to(q.dtype), (m + torch.log(l))[..., 0]\n"
       "    for start_m in range(0, N, block_m):"),
      "the full score matrix from a broadcast multiply-sum and exp/sum/div (no matmul, no softmax op)",
      ("cheating", "full score matrix"), kind="cheat"),
    M("p1_full_score_matrix", 1,
      ("    for start_m in range(0, N, block_m):",
       "    block_m = block_n = max(N, 1)\n    q_pad, k_pad, v_pad = q, k, v\n"
       "    for start_m in range(0, N, block_m):"),
      "one tile as big as the sequence: the full N x N score matrix", "cheating", kind="cheat"),
    M("p1_sdpa", 1,
      ("    o = torch.empty_like(q)                                       # [B, H, N, D]\n",
       "    o = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)\n"
       "    return o, torch.logsumexp(q.float() @ k.float().transpose(-1, -2) * sm_scale, -1)\n"),
      "PyTorch's scaled_dot_product_attention", "cheating", kind="cheat"),

    # ---------------------------------------------------------------- Problem 3 (non-causal kernel)
    M("p3_v_with_k_strides", 3,
      ("*q.stride(), *k.stride(), *v.stride(), *o.stride(),", "*q.stride(), *k.stride(), *k.stride(), *o.stride(),"),
      "v addressed with k's strides", ("v and k are mixed up",)),
    M("p3_global_in_kernel", 3,
      (("    n_m = tl.cdiv(N, BLOCK_M)\n", "    qk_scale = qk_scale * LOG2E\n    n_m = tl.cdiv(N, BLOCK_M)\n"),
       ("qk_scale = 1.0 / math.sqrt(D) * LOG2E", "qk_scale = 1.0 / math.sqrt(D)")),
      "the kernel reads the module's LOG2E: the interpreter allows it, a GPU's compiler does not",
      ("does not compile for a GPU", "_flash_attention_fwd", "LOG2E")),
    M("p3_acc_not_rescaled", 3,
      ("        acc = acc * alpha[:, None]\n", ""),
      "acc is not multiplied by alpha when the running max grows", "rescale"),
    M("p3_l_not_rescaled", 3,
      ("l_i = l_i * alpha + tl.sum(p, 1)", "l_i = l_i + tl.sum(p, 1)"),
      "l_i is not multiplied by alpha when the running max grows", "rescale"),
    M("p3_m_updated_before_alpha", 3,
      ("        alpha = tl.math.exp2(m_i - m_ij)                     # rescale of everything seen so far\n"
       "        l_i = l_i * alpha + tl.sum(p, 1)\n",
       "        m_i = m_ij                                           # too early: alpha becomes 1\n"
       "        alpha = tl.math.exp2(m_i - m_ij)\n"
       "        l_i = l_i * alpha + tl.sum(p, 1)\n"),
      "m_i updated before alpha is computed: alpha is always 1, nothing is rescaled", "rescale"),
    M("p3_no_sm_scale", 3,
      ("qk_scale = 1.0 / math.sqrt(D) * LOG2E", "qk_scale = LOG2E"),
      "scores not scaled by 1/sqrt(D)", "1/sqrt(D)"),
    M("p3_exp2_without_log2e", 3,
      ("qk_scale = 1.0 / math.sqrt(D) * LOG2E", "qk_scale = 1.0 / math.sqrt(D)"),
      "exp2 used without folding log2(e) into the scale", "log2(e)"),
    M("p3_division_in_loop", 3,
      (("        m_i = m_ij\n    return acc, l_i, m_i", "        m_i = m_ij\n        acc = acc / l_i[:, None]\n"
        "    return acc, l_i, m_i"),
       ("    acc = acc / l_i[:, None]                  # the one division, after the last tile\n", "")),
      "acc divided by l_i inside the loop (after every tile) instead of once at the end", "divide"),
    M("p3_tail_load_unmasked", 3,
      (("            k = tl.load(k_ptrs, mask=in_bounds[:, None], other=0.0)", "            k = tl.load(k_ptrs)"),
       ("            v = tl.load(v_ptrs, mask=in_bounds[:, None], other=0.0)", "            v = tl.load(v_ptrs)")),
      "bounds mask dropped on the K/V loads of the tail tile: reads past the end of k and v", "outside"),
    M("p3_store_unmasked", 3,
      ("tl.store(o_ptrs, acc.to(O_ptr.dtype.element_ty), mask=offs_m[:, None] < N)",
       "tl.store(o_ptrs, acc.to(O_ptr.dtype.element_ty))"),
      "bounds mask dropped on the store: rows past N are written past the end of o", "outside"),
    M("p3_q_load_unmasked", 3,
      ("q = tl.load(q_ptrs, mask=offs_m[:, None] < N, other=0.0)", "q = tl.load(q_ptrs)"),
      "bounds mask dropped on the query tile load", "outside"),
    M("p3_batch_offset_ignored", 3,
      (("    Q_ptr += b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh",
        "    Q_ptr += h.to(tl.int64) * stride_qh"),
       ("    K_ptr += b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh",
        "    K_ptr += h.to(tl.int64) * stride_kh"),
       ("    V_ptr += b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh",
        "    V_ptr += h.to(tl.int64) * stride_vh"),
       ("    O_ptr += b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh",
        "    O_ptr += h.to(tl.int64) * stride_oh")),
      "the batch offset b * stride_b is missing: every batch reads and writes batch 0", "batch offset"),
    M("p3_contiguous_kv", 3,
      (("    K_ptr += b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh",
        "    K_ptr += (b * N_HEADS + h).to(tl.int64) * N * HEAD_DIM"),
       ("    V_ptr += b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh",
        "    V_ptr += (b * N_HEADS + h).to(tl.int64) * N * HEAD_DIM")),
      "K/V heads addressed as if contiguous ((b * H + h) * N * D) instead of with the strides", "strides"),
    M("p3_head_dim_stride_one", 3,
      (("k_ptrs = K_ptr + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd",
        "k_ptrs = K_ptr + offs_n[:, None] * stride_kn + offs_d[None, :]"),
       ("v_ptrs = V_ptr + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd",
        "v_ptrs = V_ptr + offs_n[:, None] * stride_vn + offs_d[None, :]")),
      "stride_kd assumed to be 1 (the head dim innermost)", "strides"),
    M("p3_grid_floor", 3,
      ('grid = (triton.cdiv(N, cfg["BLOCK_M"]) * B * H,)', 'grid = (N // cfg["BLOCK_M"] * B * H,)'),
      "grid too small for ragged N: N // BLOCK_M query tiles instead of cdiv(N, BLOCK_M)", "cdiv"),
    M("p3_loop_one_tile_early", 3,
      ("    for start_n in range(lo, hi, BLOCK_N):", "    for start_n in range(lo, hi - BLOCK_N, BLOCK_N):"),
      "the key loop stops one tile early", "key tile"),
    M("p3_tail_skipped", 3,
      ("offs_d, n_full, N, N, qk_scale, True, BLOCK_N)", "offs_d, n_full, n_full, N, qk_scale, True, BLOCK_N)"),
      "the ragged tail tile of keys is never visited", "key tile"),
    M("p3_tail_scores_unmasked", 3,
      ("            qk = tl.where(in_bounds[None, :], qk, float(\"-inf\"))\n", "            pass\n"),
      "the tail tile's scores are not masked: keys past N (loaded as 0) get weight", "past N"),
    M("p3_m_i_starts_at_zero", 3,
      ("m_i = tl.full([BLOCK_M], float(\"-inf\"), dtype=tl.float32)", "m_i = tl.zeros([BLOCK_M], dtype=tl.float32)"),
      "the running max starts at 0: rows whose scores are all very negative underflow to 0/0",
      "m_i must start at -inf"),
    M("p3_broadcast_scores", 3,
      ("    return o\n",
       "    s = (q.float()[:, :, :, None, :] * k.float()[:, :, None, :, :]).sum(-1) / math.sqrt(D)\n"
       "    e = torch.exp(s - s.amax(-1, keepdim=True))\n"
       "    p = e / e.sum(-1, keepdim=True)\n"
       "    return (p[..., None] * v.float()[:, :, None, :, :]).sum(-2).to(q.dtype)\n"),
      "launches the kernel, returns attention from a broadcast multiply-sum and exp/sum/div (no matmul)",
      ("cheating", "materialised", "full score matrix", "tile by tile"), kind="cheat"),
    M("p3_sdpa", 3, SDPA_CHEAT, "PyTorch's scaled_dot_product_attention instead of the kernel",
      "cheating", kind="cheat"),
    M("p3_kernel_then_torch", 3,
      ("    return o\n",
       "    s = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(D)\n"
       "    return (torch.softmax(s, -1) @ v.float()).to(q.dtype)\n"),
      "launches the Triton kernel, then returns attention computed with torch", "cheating", kind="cheat"),

    # ---------------------------------------------------------------- Problem 4 (causal, two phases)
    M("p4_causal_strict", 4,
      ("visible = (offs_n[None, :] <= offs_m[:, None]) & in_bounds[None, :]",
       "visible = (offs_n[None, :] < offs_m[:, None]) & in_bounds[None, :]"),
      "off-by-one causal mask: j < i hides the diagonal", "j <= i"),
    M("p4_causal_future", 4,
      ("visible = (offs_n[None, :] <= offs_m[:, None]) & in_bounds[None, :]",
       "visible = (offs_n[None, :] <= offs_m[:, None] + 1) & in_bounds[None, :]"),
      "off-by-one causal mask: each query also sees the next key", "j <= i"),
    M("p4_one_diagonal_tile", 4,
      ("hi = tl.minimum(start_m + BLOCK_M, N)", "hi = tl.minimum(full_hi + BLOCK_N, N)"),
      "one diagonal key tile per query tile: wrong when BLOCK_M != BLOCK_N", "key tile"),
    M("p4_diag_lo_at_row", 4,
      ("full_hi = start_m // BLOCK_N * BLOCK_N", "full_hi = start_m + BLOCK_N"),
      "phase 1 runs one tile past the query tile's first row: keys after the diagonal are seen unmasked",
      "check the loop bounds"),
    M("p4_phase1_two_tiles_short", 4,
      ("offs_m, offs_d, 0, full_hi, N, qk_scale, NO_MASK, BLOCK_N)",
       "offs_m, offs_d, 0, full_hi - 2 * BLOCK_N, N, qk_scale, NO_MASK, BLOCK_N)"),
      "phase 1 stops two key tiles before the diagonal", "check the loop bounds"),
    M("p4_loop_step_two_tiles", 4,
      ("    for start_n in range(lo, hi, BLOCK_N):", "    for start_n in range(lo, hi, 2 * BLOCK_N):"),
      "the key loop steps two tiles at a time: every other key tile is skipped", "check the loop bounds"),
    M("p4_causal_ignored", 4,
      ("IS_CAUSAL=is_causal, HEAD_DIM=D", "IS_CAUSAL=False, HEAD_DIM=D"),
      "the wrapper never turns the causal path on", "non-causal"),
    M("p4_matmul_softmax", 4,
      ("    o = torch.empty_like(q)\n",
       "    s = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(D)\n"
       "    if is_causal:\n"
       "        s = s.masked_fill(torch.ones(N, N, dtype=torch.bool).triu(1), float('-inf'))\n"
       "    return (torch.softmax(s, -1) @ v.float()).to(q.dtype)\n"),
      "torch matmul + softmax", "cheating", kind="cheat"),
    M("p4_mask_every_tile", 4,
      ("offs_m, offs_d, 0, full_hi, N, qk_scale, NO_MASK, BLOCK_N)",
       "offs_m, offs_d, 0, full_hi, N, qk_scale, CAUSAL, BLOCK_N)"),
      "phase 1 masks tiles that every row sees: correct, slower", "masks", kind="slow"),

    # ---------------------------------------------------------------- Problem 5 (GQA)
    M("p5_head_modulo", 5,
      ("kv_h = h // GROUP", "kv_h = h % (N_Q_HEADS // GROUP)"),
      "query head h reads K/V head h % Hkv instead of h // (Hq // Hkv)", "h // (Hq // Hkv)"),
    M("p5_head_div_hkv", 5,
      ("kv_h = h // GROUP", "kv_h = h // (N_Q_HEADS // GROUP)"),
      "query head h reads K/V head h // Hkv instead of h // GROUP", "K/V head"),
    M("p5_kv_uses_q_strides", 5,
      (("K_ptr += b.to(tl.int64) * stride_kb + kv_h.to(tl.int64) * stride_kh",
        "K_ptr += b.to(tl.int64) * stride_qb + kv_h.to(tl.int64) * stride_qh"),
       ("V_ptr += b.to(tl.int64) * stride_vb + kv_h.to(tl.int64) * stride_vh",
        "V_ptr += b.to(tl.int64) * stride_qb + kv_h.to(tl.int64) * stride_qh")),
      "K/V offsets computed with q's strides", "batch"),
    M("p5_kv_batch_ignored", 5,
      (("K_ptr += b.to(tl.int64) * stride_kb + kv_h.to(tl.int64) * stride_kh",
        "K_ptr += kv_h.to(tl.int64) * stride_kh"),
       ("V_ptr += b.to(tl.int64) * stride_vb + kv_h.to(tl.int64) * stride_vh",
        "V_ptr += kv_h.to(tl.int64) * stride_vh")),
      "the K/V batch offset is missing: every batch reads batch 0's keys", "batch"),
    M("p5_reference_cheat", 5,
      ("    o = torch.empty_like(q)\n",
       "    return autograder.reference_attention(q, k, v, is_causal=is_causal).to(q.dtype)\n"),
      "returns the autograder's own reference", "cheating", kind="cheat"),

    # ---------------------------------------------------------------- Problem 6 (sliding window)
    M("p6_window_one_too_wide", 6,
      ("in_window = offs_n[None, :] > offs_m[:, None] - WINDOW",
       "in_window = offs_n[None, :] >= offs_m[:, None] - WINDOW"),
      "off-by-one window: W + 1 keys (j >= i - W)", "W - 1"),
    M("p6_window_one_too_narrow", 6,
      ("in_window = offs_n[None, :] > offs_m[:, None] - WINDOW",
       "in_window = offs_n[None, :] > offs_m[:, None] - WINDOW + 1"),
      "off-by-one window: W - 1 keys (j > i - (W - 1))", "hides it"),
    M("p6_window_ignored", 6,
      ("window = N if window_size is None else min(window_size, N)", "window = N"),
      "the wrapper ignores window_size", "window is not applied"),
    M("p6_mask_without_window", 6,
      ("    return causal & in_window\n", "    return causal\n"),
      "the mask forgets the window (the loop bounds still skip tiles)", "mask rules out"),
    M("p6_no_guard", 6,
      ("m_sub = tl.where(m_ij == float(\"-inf\"), 0.0, m_ij)", "m_sub = m_ij"),
      "no m_i = -inf guard: NaN when a row sees no key in a tile (W below a tile)", "m_i = -inf"),
    M("p6_lo_rounded_up", 6,
      ("lo = tl.maximum(start_m - (WINDOW - 1), 0) // BLOCK_N * BLOCK_N",
       "lo = tl.cdiv(tl.maximum(start_m - (WINDOW - 1), 0), BLOCK_N) * BLOCK_N"),
      "lo rounded up: the first keys of the first row's window are skipped", "key tile"),
    M("p6_full_lo_rounded_down", 6,
      ("full_lo = tl.maximum(tl.cdiv(tl.maximum(last_m - (WINDOW - 1), 0), BLOCK_N) * BLOCK_N, lo)",
       "full_lo = tl.maximum(tl.maximum(last_m - (WINDOW - 1), 0) // BLOCK_N * BLOCK_N, lo)"),
      "full_lo rounded down: a tile partly left of the last row's window runs unmasked", "loop bounds"),
    M("p6_full_hi_not_clamped", 6,
      ("full_hi = tl.maximum((start_m + 1) // BLOCK_N * BLOCK_N, full_lo)",
       "full_hi = (start_m + 1) // BLOCK_N * BLOCK_N"),
      "full_hi not clamped at full_lo: with W below a query tile a key tile is visited twice", "twice"),
    M("p6_phase_bounds_block_m", 6,
      ("full_hi = tl.maximum((start_m + 1) // BLOCK_N * BLOCK_N, full_lo)",
       "full_hi = tl.maximum((start_m + BLOCK_M) // BLOCK_N * BLOCK_N, full_lo)"),
      "full_hi from the last row instead of the first: wrong when BLOCK_M != BLOCK_N", "mask rules out"),
    M("p6_kernel_then_torch", 6,
      ("    return o\n",
       "    vis = autograder.masks.dense_mask(autograder.masks.attention_mask(is_causal, window_size), N)\n"
       "    kk = k.float().repeat_interleave(Hq // Hkv, 1)\n"
       "    s = (q.float() @ kk.transpose(-1, -2)) / math.sqrt(D)\n"
       "    p = torch.exp(s.masked_fill(~vis, float('-inf')) - s.amax(-1, keepdim=True))\n"
       "    return ((p / p.sum(-1, keepdim=True)) @ v.float().repeat_interleave(Hq // Hkv, 1)).to(q.dtype)\n"),
      "launches the kernel, returns exp/sum attention computed with torch", "cheating", kind="cheat"),
    M("p6_visits_every_tile", 6,
      ("lo = tl.maximum(start_m - (WINDOW - 1), 0) // BLOCK_N * BLOCK_N", "lo = 0"),
      "loops from key 0 and lets the mask drop the tiles outside the window: O(N^2)", "O(N^2)",
      kind="slow"),

    # ---------------------------------------------------------------- Problem 7 (sinks + window + GQA)
    M("p7_sinks_twice", 7,
      ("sink_hi = tl.minimum(tl.cdiv(SINKS, BLOCK_N) * BLOCK_N, lo)", "sink_hi = tl.cdiv(SINKS, BLOCK_N) * BLOCK_N"),
      "sink tiles not clamped at lo: sinks inside the window are counted twice", "twice"),
    M("p7_sinks_not_causal", 7,
      ("    return causal & (in_window | is_sink)\n", "    return (causal & in_window) | is_sink\n"),
      "sink keys visible to queries before them", "j <= i"),
    M("p7_sinks_ignored", 7,
      ("sinks = 0 if sink_size is None else min(sink_size, N)", "sinks = 0"),
      "the wrapper ignores sink_size", "ignores the sinks"),
    M("p7_sink_bound_inclusive", 7,
      ("    is_sink = offs_n[None, :] < SINKS\n", "    is_sink = offs_n[None, :] <= SINKS\n"),
      "off-by-one sinks: j <= S makes S + 1 sink keys", "j < S"),
    M("p7_sink_phase_skipped", 7,
      ("sink_hi = tl.minimum(tl.cdiv(SINKS, BLOCK_N) * BLOCK_N, lo)", "sink_hi = 0"),
      "the sink phase never runs: sinks left of the window are lost", "sinks"),
    M("p7_sink_tile_rounded_down", 7,
      ("sink_hi = tl.minimum(tl.cdiv(SINKS, BLOCK_N) * BLOCK_N, lo)",
       "sink_hi = tl.minimum(SINKS // BLOCK_N * BLOCK_N, lo)"),
      "sink_hi rounded down: the partial sink tile is skipped", "sink"),
    M("p7_gqa_modulo", 7,
      ("kv_h = h // GROUP", "kv_h = h % (N_Q_HEADS // GROUP)"),
      "query head h reads K/V head h % Hkv", "h // (Hq // Hkv)"),
    M("p7_sdpa_mask", 7,
      ("    o = torch.empty_like(q)\n",
       "    vis = autograder.masks.dense_mask(autograder.masks.attention_mask(is_causal, window_size, sink_size), N)\n"
       "    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=vis, enable_gqa=Hq != Hkv)\n"),
      "PyTorch SDPA with a boolean mask", "cheating", kind="cheat"),
    M("p7_visits_every_tile", 7,
      ("lo = tl.maximum(start_m - (WINDOW - 1), 0) // BLOCK_N * BLOCK_N", "lo = 0"),
      "loops over every key tile (sinks and window by the mask alone): O(N^2)", "O(N^2)", kind="slow"),

    # ---------------------------------------------------------------- Problem 8 (backward, causal GQA)
    M("p8_no_delta", 8,
      (("dsT = pT * (dpT - delta[None, :])", "dsT = pT * dpT"), ("ds = p * (dp - delta[:, None])", "ds = p * dp")),
      "delta forgotten: dS = P * dP in both kernels", "delta is forgotten"),
    M("p8_exp_not_exp2_dq", 8,
      ("    p = tl.math.exp2(qk - lse[:, None])\n", "    p = tl.exp(qk - lse[:, None])\n"),
      "the dQ step recomputes P with exp of base-2 scores and lse2", "exp2 belongs"),
    M("p8_no_delta_dq", 8,
      ("ds = p * (dp - delta[:, None])", "ds = p * dp"),
      "delta forgotten in the dQ kernel only", "delta is forgotten"),
    M("p8_lse_natural_log", 8,
      ("tl.store(LSE_ptr + offs_m, m_i + tl.math.log2(l_i), mask=offs_m < N)",
       "tl.store(LSE_ptr + offs_m, (m_i + tl.math.log2(l_i)) * 0.6931471805599453, mask=offs_m < N)"),
      "the forward stores a natural-log lse; the backward uses exp2", "wrong base"),
    M("p8_exp_with_lse2", 8,
      (("pT = tl.math.exp2(qkT - lse[None, :])", "pT = tl.exp(qkT * 0.6931471805599453 - lse[None, :])"),
       ("p = tl.math.exp2(qk - lse[:, None])", "p = tl.exp(qk * 0.6931471805599453 - lse[:, None])")),
      "P recomputed with exp of natural-log scores minus the base-2 lse", "wrong base"),
    M("p8_dq_scale_missing", 8,
      ("    dq *= sm_scale", "    dq *= 1.0"),
      "dQ not multiplied by 1/sqrt(D)", ("scale", "dQ")),
    M("p8_dk_scale_missing", 8,
      ("    dk *= sm_scale", "    dk *= 1.0"),
      "dK not multiplied by 1/sqrt(D)", ("scale", "dK")),
    M("p8_dq_qk_scale", 8,
      ("*dq.stride(), N, Hq, sm_scale * LOG2E, sm_scale,", "*dq.stride(), N, Hq, sm_scale * LOG2E, sm_scale * LOG2E,"),
      "dQ scaled by qk_scale (with log2(e)) instead of sm_scale", "qk_scale"),
    M("p8_group_zeroed_inside", 8,
      ("""    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    for g in range(GROUP):                     # every query head that reads this K/V head adds in
""", """    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    for g in range(GROUP):
        dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
        dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
"""),
      # zeroed only inside the loop, dk is not defined after it: a GPU's compiler refuses that (and the CPU
      # check says so); zeroed before and again inside, it compiles and only the last head counts
      "dk, dv zeroed again inside the group loop: only the last query head counts", ("last", "group")),
    M("p8_group_first_only", 8,
      ("for g in range(GROUP):", "for g in range(1):"),
      "only the first query head of each group", ("first", "group")),
    M("p8_group_modulo", 8,
      ("h = (kv_h * GROUP + g).to(tl.int64)", "h = (kv_h + g * N_KV_HEADS).to(tl.int64)"),
      "dK/dV gather the query heads h % Hkv == kv_h", "h // GROUP"),
    M("p8_group_consecutive", 8,
      ("h = (kv_h * GROUP + g).to(tl.int64)", "h = (kv_h + g).to(tl.int64)"),
      "dK/dV gather the query heads kv_h + g: neighbouring groups overlap", ("h = kv_h + g", "h // GROUP")),
    M("p8_dkdv_mask_flipped", 8,
      ("pT = tl.where(offs_m[None, :] >= offs_n[:, None], pT, 0.0)",
       "pT = tl.where(offs_m[None, :] <= offs_n[:, None], pT, 0.0)"),
      "the dK/dV causal mask keeps queries before the key", ("dK/dV kernel", "flipped", "queries i >= j")),
    M("p8_dkdv_no_mask", 8,
      ("    if MASK == CAUSAL:\n        pT = tl.where", "    if False:\n        pT = tl.where"),
      "no causal mask on the diagonal query tiles of the dK/dV kernel", ("dK/dV kernel", "no causal mask")),
    M("p8_dq_mask_strict", 8,
      ("p = tl.where(offs_n[None, :] <= offs_m[:, None], p, 0.0)", "p = tl.where(offs_n[None, :] < offs_m[:, None], p, 0.0)"),
      "dQ causal mask hides the diagonal", "dQ"),
    M("p8_dq_times_v", 8,
      ("dq += tl.dot(ds.to(k.dtype), k)", "dq += tl.dot(ds.to(v.dtype), v)"),
      "dQ = dS @ v instead of dS @ k", "dQ"),
    M("p8_dv_times_q", 8,
      ("dv += tl.dot(pT.to(do.dtype), do)", "dv += tl.dot(pT.to(q.dtype), q)"),
      "dV = P^T q instead of P^T dO", "dV"),
    M("p8_dkdv_grid_floor", 8,
      ('_attn_bwd_dkdv[(triton.cdiv(N, cfg["BLOCK_N1"]) * B * Hkv,)]', '_attn_bwd_dkdv[(N // cfg["BLOCK_N1"] * B * Hkv,)]'),
      "dK/dV grid N // BLOCK_N1: the ragged last key tile is never written", "never written"),
    M("p8_dq_grid_hkv", 8,
      ('_attn_bwd_dq[(triton.cdiv(N, cfg["BLOCK_M2"]) * B * Hq,)]', '_attn_bwd_dq[(triton.cdiv(N, cfg["BLOCK_M2"]) * B * Hkv,)]'),
      "dQ grid over K/V heads: the query heads past Hkv get no dQ", "never written"),
    M("p8_do_with_q_strides", 8,
      (("o, do, delta, *o.stride(), *do.stride(),", "o, do, delta, *o.stride(), *q.stride(),"),
       ("q, k, v, do, lse, delta, dk, dv, *q.stride(), *k.stride(), *v.stride(), *do.stride(),",
        "q, k, v, do, lse, delta, dk, dv, *q.stride(), *k.stride(), *v.stride(), *q.stride(),"),
       ("q, k, v, do, lse, delta, dq, *q.stride(), *k.stride(), *v.stride(), *do.stride(),",
        "q, k, v, do, lse, delta, dq, *q.stride(), *k.stride(), *v.stride(), *q.stride(),")),
      "dO addressed with q's strides (they are equal when both are made the same way)", ("dO and q are mixed up",)),
    M("p8_v_with_k_strides_bwd", 8,
      (("q, k, v, do, lse, delta, dk, dv, *q.stride(), *k.stride(), *v.stride(),",
        "q, k, v, do, lse, delta, dk, dv, *q.stride(), *k.stride(), *k.stride(),"),
       ("q, k, v, do, lse, delta, dq, *q.stride(), *k.stride(), *v.stride(),",
        "q, k, v, do, lse, delta, dq, *q.stride(), *k.stride(), *k.stride(),")),
      "the backward kernels address v with k's strides", ("v and k are mixed up",)),
    M("p8_torch_backward", 8,
      ("        q, k, v, o, lse = ctx.saved_tensors\n",
       "        q, k, v, o, lse = ctx.saved_tensors\n"
       "        G = q.shape[1] // k.shape[1]\n"
       "        with torch.enable_grad():\n"
       "            qq, kk, vv = (t.detach().float().requires_grad_() for t in (q, k, v))\n"
       "            s = qq @ kk.repeat_interleave(G, 1).transpose(-1, -2) / math.sqrt(q.shape[-1])\n"
       "            if ctx.is_causal:\n"
       "                s = s.masked_fill(torch.ones_like(s, dtype=torch.bool).triu(1), float('-inf'))\n"
       "            out = torch.softmax(s, -1) @ vv.repeat_interleave(G, 1)\n"
       "            g = torch.autograd.grad(out, (qq, kk, vv), do.float())\n"
       "        return g[0].to(q.dtype), g[1].to(k.dtype), g[2].to(v.dtype), None\n"),
      "Triton forward, backward by torch autograd of dense attention", "cheating", kind="cheat"),
    M("p8_sdpa", 8,
      ("    return FlashAttention.apply(q, k, v, is_causal)\n",
       "    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=is_causal, "
       "enable_gqa=q.shape[1] != k.shape[1])\n"),
      "PyTorch SDPA (and its autograd) instead of the kernels", "cheating", kind="cheat"),

    # ---------------------------------------------------------------- Problem 9 (backward, window + sinks + logits)
    M("p9_window_diagonal_only", 9,
      ("hi = tl.minimum(tl.cdiv(start_n + BLOCK_N + WINDOW - 1, BLOCK_M) * BLOCK_M, N)", "hi = tl.minimum(start_n + BLOCK_N, N)"),
      "dK/dV loop stops at the key tile's own diagonal: the window not transposed forward", "transposed"),
    M("p9_window_forward_bound", 9,
      ("hi = tl.minimum(tl.cdiv(start_n + BLOCK_N + WINDOW - 1, BLOCK_M) * BLOCK_M, N)", "hi = tl.minimum(tl.cdiv(start_n + BLOCK_N - (WINDOW - 1), BLOCK_M) * BLOCK_M, N)"),
      "the forward's window bound (start - (W - 1)) used for the dK/dV loop: window bounds transposed", "transposed"),
    M("p9_hi_one_row_short", 9,
      ("hi = tl.minimum(tl.cdiv(start_n + BLOCK_N + WINDOW - 1, BLOCK_M) * BLOCK_M, N)", "hi = tl.minimum(tl.cdiv(start_n + BLOCK_N + WINDOW - 2, BLOCK_M) * BLOCK_M, N)"),
      "hi from the last query of the window minus one: a query tile is lost when it starts exactly there", "dK/dV"),
    M("p9_full_hi_rounded_up", 9,
      ("(start_n + WINDOW) // BLOCK_M * BLOCK_M", "tl.cdiv(start_n + WINDOW, BLOCK_M) * BLOCK_M"),
      "full_hi rounded up: a query tile partly past the window runs without the mask", ("dK/dV", "key rows")),
    M("p9_full_hi_from_last_key", 9,
      ("(start_n + WINDOW) // BLOCK_M * BLOCK_M", "(start_n + BLOCK_N + WINDOW - 1) // BLOCK_M * BLOCK_M"),
      "full_hi from the tile's last key instead of its first", "dK/dV"),
    M("p9_dkdv_mask_flipped", 9,
      ("pT = tl.where(_visible(offs_m[None, :], offs_n[:, None], WINDOW, SINKS), pT, 0.0)",
       "pT = tl.where(_visible(offs_n[:, None], offs_m[None, :], WINDOW, SINKS), pT, 0.0)"),
      "the dK/dV step asks _visible with the key as the query: the transposed tile's mask flipped",
      ("dK/dV kernel", "flipped")),
    M("p9_dkdv_mask_causal_only", 9,
      ("pT = tl.where(_visible(offs_m[None, :], offs_n[:, None], WINDOW, SINKS), pT, 0.0)",
       "pT = tl.where(offs_m[None, :] >= offs_n[:, None], pT, 0.0)"),
      "Problem 8's causal mask kept in the dK/dV step: the window ignored in the transposed tile",
      ("dK/dV kernel", "without the window")),
    M("p9_sink_keys_le", 9,
      ("pT = tl.where(offs_n[:, None] < SINKS, pT, 0.0)", "pT = tl.where(offs_n[:, None] <= SINKS, pT, 0.0)"),
      "the dK/dV step's SINK_KEYS mask keeps key S, the first key after the sinks",
      ("dK/dV kernel", "SINK_KEYS", "j < S")),
    M("p9_sink_keys_queries", 9,
      ("pT = tl.where(offs_n[:, None] < SINKS, pT, 0.0)", "pT = tl.where(offs_m[None, :] < SINKS, pT, 0.0)"),
      "the dK/dV step's SINK_KEYS mask tests the queries (columns) instead of the keys (rows)",
      ("dK/dV", "SINK_KEYS")),
    M("p9_no_sink_phase", 9,
      ("sink_hi = tl.where(start_n < SINKS, N, hi)", "sink_hi = hi"),
      "no sink phase: sink keys' dK/dV stop at their window", "sink phase"),
    M("p9_dsink_sign", 9,
      ("tl.store(DSink_ptr + pid, -tl.sum(p_sink * delta, 0))", "tl.store(DSink_ptr + pid, tl.sum(p_sink * delta, 0))"),
      "d sink with the wrong sign", "sign"),
    M("p9_dsink_base", 9,
      ("        sink2 = tl.load(Sink_ptr + h).to(tl.float32) * 1.4426950408889634\n",
       "        sink2 = tl.load(Sink_ptr + h).to(tl.float32)\n"),
      "d sink from the sink logit in natural units against a base-2 lse", "base"),
    M("p9_dsink_lse_not_offset", 9,
      ("        lse = tl.load(LSE_ptr + off_bh.to(tl.int64) * N + offs_m, mask=offs_m < N, other=float(\"inf\"))\n",
       "        lse = tl.load(LSE_ptr + offs_m, mask=offs_m < N, other=float(\"inf\"))\n"),
      "d sink from head 0's lse2 for every head (LSE_ptr not offset to the program's batch and head)",
      "off_bh * N"),
    M("p9_dsink_no_delta", 9,
      ("tl.store(DSink_ptr + pid, -tl.sum(p_sink * delta, 0))", "tl.store(DSink_ptr + pid, -tl.sum(p_sink, 0))"),
      "d sink = -sum P_sink (delta forgotten)", "d sink"),
    M("p9_sink_logit_not_initialised", 9,
      ("        l_i = tl.zeros([BLOCK_M], dtype=tl.float32) + 1.0\n", "        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)\n"),
      "the forward starts from the sink's max but not its weight: the sink never joins the denominator", "forward"),
    M("p9_torch_dense", 9,
      ("    return FlashAttention.apply(q, k, v, sink_logits, is_causal, window, sinks)\n",
       "    from autograder.capstone import reference_attention_torch\n"
       "    return reference_attention_torch(q, k, v, is_causal, window_size, sink_size, sink_logits)\n"),
      "dense PyTorch attention with the sink column", "cheating", kind="cheat"),
    M("p9_dkdv_loops_to_n", 9,
      ("hi = tl.minimum(tl.cdiv(start_n + BLOCK_N + WINDOW - 1, BLOCK_M) * BLOCK_M, N)", "hi = N"),
      "the dK/dV window phases run to N and let the mask drop the rest: O(N^2)", "query tiles", kind="slow"),
]


# ---------------------------------------------------------------------------------------------
# building


def solution_source(slug: str) -> str:
    """The reference module's source: solutions/<slug>.py, or rendered from the notebook source
    (the same export=true cells `tools/build_course.py` writes) when the build has not run yet."""
    path = REPO / "solutions" / f"{slug}.py"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    nb_path = REPO / "notebooks" / slug / f"{slug}.py"
    if not nb_path.is_file():
        raise FileNotFoundError(f"neither solutions/{slug}.py nor notebooks/{slug}/{slug}.py exists")
    sys.path.insert(0, str(REPO))
    try:
        from tools.build_course import solution_module, source_notebook
    finally:
        sys.path.remove(str(REPO))
    text = nb_path.read_text(encoding="utf-8")
    return solution_module(slug, text, source_notebook(slug, text)).decode()


def mutated_source(mutant: Mutant) -> str:
    src = solution_source(mutant.slug)
    for old, new in mutant.edits:
        n = src.count(old)
        if n != 1:
            raise AssertionError(f"mutant {mutant.name}: snippet found {n} times (expected exactly once) in "
                                 f"solutions/{mutant.slug}.py - update tests/mutants.py to the notebook:\n{old}")
        src = src.replace(old, new)
    return src


_TMP = None


def load_module(name: str, source: str):
    """Import `source` as a fresh module from a real file (@triton.jit reads its function's source)."""
    global _TMP
    if _TMP is None:
        _TMP = tempfile.TemporaryDirectory(prefix="mutants_")
    path = Path(_TMP.name) / f"{name}.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"_mutant_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(mutant: Mutant):
    return load_module(mutant.name, mutated_source(mutant))


def reference(problem: int):
    slug = SLUGS[problem]
    return load_module(f"reference_{slug}", solution_source(slug))


def release_stub(problem: int):
    """The student's module before any work: the release notebook's cells that the reference
    module exports (given code and `# YOUR CODE HERE` stubs), in order."""
    import nbformat
    sys.path.insert(0, str(REPO))
    try:
        from tools.build_course import source_notebook
    finally:
        sys.path.remove(str(REPO))
    slug = SLUGS[problem]
    text = (REPO / "notebooks" / slug / f"{slug}.py").read_text(encoding="utf-8")
    ids = [c.metadata["nbgrader"]["grade_id"] for c in source_notebook(slug, text).cells if c.metadata.get("export")]
    release = nbformat.read(str(REPO / "release" / slug / f"{slug}.ipynb"), as_version=4)
    cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source for c in release.cells}
    return load_module(f"release_{slug}", "\n\n".join(cells[i] for i in ids))


# ---------------------------------------------------------------------------------------------
# the notebook's graded cells

_CELL = re.compile(r"^# %%(.*)$", re.M)
# loaded by path: the repository stays off sys.path (solution_source adds it only around its import)
_spec = importlib.util.spec_from_file_location("course_format", REPO / "tools" / "course_format.py")
_course_format = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_course_format)
BEGIN_HIDDEN, END_HIDDEN = _course_format.BEGIN_HIDDEN, _course_format.END_HIDDEN


def notebook_tests(slug: str):
    """(imports, [(cell id, visible code, hidden code)]) from notebooks/<slug>/<slug>.py.

    `imports`: every top-level import of the notebook's code cells (test cells use names such as
    `Case` or `functools` that a given cell imported). Visible code is the test cell without its
    hidden region, as the student's release shows it; hidden code is the region's content."""
    text = (REPO / "notebooks" / slug / f"{slug}.py").read_text(encoding="utf-8")
    heads = list(_CELL.finditer(text))
    imports, tests = [], []
    for i, head in enumerate(heads):
        body = text[head.end() + 1: heads[i + 1].start() if i + 1 < len(heads) else len(text)]
        header = head.group(1)
        if "[markdown]" in header:
            continue
        tid = re.search(r'tests="([^"]+)"', header)
        if tid:
            if BEGIN_HIDDEN in body:
                a, rest = body.split(BEGIN_HIDDEN, 1)
                hidden, b = rest.split(END_HIDDEN, 1)
                tests.append((tid.group(1), a + b, hidden))
            else:
                tests.append((tid.group(1), body, ""))
            continue
        try:
            tree = ast.parse(body)
        except SyntaxError:
            continue
        imports += [ast.get_source_segment(body, node) for node in tree.body
                    if isinstance(node, (ast.Import, ast.ImportFrom))]
    return "\n".join(imports), tests


@dataclass
class Outcome:
    caught: bool
    message: str = ""
    cell: str = ""

    @property
    def first_line(self):
        lines = [ln for ln in self.message.splitlines() if ln.strip()]
        return lines[0] if lines else ""


def _switch_off_checks():
    """Replace every check a visible cell may call by a no-op; return what to restore."""
    import autograder
    from autograder import tile_skipping, backward, capstone
    targets = [(autograder, "check"), (autograder, "check_backward"), (backward, "check_autograd_contract"),
               (capstone, "train_and_compare"), (tile_skipping, "check_tile_skipping"),
               (tile_skipping, "check_backward_tile_skipping")]
    switched = [(m, n, getattr(m, n)) for m, n in targets]
    for m, n in targets:
        setattr(m, n, lambda *a, **k: None)
    return switched


def _run_cells(module, slug, part):
    import autograder
    imports, tests = notebook_tests(slug)
    ns = dict(vars(module))
    ns["__name__"] = "__graded__"
    exec(compile(imports, f"<{slug} imports>", "exec"), ns)
    ns["flash_attention_forward"] = module.flash_attention_forward
    sink = io.StringIO()
    for cell_id, visible, hidden in tests:
        if part == "hidden" and visible.strip():
            # hidden code may use names the visible part of its cell (or an earlier one) defines:
            # run the visible parts too, with autograder.check switched off (pass 1 graded them)
            switched = _switch_off_checks()
            try:
                with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                    exec(compile(visible, f"<{cell_id} visible>", "exec"), ns)
            except Exception:          # noqa: BLE001 - already reported by the visible pass
                pass
            finally:
                for module, name, original in switched:
                    setattr(module, name, original)
        code = visible if part == "visible" else hidden
        if not code.strip():
            continue
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                exec(compile(code, f"<{cell_id} {part}>", "exec"), ns)
        except Exception as exc:       # noqa: BLE001 - any failure of a graded cell is a catch
            msg = str(exc) if isinstance(exc, AssertionError) else f"{type(exc).__name__}: {exc}"
            return Outcome(True, msg, cell_id)
    return Outcome(False)


def grade(module, problem: int, part: str) -> Outcome:
    """Run the notebook's graded cells ("visible": what the student runs; "hidden": the hidden
    regions) with `module.flash_attention_forward`; stop at the first failing cell."""
    return _run_cells(module, SLUGS[problem], part)


# ---------------------------------------------------------------------------------------------
# one mutant, end to end (also the unit of work of the kill-rate test's worker processes)

BY_NAME = {m.name: m for m in MUTANTS}
_REFERENCE = "reference:"      # a problem's reference solution, graded beside its mutants under this name


def reference_name(problem: int) -> str:
    return f"{_REFERENCE}{problem}"


def reference_problem(name: str) -> int | None:
    """The problem whose reference `name` is (see reference_name), None for a mutant's name."""
    return int(name[len(_REFERENCE):]) if name.startswith(_REFERENCE) else None


def problem_of(name: str) -> int:
    """The problem a reference or mutant name belongs to."""
    problem = reference_problem(name)
    return BY_NAME[name].problem if problem is None else problem


def evaluate(name: str, hidden: str = "always") -> dict:
    """Build mutant `name` (or "reference:<problem>"), grade it; a plain dict for the report.

    hidden: "always" runs the hidden tests too; "survivors" only when the visible cells pass."""
    import time
    import autograder  # noqa: F401 - the tier first
    t0 = time.perf_counter()
    problem = reference_problem(name)
    if problem is not None:
        module, words, kind = reference(problem), (), "reference"
    else:
        mutant = BY_NAME[name]
        problem, words, kind = mutant.problem, mutant.words, mutant.kind
        module = build(mutant)
    visible = grade(module, problem, "visible")
    run_hidden = hidden == "always" or not visible.caught
    hid = grade(module, problem, "hidden") if run_hidden else None
    return dict(name=name, problem=problem, kind=kind, words=words,
                visible=visible.caught, visible_msg=visible.message, visible_cell=visible.cell,
                hidden=None if hid is None else hid.caught, hidden_msg="" if hid is None else hid.message,
                hidden_cell="" if hid is None else hid.cell, seconds=time.perf_counter() - t0)
