"""`check_backward(problem, fn)`: gradients of a differentiable attention against float64 autograd.

Problems 8 and 9. For every case: build q, k, v (seeded, maybe non-contiguous) and dO (same layout),
and for Problem 9 a learned sink logit per query head; compute O and the gradients with float64
autograd of the dense reference; run `fn` forward and backward under the Guard (Triton launches
counted, PyTorch attention and matrix products refused, fresh outputs poisoned); then check O,
dQ, dK, dV (and d sink) element by element. A wrong gradient is explained when it matches the
gradient of a known mistake: delta forgotten, lse in the wrong base, the scale missing, dK/dV not
summed over the query-head group, the backward loops' window bounds transposed, ...
"""
from __future__ import annotations

import math
import time

import torch

from .. import device
from ..spec import problems
from ..spec.cases import Case, backward_cases
from ..spec.masks import attention_mask, dense_mask
from ..spec.reference import TOLERANCES, dense_attention64
from ..spec.tiles import backward_tiles
from ..teaching.schedule import query_ranges
from ..watch import record
from ..watch.guard import POISON, Guard
from .core import (CaseResult, CheckFailed, Failure, NotImplementedYet, fail, inputs_unchanged, layout_hint,
                   not_implemented, raised, run_suite, select_cases)
from .diagnose import locate, whole_output_hypotheses

LN2 = math.log(2.0)
LOG2E = 1.0 / LN2

# (atol, rtol) for a gradient, atol relative to the largest |reference| element of that gradient:
# dK sums N products of 16-bit dS and q, so its absolute error grows with its own size.
GRAD_TOLERANCES = {
    torch.float32: (2e-4, 2e-4),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (4e-2, 4e-2),
}


# ---------------------------------------------------------------------------------------------
# the reference, and the same math with planted mistakes


def _visible(case, N, dev):
    return dense_mask(attention_mask(**case.mask_kwargs()), N, device=dev)


def make_inputs(case: Case, problem: int):
    """q, k, v, dO (each in its layout: `Case.layout_of`) and the sink logits (or None)."""
    q, k, v = case.make_inputs()
    do = case.make_grad_output()
    sink = None
    if problems.get(problem).sink_logits and case.sink_logits:
        gen = torch.Generator().manual_seed(case.seed + 31)
        sink = (torch.randn(case.Hq, generator=gen) * 1.5 + 0.5).to(device.DEVICE, torch.float32)
    return q, k, v, do, sink


def reference_grads(q, k, v, do, case, sink=None):
    """O, dQ, dK, dV (and d sink) of the float64 reference, by autograd."""
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    if sink is not None:
        leaves.append(sink.detach().double().requires_grad_())
    o = dense_attention64(*leaves[:3], _visible(case, q.shape[2], q.device), leaves[3] if sink is not None else None)
    grads = torch.autograd.grad(o, leaves, do.double())
    out = dict(o=o.detach(), dq=grads[0], dk=grads[1], dv=grads[2])
    if sink is not None:
        out["dsink"] = grads[3]
    return out


def manual_grads(q, k, v, do, visible, sink=None, *, p_factor=None, p_power=1.0, delta=True, dq_factor=1.0,
                 dk_factor=1.0, group="sum", dkdv_visible=None, dkdv_pairs=None, dsink_sign=-1.0, sink_base2=True):
    """The FlashAttention-2 backward in float64 dense math, optionally with one planted mistake.

    p_factor(lse): a per-row factor on the recomputed P (lse in the wrong base); p_power: P ** p_power
    (exp where exp2 belongs: exp(x * log2 e) = P ** log2 e); delta=False: dS = P dP;
    dq_factor / dk_factor: a wrong scale; group: "sum" (right), "first", "last", "modulo" or
    "consecutive" for how dK/dV gather the query heads; dkdv_visible: the pairs the dK/dV loops visit; dkdv_pairs: the
    pairs (query i, key j) a dK/dV kernel with its own, different mask sums, P recomputed from the scores
    alone (pairs the forward hides then count too)."""
    q, k, v, do = q.double(), k.double(), v.double(), do.double()
    B, Hq, N, D = q.shape
    Hkv = k.shape[1]
    G = Hq // Hkv
    scale = 1 / math.sqrt(D)
    kk, vv = k.repeat_interleave(G, 1), v.repeat_interleave(G, 1)
    s = ((q @ kk.transpose(-1, -2)) * scale).masked_fill(~visible, float("-inf"))
    terms = s if sink is None else torch.cat([s, sink.double()[None, :, None, None].expand(B, Hq, N, 1)], -1)
    lse = torch.logsumexp(terms, -1)
    p = torch.exp(s - lse[..., None])
    o = p @ vv
    dlt = (do * o).sum(-1)
    pb = (p if p_factor is None else p * p_factor(lse)[..., None]) ** p_power
    dp = do @ vv.transpose(-1, -2)
    ds = pb * (dp - dlt[..., None]) if delta else pb * dp
    dq = (ds @ kk) * scale * dq_factor
    if dkdv_visible is not None:
        pb, ds = pb * dkdv_visible, ds * dkdv_visible
    if dkdv_pairs is not None:
        pb = torch.exp((q @ kk.transpose(-1, -2)) * scale - lse[..., None]) * dkdv_pairs
        ds = pb * (dp - dlt[..., None])
    dk_h = (ds.transpose(-1, -2) @ q) * scale * dk_factor              # [B, Hq, N, D] per query head
    dv_h = pb.transpose(-1, -2) @ do
    if group == "sum":
        dk, dv = dk_h.view(B, Hkv, G, N, D).sum(2), dv_h.view(B, Hkv, G, N, D).sum(2)
    elif group in ("first", "last"):
        g = 0 if group == "first" else G - 1
        dk, dv = dk_h.view(B, Hkv, G, N, D)[:, :, g], dv_h.view(B, Hkv, G, N, D)[:, :, g]
    else:
        # the dK/dV program of K/V head c visits the wrong query heads h ("modulo": h % Hkv == c;
        # "consecutive": h = c + g, g < G), recomputing P from its own k, v and their lse, delta
        pairs = ([(h % Hkv, h) for h in range(Hq)] if group == "modulo" else
                 [(c, c + g) for c in range(Hkv) for g in range(G)])
        cidx = torch.tensor([c for c, _ in pairs], device=q.device)
        hidx = torch.tensor([h for _, h in pairs], device=q.device)
        qh, doh, kw, vw = q[:, hidx], do[:, hidx], k[:, cidx], v[:, cidx]
        pw = torch.exp(((qh @ kw.transpose(-1, -2)) * scale).masked_fill(~visible, float("-inf"))
                       - lse[:, hidx, :, None])
        dsw = pw * (doh @ vw.transpose(-1, -2) - dlt[:, hidx, :, None])
        dk = torch.zeros_like(k).index_add_(1, cidx, (dsw.transpose(-1, -2) @ qh) * scale)
        dv = torch.zeros_like(v).index_add_(1, cidx, pw.transpose(-1, -2) @ doh)
    out = dict(o=o, dq=dq, dk=dk, dv=dv)
    if sink is not None:
        sink2 = sink.double()[None, :, None] * (1.0 if sink_base2 else LN2)
        out["dsink"] = dsink_sign * (torch.exp(sink2 - lse) * dlt).sum((0, 2))
    return out


# ---------------------------------------------------------------------------------------------
# diagnoses


def _close(got, want, tol):
    atol, rtol = tol
    scale = want.abs().max().clamp(min=1.0) if want.numel() else 1.0
    return bool(torch.isfinite(got).all()) and bool(((got - want).abs() <= atol * scale + rtol * want.abs()).all())


def _dkdv_kernel_pairs(case, N, dev, masked, sink_keys):
    """[N, N] bool (query i, key j): the pairs Problem 9's dK/dV kernel sums when its masked phases
    (diagonal, window edge) keep `masked` and its sink phase keeps `sink_keys` (both [N, N] bool,
    indexed [query, key]). The phases are the reference's (schedule.query_ranges: the course's
    `_dkdv_ranges` with the wrapper's tiles), so only the step's mask differs; the sink phase runs
    on the keys of the wrapper's sink blocks only (the sinks rounded up to SINK_BLOCK)."""
    tiles = backward_tiles(case.D, case.resolved_dtype)
    bm, bn = tiles["BLOCK_M1"], tiles["BLOCK_N1"]
    window, sinks = min(case.window_size or N, N), min(case.sink_size or 0, N)
    sink_block = min(max(1 << max(sinks - 1, 0).bit_length(), 16), tiles["BLOCK_N2"])
    sink_rows = -(-sinks // sink_block) * sink_block if window < N else 0
    i, j = torch.arange(N, device=dev)[:, None], torch.arange(N, device=dev)[None, :]
    pairs = torch.zeros(N, N, dtype=torch.bool, device=dev)
    for tile, ranges in enumerate(query_ranges(N, bm, bn, True, window, sinks or None)):
        keys = (j >= tile * bn) & (j < tile * bn + bn)
        for phase, (lo, hi) in ranges.items():
            block = (i >= lo) & (i < hi) & keys
            if phase == "unmasked":
                pairs |= block
            elif phase == "sinks":
                pairs |= block & (j < sink_rows) & sink_keys
            else:
                pairs |= block & masked
    return pairs


def _dkdv_mask_hypotheses(case, visible, N, dev):
    """Problem 9: the dK/dV step's masks people get wrong, each as the pairs its kernel then sums."""
    i, j = torch.arange(N, device=dev)[:, None], torch.arange(N, device=dev)[None, :]
    sinks = case.sink_size or 0
    right_sinks = (j < sinks).expand(N, N)
    transposed = (" In pT the rows are the keys (offs_n) and the columns the queries (offs_m); "
                  "_visible(i, j, WINDOW, SINKS) asks whether query i sees key j")
    hyps = [
        (visible.T, right_sinks,
         "dK/dV match a dK/dV kernel whose mask of the transposed tile is flipped: it keeps the pairs in "
         "which the KEY would see the query (query and key swapped in _visible)." + transposed + "."),
        ((i >= j).expand(N, N), right_sinks,
         "dK/dV match a dK/dV kernel whose masked phases keep every query at or after the key, without the "
         "window (the causal mask alone): pT is recomputed from the scores, so the pairs the window hides "
         "(i - j >= W, for keys that are not sinks) get nonzero probabilities unless the step masks them."
         + transposed + ", window and sinks included."),
        (torch.ones(N, N, dtype=torch.bool, device=dev), right_sinks,
         "dK/dV match a dK/dV kernel with no mask in its masked phases (diagonal, window edge): there the tile "
         "holds pairs the forward hides, and pT, recomputed from the scores, counts them." + transposed + "."),
    ]
    if sinks:
        hyps.append((visible, torch.zeros(N, N, dtype=torch.bool, device=dev),
                     "dK/dV match a dK/dV kernel whose sink phase adds nothing: the sink keys' dK/dV miss every "
                     "query past their tile's window phases. A key tile holding sinks (start_n < S) is seen by "
                     "every later query, so its loop goes on to N (the sink phase [hi, sink_hi), sink_hi = N), "
                     "and there the step's SINK_KEYS mask keeps the rows of pT whose key is a sink "
                     "(offs_n < SINKS), whatever the query: either that phase is missing or its mask drops them."))
        hyps.append((visible, (j <= sinks).expand(N, N),
                     f"dK/dV match a dK/dV kernel whose SINK_KEYS mask keeps key S = {sinks}, the first key after the "
                     f"sinks, in the sink phase: the sinks are the keys j < S (the rows of pT with offs_n < SINKS), "
                     f"and past its window key S is seen by no query."))
    return [(dict(dkdv_pairs=_dkdv_kernel_pairs(case, N, dev, masked, sink_keys)), why)
            for masked, sink_keys, why in hyps]


def _hypotheses(case, problem, visible, N, dev):
    """(keyword arguments of manual_grads, the sentence that names the mistake), most specific first."""
    hyps = [
        (dict(delta=False), "the wrong gradients match dS = P * dP: delta is forgotten. The softmax's gradient is "
                            "dS = P * (dP - delta) with delta_i = rowsum(dO_i * O_i) (dV does not use it)."),
        (dict(p_factor=lambda lse: torch.exp(lse * (1 - LN2))),
         "the gradients match P recomputed as exp2(qk * qk_scale - lse) with a natural-log lse: the lse is in "
         "the wrong base. The forward stores lse2 = m_i + log2(l_i) (base 2, the scores' base) and the "
         "backward computes P = exp2(qk * qk_scale - lse2)."),
        (dict(p_factor=lambda lse: torch.exp(lse * (1 - LOG2E))),
         "the gradients match P recomputed as exp(qk * sm_scale - lse2): the stored lse is base 2, so P must "
         "be exp2(qk * qk_scale - lse2) (qk_scale = sm_scale * log2(e)); the lse is in the wrong base."),
        (dict(p_power=LOG2E), "the gradients match P recomputed with exp where exp2 belongs: qk * qk_scale and the "
                              "stored lse2 are base 2 (qk_scale holds log2(e)), so P = exp2(qk * qk_scale - lse2)."),
    ]
    for which, name in (("dq", "dQ"), ("dk", "dK")):
        for f, why in ((1 / (1 / math.sqrt(case.D)), f"the 1/sqrt(D) scale is missing from {name}"),
                       (1 / math.sqrt(case.D), f"{name} is scaled by 1/sqrt(D) twice"),
                       (LOG2E, f"{name} is scaled by qk_scale (with log2(e)): use sm_scale = 1/sqrt(D)")):
            hyps.append((dict(**{f"{which}_factor": f}),
                         f"{why}: {name} = (1/sqrt(D)) * " + ("dS @ k" if which == "dq" else "dS^T @ q")
                         + ", the scale applied once (qk_scale with log2(e) belongs inside exp2 only)."))
    if case.Hq != case.Hkv:
        G = case.Hq // case.Hkv
        hyps += [
            (dict(group="last"), f"dK and dV hold only the LAST query head of each group (GROUP = {G}): start "
                                 "dk, dv at zero once, before the loop over the group, and add every query "
                                 "head's contribution (dK/dV not summed over the query-head group)."),
            (dict(group="first"), f"dK and dV hold only the FIRST query head of each group (GROUP = {G}): loop "
                                  "over every query head h = kv_h * GROUP + g, g < GROUP, and add their "
                                  "contributions (dK/dV not summed over the query-head group)."),
            (dict(group="modulo"), "dK and dV sum the query heads h with h % Hkv == kv_h; the course rule is "
                                   "kv_h = h // GROUP: the group of kv_h is h = kv_h * GROUP + g, g < GROUP."),
            (dict(group="consecutive"), "dK and dV of K/V head kv_h sum the query heads "
                                        + ("kv_h and kv_h + 1" if G == 2 else f"kv_h, kv_h + 1, ..., kv_h + {G - 1}")
                                        + " (h = kv_h + g): neighbouring K/V heads share query heads "
                                        "and the last ones are never summed. The course rule is kv_h = h // GROUP: "
                                        "which query heads does that give K/V head kv_h?"),
        ]
    spec = problems.get(problem)
    if case.is_causal and (spec.window or spec.sinks):
        hyps += _dkdv_mask_hypotheses(case, visible, N, dev)
    elif case.is_causal and case.window_size is None and not case.sink_size:
        # the dK/dV loop masks only the query tiles on the key tile's diagonal (i and j in one BLOCK_N block)
        idx = torch.arange(N, device=dev)
        for bn in (16, 32, 64, 128):
            tile_i, tile_j = (idx // bn)[:, None], (idx // bn)[None, :]
            later, diagonal = tile_i > tile_j, tile_i == tile_j
            before = idx[:, None] <= idx[None, :]                            # query i at or before key j
            hyps += [
                (dict(dkdv_pairs=later | (diagonal & before)),
                 "dK/dV match a dK/dV kernel whose causal mask is flipped on the diagonal tiles: it keeps the "
                 "queries at or BEFORE the key and drops those after it. Key j is seen by the queries i >= j; in "
                 "the transposed tile the keys are the rows (offs_n) and the queries the columns (offs_m)."),
                (dict(dkdv_pairs=later | diagonal),
                 "dK/dV match a dK/dV kernel with no causal mask on the diagonal query tiles: there the tile "
                 "holds pairs the forward hides (queries before the key), and only the queries i >= j of key j "
                 "may add to dK and dV."),
            ]
    if case.is_causal and N > 16:
        idx = torch.arange(N, device=dev)
        diff = idx[:, None] - idx[None, :]                               # i - j
        for bn in (16, 32, 64, 128):
            near = diff < (idx[None, :] // bn * bn + bn - idx[None, :])   # i < start of j's tile + bn
            near = near | (idx[None, :] < (case.sink_size or 0))            # a sink phase may still run
            hyps.append((dict(dkdv_visible=visible & near),
                         f"dK/dV of key tile [start_n, start_n + {bn}) got only the query tiles up to the key "
                         f"tile's own diagonal: the window bounds are transposed in the dK/dV loop. A key j "
                         f"is seen by the queries AFTER it, i in [j, j + W - 1] (W = N without a window; and "
                         f"every i >= j when j < S): "
                         f"loop over query tiles from start_n to start_n + BLOCK_N + W - 1, not from "
                         f"start_n - (W - 1) as in the forward."))
        if case.sink_size and case.window_size is not None and case.window_size < N:
            win = dense_mask(attention_mask(True, case.window_size, None), N, device=dev)
            hyps.append((dict(dkdv_visible=win),
                         "dK/dV of the sink keys miss the queries past their window: a key tile holding "
                         "sinks (start_n < S) is seen by every later query, so its dK/dV loop continues to N "
                         "(the sink phase [hi, sink_hi), sink_hi = N), and there the dK/dV step's SINK_KEYS mask "
                         "keeps the rows of pT whose key is a sink (offs_n < SINKS): either that phase is "
                         "missing or its mask drops them."))
    if case.sink_logits:
        hyps += [
            (dict(dsink_sign=1.0), "d sink_h has the wrong sign: d sink_h = -sum_i P_sink_i * delta_i "
                                   "(raising the sink logit takes probability away from every key)."),
            (dict(sink_base2=False), "d sink_h uses the sink logit in the wrong base: the scores are base 2, so "
                                     "P_sink_i = exp2(sink_h * log2(e) - lse2_i)."),
        ]
    return hyps


def gradient_hypothesis(q, k, v, do, sink, case, problem, got, wrong, tol):
    """A sentence when the wrong gradients equal those of a known mistake, else None."""
    N = q.shape[2]
    visible = _visible(case, N, q.device)
    for kw, why in _hypotheses(case, problem, visible, N, q.device):
        alt = manual_grads(q, k, v, do, visible, sink, **kw)
        if all(_close(got[name].double(), alt[name], tol) for name in wrong):
            return why
    return None


# ---------------------------------------------------------------------------------------------
# the check

_ROWS = {"dq": "query rows", "dk": "key rows", "dv": "key rows"}     # what dim 2 of each gradient indexes
_SHORT = {"dq": "dQ", "dk": "dK", "dv": "dV", "dsink": "d sink"}
_NAMES = {"dq": "dQ (q.grad)", "dk": "dK (k.grad)", "dv": "dV (v.grad)", "dsink": "d sink (sink_logits.grad)"}


def _run(problem, fn, case, q, k, v, do, sink):
    """Forward and backward of `fn` under the Guard; the output and the gradients."""
    leaves = [q, k, v] + ([sink] if sink is not None else [])
    for t in leaves:
        t.requires_grad_(True)
    kwargs = case.mask_kwargs()
    if sink is not None:
        kwargs["sink_logits"] = sink
    guard = Guard(triton_problem=True, seq_len=case.N, inputs=(q, k, v), mask=case.mask_kwargs(), backward=True)

    def run():
        with guard:
            out = fn(q, k, v, **kwargs)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"expected the output tensor, got {type(out).__name__}")
            if not out.requires_grad:
                raise CheckFailed(Failure(
                    "the output does not require grad, so autograd cannot call your "
                    "backward: return FlashAttention.apply(...) (a torch.autograd.Function), and do not "
                    "detach or compute the output under torch.no_grad().", check=f"Problem {problem}"))
            guard.backward_phase()
            grads = torch.autograd.grad(out, leaves, do, allow_unused=True)
            if device.TIER == "gpu":
                torch.cuda.synchronize()
        return out.detach(), tuple(grads)
    t0 = time.perf_counter()
    try:
        out, grads = record.call(run, leaves + [do], kwargs, observers=[guard])
    except Exception as exc:   # noqa: BLE001 - any failure of student code is reported, not raised raw
        raised(problem, case, exc, "your function (forward + backward)",
               f"reproduce it: q, k, v = autograder.{case!r}.make_inputs(); q.requires_grad_() (and k, v); "
               f"fn(q, k, v, **{case.mask_kwargs()!r}).backward(torch.randn_like(q))")
    finally:
        for t in leaves:
            t.requires_grad_(False)
    names = ["dq", "dk", "dv"] + (["dsink"] if sink is not None else [])
    return out, dict(zip(names, grads)), guard, time.perf_counter() - t0


def check_backward_case(problem: int, fn, case: Case):
    """Run one case forward and backward; raise AssertionError with a diagnosis if it fails."""
    q, k, v, do, sink = make_inputs(case, problem)
    ref = reference_grads(q, k, v, do, case, sink)
    before = [t.clone() for t in (q, k, v, do)]
    out, grads, guard, seconds = _run(problem, fn, case, q, k, v, do, sink)
    refused = guard.verdict(cheat_note=" (forward and backward are both graded)")
    if refused:
        fail(case, problem, refused)
    inputs_unchanged(case, problem, before, (q, k, v, do), ("q", "k", "v", "dO"), "write gradients into new tensors.")
    # the forward first: a wrong O makes every gradient wrong
    atol, rtol = TOLERANCES[case.resolved_dtype]
    bad = (out.double() - ref["o"]).abs() > atol + rtol * ref["o"].abs()
    if bad.any() or not torch.isfinite(out).all():
        where, hints = locate(bad | ~torch.isfinite(out), out.shape)
        why = whole_output_hypotheses(q, k, v, out, case, atol, rtol) if sink is None else None
        if not why and case.layout != "contiguous":
            why = _layout_hint(problem, fn, case, q, k, v, do, sink, ref, GRAD_TOLERANCES[case.resolved_dtype])
        fail(case, problem, f"the forward output O is wrong ({where}): fix the forward before the gradients.",
             ([why] if why else []) + hints, where)
    tol = GRAD_TOLERANCES[case.resolved_dtype]
    shapes = dict(dq=q, dk=k, dv=v, dsink=sink)
    wrong, worst = [], 0.0
    for name, want in ((n, ref[n]) for n in grads):
        g = grads[name]
        if g is None:
            fail(case, problem, f"{_NAMES[name]} is None: backward must return a gradient for every input "
                                 f"(in forward's argument order; None only for is_causal and the mask sizes).")
        like = shapes[name]
        if tuple(g.shape) != tuple(like.shape) or g.dtype != like.dtype:
            fail(case, problem, f"{_NAMES[name]} has shape {tuple(g.shape)} and dtype {g.dtype}; expected "
                                 f"{tuple(like.shape)} {like.dtype} (the input's).")
        gd = g.double()
        if name != "dsink" and (gd == torch.tensor(POISON, dtype=g.dtype).double()).all(-1).any():
            rows = (gd == torch.tensor(POISON, dtype=g.dtype).double()).all(-1)
            kernel = "dK/dV" if name in ("dk", "dv") else "dQ"
            where, hints = locate(rows[..., None].expand_as(gd), g.shape, rows_are=_ROWS[name])
            fail(case, problem, f"{int(rows.sum())} row(s) of {_NAMES[name]} were never written ({where}).",
                 hints + [f"the {kernel} kernel's grid must cover every "
                          + ("key tile of every K/V head: (cdiv(N, BLOCK_N1), B * Hkv)" if kernel == "dK/dV"
                             else "query tile of every query head: (cdiv(N, BLOCK_M2), B * Hq)")
                          + ", and each store is masked with < N, not a smaller bound."], where)
        if not torch.isfinite(gd).all():
            where, hints = locate(~torch.isfinite(gd) if gd.dim() == 4 else ~torch.isfinite(gd)[None, :, None, None],
                                  g.shape if gd.dim() == 4 else (1, g.shape[0], 1, 1),
                                  rows_are=_ROWS.get(name, "query rows"))
            fail(case, problem, f"{_NAMES[name]} has NaN or inf ({where}).",
                 hints + ["P = exp2(qk * qk_scale - lse2) needs the lse the forward stored for that row; rows past N "
                          "must load lse with other=+inf (P = 0) and q, dO with other=0; a masked pair gets P = 0 "
                          "(tl.where(mask, p, 0.0)), not a score of -inf minus -inf."], where)
        if not _close(gd, want, tol):
            wrong.append(name)
        worst = max(worst, float((gd - want).abs().max()))
    if wrong:
        why = gradient_hypothesis(q, k, v, do, sink, case, problem, grads, wrong, tol)
        lines, bad_at = [], {}
        for name in wrong:
            gd, want = grads[name].double(), ref[name]
            err = (gd - want).abs()
            scale = want.abs().max().clamp(min=1.0).item()
            bad = err > tol[0] * scale + tol[1] * want.abs()
            bad_at[name] = bad
            if name == "dsink":
                h = int(err.argmax())
                lines.append(f"{_NAMES[name]}: max |err| {err.max().item():.3g}; head {h}: got "
                             f"{gd[h].item():.5g}, expected {want[h].item():.5g}")
                continue
            where, _ = locate(bad, gd.shape, rows_are=_ROWS[name])
            lines.append(f"{_NAMES[name]}: {int(bad.sum())} of {bad.numel()} elements off (max |err| "
                         f"{err.max().item():.3g}, largest |ref| {want.abs().max().item():.3g}) at {where}")
        right = [_SHORT[n] for n in grads if n not in wrong]
        msg = "; ".join(lines) + (f". Right: {', '.join(right)}." if right else ".")
        hints = [why] if why else _generic_hints(wrong, case) + _location_hints(bad_at, case)
        if not why and case.layout != "contiguous":
            hints.append(_layout_hint(problem, fn, case, q, k, v, do, sink, ref, tol))
        fail(case, problem, msg, hints)
    return CaseResult(case, worst, seconds, len(guard.launches))


def _generic_hints(wrong, case):
    hints = []
    if "dv" in wrong and "dk" in wrong and "dq" not in wrong:
        hints.append("dQ is right but dK/dV are not: look at the dK/dV kernel (its query-tile loop, its mask "
                     "pT = 0 where the query is before the key, and the sum over the query-head group).")
    elif "dq" in wrong and "dk" not in wrong and "dv" not in wrong:
        hints.append("dK and dV are right but dQ is not: look at the dQ kernel's step (ds @ k) and its key-tile "
                     "loop and masks.")
    elif "dv" not in wrong and ("dq" in wrong or "dk" in wrong):
        hints.append("dV is right, so P is right: the error is in dP = dO @ v^T, dS = P * (dP - delta) or how dS "
                     "is multiplied by k (dQ) or q (dK).")
    elif wrong == ["dv"]:
        hints.append("only dV is wrong: dV = P^T @ dO, i.e. dv += pT @ do in the dK/dV kernel (pT in dO's dtype).")
    elif "dsink" in wrong and len(wrong) == 1:
        hints.append("only d sink is wrong: d sink_h = -sum over the rows of head h (every batch) of "
                     "P_sink_i * delta_i, with P_sink_i = exp2(sink_h * log2(e) - lse2_i).")
    return hints


def _location_hints(bad_at, case):
    """Hints from where the wrong gradient elements are (bad_at: gradient name -> bool mask)."""
    hints = []
    key_rows = [bad_at[n].nonzero()[:, 2] for n in ("dk", "dv") if n in bad_at and bad_at[n].any()]
    if key_rows and "dq" not in bad_at and case.sink_size:
        if int(torch.cat(key_rows).max()) < case.sink_size:
            hints.append(f"only the sink keys' rows (j < S = {case.sink_size}) of dK/dV are wrong: a key tile "
                         "holding sinks (start_n < S) is seen by every later query, so after its window its "
                         "dK/dV loop goes on to N (the sink phase [hi, sink_hi) with sink_hi = N, mask j < S).")
    if "dsink" in bad_at and case.Hq > 1:
        bad_h = bad_at["dsink"]
        if not bad_h[0] and bad_h[1:].any():
            hints.append("d sink is right for head 0 and wrong for later heads: in _attn_bwd_delta, LSE_ptr is "
                         "not yet offset to the program's (batch, head): the tile's lse2 is at "
                         "LSE_ptr + off_bh * N + offs_m, where delta is stored.")
    return hints


def _layout_hint(problem, fn, case, q, k, v, do, sink, ref, tol):
    """A failure on strided inputs: blame the strides only when contiguous copies of the same inputs
    (the same values: `ref` holds for them too) pass; otherwise this case merely showed a mistake
    made elsewhere first."""
    atol, rtol = TOLERANCES[case.resolved_dtype]

    def passes(t):
        out, grads, _, _ = _run(problem, fn, case, *(t[n].detach() for n in ("q", "k", "v", "do")), sink)
        return bool((out.double() - ref["o"]).abs().le(atol + rtol * ref["o"].abs()).all()) \
            and all(_close(g.double(), ref[n], tol) for n, g in grads.items())
    return layout_hint(
        case, dict(zip(("q", "k", "v", "do"), (q, k, v, do))), passes,
        wrong_too="the gradients are wrong for contiguous copies of these inputs too, so the strides are not "
                  "(only) to blame: check the math of the tile steps, the masks and the loop bounds.",
        strided=f"this case's q, k, v and dO are strided views ({case.layout} layout) and contiguous copies "
                "pass: address every tensor with its own strides, dO and the gradients included.")


def check_backward(problem: int, fn, family: str = None, cases=None, verbose: bool = True):
    """Check `fn` forward and backward on problem `problem`'s visible cases (or `cases`)."""
    spec = problems.PROBLEMS.get(problem)
    if spec is None or not spec.backward:
        raise ValueError(f"check_backward is for Problems {problems.numbers('check_backward')}, got {problem!r}")
    if not callable(fn):
        raise TypeError(f"fn must be your function (e.g. flash_attention_forward), got {type(fn).__name__}")
    cases = select_cases(backward_cases(problem) if cases is None else cases, family)
    return run_suite(problem, f"Problem {problem}", cases, lambda case: check_backward_case(problem, fn, case),
                     verbose)


def try_backward(fn, case: Case, problem: int = None):
    """Run `fn` forward and backward once; print the largest error of each gradient. Never raises for
    the release stub or a wrong answer; returns the gradients (None when not implemented yet)."""
    if problem is None:     # the first backward problem that has every feature the case uses
        needs = dict(window=case.window_size is not None, sinks=case.sink_size is not None,
                     sink_logits=case.sink_logits)
        problem = next(n for n in problems.numbers("check_backward")
                       if all(getattr(problems.get(n), f) for f, used in needs.items() if used))
    q, k, v, do, sink = make_inputs(case, problem)
    ref = reference_grads(q, k, v, do, case, sink)
    leaves = [t.requires_grad_() for t in (q, k, v)] + ([sink.requires_grad_()] if sink is not None else [])
    kwargs = case.mask_kwargs() | ({"sink_logits": sink} if sink is not None else {})
    try:
        out = fn(q, k, v, **kwargs)
        grads = torch.autograd.grad(out, leaves, do, allow_unused=True)
    except Exception as exc:   # noqa: BLE001
        if not_implemented(exc):
            print("not implemented yet: fill in the cells marked `# YOUR CODE HERE`, run them, then this cell.")
            return None
        raise
    names = ["o", "dq", "dk", "dv", "dsink"][:len(grads) + 1]
    print(case.describe())
    for name, got in zip(names, [out] + list(grads)):
        if got is None:
            print(f"  {name:6s} None")
            continue
        err = (got.detach().double() - ref[name]).abs().nan_to_num(nan=float("inf"))
        print(f"  {name:6s} max |err| {err.max().item():.2e}   (largest |ref| {ref[name].abs().max().item():.2e})")
    return dict(zip(names[1:], grads))


# ---------------------------------------------------------------------------------------------
# the autograd contract


def check_autograd_contract(problem: int, fn, verbose: bool = True):
    """What a user of a torch.autograd.Function relies on, beyond the numbers."""
    # one recorded call (autograder.record): the verdict is reached on the student's live tensors
    record.call(lambda: _autograd_contract(problem, fn), ("autograd contract", problem))
    if verbose:
        print(f"Problem {problem}: the autograd contract holds (no_grad, partial requires_grad, "
              f"non-contiguous dO, gradient accumulation).")


def _autograd_contract(problem: int, fn):
    spec = problems.get(problem)
    case = Case("autograd", 1, 2, 1, 20, 16, is_causal=True, seed=99,
                window_size=8 if spec.window else None, sink_size=2 if spec.sinks else None)
    q, k, v, do, _ = make_inputs(case, problem)
    kw = case.mask_kwargs()
    contract = f"Problem {problem}, autograd contract"

    def fail(msg):
        raise CheckFailed(Failure(msg, check=contract))
    try:
        with torch.no_grad():
            out = fn(q, k, v, **kw)
        if out.requires_grad:
            fail("under torch.no_grad() (or with inputs that need no grad) the output must not require grad.")
        ref = reference_grads(q, k, v, do, case)
        k.requires_grad_()                            # only k asks for a gradient
        out = fn(q, k, v, **kw)
        if not out.requires_grad:
            fail("k requires grad, the output does not: return FlashAttention.apply(...), not a detached tensor.")
        out.backward(do.transpose(-1, -2).contiguous().transpose(-1, -2))   # a non-contiguous dO
        if q.grad is not None or v.grad is not None:
            fail("q and v did not ask for gradients but got some.")
        if k.grad is None:
            fail("k.grad is missing when only k requires grad and dO is not contiguous.")
        if not _close(k.grad.double(), ref["dk"], GRAD_TOLERANCES[case.resolved_dtype]):
            err = (k.grad.double() - ref["dk"]).abs().max().item()
            fail(f"k.grad is wrong (max |err| {err:.3g}) when only k requires grad and dO is not contiguous. "
                 "If the gradient checks above fail too, fix those first (this is the same math); if they "
                 "pass, address dO with its own strides (do.stride()), not q's or a contiguous copy's.")
        g1 = k.grad.clone()
        out2 = fn(q, k, v, **kw)
        out2.backward(do)
        if not _close(k.grad.double(), 2 * g1.double(), GRAD_TOLERANCES[case.resolved_dtype]):
            fail("a second forward + backward must add into k.grad (autograd accumulates); got something else.")
    except CheckFailed:
        raise
    except Exception as exc:   # noqa: BLE001
        if not_implemented(exc):
            raise NotImplementedYet.of(f"Problem {problem}") from None
        raise CheckFailed(Failure(f"your function raised {type(exc).__name__}: {exc}", check=contract)) from None
