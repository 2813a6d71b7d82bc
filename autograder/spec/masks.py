"""Attention masks as small predicates that compose (in the style of attention-gym).

A mask function takes query indices `q_idx` and key indices `kv_idx` (broadcastable integer
tensors) and returns a boolean tensor: True where query i may attend to key j. The same
predicates build the dense masks of the reference, the test expectations and the pictures.

    causal:            j <= i
    sliding_window(W): j <= i and j >= i - (W - 1)        (W counts the diagonal)
    sinks(S):          j < S and j <= i                   (StreamingLLM attention sinks)
    attention_mask(is_causal=True, window_size=W, sink_size=S) = sliding_window(W) | sinks(S)
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

MaskFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _named(fn, name):
    fn.__name__ = fn.__qualname__ = name
    return fn


def broadcast_shape(*shapes) -> tuple:
    """torch.broadcast_shapes of plain sizes (RuntimeError when they do not broadcast). torch's own (2.13)
    imports torch.fx's symbolic shapes and sympy on its first call: about a second of every process."""
    out = []
    for shape in shapes:
        shape = tuple(shape)
        if len(shape) > len(out):
            out[:0] = [1] * (len(shape) - len(out))
        for i, d in enumerate(shape, len(out) - len(shape)):
            if d < 0:
                raise RuntimeError(f"broadcast_shape: negative size {d} in {shape}")
            if out[i] == 1:
                out[i] = d
            elif d != 1 and d != out[i]:
                raise RuntimeError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
    return tuple(out)


def full(q_idx, kv_idx):
    """Every key visible (non-causal attention)."""
    return torch.ones(broadcast_shape(q_idx.shape, kv_idx.shape), dtype=torch.bool, device=q_idx.device)


def causal(q_idx, kv_idx):
    """Key j visible from query i when j <= i."""
    return kv_idx <= q_idx


def sliding_window(window_size: int) -> MaskFn:
    """Causal window of `window_size` keys ending at (and including) the diagonal."""
    window_size = _check_window(window_size)
    return _named(lambda q_idx, kv_idx: (kv_idx <= q_idx) & (kv_idx >= q_idx - (window_size - 1)),
                  f"sliding_window({window_size})")


def sinks(sink_size: int) -> MaskFn:
    """The first `sink_size` keys, visible to every query at or after them."""
    sink_size = _check_sink(sink_size)
    return _named(lambda q_idx, kv_idx: (kv_idx < sink_size) & (kv_idx <= q_idx), f"sinks({sink_size})")


def and_masks(*fns: MaskFn) -> MaskFn:
    def fn(q_idx, kv_idx):
        out = fns[0](q_idx, kv_idx)
        for f in fns[1:]:
            out = out & f(q_idx, kv_idx)
        return out
    return _named(fn, " & ".join(f.__name__ for f in fns))


def or_masks(*fns: MaskFn) -> MaskFn:
    def fn(q_idx, kv_idx):
        out = fns[0](q_idx, kv_idx)
        for f in fns[1:]:
            out = out | f(q_idx, kv_idx)
        return out
    return _named(fn, " | ".join(f.__name__ for f in fns))


def _check_count(name, value, least, meaning=""):
    """`value` as a mask size: an int >= `least` (bool is refused: True is not a window size)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {least} or None, got {value!r}")
    if value < least:
        raise ValueError(f"{name} must be >= {least}{meaning}, got {value}")
    return value


def _check_window(window_size):
    return _check_count("window_size", window_size, 1, " (it counts the diagonal key)")


def _check_sink(sink_size):
    return _check_count("sink_size", sink_size, 0)


def check_mask_args(is_causal: bool, window_size: Optional[int], sink_size: Optional[int]):
    """Validate the (is_causal, window_size, sink_size) triple every public function takes."""
    if not isinstance(is_causal, bool):
        raise TypeError(f"is_causal must be True or False, got {is_causal!r}")
    if window_size is not None:
        _check_window(window_size)
        if not is_causal:
            raise ValueError("window_size needs is_causal=True: the sliding window is causal "
                             "(key j visible when i - (W - 1) <= j <= i)")
    if sink_size is not None:
        _check_sink(sink_size)
        if not is_causal:
            raise ValueError("sink_size needs is_causal=True: a sink key j is visible only when j <= i")


def mask_kwargs(is_causal: bool, window_size: Optional[int] = None, sink_size: Optional[int] = None) -> dict:
    """The keyword arguments to pass a course function for this mask (None values left out)."""
    kw = {"is_causal": is_causal}
    if window_size is not None:
        kw["window_size"] = window_size
    if sink_size is not None:
        kw["sink_size"] = sink_size
    return kw


def attention_mask(is_causal: bool = False, window_size: Optional[int] = None,
                   sink_size: Optional[int] = None) -> MaskFn:
    """The mask of the course's attention: full, causal, window, or window | sinks."""
    check_mask_args(is_causal, window_size, sink_size)
    if not is_causal:
        return full
    base = causal if window_size is None else sliding_window(window_size)
    if sink_size:
        return or_masks(base, sinks(sink_size))
    return base


def dense_mask(mask_fn: MaskFn, n_q: int, n_kv: Optional[int] = None, device=None) -> torch.Tensor:
    """Boolean [n_q, n_kv] tensor of `mask_fn`."""
    n_kv = n_q if n_kv is None else n_kv
    q_idx = torch.arange(n_q, device=device)[:, None]
    kv_idx = torch.arange(n_kv, device=device)[None, :]
    return mask_fn(q_idx, kv_idx).expand(n_q, n_kv)


SKIP, FULL, PARTIAL = 0, 1, 2


def tile_classes(mask_fn: MaskFn, n: int, block_m: int, block_n: int) -> torch.Tensor:
    """Classify each (query tile, key tile) pair: SKIP (nothing visible), FULL (every in-bounds
    pair visible: no mask needed) or PARTIAL (a mask is needed). Returns an int tensor
    [cdiv(n, block_m), cdiv(n, block_n)]."""
    dense = dense_mask(mask_fn, n)
    tm, tn = -(-n // block_m), -(-n // block_n)
    out = torch.empty(tm, tn, dtype=torch.int64)
    for i in range(tm):
        for j in range(tn):
            tile = dense[i * block_m:(i + 1) * block_m, j * block_n:(j + 1) * block_n]
            out[i, j] = SKIP if not tile.any() else FULL if tile.all() else PARTIAL
    return out


def attended_pairs(n: int, is_causal=False, window_size=None, sink_size=None) -> int:
    """Number of visible (query, key) pairs of one head, computed in closed form."""
    check_mask_args(is_causal, window_size, sink_size)
    if not is_causal:
        return n * n
    w = n if window_size is None else min(window_size, n)
    # rows i < w see i + 1 keys; rows i >= w see w keys
    pairs = w * (w + 1) // 2 + (n - w) * w
    s = min(sink_size or 0, n)
    if s and w < n:
        # sink key j < s is extra for rows i >= j + w (outside its window)
        pairs += sum(max(0, n - (j + w)) for j in range(s))
    return pairs
