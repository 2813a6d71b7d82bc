"""The checks' verdicts: `CheckFailed` (a failed check) and `NotImplementedYet` (the release stub).

A module of their own, importing nothing of the autograder: `autograder.record` rebuilds them when it
replays a recorded call, and every check module raises them, so they must sit below both.
"""
from __future__ import annotations

import traceback


class CheckFailed(AssertionError):
    """A failed check. In Jupyter it shows as its message alone: the frames inside the
    autograder say nothing to a student (IPython calls _render_traceback_ when it exists)."""

    def _render_traceback_(self):
        return [f"\x1b[31m{type(self).__name__}\x1b[0m: {self}"]


class NotImplementedYet(CheckFailed):
    """The student's cell still holds the release stub."""


def _not_implemented(exc: BaseException) -> bool:
    text = "".join(traceback.format_exception_only(type(exc), exc))
    while exc is not None:
        if isinstance(exc, NotImplementedError):
            return True
        exc = exc.__cause__ or exc.__context__
    # compiled Triton rejects `raise` inside a kernel: the release stub shows up as a compile error
    return "NotImplementedError" in text
