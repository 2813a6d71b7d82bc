"""The capstone of the backward problems: train a small GPT with your attention and with PyTorch's.

Same initial weights, same synthetic batches, same optimizer; only the attention differs. If your
backward is right, the two loss curves coincide (up to 16-bit rounding). The data is generated here:
each sequence repeats a random phrase, so the model can only lower its loss by attending back to
the previous repetition, i.e. by learning through the attention's gradients.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import device
from ..spec import problems
from ..watch import record
from .core import CheckFailed, NotImplementedYet, not_implemented
from .failure import Failure


@dataclass(frozen=True)
class Config:
    vocab: int = 16
    n_layer: int = 2
    n_q_heads: int = 2
    n_kv_heads: int = 1
    head_dim: int = 16
    seq_len: int = 32
    batch: int = 4
    steps: int = 10
    lr: float = 2e-2
    period: int = 4                          # length of the repeated phrase
    window_size: Optional[int] = None        # Problem 9: sliding window, sinks, learned sink logits
    sink_size: Optional[int] = None
    sink_logits: bool = False

    @property
    def d_model(self):
        return self.n_q_heads * self.head_dim


def config(problem: int, tier: str = None) -> Config:
    tier = tier or device.TIER
    spec = problems.get(problem)
    mask = dict(window_size=16 if spec.window else None, sink_size=2 if spec.sinks else None,
                sink_logits=spec.sink_logits)
    if tier == "cpu":           # the interpreter: a tiny model, a few steps (~10 s)
        return Config(**mask)
    if spec.window:
        mask["window_size"] = 64
    return Config(vocab=64, n_layer=4, n_q_heads=8, n_kv_heads=2, head_dim=64, seq_len=512, batch=16,
                  steps=60, lr=1e-3, period=24, **mask)


def reference_attention_torch(q, k, v, is_causal=True, window_size=None, sink_size=None, sink_logits=None):
    """PyTorch attention in float32 (SDPA when it can, a dense masked softmax for windows, sinks and
    sink logits), returned in q's dtype: the baseline the capstone compares against."""
    from ..spec.masks import attention_mask, dense_mask
    q32, k32, v32 = q.float(), k.float(), v.float()
    group = q.shape[1] // k.shape[1]
    if window_size is None and not sink_size and sink_logits is None:
        return F.scaled_dot_product_attention(q32, k32, v32, is_causal=is_causal, enable_gqa=group > 1).to(q.dtype)
    k32, v32 = k32.repeat_interleave(group, 1), v32.repeat_interleave(group, 1)
    s = (q32 @ k32.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    visible = dense_mask(attention_mask(is_causal, window_size, sink_size), q.shape[2], device=q.device)
    s = s.masked_fill(~visible, float("-inf"))
    if sink_logits is not None:
        s = torch.cat([s, sink_logits.float()[None, :, None, None].expand(*s.shape[:-1], 1)], -1)
    p = torch.softmax(s, -1)
    if sink_logits is not None:
        p = p[..., :-1]
    return (p @ v32).to(q.dtype)


class Block(nn.Module):
    def __init__(self, cfg: Config, attention):
        super().__init__()
        self.cfg, self.attention = cfg, attention
        d, D = cfg.d_model, cfg.head_dim
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.wq = nn.Linear(d, cfg.n_q_heads * D, bias=False)
        self.wkv = nn.Linear(d, 2 * cfg.n_kv_heads * D, bias=False)
        self.proj = nn.Linear(cfg.n_q_heads * D, d, bias=False)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.sink = nn.Parameter(torch.zeros(cfg.n_q_heads)) if cfg.sink_logits else None

    def forward(self, x):                                            # x [B, N, d]
        cfg = self.cfg
        B, N, _ = x.shape
        h = self.ln1(x)
        # [B, N, H, D] viewed as [B, H, N, D]: the kernels get strided (bnhd) inputs, as in real models
        q = self.wq(h).view(B, N, cfg.n_q_heads, cfg.head_dim).transpose(1, 2)
        k, v = self.wkv(h).view(B, N, 2, cfg.n_kv_heads, cfg.head_dim).unbind(2)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        kw = dict(is_causal=True)
        if cfg.window_size is not None:
            kw.update(window_size=cfg.window_size, sink_size=cfg.sink_size)
        if self.sink is not None:
            kw["sink_logits"] = self.sink
        dt = device.DTYPE
        y = self.attention(q.to(dt), k.to(dt), v.to(dt), **kw).float()   # [B, Hq, N, D]
        x = x + self.proj(y.transpose(1, 2).reshape(B, N, -1))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    def __init__(self, cfg: Config, attention):
        super().__init__()
        self.tok = nn.Embedding(cfg.vocab, cfg.d_model)
        self.pos = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, attention) for _ in range(cfg.n_layer))
        self.ln = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab, bias=False)

    def forward(self, idx):                                          # idx [B, N] -> logits [B, N, vocab]
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def batches(cfg: Config, seed: int = 0):
    """[steps, batch, seq_len + 1] tokens: each row repeats a random phrase of `period` tokens."""
    gen = torch.Generator().manual_seed(seed)
    phrase = torch.randint(0, cfg.vocab, (cfg.steps, cfg.batch, cfg.period), generator=gen)
    reps = -(-(cfg.seq_len + 1) // cfg.period)
    return phrase.repeat(1, 1, reps)[..., : cfg.seq_len + 1]


def train(cfg: Config, attention, seed: int = 0):
    """Losses of `cfg.steps` AdamW steps of a TinyGPT whose attention is `attention`."""
    torch.manual_seed(seed)
    model = TinyGPT(cfg, attention).to(device.DEVICE)
    return _train(model, cfg, seed)


def _train(model, cfg, seed):
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    losses = []
    for tokens in batches(cfg, seed).to(device.DEVICE):
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, cfg.vocab), tokens[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def train_and_compare(attention_fn, problem: int = 8, cfg: Config = None, plot: bool = True,
                      rtol: float = None, verbose: bool = True):
    """Train the same TinyGPT with `attention_fn` and with PyTorch's attention; plot both loss
    curves; raise AssertionError unless they agree step by step within `rtol`."""
    cfg = cfg or config(problem)
    # measured: 1e-4 (CPU tier, fp16); bf16 rounds P and dS to 8 bits, and 60 Adam steps amplify it
    rtol = rtol if rtol is not None else (1e-3 if device.DTYPE == torch.float32 else
                                         5e-3 if device.DTYPE == torch.float16 else 3e-2)
    torch.manual_seed(0)
    ours = TinyGPT(cfg, attention_fn).to(device.DEVICE)
    theirs = copy.deepcopy(ours)
    for block in theirs.blocks:
        block.attention = reference_attention_torch
    t0 = time.perf_counter()
    try:
        # one recorded call (autograder.record): a replay gets the losses, then trains the reference itself
        yours = list(record.call(lambda: _train(ours, cfg, seed=1), ("capstone", problem, repr(cfg))))
    except Exception as exc:   # noqa: BLE001
        if not_implemented(exc):
            raise NotImplementedYet.of(f"Problem {problem}") from None
        raise
    seconds = time.perf_counter() - t0
    ref = _train(theirs, cfg, seed=1)
    history = {"yours": yours, "pytorch": ref, "seconds": seconds, "config": cfg}
    if plot:
        _plot(history, problem)
    diffs = [abs(a - b) / max(abs(b), 1e-6) for a, b in zip(yours, ref)]
    worst = max(range(len(diffs)), key=diffs.__getitem__)
    if verbose:
        print(f"TinyGPT ({cfg.n_layer} layers, Hq={cfg.n_q_heads}, Hkv={cfg.n_kv_heads}, D={cfg.head_dim}, "
              f"N={cfg.seq_len}, {cfg.steps} steps, {str(device.DTYPE).removeprefix('torch.')} attention): "
              f"loss {yours[0]:.4f} -> {yours[-1]:.4f} with yours, {ref[0]:.4f} -> {ref[-1]:.4f} with PyTorch; "
              f"largest relative difference {diffs[worst]:.2e} (step {worst}); {seconds:.1f} s with yours.")
    if not all(math.isfinite(x) for x in yours):
        raise CheckFailed(Failure(f"the loss with your attention became NaN or inf "
                                  f"(step {next(i for i, x in enumerate(yours) if not math.isfinite(x))}).",
                                  check=f"Problem {problem}"))
    if diffs[worst] > rtol:
        raise CheckFailed(Failure(
            f"the loss curves part: step {worst}, yours {yours[worst]:.5f}, PyTorch's "
            f"{ref[worst]:.5f} (relative difference {diffs[worst]:.2e} > {rtol:g}). "
            + ("Already at step 0 the forward differs: check the forward." if worst == 0 else
               "The first step's loss agrees, so the forward is right and the gradients are not: run the "
               "check_backward cells above."), check=f"Problem {problem}"))
    tail = ref[-max(1, len(ref) // 3):]
    if not sum(tail) / len(tail) < ref[0]:
        raise CheckFailed(f"the reference model did not learn ({ref[0]:.4f} -> {ref[-1]:.4f}): report this")
    return history


def _plot(history, problem):
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(history["pytorch"], lw=4, alpha=0.4, label="PyTorch attention")
    ax.plot(history["yours"], lw=1.5, ls="--", marker=".", label="your kernels")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(f"Problem {problem}: TinyGPT trained with each attention")
    ax.legend()
    fig.tight_layout()
    try:
        from IPython.display import display
        display(fig)
    except ImportError:
        pass
    plt.close(fig)
