"""Tile sizes per GPU: one table, read by every reference kernel's wrapper.

Chosen by measuring on an H100 (see README "Performance"); other GPUs get conservative tiles
that fit their shared memory (a T4 has 64 KiB per block).
"""
from __future__ import annotations

import torch

from . import device


def attention_tiles(head_dim: int, dtype: torch.dtype = None, causal: bool = False) -> dict:
    """BLOCK_M, BLOCK_N, num_warps, num_stages for a FlashAttention forward kernel."""
    if head_dim not in (16, 32, 64, 128):
        raise ValueError(f"head_dim must be 16, 32, 64 or 128 (a power of two tl.dot accepts), got {head_dim}")
    if device.TIER == "cpu":
        # Interpreter: bigger tiles mean fewer Python-level iterations. BLOCK_M != BLOCK_N on
        # purpose, so the CPU tier exercises wrappers and diagonals with unequal tiles.
        return dict(BLOCK_M=32, BLOCK_N=16, num_warps=4, num_stages=1)
    cap = device.CAPABILITY
    if cap >= (9, 0):                                   # Hopper: H100 / H200
        # Measured on an H100 (bf16, Triton 3.6) over 8 configurations: 128x64 with 8 warps wins
        # non-causal; causal and windowed grids of 64-row tiles balance better (more, shorter
        # programs: the triangle leaves fewer SMs idle at the end).
        if causal:
            return dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3)
        return dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3)
    # Not measured here (no such GPU in this project's lab): sizes that fit the shared memory.
    if cap >= (8, 0):                                   # Ampere / Ada: A100, L4, RTX 30xx/40xx
        if head_dim <= 64:
            return dict(BLOCK_M=128, BLOCK_N=64, num_warps=4, num_stages=3)
        return dict(BLOCK_M=128, BLOCK_N=32, num_warps=8, num_stages=2)
    # Turing (T4) and older: 64 KiB shared memory, fp16 only
    if head_dim <= 64:
        return dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2)
    return dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=1)
