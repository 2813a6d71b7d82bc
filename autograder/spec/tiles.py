"""Tile sizes per GPU: one table, read by every reference kernel's wrapper.

Chosen by measuring on an H100 (see README "Performance"); other GPUs get conservative tiles
that fit their shared memory (a T4 has 64 KiB per block).
"""
from __future__ import annotations

import torch

from .. import device


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


def backward_tiles(head_dim: int, dtype: torch.dtype = None) -> dict:
    """Tiles of the FlashAttention-2 backward (Problems 8, 9).

    BLOCK_M1 x BLOCK_N1: the dK/dV kernel, a key tile of BLOCK_N1 rows held in registers while
    query tiles of BLOCK_M1 rows stream past. BLOCK_M2 x BLOCK_N2: the dQ kernel, the other way
    round. BLOCK_N1 % BLOCK_M1 == 0 and BLOCK_M2 % BLOCK_N2 == 0, so a diagonal tile of one
    kernel is a whole number of tiles of the other direction."""
    attention_tiles(head_dim, dtype)                       # the same head-dim rule
    if device.TIER == "cpu":
        # unequal tiles on purpose (as the forward's): ragged edges of both kinds get exercised
        return dict(BLOCK_M1=16, BLOCK_N1=32, BLOCK_M2=32, BLOCK_N2=16, num_warps=4, num_stages=1)
    cap = device.CAPABILITY
    if cap >= (9, 0):
        # Measured on an H200 (bf16, Triton 3.6, backward alone, 7 configurations x 5 shapes):
        # 64 x 128 tiles with 8 warps won the D=128 shapes (395 vs 297-359 TFLOP/s causal N=16384;
        # 257 vs 101-250 window 1024), 32 x 64 with 4 warps the D=64 narrow-window shape (76 vs 37-56:
        # with W=128 a 128-row tile is mostly masked).
        if head_dim > 64:
            return dict(BLOCK_M1=64, BLOCK_N1=128, BLOCK_M2=128, BLOCK_N2=64, num_warps=8, num_stages=3)
        return dict(BLOCK_M1=32, BLOCK_N1=64, BLOCK_M2=64, BLOCK_N2=32, num_warps=4, num_stages=3)
    if cap >= (8, 0):
        return dict(BLOCK_M1=32, BLOCK_N1=64, BLOCK_M2=64, BLOCK_N2=32, num_warps=4, num_stages=2)
    # T4: 64 KiB of shared memory, fp16
    return dict(BLOCK_M1=16, BLOCK_N1=64, BLOCK_M2=64, BLOCK_N2=16, num_warps=4, num_stages=1)
