"""`check(problem, fn)`: run a problem's cases against a student's function and explain failures.

For every case: build inputs (seeded, maybe non-contiguous), compute the float64 reference, call
`fn` under a Guard (Triton launches counted, PyTorch attention refused, fresh outputs poisoned),
then check type, shape, dtype, device, untouched inputs, unwritten rows, NaN/inf, and the error
against per-dtype tolerances. The first failing case raises AssertionError with a message that
says which case, how many elements, where, and - when it can tell - which mistake.
"""
from __future__ import annotations

import time

import torch

from .. import device
from ..spec import problems
from ..spec.cases import Case, visible_cases
from ..spec.reference import LSE_TOLERANCES, TOLERANCES, reference_attention
from ..watch import record
from ..watch.guard import POISON, Guard
from .core import (CaseResult, CheckSummary, NotImplementedYet, fail, inputs_unchanged, layout_hint, raised, run_suite,
                   select_cases)
from .diagnose import locate, mask_flips, nan_hypotheses, whole_output_hypotheses


def _call(problem, fn, case, q, k, v):
    kwargs = case.mask_kwargs()
    guard = Guard(triton_problem=not problems.get(problem).pytorch, seq_len=case.N, inputs=(q, k, v), mask=kwargs)

    def run():
        with guard:
            out = fn(q, k, v, **kwargs)
            if device.TIER == "gpu":
                torch.cuda.synchronize()
        return out
    t0 = time.perf_counter()
    try:
        out = record.call(run, (q, k, v), kwargs, observers=[guard])
    except Exception as exc:   # noqa: BLE001 - any failure of student code is reported, not raised raw
        raised(problem, case, exc, "your function",
               f"reproduce it with the full traceback: q, k, v = autograder.{case!r}.make_inputs(); "
               f"fn(q, k, v, **{case.mask_kwargs()!r})")
    return out, guard, time.perf_counter() - t0


def _check_output(problem, case, out, q):
    if problems.get(problem).returns_lse:
        if not (isinstance(out, tuple) and len(out) == 2):
            fail(case, problem, f"Problem {problem} returns (O, lse): the output and the log-sum-exp of each row; "
                                 f"got {type(out).__name__}")
        out, lse = out
    else:
        lse = None
    if out is None:
        raise NotImplementedYet.returned_none(f"Problem {problem}")
    if not isinstance(out, torch.Tensor):
        fail(case, problem, f"expected a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(q.shape):
        fail(case, problem, f"output shape {tuple(out.shape)}, expected {tuple(q.shape)} (same as q)")
    if out.dtype != q.dtype:
        fail(case, problem, f"output dtype {out.dtype}, expected {q.dtype} (same as q)")
    if out.device != q.device:
        fail(case, problem, f"output on {out.device}, expected {q.device} (same as q)")
    if lse is not None:
        if not isinstance(lse, torch.Tensor) or tuple(lse.shape) != tuple(q.shape[:3]):
            fail(case, problem, f"lse must be a tensor of shape {tuple(q.shape[:3])} ([B, H, N]), "
                                 f"got {getattr(lse, 'shape', type(lse).__name__)}")
    return out, lse


def check_case(problem: int, fn, case: Case) -> CaseResult:
    """Run one case; raise AssertionError with a diagnosis if it fails."""
    q, k, v = case.make_inputs()
    expected, expected_lse = reference_attention(q, k, v, **case.mask_kwargs(), return_lse=True)
    before = [t.clone() for t in (q, k, v)]
    out, guard, seconds = _call(problem, fn, case, q, k, v)
    refused = guard.verdict()
    if refused:
        fail(case, problem, refused)
    out, lse = _check_output(problem, case, out, q)
    inputs_unchanged(case, problem, before, (q, k, v), ("its input q", "its input k", "its input v"),
                     "compute into a new output tensor.")

    atol, rtol = TOLERANCES[case.resolved_dtype]
    pytorch = problems.get(problem).pytorch     # hints in torch's words, no grid or strides
    got = out.double()
    unwritten = got == torch.tensor(POISON, dtype=out.dtype).double()
    if unwritten.any():
        rows = unwritten.all(-1)
        where, hints = locate(unwritten, out.shape, pytorch)
        default = ("the given code writes rows start_m .. start_m + rows of o: keep it." if pytorch else
                   "every query row needs a program: grid = (cdiv(N, BLOCK_M) * B * H,); "
                   "store with mask offs_m < N, not a smaller bound.")
        fail(case, problem, f"{int(rows.sum())} output row(s) were never written ({where}).", hints or [default],
             where)
    if not torch.isfinite(got).all():
        nonfinite = ~torch.isfinite(got)
        where, hints = locate(nonfinite, out.shape, pytorch)
        diagnosis = nan_hypotheses(q, k, v, out, case, atol, rtol)
        if diagnosis:
            hints = [diagnosis] + hints
        fail(case, problem, f"{int(nonfinite.sum())} element(s) are NaN or inf ({where}).",
             hints + ["NaN usually comes from torch.exp(-inf - (-inf)): a row that sees no key in a tile "
                      "keeps its running max m_i = -inf, so subtract m_safe = torch.where(m_new == -inf, 0, "
                      "m_new) (and keep m_i = m_new); or from 0/0 when l_i stays 0." if pytorch else
                      "NaN usually comes from exp(-inf - (-inf)) (exp2 in Triton): a row that sees no "
                      "key in a tile keeps its running max m_i = -inf; or from 0/0 when l stays 0; or from "
                      "loading out of bounds without other=0.0 / a mask."], where)
    err = (got - expected).abs()
    bad = err > atol + rtol * expected.abs()
    if bad.any():
        where, hints = locate(bad, out.shape, pytorch)
        b, h, i, d = bad.nonzero()[0].tolist()
        msg = (f"{int(bad.sum())} of {bad.numel()} elements differ from the reference "
               f"(max |err| {err.max().item():.3g}, tolerance {atol:g} + {rtol:g}*|ref|) at {where}. "
               f"First: out[{b}, {h}, {i}, {d}] = {got[b, h, i, d].item():.5g}, "
               f"expected {expected[b, h, i, d].item():.5g}.")
        diagnosis = whole_output_hypotheses(q, k, v, out, case, atol, rtol, pytorch)
        diag_hints = [diagnosis] if diagnosis else mask_flips(q, k, v, out, case, atol, rtol, pytorch=pytorch)
        if diag_hints:
            # a named mistake explains the rows; "only the last rows" would point at the grid instead
            hints = locate(bad, out.shape, pytorch, grid_hint=False)[1]
        elif case.layout != "contiguous":
            diag_hints = [_layout_hint(problem, fn, case, q, k, v, expected, atol, rtol)]
        elif not pytorch:
            diag_hints = ["no single key or key tile explains the wrong rows: check the loop bounds (which "
                          "key tiles each query tile visits, in each phase) and the mask."]
        fail(case, problem, msg, diag_hints + hints, where)
    if lse is not None:
        la, lr = LSE_TOLERANCES[case.resolved_dtype]
        lse = lse.double()
        if not torch.allclose(lse, expected_lse, atol=la, rtol=lr):
            diff = (lse - expected_lse).abs()
            b, h, i = (diff == diff.max()).nonzero()[0].tolist()
            hint = ""
            if torch.allclose(lse, expected_lse / torch.log(torch.tensor(2.0, dtype=torch.float64)), atol=la, rtol=lr):
                hint = " It matches the log-sum-exp in base 2: return the natural log (multiply by ln 2)."
            fail(case, problem, f"O is right but lse is off (max |err| {diff.max().item():.3g} at batch {b}, "
                                 f"head {h}, row {i}): lse = m_i + log(l_i), natural log, of the scaled scores.{hint}")
    return CaseResult(case, float(err.max()) if err.numel() else 0.0, seconds, len(guard.launches))


def _layout_hint(problem, fn, case, q, k, v, expected, atol, rtol):
    """A failure on strided inputs: blame the strides only when contiguous copies of the same inputs
    (the same values: `expected` holds for them too) pass; otherwise the mistake is elsewhere (loop
    bounds, mask) and this case merely showed it first."""
    spec = problems.get(problem)
    pytorch = spec.pytorch

    def passes(t):
        out, _, _ = _call(problem, fn, case, t["q"], t["k"], t["v"])
        out = out[0] if spec.returns_lse else out
        return bool((out.double() - expected).abs().le(atol + rtol * expected.abs()).all())
    wrong_too = ("the output is wrong for contiguous copies of these inputs too, so the strides are not (only) to "
                 "blame: " + ("check the mask and the online-softmax update." if pytorch else
                             "check the loop bounds (which key tiles each query tile visits) and the mask."))
    if pytorch:
        strided = (f"this case's q, k, v are non-contiguous views ({case.layout} layout) and contiguous copies "
                   "pass: use operations that work on any memory layout (slicing, @, F.pad), not .view() or "
                   "storage offsets.")
    else:
        strided = (f"this case's q, k, v are strided views ({case.layout} layout) and contiguous copies pass: "
                   "address every element with its tensor's own strides (stride_kn, stride_kd, ...), never "
                   "N * D, HEAD_DIM or a stride of 1.")
    return layout_hint(case, dict(zip("qkv", (q, k, v))), passes, wrong_too, strided)


def check(problem: int, fn, family: str = None, cases=None, verbose: bool = True) -> CheckSummary:
    """Check `fn` on problem `problem`'s visible cases (or `cases`), optionally one `family` of them.

    Prints one row per case behind a progress bar and raises AssertionError on the first failure."""
    spec = problems.PROBLEMS.get(problem)
    if spec is not None and spec.checker == "triton_basics":
        raise ValueError(f"Problem {problem} has its own checks: autograder.triton_basics.check_*(fn)")
    if spec is not None and spec.checker == "check_backward":
        raise ValueError(f"Problem {problem} checks the backward pass: autograder.check_backward({problem}, fn)")
    if spec is None or spec.checker != "check":
        raise ValueError(f"problem must be one of {problems.numbers('check')}, got {problem!r}")
    if not callable(fn):
        raise TypeError(f"fn must be your function (e.g. flash_attention_forward), got {type(fn).__name__}")
    cases = select_cases(visible_cases(problem) if cases is None else cases, family)
    return run_suite(problem, f"Problem {problem}", cases, lambda case: check_case(problem, fn, case), verbose)
