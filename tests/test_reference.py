"""The float64 reference: agrees with PyTorch's SDPA, GQA by head sharing, log-sum-exp, input checks."""
import math

import pytest
import torch
import torch.nn.functional as F

import autograder
from autograder.reference import naive_attention, reference_attention, validate_attention_inputs


def inputs(B=2, Hq=4, Hkv=2, N=33, D=16, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, Hq, N, D, generator=g, dtype=dtype), torch.randn(B, Hkv, N, D, generator=g, dtype=dtype),
            torch.randn(B, Hkv, N, D, generator=g, dtype=dtype))


@pytest.mark.parametrize("is_causal", [False, True])
def test_matches_sdpa_with_gqa(is_causal):
    q, k, v = inputs()
    want = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), is_causal=is_causal)
    assert torch.allclose(reference_attention(q, k, v, is_causal), want, atol=1e-12)


def test_query_head_h_reads_kv_head_h_div_group():
    q, k, v = inputs(Hq=4, Hkv=2)
    out = reference_attention(q, k, v)
    for h in range(4):
        alone = reference_attention(q[:, h:h + 1], k[:, h // 2:h // 2 + 1], v[:, h // 2:h // 2 + 1])
        assert torch.allclose(out[:, h:h + 1], alone)


def test_window_and_sinks_degenerate_cases():
    q, k, v = inputs(N=20)
    causal = reference_attention(q, k, v, True)
    assert torch.allclose(reference_attention(q, k, v, True, window_size=20), causal)
    assert torch.allclose(reference_attention(q, k, v, True, window_size=5, sink_size=0),
                          reference_attention(q, k, v, True, window_size=5))
    # W = 1 and no sinks: every query sees only itself
    assert torch.allclose(reference_attention(q, k, v, True, window_size=1), v.repeat_interleave(2, 1))


def test_lse_is_natural_log_sum_exp_of_scaled_scores():
    q, k, v = inputs(Hq=2, Hkv=2, N=9)
    _, lse = reference_attention(q, k, v, True, return_lse=True)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    s = s.masked_fill(torch.ones(9, 9, dtype=torch.bool).triu(1), -math.inf)
    assert torch.allclose(lse, torch.logsumexp(s, -1))


def test_low_precision_output_dtype():
    q, k, v = inputs(dtype=torch.float16)
    assert naive_attention(q, k, v).dtype == torch.float16
    assert reference_attention(q, k, v).dtype == torch.float64


@pytest.mark.parametrize("make,exc,words", [
    (lambda q, k, v: (q[0], k, v), ValueError, "4-D"),
    (lambda q, k, v: (q, k[..., :8], v[..., :8]), ValueError, "head_dim mismatch"),
    (lambda q, k, v: (q, k[:, :1].expand(2, 3, 33, 16), v[:, :1].expand(2, 3, 33, 16)), ValueError, "multiple of K/V heads"),
    (lambda q, k, v: (q, k[:, :, :30], v[:, :, :30]), ValueError, "sequence length mismatch"),
    (lambda q, k, v: (q, k, v[:1]), ValueError, "same shape"),
    (lambda q, k, v: (q.long(), k.long(), v.long()), TypeError, "dtype"),
    (lambda q, k, v: (q.half(), k, v), TypeError, "share one dtype"),
    (lambda q, k, v: (q.float(), k.float().to("meta"), v.float().to("meta")), ValueError, "one device"),
    (lambda q, k, v: (q.tolist(), k, v), TypeError, "torch.Tensor"),
])
def test_bad_inputs_say_what_to_fix(make, exc, words):
    q, k, v = make(*inputs(dtype=torch.float32))
    with pytest.raises(exc, match=words):
        validate_attention_inputs(q, k, v)


def test_public_api():
    if autograder.TIER == "cpu":
        assert autograder.DTYPE == torch.float16          # the interpreter has no bf16 tl.dot
    else:
        bf16 = torch.cuda.get_device_capability() >= (8, 0)
        assert autograder.DTYPE == (torch.bfloat16 if bf16 else torch.float16)
    assert callable(autograder.check) and callable(autograder.naive_attention)
