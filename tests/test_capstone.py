"""The capstone (autograder.capstone): on the CPU tier the model visibly learns, within about a minute."""
from __future__ import annotations

import pytest

import autograder
from autograder import capstone
from autograder.problems import numbers

cpu_tier = pytest.mark.skipif(autograder.TIER != "cpu", reason="the CPU tier's configuration")


@cpu_tier
@pytest.mark.parametrize("problem", numbers("check_backward"))
def test_the_cpu_capstone_learns_and_says_what_it_trains(problem, capsys):
    """PyTorch's attention on both sides (seconds): the loss falls to under 0.6x its start, and the printed
    lines give the configuration and both curves' ends."""
    history = capstone.train_and_compare(capstone.reference_attention_torch, problem=problem, plot=False)
    assert capstone.learned(history["pytorch"]) and capstone.learned(history["yours"])
    assert history["pytorch"][-1] < 0.5 * history["pytorch"][0], history["pytorch"]
    out = capsys.readouterr().out
    cfg = capstone.config(problem)
    assert cfg.describe() in out and "largest relative difference" in out
    if problem == 9:
        assert "window 8" in out and "2 sink keys" in out and "learned sink logit" in out


def test_learned_needs_a_clear_fall():
    assert capstone.learned([2.0, 2.1, 1.9] + [1.5] * 20 + [0.9] * 6)
    assert not capstone.learned([2.0, 2.1, 1.9] + [1.5] * 26)         # 1.5 / 2.0 = 0.75: noise, not learning
