"""The cases each problem is checked on, for the CPU tier (interpreter, small) and the GPU tier.

A case is a shape, a dtype, a mask and a memory layout. Cases are grouped in families so a
graded cell can award points per feature (ragged shapes, layouts, GQA, window, sinks...).
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path
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


# The case tables are data, one row per case, both tiers side by side: attention_cases.csv (Problems 1
# and 3-9) and triton_basics_cases.csv (Problem 2). Columns: the set a row belongs to (attention: every
# problem checked with `check`; gqa, window, sinks: problems with that feature; backward and
# backward_window_sinks: Problems 8 and 9), the tier, the family (the graded cell that awards it), the
# shape, the mask (default: the problem's own, flip: the other one, causal, full), the seed, options
# (key=value, or a bare flag) and why the case is there. On the CPU tier the interpreter costs ~4 ms per
# tile iteration: its rows keep every suite well under 30 s.
_DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}
_OPTION_FIELDS = {"window": "window_size", "sinks": "sink_size"}


def read_table(name: str) -> list:
    """The rows of the CSV table `name` next to this file, as dicts of stripped strings."""
    with open(Path(__file__).with_name(name), newline="") as f:
        return [{k.strip(): (v or "").strip() for k, v in row.items()} for row in csv.DictReader(f)]


def parse_options(text: str, cls, rename: dict = None) -> dict:
    """A row's options as keyword arguments of `cls`: `"window=8 layout=bnhd dtype=float32 masked"` ->
    {"window_size": 8, "layout": "bnhd", "dtype": torch.float32, "masked": True} with rename
    {"window": "window_size"}; a field whose default is a float gets a float."""
    out = {}
    for word in text.split():
        key, _, value = word.partition("=")
        key = (rename or {}).get(key, key)
        if not value:
            out[key] = True
        elif key == "dtype":
            out[key] = _DTYPES[value]
        elif isinstance(getattr(cls, key, None), float):
            out[key] = float(value)
        else:
            out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


@functools.lru_cache(maxsize=None)
def _attention_table() -> tuple:
    return tuple(read_table("attention_cases.csv"))


def _table_cases(group: str, tier: str, default_causal: bool = False) -> list:
    cases = []
    for row in _attention_table():
        if row["set"] != group or row["tier"] != tier:
            continue
        mask = row["mask"]
        is_causal = {"default": default_causal, "flip": not default_causal, "causal": True, "full": False}[mask]
        cases.append(Case(row["family"], *(int(row[k]) for k in ("B", "Hq", "Hkv", "N", "D")),
                          is_causal=is_causal, seed=int(row["seed"]),
                          **parse_options(row["options"], Case, _OPTION_FIELDS)))
    return cases


def _attention_cases(problem: int, tier: str):
    spec = problems.get(problem)
    causal = spec.causal    # Problem 1 teaches the causal mask; its "full" family checks the rest
    cases = _table_cases("attention", tier, causal)
    if spec.gqa:
        cases += _table_cases("gqa", tier, causal)
    if spec.pytorch:
        # non-causal and ragged: only the bounds mask keeps keys past N out (causal hides them anyway)
        cases.append(Case("ragged", 2, 2, 2, 77 if tier == "cpu" else 1000, 16, seed=203, is_causal=False))
        # PyTorch problem: also check the non-causal path (Problem 3 builds on it)
        cases += [dataclasses.replace(c, family="full", is_causal=False, seed=c.seed + 100)
                  for c in cases if c.family in ("basic", "ragged")][:3]
        # more keys than the default block_n = 64: with one key tile, an update that never rescales
        # acc (or l_i) still gives the right answer, and the basic cell would pass it
        cases.insert(2, Case("basic", 1, 2, 2, 200 if tier == "cpu" else 1000, 16 if tier == "cpu" else 64,
                             seed=204, spread=2.0, is_causal=causal))
    if spec.window:
        cases += _table_cases("window", tier)
    if spec.sinks:
        cases += _table_cases("sinks", tier)
    return cases


def backward_cases(problem: int, tier: str = None):
    """The visible cases of Problems 8 and 9 on this tier."""
    tier = tier or device.TIER
    spec = problems.PROBLEMS.get(problem)
    if spec is None or not spec.backward:
        raise ValueError(f"no backward cases for problem {problem!r}; problems {problems.numbers('check_backward')} "
                         f"check the backward")
    cases = _table_cases("backward", tier)
    if spec.window or spec.sinks or spec.sink_logits:
        cases += _table_cases("backward_window_sinks", tier)
    return cases


def visible_cases(problem: int, tier: str = None):
    tier = tier or device.TIER
    spec = problems.PROBLEMS.get(problem)
    if spec is None or spec.checker != "check":
        raise ValueError(f"no attention cases for problem {problem!r}; problems {problems.numbers('check')} "
                         f"check attention")
    return _attention_cases(problem, tier)
