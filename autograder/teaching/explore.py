"""`try_it`: run one case of your function outside grading, see the numbers and a picture.

Unlike `check`, it never raises for the release stub or a wrong answer: it prints what happened
and, when the output is off, shows where (the error heatmap), so "Run All" keeps going to the
graded checks, which give the full diagnosis."""
from __future__ import annotations

import torch

from ..checks.core import not_implemented
from ..spec.cases import Case
from ..spec.reference import TOLERANCES, reference_attention


def try_it(fn, case: Case, plot: bool = True):
    """Run `fn` on `case`; print max |error| against the float64 reference; return the output
    (None when the function is not implemented yet)."""
    q, k, v = case.make_inputs()
    try:
        out = fn(q, k, v, **case.mask_kwargs())
    except Exception as exc:   # noqa: BLE001 - the stub shows up as different exception types per tier
        if not_implemented(exc):
            print("not implemented yet: fill in the cells marked `# YOUR CODE HERE`, run them, then this cell.")
            return None
        raise
    if isinstance(out, tuple):       # Problem 1 returns (O, lse)
        out = out[0]
    expected = reference_attention(q, k, v, **case.mask_kwargs())
    atol, rtol = TOLERANCES[case.resolved_dtype]
    got = out.double()
    bad = ~torch.isclose(got, expected, atol=atol, rtol=rtol)
    err = (got - expected).abs().nan_to_num(nan=float("inf"))
    print(f"{case.describe()}: max |out - reference| = {err.max().item():.2e}, "
          f"{int(bad.sum())} of {bad.numel()} elements outside tolerance ({atol:g} + {rtol:g}*|ref|)")
    if bad.any() and plot:
        from .plots import show_error_heatmap
        fig = show_error_heatmap(out, expected, atol, rtol)
        try:
            from IPython.display import display
            display(fig)
        except ImportError:
            pass
    return out
