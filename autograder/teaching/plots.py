"""Pictures of the course: masks, the kernel's tile schedule, where an output is wrong, benchmarks.

Every function builds a matplotlib Figure and returns it; nothing is shown or blocks (no pyplot,
no GUI backend). In a notebook a returned (or `display`ed) Figure renders inline, once; in a
script, `save(fig, "mask.png")`. Figures are not registered with pyplot, so none pile up.

Colors are fixed across problems: dark blue = visible pair, one color per kernel phase
(green = no mask, orange/red/purple/blue = masked loops), white = skipped.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Callable, Iterable, Optional

import matplotlib
import matplotlib.patches
import matplotlib.ticker

import numpy as np
import torch
from matplotlib.colors import BoundaryNorm, ListedColormap, to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from . import schedule
from ..spec.masks import attention_mask, dense_mask

VISIBLE = "#1f4e79"        # a visible (query, key) pair
HIDDEN = "#f2f2f2"         # a masked-out pair
SKIPPED = "#ffffff"
PHASE_COLORS = {
    "full": "#4daf4a",         # no mask: every pair of the tile is visible
    "unmasked": "#4daf4a",
    "tail": "#ff7f00",         # masked: the last, partial key tile (j < N)
    "diagonal": "#e41a1c",     # masked: causal diagonal (and the window's right end)
    "window edge": "#984ea3",  # masked: the left edge of the sliding window
    "sinks": "#377eb8",        # masked: sink keys j < S left of the window
}
MASK_ARGS_TEXT = "key j visible from query i"
# implementations of autograder.bench, same color in every problem's benchmark
IMPL_COLORS = {"yours": "#d62728", "reference": "#1f77b4", "SDPA flash": "#2ca02c", "SDPA cuDNN": "#17becf",
               "FlexAttention": "#9467bd", "naive": "#7f7f7f"}


class CourseFigure(Figure):
    """A Figure that renders itself as a PNG in Jupyter, whatever the backend. pyplot never sees
    it: nothing opens a window or blocks, and the notebook shows it exactly once."""

    def _repr_png_(self):
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=100, facecolor="white", bbox_inches="tight", pad_inches=0.1)
        return buf.getvalue()


def _figure(width, height):
    return CourseFigure(figsize=(width, height), layout="constrained")


def _mask_title(is_causal, window_size, sink_size):
    if not is_causal:
        return "non-causal (full)"
    parts = ["causal"]
    if window_size is not None:
        parts.append(f"window W={window_size}")
    if sink_size:
        parts.append(f"sinks S={sink_size}")
    return ", ".join(parts)


def _index_axes(ax, n_q, n_kv):
    ax.set_xlabel("key index j")
    ax.set_ylabel("query index i")
    ax.xaxis.set_label_position("top")
    ax.xaxis.tick_top()
    for axis, n in ((ax.xaxis, n_kv), (ax.yaxis, n_q)):
        axis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=8, integer=True))
    ax.set_xlim(-0.5, n_kv - 0.5)
    ax.set_ylim(n_q - 0.5, -0.5)


def show_mask(is_causal=False, window_size=None, sink_size=None, n: int = 32, ax=None,
              mask_fn: Optional[Callable] = None) -> Figure:
    """Dense picture of an attention mask: row i = query, column j = key, dark = visible.

    Pass the course's arguments (is_causal, window_size, sink_size), or any predicate from
    autograder.masks as `mask_fn` (or as the first argument): show_mask(masks.sliding_window(4))."""
    if callable(is_causal):
        mask_fn, is_causal = is_causal, False
    if mask_fn is None:
        mask_fn = attention_mask(is_causal, window_size, sink_size)
        subtitle = _mask_title(is_causal, window_size, sink_size)
    elif is_causal or window_size is not None or sink_size is not None:
        raise ValueError("pass either mask_fn or (is_causal, window_size, sink_size), not both")
    else:
        subtitle = None
    dense = dense_mask(mask_fn, n).cpu().numpy()
    if ax is None:
        fig = _figure(4.6, 4.8)
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    ax.imshow(dense, cmap=ListedColormap([HIDDEN, VISIBLE]), vmin=0, vmax=1, interpolation="nearest")
    if n <= 64:   # a cell per pair: thin white lines make single keys countable
        ax.set_xticks(np.arange(-0.5, n, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, n, 1), minor=True)
        ax.grid(which="minor", color="white", linewidth=0.4)
        ax.tick_params(which="minor", length=0)
    _index_axes(ax, n, n)
    name = getattr(mask_fn, "__name__", "mask")
    title = name if subtitle is None or name == subtitle else f"{name}\n{subtitle}"
    ax.set_title(f"{title}\n{int(dense.sum())} of {n * n} pairs visible (N={n}, dark = {MASK_ARGS_TEXT})",
                 fontsize=9)
    return fig


def _draw_tiles(ax, grid, n, block_m, block_n, is_causal, window_size, sink_size, focus=None):
    """One pixel per (query, key) pair in the color of the phase that visits its tile (grid: PHASE_IDS per
    [query tile, key tile]), pale where the mask hides the pair, white where no phase goes, black for a
    visible pair in a skipped tile (a bug). focus: ("row" | "col", index) keeps that tile row or column
    in full color and fades the others."""
    dense = dense_mask(attention_mask(is_causal, window_size, sink_size), n).cpu().numpy()
    colors = np.array([to_rgb(SKIPPED)] + [to_rgb(PHASE_COLORS[schedule.PHASE_NAMES[p]])
                                           for p in sorted(schedule.PHASE_NAMES)])
    phase_of_pair = np.repeat(np.repeat(grid, block_m, 0), block_n, 1)[:n, :n]
    rgb = colors[phase_of_pair]
    pale = ~dense & (phase_of_pair > 0)
    rgb[pale] = 0.25 * rgb[pale] + 0.75
    rgb[dense & (phase_of_pair == 0)] = 0.0
    if focus is not None:
        along, index = focus
        keep = np.zeros((n, n), dtype=bool)
        if along == "row":
            keep[index * block_m:(index + 1) * block_m, :] = True
        else:
            keep[:, index * block_n:(index + 1) * block_n] = True
        rgb[~keep] = 0.3 * rgb[~keep] + 0.7
    ax.imshow(rgb, interpolation="nearest")
    for i in range(0, n + 1, block_m):
        ax.axhline(i - 0.5, color="#555555", linewidth=0.8)
    for j in range(0, n + 1, block_n):
        ax.axvline(j - 0.5, color="#555555", linewidth=0.8)
    _index_axes(ax, n, n)
    for axis, block in ((ax.xaxis, block_n), (ax.yaxis, block_m)):      # tile starts, at most ~8 labels
        step = block * max(1, math.ceil(math.ceil(n / block) / 8))
        axis.set_ticks(range(0, n, step))


def show_tile_schedule(n: int, block_m: int, block_n: int, is_causal=False, window_size=None, sink_size=None,
                       ax=None) -> Figure:
    """The reference kernel's tiles, colored by the loop (phase) that visits them.

    Inside a visited tile, visible pairs are drawn in the phase's color and hidden ones pale: a pale
    pair in a masked tile is computed and then thrown away. White tiles are skipped."""
    ph = schedule.phases(n, block_m, block_n, is_causal, window_size, sink_size)
    grid = schedule.visits(n, block_m, block_n, is_causal, window_size, sink_size).numpy()
    own_figure = ax is None
    if own_figure:
        fig = _figure(6.0, 7.1)
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    _draw_tiles(ax, grid, n, block_m, block_n, is_causal, window_size, sink_size)

    tiles = grid.size
    skipped = int((grid == 0).sum())
    past_end = sum(1 for pairs in ph.values() for _, j in pairs if j >= grid.shape[1])
    title = (f"Tile schedule: {_mask_title(is_causal, window_size, sink_size)}, N={n}\n"
             f"BLOCK_M={block_m} query rows x BLOCK_N={block_n} keys per tile\n"
             f"{tiles - skipped} of {tiles} tiles visited, {skipped} skipped")
    if past_end:
        title += f"\n(+{past_end} visit(s) past the last key: masked loads, no work)"
    ax.set_title(title, fontsize=9)
    handles = [Patch(facecolor=PHASE_COLORS[name], edgecolor="#555555",
                     label=f"{name} ({'masked' if schedule.MASKED[name] else 'no mask'}): {len(pairs)}")
               for name, pairs in ph.items()
               # a loop that cannot run for these arguments would only clutter the legend
               if not (name == "sinks" and not sink_size) and not (name == "window edge" and window_size is None)]
    handles.append(Patch(facecolor=SKIPPED, edgecolor="#555555", label=f"skipped: {skipped}"))
    legend_title = "tile visits per phase (kernel loop order); pale = pair hidden by the mask"
    if own_figure:
        fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False,
                   title=legend_title, title_fontsize=8)
    else:   # the caller owns the layout: keep the legend inside this axes
        ax.legend(handles=handles, loc="upper right", fontsize=6, title_fontsize=6, title=legend_title)
    return fig


def _bounds(names_at: dict):
    """{position: "name = name"} of a program's phase bounds, the names that fall on one position together."""
    at = {}
    for name, position in names_at.items():
        at.setdefault(position, []).append(name)
    return {position: " = ".join(names) for position, names in sorted(at.items())}


def _mark_program(ax, along, first, size, bounds, n):
    """Box the tile column ("col", keys) or row ("row", queries) one program owns, from `first`, and draw
    its phase bounds ({name: position}) across it, named."""
    end = min(first + size, n) - 0.5
    for pos, label in _bounds(bounds).items():
        if along == "col":
            ax.plot([first - 0.5, end], [pos - 0.5, pos - 0.5], color="black", linewidth=2)
            ax.annotate(label, (end, pos - 0.5), xytext=(4, 0), textcoords="offset points", va="center",
                        fontsize=8, annotation_clip=False)
        else:
            ax.plot([pos - 0.5, pos - 0.5], [first - 0.5, end], color="black", linewidth=2)
            ax.annotate(label.replace(" = ", "\n= "), (pos - 0.5, end), xytext=(0, -4), textcoords="offset points",
                        ha="center", va="top", fontsize=8, annotation_clip=False)
    width, height = (min(size, n - first), n) if along == "col" else (n, min(size, n - first))
    corner = (first - 0.5, -0.5) if along == "col" else (-0.5, first - 0.5)
    ax.add_patch(matplotlib.patches.Rectangle(corner, width, height, fill=False, edgecolor="black", linewidth=1.5))


def show_backward_tiles(n: int, block_m: int, block_n: int, is_causal=True, window_size=None, sink_size=None,
                        key_tile: Optional[int] = None, query_tile: Optional[int] = None) -> Figure:
    """The backward's two traversals of the tile grid, each colored by the phase of its kernel.

    Left, the dK/dV kernel: a program owns one key tile (a column) and streams the query tiles that see
    it, down the column: the diagonal (masked), the unmasked run, the window's edge (masked), and for a
    tile holding sinks the sink phase to N (autograder.schedule.query_ranges). Right, the dQ kernel: a
    program owns one query tile (a row) and streams key tiles along it, as the forward does (its sink
    phase steps narrower key blocks on the GPU). The chosen column and row are in full color, with their
    phase bounds marked; the other tiles are faded."""
    tn, tm = -(-n // block_n), -(-n // block_m)
    if key_tile is None:            # a tile holding sinks shows all four phases; else one a third of the way
        key_tile = 0 if sink_size else min(tn - 1, tn // 3)
    if query_tile is None:
        query_tile = min(tm - 1, (2 * tm) // 3)
    if not (0 <= key_tile < tn and 0 <= query_tile < tm):
        raise ValueError(f"key_tile must lie in [0, {tn}) and query_tile in [0, {tm}), got {key_tile}, {query_tile}")
    fig = _figure(11.0, 6.6)
    left, right = fig.subplots(1, 2)
    grid = schedule.backward_visits(n, block_m, block_n, is_causal, window_size, sink_size).numpy()
    _draw_tiles(left, grid, n, block_m, block_n, is_causal, window_size, sink_size, focus=("col", key_tile))
    start_n = key_tile * block_n
    ranges = schedule.query_ranges(n, block_m, block_n, is_causal, window_size, sink_size)[key_tile]
    if is_causal:
        bounds = {"start_n + BLOCK_N": ranges["diagonal"][1], "full_hi": ranges["unmasked"][1],
                  "hi": ranges["window edge"][1]}
        if ranges["sinks"][1] > ranges["sinks"][0]:
            bounds["sink_hi"] = ranges["sinks"][1]
    else:
        bounds = {"N": n}
    _mark_program(left, "col", start_n, block_n, bounds, n)
    left.set_title(f"dK/dV kernel: key tile {key_tile} (keys {start_n}..{min(start_n + block_n, n) - 1}) "
                   f"streams the query tiles\nthat see it, top to bottom (BLOCK_M={block_m} rows a step)",
                   fontsize=9)

    fgrid = schedule.visits(n, block_m, block_n, is_causal, window_size, sink_size).numpy()
    _draw_tiles(right, fgrid, n, block_m, block_n, is_causal, window_size, sink_size, focus=("row", query_tile))
    start_m = query_tile * block_m
    kr = schedule.key_ranges(n, block_m, block_n, is_causal, window_size, sink_size)[query_tile]
    if is_causal:
        bounds = {"lo": kr["window edge"][0], "full_lo": kr["window edge"][1], "full_hi": kr["unmasked"][1],
                  "hi": kr["diagonal"][1]}
        if kr["sinks"][1] > kr["sinks"][0]:
            bounds["sink_hi"] = kr["sinks"][1]
    else:
        bounds = {"N // BLOCK_N * BLOCK_N": kr["full"][1], "N": n}
    _mark_program(right, "row", start_m, block_m, bounds, n)
    right.set_title(f"dQ kernel: query tile {query_tile} (rows {start_m}..{min(start_m + block_m, n) - 1}) "
                    f"streams the key tiles\nit sees, left to right (BLOCK_N={block_n} keys a step)", fontsize=9)

    bph = schedule.backward_phases(n, block_m, block_n, is_causal, window_size, sink_size)
    fph = schedule.phases(n, block_m, block_n, is_causal, window_size, sink_size)
    handles = [Patch(facecolor=PHASE_COLORS[name], edgecolor="#555555",
                     label=f"{name} ({'masked' if schedule.MASKED[name] else 'no mask'}): "
                           f"dK/dV {len(bph.get(name, []))}, dQ {len(fph.get(name, []))}")
               for name in PHASE_COLORS if bph.get(name) or fph.get(name)]
    fig.suptitle(f"The backward's tiles: {_mask_title(is_causal, window_size, sink_size)}, N={n}", fontsize=10)
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False,
               title="tile visits per phase and kernel; pale = pair hidden by the mask; white = skipped",
               title_fontsize=8)
    return fig


# categories of show_error_heatmap, from good to bad
_ERR_LABELS = ["err <= 0.1 tol", "0.1 tol < err <= tol", "tol < err <= 10 tol", "err > 10 tol", "NaN / inf",
               "never written"]
_ERR_COLORS = ["#ffffff", "#c6dbef", "#fdae6b", "#d7301f", "#000000", "#ae017e"]


def _error_categories(out: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> np.ndarray:
    from ..watch.guard import POISON
    got = out.detach().double().cpu()
    exp = expected.detach().double().cpu()
    ratio = (got - exp).abs() / (atol + rtol * exp.abs())
    cat = torch.zeros(got.shape, dtype=torch.int64)
    cat[ratio > 0.1] = 1
    cat[ratio > 1] = 2
    cat[ratio > 10] = 3
    cat[~torch.isfinite(got)] = 4
    cat[got == torch.tensor(POISON, dtype=out.dtype).double()] = 5
    return cat.numpy()


def show_error_heatmap(out: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float,
                       block_n: Optional[int] = None, block_m: Optional[int] = None, max_heads: int = 8) -> Figure:
    """Where an attention output [B, H, N, D] (or [H, N, D], [N, D]) is wrong, head by head.

    Each panel is one head: query rows i down, head-dim columns d across, each element colored by
    |out - expected| measured in tolerances (atol + rtol * |expected|); NaN/inf in black, elements
    never written (still holding the checker's poison value) in magenta. The batch with the most bad
    elements is shown, and up to `max_heads` heads (the worst ones when there are more).
    Rows are grouped in at most 256 bands for long sequences; a band takes its worst element.
    `block_m` draws query-tile boundaries (solid); `block_n` draws multiples of BLOCK_N (dotted):
    in causal attention, the rows in [j * BLOCK_N, (j + 1) * BLOCK_N) share diagonal key tile j."""
    if out.shape != expected.shape:
        raise ValueError(f"out {tuple(out.shape)} and expected {tuple(expected.shape)} differ in shape")
    if out.dim() not in (2, 3, 4):
        raise ValueError(f"expected [B, H, N, D], [H, N, D] or [N, D] tensors, got {out.dim()} dims")
    while out.dim() < 4:
        out, expected = out.unsqueeze(0), expected.unsqueeze(0)
    cat = _error_categories(out, expected, atol, rtol)
    bad = cat >= 2
    B, H, N, D = cat.shape
    b = int(bad.reshape(B, -1).sum(1).argmax())
    per_head = bad[b].reshape(H, -1).sum(1)
    heads = list(range(H)) if H <= max_heads else sorted(np.argsort(-per_head, kind="stable")[:max_heads].tolist())

    band = max(1, math.ceil(N / 256))
    rows = math.ceil(N / band)
    cols = min(len(heads), 4)
    nrows = math.ceil(len(heads) / cols)
    fig = _figure(2.6 * cols + 1.6, 3.2 * nrows + 0.9)
    axes = fig.subplots(nrows, cols, squeeze=False)
    cmap = ListedColormap(_ERR_COLORS)
    norm = BoundaryNorm(np.arange(-0.5, len(_ERR_COLORS)), cmap.N)
    for ax, h in zip(axes.flat, heads):
        img = cat[b, h]
        if band > 1:   # keep the worst element of each band of rows so no bad row disappears
            img = np.pad(img, ((0, rows * band - N), (0, 0))).reshape(rows, band, D).max(1)
        ax.imshow(img, cmap=cmap, norm=norm, interpolation="nearest", aspect="auto",
                  extent=(-0.5, D - 0.5, N - 0.5, -0.5))
        for size, style in ((block_n, ":"), (block_m, "-")):
            if size:
                for i in range(size, N, size):
                    ax.axhline(i - 0.5, color="#444444", linestyle=style, linewidth=0.7)
        ax.set_title(f"head {h}: {int(per_head[h])} bad of {N * D}", fontsize=9)
        ax.set_xlabel("head dim d")
        ax.set_ylabel("query index i")
    for ax in list(axes.flat)[len(heads):]:
        ax.axis("off")
    n_bad = int(bad.sum())
    shown = f"batch {b} of {B}" + (f", heads {heads} of {H}" if len(heads) < H else "")
    lines = [f"Where the output is wrong: {n_bad} of {cat.size} elements out of tolerance "
             f"(atol={atol:g}, rtol={rtol:g}); showing {shown}"]
    if band > 1:
        lines.append(f"each image row is a band of {band} query rows (its worst element)")
    guides = [g for g, s in (("solid lines every BLOCK_M", block_m), ("dotted lines every BLOCK_N", block_n)) if s]
    if guides:
        lines.append("; ".join(guides))
    fig.suptitle("\n".join(lines), fontsize=10)
    fig.legend(handles=[Patch(facecolor=c, edgecolor="#777777", label=lab) for c, lab in zip(_ERR_COLORS, _ERR_LABELS)],
               loc="outside lower center", ncol=3, fontsize=8, frameon=False,
               title="|out - expected| in units of tol = atol + rtol * |expected|", title_fontsize=8)
    return fig


def plot_benchmark(records: Iterable[dict], title: Optional[str] = None) -> Figure:
    """TFLOP/s against sequence length N, one line per implementation (records from
    autograder.bench.benchmark: dicts with keys name, N, tflops; other keys are ignored)."""
    series = {}
    for r in records:
        tflops = r.get("tflops")
        if tflops is None or not math.isfinite(tflops):   # skipped runs (e.g. naive out of memory)
            continue
        series.setdefault(r["name"], []).append((int(r["N"]), float(tflops)))
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    if not series:
        ax.text(0.5, 0.5, "no timings to plot\n(benchmarks run on a CUDA GPU only)",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    for name, points in series.items():
        points.sort()
        ns, ts = zip(*points)
        ax.plot(ns, ts, marker="o", label=name, color=IMPL_COLORS.get(name),
                linewidth=2.5 if name == "yours" else 1.5, zorder=3 if name == "yours" else 2)
    all_n = sorted({n for pts in series.values() for n, _ in pts})
    ax.set_xscale("log", base=2)
    ax.set_xticks(all_n, [str(n) for n in all_n])
    ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.set_xlabel("sequence length N")
    ax.set_ylabel("TFLOP/s (attended pairs only)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "Attention forward throughput (higher is better)")
    return fig


def save(fig: Figure, path, dpi: int = 120) -> Path:
    """Write `fig` as a PNG (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png", facecolor="white", bbox_inches="tight", pad_inches=0.1)
    return path
