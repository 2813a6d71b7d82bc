"""What every check of the course does the same way, written once.

A check takes a problem (looked up in the registry by its entry point), runs its cases one by one
behind a progress bar (`run_suite`), calls the student's code under the guard and the recorder,
reports any exception from it (`raised`: not implemented yet, cheating, or the exception with how to
reproduce it), refuses what the guard saw (`Guard.verdict`), checks that the inputs were left as they
were (`inputs_unchanged`), and always fails with `CheckFailed(Failure)` (`fail`). The checks
themselves (attention, backward, triton_basics, tile_skipping, capstone) only say what to compare and
how to explain a difference.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass, field

import torch

from .. import device
from ..spec.cases import Case
from ..spec.reference import ReferenceCalledError
from ..watch import record
from .diagnose import stride_mixup
from .failure import CheckFailed, Failure, NotImplementedYet, not_implemented

__all__ = ["CaseResult", "CheckSummary", "fail", "raised", "inputs_unchanged", "layout_hint", "select_cases", "run_suite",
           "CheckFailed", "Failure", "NotImplementedYet", "not_implemented"]


@dataclass
class CaseResult:
    case: Case
    max_abs_err: float
    seconds: float
    launches: int = 0           # kernel launches seen by the guard (attention problems)


@dataclass
class CheckSummary:
    problem: int
    results: list = field(default_factory=list)

    @property
    def passed(self):
        return len(self.results)

    def __repr__(self):
        worst = max((r.max_abs_err for r in self.results), default=0.0)
        return f"CheckSummary(problem={self.problem}, passed={self.passed} cases, worst max|err|={worst:.2e})"


def fail(case, problem, msg, hints=(), where=""):
    """Raise CheckFailed: `problem` (9, or a part such as "2a") failed on `case` with `msg`;
    `where`: the located wrong elements."""
    raise CheckFailed(Failure(msg, check=f"Problem {problem}", case=f"[{case.family}] {case.describe()}",
                              tier=device.TIER, where=where, hints=tuple(h for h in hints if h)))


def raised(problem, case, exc, what, reproduce, hints=()):
    """Report an exception from a call of student code: not implemented yet, cheating, or the
    exception itself with `hints` and how to reproduce it. Always raises."""
    if isinstance(exc, (CheckFailed, record.NotRecorded)):
        raise exc
    if not_implemented(exc):
        raise NotImplementedYet.of(f"Problem {problem}") from None
    if isinstance(exc, ReferenceCalledError):
        fail(case, problem, f"cheating detected: {exc}")
    summary = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    if len(summary) > 1500:
        summary = summary[:1500] + " ..."
    if "out of bounds" in summary.lower() or "illegal memory" in summary.lower():
        hints = [*hints, "a load or store touched memory outside the tensor: every tl.load / tl.store of a "
                         "tile that can stick out of the tensor needs mask=..."]
    if "must be same dtype" in summary or "must have the same dtype" in summary:
        hints = [*hints, "tl.dot takes two operands of one dtype: a tile computed in float32 (probabilities, "
                         "dS) goes in as .to(<the other operand's dtype>), and the dot still accumulates in "
                         "float32 (16-bit inputs are what the tensor cores multiply)"]
    fail(case, problem, f"{what} raised {summary}", [*hints, reproduce])


def inputs_unchanged(case, problem, before, tensors, names, advice):
    """Fail when the student's function wrote into one of its inputs (`before`: clones taken before
    the call)."""
    for name, t0, t in zip(names, before, tensors):
        if not torch.equal(t0, t):
            fail(case, problem, f"your function modified {name}: {advice}")


def layout_hint(case, tensors: dict, passes, wrong_too: str, strided: str) -> str:
    """A failure on strided inputs: blame the strides only when contiguous copies of the same inputs
    pass (`passes(tensors)`: the student's function is right on them); otherwise this case merely
    showed a mistake made elsewhere first (`wrong_too`). On a `mixed` case, name the tensor read with
    another's strides; else `strided`, the general advice."""
    try:
        contiguous_ok = passes({name: t.contiguous() for name, t in tensors.items()})
    except Exception:   # noqa: BLE001 - the student's code failing on contiguous inputs is an answer too
        contiguous_ok = False
    if not contiguous_ok:
        return wrong_too
    return (stride_mixup(case, tensors, passes) if case.layout == "mixed" else None) or strided


def select_cases(cases, family=None):
    """`cases` as a list, only those of `family` when one is given (a clear error when none is)."""
    cases = list(cases)
    if family is not None:
        families = sorted({c.family for c in cases})
        cases = [c for c in cases if c.family == family]
        if not cases:
            raise ValueError(f"no cases in family {family!r}; families: {families}")
    return cases


def run_suite(problem, title, cases, check_one, verbose=True) -> CheckSummary:
    """Run `check_one(case)` on each case behind a progress bar (one printed row per case); the
    first failure propagates. Shared by every check of the course."""
    from ..progress import tqdm_class
    tqdm = tqdm_class()
    summary = CheckSummary(problem)
    with tqdm(cases, desc=title, disable=not verbose, leave=False) as bar:
        for case in bar:
            result = check_one(case)
            summary.results.append(result)
            if verbose:
                tqdm.write(f"  ok  [{case.family:7s}] {case.describe():48s} max|err| {result.max_abs_err:.2e}  "
                           f"{result.seconds * 1e3:8.1f} ms")
    if verbose:
        n = summary.passed
        print(f"{title}: {'all ' + str(n) + ' cases' if n > 1 else 'the case'} passed ({device.TIER} tier).")
    return summary
