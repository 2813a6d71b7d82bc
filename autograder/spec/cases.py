"""The cases each problem is checked on, for the CPU tier (interpreter, small) and the GPU tier.

A case is a shape, a dtype, a mask and a memory layout. Cases are grouped in families so a
graded cell can award points per feature (ragged shapes, layouts, GQA, window, sinks...).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

import torch

from . import problems
from .. import device
from .masks import mask_kwargs

LAYOUTS = ("contiguous", "bnhd", "padded", "bhdn", "mixed")
# `mixed`: every tensor its own layout, as in training, where q, k, v are views of projections and dO
# is whatever the next layer hands back: a kernel that reads one tensor with another's strides fails
MIXED = {"q": "bnhd", "k": "bhdn", "v": "padded", "do": "contiguous"}
_KEY_SHIFT = 8.0            # k[..., 0] of low_score cases
_MAX_LOW_SCORE = 1000.0     # q[..., 0] = -1000 * sqrt(128) / 8 ~ -1.4e4: fp16 holds 6.5e4


@dataclass(frozen=True)
class Case:
    family: str
    B: int
    Hq: int
    Hkv: int
    N: int
    D: int
    dtype: torch.dtype = None               # None: the tier's dtype
    is_causal: bool = False
    window_size: Optional[int] = None
    sink_size: Optional[int] = None
    layout: str = "contiguous"              # bnhd: [B, N, H, D] transposed; padded: head dim sliced from 2D;
                                            # bhdn: [B, H, D, N] storage, the head dim is not innermost
    seed: int = 0
    spread: float = 1.0                     # std of q: > 1 makes peaky softmax rows
    low_score: float = 0.0                  # > 0: every third query row (1, 4, 7...) scores about
                                            # -low_score against every key (exp underflows to 0)
    sink_logits: bool = False               # Problem 9: a learned [Hq] sink logit per query head

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.Hq % self.Hkv:
            raise ValueError(f"Hq={self.Hq} is not a multiple of Hkv={self.Hkv}")
        if not 0 <= self.low_score <= _MAX_LOW_SCORE:
            raise ValueError(f"low_score must lie in [0, {_MAX_LOW_SCORE:g}] (q stays within fp16/bf16 range), "
                             f"got {self.low_score!r}")

    @property
    def resolved_dtype(self):
        return self.dtype or device.DTYPE

    def mask_kwargs(self):
        return mask_kwargs(self.is_causal, self.window_size, self.sink_size)

    def describe(self):
        heads = f"H={self.Hq}" if self.Hq == self.Hkv else f"Hq={self.Hq} Hkv={self.Hkv}"
        mask = "causal" if self.is_causal else "full"
        if self.window_size is not None:
            mask += f" W={self.window_size}"
        if self.sink_size is not None:
            mask += f" S={self.sink_size}"
        if self.sink_logits:
            mask += " +sink logits"
        dt = str(self.resolved_dtype).removeprefix("torch.")
        extra = "" if self.layout == "contiguous" else f" {self.layout}"
        if self.layout == "mixed":
            extra = " mixed (" + ", ".join(f"{n if n != 'do' else 'dO'} {lay}" for n, lay in MIXED.items()) + ")"
        if self.low_score:
            extra += f" rows 1::3 score ~-{self.low_score:g}"
        return f"B={self.B} {heads} N={self.N} D={self.D} {mask} {dt}{extra}"

    def layout_of(self, name: str) -> str:
        """The layout of tensor `name` ("q", "k", "v" or "do"): the case's, or for `mixed` each its own."""
        return MIXED[name] if self.layout == "mixed" else self.layout

    def make_inputs(self, dev=None):
        """q [B, Hq, N, D], k and v [B, Hkv, N, D], with this case's layout and seed."""
        gen = torch.Generator().manual_seed(self.seed)
        return tuple(self._tensor(gen, name, heads, dev)
                     for name, heads in (("q", self.Hq), ("k", self.Hkv), ("v", self.Hkv)))

    def make_grad_output(self, dev=None):
        """dO [B, Hq, N, D] for a backward, seeded from this case, in dO's layout."""
        gen = torch.Generator().manual_seed(self.seed + 7919)
        return self._tensor(gen, "do", self.Hq, dev)

    def _tensor(self, gen, name, heads, dev):
        dev = dev or device.DEVICE
        layout = self.layout_of(name)
        d_alloc = 2 * self.D if layout == "padded" else self.D
        if layout == "bnhd":
            t = torch.randn(self.B, self.N, heads, d_alloc, generator=gen).transpose(1, 2)
        elif layout == "bhdn":
            t = torch.randn(self.B, heads, d_alloc, self.N, generator=gen).transpose(2, 3)
        else:
            t = torch.randn(self.B, heads, self.N, d_alloc, generator=gen)
        if self.low_score:
            # a shared key component: it shifts a row's scores by a constant (softmax ignores it),
            # and for rows 1::3 the shift is -low_score, so every score of those rows is far below 0
            if name == "k":
                t[..., 0] = _KEY_SHIFT
            elif name == "q":
                t[..., 1::3, 0] = -self.low_score * math.sqrt(self.D) / _KEY_SHIFT / self.spread
        if name == "q":
            t = t * self.spread
        t = t.to(dev, self.resolved_dtype)
        if layout == "bnhd":
            t = t.transpose(1, 2).contiguous().transpose(1, 2)    # keep the strided view on device
        elif layout == "bhdn":
            t = t.transpose(2, 3).contiguous().transpose(2, 3)
        return t[..., : self.D]


def in_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The values of `t` [B, H, N, D] stored in `layout` (one of LAYOUTS but `mixed`)."""
    if layout == "contiguous":
        return t.contiguous()
    if layout == "bnhd":
        return t.transpose(1, 2).contiguous().transpose(1, 2)
    if layout == "bhdn":
        return t.transpose(2, 3).contiguous().transpose(2, 3)
    if layout == "padded":
        wide = t.new_zeros(*t.shape[:-1], 2 * t.shape[-1])
        wide[..., : t.shape[-1]] = t
        return wide[..., : t.shape[-1]]
    raise ValueError(f"layout must be one of {LAYOUTS[:-1]}, got {layout!r}")


def _c(family, B, Hq, Hkv, N, D, **kw):
    return Case(family, B, Hq, Hkv, N, D, **kw)


def _attention_cases(problem: int, tier: str):
    spec = problems.get(problem)
    causal = spec.causal    # Problem 1 teaches the causal mask; its "full" family checks the rest
    ck = {"is_causal": causal}
    gqa = spec.gqa
    f32 = torch.float32
    if tier == "cpu":
        # The interpreter costs ~4 ms per tile iteration: keep every suite well under 30 s.
        cases = [
            _c("basic", 1, 2, 2, 64, 16, seed=1, **ck),
            _c("basic", 1, 1, 1, 48, 32, dtype=f32, seed=2, **ck),
            _c("ragged", 2, 2, 2, 77, 16, seed=3, **ck),          # N not a multiple of any tile
            _c("ragged", 3, 1, 1, 5, 16, seed=4, **ck),           # N smaller than a tile
            _c("ragged", 2, 1, 1, 1, 32, seed=5, **ck),           # a single token
            _c("ragged", 1, 2, 2, 130, 16, seed=6, spread=3.0, **ck),  # peaky rows across many tiles
            _c("layout", 2, 2, 2, 40, 16, layout="bnhd", seed=7, **ck),
            _c("layout", 1, 2, 2, 33, 32, layout="padded", seed=8, **ck),
            _c("layout", 1, 2, 2, 24, 16, layout="bhdn", seed=16, **ck),      # stride_qd != 1
            _c("layout", 1, 2, 2, 29, 16, layout="mixed", seed=18, **ck),     # q, k, v: three layouts
            _c("headdim", 1, 1, 1, 37, 64, seed=9, **ck),
            # rows whose every score is ~-400: with m_i = 0 instead of -inf, exp underflows to 0/0
            _c("basic", 1, 2, 2, 40, 16, seed=17, low_score=400.0, **ck),
        ]
        if gqa:
            cases += [
                _c("gqa", 1, 4, 2, 45, 16, seed=10, **ck),
                _c("gqa", 2, 8, 2, 20, 16, seed=11, layout="bnhd", **ck),
                _c("gqa", 1, 2, 2, 33, 16, seed=12, is_causal=not causal),
            ]
    else:
        cases = [
            _c("basic", 2, 4, 4, 512, 64, seed=1, **ck),
            _c("basic", 1, 2, 2, 256, 64, dtype=torch.float16, seed=2, **ck),
            _c("ragged", 3, 2, 2, 1000, 64, seed=3, **ck),
            _c("ragged", 2, 2, 2, 17, 64, seed=4, **ck),
            _c("ragged", 2, 1, 1, 1, 128, seed=5, **ck),
            _c("ragged", 1, 4, 4, 2085, 128, seed=6, spread=3.0, **ck),
            _c("layout", 2, 4, 4, 777, 64, layout="bnhd", seed=7, **ck),
            _c("layout", 1, 2, 2, 300, 64, layout="padded", seed=8, **ck),
            _c("layout", 1, 2, 2, 200, 64, layout="bhdn", seed=16, **ck),     # stride_qd != 1
            _c("layout", 2, 4, 4, 385, 64, layout="mixed", seed=18, **ck),    # q, k, v: three layouts
            _c("headdim", 2, 2, 2, 333, 16, seed=9, **ck),
            _c("headdim", 2, 2, 2, 333, 32, seed=10, **ck),
            _c("headdim", 1, 4, 4, 4096, 128, seed=11, **ck),
            _c("basic", 1, 4, 4, 300, 64, seed=17, low_score=400.0, **ck),
        ]
        if gqa:
            cases += [
                _c("gqa", 2, 8, 2, 1000, 64, seed=12, **ck),
                _c("gqa", 1, 8, 4, 517, 128, seed=13, layout="bnhd", **ck),
                _c("gqa", 2, 4, 4, 300, 64, seed=14, is_causal=not causal),
                _c("gqa", 1, 16, 2, 1024, 128, seed=15, **ck),
            ]
    if spec.pytorch:
        # non-causal and ragged: only the bounds mask keeps keys past N out (causal hides them anyway)
        cases.append(_c("ragged", 2, 2, 2, 77 if tier == "cpu" else 1000, 16, seed=203, is_causal=False))
        # PyTorch problem: also check the non-causal path (Problem 3 builds on it)
        cases += [dataclasses.replace(c, family="full", is_causal=False, seed=c.seed + 100)
                  for c in cases if c.family in ("basic", "ragged")][:3]
        # more keys than the default block_n = 64: with one key tile, an update that never rescales
        # acc (or l_i) still gives the right answer, and the basic cell would pass it
        cases.insert(2, _c("basic", 1, 2, 2, 200 if tier == "cpu" else 1000, 16 if tier == "cpu" else 64,
                           seed=204, spread=2.0, **ck))
    if spec.window:
        cases += _window_cases(tier)
    if spec.sinks:
        cases += _sink_cases(tier)
    return cases


def _window_cases(tier):
    w = dict(is_causal=True)
    if tier == "cpu":
        return [
            _c("window", 1, 2, 2, 70, 16, window_size=1, seed=20, **w),           # only the diagonal
            _c("window", 1, 2, 1, 70, 16, window_size=5, seed=21, **w),           # W below a tile
            _c("window", 2, 2, 2, 90, 16, window_size=21, seed=22, **w),          # W not a multiple of a tile
            _c("window", 1, 4, 2, 50, 32, window_size=64, seed=23, **w),          # W >= N: plain causal
            _c("window", 1, 2, 2, 100, 16, window_size=32, seed=24, layout="bnhd", **w),
            _c("window", 1, 2, 2, 100, 16, window_size=45, seed=25, **w),          # > BLOCK_M + BLOCK_N, ragged edge
        ]
    return [
        _c("window", 1, 4, 4, 1000, 64, window_size=1, seed=20, **w),
        _c("window", 2, 4, 2, 1500, 64, window_size=37, seed=21, **w),
        _c("window", 2, 8, 2, 2049, 128, window_size=300, seed=22, **w),
        _c("window", 1, 4, 4, 700, 128, window_size=1024, seed=23, **w),
        _c("window", 1, 4, 2, 4096, 128, window_size=1024, seed=24, layout="bnhd", **w),
    ]


def _sink_cases(tier):
    w = dict(is_causal=True)
    if tier == "cpu":
        return [
            _c("sinks", 1, 2, 2, 70, 16, window_size=8, sink_size=0, seed=30, **w),
            _c("sinks", 1, 2, 1, 70, 16, window_size=8, sink_size=1, seed=31, **w),
            _c("sinks", 2, 2, 2, 90, 16, window_size=5, sink_size=12, seed=32, **w),   # S > W
            _c("sinks", 1, 4, 2, 100, 16, window_size=17, sink_size=20, seed=33, **w),  # S across a tile boundary
            _c("sinks", 1, 2, 2, 60, 32, window_size=1, sink_size=4, seed=34, layout="bnhd", **w),
            _c("sinks", 1, 2, 2, 40, 16, window_size=64, sink_size=3, seed=35, **w),    # W >= N
        ]
    return [
        _c("sinks", 1, 4, 4, 1000, 64, window_size=64, sink_size=0, seed=30, **w),
        _c("sinks", 2, 4, 2, 1500, 64, window_size=100, sink_size=1, seed=31, **w),
        _c("sinks", 1, 8, 2, 2000, 128, window_size=20, sink_size=70, seed=32, **w),
        _c("sinks", 1, 4, 4, 1031, 128, window_size=129, sink_size=130, seed=33, **w),
        _c("sinks", 1, 4, 2, 4096, 128, window_size=1024, sink_size=4, seed=34, layout="bnhd", **w),
    ]


def visible_cases(problem: int, tier: str = None):
    tier = tier or device.TIER
    spec = problems.PROBLEMS.get(problem)
    if spec is None or spec.checker != "check":
        raise ValueError(f"no attention cases for problem {problem!r}; problems {problems.numbers('check')} "
                         f"check attention")
    return _attention_cases(problem, tier)
