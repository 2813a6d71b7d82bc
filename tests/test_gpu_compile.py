"""Errors only a GPU's compiler raises, caught on the CPU tier.

Triton's interpreter runs a kernel body as Python, so code that the compiler refuses (a module-level
float read inside a kernel, the classic `LOG2E`) passes every CPU check. The guard compiles each
launched kernel's front end for a GPU target (autograder/watch/gpu_compile.py); these tests plant such a
kernel and check that the failure names the kernel and the line. That correct kernels are not
refused is every reference-solution test's business (they all run under the guard)."""
import sys
from pathlib import Path

import pytest
import torch

import autograder  # noqa: I001 - first: it picks the tier (TRITON_INTERPRET) before any kernel is defined
import triton
import triton.language as tl
from autograder.watch import gpu_compile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mutants  # noqa: E402

pytestmark = pytest.mark.skipif(autograder.TIER != "cpu", reason="the GPU tier compiles every kernel for real")

SCALE = 2.0                         # a plain float: readable by the interpreter only
SCALE_C = tl.constexpr(2.0)         # a constexpr: readable by both


@triton.jit
def _times_global(X, Y, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    x = tl.load(X + offs, mask=offs < n)
    tl.store(Y + offs, x * SCALE, mask=offs < n)


@triton.jit
def _times_constexpr(X, Y, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    x = tl.load(X + offs, mask=offs < n)
    tl.store(Y + offs, x * SCALE_C + tl.cdiv(n, BLOCK) * 0, mask=offs < n)


def test_global_read_in_a_kernel_is_named_with_its_line():
    x = torch.randn(40)
    y = torch.empty_like(x)
    _times_global[(1,)](x, y, 40, BLOCK=64)        # the interpreter runs it happily
    assert torch.equal(y, x * 2)
    msg = gpu_compile.frontend_error(_times_global, (x, y, 40), {"BLOCK": 64})
    line = _times_global.fn.__code__.co_firstlineno + 4       # decorator, def, offs, x, then the store
    assert msg is not None and "_times_global does not compile for a GPU" in msg, msg
    assert f"line {line}" in msg and "SCALE" in msg and "tl.constexpr" in msg, msg
    # after an interpreted launch (which patches triton.language) a correct kernel still compiles
    _times_constexpr[(1,)](x, y, 40, BLOCK=64)
    assert gpu_compile.frontend_error(_times_constexpr, (x, y, 40), {"BLOCK": 64}) is None


def test_fixing_the_constant_clears_the_verdict(monkeypatch):
    """A student who makes the constant a tl.constexpr and runs the cell again is not told the old error
    (the verdict is cached per kernel and the globals it names)."""
    x = torch.randn(8)
    y = torch.empty_like(x)
    assert gpu_compile.frontend_error(_times_global, (x, y, 8), {"BLOCK": 16}) is not None
    monkeypatch.setitem(_times_global.fn.__globals__, "SCALE", tl.constexpr(2.0))
    assert gpu_compile.frontend_error(_times_global, (x, y, 8), {"BLOCK": 16}) is None


def test_a_check_fails_on_a_kernel_that_only_the_interpreter_runs():
    mutant = next(m for m in mutants.MUTANTS if m.name == "p3_global_in_kernel")
    module = mutants.build(mutant)
    with pytest.raises(AssertionError) as info:
        autograder.check(3, module.flash_attention_forward, family="basic", verbose=False)
    msg = str(info.value)
    for words in ("your kernel _flash_attention_fwd does not compile for a GPU", "line ",
                  "`qk_scale = qk_scale * LOG2E`", "Cannot access global variable LOG2E"):
        assert words in msg, msg
