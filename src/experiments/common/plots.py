"""Figures for run folders: training curves, image/reconstruction grids, heatmaps and histograms.

Figures are built on ``matplotlib.figure.Figure`` directly (rendered by Agg, never shown, no pyplot state), saved
to ``out`` when given, and returned. Non-finite values never crash a plot: they are drawn in red (pixels) or marked
with red crosses on the top edge (curves), and counted in the title, since exploding inverses produce exactly such
values.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from .runs import read_csv

__all__ = ["line_plot", "line_panels", "plot_csv", "image_grid", "heatmap", "heatmap_grid", "histogram"]

RED = (1.0, 0.0, 0.0)
ArrayLike = np.ndarray | torch.Tensor | Sequence[float]


def _array(values: ArrayLike) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def _finish(fig: Figure, out: str | os.PathLike[str] | None) -> Figure:
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
    return fig


def _note(title: str | None, notes: list[str]) -> str:
    text = title or ""
    if notes:
        text = f"{text}\n({'; '.join(notes)})" if text else f"({'; '.join(notes)})"
    return text


# ----------------------------------------------------------------------------------------------------------------
# Curves
# ----------------------------------------------------------------------------------------------------------------
def _draw_curves(ax: Axes, curves: Mapping[str, tuple[ArrayLike, ArrayLike]], logy: bool) -> list[str]:
    """Draw finite points as lines, mark the x of non-finite (and, on log axes, non-positive) values."""
    bad_total = hidden_total = 0
    for label, (xs, ys) in curves.items():
        x, y = _array(xs), _array(ys)
        good = np.isfinite(x) & np.isfinite(y)
        bad = np.isfinite(x) & ~np.isfinite(y)
        hidden = good & (y <= 0) if logy else np.zeros_like(good)
        shown = good & ~hidden
        fx = np.isfinite(x)  # the line breaks where a value is not shown
        ax.plot(x[fx], np.where(shown[fx], y[fx], np.nan), label=label, linewidth=1.2)
        if bad.any():
            ax.plot(x[bad], np.ones(bad.sum()), "x", color=RED, transform=ax.get_xaxis_transform(), clip_on=False,
                    markersize=6, label=f"{label}: non-finite" if len(curves) > 1 else "non-finite")
        bad_total += int(bad.sum())
        hidden_total += int(hidden.sum())
    if logy:
        ax.set_yscale("log")
    notes = []
    if bad_total:
        notes.append(f"{bad_total} non-finite values marked x")
    if hidden_total:
        notes.append(f"{hidden_total} values <= 0 not shown on log scale")
    return notes


def line_plot(curves: Mapping[str, tuple[ArrayLike, ArrayLike]], out: str | os.PathLike[str] | None = None, *,
              xlabel: str = "step", ylabel: str = "", title: str | None = None, logy: bool = False) -> Figure:
    """Plot several labelled (x, y) curves on one axis."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    notes = _draw_curves(ax, curves, logy)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(_note(title, notes), fontsize=10)
    if len(curves) > 1 or notes:
        ax.legend(fontsize=8)
    return _finish(fig, out)


def line_panels(panels: Mapping[str, Mapping[str, tuple[ArrayLike, ArrayLike]]],
                out: str | os.PathLike[str] | None = None, *, xlabel: str = "step",
                logy: bool | Sequence[bool] = False, title: str | None = None, logx: bool = False) -> Figure:
    """Side-by-side panels, each titled by its key and holding several labelled (x, y) curves.

    ``logy`` is one flag for all panels or one per panel; ``logx`` puts every panel's x axis on a log scale.
    """
    if not panels:
        raise ValueError("line_panels needs at least one panel")
    flags = [logy] * len(panels) if isinstance(logy, bool) else list(logy)
    if len(flags) != len(panels):
        raise ValueError(f"logy has {len(flags)} entries for {len(panels)} panels")
    fig = Figure(figsize=(4.5 * len(panels), 3.6), layout="constrained")
    for i, ((name, curves), log) in enumerate(zip(panels.items(), flags)):
        ax = fig.add_subplot(1, len(panels), i + 1)
        notes = _draw_curves(ax, curves, log)
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_title(_note(name, notes), fontsize=10)
        if len(curves) > 1 or notes:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _finish(fig, out)


def _parse(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _csv_curve(rows: list[dict[str, str]], x: str, column: str) -> tuple[np.ndarray, np.ndarray]:
    """The (x, column) pairs of the rows where both cells are filled (empty cells mean 'not logged')."""
    pairs = [(_parse(r[x]), _parse(r[column])) for r in rows if r.get(x, "") != "" and r.get(column, "") != ""]
    if not pairs:
        return np.zeros(0), np.zeros(0)
    xs, ys = zip(*pairs)
    return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def plot_csv(runs: Mapping[str, str | os.PathLike[str]] | Sequence[str | os.PathLike[str]], columns: Sequence[str],
             out: str | os.PathLike[str] | None = None, *, x: str = "step", logy: bool = False,
             title: str | None = None) -> Figure:
    """One panel per CSV column over ``x``, one line per run (a mapping gives the labels; else file names)."""
    if not isinstance(runs, Mapping):
        runs = {Path(p).parent.name or Path(p).stem: p for p in runs}
    tables = {label: read_csv(path) for label, path in runs.items()}
    for label, rows in tables.items():
        if rows and x not in rows[0]:
            raise KeyError(f"{runs[label]} has no column {x!r}; columns are {list(rows[0])}")
    fig = Figure(figsize=(4.5 * len(columns), 3.6), layout="constrained")
    for i, column in enumerate(columns):
        ax = fig.add_subplot(1, len(columns), i + 1)
        curves = {label: _csv_curve(rows, x, column) for label, rows in tables.items()}
        notes = _draw_curves(ax, curves, logy)
        ax.set_xlabel(x)
        ax.set_title(_note(column, notes), fontsize=10)
        if len(curves) > 1:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _finish(fig, out)


# ----------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------
def _to_rgb(images: np.ndarray, low: float, high: float) -> np.ndarray:
    """(N, C, H, W) values -> (N, H, W, 3) in [0, 1]; non-finite pixels become red."""
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images need 1 or 3 channels, got {images.shape[1]}")
    x = images.transpose(0, 2, 3, 1)
    bad = ~np.isfinite(x).all(axis=-1)
    scaled = np.clip((np.where(np.isfinite(x), x, low) - low) / max(high - low, 1e-12), 0, 1)
    rgb = np.repeat(scaled, 3, axis=-1) if x.shape[-1] == 1 else scaled
    rgb[bad] = RED
    return rgb


def _tile(rows: list[np.ndarray], ncol: int) -> np.ndarray:
    """Stack rows of (n, H, W, 3) tiles into one canvas with 1-pixel white gaps."""
    h, w = rows[0].shape[1:3]
    canvas = np.ones((len(rows) * (h + 1) + 1, ncol * (w + 1) + 1, 3))
    for r, tiles in enumerate(rows):
        for c, tile in enumerate(tiles):
            canvas[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + c * (w + 1): 1 + c * (w + 1) + w] = tile
    return canvas


def image_grid(inputs: ArrayLike, reconstructions: ArrayLike | None = None,
               out: str | os.PathLike[str] | None = None, *, ncol: int = 8,
               value_range: tuple[float, float] | None = None, title: str | None = None) -> Figure:
    """Rows of inputs, their reconstructions and |difference| (per block of ``ncol`` images); Inf/NaN in red.

    Values map linearly from ``value_range`` (default: 0..255 for uint8, else the inputs' finite min..max) to
    black..white; |difference| is scaled to its own finite maximum, which the title reports.
    """
    x = _array(inputs)
    if x.ndim != 4:
        raise ValueError(f"expected images (N, C, H, W), got shape {x.shape}")
    if value_range is None and getattr(inputs, "dtype", None) in (np.uint8, torch.uint8):
        value_range = (0.0, 255.0)
    finite = x[np.isfinite(x)]
    low, high = value_range or ((float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0))
    notes = []
    blocks = [_to_rgb(x, low, high)]
    if reconstructions is not None:
        r = _array(reconstructions)
        if r.shape != x.shape:
            raise ValueError(f"reconstructions have shape {r.shape}, inputs {x.shape}")
        diff = np.abs(x - r)
        finite_diff = diff[np.isfinite(diff)]
        top = float(finite_diff.max()) if finite_diff.size else 0.0
        blocks += [_to_rgb(r, low, high), _to_rgb(diff, 0.0, top if top > 0 else 1.0)]
        bad = int((~np.isfinite(r)).sum())
        notes.append(f"max |diff| {top:.3g}")
        if bad:
            notes.append(f"{bad} non-finite reconstruction values in red")
    bad_inputs = int((~np.isfinite(x)).sum())
    if bad_inputs:
        notes.append(f"{bad_inputs} non-finite input values in red")
    n = x.shape[0]
    ncol = max(1, min(ncol, n))
    rows = []
    for start in range(0, n, ncol):
        for block in blocks:
            tiles = block[start:start + ncol]
            if len(tiles) < ncol:
                tiles = np.concatenate([tiles, np.ones((ncol - len(tiles), *tiles.shape[1:]))])
            rows.append(tiles)
    canvas = _tile(rows, ncol)
    fig = Figure(figsize=(min(1.0 * ncol + 1, 14), min(1.0 * len(rows) + 1, 14)), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    label = "rows: input / reconstruction / |difference|" if reconstructions is not None else None
    ax.set_title(_note(title or label, notes), fontsize=9)
    return _finish(fig, out)


# ----------------------------------------------------------------------------------------------------------------
# Heatmaps and histograms
# ----------------------------------------------------------------------------------------------------------------
def _draw_heatmap(fig: Figure, ax: Axes, m: np.ndarray, *, log: bool, clip: tuple[float | None, float | None],
                  cmap: str, colorbar_label: str, extent: Sequence[float] | None) -> list[str]:
    """Draw ``m`` on ``ax`` with a colour bar; return the notes about non-finite and non-positive cells."""
    if m.ndim != 2:
        raise ValueError(f"heatmap needs a 2-D array, got shape {m.shape}")
    bad = ~np.isfinite(m)
    usable = np.isfinite(m) & ((m > 0) if log else True)
    notes = []
    if bad.any():
        notes.append(f"{int(bad.sum())} non-finite cells in red")
    if log and (np.isfinite(m) & (m <= 0)).any():
        notes.append(f"{int((np.isfinite(m) & (m <= 0)).sum())} cells <= 0 in grey")
    values = m[usable]
    lo = clip[0] if clip[0] is not None else (float(values.min()) if values.size else 1.0)
    hi = clip[1] if clip[1] is not None else (float(values.max()) if values.size else 10.0)
    if hi <= lo:
        hi = lo * 10 if log else lo + 1
    norm = LogNorm(vmin=lo, vmax=hi, clip=True) if log else Normalize(vmin=lo, vmax=hi, clip=True)
    colours = matplotlib.colormaps[cmap].with_extremes(bad="0.6")
    placement = {} if extent is None else {"extent": tuple(extent), "origin": "lower"}
    image = ax.imshow(np.ma.masked_array(m, ~usable), cmap=colours, norm=norm, interpolation="nearest",
                      aspect="auto", **placement)
    if bad.any():
        overlay = np.zeros((*m.shape, 4))
        overlay[bad] = (*RED, 1.0)
        ax.imshow(overlay, interpolation="nearest", aspect="auto", **placement)
    fig.colorbar(image, ax=ax, label=colorbar_label)
    return notes


def heatmap(matrix: ArrayLike, out: str | os.PathLike[str] | None = None, *, log: bool = False,
            clip: tuple[float | None, float | None] = (None, None), title: str | None = None, xlabel: str = "",
            ylabel: str = "", cmap: str = "viridis", colorbar_label: str = "",
            extent: Sequence[float] | None = None) -> Figure:
    """A 2-D array as colours (optionally log-scaled and clipped to ``clip``); non-finite cells in red.

    ``extent=(left, right, bottom, top)`` labels the axes in data coordinates, with row 0 at the bottom.
    """
    m = _array(matrix)
    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    notes = _draw_heatmap(fig, ax, m, log=log, clip=clip, cmap=cmap, colorbar_label=colorbar_label, extent=extent)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(_note(title, notes), fontsize=10)
    return _finish(fig, out)


def heatmap_grid(rows: Mapping[str, Mapping[str, ArrayLike]], out: str | os.PathLike[str] | None = None, *,
                 log: bool | Sequence[bool] = False,
                 clip: Sequence[tuple[float | None, float | None]] | None = None, cmap: str = "viridis",
                 extent: Sequence[float] | None = None, title: str | None = None,
                 panel_size: tuple[float, float] = (3.2, 2.7)) -> Figure:
    """Heatmaps side by side: one row per quantity (``rows`` key), one column per entry (e.g. per model).

    Panels of a row share one colour scale (``clip[i]``, or the row's finite range), so they compare directly;
    ``log`` and ``clip`` are given for all rows or one per row. Non-finite cells are red and counted per panel.
    """
    if not rows:
        raise ValueError("heatmap_grid needs at least one row")
    n_rows, n_cols = len(rows), max(len(r) for r in rows.values())
    logs = [log] * n_rows if isinstance(log, bool) else list(log)
    clips = list(clip) if clip is not None else [(None, None)] * n_rows
    if len(logs) != n_rows or len(clips) != n_rows:
        raise ValueError(f"log and clip need one entry per row ({n_rows}), got {len(logs)} and {len(clips)}")
    fig = Figure(figsize=(panel_size[0] * n_cols, panel_size[1] * n_rows), layout="constrained")
    for i, ((quantity, panels), row_log, row_clip) in enumerate(zip(rows.items(), logs, clips)):
        arrays = {name: _array(m) for name, m in panels.items()}
        lo, hi = row_clip
        finite = [a[np.isfinite(a) & ((a > 0) if row_log else True)] for a in arrays.values()]
        finite = [a for a in finite if a.size]
        if lo is None and finite:
            lo = float(min(a.min() for a in finite))
        if hi is None and finite:
            hi = float(max(a.max() for a in finite))
        for j, (name, m) in enumerate(arrays.items()):
            ax = fig.add_subplot(n_rows, n_cols, i * n_cols + j + 1)
            notes = _draw_heatmap(fig, ax, m, log=row_log, clip=(lo, hi), cmap=cmap,
                                  colorbar_label=quantity if j == n_cols - 1 else "", extent=extent)
            ax.set_title(_note(f"{name}: {quantity}", notes), fontsize=8)
            ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title)
    return _finish(fig, out)


def histogram(values: ArrayLike | Mapping[str, ArrayLike], out: str | os.PathLike[str] | None = None, *,
              bins: int = 50, logx: bool = False, logy: bool = False, title: str | None = None,
              xlabel: str = "") -> Figure:
    """Histogram(s) of the finite values (log-spaced bins with ``logx``); excluded values are counted in the title."""
    groups = dict(values) if isinstance(values, Mapping) else {"": values}
    arrays = {label: _array(v).ravel() for label, v in groups.items()}
    notes = []
    bad = sum(int((~np.isfinite(a)).sum()) for a in arrays.values())
    if bad:
        notes.append(f"{bad} non-finite values excluded")
    kept = {label: a[np.isfinite(a) & ((a > 0) if logx else True)] for label, a in arrays.items()}
    if logx:
        dropped = sum(int((np.isfinite(a) & (a <= 0)).sum()) for a in arrays.values())
        if dropped:
            notes.append(f"{dropped} values <= 0 excluded from log scale")
    everything = np.concatenate(list(kept.values())) if kept else np.zeros(0)
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    if everything.size:
        lo, hi = float(everything.min()), float(everything.max())
        if logx:
            edges = np.geomspace(lo, hi if hi > lo else lo * 10, bins + 1)
            ax.set_xscale("log")
        else:
            edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
        for label, a in kept.items():
            ax.hist(a, bins=edges, alpha=0.6 if len(kept) > 1 else 1.0, label=label or None)
        if len(kept) > 1:
            ax.legend(fontsize=8)
    else:
        notes.append("no finite values")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(_note(title, notes), fontsize=10)
    return _finish(fig, out)
