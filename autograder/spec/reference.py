"""Naive attention: the ground truth every check compares against.

Materialises the [B, Hq, N, N] score matrix, so it is only for checking and for the "naive"
line of the benchmark. GQA follows the course rule: query head h reads K/V head h // (Hq // Hkv).
"""
from __future__ import annotations

import math
import torch

from .masks import attention_mask, check_mask_args, dense_mask

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

# (atol, rtol) of an output against this float64 reference. bf16 keeps 8 mantissa bits: P is rounded to bf16
# before the P @ V product, and the output itself is rounded to bf16.
TOLERANCES = {
    torch.float32: (2e-4, 2e-4),
    torch.float16: (4e-3, 4e-3),
    torch.bfloat16: (2e-2, 2e-2),
}
LSE_TOLERANCES = {torch.float32: (1e-4, 1e-4), torch.float16: (2e-3, 2e-3), torch.bfloat16: (2e-2, 2e-2)}


def validate_attention_inputs(q, k, v, is_causal=False, window_size=None, sink_size=None,
                              dtypes=SUPPORTED_DTYPES):
    """Check q [B, Hq, N, D], k and v [B, Hkv, N, D]; return (B, Hq, Hkv, N, D).

    Raises TypeError / ValueError that say what to fix. Shared by the reference and by every
    kernel wrapper of the course, so they all reject the same inputs the same way."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D [batch, heads, seq_len, head_dim], got shape {tuple(t.shape)}")
        if t.dtype not in dtypes:
            raise TypeError(f"{name} has dtype {t.dtype}; supported: {', '.join(map(str, dtypes))}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    B, Hq, N, D = q.shape
    Bk, Hkv, Nk, Dk = k.shape
    if Bk != B:
        raise ValueError(f"batch mismatch: q has {B}, k/v have {Bk}")
    if Nk != N:
        raise ValueError(f"sequence length mismatch: q has {N}, k/v have {Nk} (self-attention needs equal lengths)")
    if Dk != D:
        raise ValueError(f"head_dim mismatch: q has {D}, k/v have {Dk}")
    if Hkv == 0 or Hq % Hkv != 0:
        raise ValueError(f"query heads ({Hq}) must be a multiple of K/V heads ({Hkv}) for grouped-query attention")
    check_mask_args(is_causal, window_size, sink_size)
    return B, Hq, Hkv, N, D


def naive_attention(q, k, v, is_causal=False, window_size=None, sink_size=None,
                    compute_dtype=torch.float32, out_dtype=None, return_lse=False, scale=None):
    """softmax(Q K^T * scale + mask) V with scale = 1/sqrt(D), computed in `compute_dtype`,
    returned in `out_dtype` (default q.dtype), and the natural-log log-sum-exp of each row,
    [B, Hq, N] in compute_dtype, if asked."""
    _refuse_inside_check()
    B, Hq, Hkv, N, D = validate_attention_inputs(q, k, v, is_causal, window_size, sink_size,
                                                 dtypes=SUPPORTED_DTYPES + (torch.float64,))
    group = Hq // Hkv
    # [B, Hkv, N, D] -> [B, Hq, N, D]: query head h reads K/V head h // group
    k = k.to(compute_dtype).repeat_interleave(group, dim=1)
    v = v.to(compute_dtype).repeat_interleave(group, dim=1)
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    scores = (q.to(compute_dtype) @ k.transpose(-1, -2)) * scale          # [B, Hq, N, N]
    visible = dense_mask(attention_mask(is_causal, window_size, sink_size), N, device=q.device)
    scores = scores.masked_fill(~visible, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)                                  # [B, Hq, N]
    out = (torch.exp(scores - lse[..., None]) @ v).to(out_dtype or q.dtype)
    return (out, lse) if return_lse else out


def reference_attention(q, k, v, is_causal=False, window_size=None, sink_size=None, return_lse=False):
    """The float64 ground truth the checks use."""
    return naive_attention(q, k, v, is_causal, window_size, sink_size, compute_dtype=torch.float64,
                           out_dtype=torch.float64, return_lse=return_lse)


def dense_attention64(q, k, v, visible, sink_logits=None):
    """Dense float64 attention under a boolean [N, N] mask `visible`, differentiable (autograd gives
    the reference gradients); `sink_logits` [Hq]: GPT-OSS sinks, exp(sink_h) joins every row's
    softmax denominator with no value. The one dense formula the diagnoses and the backward share."""
    q, k, v = q.double(), k.double(), v.double()
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~visible, float("-inf"))
    if sink_logits is not None:
        sink = sink_logits.double()[None, :, None, None].expand(*s.shape[:-1], 1)
        s = torch.cat([s, sink], -1)
    p = torch.softmax(s, -1)
    if sink_logits is not None:
        p = p[..., :-1]
    return p @ v


class ReferenceCalledError(RuntimeError):
    """Raised when graded code calls the autograder's own reference."""


_inside_check = False


def _refuse_inside_check():
    if _inside_check:
        raise ReferenceCalledError(
            "your function called the autograder's reference attention; the exercise is to compute "
            "attention yourself")
