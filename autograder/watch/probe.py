"""`InterpreterProbe`: bounds-checked memory and tile counters around interpreted Triton launches.

On the CPU tier, Triton kernels run in the interpreter, one program at a time, in Python.
`InterpreterProbe` wraps the interpreter's memory and math operations for the duration of a call:

  * every load and store: the addresses of the lanes the mask keeps must lie inside one of the
    kernel's tensor arguments (a missing bounds mask reads or writes past the end of a tensor;
    on a GPU that is silent garbage or a crash, here it is a clear error, and the lanes are
    dropped so nothing outside the tensors is touched);
  * every 2-D load from the key tensor: one key-tile visit;
  * every 2-D `tl.where` (a select over a score tile): one masked tile.

Its own module because both the cheat guard (every graded call, `autograder.watch.guard`) and the tile
counts (`autograder.tile_skipping`) use it; the tile counts also need the checks, which need the guard.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from .. import device


@dataclass
class ProbeCounts:
    launches: int = 0
    key_loads: int = 0              # 2-D loads that read the watched key tensor: tile visits
    selects_2d: int = 0             # tl.where over a 2-D tile: masked score tiles
    dots: int = 0
    per_program: Dict[Tuple[int, int, int], List[int]] = field(default_factory=dict)  # pid -> [visits, masked]


class InterpreterProbe:
    """Context manager around interpreted kernel launches: bounds-checked memory, tile counters.

    `watch`: a tensor (the keys) whose 2-D loads count as tile visits. `memory_error` holds the
    first out-of-bounds access as a sentence for the student (None when there was none)."""

    def __init__(self, watch: Optional[torch.Tensor] = None, check_bounds: bool = True):
        self.watch = None
        if watch is not None:
            s = watch.untyped_storage()
            self.watch = (s.data_ptr(), s.data_ptr() + s.nbytes())
        self.check_bounds = check_bounds
        self.counts = ProbeCounts()
        self.memory_error: Optional[str] = None
        self._ranges: List[Tuple[int, int]] = []
        self._pid = (0, 0, 0)
        self._patched = []
        self._kernel = "?"

    # -- patching ----------------------------------------------------------------------------
    def __enter__(self):
        if not device.interpreted():
            return self
        from triton.runtime import interpreter as itp
        probe = self
        builder_cls, grid_cls = itp.InterpreterBuilder, itp.GridExecutor

        def patch(cls, name, make):
            original = cls.__dict__[name]
            setattr(cls, name, make(original))
            self._patched.append((cls, name, original))

        def init_args(original):
            def wrapper(executor, args_dev, kwargs):
                args_hst, kwargs_hst = original(executor, args_dev, kwargs)
                probe._ranges = []
                for a in list(args_hst) + list(kwargs_hst.values()):
                    if isinstance(a, torch.Tensor):
                        s = a.untyped_storage()
                        probe._ranges.append((s.data_ptr(), s.data_ptr() + s.nbytes()))
                probe._kernel = getattr(executor.fn, "__name__", "?")
                probe.counts.launches += 1
                return args_hst, kwargs_hst
            return wrapper

        def set_grid_idx(original):
            def wrapper(builder, x, y, z):
                probe._pid = (x, y, z)
                return original(builder, x, y, z)
            return wrapper

        def load(original):
            def wrapper(builder, ptrs, mask, other, *args, **kwargs):
                mask = probe._checked(ptrs, mask, "read")
                if probe.watch is not None and ptrs.data.ndim == 2:
                    addr = ptrs.data[mask.data] if mask.data.any() else ptrs.data.ravel()[:1]
                    if addr.size and probe.watch[0] <= int(addr.ravel()[0]) < probe.watch[1]:
                        probe.counts.key_loads += 1
                        probe._program()[0] += 1
                return original(builder, ptrs, mask, other, *args, **kwargs)
            return wrapper

        def store(original):
            def wrapper(builder, ptrs, value, mask, *args, **kwargs):
                mask = probe._checked(ptrs, mask, "wrote")
                return original(builder, ptrs, value, mask, *args, **kwargs)
            return wrapper

        def dot(original):
            def wrapper(builder, *args, **kwargs):
                probe.counts.dots += 1
                return original(builder, *args, **kwargs)
            return wrapper

        def select(original):
            def wrapper(builder, cond, lhs, rhs):
                out = original(builder, cond, lhs, rhs)
                if np.ndim(out.data) == 2 and min(np.shape(out.data)) > 1:
                    probe.counts.selects_2d += 1
                    probe._program()[1] += 1
                return out
            return wrapper

        patch(grid_cls, "_init_args_hst", init_args)
        patch(builder_cls, "set_grid_idx", set_grid_idx)
        patch(builder_cls, "create_masked_load", load)
        patch(builder_cls, "create_masked_store", store)
        patch(builder_cls, "create_dot", dot)
        patch(builder_cls, "create_select", select)
        return self

    # -- autograder.record: the counts, saved with the call and restored on replay -----------------
    def snapshot(self) -> dict:
        c = self.counts
        return {"counts": [c.launches, c.key_loads, c.selects_2d, c.dots],
                "per_program": [[list(pid), list(v)] for pid, v in c.per_program.items()],
                "memory_error": self.memory_error}

    def restore(self, snap: dict):
        launches, key_loads, selects_2d, dots = (int(x) for x in snap["counts"])
        per_program = {tuple(int(x) for x in pid): [int(x) for x in v] for pid, v in snap["per_program"]}
        self.counts = ProbeCounts(launches, key_loads, selects_2d, dots, per_program)
        self.memory_error = snap["memory_error"]

    def __exit__(self, *exc):
        for cls, name, original in reversed(self._patched):
            setattr(cls, name, original)
        self._patched.clear()
        return False

    # -- helpers -----------------------------------------------------------------------------
    def _program(self):
        return self.counts.per_program.setdefault(self._pid, [0, 0])

    def _checked(self, ptrs, mask, verb):
        """The mask with out-of-bounds lanes dropped; the first such access is remembered."""
        if not self.check_bounds or not self._ranges:
            return mask
        addr = ptrs.data
        if addr.dtype.kind not in "iu":
            return mask
        keep = np.broadcast_to(mask.data, addr.shape) if mask is not None else np.ones(addr.shape, bool)
        itemsize = np.dtype(_np_dtype(ptrs)).itemsize
        inside = np.zeros(addr.shape, dtype=bool)
        for lo, hi in self._ranges:
            inside |= (addr >= lo) & (addr + itemsize <= hi)
        outside = keep & ~inside
        if not outside.any():
            return mask
        if self.memory_error is None:
            n = int(outside.sum())
            what = "read from" if verb == "read" else "wrote to"
            self.memory_error = (
                f"kernel {self._kernel} {what} memory outside every tensor it was given ({n} element(s) "
                f"of one {'load' if verb == 'read' else 'store'} in program {self._pid[:2]}): a load or store "
                f"of a tile that sticks out past N (or past the last head / batch) needs a bounds mask, e.g. "
                f"mask=offs_n[:, None] < N, other=0.0 for loads and mask=offs_m[:, None] < N for the store; "
                f"if the tile is in bounds, the offsets are wrong: address every tensor with its own strides "
                f"(b * stride_kb + h * stride_kh + offs_n * stride_kn + offs_d * stride_kd), never N * D. "
                f"On a GPU this reads garbage or corrupts memory silently.")
        from triton.runtime.interpreter import TensorHandle
        import triton.language as tl
        return TensorHandle(keep & ~outside, tl.int1)     # a new handle: the kernel's mask stays as it is


def _np_dtype(ptrs):
    from triton.runtime.interpreter import _get_np_dtype
    return _get_np_dtype(ptrs.get_element_ty())
