"""autograder.check: honest grading and messages a student can act on.

Each test plants one mistake around a correct reference kernel and asserts the words of the
failure message, so a message that stops naming the mistake fails here."""
import importlib
import math

import pytest
import torch
import torch.nn.functional as F

import autograder  # noqa: I001 - first: it picks the tier (TRITON_INTERPRET) before any kernel is defined
import triton
from autograder.watch.guard import Guard


@pytest.fixture(scope="module")
def sol():
    return importlib.import_module("solutions.p7_attention_sinks").flash_attention_forward


def fails(problem, fn, *words, family=None, exc=AssertionError):
    with pytest.raises(exc) as info:
        autograder.check(problem, fn, family=family, verbose=False)
    msg = str(info.value)
    for w in words:
        assert w in msg, f"{w!r} not in message:\n{msg}"
    return msg


def test_reference_solution_passes_and_reports(sol):
    summary = autograder.check(7, sol, family="sinks", verbose=False)
    assert summary.passed == len([c for c in autograder.visible_cases(7) if c.family == "sinks"])
    assert all(r.launches >= 1 for r in summary.results)


@pytest.mark.parametrize("cheat,words", [
    (lambda q, k, v, is_causal=False, **kw: F.scaled_dot_product_attention(
        q, k, v, is_causal=is_causal, enable_gqa=q.shape[1] != k.shape[1]), "PyTorch's attention"),
    (lambda q, k, v, **kw: autograder.naive_attention(q, k, v, **kw), "autograder's reference"),
    (lambda q, k, v, **kw: torch.softmax((q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1]), -1).to(q.dtype) @ v,
     "matrix product"),
    (lambda q, k, v, **kw: (q * 0 + v.mean()).to(q.dtype), "launched no Triton kernel"),
])
def test_cheats_are_refused(cheat, words):
    msg = fails(3, cheat, "cheating detected", words)
    assert "[basic]" in msg


def test_a_kernel_launch_does_not_excuse_pytorch_attention(sol):
    def cheat(q, k, v, **kw):
        sol(q, k, v, **kw)
        return F.scaled_dot_product_attention(q, k, v, **kw)
    fails(4, cheat, "cheating detected", "scaled_dot_product_attention")


def test_problem1_refuses_full_score_matrices():
    def full_scores(q, k, v, is_causal=False, **kw):
        s = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
        if is_causal:
            s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).triu(1), -math.inf)
        lse = torch.logsumexp(s, -1)
        return (torch.exp(s - lse[..., None]) @ v.float()).to(q.dtype), lse
    fails(1, full_scores, "cheating detected", "score matrix")


@triton.jit
def _noop_kernel(X):
    pass


def _broadcast_attention(q, k, v, is_causal=False, **kw):
    """Attention without a matmul or a softmax op: a broadcast multiply-sum, exp, sum, divide."""
    _noop_kernel[(1,)](q)
    s = (q.float()[:, :, :, None, :] * k.float()[:, :, None, :, :]).sum(-1) / math.sqrt(q.shape[-1])
    if is_causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), -math.inf)
    e = torch.exp(s - s.amax(-1, keepdim=True))
    p = e / e.sum(-1, keepdim=True)
    return (p[..., None] * v.float()[:, :, None, :, :]).sum(-2).to(q.dtype)


@pytest.mark.parametrize("problem", [3, 4])
@pytest.mark.parametrize("family", ["basic", "ragged", "layout", "headdim"])
def test_elementwise_score_matrix_is_refused(problem, family):
    msg = fails(problem, _broadcast_attention, "cheating detected", "materialised", "the full score matrix",
                "process keys tile by tile", family=family)
    assert "launched no Triton kernel" not in msg


def test_elementwise_scores_without_the_broadcast_product_are_refused():
    """One [B, H, N, N] sum per head-dim column: no tensor bigger than N x N, still the score matrix."""
    def per_column(q, k, v, is_causal=False, **kw):
        _noop_kernel[(1,)](q)
        s = sum(q.float()[..., :, None, d] * k.float()[..., None, :, d] for d in range(q.shape[-1]))
        return (torch.exp(s) / torch.exp(s).sum(-1, keepdim=True) @ v.float()).to(q.dtype)
    fails(3, per_column, "materialised a [2, 2, 77, 77] tensor", family="ragged")


def _guarded(triton_problem, q, k, v, ops):
    with Guard(triton_problem=triton_problem, seq_len=q.shape[2], poison=False, inputs=(q, k, v)) as g:
        for op in ops:
            op()
    return g.forbidden


@pytest.mark.parametrize("N", [1, 5, 40, 77, 130])
@pytest.mark.parametrize("D", [16, 128])
def test_guard_allows_what_honest_solutions_allocate(N, D):
    q, k, v = autograder.Case("g", 2, 4, 2, N, D).make_inputs()
    honest = [lambda: torch.empty_like(q),                                   # the output
              lambda: torch.empty(2, N, 4, D).transpose(1, 2),               # the output, [B, N, H, D]
              lambda: torch.empty(2, 4, N, dtype=torch.float32),             # lse, m_i, l_i
              lambda: F.pad(q, (0, 0, 0, -N % 128)),                         # padded to whole tiles
              lambda: k.repeat_interleave(2, dim=1).contiguous(),            # GQA: K/V per query head
              lambda: q.float(), lambda: q.contiguous(), lambda: torch.arange(N)]
    assert _guarded(True, q, k, v, honest) == []


@pytest.mark.parametrize("N", [77, 130])
def test_guard_allows_problem1_tiles(N):
    q, k, v = autograder.Case("g", 1, 2, 2, N, 16).make_inputs()
    qt, kt = q[:, :, :64].float(), k[:, :, :64].float()
    tile = [lambda: qt @ kt.transpose(-1, -2),                                  # [B, H, 64, 64] scores
            lambda: torch.exp(qt @ kt.transpose(-1, -2)),
            lambda: torch.arange(64)[:, None] <= torch.arange(64)[None, :],     # the tile's mask
            lambda: F.pad(q, (0, 0, 0, -N % 64))]
    assert _guarded(False, q, k, v, tile) == []


@pytest.mark.parametrize("triton_problem", [True, False])
@pytest.mark.parametrize("make", [
    lambda q, k: q[:, :, :, None, :] * k[:, :, None, :, :],                    # [B, H, N, N, D]
    lambda q, k: torch.zeros(q.shape[0], q.shape[1], q.shape[2], q.shape[2]),   # [B, H, N, N], any op
    lambda q, k: (q[:, :, :, None, 0] - k[:, :, None, :, 0]).exp(),             # [B, H, N, N] elementwise
    lambda q, k: torch.ones(q.shape[2], q.shape[2], dtype=torch.bool).repeat(q.shape[0] * q.shape[1], 1, 1),
])
def test_guard_refuses_score_sized_tensors(triton_problem, make):
    q, k, v = autograder.Case("g", 1, 2, 2, 130, 16, dtype=torch.float32).make_inputs()
    forbidden = _guarded(triton_problem, q, k, v, [lambda: make(q, k)])
    assert forbidden and forbidden[0][1].endswith("the full score matrix"), forbidden


def test_extreme_logit_rows():
    """low_score rows score far below exp's range against every key: the honest reference solution
    passes, a running max started at 0 gives 0/0 there and the hint says why."""
    case = autograder.Case("basic", 1, 2, 2, 40, 16, seed=3, low_score=400.0)
    q, k, _ = case.make_inputs()
    best = ((q.double() @ k.double().transpose(-1, -2)) / 4).amax(-1)
    assert (best[..., 1::3] < -390).all() and (best[..., 0::3] > -50).all()
    sol1 = importlib.import_module("solutions.p1_pytorch_flash_attention").flash_attention_forward
    autograder.check(1, sol1, cases=[case], verbose=False)

    def m_i_zero(q, k, v, **kw):
        o, lse = sol1(q, k, v, **kw)
        o[:, :, 1::3] = float("nan")               # what exp(s - 0) = 0 for every key gives: 0 / 0
        return o, lse
    with pytest.raises(AssertionError, match="m_i must start at -inf"):
        autograder.check(1, m_i_zero, cases=[case], verbose=False)
    with pytest.raises(ValueError, match="low_score"):
        autograder.Case("basic", 1, 1, 1, 8, 16, low_score=1e6)


def test_stub_reports_not_implemented():
    def stub(q, k, v, **kw):
        raise NotImplementedError()
    msg = fails(3, stub, "not implemented yet", "YOUR CODE HERE", exc=autograder.NotImplementedYet)
    assert "Traceback" not in msg


def test_compiled_stub_reports_not_implemented():
    def compile_error(q, k, v, **kw):    # what a GPU compile of `raise NotImplementedError()` looks like
        raise RuntimeError("at 12:8: raise NotImplementedError()\nUnsupported language construct")
    fails(3, compile_error, "not implemented yet", exc=autograder.NotImplementedYet)


def test_rows_never_written(sol):
    def first_tiles_only(q, k, v, **kw):
        n = q.shape[2] // 32 * 32
        o = torch.empty_like(q)
        if n:
            o[:, :, :n] = sol(q[:, :, :n], k[:, :, :n], v[:, :, :n], **kw)
        return o
    fails(4, first_tiles_only, "never written", "last rows", "cdiv(N, BLOCK_M)", family="ragged")


def test_modified_inputs(sol):
    def clobber(q, k, v, **kw):
        o = sol(q, k, v, **kw)
        k.zero_()
        return o
    fails(3, clobber, "modified its input k")


@pytest.mark.parametrize("bad,words", [
    (lambda o: o.float(), "output dtype torch.float32"),
    (lambda o: o[:, :, :-1], "output shape"),
    (lambda o: None, "returned None"),
])
def test_output_contract(sol, bad, words):
    exc = autograder.NotImplementedYet if "None" in words else AssertionError
    fails(3, lambda q, k, v, **kw: bad(sol(q, k, v, **kw)), words, exc=exc)


def test_diagnoses_name_the_mistake(sol):
    fails(4, lambda q, k, v, **kw: sol(q, k, v), "NON-causal")
    fails(6, lambda q, k, v, **kw: sol(q, k, v, is_causal=True), "sliding window is not applied", family="window")
    fails(7, lambda q, k, v, sink_size=None, **kw: sol(q, k, v, **kw), "ignores the sinks", family="sinks")
    fails(3, lambda q, k, v, **kw: sol(q * math.sqrt(q.shape[-1]), k, v, **kw), "WITHOUT the 1/sqrt(D) scale",
          family="basic")


def test_gqa_wrong_head_mapping(sol):
    def modulo(q, k, v, **kw):
        idx = torch.arange(q.shape[1]) % k.shape[1]
        return sol(q, k[:, idx], v[:, idx], **kw)
    fails(5, modulo, "h % Hkv", family="gqa")


def test_batch_offset_ignored(sol):
    def first_batch(q, k, v, **kw):
        return sol(q, k[:1].expand_as(k), v[:1].expand_as(v), **kw)
    fails(4, first_batch, "only batches after the first", family="ragged")


def test_bad_arguments():
    with pytest.raises(ValueError, match="problem must be one of"):
        autograder.check(10, lambda *a: None)
    with pytest.raises(TypeError, match="fn must be your function"):
        autograder.check(3, "flash_attention_forward")
    with pytest.raises(ValueError, match="no cases in family"):
        autograder.check(3, lambda *a: None, family="sinks")


def _every_third_row_off(o):
    o = o.clone()
    o[:, :, ::3] += 0.5          # no key or tile of keys explains such rows
    return o


def test_strided_case_blames_strides_only_when_contiguous_copies_pass(sol):
    layout = autograder.Case("layout", 1, 2, 2, 40, 16, layout="bnhd", seed=7, is_causal=True)

    def wrong_only_when_strided(q, k, v, **kw):
        o = sol(q, k, v, **kw)
        return o if k.is_contiguous() else _every_third_row_off(o)

    def wrong_always(q, k, v, **kw):
        return _every_third_row_off(sol(q, k, v, **kw))

    with pytest.raises(AssertionError) as info:
        autograder.check_case(4, wrong_only_when_strided, layout)
    assert "contiguous copies pass" in str(info.value) and "stride_kn" in str(info.value)
    with pytest.raises(AssertionError) as info:
        autograder.check_case(4, wrong_always, layout)
    msg = str(info.value)
    assert "wrong for contiguous copies of these inputs too" in msg and "loop bounds" in msg
    assert "stride_kn" not in msg


def test_problem1_hints_speak_pytorch():
    import solutions.p1_pytorch_flash_attention as p1

    def no_scale(q, k, v, **kw):
        return p1.flash_attention_forward(q * math.sqrt(q.shape[-1]), k, v, **kw)
    msg = fails(1, no_scale, "WITHOUT the 1/sqrt(D) scale", "sm_scale", family="basic")
    assert not any(w in msg for w in ("exp2", "qk_scale", "tl.", "m_ij", "stride")), msg


def test_backward_problems_point_to_check_backward(sol):
    with pytest.raises(ValueError, match="check_backward"):
        autograder.check(8, sol)


def test_dkdv_mask_diagnoses_replay_the_kernels_pairs():
    """Problem 9's dK/dV mask diagnoses replay the kernel's phases (the reference's query ranges) with a
    planted mask: with the right masks the replay must sum exactly the visible pairs, or each of those
    diagnoses would describe some other kernel."""
    from autograder.checks.backward import _dkdv_kernel_pairs, _visible
    from autograder.spec.cases import backward_cases
    for case in (c for c in backward_cases(9, "cpu") if c.is_causal):
        N = case.N
        visible = _visible(case, N, "cpu")
        sinks = (torch.arange(N)[None, :] < (case.sink_size or 0)).expand(N, N)
        assert torch.equal(_dkdv_kernel_pairs(case, N, "cpu", visible, sinks), visible), case


def test_a_dot_of_mixed_dtypes_is_explained():
    """A float32 tile fed to tl.dot next to a float16 one (P or dS not cast): the interpreter's error
    names the dtypes; the check adds what to do about it."""
    import triton.language as tl

    @triton.jit
    def _mixed(X_ptr, Y_ptr):
        offs = tl.arange(0, 16)
        x = tl.load(X_ptr + offs[:, None] * 16 + offs[None, :])
        tl.store(Y_ptr + offs[:, None] * 16 + offs[None, :], tl.dot(x.to(tl.float32), x))

    def fn(q, k, v, is_causal=False, window_size=None, sink_size=None):
        out = torch.empty(16, 16, dtype=torch.float32, device=q.device)
        _mixed[(1,)](torch.ones(16, 16, dtype=torch.float16, device=q.device), out)
        return q

    case = autograder.Case("basic", 1, 1, 1, 16, 16, seed=0)
    with pytest.raises(AssertionError) as info:
        autograder.check(3, fn, cases=[case], verbose=False)
    assert "same dtype" in str(info.value) and ".to(<the other operand's dtype>)" in str(info.value)
