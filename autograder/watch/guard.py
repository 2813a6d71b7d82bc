"""Watch what a graded function does: Triton launches, PyTorch attention, unwritten outputs.

`Guard` is a context manager around one call of the student's function. It
  * counts Triton kernel launches (compiled or interpreted),
  * records PyTorch operations that compute attention instead of the kernel: SDPA, FlexAttention,
    softmax, matrix products and convolutions, cdist (any, for Triton problems; square N x N
    scores for Problem 1),
  * records any other PyTorch op whose output is as big as the full score matrix (elementwise
    products and sums, exp, division... build attention too: `(q[..., :, None, :] * k[..., None, :, :])
    .sum(-1)` is Q K^T without a matmul),
  * audits work on Triton problems: the elements PyTorch ops touch during the call, against the
    attention's own work (an online softmax in PyTorch elementwise ops, one key or one block of
    keys at a time, never builds an N x N tensor but does the attention's work; an honest
    wrapper does a handful of input-sized copies),
  * fills every tensor allocated with torch.empty* with a poison value, so output rows that the
    kernel never writes are visible afterwards,
  * makes the autograder's reference refuse to run.

The student's code runs in this process and can switch a dispatch mode off, so the guard has a
second observer and tripwires:
  * the PyTorch profiler (RecordFunction callbacks, CPU activity, input shapes) runs for the call:
    it sees ATen ops when Python dispatch modes are popped, disabled or their key excluded;
  * the functions that pop the dispatch mode stack or stop RecordFunction / the profiler are
    wrapped at import (before any student code runs): called during a guarded call, they are
    recorded by name;
  * when the call returns, the guard checks that it is still in force: its mode on top of the
    dispatch stack, the Python dispatch key not excluded, the profiler running with the guard's
    marker, the Triton run methods its wrappers, and the Guard class, torch.utils._python_dispatch,
    the reference's refusal and record.call the objects captured at import (put back if not).
  * tensor data copied out to numpy or Python (Tensor.numpy, __array__, tolist, __dlpack__, a
    storage's tolist) outside a Triton launch is counted: a forward or backward computed in numpy
    on a copy of the inputs copies at least one input out;
  * on the CPU tier each launched kernel's front end is compiled for a GPU (`gpu_compile`): the
    interpreter runs code the compiler refuses, such as a global read inside a kernel;
  * with `backward=True` the caller marks where the backward starts (`backward_phase`), and the
    backward must launch Triton kernels of its own.
What stays open (C code reading data_ptr, work in another thread, digging the originals out of
closures with gc): docs/instructor.md, "What is not isolated".
"""
from __future__ import annotations

import math
import os
import secrets
import sys

import torch
import torch.utils._python_dispatch as _pd
from torch._C import _autograd
from torch._C._profiler import (ProfilerActivity, ProfilerConfig, ProfilerState, _EventType, _ExperimentalConfig,
                                 _RecordFunctionFast)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from . import gpu_compile, record
from ..spec import reference
from ..spec.masks import broadcast_shape
from .probe import InterpreterProbe

aten = torch.ops.aten
# Kineto (torch 2.13) logs each profiler start and stop to stderr, and the guard starts one per
# checked call: without this a student's check cell prints two log lines per case. Read at the
# profiler's first start, so setting it here (before any guard runs) is enough.
os.environ.setdefault("KINETO_LOG_LEVEL", "6")

POISON = -31337.0   # impossible for attention: outputs are convex combinations of V rows

_ATTENTION_OPS = {
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_attention_math",
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable",
    "scaled_dot_product_attention", "_flash_attention_forward", "_efficient_attention_forward",
    "flex_attention",
}
_SOFTMAX_OPS = {"_softmax", "softmax", "_log_softmax", "log_softmax", "logsumexp", "_safe_softmax"}
_MATMUL_OPS = {"mm", "bmm", "matmul", "addmm", "baddbmm", "addbmm", "einsum", "_efficient_attention_forward",
               "mv", "addmv", "dot", "vdot", "inner", "addr", "tensordot", "linear", "bilinear", "_trilinear",
               "_addmm_activation", "_int_mm", "_scaled_mm", "mkldnn_linear", "chain_matmul", "linalg_multi_dot",
               "cdist", "_cdist_forward", "_euclidean_dist", "_weight_int8pack_mm", "_weight_int4pack_mm"}
_EMPTY_OPS = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}
# no arithmetic on data: not counted as work
_ALLOC_OPS = _EMPTY_OPS | {"zeros", "zeros_like", "ones", "ones_like", "full", "full_like", "new_zeros", "new_ones",
                           "new_full", "fill_", "zero_", "arange", "scalar_tensor", "lift_fresh", "lift_fresh_copy",
                           "detach", "detach_", "alias", "resize_", "set_", "_local_scalar_dense", "item",
                           "_record_function_enter_new", "_record_function_exit", "record_stream", "resolve_conj",
                           "resolve_neg", "_has_compatible_shallow_copy_type", "is_nonzero", "sym_size", "sym_stride",
                           "sym_numel", "sym_storage_offset", "_to_dense"}
# what Triton's own launch path runs (the interpreter copies argument storages to and from the host)
_LAUNCH_OPS = _ALLOC_OPS | {"copy_", "_to_copy", "to", "cpu", "clone", "contiguous", "_copy_from",
                            "_copy_from_and_resize"}
_LAUNCH_SCOPE = "autograder::triton_launch"


def _is_matmul(name):
    """Matrix products, and convolutions: a kernel-1 convolution of q against k is Q K^T."""
    return name in _MATMUL_OPS or ("conv" in name and "convert" not in name)


_views = {}


def _is_view(name):
    """Whether aten op `name` returns a view (no data touched); from its schemas, cached."""
    if name not in _views:
        packet = getattr(torch.ops.aten, name, None)
        try:
            _views[name] = packet is not None and any(getattr(packet, o).is_view for o in packet.overloads())
        except Exception:   # noqa: BLE001 - an op torch cannot describe counts as work
            _views[name] = False
    return _views[name]


def _elements(sizes):
    """Elements an op touches, from its tensor inputs' sizes: the largest input, or the broadcast
    of them all (an elementwise outer product touches more than either input)."""
    n = max((math.prod(s) for s in sizes), default=0)
    try:
        n = max(n, math.prod(broadcast_shape(*sizes))) if len(sizes) > 1 else n
    except (RuntimeError, ValueError):
        pass
    return n


# How much of the attention's work PyTorch may do in a Triton problem. Honest wrappers do a handful
# of input-sized ops (contiguous copies, casts, padding to whole tiles, the backward's delta); one key
# or one block of keys at a time in PyTorch touches >= 1x the attention's multiply-adds in elements.
HONEST_PASSES = 16      # passes over the largest input (padded to whole 128-row tiles); x2 with a backward
WORK_SHARE = 0.25       # of the attention's multiply-adds: 4 * B * Hq * D * (visible query-key pairs)

# -- the functions that switch the guard off, wrapped before any student code runs ----------------
_active = []            # guards in force, innermost last
_PROFILER_CONFIG = ProfilerConfig(ProfilerState.KINETO, True, False, False, False, False, _ExperimentalConfig())
_prepare_profiler, _enable_profiler = _autograd._prepare_profiler, _autograd._enable_profiler
_disable_profiler, _profiler_enabled = _autograd._disable_profiler, _autograd._profiler_enabled
_len_stack, _stack_at = torch._C._len_torch_dispatch_stack, torch._C._get_dispatch_stack_at
_excluded = torch._C._dispatch_tls_is_dispatch_key_excluded
_PYTHON_KEYS = (torch._C.DispatchKey.Python, torch._C.DispatchKey.PythonTLSSnapshot)


def _caller():
    """The torch function the student's code called (the outermost torch frame above this one)."""
    name, f = None, sys._getframe(2)
    while f is not None:
        module = f.f_globals.get("__name__", "")
        if module.startswith("torch"):
            name = f"{module}.{f.f_code.co_name}"
        elif module != "contextlib":
            break
        f = f.f_back
    return name


_ORIGINALS = {}


def _tripwire(module, attr, disables=lambda *a, **kw: True):
    original = _ORIGINALS.setdefault(attr, getattr(module, attr))

    def wrapper(*args, **kwargs):
        guard = _active[-1] if _active else None
        if guard is not None and not guard._own and disables(*args, **kwargs):
            via = _caller()
            guard.tampered.append(f"{module.__name__}.{attr}" + (f" via {via}" if via else ""))
        return original(*args, **kwargs)
    wrapper.__name__ = wrapper.__qualname__ = attr
    setattr(module, attr, wrapper)
    return module, attr, wrapper


_TRIPWIRES = [_tripwire(m, a, *d) for m, a, *d in [
    (torch._C, "_pop_torch_dispatch_stack"), (_pd, "_pop_torch_dispatch_stack"),
    (torch._C, "_set_dispatch_mode"), (torch._C, "_unset_dispatch_mode"),
    (torch._C, "_dispatch_tls_set_dispatch_key_excluded", lambda key, on=True, *a: bool(on)),
    (_autograd, "_enable_record_function", lambda on=True, *a: not on),
    (_autograd, "_disable_profiler"), (torch.autograd, "_disable_profiler"),
    (torch.autograd.profiler, "_disable_profiler"), (_autograd, "_disable_profiler_legacy"),
    (_autograd, "_clear_callbacks")] if hasattr(m, a)]


# -- the ways tensor data leaves PyTorch for numpy or Python, wrapped before any student code runs --
# A backward (or forward) computed in numpy on a copy of the inputs does none of its work in PyTorch
# ops, so neither observer sees it; every route into numpy goes through one of these. Triton's
# interpreter uses them too, inside a launch, where they are not counted.
_EXPORTS = [(torch.Tensor, a) for a in ("numpy", "__array__", "tolist", "__dlpack__")] \
    + [(s, "tolist") for s in (torch.UntypedStorage, torch.TypedStorage) if hasattr(s, "tolist")]


def _exporter(owner, attr):
    original = _ORIGINALS.setdefault(f"{owner.__name__}.{attr}", getattr(owner, attr))

    def wrapper(self, *args, **kwargs):
        guard = _active[-1] if _active else None
        if guard is not None and not guard._launching and not guard._own:
            n = self.numel() if isinstance(self, torch.Tensor) else self.size()
            guard.exports.append((f"{'Tensor' if isinstance(self, torch.Tensor) else type(self).__name__}.{attr}",
                                  int(n), guard._phase))
        return original(self, *args, **kwargs)
    wrapper.__name__ = wrapper.__qualname__ = attr
    setattr(owner, attr, wrapper)
    return owner, attr, wrapper


_EXPORT_WRAPPERS = [_exporter(o, a) for o, a in _EXPORTS]


# what the guard relies on, as it was before any student code ran
def _visible_pairs(N, mask):
    """Query-key pairs the mask keeps (is_causal, window_size, sink_size as the course defines them)."""
    if not mask.get("is_causal"):
        return N * N
    i = torch.arange(N)
    window, sinks = mask.get("window_size"), mask.get("sink_size") or 0
    seen = i + 1 if window is None else torch.clamp(i + 1, max=window)
    first = i + 1 - seen                   # keys before the window: the sinks among them count too
    return int((seen + torch.minimum(first, torch.tensor(sinks))).sum())


def _subtree(event):
    """The ATen op names of an event and everything it called."""
    names, todo = set(), [event]
    while todo:
        e = todo.pop()
        if e.name.startswith("aten::"):
            names.add(e.name[6:])
        todo += e.children
    return names


def _sizes(event):
    """The sizes of an ATen event's tensor inputs (tensor lists flattened)."""
    out = []
    for x in event.extra_fields.inputs:
        for t in (x if isinstance(x, list) else [x]):
            if hasattr(t, "sizes"):
                out.append(list(t.sizes))
    return out


def _put_back(owner, frozen, prefix, notes, only=lambda v: True):
    """Restore `owner`'s attributes to `frozen` (name -> object), noting each one that changed."""
    now = {k: v for k, v in vars(owner).items() if only(v)}
    for k in sorted(k for k in frozen.keys() | now.keys() if now.get(k) is not frozen.get(k)):
        notes.append(f"{prefix}{k} was replaced")
        if k in frozen:
            setattr(owner, k, frozen[k])
        else:
            delattr(owner, k)


_PD_FUNCTIONS = {k: v for k, v in vars(_pd).items() if callable(v)}
_FROZEN = {}            # class -> its attributes (Guard, TorchDispatchMode, subclasses as they are defined)
_OBJECTS = [(reference, "_refuse_inside_check"), (reference, "naive_attention"), (reference, "reference_attention"),
            (record, "call")]
_OBJECTS = [(m, a, getattr(m, a)) for m, a in _OBJECTS]


# Up to here, one tile of Problem 1 (64 x 64 by default) can be the whole score matrix, and a copy
# padded to whole tiles can be many times its input: size rules start above it.
_SMALL_N = 64


class Guard(TorchDispatchMode):
    """`inputs`: the (q, k, v) of the call; with them, any op output on the order of the full score
    matrix is refused (see `_materialised`), and on Triton problems the work PyTorch does is audited
    against the attention's (`mask`: the call's is_causal / window_size / sink_size; `backward`:
    the call runs the backward too)."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _FROZEN[cls] = dict(vars(cls))      # defined by the autograder, before any student code runs

    def __init__(self, triton_problem: bool, seq_len: int, poison: bool = True, inputs=None, mask=None,
                 backward: bool = False):
        super().__init__()
        self.triton_problem = triton_problem
        self.seq_len = seq_len
        self.poison = poison
        self._scores = self._largest = None
        self.elements = 0           # touched by PyTorch ops (the larger of the two observers' counts)
        self.budget = None          # elements PyTorch may touch; None: no work audit
        self.work = 0               # the attention's multiply-adds
        if inputs is not None:
            q = inputs[0]
            self._scores = q.shape[0] * q.shape[1] * seq_len * seq_len      # B * Hq * N * N
            self._largest = max(t.numel() for t in inputs)
            if triton_problem:
                self.work = 4 * q.shape[0] * q.shape[1] * q.shape[-1] * _visible_pairs(seq_len, mask or {})
                self.work = int(self.work * (3.5 if backward else 1))  # the backward does ~2.5x the forward
                padded = -(-seq_len // 128) * 128 / max(seq_len, 1)
                passes = HONEST_PASSES * (2 if backward else 1)
                self.budget = int(max(passes * self._largest * padded, WORK_SHARE * self.work))
            if backward:
                self._scores = None     # size rules stay forward-only: P9's backward keeps per-tile sink partials
        self.tampered = []          # how the guard was switched off or replaced, in words
        self._seen = set()          # op names the dispatch mode saw
        self._own = False           # True while the guard's own machinery pops its mode
        self._nonce = secrets.token_hex(8)
        self.launches = []          # kernel names, in launch order
        self.forbidden = []         # (op name, why)
        self._patched = []
        self._launching = 0         # > 0 while Triton runs a kernel: its own tensor ops are not the student's
        self.probe = None
        self._memory_error = None   # replayed (autograder.record): no probe ran in this process
        self._mode_elements = 0
        self.backward = backward
        self._phase = "forward"     # "backward" once the caller says so (`backward_phase`)
        self.backward_launches = []  # kernel names launched in the backward phase
        self.exports = []           # (route, elements, phase): tensor data copied out to numpy or Python
        self.compile_error = None   # CPU tier: a launched kernel that a GPU's compiler refuses, in words

    def backward_phase(self):
        """From here on the call is the backward: its launches are counted on their own, since a
        Triton forward says nothing about how the gradients were computed."""
        self._phase = "backward"

    # -- PyTorch side -------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__ if hasattr(func, "overloadpacket") else str(func)
        view = getattr(func, "is_view", False)
        # Triton's launch path copies storages; anything else during a launch (the interpreter runs
        # the kernel's body as Python, which can call torch) is the student's
        if self._launching and (view or name in _LAUNCH_OPS):
            return func(*args, **kwargs)
        self._seen.add(name)
        out = self._record(name, func(*args, **kwargs))
        if not view and name not in _ALLOC_OPS:
            self._mode_elements += max((t.numel() for t in tree_leaves((args, kwargs, out))
                                        if isinstance(t, torch.Tensor)), default=0)
        if not self.forbidden and not view:
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
        elif _is_matmul(name):
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
            interpreted = cls is not jit.JITFunction

            def run(self, *args, __original=original, __interpreted=interpreted, **kwargs):
                if not kwargs.get("warmup", False):
                    name = getattr(self, "__name__", None) or getattr(self.fn, "__name__", "?")
                    guard.launches.append(name)
                    if guard._phase == "backward":
                        guard.backward_launches.append(name)
                    if __interpreted and guard.compile_error is None:
                        guard.compile_error = gpu_compile.frontend_error(self, args, kwargs)
                guard._launching += 1
                try:
                    with _RecordFunctionFast(_LAUNCH_SCOPE):    # the profiler's view of the span: not an op
                        return __original(self, *args, **kwargs)
                finally:
                    guard._launching -= 1
            cls.run = run
            self._patched.append((cls, original, run))

    def __enter__(self):
        self._class = type(self)
        self._patch_triton()
        # interpreter only: bounds-check every load and store (a missing mask is an error, not garbage)
        self.probe = InterpreterProbe().__enter__()
        reference._inside_check = True
        self._profiler_elements = 0
        self._start_profiler()
        _active.append(self)
        out = super().__enter__()
        self._depth = _len_stack()
        self._keys = [_excluded(k) for k in _PYTHON_KEYS]
        return out

    def __exit__(self, *exc):
        self._verify()
        reference._inside_check = False
        self.probe.__exit__(*exc)
        for cls, original, _ in self._patched:
            cls.run = original
        self._patched.clear()
        self._own = True
        try:
            n = _len_stack()
            for _ in range(n - self._depth):    # modes the student left above ours
                _ORIGINALS["_pop_torch_dispatch_stack"](None)
                n -= 1
            out = super().__exit__(*exc) if n == self._depth and _stack_at(n - 1) is self else None
        finally:
            self._own = False
            if self in _active:
                _active.remove(self)
            self._stop_profiler()
        self.elements = max(self._mode_elements, self._profiler_elements)
        return out

    # -- is the guard still in force? -----------------------------------------------------------
    def _verify(self):
        """Note (in `tampered`) and undo what switched the guard off or replaced its machinery."""
        t = self.tampered
        if type(self) is not self._class:
            t.append("the guard's class was changed")
            self.__class__ = self._class
        n = _len_stack()
        if n != self._depth or _stack_at(n - 1) is not self:
            t.append("its dispatch mode is no longer on top of the mode stack")
        keys = [_excluded(k) for k in _PYTHON_KEYS]
        if keys != self._keys:
            t.append("the Python dispatch key was excluded")
            for key, was in zip(_PYTHON_KEYS, self._keys):
                _ORIGINALS["_dispatch_tls_set_dispatch_key_excluded"](key, was)
        if self._profiling and not _profiler_enabled():
            t.append("the profiler was stopped")
        for cls, original, wrapper in self._patched:
            if cls.__dict__.get("run") is not wrapper:
                t.append(f"{cls.__name__}.run was replaced")
        for cls in type(self).__mro__:
            frozen = _FROZEN.get(cls)
            if frozen is not None:
                _put_back(cls, frozen, f"{cls.__name__}.", t)
        _put_back(_pd, _PD_FUNCTIONS, "torch.utils._python_dispatch.", t, callable)
        if _raw_dispatch is not None and getattr(_raw_dispatch, "__dynamo_disable", None) not in _DISPATCH_DISABLES:
            t.append("Guard.__torch_dispatch__.__wrapped__.__dynamo_disable was replaced")
            setattr(_raw_dispatch, "__dynamo_disable", next(iter(_DISPATCH_DISABLES)))
        for module, attr, wrapper in _TRIPWIRES:
            if getattr(module, attr, None) is not wrapper:
                t.append(f"{module.__name__}.{attr} was replaced")
                setattr(module, attr, wrapper)
        for owner, attr, wrapper in _EXPORT_WRAPPERS:
            if owner.__dict__.get(attr) is not wrapper:
                t.append(f"{owner.__name__}.{attr} was replaced")
                setattr(owner, attr, wrapper)
        for module, attr, obj in _OBJECTS:
            if getattr(module, attr, None) is not obj:
                t.append(f"{module.__name__}.{attr} was replaced")
                setattr(module, attr, obj)
        if reference._inside_check is not True:
            t.append("autograder.reference._inside_check was cleared")

    def _start_profiler(self):
        self._profiling = False
        if any(g._profiling for g in _active):
            return                          # an enclosing guard's profiler sees this call too
        if _profiler_enabled():
            self.tampered.append("a PyTorch profiler was already running, so the guard could not start its own: "
                                 "run the check outside torch.profiler")
            return
        _prepare_profiler(_PROFILER_CONFIG, {ProfilerActivity.CPU})
        _enable_profiler(_PROFILER_CONFIG, {ProfilerActivity.CPU}, set())
        self._profiling = True
        with _RecordFunctionFast(f"autograder::guard {self._nonce}"):
            pass

    def _stop_profiler(self):
        if not self._profiling:
            return
        self._profiling = False
        try:
            roots = _disable_profiler().experimental_event_tree()
        except RuntimeError:
            self.tampered.append("the profiler was stopped")
            return
        if not any(e.name == f"autograder::guard {self._nonce}" for e in roots):
            self.tampered.append("the profiler was restarted")
        self._audit(roots)

    def _audit(self, roots):
        """The profiler's view of the call: count the work of top-level ATen ops and refuse ops the
        dispatch mode should have seen but did not (it was popped, disabled or its key excluded)."""
        todo = [(e, False) for e in roots]
        while todo:
            e, launch = todo.pop()
            if e.tag != _EventType.TorchOp:
                continue
            if not e.name.startswith("aten::"):     # a scope (record_function, autograd node): look inside
                todo += [(c, launch or e.name == _LAUNCH_SCOPE) for c in e.children]
                continue
            op = e.name[6:]
            if _is_view(op) or launch and op in _LAUNCH_OPS:
                continue
            names = _subtree(e)
            if not names & self._seen:
                refused = [n for n in names if self._refused(n, e)]
                if refused:
                    self.tampered.append(f"PyTorch ran aten.{refused[0]} where the guard's dispatch mode could "
                                         f"not see it")
            if op not in _ALLOC_OPS:
                self._profiler_elements += _elements(_sizes(e))

    def _refused(self, op, event):
        """Whether op `op` (an ATen name) counts as computing attention, from the profiler's view."""
        if op in _ATTENTION_OPS:
            return True
        if op in _SOFTMAX_OPS or _is_matmul(op):
            if self.triton_problem:
                return True
            sizes = _sizes(event)
            return self.seq_len > 64 and any(len(s) >= 2 and min(s[-2:]) >= self.seq_len for s in sizes)
        return False

    @property
    def memory_error(self):
        """A sentence when the kernel read or wrote outside its tensors (CPU tier), else None."""
        return self.probe.memory_error if self.probe is not None else self._memory_error

    # -- autograder.record: what this guard saw, saved with the call and restored on replay ----------
    def snapshot(self) -> dict:
        return {"launches": list(self.launches), "forbidden": [list(f) for f in self.forbidden],
                "memory_error": self.memory_error, "tampered": list(self.tampered),
                "elements": int(self.elements), "budget": self.budget, "work": int(self.work),
                "backward": self.backward, "backward_launches": list(self.backward_launches),
                "exports": [list(e) for e in self.exports], "compile_error": self.compile_error}

    def restore(self, snap: dict):
        self.launches = [str(x) for x in snap["launches"]]
        self.forbidden = [tuple(str(y) for y in f) for f in snap["forbidden"]]
        self._memory_error = snap["memory_error"]
        self.tampered = [str(x) for x in snap.get("tampered", ["the recording has no guard readings"])]
        self.elements, self.work = int(snap.get("elements", 0)), int(snap.get("work", 0))
        self.budget = None if snap.get("budget") is None else int(snap["budget"])
        self.backward = bool(snap.get("backward", False))
        self.backward_launches = [str(x) for x in snap.get("backward_launches", [])]
        self.exports = [(str(r), int(n), str(p)) for r, n, p in snap.get("exports", [])]
        self.compile_error = None if snap.get("compile_error") is None else str(snap["compile_error"])

    def tamper_message(self):
        if self.tampered:
            return (f"the autograder's guard was turned off or replaced during your function "
                    f"({'; '.join(dict.fromkeys(self.tampered))}): leave the autograder and torch's dispatch "
                    f"machinery alone and compute in your Triton kernel.")
        return None

    def verdict(self, cheat_note=""):
        """What refuses this call before its numbers are looked at, as the sentence a student reads:
        cheating (with `cheat_note` appended), a load or store out of bounds, a kernel a GPU's compiler
        refuses. None when there is nothing."""
        cheat = self.cheat_message()
        if cheat:
            return "cheating detected: " + cheat + cheat_note
        return self.memory_error or self.compile_error

    def cheat_message(self):
        """A sentence for the student, or None when the call looks honest."""
        if self.tampered:
            return self.tamper_message()
        if self.forbidden:
            op, why = self.forbidden[0]
            if why.endswith("the full score matrix"):
                return f"your function materialised {why} (aten.{op}); process keys tile by tile" \
                    + (" inside your Triton kernel." if self.triton_problem else ".")
            return f"your function computed attention with {why} (aten.{op}); " \
                   + ("write it as a Triton kernel." if self.triton_problem else "use blockwise online softmax.")
        if self.budget is not None and self.elements > self.budget:
            return (f"your function computed attention with PyTorch operations ({100 * self.elements / self.work:.0f}% "
                    f"of the attention's work: PyTorch ops touched {self.elements:,} elements, the attention is "
                    f"{self.work:,} multiply-adds, an honest wrapper stays under {self.budget:,}); write it as a "
                    f"Triton kernel.")
        if self.triton_problem and self.exports and self._largest:
            exported = sum(n for _, n, _ in self.exports)
            if exported >= self._largest:
                route, n, phase = max(self.exports, key=lambda e: e[1])
                return (f"your {'backward' if phase == 'backward' else 'function'} copied tensor data out of "
                        f"PyTorch ({route}: {exported:,} elements in all, the largest input has "
                        f"{self._largest:,}), so the work was done outside your Triton kernels (numpy or Python "
                        f"loops); compute it in your @triton.jit kernels.")
        if self.triton_problem and not self.launches:
            return "your function launched no Triton kernel: the output must come from your @triton.jit kernel."
        if self.triton_problem and self.backward and self._phase == "backward" and not self.backward_launches:
            return ("your backward launched no Triton kernel (the forward did): dQ, dK and dV must come from your "
                    "@triton.jit backward kernels, called from your autograd.Function's backward.")
        return None


def _dispatch_without_dynamo_import(raw):
    """What torch's `_disable_dynamo` wrapper of Guard.__torch_dispatch__ calls (torch 2.13 wraps every
    mode's dispatch in one): `raw` as it is while nothing can be compiling, torch._dynamo's disable of it
    once something might. torch's own first call imports torch._dynamo to build that disable, 1.5-4 s of every
    grading kernel and check process, where nothing compiles: no eval-frame callback is set before
    torch._dynamo is imported (torch.compile imports it), and without one `disable` has nothing to turn off."""
    import importlib
    callback = torch._C._dynamo.eval_frame.get_eval_frame_callback

    def call(*args, **kwargs):
        if "torch._dynamo" in sys.modules or callback() is not None:
            real = importlib.import_module("torch._dynamo").disable(raw, recursive=True, wrapping=False)
            _DISPATCH_DISABLES.add(real)
            setattr(raw, "__dynamo_disable", real)      # what torch's wrapper caches there itself
            return real(*args, **kwargs)
        return raw(*args, **kwargs)
    return call


# what may sit in the raw dispatch's __dynamo_disable (torch's wrapper calls it instead of the method):
# ours, or torch._dynamo's disable of the raw method; anything else is a replaced guard (see _verify)
_DISPATCH_DISABLES = set()
_raw_dispatch = getattr(Guard.__dict__["__torch_dispatch__"], "__wrapped__", None)
if _raw_dispatch is not None:
    if getattr(_raw_dispatch, "__dynamo_disable", None) is None:
        setattr(_raw_dispatch, "__dynamo_disable", _dispatch_without_dynamo_import(_raw_dispatch))
    _DISPATCH_DISABLES.add(getattr(_raw_dispatch, "__dynamo_disable"))
_FROZEN[Guard] = dict(vars(Guard))
_FROZEN[TorchDispatchMode] = dict(vars(TorchDispatchMode))
