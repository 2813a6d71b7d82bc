"""Checks of Problem 2 (Triton basics): `check_2a`, `check_2b`, `check_2c`.

  2a  y = a * x + b over a 1-D tensor x with any stride       (program ids, offsets, masks)
  2b  row log-sum-exp of an [M, N] matrix with any strides    (a loop over tiles with a running max and sum)
  2c  copy of a [B, H, N, D] tensor with any strides into a contiguous one   (Problem 3's pointer arithmetic)

Each check runs its cases like `autograder.check`: seeded inputs, the student's function under a
strict guard (one Triton launch, no PyTorch arithmetic or copies: the wrapper may only allocate and
launch), poisoned outputs, then shape / dtype / unwritten / NaN / value checks. The first failing
case raises AssertionError saying which case, how many elements, where, and - when it can tell -
which mistake.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .. import device
from ..spec.cases import parse_options, read_table
from ..watch import record
from ..watch.guard import _ALLOC_OPS, _EMPTY_OPS, _LAUNCH_OPS, POISON, Guard
from .core import CaseResult, CheckSummary, NotImplementedYet, fail, raised, run_suite, select_cases
from .diagnose import _fmt_ranges

__all__ = ["AxpbCase", "RowCase", "CopyCase", "StrictGuard", "check_2a", "check_2b", "check_2c",
           "visible_cases"]

TITLES = {"2a": "masked vector op y = a * x + b", "2b": "row log-sum-exp", "2c": "tiled [B, H, N, D] copy"}

# What a given wrapper may do in PyTorch: allocate the output, look at shapes and strides, make views.
_ALLOWED_OPS = {
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided",
    "detach", "alias", "view", "_unsafe_view", "as_strided", "t", "transpose", "permute", "select", "slice",
    "expand", "unsqueeze", "squeeze", "unbind", "split", "lift_fresh", "is_contiguous", "sym_size",
    "sym_stride", "sym_numel", "sym_storage_offset", "size", "stride", "numel", "dim", "_local_scalar_dense",
}


SLACK = 1 << 14   # elements of padding around every output and input storage


def with_slack(t: torch.Tensor, fill: float, slack: int = SLACK, copy: bool = True):
    """A tensor equal to `t` (same sizes, strides, storage contents) whose storage sits inside a
    larger buffer with `slack` elements of `fill` on each side (copy=False: `fill` everywhere).
    Returns (tensor, buffer).

    Inputs get NaN around them, so a load past the end without a mask reads NaN, visibly; outputs
    get the poison, so a store past the end without a mask is caught afterwards instead of
    silently corrupting memory (the interpreter does not check bounds)."""
    n_store = t.untyped_storage().nbytes() // t.element_size()
    buf = torch.full((n_store + 2 * slack,), fill, dtype=t.dtype, device=t.device)
    if n_store and copy:
        buf[slack:slack + n_store] = torch.as_strided(t, (n_store,), (1,), 0)
    return torch.as_strided(buf, t.size(), t.stride(), slack + t.storage_offset()), buf


class StrictGuard(Guard):
    """`Guard` for exercises where the kernel does everything: any PyTorch op other than
    allocation and views (arithmetic, reductions, copy, clone, contiguous, .to) is recorded as
    forbidden. Ops that Triton itself runs during a launch (the interpreter copies storages) are
    not the student's and are ignored. Fresh float tensors are poisoned and padded with poisoned
    slack: `out_of_bounds_writes()` counts the slack elements a kernel overwrote."""

    def __init__(self, poison: bool = True):
        super().__init__(triton_problem=True, seq_len=0, poison=poison)
        self._buffers = []          # (buffer, number of storage elements) of each fresh tensor
        self._replayed_oob = None

    def _record(self, name, out):
        if name not in _ALLOWED_OPS:
            self.forbidden.append((name, "PyTorch"))
        elif name in _EMPTY_OPS and self.poison and isinstance(out, torch.Tensor) \
                and out.is_floating_point() and out.numel():
            out, buf = with_slack(out, POISON, copy=False)
            self._buffers.append((buf, buf.numel() - 2 * SLACK))
        return out

    def out_of_bounds_writes(self) -> int:
        """How many slack elements around the fresh tensors a kernel overwrote."""
        if self._replayed_oob is not None:
            return self._replayed_oob
        count = 0
        for buf, n_store in self._buffers:
            poison = torch.tensor(POISON, dtype=buf.dtype).double()
            for part in (buf[:SLACK], buf[SLACK + n_store:]):
                count += int((part.double() != poison).sum())
        return count

    def snapshot(self) -> dict:
        return dict(super().snapshot(), out_of_bounds_writes=self.out_of_bounds_writes())

    def _refused(self, op, event):
        return not (op in _ALLOWED_OPS or op in _ALLOC_OPS or op in _LAUNCH_OPS)

    def restore(self, snap: dict):
        super().restore(snap)
        self._replayed_oob = int(snap["out_of_bounds_writes"])

    def cheat_message(self):
        if self.tampered:
            return self.tamper_message()
        if self.forbidden:
            op = self.forbidden[0][0]
            return (f"your function computed with PyTorch (aten.{op}): in this exercise every load, every "
                    f"operation and every store happens in your @triton.jit kernel; the wrapper only "
                    f"allocates the output and launches the kernel.")
        if self.exports:
            route = self.exports[0][0]
            return (f"your function copied tensor data out of PyTorch ({route}): in this exercise every load, "
                    f"operation and store happens in your @triton.jit kernel, not in numpy or Python.")
        if not self.launches:
            return "your function launched no Triton kernel: the output must come from your @triton.jit kernel."
        if len(self.launches) > 1:
            return (f"your function launched {len(self.launches)} kernels ({', '.join(self.launches[:3])}...): "
                    f"one launch, whose grid covers every tile, must do all the work.")
        return None


# ------------------------------------------------------------------------------------------------
# Cases
# ------------------------------------------------------------------------------------------------

def _resolve(dtype):
    return dtype or device.DTYPE


def _dt(dtype):
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class AxpbCase:
    """x: n values of a 1-D tensor with stride `stride` (a view of a longer buffer)."""
    family: str
    n: int
    dtype: torch.dtype = None
    stride: int = 1
    a: float = 2.5
    b: float = -1.25
    seed: int = 0

    def describe(self):
        extra = "" if self.stride == 1 else f" stride={self.stride}"
        return f"n={self.n} a={self.a:g} b={self.b:g} {_dt(_resolve(self.dtype))}{extra}"

    def make_inputs(self, dev=None):
        gen = torch.Generator().manual_seed(self.seed)
        base = torch.randn(self.n * self.stride, generator=gen).to(dev or device.DEVICE, _resolve(self.dtype))
        return (base[:: self.stride],)

    def call(self, fn, x):
        return fn(x, self.a, self.b)


@dataclass(frozen=True)
class RowCase:
    """x [M, N]; layout padded: rows of a wider buffer (stride(0) > N); transposed: a view of an
    [N, M] matrix (stride(1) = M). masked: leading -inf columns that grow with the row (like a
    sliding window), spanning several tiles, and one row of -inf only; spread: large values, where
    exp() overflows unless the max is subtracted first."""
    family: str
    M: int
    N: int
    dtype: torch.dtype = None
    layout: str = "contiguous"          # contiguous | padded | transposed
    spread: float = 1.0
    masked: bool = False
    seed: int = 0

    def describe(self):
        extra = "" if self.layout == "contiguous" else f" {self.layout}"
        extra += f" spread={self.spread:g}" if self.spread != 1.0 else ""
        extra += " with -inf" if self.masked else ""
        return f"M={self.M} N={self.N} {_dt(_resolve(self.dtype))}{extra}"

    def make_inputs(self, dev=None):
        gen = torch.Generator().manual_seed(self.seed)
        M, N = self.M, self.N
        if self.layout not in ("contiguous", "padded", "transposed"):
            raise ValueError(f"layout must be contiguous, padded or transposed, got {self.layout!r}")
        x = torch.randn(M, N, generator=gen) * self.spread + torch.randn(M, 1, generator=gen) * self.spread
        if self.masked:
            cols = torch.arange(N)[None, :]
            first = (torch.arange(M)[:, None] * 7) % max(N, 1)       # row i hides columns j < first_i
            x = x.masked_fill(cols < first, float("-inf"))
            x[M // 2] = float("-inf")                                 # a row that sees nothing: lse = -inf
        dt = _resolve(self.dtype)
        out = x.to(dev or device.DEVICE, dt)
        if self.layout == "transposed":     # keep the transposed view on the device
            out = out.t().contiguous().t()
        elif self.layout == "padded":
            out = torch.nn.functional.pad(out, (3, 4)).contiguous()[:, 3:3 + N]
        return (out,)

    def call(self, fn, x):
        return fn(x)


COPY_LAYOUTS = ("contiguous", "bnhd", "padded", "dn", "hb", "broadcast")


@dataclass(frozen=True)
class CopyCase:
    """x [B, H, N, D] with layout: contiguous; bnhd ([B, N, H, D] transposed, as from a fused QKV
    projection); padded (head dim sliced out of 2D); dn (stride_d != 1: a transposed [B, H, D, N]);
    hb (batch and head dims swapped: [H, B, N, D] permuted); broadcast (one head expanded: stride_h = 0)."""
    family: str
    B: int
    H: int
    N: int
    D: int
    dtype: torch.dtype = None
    layout: str = "contiguous"
    seed: int = 0

    def __post_init__(self):
        if self.layout not in COPY_LAYOUTS:
            raise ValueError(f"layout must be one of {COPY_LAYOUTS}, got {self.layout!r}")

    def describe(self):
        extra = "" if self.layout == "contiguous" else f" {self.layout}"
        return f"B={self.B} H={self.H} N={self.N} D={self.D} {_dt(_resolve(self.dtype))}{extra}"

    def make_inputs(self, dev=None):
        gen = torch.Generator().manual_seed(self.seed)
        B, H, N, D = self.B, self.H, self.N, self.D
        dev, dt = dev or device.DEVICE, _resolve(self.dtype)
        if self.layout == "bnhd":
            x = torch.randn(B, N, H, D, generator=gen).to(dev, dt).transpose(1, 2)
        elif self.layout == "padded":
            x = torch.randn(B, H, N, 2 * D, generator=gen).to(dev, dt)[..., :D]
        elif self.layout == "dn":
            x = torch.randn(B, H, D, N, generator=gen).to(dev, dt).transpose(2, 3)
        elif self.layout == "hb":
            x = torch.randn(H, B, N, D, generator=gen).to(dev, dt).transpose(0, 1)
        elif self.layout == "broadcast":
            x = torch.randn(B, 1, N, D, generator=gen).to(dev, dt).expand(B, H, N, D)
        else:
            x = torch.randn(B, H, N, D, generator=gen).to(dev, dt)
        return (x,)

    def call(self, fn, x):
        return fn(x)


_PART_CASES = {"2a": AxpbCase, "2b": RowCase, "2c": CopyCase}


def visible_cases(part: str, tier: str = None):
    """The visible cases of exercise `part` ("2a", "2b" or "2c") for a tier ("cpu" or "gpu"): the rows of
    autograder/spec/triton_basics_cases.csv, whose size is n (2a), M x N (2b) or B x H x N x D (2c)."""
    if part not in _PART_CASES:
        raise ValueError(f"part must be '2a', '2b' or '2c', got {part!r}")
    tier = tier or device.TIER
    cls = _PART_CASES[part]
    cases = []
    for row in read_table("triton_basics_cases.csv"):
        if row["part"] == part and row["tier"] == tier:
            cases.append(cls(row["family"], *map(int, row["size"].split("x")), seed=int(row["seed"]),
                             **parse_options(row["options"], cls)))
    return cases


# ------------------------------------------------------------------------------------------------
# Running one case
# ------------------------------------------------------------------------------------------------

# one result and one summary type for every check: `problem` is "2a", "2b", "2c" or "2" here
BasicsResult = CaseResult
BasicsSummary = CheckSummary


def _fail(part, case, msg, hints=(), where=""):
    fail(case, part, msg, hints, where)


def _call(part, fn, case, inputs):
    guard = StrictGuard()
    t0 = time.perf_counter()
    try:
        # the interpreter evaluates log(0) and exp(-inf - -inf) in rows past the end of the tensor,
        # which the store mask then drops: NumPy's warnings about them are not the student's business
        def run():
            with guard, np.errstate(divide="ignore", invalid="ignore", over="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out = case.call(fn, *inputs)
                if device.TIER == "gpu":
                    torch.cuda.synchronize()
            return out
        args, kwargs = case.call(lambda *a, **kw: (a, kw), *inputs)     # what fn receives: the recording's key
        out = record.call(run, args, kwargs, observers=[guard])
    except Exception as exc:   # noqa: BLE001 - any failure of student code is reported, not raised raw
        raised(part, case, exc, "your function",
               f"reproduce it with the full traceback: case = autograder.triton_basics.{case!r}; "
               f"case.call(fn, *case.make_inputs())")
    seconds = time.perf_counter() - t0
    cheat = guard.cheat_message()
    if cheat:
        _fail(part, case, "cheating detected: " + cheat)
    oob = guard.out_of_bounds_writes()
    if oob:
        _fail(part, case, f"your kernel wrote {oob} element(s) outside the output tensor.",
              ["either a tile sticks out past the end (every tl.store needs mask=...: offs < n, offs_m < M, "
               "offs_n[:, None] < N, and the grid must not have more programs than tiles) or a base offset "
               "points past the tensor (check the batch/head split b = pid // H, h = pid % H and the strides "
               "each index multiplies). On a GPU this corrupts memory or crashes."])
    if guard.compile_error:
        _fail(part, case, guard.compile_error)
    return out, seconds


def _check_tensor(part, case, out, shape, dtype, dev, what="output"):
    if out is None:
        raise NotImplementedYet.returned_none(f"Problem {part}")
    if not isinstance(out, torch.Tensor):
        _fail(part, case, f"expected a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape):
        _fail(part, case, f"{what} shape {tuple(out.shape)}, expected {tuple(shape)}")
    if out.dtype != dtype:
        _fail(part, case, f"{what} dtype {out.dtype}, expected {dtype}")
    if out.device.type != dev.type:
        _fail(part, case, f"{what} on {out.device}, expected {dev}")


def _poisoned(out):
    return out.double() == torch.tensor(POISON, dtype=out.dtype).double()


def _unchanged(part, case, before, after):
    for t0, t in zip(before, after):
        if not torch.equal(t0, t):
            _fail(part, case, "your function modified its input x: write into the output tensor only.")


def _as_strided_or_none(x, size, stride):
    """x's storage read with other strides, or None if that would leave the storage."""
    if any(s == 0 for s in size):
        return None
    last = x.storage_offset() + sum((n - 1) * s for n, s in zip(size, stride))
    if last * x.element_size() >= x.untyped_storage().nbytes():
        return None
    return torch.as_strided(x, size, stride, x.storage_offset())


def _run(part, fn, cases, family, verbose, check_one):
    if not callable(fn):
        raise TypeError(f"fn must be your function, got {type(fn).__name__}")
    cases = select_cases(visible_cases(part) if cases is None else cases, family)
    return run_suite(part, f"Problem {part} ({TITLES[part]})", cases, lambda case: check_one(fn, case), verbose)


# ------------------------------------------------------------------------------------------------
# 2a: y = a * x + b
# ------------------------------------------------------------------------------------------------

AXPB_TOL = {torch.float32: (1e-6, 1e-6), torch.float16: (1e-3, 1e-3), torch.bfloat16: (1e-2, 1e-2)}


def _inputs(case):
    """The case's input, with NaN just past (and before) its storage: an unmasked load reads NaN."""
    return tuple(with_slack(t, float("nan"))[0] for t in case.make_inputs())


def _check_axpb(fn, case: AxpbCase) -> BasicsResult:
    part = "2a"
    (x,) = _inputs(case)
    expected = case.a * x.double() + case.b
    before = x.clone()
    out, seconds = _call(part, fn, case, (x,))
    _check_tensor(part, case, out, (case.n,), x.dtype, x.device)
    _unchanged(part, case, [before], [x])
    n = case.n
    unwritten = _poisoned(out)
    if unwritten.any():
        idx = unwritten.nonzero()[:, 0].tolist()
        hints = []
        if max(idx) == n - 1:
            hints.append(f"the tail is missing: the grid needs cdiv(n, BLOCK) = cdiv({n}, BLOCK) programs, and "
                         f"the store mask is offs < n.")
        _fail(part, case, f"{len(idx)} of {n} elements of y were never written (indices {_fmt_ranges(idx)}).", hints)
    got = out.double()
    if not torch.isfinite(got).all():
        idx = (~torch.isfinite(got)).nonzero()[:, 0].tolist()
        _fail(part, case, f"{len(idx)} element(s) of y are NaN or inf (indices {_fmt_ranges(idx)}).",
              ["a load without mask=... read past the end of x (the checks put NaN there): "
               "load with mask=offs < n."])
    atol, rtol = AXPB_TOL[x.dtype]
    err = (got - expected).abs()
    bad = err > atol + rtol * expected.abs()
    if bad.any():
        idx = bad.nonzero()[:, 0].tolist()
        i = idx[0]
        hints = []
        alts = [(case.b * x.double() + case.a, "y = b * x + a: the arguments a and b are swapped."),
                (case.a * x.double(), "y = a * x: b is not added."),
                (x.double() + case.b, "y = x + b: x is not multiplied by a.")]
        if case.stride != 1:
            flat = _as_strided_or_none(x, (n,), (1,))
            if flat is not None:
                alts.append((case.a * flat.double() + case.b,
                             f"your kernel read x as if it were contiguous: x has stride {case.stride}, so "
                             f"element i is at x_ptr + i * stride_x."))
        for alt, why in alts:
            if torch.allclose(got, alt, atol=atol, rtol=rtol):
                hints.append(why)
                break
        _fail(part, case, f"{len(idx)} of {n} elements differ from a * x + b (max |err| {err.max().item():.3g}) at "
                          f"indices {_fmt_ranges(idx)}. First: y[{i}] = {got[i].item():.6g}, expected "
                          f"{expected[i].item():.6g} (x[{i}] = {x[i].item():.6g}).", hints)
    return BasicsResult(case, float(err.max()) if err.numel() else 0.0, seconds)


def check_2a(fn, family: str = None, cases=None, verbose: bool = True) -> BasicsSummary:
    """Check `fn(x, a, b) -> y` (y = a * x + b, same shape and dtype as x, contiguous)."""
    return _run("2a", fn, cases, family, verbose, _check_axpb)


# ------------------------------------------------------------------------------------------------
# 2b: row log-sum-exp
# ------------------------------------------------------------------------------------------------

LSE_TOL = (1e-4, 1e-5)     # computed in float32 from exactly representable inputs
_TILES = (8, 16, 32, 64, 128, 256, 512, 1024)


def _lse64(x):
    return torch.logsumexp(x.double(), dim=1)


def _online_lse_variants(x):
    """(float64 [M] result, explanation) of common mistakes, for every plausible BLOCK_N."""
    x = x.double()
    M, N = x.shape
    out = []
    for bn in _TILES:
        if bn >= 2 * N and bn > 8:
            break
        n_pad = -(-N // bn) * bn
        padded = torch.nn.functional.pad(x, (0, n_pad - N), value=0.0)
        if n_pad != N:
            out.append((_lse64(padded), "the columns past N (up to a multiple of BLOCK_N) counted as 0.0: load "
                                        "with mask=offs_n < N and other=float('-inf'), so exp() of them is 0."))
        if N > bn:
            out.append((_lse64(x[:, :bn]), f"only the first {bn} columns are used: loop over all "
                                           f"cdiv(N, BLOCK_N) column tiles (for start_n in range(0, N, BLOCK_N))."))
            # l_i not rescaled when the max grows
            tiles = x.split(bn, dim=1)
            m = torch.full((M,), float("-inf"), dtype=torch.float64)
            l_norescale = torch.zeros(M, dtype=torch.float64)
            for t in tiles:
                m_new = torch.maximum(m, t.amax(1))
                safe = torch.where(m_new == float("-inf"), 0.0, m_new)
                l_norescale = l_norescale + torch.exp(t - safe[:, None]).sum(1)
                m = m_new
            out.append((m + torch.log(l_norescale),
                        f"l_i is not rescaled when the running max grows (BLOCK_N = {bn}): "
                        f"l_i = l_i * exp(m_i - m_new) + sum(exp(x - m_new)), then m_i = m_new."))
    out += [(x.amax(1), "you returned the row max m_i: the log-sum-exp is m_i + log(l_i)."),
            (_lse64(x) / math.log(2), "this is the log-sum-exp in base 2 (log2 of sum of exp)... "
                                      "return natural logs: tl.log, or multiply by ln 2."),
            (torch.log(torch.exp(x - x.amax(1, keepdim=True)).sum(1)),
             "the running max m_i is missing from the result: lse = m_i + log(l_i).")]
    return out


def _check_lse(fn, case: RowCase) -> BasicsResult:
    part = "2b"
    (x,) = _inputs(case)
    M, N = x.shape
    expected = _lse64(x)
    before = x.clone()
    out, seconds = _call(part, fn, case, (x,))
    _check_tensor(part, case, out, (M,), torch.float32, x.device, what="lse")
    _unchanged(part, case, [before], [x])
    unwritten = _poisoned(out)
    if unwritten.any():
        idx = unwritten.nonzero()[:, 0].tolist()
        hints = [f"the last rows are missing: the grid needs cdiv(M, BLOCK_M) = cdiv({M}, BLOCK_M) programs "
                 f"and the store mask is offs_m < M."] if max(idx) == M - 1 else []
        _fail(part, case, f"{len(idx)} of {M} rows of lse were never written (rows {_fmt_ranges(idx)}).", hints)
    got = out.double()
    nan = got.isnan()
    if nan.any():
        idx = nan.nonzero()[:, 0].tolist()
        hints = []
        if case.masked:
            hints.append("some rows start with a tile of -inf only: m_new = -inf there, and exp(-inf - (-inf)) "
                         "is NaN. Subtract a safe max: m_safe = tl.where(m_new == float('-inf'), 0.0, m_new).")
        hints.append("a load without mask=... read past the end of x (the checks put NaN there): load with "
                     "mask=(offs_m[:, None] < M) & (offs_n[None, :] < N), other=float('-inf').")
        _fail(part, case, f"{len(idx)} of {M} rows of lse are NaN (rows {_fmt_ranges(idx)}).", hints)
    wrong_inf = torch.isinf(got) & ~(got == expected)
    if wrong_inf.any():
        idx = wrong_inf.nonzero()[:, 0].tolist()
        i = idx[0]
        hints = ["exp() overflowed: subtract the running max before exponentiating, "
                 "exp(x - m_new), and add m_i back at the end."] if got[i] > 0 else []
        _fail(part, case, f"{len(idx)} of {M} rows of lse are inf where the answer is finite "
                          f"(rows {_fmt_ranges(idx)}; lse[{i}] = {got[i].item()}, expected {expected[i].item():.6g}).",
              hints)
    atol, rtol = LSE_TOL
    finite = torch.isfinite(expected)
    err = torch.where(finite, (got - expected).abs(), torch.where(got == expected, 0.0, float("inf")))
    bad = err > atol + rtol * expected.abs().nan_to_num(posinf=0.0)
    if bad.any():
        idx = bad.nonzero()[:, 0].tolist()
        i = idx[0]
        hints = []
        # hypotheses on the CPU (small loops); stride ones read x's own storage, so on its device
        variants = _online_lse_variants(x.cpu()) + [(alt.cpu(), why) for alt, why in _stride_variants(x)]
        for alt, why in variants:
            if torch.allclose(got.cpu(), alt, atol=atol, rtol=rtol, equal_nan=True):
                hints.append(why)
                break
        if not hints and len(idx) < M and min(idx) > 0 and max(idx) == M - 1:
            hints.append("only the last rows are wrong: check the row mask offs_m < M on loads and stores.")
        _fail(part, case, f"{len(idx)} of {M} rows differ from torch.logsumexp(x, 1) (max |err| "
                          f"{err[bad].max().item():.3g}) at rows {_fmt_ranges(idx)}. First: lse[{i}] = "
                          f"{got[i].item():.6g}, expected {expected[i].item():.6g}.", hints)
    return BasicsResult(case, float(err.max()) if err.numel() else 0.0, seconds)


def _stride_variants(x):
    M, N = x.shape
    out = []
    if x.stride(1) != 1:
        alt = _as_strided_or_none(x, (M, N), (x.stride(0), 1))
        if alt is not None:
            out.append((_lse64(alt), "your kernel assumed column stride 1: x is a transposed view, element "
                                     "(i, j) is at x_ptr + i * stride_xm + j * stride_xn."))
    if x.stride(0) != N:
        alt = _as_strided_or_none(x, (M, N), (N, x.stride(1)))
        if alt is not None:
            out.append((_lse64(alt), f"your kernel assumed row stride N = {N}: rows are {x.stride(0)} elements "
                                     f"apart, use stride_xm."))
    return out


def check_2b(fn, family: str = None, cases=None, verbose: bool = True) -> BasicsSummary:
    """Check `fn(x) -> lse` (x [M, N] any strides; lse [M] float32, natural log)."""
    return _run("2b", fn, cases, family, verbose, _check_lse)


# ------------------------------------------------------------------------------------------------
# 2c: tiled copy of [B, H, N, D]
# ------------------------------------------------------------------------------------------------

def _locate(mask4):
    """'batch .., head .., rows ..' for a [B, H, N, D] bool tensor."""
    B, H, N, _ = mask4.shape
    idx = mask4.nonzero()
    bs, hs, rows = (idx[:, d].unique().tolist() for d in range(3))
    return (f"batch {_fmt_ranges(bs)}" + (" (all)" if len(bs) == B else f" of {B}") +
            f", head {_fmt_ranges(hs)}" + (" (all)" if len(hs) == H else f" of {H}") +
            f", rows {_fmt_ranges(rows)}" + (" (all)" if len(rows) == N else f" of {N}")), bs, hs, rows


def _copy_hints(x, out, bad):
    """Explain wrong (b, h) blocks: which input block they hold, or which stride was ignored."""
    B, H, N, D = x.shape
    hints = []
    bad_bh = bad.any(-1).any(-1).nonzero().tolist()
    for b, h in bad_bh[:1]:
        for b2 in range(B):
            for h2 in range(H):
                if (b2, h2) != (b, h) and torch.equal(out[b, h], x[b2, h2]):
                    why = []
                    if b2 != b:
                        why.append(f"batch {b2} instead of {b}")
                    if h2 != h:
                        why.append(f"head {h2} instead of {h}")
                    hints.append(f"output block (batch {b}, head {h}) holds the input's (batch {b2}, head {h2}) - "
                                 f"{' and '.join(why)}: off_bh = program_id(0) splits as b = off_bh // H, "
                                 f"h = off_bh % H, and the base is X_ptr + b * stride_xb + h * stride_xh.")
                    return hints
        contiguous = (H * N * D, N * D, D, 1)
        for strides, why in (((x.stride(0), x.stride(1), x.stride(2), 1),
                              "your kernel assumed stride_xd = 1: element d of a row is at + d * stride_xd."),
                             ((x.stride(0), x.stride(1), D, x.stride(3)),
                              f"your kernel assumed stride_xn = D = {D}: rows are {x.stride(2)} elements apart."),
                             (contiguous, "your kernel read x as if it were contiguous: use its four strides.")):
            if strides == tuple(x.stride()):
                continue
            alt = _as_strided_or_none(x, x.shape, strides)
            if alt is not None and torch.equal(out[b, h], alt[b, h]):
                hints.append(why)
                return hints
    return hints


def _check_copy(fn, case: CopyCase) -> BasicsResult:
    part = "2c"
    (x,) = _inputs(case)
    B, H, N, D = x.shape
    before = x.clone()
    out, seconds = _call(part, fn, case, (x,))
    _check_tensor(part, case, out, x.shape, x.dtype, x.device)
    if not out.is_contiguous():
        _fail(part, case, f"the output must be contiguous (strides {tuple(torch.empty(B, H, N, D).stride())}), got "
                          f"strides {tuple(out.stride())}: allocate it with torch.empty(B, H, N, D, ...).")
    _unchanged(part, case, [before], [x])
    unwritten = _poisoned(out)
    if unwritten.any():
        where, bs, hs, rows = _locate(unwritten)
        hints = []
        if len(bs) == B and len(hs) == H and min(rows) > 0 and max(rows) == N - 1:
            hints.append("the last rows of every head are missing: the grid needs cdiv(N, BLOCK_N) programs "
                         "along axis 1 and the store mask is offs_n < N.")
        else:
            blocks = unwritten.flatten(2).all(-1).nonzero().tolist()       # (b, h) never touched at all
            if blocks:
                shown = ", ".join(f"({b}, {h})" for b, h in blocks[:4]) + (" ..." if len(blocks) > 4 else "")
                hints.append(f"{len(blocks)} whole (batch, head) block(s) were never written, e.g. {shown}: axis 0 "
                             f"of the grid has B * H programs, one per (batch, head), and off_bh splits as "
                             f"b = off_bh // H, h = off_bh % H.")
        _fail(part, case, f"{int(unwritten.sum())} of {out.numel()} output elements were never written ({where}).",
              hints, where)
    got = out
    nonfinite = ~torch.isfinite(got)
    if nonfinite.any():
        where, *_ = _locate(nonfinite)
        _fail(part, case, f"{int(nonfinite.sum())} output element(s) are NaN or inf ({where}).",
              ["a load without mask=... read past the end of x (the checks put NaN there): "
               "load with mask=offs_n[:, None] < N."], where)
    bad = got != x
    if bad.any():
        where, *_ = _locate(bad)
        b, h, i, d = bad.nonzero()[0].tolist()
        _fail(part, case, f"{int(bad.sum())} of {out.numel()} elements differ from x ({where}). First: "
                          f"out[{b}, {h}, {i}, {d}] = {got[b, h, i, d].item():.5g}, expected "
                          f"x[{b}, {h}, {i}, {d}] = {x[b, h, i, d].item():.5g}.", _copy_hints(x, out, bad), where)
    return BasicsResult(case, 0.0, seconds)


def check_2c(fn, family: str = None, cases=None, verbose: bool = True) -> BasicsSummary:
    """Check `fn(x) -> out` (x [B, H, N, D] any strides; out a contiguous copy, same dtype)."""
    return _run("2c", fn, cases, family, verbose, _check_copy)


def check_basics(part: str, fn, family: str = None, cases=None, verbose: bool = True) -> BasicsSummary:
    """`check_basics("2a", fn)` is `check_2a(fn)`, and so on."""
    checks = {"2a": check_2a, "2b": check_2b, "2c": check_2c}
    if part not in checks:
        raise ValueError(f"part must be '2a', '2b' or '2c', got {part!r}")
    return checks[part](fn, family=family, cases=cases, verbose=verbose)



PARTS = {"2a": "axpb", "2b": "row_logsumexp", "2c": "copy_bhnd"}


def check_all(module, verbose: bool = True) -> BasicsSummary:
    """Check the three Problem 2 functions of `module` (e.g. solutions.p2_triton_basics);
    returns one summary covering every case."""
    total = BasicsSummary("2")
    for part, name in PARTS.items():
        total.results.extend(check_basics(part, getattr(module, name), verbose=verbose).results)
    return total
