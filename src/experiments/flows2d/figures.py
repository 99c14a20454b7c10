"""The figures of a flows2d run: heatmaps side by side, the far sweep and the test NLL curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..common.plots import heatmap_grid, line_panels, plot_csv
from ..common.runs import read_csv

__all__ = ["HEATMAPS", "plot_run"]

#: What the heatmaps show, with the original's clipping of the errors and likelihood to [1e-8, 1]; kappa runs from 1
#: to the largest value over the models (the original's fixed [1, 1e10] hides the differences of small models).
HEATMAPS: dict[str, tuple[str, bool, tuple[float | None, float | None]]] = {
    "recon": ("reconstruction error", True, (1e-8, 1.0)),
    "logdet_error": ("log-det error", True, (1e-8, 1.0)),
    "cond": ("condition number", True, (1.0, None)),
    "likelihood": ("likelihood p(x)", True, (1e-8, 1.0)),
}


def plot_run(run_dir: str | Path, kinds: Sequence[str], out_dir: str | Path | None = None, *, dpi_scale: float = 1.0
             ) -> list[Path]:
    """The study's figures from a run folder: heatmaps side by side, the far sweep and the test NLL curves."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "plots"
    grids = {kind: np.load(run_dir / f"grid_{kind}.npz") for kind in kinds}
    extent = float(next(iter(grids.values()))["extent"])
    rows: dict[str, dict[str, np.ndarray]] = {}
    for key, (label, _, _) in HEATMAPS.items():
        rows[label] = {}
        for kind, g in grids.items():
            size = int(g["size"])
            values = np.exp(g["loglik"]) if key == "likelihood" else g[key]
            rows[label][kind] = values.reshape(size, size)
    paths = [out_dir / "heatmaps.png", out_dir / "far.png", out_dir / "training.png"]
    heatmap_grid(rows, paths[0], log=[v[1] for v in HEATMAPS.values()], clip=[v[2] for v in HEATMAPS.values()],
                 cmap="inferno", extent=(-extent, extent, -extent, extent),
                 title="checkerboard flows on [-8, 8)^2 (red: not finite)")
    regions = read_csv(run_dir / "regions.csv")
    panels: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for column, title in (("recon_max", "max reconstruction error"), ("cond_max", "max condition number"),
                          ("logdet_error_max", "max log-det error")):
        panels[title] = {}
        for kind in kinds:
            far = [r for r in regions if r["model"] == kind and r["region"] != "data"]
            panels[title][kind] = ([float(r["radius"]) for r in far], [float(r[column]) for r in far])
    line_panels(panels, paths[1], xlabel="half-width R of the square", logy=True, logx=True,
                title="far from the data: the boundary of [-R, R]^2")
    plot_csv({kind: run_dir / f"train_{kind}.csv" for kind in kinds}, ["test_nll"], paths[2], x="step",
             title="test negative log-likelihood")
    return paths
