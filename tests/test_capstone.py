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


@pytest.mark.parametrize("mask", [dict(), dict(window_size=8), dict(window_size=8, sink_size=3),
                                  dict(window_size=8, sink_size=3, sink_logits=True), dict(sink_logits=True)])
def test_sdpa_baseline_is_the_course_attention(mask):
    """The GPU capstone's PyTorch baseline (SDPA with an additive mask, a sink logit as one more key)
    computes the course's attention: outputs and every gradient, the sink logits' included, match the
    dense float32 reference."""
    import torch
    gen = torch.Generator().manual_seed(0)
    B, Hq, Hkv, N, D = 2, 4, 2, 40, 16
    q, k, v = (torch.randn(B, h, N, D, generator=gen, requires_grad=True) for h in (Hq, Hkv, Hkv))
    if mask.get("sink_logits"):
        mask = dict(mask, sink_logits=torch.randn(Hq, generator=gen, requires_grad=True))
    inputs = [q, k, v] + ([mask["sink_logits"]] if "sink_logits" in mask else [])
    dout = torch.randn(B, Hq, N, D, generator=gen)
    got = capstone.sdpa_attention(q, k, v, True, **mask)
    want = capstone.reference_attention_torch(q, k, v, True, **mask)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for g, w in zip(torch.autograd.grad(got, inputs, dout), torch.autograd.grad(want, inputs, dout)):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)


def test_step_time_table_says_why_flexattention_is_missing(capsys):
    """The GPU table: one row per attention with ms and tokens/s relative to yours; where FlexAttention
    cannot run (here: no backward on the CPU) the table says so instead of failing the capstone."""
    import torch
    cfg = capstone.Config(seq_len=16, steps=6, batch=2)
    torch.manual_seed(0)
    model = capstone.TinyGPT(cfg, capstone.reference_attention_torch)
    ms = capstone.step_times(cfg, {"your kernels": [0.010] * 8, "PyTorch SDPA": [0.020] * 8}, model)
    out = capsys.readouterr().out
    assert ms["your kernels"] == pytest.approx(10.0) and ms["PyTorch SDPA"] == pytest.approx(20.0)
    assert "2.00x your time" in out and "3 k tokens/s" in out
    assert "FlexAttention" not in ms and "FlexAttention: not measured" in out


def test_gpu_task_draws_each_sequence_from_its_own_few_tokens():
    """The GPU capstone's data: every sequence uses at most `alphabet` distinct tokens, different
    sequences different ones, so the loss can fall from ln(vocab) to ln(alphabet) only by attending
    to the tokens seen so far."""
    cfg = capstone.config(9, tier="gpu")
    assert cfg.task == "subset" and cfg.seq_len >= 4096 and cfg.window_size == 512 and cfg.sink_size == 4
    small = capstone.Config(task="subset", vocab=64, alphabet=4, seq_len=200, batch=5, steps=3)
    tokens = capstone.batches(small, seed=3)
    assert tokens.shape == (3, 5, 201) and int(tokens.max()) < 64
    sets = [frozenset(row.tolist()) for row in tokens.reshape(-1, 201)]
    assert all(len(s) == 4 for s in sets) and len(set(sets)) > 10
    assert "drawn from a random 4 of 64" in small.describe()


def test_a_configuration_that_does_not_learn_is_said_not_graded(capsys):
    """When PyTorch's own curve does not fall (the course's configuration), the cell still grades only
    the match: it prints a note instead of failing the student."""
    cfg = capstone.Config(steps=4)
    history = capstone.train_and_compare(capstone.reference_attention_torch, problem=8, cfg=cfg, plot=False)
    assert history["learned"] is False
    assert "a problem of the course's configuration, not of your code" in capsys.readouterr().out


def test_gpu_curves_are_compared_step_by_step_then_as_averages():
    """bf16 runs part ways once the model learns (measured: after step ~160-250 even between two correct
    attentions), so past `lockstep` only the last fifth's mean is compared; inside it every step is."""
    from autograder.checks.failure import CheckFailed
    ref = [4.0 - 0.01 * i for i in range(200)]
    drifted = ref[:100] + [x * (1.2 if i % 2 else 0.8) for i, x in enumerate(ref[100:])]   # same mean, noisy
    capstone.compare_curves(drifted, ref, 9, lockstep=100)
    with pytest.raises(CheckFailed, match=r"the loss curves part: step 1\d\d, "):
        capstone.compare_curves(drifted, ref, 9)                                   # every step compared
    early = ref[:50] + [x * 1.05 for x in ref[50:]]
    with pytest.raises(CheckFailed, match=r"step [5-9]\d, .*the gradients are not"):
        capstone.compare_curves(early, ref, 9, lockstep=100)
    worse = ref[:100] + [x * 1.08 for x in ref[100:]]
    with pytest.raises(CheckFailed, match="agree for the first 100 steps, but over the last 40 steps"):
        capstone.compare_curves(worse, ref, 9, lockstep=100)
    cfg = capstone.config(8, tier="gpu")
    assert cfg.lockstep == capstone.GPU_LOCKSTEP < cfg.steps and capstone.config(8, tier="cpu").lockstep is None
