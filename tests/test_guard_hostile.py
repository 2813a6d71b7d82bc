"""The guard against hostile student code: switching it off, replacing it, or doing the attention's
work in PyTorch elementwise ops one key (or one block of keys) at a time. Each trick is refused
with a message that names it; honest wrappers, chatty ones included, still pass."""
import importlib
import math

import pytest
import torch
import torch.nn.functional as F

import autograder  # noqa: I001 - first: it picks the tier (TRITON_INTERPRET) before any kernel is defined
import triton
import autograder.watch.guard as guard_module
from autograder import triton_basics as tb
from autograder.watch.guard import Guard
from torch.utils._python_dispatch import _disable_current_modes


@triton.jit
def _noop_kernel(X):
    pass


def _sdpa(q, k, v, is_causal=False, **kw):
    return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, enable_gqa=q.shape[1] != k.shape[1])


def fails(problem, fn, *words, family="basic"):
    with pytest.raises(AssertionError) as info:
        autograder.check(problem, fn, family=family, verbose=False)
    msg = str(info.value)
    for w in ("cheating detected", *words):
        assert w in msg, f"{w!r} not in message:\n{msg}"
    return msg


# -- (A) turning the guard off ----------------------------------------------------------------------

def _via_disable_current_modes(q, k, v, **kw):
    _noop_kernel[(1,)](q)
    with _disable_current_modes():
        return _sdpa(q, k, v, **kw)


def _via_pop_by_hand(q, k, v, **kw):
    _noop_kernel[(1,)](q)
    mode = torch._C._pop_torch_dispatch_stack(None)
    try:
        return _sdpa(q, k, v, **kw)
    finally:
        torch._C._push_on_torch_dispatch_stack(mode)


def _via_disable_torch_dispatch(q, k, v, **kw):
    _noop_kernel[(1,)](q)
    with torch._C._DisableTorchDispatch():
        return _sdpa(q, k, v, **kw)


def _via_excluded_key(q, k, v, **kw):
    _noop_kernel[(1,)](q)
    with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.Python)):
        return _sdpa(q, k, v, **kw)


def _via_no_record_function(q, k, v, **kw):
    _noop_kernel[(1,)](q)
    torch._C._autograd._enable_record_function(False)
    try:
        with _disable_current_modes():
            return _sdpa(q, k, v, **kw)
    finally:
        torch._C._autograd._enable_record_function(True)


@pytest.mark.parametrize("cheat,words", [
    (_via_disable_current_modes, "torch.utils._python_dispatch._disable_current_modes"),
    (_via_pop_by_hand, "torch._C._pop_torch_dispatch_stack"),
    (_via_disable_torch_dispatch, "where the guard's dispatch mode could not see it"),
    (_via_excluded_key, "could not see it"),
    (_via_no_record_function, "_enable_record_function"),
])
def test_switching_the_guard_off_is_refused(cheat, words):
    fails(7, cheat, "guard was turned off or replaced", words)


def test_replacing_the_guard_is_refused():
    def replace_dispatch(q, k, v, **kw):
        _noop_kernel[(1,)](q)
        Guard.__torch_dispatch__ = lambda self, func, types, args=(), kwargs=None: func(*args, **(kwargs or {}))
        return _sdpa(q, k, v, **kw)
    fails(4, replace_dispatch, "Guard.__torch_dispatch__ was replaced")
    assert Guard.__torch_dispatch__ is guard_module._FROZEN[Guard]["__torch_dispatch__"]     # put back

    def replace_run(q, k, v, **kw):
        from triton.runtime.interpreter import InterpretedFunction
        wrapped = InterpretedFunction.run
        InterpretedFunction.run = lambda self, *a, **kw: wrapped(self, *a, **kw)
        _noop_kernel[(1,)](q)
        return _sdpa(q, k, v, **kw)
    fails(4, replace_run, "InterpretedFunction.run was replaced")

    def replace_cached_disable(q, k, v, **kw):
        # torch's wrapper of a mode's __torch_dispatch__ calls what it finds in the raw function's
        # __dynamo_disable attribute: a pass-through there would be a guard that sees nothing
        raw = Guard.__dict__["__torch_dispatch__"].__wrapped__
        setattr(raw, "__dynamo_disable", lambda self, func, types, args=(), kwargs=None: func(*args, **(kwargs or {})))
        _noop_kernel[(1,)](q)
        return _sdpa(q, k, v, **kw)
    if hasattr(Guard.__dict__["__torch_dispatch__"], "__wrapped__"):     # torch wraps it (2.13)
        fails(4, replace_cached_disable, "__dynamo_disable was replaced")
        assert getattr(Guard.__dict__["__torch_dispatch__"].__wrapped__, "__dynamo_disable") \
            in guard_module._DISPATCH_DISABLES                                                      # put back

    def clear_flag(q, k, v, **kw):
        _noop_kernel[(1,)](q)
        autograder.reference._inside_check = False
        return autograder.naive_attention(q, k, v, **kw)
    fails(4, clear_flag, "_inside_check was cleared")


def test_strict_guard_is_not_switched_off_either():
    x = torch.randn(64, device=autograder.DEVICE)
    with tb.StrictGuard() as g:
        with torch._C._DisableTorchDispatch():
            x + 1
    assert "aten.add where the guard's dispatch mode could not see it" in g.cheat_message()
    with tb.StrictGuard() as g:
        with _disable_current_modes():
            x + 1
    assert "_disable_current_modes" in g.cheat_message()


# -- (B) the attention's work in PyTorch, never an N x N tensor ------------------------------------

def _online_softmax(block):
    """Online softmax over `block` keys at a time with broadcast products (no matmul, no softmax op),
    plus a launch that does nothing."""
    def attention(q, k, v, is_causal=False, **kw):
        _noop_kernel[(1,)](q)
        B, H, N, D = q.shape
        qf, kf, vf = q.float(), k.float(), v.float()
        dev = q.device
        m = torch.full((B, H, N), -math.inf, device=dev)
        l, acc, rows = torch.zeros(B, H, N, device=dev), torch.zeros(B, H, N, D, device=dev), torch.arange(N, device=dev)
        for j in range(0, N, block):
            kb, vb = kf[:, :, j:j + block], vf[:, :, j:j + block]
            s = (qf[:, :, :, None, :] * kb[:, :, None, :, :]).sum(-1) / math.sqrt(D)
            if is_causal:
                s = s.masked_fill(rows[:, None] < torch.arange(j, j + kb.shape[2], device=dev)[None, :], -math.inf)
            m_new = torch.maximum(m, s.amax(-1))
            alpha, p = torch.exp(m - m_new), torch.exp(s - m_new[..., None])
            l = l * alpha + p.sum(-1)
            acc = acc * alpha[..., None] + (p[..., None] * vb[:, :, None, :, :]).sum(-2)
            m = m_new
        return (acc / l[..., None]).to(q.dtype)
    return attention


@pytest.mark.parametrize("block", [1, 16])
def test_online_softmax_in_pytorch_is_refused(block):
    if block == 1 or autograder.TIER == "cpu":
        fails(4, _online_softmax(block), "computed attention with PyTorch operations", "of the attention's work")
    else:   # the GPU's N=512 makes a 16-key block's product 16 x the inputs: the size rule refuses it first
        fails(4, _online_softmax(block), "the full score matrix")


# -- honest wrappers stay under the budget ---------------------------------------------------------

@pytest.fixture(scope="module")
def p4():
    return importlib.import_module("solutions.p4_causal_two_phase").flash_attention_forward


def test_chatty_honest_wrapper_passes(p4):
    """Contiguous copies, casts, padding and a cast back around the reference kernel."""
    def chatty(q, k, v, **kw):
        N = q.shape[2]
        q2, k2, v2 = (F.pad(t.contiguous().float(), (0, 0, 0, -N % 128)) for t in (q, k, v))
        out = p4(q2.to(q.dtype), k2.to(q.dtype), v2.to(q.dtype), **kw)
        return out[:, :, :N].contiguous().clone().to(q.dtype)
    autograder.check(4, chatty, verbose=False)


@pytest.mark.parametrize("shape", [(1, 2, 2, 64, 16), (2, 2, 2, 77, 16), (3, 1, 1, 5, 16), (2, 1, 1, 1, 32),
                                   (1, 4, 2, 45, 16), (2, 8, 2, 20, 16)])
def test_backward_preparation_is_under_budget(shape):
    """What a backward wrapper may do in PyTorch: delta = (o * do).sum(-1), float32 accumulators,
    GQA reductions of dK / dV, casts back."""
    B, Hq, Hkv, N, D = shape
    q, k, v = autograder.Case("g", B, Hq, Hkv, N, D).make_inputs()
    o, do = torch.randn_like(q), torch.randn_like(q)
    with Guard(True, N, poison=False, inputs=(q, k, v), mask={"is_causal": True}, backward=True) as g:
        delta = (o.float() * do.float()).sum(-1)
        dq = torch.zeros_like(q, dtype=torch.float32)
        dk = torch.zeros(B, Hq, N, D, device=q.device).view(B, Hkv, Hq // Hkv, N, D).sum(2)
        dv = torch.zeros(B, Hq, N, D, device=q.device).view(B, Hkv, Hq // Hkv, N, D).sum(2)
        lse = torch.zeros(B, Hq, N, device=q.device) * 1.4426950408889634
        for t in (q, k, v, o, do):
            t.contiguous().float()
        dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), delta + lse
    assert g.tampered == [] and g.forbidden == []
    print(f"{shape}: {g.elements / g.budget:.2f} of the budget")
    assert g.elements <= g.budget / 2


def test_snapshot_keeps_the_audit():
    q, k, v = autograder.Case("g", 1, 2, 2, 64, 16).make_inputs()
    with Guard(True, 64, inputs=(q, k, v), mask={"is_causal": True}) as g:
        _online_softmax(1)(q, k, v, is_causal=True)
        with _disable_current_modes():
            pass
    replayed = Guard(True, 64, inputs=(q, k, v), mask={"is_causal": True})
    replayed.restore(g.snapshot())
    assert replayed.cheat_message() == g.cheat_message() and "turned off" in g.cheat_message()
    assert (replayed.elements, replayed.budget, replayed.work) == (g.elements, g.budget, g.work)


# -- (D) a backward that is not the student's Triton kernels --------------------------------------

def _numpy_backward(launch_something):
    """A Triton forward (the reference P8 kernel) and a backward in numpy on copies of the inputs:
    dense float64 math, right to the last bit, and no PyTorch op for either observer to see."""
    import numpy as np
    p8 = importlib.import_module("solutions.p8_backward_gqa")

    class NumpyBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, is_causal):
            with torch.no_grad():
                o = p8.FlashAttention.apply(q, k, v, is_causal)
            ctx.save_for_backward(q, k, v)
            ctx.is_causal = is_causal
            return o

        @staticmethod
        def backward(ctx, do):
            if launch_something:
                _noop_kernel[(1,)](do)                  # a Triton launch, so 'no kernel in the backward' holds
            q, k, v = (np.asarray(t.detach().cpu(), dtype=np.float64) for t in ctx.saved_tensors)
            g = np.asarray(do.detach().cpu(), dtype=np.float64)
            G = q.shape[1] // k.shape[1]
            kk, vv = np.repeat(k, G, 1), np.repeat(v, G, 1)
            s = q @ kk.swapaxes(-1, -2) / math.sqrt(q.shape[-1])
            if ctx.is_causal:
                s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
            p = np.exp(s - s.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            dp = g @ vv.swapaxes(-1, -2)
            ds = p * (dp - (dp * p).sum(-1, keepdims=True)) / math.sqrt(q.shape[-1])
            dq, dk, dv = ds @ kk, ds.swapaxes(-1, -2) @ q, p.swapaxes(-1, -2) @ g
            B, Hkv, N, D = k.shape
            dk, dv = dk.reshape(B, Hkv, G, N, D).sum(2), dv.reshape(B, Hkv, G, N, D).sum(2)
            back = [torch.from_numpy(x).to(t.device, t.dtype) for x, t in zip((dq, dk, dv), ctx.saved_tensors)]
            return *back, None

    def fn(q, k, v, is_causal=False, window_size=None, sink_size=None):
        return NumpyBackward.apply(q, k, v, is_causal)
    return fn


def _no_kernel_backward():
    p8 = importlib.import_module("solutions.p8_backward_gqa")

    class Zeros(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, is_causal):
            with torch.no_grad():
                return p8.FlashAttention.apply(q, k, v, is_causal)

        @staticmethod
        def backward(ctx, do):
            return torch.zeros_like(do), None, None, None

    return lambda q, k, v, is_causal=False, **kw: Zeros.apply(q, k, v, is_causal)


@pytest.mark.parametrize("launch_something", [False, True])
def test_numpy_backward_is_refused(launch_something):
    """Problem 8 with a Triton forward and the gradients from numpy: refused as copying the inputs out,
    whether or not the backward also launches a Triton kernel for show."""
    with pytest.raises(AssertionError) as info:
        autograder.check_backward(8, _numpy_backward(launch_something), family="basic", verbose=False)
    msg = str(info.value)
    for w in ("cheating detected", "your backward copied tensor data out of PyTorch", "numpy"):
        assert w in msg, f"{w!r} not in message:\n{msg}"


def test_backward_without_a_kernel_is_refused():
    with pytest.raises(AssertionError) as info:
        autograder.check_backward(8, _no_kernel_backward(), family="basic", verbose=False)
    assert "your backward launched no Triton kernel (the forward did)" in str(info.value), str(info.value)


def test_the_reference_backward_exports_nothing():
    """The interpreter copies every argument to numpy inside a launch: none of that is counted."""
    p8 = importlib.import_module("solutions.p8_backward_gqa")
    case = autograder.Case("g", 1, 4, 2, 33, 16, is_causal=True)
    q, k, v = (t.requires_grad_() for t in case.make_inputs())
    with Guard(True, case.N, inputs=(q, k, v), mask=case.mask_kwargs(), backward=True) as g:
        out = p8.flash_attention_forward(q, k, v, is_causal=True)
        g.backward_phase()
        out.backward(torch.randn_like(out))
    assert g.exports == [] and g.backward_launches and g.cheat_message() is None, (g.exports, g.cheat_message())
