"""Mask predicates: the exact semantics of the course, composition, closed-form pair counts."""
import itertools

import pytest
import torch

from autograder import masks


def brute(n, is_causal, window_size, sink_size):
    out = torch.zeros(n, n, dtype=torch.bool)
    for i, j in itertools.product(range(n), range(n)):
        if not is_causal:
            out[i, j] = True
            continue
        w = n if window_size is None else window_size
        s = sink_size or 0
        out[i, j] = (j <= i and j >= i - (w - 1)) or (j < s and j <= i)
    return out


@pytest.mark.parametrize("n", [1, 7, 23])
@pytest.mark.parametrize("is_causal,window_size,sink_size", [
    (False, None, None), (True, None, None), (True, 1, None), (True, 4, None), (True, 100, None),
    (True, 3, 0), (True, 3, 1), (True, 2, 5), (True, 6, 2), (True, 1, 30),
])
def test_attention_mask_matches_the_spec(n, is_causal, window_size, sink_size):
    fn = masks.attention_mask(is_causal, window_size, sink_size)
    assert torch.equal(masks.dense_mask(fn, n), brute(n, is_causal, window_size, sink_size))
    assert masks.attended_pairs(n, is_causal, window_size, sink_size) == int(brute(n, is_causal, window_size, sink_size).sum())


def test_predicates_compose():
    n = 16
    window_or_sinks = masks.or_masks(masks.sliding_window(3), masks.sinks(2))
    assert torch.equal(masks.dense_mask(window_or_sinks, n), brute(n, True, 3, 2))
    window_and_causal = masks.and_masks(masks.causal, masks.sliding_window(3))
    assert torch.equal(masks.dense_mask(window_and_causal, n), brute(n, True, 3, None))
    assert "sliding_window(3)" in window_or_sinks.__name__ and "sinks(2)" in window_or_sinks.__name__


def test_window_counts_the_diagonal():
    m = masks.dense_mask(masks.sliding_window(1), 5)
    assert torch.equal(m, torch.eye(5, dtype=torch.bool))


def test_tile_classes():
    cls = masks.tile_classes(masks.causal, 64, 32, 16)
    assert cls.shape == (2, 4)
    # query tile 1 (rows 32-63): key tiles 0-1 fully visible, 2-3 on the diagonal
    assert cls[1].tolist() == [masks.FULL, masks.FULL, masks.PARTIAL, masks.PARTIAL]
    assert cls[0].tolist() == [masks.PARTIAL, masks.PARTIAL, masks.SKIP, masks.SKIP]


@pytest.mark.parametrize("kwargs,exc,words", [
    (dict(is_causal=False, window_size=4), ValueError, "is_causal=True"),
    (dict(is_causal=False, sink_size=2), ValueError, "is_causal=True"),
    (dict(is_causal=True, window_size=0), ValueError, "window_size must be >= 1"),
    (dict(is_causal=True, window_size=2.5), TypeError, "window_size must be an int"),
    (dict(is_causal=True, window_size=4, sink_size=-1), ValueError, "sink_size must be >= 0"),
    (dict(is_causal=1), TypeError, "is_causal must be True or False"),
])
def test_bad_mask_arguments_say_what_to_fix(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        masks.attention_mask(**kwargs)
