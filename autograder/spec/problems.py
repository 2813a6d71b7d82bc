"""The course's problems, one registry: what each one is, which checks and benchmarks apply to it.

Everything that used to compare problem numbers (`problem >= 6` for "has a window") reads a
feature flag here instead, so adding or reordering a problem is one entry, not a hunt through
the checker, the benchmarks and the scoreboard.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from .masks import attended_pairs, mask_kwargs


@dataclass(frozen=True)
class Shape:
    """One benchmark shape: q is [B, Hq, N, D], k and v [B, Hkv, N, D], with its mask.

    A Shape is what is timed (no dtype, layout or seed: the benchmark uses the tier's dtype and
    contiguous inputs); a `cases.Case` is what is checked (a family for points, a dtype, a memory
    layout, a seed, its inputs). Two concepts, two types."""
    B: int
    Hq: int
    Hkv: int
    N: int
    D: int
    is_causal: bool = False
    window_size: Optional[int] = None
    sink_size: Optional[int] = None

    def mask_kwargs(self):
        return mask_kwargs(self.is_causal, self.window_size, self.sink_size)

    def describe(self):
        mask = "full" if not self.is_causal else "causal"
        if self.window_size:
            mask = f"window {self.window_size}"
        if self.sink_size:
            mask += f" + {self.sink_size} sinks"
        return f"({self.B}, {self.Hq}, {self.Hkv}, {self.N}, {self.D}) {mask}"

    def flops(self):
        return 4 * self.B * self.Hq * self.D * attended_pairs(self.N, **self.mask_kwargs())


@dataclass(frozen=True)
class Problem:
    number: int
    slug: str                       # notebooks/<slug>/<slug>.py, solutions/<slug>.py
    title: str
    checker: str                    # "check", "check_backward" or "triton_basics" (Problem 2's own checks)
    entry_point: Optional[str] = "flash_attention_forward"   # None: several functions (Problem 2)
    pytorch: bool = False           # written in PyTorch: no Triton launch expected, hints in torch's words
    returns_lse: bool = False       # returns (O, lse) rather than O
    causal: bool = False            # the checks' default mask is causal (non-causal cases still appear)
    gqa: bool = False               # fewer K/V heads than query heads
    window: bool = False            # sliding window (window_size)
    sinks: bool = False             # sink keys (sink_size)
    sink_logits: bool = False       # learned per-head sink logits in the softmax denominator
    backward: bool = False          # the gradients are checked too
    bench_shapes: Tuple[Shape, ...] = ()        # forward benchmark (bench.benchmark)
    backward_shapes: Tuple[Shape, ...] = ()     # backward benchmark (bench.benchmark_backward)
    tiles: Tuple[str, ...] = ()     # the functions of autograder.tiles the reference wrapper reads
    tile_skipping: str = ""         # "forward" / "backward": autograder.tile_skipping grades which tiles it visits

    @property
    def module(self) -> str:
        return f"solutions.{self.slug}"


# The benchmark shapes are the README's "Performance" tables: forward, then "Backward (Problems 8
# and 9)", whose FlexAttention column is issue 11's anchor.
PROBLEMS = {p.number: p for p in (
    Problem(1, "p1_pytorch_flash_attention", "PyTorch FlashAttention (blockwise online softmax)", "check",
            pytorch=True, returns_lse=True, causal=True),
    Problem(2, "p2_triton_basics", "Triton basics: masked vector op, row log-sum-exp, tiled copy", "triton_basics",
            entry_point=None),
    Problem(3, "p3_flash_attention_forward", "Triton FlashAttention forward, non-causal", "check",
            bench_shapes=(Shape(4, 16, 16, 4096, 64), Shape(2, 16, 16, 8192, 128)),
            tiles=("attention_tiles",)),
    Problem(4, "p4_causal_two_phase", "Causal FlashAttention, two phases", "check", causal=True,
            bench_shapes=(Shape(4, 16, 16, 4096, 64, True), Shape(2, 16, 16, 8192, 128, True),
                          Shape(1, 16, 16, 16384, 128, True)),
            tiles=("attention_tiles",), tile_skipping="forward"),
    Problem(5, "p5_grouped_query_attention", "Grouped-query attention", "check", causal=True, gqa=True,
            bench_shapes=(Shape(4, 32, 8, 4096, 128, True),),
            tiles=("attention_tiles",)),
    Problem(6, "p6_sliding_window", "Sliding-window attention", "check", causal=True, gqa=True, window=True,
            bench_shapes=(Shape(1, 16, 16, 16384, 128, True, 1024), Shape(1, 16, 16, 32768, 128, True, 1024)),
            tiles=("attention_tiles",), tile_skipping="forward"),
    Problem(7, "p7_attention_sinks", "Attention sinks + sliding window + GQA", "check", causal=True, gqa=True,
            window=True, sinks=True,
            bench_shapes=(Shape(1, 16, 16, 16384, 128, True, 1024, 4), Shape(1, 16, 16, 16384, 128, True, 256, 4),
                          Shape(1, 16, 16, 32768, 128, True, 1024, 4)),
            tiles=("attention_tiles",), tile_skipping="forward"),
    Problem(8, "p8_backward_gqa", "Backward pass, causal GQA", "check_backward", causal=True, gqa=True,
            backward=True,
            backward_shapes=(Shape(1, 16, 16, 16384, 128, True), Shape(4, 32, 8, 4096, 128, True)),
            tiles=("attention_tiles", "backward_tiles")),
    Problem(9, "p9_backward_window_sinks", "Backward pass, sliding window + sinks + learned sink logits",
            "check_backward", causal=True, gqa=True, window=True, sinks=True, sink_logits=True, backward=True,
            backward_shapes=(Shape(1, 16, 16, 16384, 128, True, 1024), Shape(1, 16, 16, 16384, 128, True, 1024, 4),
                             Shape(1, 64, 8, 8192, 64, True, 128, 4)),
            tiles=("attention_tiles", "backward_tiles"), tile_skipping="backward"),
)}


def get(number) -> Problem:
    """The problem `number`; a ValueError naming the valid numbers for any other."""
    try:
        return PROBLEMS[number]
    except (KeyError, TypeError):
        raise ValueError(f"problem must be one of {sorted(PROBLEMS)}, got {number!r}") from None


def numbers(checker: str = None, tile_skipping: str = None) -> list:
    """The problem numbers, only those checked by `checker` (or whose tile skipping is graded in
    the `tile_skipping` direction) when one is given."""
    return [n for n, p in sorted(PROBLEMS.items()) if (checker is None or p.checker == checker)
            and (tile_skipping is None or p.tile_skipping == tile_skipping)]
