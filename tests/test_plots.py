"""The tile schedule model (autograder.schedule) and the course's pictures (autograder.plots)."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")

import math  # noqa: E402
import sys  # noqa: E402
from collections import Counter  # noqa: E402

import matplotlib.image  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import autograder  # noqa: E402,F401
from autograder import masks, plots, schedule  # noqa: E402
from autograder.watch.guard import POISON  # noqa: E402

# (n, block_m, block_n, is_causal, window_size, sink_size): ragged n, BLOCK_M != BLOCK_N both ways,
# windows narrower than a tile, sinks inside and outside the window, the GPU tiles (128, 64)
CONFIGS = [
    (64, 32, 16, False, None, None), (72, 32, 16, False, None, None), (5, 16, 16, False, None, None),
    (64, 32, 16, True, None, None), (100, 32, 16, True, None, None), (1, 32, 16, True, None, None),
    (40, 16, 32, True, None, None), (70, 24, 16, True, None, None),
    (100, 32, 16, True, 1, None), (100, 32, 16, True, 8, None), (100, 32, 16, True, 40, None),
    (97, 16, 32, True, 17, None), (200, 32, 16, True, 33, 4), (200, 32, 16, True, 8, 20),
    (130, 16, 16, True, 16, 16), (100, 32, 16, True, 100, 3), (66, 32, 16, True, 5, 1),
    (1000, 128, 64, True, 256, 4), (1000, 128, 64, True, None, None), (777, 128, 64, True, 100, 70),
]


def _ids(cfg):
    n, bm, bn, c, w, s = cfg
    return f"n{n}-{bm}x{bn}-" + ("causal" if c else "full") + (f"-W{w}" if w else "") + (f"-S{s}" if s else "")


def _grid(n, bm, bn):
    return -(-n // bm), -(-n // bn)


@pytest.mark.parametrize("cfg", CONFIGS, ids=_ids)
def test_schedule_against_tile_classes(cfg):
    n, bm, bn, is_causal, w, s = cfg
    classes = masks.tile_classes(masks.attention_mask(is_causal, w, s), n, bm, bn)
    tm, tn = _grid(n, bm, bn)
    ph = schedule.phases(n, bm, bn, is_causal, w, s)
    assert list(ph) == list(schedule.CAUSAL_PHASES if is_causal else schedule.NONCAUSAL_PHASES)
    times = Counter(pair for pairs in ph.values() for pair in pairs)
    assert max(times.values()) == 1, "a tile is visited twice"
    for name, pairs in ph.items():
        for m, j in pairs:
            assert 0 <= m < tm
            if j >= tn:
                # the only tiles outside the grid: the window-edge loop of a ragged last query tile
                # runs to full_lo = cdiv(last_m - (W - 1), BLOCK_N) * BLOCK_N, computed from the
                # padded last row; those key tiles start at or after N, so every load is masked off
                assert name == "window edge" and m == tm - 1 and n % bm != 0 and j * bn >= n, (name, m, j)
                continue
            assert classes[m, j] != masks.SKIP, f"{name} visits an empty tile ({m}, {j})"
            if not schedule.MASKED[name]:
                assert classes[m, j] == masks.FULL, f"{name} runs without a mask on a partial tile ({m}, {j})"
    past_end = [pair for pair, _ in times.items() if pair[1] >= tn]
    assert len(past_end) <= -(-bm // bn)
    # every tile with a visible pair is visited, and (from the loop above) no empty one is
    grid = schedule.visits(n, bm, bn, is_causal, w, s)
    assert grid.shape == (tm, tn)
    assert torch.equal(grid > 0, classes != masks.SKIP)
    assert all(times[(m, j)] == 1 for m, j in (classes != masks.SKIP).nonzero().tolist())


def _replay(phases, n, bm, bn, w, s):
    """How many times each (query, key) pair is counted when every phase's tiles run with that phase's mask
    (none, j < N, causal & (window | sinks), j < S)."""
    window, sinks = w or n, s or 0
    counted = torch.zeros(n, n, dtype=torch.int64)
    for name, pairs in phases.items():
        for m, j in pairs:
            i = torch.arange(m * bm, (m + 1) * bm)[:, None]
            k = torch.arange(j * bn, (j + 1) * bn)[None, :]
            if name in ("full", "unmasked"):
                seen = torch.ones(bm, bn, dtype=torch.bool)
            elif name == "tail":
                seen = (k < n).expand(bm, bn)
            elif name == "sinks":
                seen = (k < sinks).expand(bm, bn)
            else:
                seen = (k <= i) & ((k >= i - (window - 1)) | (k < sinks))
            keep = (i < n).expand(bm, bn) & (k < n) & seen
            counted[i.expand(bm, bn)[keep], k.expand(bm, bn)[keep]] += 1
    return counted


@pytest.mark.parametrize("cfg", CONFIGS, ids=_ids)
def test_schedule_counts_each_visible_pair_once(cfg):
    """Replay the kernel: each phase's loop with its own mask (none, j < N, causal & (window |
    sinks), j < S). Every visible pair must be counted exactly once and no hidden pair at all -
    this is what catches a sink key counted both in the sink loop and in the window."""
    n, bm, bn, is_causal, w, s = cfg
    dense = masks.dense_mask(masks.attention_mask(is_causal, w, s), n)
    counted = _replay(schedule.phases(n, bm, bn, is_causal, w, s), n, bm, bn, w, s)
    assert torch.equal(counted, dense.long())


def test_schedule_examples():
    # non-causal, N = 72 with 16-key tiles: 4 full key tiles and a tail of 8 keys per query tile
    c = schedule.counts(72, 32, 16)
    assert c == {"full": 12, "tail": 3, "skipped": 0}
    # causal, GPU tiles: query tile m reads 2m unmasked key tiles and 2 diagonal ones
    c = schedule.counts(1024, 128, 64, is_causal=True)
    assert c == {"sinks": 0, "window edge": 0, "unmasked": 56, "diagonal": 16, "skipped": 56}
    r = schedule.key_ranges(1024, 128, 64, is_causal=True, window_size=256, sink_size=4)[5]
    # rows 640..767, window 256: lo = 385 // 64 * 64, full_lo = cdiv(512, 64) * 64, full_hi = 641 // 64 * 64
    assert r == {"sinks": (0, 64), "window edge": (384, 512), "unmasked": (512, 640), "diagonal": (640, 768)}
    # one query row, 32-row query tiles: the window-edge loop runs past the only key
    assert schedule.phases(1, 32, 16, is_causal=True)["window edge"] == [(0, 0), (0, 1)]
    assert schedule.visits(1, 32, 16, is_causal=True).tolist() == [[schedule.PHASE_IDS["window edge"]]]


def test_schedule_linear_in_n_with_window():
    def visited(n, **kw):
        return sum(len(p) for p in schedule.phases(n, 128, 64, is_causal=True, **kw).values())
    ns = [1024 * k for k in range(2, 9)]
    for kw in (dict(window_size=256), dict(window_size=256, sink_size=4), dict(window_size=1000, sink_size=100)):
        v = [visited(n, **kw) for n in ns]
        steps = {b - a for a, b in zip(v, v[1:])}
        assert len(steps) == 1, (kw, v)                   # same number of new tiles per 1024 rows
        per_query_tile = -(-kw["window_size"] // 64) + 3 + -(-(kw.get("sink_size") or 0) // 64)
        assert v[-1] <= (ns[-1] // 128) * per_query_tile
    # plain causal is quadratic: the test above can tell the difference
    v = [visited(n) for n in ns]
    assert len({b - a for a, b in zip(v, v[1:])}) == len(ns) - 1


def test_schedule_rejects_bad_arguments():
    with pytest.raises(ValueError):
        schedule.phases(64, 32, 16, is_causal=False, window_size=8)
    with pytest.raises(ValueError):
        schedule.phases(0, 32, 16)
    with pytest.raises(ValueError):
        schedule.visits(64, 32, 0, is_causal=True)


# ----------------------------------------------------------------------------- pictures

def _assert_png(path, min_bytes=5000):
    assert path.exists() and path.stat().st_size > min_bytes, path
    img = matplotlib.image.imread(path)[..., :3]
    assert img.std() > 0.05, f"{path.name} is (nearly) one flat color"
    colors = {tuple(c) for c in (img.reshape(-1, 3) * 255).round().astype(int)[::7].tolist()}
    assert len(colors) > 3, f"{path.name} has only {len(colors)} colors"


@pytest.fixture(autouse=True)
def _no_pyplot_figures():
    before = sys.modules["matplotlib.pyplot"].get_fignums() if "matplotlib.pyplot" in sys.modules else []
    yield
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == before, "a plot registered a pyplot figure"


@pytest.mark.parametrize("args", [dict(), dict(is_causal=True), dict(is_causal=True, window_size=8),
                                  dict(is_causal=True, window_size=8, sink_size=2)])
def test_show_mask(tmp_path, args):
    fig = plots.show_mask(**args, n=32)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "key index j" and ax.get_ylabel() == "query index i"
    assert masks.attention_mask(**args).__name__ in ax.get_title()
    visible = masks.dense_mask(masks.attention_mask(**args), 32).sum()
    assert f"{int(visible)} of 1024 pairs visible" in ax.get_title()
    _assert_png(plots.save(fig, tmp_path / "mask.png"))


def test_show_mask_predicate(tmp_path):
    fig = plots.show_mask(masks.or_masks(masks.sliding_window(4), masks.sinks(2)), n=24)
    assert fig.axes[0].get_title().startswith("sliding_window(4) | sinks(2)")
    assert plots.show_mask(mask_fn=masks.causal, n=8).axes[0].get_title().startswith("causal")
    with pytest.raises(ValueError):
        plots.show_mask(True, mask_fn=masks.causal)
    _assert_png(plots.save(fig, tmp_path / "pred.png"))


def test_show_mask_into_axes(tmp_path):
    fig = plots.CourseFigure(figsize=(8, 4))
    axes = fig.subplots(1, 2)
    assert plots.show_mask(True, n=16, ax=axes[0]) is fig
    assert plots.show_mask(True, 4, n=16, ax=axes[1]) is fig
    _assert_png(plots.save(fig, tmp_path / "two.png"))


@pytest.mark.parametrize("cfg", [(72, 32, 16, False, None, None), (256, 32, 16, True, None, None),
                                 (200, 32, 16, True, 40, 4), (1, 32, 16, True, None, None)], ids=_ids)
def test_show_tile_schedule(tmp_path, cfg):
    n, bm, bn, c, w, s = cfg
    fig = plots.show_tile_schedule(n, bm, bn, is_causal=c, window_size=w, sink_size=s)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "key index j" and ax.get_ylabel() == "query index i"
    counts = schedule.counts(n, bm, bn, c, w, s)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert f"skipped: {counts['skipped']}" in labels
    # loops that cannot run for these arguments (no sinks, no window) are left out of the legend
    shown = [name for name in counts if name != "skipped"
             and not (name == "sinks" and not s) and not (name == "window edge" and w is None)]
    assert len(labels) == len(shown) + 1
    for name in shown:
        assert any(lab.startswith(f"{name} (") and lab.endswith(f": {counts[name]}") for lab in labels), labels
    _assert_png(plots.save(fig, tmp_path / "schedule.png"), min_bytes=2000 if n == 1 else 5000)


def test_show_error_heatmap(tmp_path):
    torch.manual_seed(0)
    expected = torch.randn(2, 4, 100, 32)
    out = expected.clone()
    out[1, 2, 64:] += 0.05                  # a wrong query tile
    out[1, 1, 30, 3] = float("nan")
    out[1, 3, 96:] = POISON                 # rows never written
    atol = rtol = 4e-3
    bad = ((out - expected).abs() > atol + rtol * expected.abs()) | ~torch.isfinite(out)
    fig = plots.show_error_heatmap(out, expected, atol, rtol, block_n=16, block_m=32)
    title = fig.get_suptitle()
    assert f"{int(bad.sum())} of {out.numel()} elements out of tolerance" in title
    assert "batch 1 of 2" in title
    panels = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert panels == ["head 0: 0 bad of 3200", "head 1: 1 bad of 3200", f"head 2: {36 * 32} bad of 3200",
                      "head 3: 128 bad of 3200"]
    _assert_png(plots.save(fig, tmp_path / "err.png"))


def test_show_error_heatmap_many_heads_long_rows(tmp_path):
    expected = torch.randn(1, 12, 2000, 16)
    out = expected.clone()
    out[0, 11, 1999] += 1.0                 # one bad row at the very end: must survive the row bands
    fig = plots.show_error_heatmap(out.half(), expected.half(), 4e-3, 4e-3)
    panels = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(panels) == 8 and panels[-1].startswith("head 11: 16 bad")
    img = fig.axes[-1].images[0].get_array()
    assert img.shape[0] <= 256 and img[-1].min() >= 2
    _assert_png(plots.save(fig, tmp_path / "err_long.png"))
    with pytest.raises(ValueError):
        plots.show_error_heatmap(out, expected[..., :8], 1e-3, 1e-3)


def test_plot_benchmark(tmp_path):
    records = [dict(name=name, N=N, tflops=t * N / 16384, shape="ignored", ms=1.0)
               for name, t in (("yours", 300.0), ("reference", 350.0), ("SDPA flash", 400.0))
               for N in (4096, 8192, 16384)]
    records += [dict(name="naive", N=4096, tflops=30.0), dict(name="naive", N=8192, tflops=math.nan)]
    fig = plots.plot_benchmark(records)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["yours", "reference", "SDPA flash", "naive"]
    assert list(ax.get_lines()[0].get_xdata()) == [4096, 8192, 16384]
    assert len(ax.get_lines()[-1].get_xdata()) == 1          # the NaN record is dropped
    assert ax.get_xlabel() == "sequence length N" and "TFLOP/s" in ax.get_ylabel()
    _assert_png(plots.save(fig, tmp_path / "bench.png"))
    empty = plots.plot_benchmark([])                           # what a CPU machine's benchmark returns
    plots.save(empty, tmp_path / "empty.png")
    assert (tmp_path / "empty.png").stat().st_size > 1000


def test_figures_render_inline_without_pyplot():
    png = plots.show_mask(True, n=8)._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


# the dK/dV kernel's schedule: the window transposed (BLOCK_N a multiple of BLOCK_M there)
BACKWARD_CONFIGS = [(n, min(bm, bn), max(bm, bn), c, w, s) for n, bm, bn, c, w, s in CONFIGS
                    if max(bm, bn) % min(bm, bn) == 0]


@pytest.mark.parametrize("cfg", BACKWARD_CONFIGS, ids=_ids)
def test_backward_schedule_counts_each_visible_pair_once(cfg):
    """Replay the dK/dV kernel: per key tile, each phase's query tiles with its own mask. Every visible pair
    counted once, no hidden one, and a tile is visited exactly when it holds a visible pair."""
    n, bm, bn, is_causal, w, s = cfg
    dense = masks.dense_mask(masks.attention_mask(is_causal, w, s), n)
    counted = _replay(schedule.backward_phases(n, bm, bn, is_causal, w, s), n, bm, bn, w, s)
    assert torch.equal(counted, dense.long())
    classes = masks.tile_classes(masks.attention_mask(is_causal, w, s), n, bm, bn)
    assert torch.equal(schedule.backward_visits(n, bm, bn, is_causal, w, s) > 0, classes != masks.SKIP)


def test_backward_schedule_rejects_a_key_tile_that_is_not_whole_query_tiles():
    with pytest.raises(ValueError, match="multiple of BLOCK_M"):
        schedule.query_ranges(64, 32, 16, True)


def test_backward_picture_marks_both_programs_bounds():
    fig = plots.show_backward_tiles(96, 16, 32, True, 40, 4)
    left, right = fig.axes[:2]
    left_marks = {t.get_text() for t in left.texts}
    right_marks = {t.get_text() for t in right.texts}
    # key tile 0 holds the sinks: diagonal [0, 32), window edge [32, 80), sinks [80, 96)
    assert left_marks == {"start_n + BLOCK_N = full_hi", "hi", "sink_hi"}, left_marks
    assert {"hi", "lo"} <= right_marks and any("full_lo" in m for m in right_marks), right_marks
    assert "dK/dV kernel: key tile 0" in left.get_title() and "dQ kernel" in right.get_title()
    fig = plots.show_backward_tiles(96, 16, 32, True)                  # Problem 8: no window, no sinks
    assert {t.get_text() for t in fig.axes[0].texts} == {"start_n + BLOCK_N", "full_hi = hi"}
    with pytest.raises(ValueError, match="key_tile"):
        plots.show_backward_tiles(96, 16, 32, True, key_tile=3)
