"""Compile a kernel's front end for a GPU, on a machine without one.

The CPU tier runs kernels in Triton's interpreter, which executes the kernel body as Python: it
accepts code that Triton's compiler rejects. The classic case is a module-level constant read
inside a kernel (`LOG2E = 1.4427` at the top of a notebook): the interpreter just reads the
global; the compiler refuses any global that is not a `tl.constexpr`. A student would pass every
CPU check and meet the error on their first GPU.

So on the CPU tier the guard hands each kernel the student launches (with the arguments of that
launch) to `frontend_error`, which runs the compiler's front end (Python AST -> Triton IR, where
those errors are raised) for an sm_80 target, without ptxas or a GPU: a few tens of milliseconds
per kernel, once per kernel and signature. A compile error comes back as a sentence naming the
kernel and the line.
"""
from __future__ import annotations

import contextlib
import inspect
import re
import sys
import types
import warnings

import torch

_TYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64",
          torch.int8: "i8", torch.int16: "i16", torch.int32: "i32", torch.int64: "i64", torch.uint8: "u8",
          torch.bool: "i1"}
TARGET = ("cuda", 80, 32)       # an A100: bf16, the common denominator of the course's GPUs
_done = {}                      # (kernel, its globals, signature) -> error or None
_jits = {}                      # kernel -> (ids of the globals it names, its JITFunction copy)


def _arg_type(value):
    if isinstance(value, torch.Tensor):
        return "*" + _TYPES.get(value.dtype, "fp32")
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -2**31 <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    return None                 # None, a dtype, a string...: a constexpr


def _jit_copy(python_fn, seen):
    """A JITFunction of `python_fn` whose globals see the compiled (not interpreted) versions of the
    @triton.jit helpers it calls: under TRITON_INTERPRET=1, @triton.jit made InterpretedFunctions."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction
    if python_fn in seen:
        return seen[python_fn]
    namespace = dict(python_fn.__globals__)
    clone = types.FunctionType(python_fn.__code__, namespace, python_fn.__name__, python_fn.__defaults__,
                               python_fn.__closure__)
    clone.__module__, clone.__qualname__, clone.__doc__ = python_fn.__module__, python_fn.__qualname__, \
        python_fn.__doc__
    clone.__wrapped__ = python_fn   # inspect.getsource follows it to the cell or file
    seen[python_fn] = jit = JITFunction(clone)
    for name, value in python_fn.__globals__.items():
        if isinstance(value, InterpretedFunction):
            namespace[name] = _jit_copy(value.fn, seen)
    return jit


def _language_objects():
    """What the interpreter patches in triton.language to run a kernel body as numpy (builtins,
    tensor operators, dtype.to_ir, range, reduce...). A device-function call patches them and never
    puts them back, so after the first interpreted launch the compiler would see numpy semantics."""
    import triton.language as tl
    objs = [tl, tl.core, tl.math, tl.tensor, tl.dtype, getattr(tl, "condition", None),
            getattr(tl.core, "tensor_descriptor_base", None)]
    return [o for o in objs if o is not None]


def _is_clean():
    import triton.language as tl
    return getattr(tl.dtype.to_ir, "__module__", "") == "triton.language.core"


# triton.language as it is before any kernel is interpreted (autograder is imported first)
_CLEAN = [(o, dict(vars(o))) for o in _language_objects()] if _is_clean() else None


def _swap(obj, want):
    """Make obj's own attributes `want`; return what they were."""
    now = dict(vars(obj))
    for name in now.keys() | want.keys():
        if now.get(name, _CLEAN) is not want.get(name, _CLEAN):
            if name in want:
                setattr(obj, name, want[name])
            else:
                delattr(obj, name)
    return now


@contextlib.contextmanager
def _clean_language():
    """triton.language as the compiler expects it, while it runs: the interpreter's patches undone,
    and its own @jit functions (tl.cdiv, the combine functions of tl.sum...), which TRITON_INTERPRET
    made InterpretedFunctions, swapped for JITFunctions of the same code."""
    from triton.runtime.interpreter import InterpretedFunction
    saved = [(obj, _swap(obj, clean)) for obj, clean in _CLEAN]
    seen, swapped = {}, []
    for name, module in list(sys.modules.items()):
        if name.startswith("triton.language") and module is not None:
            for attr, value in list(vars(module).items()):
                if isinstance(value, InterpretedFunction):
                    swapped.append((module, attr, value))
                    setattr(module, attr, _jit_copy(value.fn, seen))
    try:
        yield
    finally:
        for module, attr, value in swapped:
            setattr(module, attr, value)
        for obj, now in saved:
            _swap(obj, now)


def _signature(jit, args, kwargs):
    bound = inspect.signature(jit.fn).bind_partial(*args, **{k: v for k, v in kwargs.items() if k in jit.arg_names})
    signature, constexprs = {}, {}
    for param in jit.params:
        name = param.name
        if name not in bound.arguments:
            if param.default is inspect.Parameter.empty:
                return None, None
            value = param.default
        else:
            value = bound.arguments[name]
        kind = None if param.is_constexpr else _arg_type(value)
        if kind is None:
            signature[name] = "constexpr"
            constexprs[name] = getattr(value, "value", value)
        else:
            signature[name] = kind
    return signature, constexprs


def frontend_error(kernel, args, kwargs) -> str | None:
    """Compile `kernel` (launched with `args`, `kwargs`) to Triton IR for a GPU; a sentence for the
    student when the compiler refuses it, None when it compiles (or this Triton cannot be asked)."""
    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler.compiler import ASTSource, make_backend
        from triton.compiler.errors import CompilationError
        from triton._C.libtriton import ir
    except ImportError:
        return None
    python_fn = getattr(kernel, "fn", None)
    if not callable(python_fn) or _CLEAN is None:
        return None
    # the copy costs ~50 ms for a kernel with helpers: made once per kernel, again only when a global it
    # names (a helper, a constant) was redefined
    deps = tuple(id(python_fn.__globals__.get(name)) for name in python_fn.__code__.co_names)
    try:
        if _jits.get(python_fn, (None,))[0] != deps:
            _jits[python_fn] = (deps, _jit_copy(python_fn, {}))
        jit = _jits[python_fn][1]
        signature, constexprs = _signature(jit, args, kwargs)
    except Exception:   # noqa: BLE001 - an argument we cannot type: not the student's error
        return None
    if signature is None:
        return None
    key = (python_fn, deps, tuple(signature.items()), tuple((k, repr(v)) for k, v in constexprs.items()))
    if key not in _done:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # Triton's notes on its own defaults are not the student's
            _done[key] = _compile(jit, signature, constexprs, kwargs, GPUTarget, ASTSource, make_backend,
                                  CompilationError, ir)
    return _done[key]


def _compile(jit, signature, constexprs, kwargs, GPUTarget, ASTSource, make_backend, CompilationError, ir):
    try:
        target = GPUTarget(*TARGET)
        backend = make_backend(target)
        options = backend.parse_options({k: kwargs[k] for k in ("num_warps", "num_stages") if k in kwargs})
        context = ir.context()
        ir.load_dialects(context)
        backend.load_dialects(context)
        src = ASTSource(fn=jit, signature=signature, constexprs=constexprs)
        codegen_fns = backend.get_codegen_implementation(options)
        module_map = backend.get_module_map()
    except Exception:   # noqa: BLE001 - this Triton's internals differ: skip the check, never fail a student
        return None
    try:
        with _clean_language():
            src.make_ir(target, options, codegen_fns, module_map, context)
    except CompilationError as exc:
        return _explain(jit, exc)
    except Exception:   # noqa: BLE001 - anything else is the compiler's business, not a verdict
        return None
    return None


def _explain(jit, exc):
    """One sentence: the kernel, its line in the cell or file, the statement, the compiler's words."""
    name, node = jit.fn.__name__, getattr(exc, "node", None)
    where = ""
    if getattr(node, "lineno", None) is not None:
        try:
            lines, first = inspect.getsourcelines(jit.fn)
            at_def = next(i for i, text in enumerate(lines) if text.lstrip().startswith("def "))
            where = f", line {first + at_def + node.lineno - 1}"
        except (OSError, TypeError, StopIteration):
            where = f", line {node.lineno} of the kernel"
        src = (getattr(exc, "src", None) or "").splitlines()
        if 0 < node.lineno <= len(src):
            where += f" (`{src[node.lineno - 1].strip()}`)"
    words = str(getattr(exc, "error_message", None) or str(exc).strip().splitlines()[-1])
    words = re.sub(r'^\w+\("(.*)"\)$', r"\1", words.strip(), flags=re.S)     # NameError("...") -> ...
    words = re.split(r"(?<=[.!?])\s", words, maxsplit=1)[0][:300].rstrip(".")
    hint = ""
    if "global variable" in words:
        hint = (" Inside a kernel a module-level constant must be a tl.constexpr (NAME = tl.constexpr(1.44)) or "
                "an argument: the interpreter reads any global, the compiler does not.")
    return (f"your kernel {name} does not compile for a GPU{where}: {words}. The CPU tier's interpreter ran it, "
            f"but Triton's compiler refuses it, so it would fail on every GPU.{hint}")
