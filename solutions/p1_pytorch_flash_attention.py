"""Reference solution: Problem 1: FlashAttention in PyTorch (blockwise online softmax).

GENERATED from notebooks/p1_pytorch_flash_attention/p1_pytorch_flash_attention.py (its export=true cells) by `python tools/build_course.py`.
Do not edit: edit the notebook source and rebuild.
"""

import autograder  # first: picks the GPU or the CPU tier

import math

import torch
import torch.nn.functional as F

from autograder.masks import attention_mask


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
        o_tile = acc / l_i[..., None]                                        # the one division
        lse_tile = m_i + torch.log(l_i)
        rows = min(block_m, N - start_m)                                     # query rows < N only
        o[:, :, start_m:start_m + rows] = o_tile[:, :, :rows].to(o.dtype)
        lse[:, :, start_m:start_m + rows] = lse_tile[:, :, :rows]
    return o, lse
