"""autograder.check: honest grading and messages a student can act on.

Each test plants one mistake around a correct reference kernel and asserts the words of the
failure message, so a message that stops naming the mistake fails here."""
import importlib
import math

import pytest
import torch
import torch.nn.functional as F

import autograder


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
            s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), -math.inf)
        lse = torch.logsumexp(s, -1)
        return (torch.exp(s - lse[..., None]) @ v.float()).to(q.dtype), lse
    fails(1, full_scores, "cheating detected", "score matrix")


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


def test_backward_problems_point_to_check_backward(sol):
    with pytest.raises(ValueError, match="check_backward"):
        autograder.check(8, sol)
