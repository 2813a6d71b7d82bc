"""Explain a wrong attention output in words a student can act on.

Two kinds of explanation, both computed against the float64 reference:
  * whole-output hypotheses: the output equals attention with a known mistake (no 1/sqrt(D)
    scale, exp2 without log2(e), the wrong K/V head for GQA, no final division...);
  * mask flips: for each wrong row, the output matches the reference with one key, or one tile
    of keys, made visible or hidden. The pattern of flips names an off-by-one mask, a skipped
    tile or a loop that stops early.
"""
from __future__ import annotations

import math
from collections import Counter

import torch

from ..spec.masks import attention_mask, dense_mask
from ..spec.reference import dense_attention64, naive_attention

LOG2E = 1.4426950408889634


def _ref(q, k, v, case, **kw):
    mk = case.mask_kwargs()
    mk.update({key: kw.pop(key) for key in ("is_causal", "window_size", "sink_size") if key in kw})
    return naive_attention(q, k, v, compute_dtype=torch.float64, out_dtype=torch.float64, **mk, **kw)


def _matches(out, alt, atol, rtol):
    return bool(torch.isfinite(out).all()) and torch.allclose(out, alt.to(out.dtype), atol=atol, rtol=rtol)


def whole_output_hypotheses(q, k, v, out, case, atol, rtol, pytorch=False):
    """Return a sentence naming the mistake if the output equals a known wrong attention.

    pytorch: the student writes PyTorch (Problem 1), so hints name torch operations, not Triton's."""
    out = out.double()
    for kw, why in _wrong_attentions(q, case, pytorch):
        alt = _noncausal_sinks(q, k, v, case) if kw.pop("_sinks_all", False) else _ref(q, k, v, case, **kw)
        if _matches(out, alt, atol, rtol):
            return why
    if case.is_causal and _tile_local_mask(q, k, v, out, case, atol, rtol):
        return ("the mask compares indices inside the tile (0 .. BLOCK - 1), not positions in the sequence: "
                "give the mask offs_m = start_m + arange(BLOCK_M) and offs_n = start_n + arange(BLOCK_N).")
    why = _wrong_kv_head(q, k, v, out, case, atol, rtol)
    if why:
        return why
    o_ref, lse = _ref(q, k, v, case, return_lse=True)
    why = _unnormalised(out, o_ref, lse, atol, rtol, pytorch) or \
        _padded_keys_visible(q, out, o_ref, lse, case, atol, rtol, pytorch)
    if why:
        return why
    wrong_rows = ~torch.isclose(out, o_ref, atol=atol, rtol=rtol).all(-1)
    return underflow_hypothesis(q, k, wrong_rows, case) or \
        online_softmax_hypotheses(q, k, v, out, case, atol, rtol, pytorch)


def _wrong_attentions(q, case, pytorch):
    """[(keyword arguments of _ref, the mistake)]: the scale and the mask done wrong. `_sinks_all`: the
    sinks seen by every query (_noncausal_sinks)."""
    D = q.shape[-1]
    scale = 1 / math.sqrt(D)
    if pytorch:
        scale_hints = ("the output is attention WITHOUT the 1/sqrt(D) scale: multiply the scores by "
                       "sm_scale (s = q_tile @ k_tile.transpose(-1, -2) * sm_scale).",
                       "the scores went through torch.exp2 without the log2(e) factor: use torch.exp.",
                       "the scores are multiplied by log2(e) but go through torch.exp: drop the log2(e) "
                       "factor (s * sm_scale, then torch.exp).")
    else:
        scale_hints = ("the output is attention WITHOUT the 1/sqrt(D) scale: multiply the scores "
                       "by sm_scale (qk_scale = sm_scale * log2(e) when you use exp2).",
                       "scores went through exp2 without the log2(e) factor: "
                       "fold it into the scale (qk_scale = sm_scale * 1.44269504).",
                       "the log2(e) factor is applied but exp (not exp2) is used: use "
                       "tl.exp2 with qk_scale, or tl.exp with sm_scale, not a mix.")
    hyps = [
        (dict(scale=1.0), scale_hints[0]),
        (dict(scale=scale * math.log(2)), scale_hints[1]),
        (dict(scale=scale * LOG2E), scale_hints[2]),
        (dict(scale=1 / D), "the scale is 1/D; attention scales scores by 1/sqrt(D)."),
    ]
    if case.is_causal:
        hyps.append((dict(is_causal=False, window_size=None, sink_size=None),
                     "the output is NON-causal attention: the causal mask (key j visible only when "
                     "j <= i) is not applied."))
    if case.window_size is not None:
        hyps.append((dict(window_size=None, sink_size=None),
                     "the output is plain causal attention: the sliding window is not applied."))
        if case.sink_size:
            hyps.append((dict(sink_size=None), "the output ignores the sinks: keys j < S must stay "
                                               "visible (when j <= i) even outside the window."))
            hyps.append((dict(is_causal=True, window_size=case.window_size, sink_size=None, _sinks_all=True),
                         "sink keys are visible to queries before them: a sink key j is visible only when j <= i."))
    return hyps


def _wrong_kv_head(q, k, v, out, case, atol, rtol):
    """GQA: the output is attention over the wrong K/V head for a query head."""
    Hq, Hkv = q.shape[1], k.shape[1]
    if Hq == Hkv:
        return None
    for idx, why in ((torch.arange(Hq) % Hkv, "query head h reads K/V head h % Hkv; the course rule is "
                                               "h // (Hq // Hkv) (consecutive query heads share a K/V head)."),
                     (torch.zeros(Hq, dtype=torch.long), "every query head reads K/V head 0: the K/V head "
                                                        "offset (h // (Hq // Hkv)) * stride_kh is missing."),
                     (torch.arange(Hq).clamp(max=Hkv - 1), "query head h reads K/V head h (clamped): "
                                                            "use h // (Hq // Hkv).")):
        if _matches(out, _ref(q, k[:, idx], v[:, idx], case), atol, rtol):
            return why
    return None


def _unnormalised(out, o_ref, lse, atol, rtol, pytorch):
    """acc never divided by l: the reference times the softmax denominator (or its shape, scaled)."""
    unnormalised = o_ref * torch.exp(lse)[..., None]
    if _matches(out, unnormalised, atol, rtol) or \
            _matches(out / out.abs().amax().clamp(min=1e-30), unnormalised / unnormalised.abs().amax(), 1e-2, 1e-2):
        return ("the output was never divided by l_i (the softmax denominator): finish with "
                + ("acc / l_i[..., None]." if pytorch else "acc / l_i[:, None]."))
    return None


def _padded_keys_visible(q, out, o_ref, lse, case, atol, rtol, pytorch):
    """Without a causal mask: the keys past N (the zero padding of the last key tile: k = 0, v = 0, score 0)
    take part in the softmax."""
    if case.is_causal:
        return None
    N = q.shape[2]
    for block_n in (16, 32, 64, 128):
        pad = -N % block_n
        if pad and _matches(out, o_ref * (torch.exp(lse) / (torch.exp(lse) + pad))[..., None], atol, rtol):
            return (f"the {pad} key(s) past N in the last key tile take part in the softmax (score 0, "
                    f"weight exp(0 - m)): give keys past N a score of -inf, e.g. "
                    + ("s.masked_fill(~(offs_n < N)[None, :], float('-inf'))." if pytorch else
                       "tl.where(offs_n[None, :] < N, qk, float('-inf'))."))
    return None


# Mistakes in the online softmax update: the output equals a blockwise computation, over key tiles
# of BLOCK_N keys in ascending order, with one step of the update done wrong. The words follow the
# notebooks: Problem 1 writes m_new and torch.exp, the Triton problems m_ij and exp2.
_UPDATE_WORDS = {
    False: dict(m_new="m_ij", alpha="alpha = exp2(m_i - m_ij)", pv="p @ v", rows="[:, None]"),
    True: dict(m_new="m_new", alpha="alpha = torch.exp(m_i - m_safe)", pv="p @ v_tile", rows="[..., None]"),
}
_ONLINE_MISTAKES = (
    ("acc", "acc is not rescaled: when the running max grows from m_i to {m_new}, multiply acc by "
            "{alpha} before adding {pv} (right only while the max never changes)."),
    ("l", "l_i is not rescaled: when the running max grows, multiply l_i by {alpha} "
          "before adding the row sums of p."),
    ("both", "nothing is rescaled (alpha is always 1): compute {alpha} from the OLD m_i, "
             "rescale acc and l_i by it, and only then set m_i = {m_new}."),
    ("divide", "acc is divided by l_i inside the loop, after every tile: keep acc unnormalised in the "
               "loop and divide once, after the last tile (acc / l_i{rows})."),
)


def _online_softmax(q, k, v, visible, block_n, mistake):
    """float64 blockwise attention with one planted mistake; rows that see nothing stay 0."""
    group = q.shape[1] // k.shape[1]
    kk = k.double().repeat_interleave(group, 1)
    vv = v.double().repeat_interleave(group, 1)
    s_all = (q.double() @ kk.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    s_all = s_all.masked_fill(~visible, float("-inf"))
    N = q.shape[2]
    m = torch.full(s_all.shape[:-1], float("-inf"), dtype=torch.float64, device=s_all.device)
    l = torch.zeros_like(m)
    acc = torch.zeros(*s_all.shape[:-1], q.shape[-1], dtype=torch.float64, device=s_all.device)
    for start in range(0, N, block_n):
        s = s_all[..., start:start + block_n]
        m_new = torch.maximum(m, s.amax(-1))
        m_sub = torch.where(m_new == float("-inf"), 0.0, m_new)
        p = torch.exp(s - m_sub[..., None])
        alpha = torch.exp(m - m_sub)
        l = (l if mistake in ("l", "both") else l * alpha) + p.sum(-1)
        acc = (acc if mistake in ("acc", "both") else acc * alpha[..., None]) + p @ vv[..., start:start + block_n, :]
        if mistake == "divide":
            acc = acc / torch.where(l > 0, l, 1.0)[..., None]
        m = m_new
    return acc if mistake == "divide" else acc / torch.where(l > 0, l, 1.0)[..., None]


def online_softmax_hypotheses(q, k, v, out, case, atol, rtol, pytorch=False):
    """A sentence when the output equals the online softmax with a known wrong update step."""
    from ..spec.tiles import attention_tiles
    N, D = q.shape[2], q.shape[-1]
    if N <= 1 or N > 4096:
        return None
    sizes = []
    try:
        sizes.append(attention_tiles(D, q.dtype, case.is_causal)["BLOCK_N"])
    except ValueError:
        pass
    sizes += [n for n in (16, 32, 64, 128) if n not in sizes]
    visible = dense_mask(attention_mask(**case.mask_kwargs()), N, device=q.device)
    out = out.double()
    for block_n in sizes:
        if block_n >= N:
            break                      # one tile: every mistake of the update gives the right answer
        for mistake, why in _ONLINE_MISTAKES:
            if _matches(out, _online_softmax(q, k, v, visible, block_n, mistake), atol, rtol):
                return why.format(**_UPDATE_WORDS[pytorch])
    return None


def _tile_local_mask(q, k, v, out, case, atol, rtol):
    """True when the output is attention with the mask evaluated on tile-local indices
    (i % BLOCK_M, j % BLOCK_N) for some tile sizes, the bounds j < N kept."""
    N = q.shape[2]
    if N > 512:
        return False
    mask_fn = attention_mask(**case.mask_kwargs())
    idx = torch.arange(N, device=q.device)
    out = out.double()
    for bm in (8, 16, 32, 64, 128):
        for bn in (8, 16, 32, 64, 128):
            if bm >= N and bn >= N:
                continue                 # one tile each way: local and global indices agree
            vis = mask_fn((idx % bm)[:, None], (idx % bn)[None, :])
            if vis.any(-1).all() and _matches(out, dense_attention64(q, k, v, vis), atol, rtol):
                return True
    return False


def _noncausal_sinks(q, k, v, case):
    """Window | (j < S) without the j <= i condition on sinks."""
    N = q.shape[2]
    idx = torch.arange(N, device=q.device)
    vis = dense_mask(attention_mask(True, case.window_size, None), N, device=q.device) | (idx[None, :] < case.sink_size)
    return dense_attention64(q, k, v, vis)


def _fmt_ranges(idx):
    idx = sorted(set(int(i) for i in idx))
    if not idx:
        return "none"
    out, start, prev = [], idx[0], idx[0]
    for i in idx[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    s = ", ".join(out[:6])
    return s + (f", ... ({len(out)} ranges)" if len(out) > 6 else "")


def _tile_run_hidden(l, o, cvw, cvwv, close, N, device):
    """Two or more consecutive whole key tiles dropped (a loop bound off by several tiles): the
    (start, end) keys of the first such run that explains the row, else None."""
    for tile in (16, 32, 64, 128):
        bounds = torch.cat([torch.arange(0, N, tile, device=device), torch.tensor([N], device=device)])
        if len(bounds) < 4 or len(bounds) > 257:
            continue
        a, e = torch.triu_indices(len(bounds), len(bounds), offset=2, device=device)
        dw = cvw[bounds[e]] - cvw[bounds[a]]
        dwv = cvwv[bounds[e]] - cvwv[bounds[a]]
        den = l - dw
        hit = (close((l * o - dwv) / den.clamp(min=1e-300)[:, None]) & (dw > 0) & (den > 1e-12 * l)).nonzero()
        if len(hit):
            first = int(hit[0])
            return int(bounds[a[first]]), int(bounds[e[first]])
    return None


def mask_flips(q, k, v, out, case, atol, rtol, max_rows=64, pytorch=False):
    """For wrong rows, find a key or tile of keys whose visibility flip explains the row.

    Returns a list of sentences (empty when nothing explains the error). pytorch: Problem 1, whose
    loops are given, so a wrong tile points at the mask rather than at loop bounds."""
    B, Hq, N, D = q.shape
    group = Hq // k.shape[1]
    vis = dense_mask(attention_mask(**case.mask_kwargs()), N, device=q.device)   # [N, N]
    o_ref = _ref(q, k, v, case)
    bad = ~torch.isclose(out.double(), o_ref, atol=atol, rtol=rtol)
    bad_rows = bad.any(-1).nonzero().tolist()      # [b, h, i]
    if not bad_rows or N > 4096:
        return []
    total_bad = len(bad_rows)
    bad_rows = bad_rows[:max_rows]
    explained = Counter()
    columns = Counter()             # single-key stories by absolute key index: one wrong key column
    column_rows = {}
    examples = {}
    unexplained = 0
    for b, h, i in bad_rows:
        kv = h // group
        qi = q[b, h, i].double()
        kk, vv = k[b, kv].double(), v[b, kv].double()
        s = (kk @ qi) / math.sqrt(D)                               # [N]
        w = torch.exp(s - s[vis[i]].max())
        vis_i = vis[i]
        l = w[vis_i].sum()
        o = (w[vis_i, None] * vv[vis_i]).sum(0) / l
        sign = torch.where(vis_i, -1.0, 1.0).double()             # flipping removes visible, adds hidden
        target = out[b, h, i].double()

        def close(o2):               # [M, D] candidate rows -> [M] bool
            return (torch.abs(o2 - target) <= atol + rtol * torch.abs(o2)).all(-1)
        found = None
        # one key flipped: o' = (l o + sign_j w_j v_j) / (l + sign_j w_j), for every j at once
        sw = sign * w
        denom = l + sw
        o1 = (l * o + sw[:, None] * vv) / denom.clamp(min=1e-300)[:, None]
        hit = (close(o1) & (denom > 0)).nonzero()
        if len(hit):
            j = int(hit[0])
            found = ("hidden" if vis_i[j] else "visible", j - i, None)
        else:
            # one tile of keys flipped, for the usual tile sizes
            csw = torch.cat([sw.new_zeros(1), sw.cumsum(0)])
            cswv = torch.cat([vv.new_zeros(1, D), (sw[:, None] * vv).cumsum(0)])
            vw = torch.where(vis_i, w, 0.0)
            cvw = torch.cat([vw.new_zeros(1), vw.cumsum(0)])
            cvwv = torch.cat([vv.new_zeros(1, D), (vw[:, None] * vv).cumsum(0)])
            for tile in (16, 32, 64, 128):
                starts = torch.arange(0, N, tile, device=q.device)
                ends = (starts + tile).clamp(max=N)
                flip_w, flip_wv = csw[ends] - csw[starts], cswv[ends] - cswv[starts]    # every key flipped
                vis_w, vis_wv = cvw[ends] - cvw[starts], cvwv[ends] - cvwv[starts]      # its visible keys
                # (what the kernel did to the tile, the weight and weighted values it adds, where possible)
                stories = (
                    ("flipped", flip_w, flip_wv, l + flip_w > 0),
                    # its visible keys dropped: a loop bound skips a tile the row needs
                    ("hidden", -vis_w, -vis_wv, (vis_w > 0) & (l - vis_w > 1e-12 * l)),
                    # its hidden keys made visible: a tile that needs the mask runs without it
                    ("visible", flip_w + vis_w, flip_wv + vis_wv, flip_w + vis_w > 0),
                    # its visible keys counted twice: two phases visit it
                    ("twice", vis_w, vis_wv, vis_w > 0),
                )
                for kind, dw, dwv, possible in stories:
                    hit = (close((l * o + dwv) / (l + dw).clamp(min=1e-300)[:, None]) & possible).nonzero()
                    if len(hit):
                        a, e = int(starts[int(hit[0])]), int(ends[int(hit[0])])
                        if kind == "flipped":
                            tv = vis_i[a:e]
                            kind = "hidden" if tv.all() else "visible" if not tv.any() else "flipped"
                        found = (kind, None, (a, e))
                        break
                if found is not None:
                    break
            if found is None:
                run = _tile_run_hidden(l, o, cvw, cvwv, close, N, q.device)
                if run is not None:
                    found = ("hidden_run", None, run)
        if found is None:
            unexplained += 1
            continue
        kind, offset, tile_range = found
        if tile_range is None:
            columns[(kind, i + offset)] += 1
            column_rows.setdefault((kind, i + offset), []).append(i)
        key = (kind, offset) if tile_range is None else (kind, "tile")
        explained[key] += 1
        examples.setdefault(key, (b, h, i, offset, tile_range))
    msgs = []
    # a wrong loop bound also leaves rows that one key happens to explain; when a whole tile
    # explains some rows, the single-key stories would blame a mask that may be right
    has_tile = any(offset == "tile" for _, offset in explained)
    # the same key wrong in many rows (a sink bound, a sink tile left out) reads better by column
    by_column = False
    if columns and not has_tile:
        (kind, j), count = columns.most_common(1)[0]
        if count > 1 and count > max(c for (kd, off), c in explained.items() if off != "tile"):
            by_column = True
            msgs.append(f"{count} wrong row(s) match the reference with key {j} "
                        f"{'hidden' if kind == 'hidden' else 'visible'} (query rows "
                        f"{_fmt_ranges(column_rows[(kind, j)])}): your kernel "
                        + ("drops key " if kind == "hidden" else "lets these rows see key ") + f"{j}."
                        + _column_hint(case, kind, j))
    for (kind, offset), count in explained.most_common(3):
        if by_column or (has_tile and offset != "tile"):
            continue
        b, h, i, off, tile_range = examples[(kind, offset)]
        if offset == "tile":
            a, e = tile_range
            if kind == "twice":
                msgs.append(f"{count} wrong row(s) match the reference with the keys of key tile {a}-{e - 1} "
                            f"counted twice (e.g. batch {b}, head {h}, query row {i}): two phases visit the "
                            f"same tile. Clamp each phase's range so they do not overlap "
                            f"(e.g. full_hi >= full_lo, sink_hi <= lo).")
                continue
            example = f"(e.g. batch {b}, head {h}, query row {i})"
            if pytorch:     # the loops are given: a whole tile wrong is the mask of that tile
                msgs.append(f"{count} wrong row(s) match the reference with keys {a}-{e - 1} "
                            f"{'hidden' if kind.startswith('hidden') else kind} {example}: check the mask of "
                            f"that key tile: mask_fn takes positions in the sequence (offs_m, offs_n), not "
                            f"in the tile, and only keys j >= N are out of bounds.")
            elif kind == "hidden_run":
                msgs.append(f"{count} wrong row(s) match the reference with keys {a}-{e - 1} hidden, "
                            f"several whole key tiles {example}: your kernel skips key tiles it must "
                            f"visit: check the loop bounds.")
            else:
                msgs.append(f"{count} wrong row(s) match the reference with key tile {a}-{e - 1} {kind} "
                            f"{example}: your kernel "
                            + ("skips a key tile it must visit: check the loop bounds." if kind == "hidden"
                               else "visits keys the mask rules out: check the loop bounds and the mask."))
        else:
            j = i + off
            rel = "the diagonal key j = i" if off == 0 else f"key j = i {'+' if off > 0 else '-'} {abs(off)}"
            what = "should be visible but your kernel hides it" if kind == "hidden" else \
                "should be hidden but your kernel lets the query see it"
            msgs.append(f"{count} wrong row(s) are off by exactly one key: {rel} {what} "
                        f"(e.g. batch {b}, head {h}, query row {i}, key {j}).{_mask_hint(case, kind, off, j)}")
    if msgs and total_bad > len(bad_rows):
        msgs.append(f"(the first {len(bad_rows)} of {total_bad} wrong rows were examined)")
    if unexplained and msgs:
        msgs.append(f"{unexplained} other wrong row(s) have no single-key or single-tile explanation.")
    return msgs


def _column_hint(case, kind, j):
    S = case.sink_size or 0
    if kind == "visible" and case.is_causal and j == S:
        return f" Only keys j < S are sinks (here S = {S}), not j <= S."
    if kind == "hidden" and j < S:
        return (f" Key {j} is a sink (j < S = {S}): every query i >= {j} sees it. Outside the window it "
                f"comes from the sink phase, whose range [0, sink_hi) must reach it: round sink_hi up to a "
                f"whole tile (cdiv(S, BLOCK_N) * BLOCK_N, clamped at lo), and keep j < S in the mask.")
    return " Check the mask and the loop bounds for that key."


def _mask_hint(case, kind, off, j):
    if off == 0 and kind == "hidden":
        return " Causal attention keeps the diagonal: visible when j <= i (not j < i)."
    if off > 0 and kind == "visible":
        return " A query must not see future keys: visible only when j <= i."
    W = case.window_size
    S = case.sink_size
    if W is not None and kind == "visible" and j == (S or 0) and off != -W:
        return f" Only keys j < S are sinks (here S = {S or 0}), not j <= S."
    if W is not None and off == -W and kind == "visible":
        if case.sink_size and j < case.sink_size:
            return ""
        return (f" The window has W = {W} keys counting the diagonal: j >= i - (W - 1). If your mask says "
                f"so, a key tile that needs the window mask runs without it: check the loop bounds.")
    if W is not None and off == -(W - 1) and kind == "hidden":
        return f" The window has W = {W} keys counting the diagonal: j >= i - (W - 1), not j > i - (W - 1)."
    if S and kind == "hidden" and j < S:
        return f" Sink keys j < S = {S} stay visible to every query i >= j."
    if S and kind == "visible" and j == S:
        return f" Only keys j < S = {S} are sinks (not j <= S)."
    return ""


def locate(bad: torch.Tensor, out_shape, pytorch=False, rows_are="query rows", grid_hint=True):
    """Summarise where the wrong elements are: batches, heads, query rows (hints in PyTorch's words
    for Problem 1, whose given code does the indexing and the grid is a Python loop). dK and dV are
    indexed by keys: pass rows_are="key rows". grid_hint=False: no "only the last rows" hint (a named
    mistake already explains them)."""
    idx = bad.nonzero()
    bs, hs, rows = idx[:, 0].unique().tolist(), idx[:, 1].unique().tolist(), idx[:, 2].unique().tolist()
    B, H, N, _ = out_shape
    parts = [f"batch {_fmt_ranges(bs)}" + (" (all)" if len(bs) == B else f" of {B}"),
             f"head {_fmt_ranges(hs)}" + (" (all)" if len(hs) == H else f" of {H}"),
             f"{rows_are} {_fmt_ranges(rows)}" + (" (all)" if len(rows) == N else f" of {N}")]
    hints = []
    if len(bs) < B and bs and min(bs) > 0:
        hints.append("only batches after the first are wrong: " +
                     ("keep the batch dim in every tensor (no [0] indexing, no reshape that mixes batches)."
                      if pytorch else "is the batch offset (b * stride_qb) applied?"))
    if len(hs) < H and hs and min(hs) > 0 and len(bs) == B:
        hints.append("only some heads are wrong: " +
                     ("keep the head dim in every tensor (for GQA, query head h reads K/V head h // (Hq // Hkv))."
                      if pytorch else "check the head offsets and strides (and the K/V head for GQA)."))
    suffix = rows and max(rows) == N - 1 and len(rows) == N - min(rows)
    if grid_hint and suffix and 0 < len(rows) <= N // 2:
        tiles = "cdiv(N, BLOCK_N) key tiles" if rows_are == "key rows" else "cdiv(N, BLOCK_M) query tiles"
        hints.append(f"only the last rows ({min(rows)}-{N - 1}) are wrong: " +
                     ("check the bounds mask (keys j >= N of the padded last tile get -inf)." if pytorch else
                      f"check the bounds masks and that the grid covers {tiles}."))
    return ", ".join(parts), hints


# exp(x) of a float32 is 0 or subnormal below this: with m_i = 0 a row whose best score is lower
# adds nothing to l_i
_UNDERFLOW = -87.0
M_I_HINT = ("m_i must start at -inf (a row whose scores are all very negative underflows to 0/0 with "
            "m_i = 0): the running max has to be the max of the scores seen, never 0.")


def underflow_rows(q, k, case):
    """[B, Hq, N] bool: rows whose every visible score (scaled by 1/sqrt(D)) is below exp's range."""
    N = q.shape[2]
    group = q.shape[1] // k.shape[1]
    s = (q.double() @ k.double().repeat_interleave(group, 1).transpose(-1, -2)) / math.sqrt(q.shape[-1])
    vis = dense_mask(attention_mask(**case.mask_kwargs()), N, device=q.device)
    best = s.masked_fill(~vis, float("-inf")).amax(-1)
    return best < _UNDERFLOW


def underflow_hypothesis(q, k, bad_rows, case):
    """M_I_HINT when every wrong row (a [B, Hq, N] bool) is a row whose scores all underflow."""
    if not bad_rows.any() or q.shape[2] > 4096:
        return None
    low = underflow_rows(q, k, case)
    return M_I_HINT if bool((bad_rows <= low).all()) else None


def nan_hypotheses(q, k, v, out, case, atol, rtol):
    """For an output with NaN rows: a sentence when they are the rows whose scores all underflow
    (m_i started at 0), or when it equals attention with the diagonal hidden (rows left with no
    key give 0/0), else None."""
    got = out.double()
    nan_rows = ~torch.isfinite(got).all(-1)                       # [B, H, N]
    hint = underflow_hypothesis(q, k, nan_rows, case)
    if hint or not case.is_causal:
        return hint
    N = q.shape[2]
    vis = dense_mask(attention_mask(**case.mask_kwargs()), N, device=q.device)
    vis = vis & ~torch.eye(N, dtype=torch.bool, device=q.device)
    empty = ~vis.any(-1)                                          # rows that would see nothing
    if not torch.equal(nan_rows, empty.expand_as(nan_rows)):
        return None
    if (~empty).any():
        alt = dense_attention64(q, k, v, vis)
        rows = ~empty
        if not torch.allclose(got[..., rows, :], alt[..., rows, :], atol=atol, rtol=rtol):
            return None
    return ("your mask hides the diagonal key j = i: a query must see its own key (visible when j <= i"
            + (f"; the window of W = {case.window_size} keys counts the diagonal: j >= i - (W - 1)"
               if case.window_size is not None else "")
            + "). Rows left with no visible key divide 0 by 0.")


# which tensor a kernel addresses with another's strides, in the order the mistake is made
_MIXUPS = [("do", "q"), ("v", "k"), ("k", "q"), ("v", "q"), ("q", "do"), ("k", "v"), ("q", "k"), ("q", "v"),
           ("do", "k"), ("do", "v"), ("k", "do"), ("v", "do")]
_SHOWN = {"q": "q", "k": "k", "v": "v", "do": "dO"}


def stride_mixup(case, tensors: dict, passes) -> str | None:
    """A `mixed` layout case failed and contiguous copies pass: find the tensor read with another's
    strides. `tensors`: name ("q", "k", "v", "do") -> tensor; `passes(tensors)`: whether the student's
    function is right on these inputs. Giving x the layout of y makes their strides equal: when that
    alone makes the answer right, the kernel addresses x with y's strides (or y with x's)."""
    from ..spec.cases import in_layout
    for x, y in _MIXUPS:
        if x not in tensors or y not in tensors or tensors[x].shape != tensors[y].shape \
                or case.layout_of(x) == case.layout_of(y):
            continue
        trial = dict(tensors, **{x: in_layout(tensors[x], case.layout_of(y))})
        try:
            ok = passes(trial)
        except Exception:   # noqa: BLE001 - a failure on the trial inputs is a no
            ok = False
        if ok:
            X, Y = _SHOWN[x], _SHOWN[y]
            return (f"{X} and {Y} are mixed up: with {X} stored like {Y} ({case.layout_of(y)}, the same strides) "
                    f"the answer is right, so the kernel addresses {X} with {Y}'s strides (or {Y} with {X}'s). "
                    f"Pass each tensor its own strides ({'*' + x + '.stride()'}) and use them for that "
                    f"tensor's pointers only.")
    return None

