"""Watch what a graded function does: Triton launches, PyTorch attention, unwritten outputs.

`Guard` is a context manager around one call of the student's function. It
  * counts Triton kernel launches (compiled or interpreted),
  * records PyTorch operations that compute attention instead of the kernel: SDPA, FlexAttention,
    softmax, matrix products (any, for Triton problems; square N x N scores for Problem 1),
  * records any other PyTorch op whose output is as big as the full score matrix (elementwise
    products and sums, exp, division... build attention too: `(q[..., :, None, :] * k[..., None, :, :])
    .sum(-1)` is Q K^T without a matmul),
  * fills every tensor allocated with torch.empty* with a poison value, so output rows that the
    kernel never writes are visible afterwards,
  * makes the autograder's reference refuse to run.
"""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from . import reference
from .probe import InterpreterProbe

aten = torch.ops.aten

POISON = -31337.0   # impossible for attention: outputs are convex combinations of V rows

_ATTENTION_OPS = {
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_attention_math",
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable",
    "scaled_dot_product_attention", "_flash_attention_forward", "_efficient_attention_forward",
    "flex_attention",
}
_SOFTMAX_OPS = {"_softmax", "softmax", "_log_softmax", "log_softmax", "logsumexp", "_safe_softmax"}
_MATMUL_OPS = {"mm", "bmm", "matmul", "addmm", "baddbmm", "addbmm", "einsum", "_efficient_attention_forward"}
_EMPTY_OPS = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}


# Up to here, one tile of Problem 1 (64 x 64 by default) can be the whole score matrix, and a copy
# padded to whole tiles can be many times its input: size rules start above it.
_SMALL_N = 64


class Guard(TorchDispatchMode):
    """`inputs`: the (q, k, v) of the call; with them, any op output on the order of the full score
    matrix is refused (see `_materialised`)."""

    def __init__(self, triton_problem: bool, seq_len: int, poison: bool = True, inputs=None):
        super().__init__()
        self.triton_problem = triton_problem
        self.seq_len = seq_len
        self.poison = poison
        self._scores = self._largest = None
        if inputs is not None:
            q = inputs[0]
            self._scores = q.shape[0] * q.shape[1] * seq_len * seq_len      # B * Hq * N * N
            self._largest = max(t.numel() for t in inputs)
        self.launches = []          # kernel names, in launch order
        self.forbidden = []         # (op name, why)
        self._patched = []
        self._launching = 0         # > 0 while Triton runs a kernel: its own tensor ops are not the student's
        self.probe = None
        self._memory_error = None   # replayed (autograder.record): no probe ran in this process

    # -- PyTorch side -------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self._launching:
            return func(*args, **kwargs)
        name = func.overloadpacket.__name__ if hasattr(func, "overloadpacket") else str(func)
        out = self._record(name, func(*args, **kwargs))
        if not self.forbidden and not getattr(func, "is_view", False):
            for t in tree_leaves(out):
                if self._materialised(t):
                    self.forbidden.append((name, f"a {list(t.shape)} tensor: the full score matrix"))
                    break
        return out

    def _record(self, name, out):
        """Note what op `name` means for grading; return its output (maybe poisoned)."""
        if name in _ATTENTION_OPS:
            self.forbidden.append((name, "PyTorch's attention (scaled_dot_product_attention / flex_attention)"))
        elif name in _SOFTMAX_OPS:
            if self.triton_problem or self._is_full_scores(out):
                self.forbidden.append((name, "a PyTorch softmax over attention scores"))
        elif name in _MATMUL_OPS:
            if self.triton_problem:
                self.forbidden.append((name, "a PyTorch matrix product (the kernel must do the math)"))
            elif self._is_full_scores(out):
                self.forbidden.append((name, f"a full {self.seq_len}x{self.seq_len} score matrix "
                                             "(process keys tile by tile)"))
        elif name in _EMPTY_OPS and self.poison and isinstance(out, torch.Tensor) \
                and out.is_floating_point() and out.numel():
            out.fill_(POISON)
        return out

    def _materialised(self, t):
        """True when `t` is on the order of the full score matrix.

        Honest solutions allocate the output (q's shape), O(B * H * N) statistics, copies of the
        inputs padded to whole tiles (< 2x an input once N > 64, any factor for a tiny N) and, in
        Problem 1, [B, H, BLOCK_M, BLOCK_N] tiles (smaller than N x N per head once N > 64). None
        of them is, past the batch and head dims, N x N and bigger than every input; and once
        N > 64 none reaches 8x the largest input, or B * H * N * N elements and 2x the largest."""
        if self._scores is None or not isinstance(t, torch.Tensor):
            return False
        n, N = t.numel(), self.seq_len
        if N > _SMALL_N:
            if n >= 8 * self._largest or (n >= self._scores and n >= 2 * self._largest):
                return True
        elif not self.triton_problem:
            return False              # Problem 1: one tile of up to 64 x 64 is the whole matrix
        return N >= 2 and n > self._largest and n >= self._scores and list(t.shape[2:]).count(N) >= 2

    def _is_full_scores(self, out):
        n = self.seq_len
        return isinstance(out, torch.Tensor) and out.dim() >= 2 and n > 64 \
            and out.shape[-1] >= n and out.shape[-2] >= n

    # -- Triton side --------------------------------------------------------------------
    def _patch_triton(self):
        import triton.runtime.jit as jit
        classes = [jit.JITFunction]
        try:
            from triton.runtime.interpreter import InterpretedFunction
            classes.append(InterpretedFunction)
        except ImportError:   # pragma: no cover - older Triton
            pass
        guard = self
        for cls in classes:
            original = cls.run

            def run(self, *args, __original=original, **kwargs):
                if not kwargs.get("warmup", False):
                    guard.launches.append(getattr(self, "__name__", None) or getattr(self.fn, "__name__", "?"))
                guard._launching += 1
                try:
                    return __original(self, *args, **kwargs)
                finally:
                    guard._launching -= 1
            cls.run = run
            self._patched.append((cls, original))

    def __enter__(self):
        self._patch_triton()
        # interpreter only: bounds-check every load and store (a missing mask is an error, not garbage)
        self.probe = InterpreterProbe().__enter__()
        reference._inside_check = True
        return super().__enter__()

    def __exit__(self, *exc):
        reference._inside_check = False
        self.probe.__exit__(*exc)
        for cls, original in self._patched:
            cls.run = original
        self._patched.clear()
        return super().__exit__(*exc)

    @property
    def memory_error(self):
        """A sentence when the kernel read or wrote outside its tensors (CPU tier), else None."""
        return self.probe.memory_error if self.probe is not None else self._memory_error

    # -- autograder.record: what this guard saw, saved with the call and restored on replay ----------
    def snapshot(self) -> dict:
        return {"launches": list(self.launches), "forbidden": [list(f) for f in self.forbidden],
                "memory_error": self.memory_error}

    def restore(self, snap: dict):
        self.launches = [str(x) for x in snap["launches"]]
        self.forbidden = [tuple(str(y) for y in f) for f in snap["forbidden"]]
        self._memory_error = snap["memory_error"]

    def cheat_message(self):
        """A sentence for the student, or None when the call looks honest."""
        if self.forbidden:
            op, why = self.forbidden[0]
            if why.endswith("the full score matrix"):
                return f"your function materialised {why} (aten.{op}); process keys tile by tile" \
                    + (" inside your Triton kernel." if self.triton_problem else ".")
            return f"your function computed attention with {why} (aten.{op}); " \
                   + ("write it as a Triton kernel." if self.triton_problem else "use blockwise online softmax.")
        if self.triton_problem and not self.launches:
            return "your function launched no Triton kernel: the output must come from your @triton.jit kernel."
        return None
