"""Graded calls of student code: recorded in the student's kernel, replayed by the grader.

A submission runs in the same Python process as the tests that grade it, so it can replace anything
those tests use (`autograder.check`, `torch.testing.assert_close`, ...). So when grading, the
verdict does not come from that process alone:

* record (`AUTOGRADER_RECORD=<dir>`, set by tools/grade.py in the grading kernel): every call of a
  student's function by a check goes through `call`, which saves a digest of the inputs, the
  outputs (or the exception) and what the observers (the cheat guard, the interpreter probe) saw.
* replay (`AUTOGRADER_REPLAY=<dir>`, tools/grading/replay/replayer.py in a fresh process of the grader's): the graded
  cells run again with the student's functions replaced by stand-ins; `call` returns the recorded
  outputs for the same inputs, and the checks, the reference and the comparisons are the grader's
  own. A call that was not recorded (because something replaced the checks) fails.

A graded cell scores when it passed in the kernel and again in the replay. What the observers saw
is still measured inside the student's process: see docs/instructor.md for what that leaves open.
Outside grading, `call` just runs the function.
"""
from __future__ import annotations

import builtins
import functools
import hashlib
import os
import stat
from pathlib import Path

import torch

from ..checks.failure import CheckFailed, Failure, NotImplementedYet, not_implemented

RECORD_DIR = os.environ.get("AUTOGRADER_RECORD") or None
REPLAY_DIR = os.environ.get("AUTOGRADER_REPLAY") or None
MAX_RECORD_BYTES = 1 << 30          # one call's outputs; anything larger is not a FlashAttention output
_depth = 0                          # > 0 inside a recorded call: nested calls are part of it


class NotRecorded(AssertionError):
    """Replay found no recording of a call the checks make: the checks did not run as written."""


class RecordedError(Exception):
    """An exception the student's function raised, of a type that is not a builtin."""


class Unrecordable:
    """Stands for an output that is not tensors, numbers or strings (the checks reject it)."""

    def __init__(self, type_name):
        self.type_name = type_name

    def __repr__(self):
        return f"<{self.type_name} object>"


def digest(*objs) -> str:
    """sha256 of tensors (dtype, shape, strides, values), numbers, strings and containers of them."""
    h = hashlib.sha256()

    def feed(o):
        if isinstance(o, torch.Tensor):
            t = o.detach()
            h.update(f"T{t.dtype}{tuple(t.shape)}{t.stride()}{t.device.type}|".encode())
            flat = t.contiguous().reshape(-1).cpu()
            h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
        elif isinstance(o, (tuple, list)):
            h.update(f"{type(o).__name__}{len(o)}(".encode())
            for x in o:
                feed(x)
            h.update(b")")
        elif isinstance(o, dict):
            h.update(f"dict{len(o)}(".encode())
            for k in sorted(o, key=repr):
                feed(k)
                feed(o[k])
            h.update(b")")
        elif o is None or isinstance(o, (bool, int, float, str, torch.dtype)):
            h.update(f"{type(o).__name__}:{o!r}|".encode())
        else:
            h.update(f"{type(o).__module__}.{type(o).__qualname__}|".encode())
    for o in objs:
        feed(o)
    return h.hexdigest()


def _tensors(args):
    return [a for a in args if isinstance(a, torch.Tensor)]


def _encode(out):
    """An output in the types `torch.load(weights_only=True)` accepts; anything else by its type's name."""
    if out is None or isinstance(out, (bool, int, float, str)):
        return out
    if isinstance(out, torch.Tensor):
        return out.detach()
    if isinstance(out, (tuple, list)):
        return {"__seq__": type(out).__name__, "items": [_encode(x) for x in out]}
    return {"__unrecordable__": type(out).__name__}


def _decode(obj):
    if isinstance(obj, dict) and "__unrecordable__" in obj:
        return Unrecordable(str(obj["__unrecordable__"]))
    if isinstance(obj, dict) and "__seq__" in obj:
        items = [_decode(x) for x in obj["items"]]
        return tuple(items) if obj["__seq__"] == "tuple" else items
    return obj


def _path(key) -> Path:
    return Path(RECORD_DIR or REPLAY_DIR) / f"{key}.pt"


def _save(key, record):
    tmp = _path(key).with_suffix(".tmp")
    torch.save(record, tmp)
    os.replace(tmp, _path(key))


def _load(key):
    path = _path(key)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_RECORD_BYTES:
        raise NotRecorded(f"the recording {path.name} is not a plain file of a sane size: not trusted")
    from .. import device
    try:
        return torch.load(path, map_location=device.DEVICE, weights_only=True)
    except Exception as exc:   # noqa: BLE001 - whatever is wrong with it, it is not a recording
        raise NotRecorded(f"the recording {path.name} could not be read ({type(exc).__name__})") from None


def _exc_info(exc):
    """What a recording keeps of an exception: its type's name, its message, whether it says "not
    implemented", and for the checks' own verdicts their parts (never parsed back from the text)."""
    failure = getattr(exc, "failure", None)
    return [type(exc).__name__, str(exc), not_implemented(exc),
            failure.fields() if isinstance(exc, CheckFailed) and isinstance(failure, Failure) else None]


def _rebuild(exc_info):
    name, message, not_implemented, fields = (list(exc_info) + [None])[:4]
    if not_implemented:
        return NotImplementedError(message)
    verdicts = {"CheckFailed": CheckFailed, "NotImplementedYet": NotImplementedYet}
    if name in verdicts:      # the checks' own verdicts, raised inside a recording
        return verdicts[name](Failure.from_fields(fields) if isinstance(fields, dict) else message)
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:   # noqa: BLE001 - an exception type with an unusual constructor
            pass
    return RecordedError(f"{name}: {message}")


def call(run, args, kwargs=None, observers=()):
    """`run()`, which calls a student's function on `args` and `kwargs` (under the observers).

    When recording, the call is saved under a digest of its inputs; when replaying, `run` is not
    called: the recorded outputs, exception, input changes and observer readings come back instead."""
    global _depth
    kwargs = kwargs or {}
    if not (RECORD_DIR or REPLAY_DIR) or _depth:
        return run()
    tensors = _tensors(args)
    before = [digest(t) for t in tensors]       # the key, and what shows an input the function changed
    key = digest(before, [a for a in args if not isinstance(a, torch.Tensor)], kwargs,
                 [type(o).__name__ for o in observers])
    if REPLAY_DIR:
        record = _load(key)
        if record is None:
            raise NotRecorded("this call of your function was not made while your notebook ran: something "
                              "kept the checks from running as written (was autograder or torch replaced?)")
        for o, snap in zip(observers, record["observers"]):
            o.restore(snap)
        with torch.no_grad():      # an input may be a leaf that requires grad
            for i, after in record["after"].items():
                tensors[int(i)].copy_(after)
        if record["exc"] is not None:
            raise _rebuild(record["exc"])
        return _decode(record["out"])
    _depth += 1
    try:
        out, exc = run(), None
    except BaseException as e:   # noqa: BLE001 - recorded, then raised again
        out, exc = None, e
    finally:
        _depth -= 1
    record = {
        "out": _encode(out),
        "exc": None if exc is None else _exc_info(exc),
        "observers": [o.snapshot() for o in observers],
        "after": {str(i): t.detach().clone() for i, t in enumerate(tensors) if digest(t) != before[i]},
    }
    try:
        _save(key, record)
    except Exception:   # noqa: BLE001 - an output torch cannot save is recorded as unrecordable
        record["out"] = {"__unrecordable__": type(out).__name__}
        _save(key, record)
    if exc is not None:
        raise exc
    return out


class Recorded:
    """A student's function whose direct calls (outside the checks) are recorded too."""

    def __init__(self, fn):
        functools.update_wrapper(self, fn)
        self.fn = fn

    def __call__(self, *args, **kwargs):
        return call(lambda: self.fn(*args, **kwargs), args, kwargs)


def recorded(obj):
    """`obj` with its calls recorded, when it is a plain Python function and we are recording."""
    import types
    if RECORD_DIR and isinstance(obj, (types.FunctionType, functools.partial)) and not isinstance(obj, Recorded):
        return Recorded(obj)
    return obj


class Replayed:
    """The grader's stand-in for a student's function: its calls return what was recorded."""

    def __init__(self, name):
        self.__name__ = self.__qualname__ = name

    def __call__(self, *args, **kwargs):
        return call(lambda: None, args, kwargs)

    def __repr__(self):
        return f"<recorded function {self.__name__}>"


def wrap_globals(namespace: dict, names):
    """Record direct calls of the functions `names` until the current notebook cell ends.

    The grader puts this call at the top of every graded cell, for the names the cell uses that
    earlier cells defined: a hidden test that calls the student's function itself (to see it refuse
    bad arguments, say) is then replayed like a check. Outside IPython the wrapping stays."""
    if not RECORD_DIR:
        return
    wrapped = {}
    for name in names:
        obj = namespace.get(name)
        new = recorded(obj)
        if new is not obj:
            namespace[name] = wrapped[name] = new
    try:
        from IPython import get_ipython
        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is None or not wrapped:
        return

    def unwrap(*_):
        for name, new in wrapped.items():
            if namespace.get(name) is new:
                namespace[name] = new.fn
        shell.events.unregister("post_run_cell", unwrap)
    shell.events.register("post_run_cell", unwrap)
