"""The checks' verdicts: `CheckFailed` (a failed check, carrying a `Failure`) and `NotImplementedYet`.

A `Failure` holds a failed check in parts: which check, which case, what went wrong, where, and
hints. `render()` is the text the student reads (the exception's message); `summary()` is one line
of it for the scoreboard, benchmark notes and grade reports, built from the parts rather than cut
out of the text.

Failures stay objects until a person reads them: `autograder.record` saves a verdict's parts
(`fields`) and rebuilds it from them, and no check reads a rendered text back. Only the grader,
which never imports the autograder (tools/grading/_failure.py loads this file by path) and has
nothing but a notebook's error output, parses text (`Failure.parse`), once, at its boundary.
"""
from __future__ import annotations

import re
import traceback
from dataclasses import dataclass
from typing import Optional, Tuple, Union


MAX_HEADER = 2000          # characters: a rendered failure's first line is far shorter


@dataclass(frozen=True)
class Failure:
    what: str                          # what went wrong, as the student reads it
    check: str = ""                    # which check: "Problem 4", "Problem 9, autograd contract"
    case: str = ""                     # the failing case, "[family] shape dtype", for checks that run cases
    tier: str = ""                     # the tier that case ran on
    where: str = ""                    # where the output is wrong ("batch 0, rows 64-127"), when located
    hints: Tuple[str, ...] = ()
    detail: str = ""                   # text under the message (the failure a wrapping check reports on)

    def render(self) -> str:
        """The full text, as the checks have always worded it."""
        if self.case:
            lines = [f"{self.check} failed on case {self.case} ({self.tier} tier):", "  " + self.what]
        else:
            lines = [f"{self.check}: {self.what}" if self.check else self.what]
        lines += ["  hint: " + h for h in self.hints]
        if self.detail:
            lines.append(self.detail)
        return "\n".join(lines)

    def summary(self, width: Optional[int] = None) -> str:
        """One line: the check, what went wrong (its first line), then the case; cut to `width`."""
        what = next((ln.strip() for ln in self.what.splitlines() if ln.strip()), "")
        text = f"{self.check}: {what}" if self.check else what
        if self.where and self.where not in what:
            text += f" at {self.where}"
        if self.case:
            text += f" (case {self.case})"
        return cut(text, width)

    # a case failure's first line, as `render` writes it
    _HEADER = re.compile(r"^(?P<check>.+?) failed on case (?P<case>\[.*\] .*) \((?P<tier>[\w-]+) tier\):$")

    def fields(self) -> dict:
        """The parts as plain data (str and lists): what a recording keeps."""
        return {"what": self.what, "check": self.check, "case": self.case, "tier": self.tier, "where": self.where,
                "hints": list(self.hints), "detail": self.detail}

    @classmethod
    def from_fields(cls, fields: dict) -> "Failure":
        return cls(**{k: (tuple(str(h) for h in v) if k == "hints" else str(v)) for k, v in fields.items()
                      if k in cls.__dataclass_fields__})

    @classmethod
    def parse(cls, text: str) -> "Failure":
        """The parts of a rendered failure, for a reader that has only the text (the grader reading a
        notebook's error output). Text that `render` did not write comes back whole as `what`."""
        lines = text.split("\n")
        # a rendered header is one short line; the text is the student's to shape (a CheckFailed they
        # raise themselves reaches the output whole), and the pattern backtracks quadratically
        m = cls._HEADER.match(lines[0]) if len(lines[0]) <= MAX_HEADER else None
        if not m or len(lines) < 2 or not lines[1].startswith("  "):
            return cls(what=text)
        body, hints = [lines[1][2:]], []
        for line in lines[2:]:
            if line.startswith("  hint: "):
                hints.append(line[len("  hint: "):])
            elif hints:                # a hint spanning lines (hints are one line each today)
                hints[-1] += "\n" + line
            else:
                body.append(line)      # the exception text of "your function raised ..." spans lines
        return cls(what="\n".join(body), check=m["check"], case=m["case"], tier=m["tier"], hints=tuple(hints))


def cut(text: str, width: Optional[int]) -> str:
    return text if width is None or len(text) <= width else text[:max(width - 3, 0)] + "..."


def summary(exc: BaseException, width: Optional[int] = None) -> str:
    """One line for any exception: its Failure's summary, or the first line of its message."""
    failure = getattr(exc, "failure", None)
    if isinstance(failure, Failure):
        return failure.summary(width)
    return Failure(what=str(exc)).summary(width)


class CheckFailed(AssertionError):
    """A failed check. `failure` holds it in parts; the message is `failure.render()`.

    In Jupyter it shows as its message alone: the frames inside the autograder say nothing to a
    student (IPython calls _render_traceback_ when it exists)."""

    def __init__(self, failure: Union[Failure, str] = ""):
        # a string: a verdict with nothing but its words (pickle passes the rendered message back)
        self.failure = failure if isinstance(failure, Failure) else Failure(what=str(failure))
        super().__init__(self.failure.render())

    def __reduce__(self):
        return type(self), (self.failure,)

    def _render_traceback_(self):
        return [f"\x1b[31m{type(self).__name__}\x1b[0m: {self}"]


class NotImplementedYet(CheckFailed):
    """The student's cell still holds the release stub."""

    @classmethod
    def of(cls, label: str) -> "NotImplementedYet":
        """The verdict for `label` ("Problem 4", "Problem 2b"), worded once for every check."""
        return cls(Failure(f"{label} is not implemented yet: fill in the cells marked `# YOUR CODE HERE` and "
                           f"run them again."))

    @classmethod
    def returned_none(cls, label: str) -> "NotImplementedYet":
        return cls(Failure(f"{label}: your function returned None - is it implemented?"))


def not_implemented(exc: BaseException) -> bool:
    text = "".join(traceback.format_exception_only(type(exc), exc))
    while exc is not None:
        if isinstance(exc, NotImplementedError):
            return True
        exc = exc.__cause__ or exc.__context__
    # compiled Triton rejects `raise` inside a kernel: the release stub shows up as a compile error
    return "NotImplementedError" in text
