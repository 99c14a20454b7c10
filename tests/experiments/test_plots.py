"""Plots are written as PNGs, and non-finite values are drawn and counted instead of crashing."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from experiments.common import plots
from experiments.common.runs import CsvLog

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def no_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG


def test_plotting_never_imports_pyplot() -> None:
    """Figures are built without pyplot, so nothing is ever shown and no global figure state is kept."""
    tree = ast.parse(Path(plots.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {f"{node.module}.{alias.name}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                 for alias in node.names}
    assert not any("pyplot" in name for name in imported), imported


def test_csv_curves_of_several_runs(tmp_path: Path) -> None:
    for name, scale in (("a", 1.0), ("b", 2.0)):
        (tmp_path / name).mkdir()
        log = CsvLog(tmp_path / name / "steps.csv", ["step", "loss", "recon"])
        for i in range(6):
            recon = float("inf") if (name == "b" and i == 4) else scale * 10.0**-i
            log.log(step=i, loss=scale / (i + 1), recon=recon if i % 2 == 0 or name == "b" else None)
        log.close()
    fig = plots.plot_csv([tmp_path / "a" / "steps.csv", tmp_path / "b" / "steps.csv"], ["loss", "recon"],
                         tmp_path / "out" / "curves.png", logy=True, title="two runs")
    assert _is_png(tmp_path / "out" / "curves.png")
    loss_ax, recon_ax = fig.axes
    assert loss_ax.get_title() == "loss" and loss_ax.get_yscale() == "log"
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["a", "b"]
    assert "1 non-finite values marked x" in recon_ax.get_title()
    line_a = recon_ax.get_lines()[0]
    assert len(line_a.get_xdata()) == 3  # empty cells are 'not logged', not non-finite
    with pytest.raises(KeyError, match="no column 'epoch'"):
        plots.plot_csv({"a": tmp_path / "a" / "steps.csv"}, ["loss"], x="epoch")


def test_line_plot_marks_non_finite_and_hides_non_positive_on_log_axes(tmp_path: Path) -> None:
    fig = plots.line_plot({"err": ([0, 1, 2, 3, 4], [1.0, np.inf, 0.5, np.nan, -1.0])}, tmp_path / "l.png",
                          logy=True, title="error")
    ax = fig.axes[0]
    assert _is_png(tmp_path / "l.png")
    assert "2 non-finite values marked x" in ax.get_title() and "1 values <= 0 not shown" in ax.get_title()
    line, marks = ax.get_lines()
    assert np.isnan(line.get_ydata()[[1, 3, 4]]).all()  # the line breaks there
    assert list(marks.get_xdata()) == [1.0, 3.0]


def test_image_grid_paints_non_finite_pixels_red(tmp_path: Path) -> None:
    x = torch.rand(5, 1, 6, 6, dtype=torch.float64)
    r = x + 1e-3
    r[2, 0, 1, 4] = float("inf")
    r[3] = float("nan")
    fig = plots.image_grid(x, r, tmp_path / "g.png", ncol=4, value_range=(0.0, 1.0))
    assert _is_png(tmp_path / "g.png")
    title = fig.axes[0].get_title()
    assert "37 non-finite reconstruction values in red" in title and "max |diff| 0.001" in title
    canvas = fig.axes[0].images[0].get_array()
    assert canvas.shape == (6 * 7 + 1, 4 * 7 + 1, 3)  # two blocks of 3 rows, 4 columns, 1-pixel gaps
    tile = lambda row, col: canvas[1 + row * 7: 7 + row * 7, 1 + col * 7: 7 + col * 7]  # noqa: E731
    red = np.array([1.0, 0.0, 0.0])
    assert np.array_equal(tile(1, 2)[1, 4], red) and np.array_equal(tile(2, 2)[1, 4], red)
    assert (tile(1, 3) == red).all() and not (tile(0, 3) == red).all(axis=-1).any()
    np.testing.assert_allclose(tile(0, 0)[..., 0], x[0, 0].numpy())  # grey inputs shown as they are
    assert (tile(3, 0) == tile(3, 0)[..., :1]).all()  # second block: image 4, grey


def test_image_grid_inputs_only_and_shape_errors() -> None:
    x = np.zeros((3, 3, 4, 4), dtype=np.uint8)
    x[1] = 255
    fig = plots.image_grid(x)
    canvas = fig.axes[0].images[0].get_array()
    assert canvas.shape == (6, 16, 3)  # one row of three 4x4 tiles with 1-pixel gaps
    assert (canvas[1:5, 1:5] == 0).all() and (canvas[1:5, 6:10] == 1).all()  # uint8 shown on 0..255
    with pytest.raises(ValueError, match="reconstructions have shape"):
        plots.image_grid(x, x[:2])
    with pytest.raises(ValueError, match="1 or 3 channels"):
        plots.image_grid(np.zeros((2, 2, 4, 4)))


def test_heatmap_log_scale_clipping_and_bad_cells(tmp_path: Path) -> None:
    m = np.logspace(-3, 3, 12).reshape(3, 4)
    m[0, 0], m[1, 1], m[2, 2] = np.inf, 0.0, np.nan
    fig = plots.heatmap(m, tmp_path / "h.png", log=True, clip=(1e-2, 1e2), title="kappa")
    assert _is_png(tmp_path / "h.png")
    ax = fig.axes[0]
    assert "2 non-finite cells in red" in ax.get_title() and "1 cells <= 0 in grey" in ax.get_title()
    norm = ax.images[0].norm
    assert type(norm).__name__ == "LogNorm" and (norm.vmin, norm.vmax) == (1e-2, 1e2)
    overlay = ax.images[1].get_array()
    assert overlay[0, 0, 0] == 1 and overlay[2, 2, 3] == 1 and overlay[0, 1, 3] == 0
    assert plots.heatmap(np.full((2, 2), np.nan)).axes[0].get_title().startswith("(4 non-finite")
    with pytest.raises(ValueError, match="2-D"):
        plots.heatmap(np.zeros(3))


def test_histogram_counts_what_it_leaves_out(tmp_path: Path) -> None:
    fig = plots.histogram({"train": [1e-3, 1e-2, 1.0, np.inf, 0.0], "test": np.array([1e-1, 10.0, np.nan])},
                          tmp_path / "h.png", logx=True, logy=True, bins=10)
    assert _is_png(tmp_path / "h.png")
    ax = fig.axes[0]
    assert "2 non-finite values excluded" in ax.get_title() and "1 values <= 0 excluded" in ax.get_title()
    assert ax.get_xscale() == "log" and sum(p.get_height() for p in ax.patches) == 5
    empty = plots.histogram([np.nan, np.inf])
    assert "no finite values" in empty.axes[0].get_title()


def test_line_panels_put_several_curves_on_each_panel(tmp_path: Path) -> None:
    fig = plots.line_panels({"loss": {"train": ([0, 1], [2.0, 1.0]), "test": ([0, 1], [2.5, np.nan])},
                             "kappa": {"forward": ([0, 1, 2], [1.0, 1e3, 1e9])}},
                            tmp_path / "p.png", xlabel="epoch", logy=[False, True], title="run")
    assert _is_png(tmp_path / "p.png")
    loss_ax, kappa_ax = fig.axes
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()][:2] == ["train", "test"]
    assert "1 non-finite values marked x" in loss_ax.get_title()
    assert loss_ax.get_yscale() == "linear" and kappa_ax.get_yscale() == "log"
    assert kappa_ax.get_xlabel() == "epoch"
    with pytest.raises(ValueError, match="2 panels"):
        plots.line_panels({"a": {}, "b": {}}, logy=[True])


def test_heatmap_grid_shares_one_colour_scale_per_row(tmp_path: Path) -> None:
    a = np.logspace(-6, 0, 12).reshape(3, 4)
    b = a * 100
    b[0, 0] = np.inf
    fig = plots.heatmap_grid({"recon": {"affine": a, "resflow": b}, "loglik": {"affine": -a, "resflow": -b}},
                             tmp_path / "g.png", log=[True, False], clip=[(None, None), (-1.0, 0.0)],
                             extent=(-8, 8, -8, 8), title="grid")
    assert _is_png(tmp_path / "g.png")
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title().split("\n")[0] for ax in panels] == ["affine: recon", "resflow: recon", "affine: loglik",
                                                                 "resflow: loglik"]
    norms = [ax.images[0].norm for ax in panels]
    assert type(norms[0]).__name__ == "LogNorm"
    assert (norms[0].vmin, norms[0].vmax) == (norms[1].vmin, norms[1].vmax) == (1e-6, 100.0)  # the row's range
    assert (norms[2].vmin, norms[2].vmax) == (-1.0, 0.0) and type(norms[2]).__name__ == "Normalize"
    assert "1 non-finite cells in red" in panels[1].get_title()
    assert panels[0].images[0].get_extent() == [-8, 8, -8, 8]
    with pytest.raises(ValueError, match="one entry per row"):
        plots.heatmap_grid({"a": {"m": a}}, log=[True, False])


def test_line_panels_log_x(tmp_path: Path) -> None:
    fig = plots.line_panels({"kappa": {"affine": ([8, 64, 1024], [1.0, 1e4, np.inf])}}, logx=True, logy=True,
                            xlabel="R")
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_xlabel() == "R"
