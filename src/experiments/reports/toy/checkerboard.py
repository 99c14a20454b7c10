"""The checkerboard flows' part of the toy page: claims and section (``experiments.flows2d`` runs)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ...flows2d import grid_points
from ..common import (INVERTIBLE, NON_INVERTIBLE, Claim, ClaimSet, Criterion, Judgement, Page, RunRecord,
                      combine, find_stored, fmt, judge, judge_errors, minutes, num, percent, table)

__all__ = ["claims", "far_rows", "grid_verdict", "region_verdict", "section"]

#: "Between" means the bounded affine's far kappa is this many times below the affine's (or the affine's
#: inverse overflows there and the bounded one's does not).
BETWEEN_FACTOR = 10.0


def far_rows(run: RunRecord, model: str) -> list[dict[str, str]]:
    """The far-from-data rows of ``regions.csv`` for one model, by growing radius."""
    rows = [r for r in run.csv("regions.csv") if r["model"] == model and r["region"] != "data"]
    return sorted(rows, key=lambda r: num(r["radius"]))


def region_verdict(rows: Sequence[dict[str, str]]) -> Judgement:
    """The verdict over the points of some ``regions.csv`` rows (their worst relative error, their non-finite
    share times their points)."""
    if not rows:
        return judge(None, 0, None, missing="region rows")
    bad = sum(round(num(r["nonfinite"]) * num(r["points"])) for r in rows)
    worst = max(num(r["relative_max"]) for r in rows)
    return judge(worst, bad, sum(int(num(r["points"])) for r in rows))


def grid_verdict(run: RunRecord, model: str) -> Judgement:
    """The verdict on the grid's points, from the per-point relative errors the run stored. A grid point at the
    origin is left out: ``||x - x_hat|| / ||x||`` is undefined at ``x = 0`` (any round-off there would count as an
    infinite relative error)."""
    found = find_stored(run.metrics.get(model, {}).get("grid"))
    if found is not None:
        return found
    path = run.path / f"grid_{model}.npz"
    if not path.is_file():
        return judge(None, run.metrics.get(model, {}).get("grid_nonfinite", 0), None, missing="grid errors")
    with np.load(path) as grid:
        relative = grid["relative"]
        points = grid_points(float(grid["extent"]), int(grid["size"])).numpy()
    return judge_errors(relative[np.linalg.norm(points, axis=1) > 0])


def _data_rows(run: RunRecord, model: str) -> list[dict[str, str]]:
    return [r for r in run.csv("regions.csv") if r["model"] == model and r["region"] == "data"]


def claims(runs: Sequence[RunRecord], where: str) -> list[Claim]:
    found = ClaimSet({"checkerboard-grid": Criterion.verdict(NON_INVERTIBLE),
                      "checkerboard-far": Criterion.verdict(NON_INVERTIBLE),
                      "checkerboard-between": Criterion.stated(),
                      "checkerboard-iresnet": Criterion.verdict(INVERTIBLE)}, where)
    for run in runs:
        models = run.args.get("models", [])
        if "affine" in models:
            found.judged("checkerboard-grid", run, grid_verdict(run, "affine"))
            rows = far_rows(run, "affine")
            first = next((r for r in rows if num(r["nonfinite"]) > 0), None)
            note = f"seed {run.seed}: non-finite from R = {fmt(first['radius'])}" if first else ""
            found.judged("checkerboard-far", run, region_verdict(rows), note=note)
        if {"affine", "bounded", "iresnet"} <= set(models):
            end = {k: far_rows(run, k)[-1] for k in ("affine", "bounded", "iresnet")}
            ka, kb, kr = (num(end[k]["cond_max"]) for k in ("affine", "bounded", "iresnet"))
            na, nb = (num(end[k]["nonfinite"]) for k in ("affine", "bounded"))
            found.observe("checkerboard-between", run, kb,
                          kr < kb and (kb * BETWEEN_FACTOR < ka or (na > 0 and nb == 0)))
        if "iresnet" in models:
            found.judged("checkerboard-iresnet", run, combine([
                region_verdict(_data_rows(run, "iresnet")), grid_verdict(run, "iresnet"),
                region_verdict(far_rows(run, "iresnet"))]))
    return found.claims()


def _growth(rows: Sequence[dict[str, str]]) -> float:
    """``p`` in ``kappa ~ R^p`` between the two largest radii with a finite kappa (NaN if fewer than two)."""
    points = sorted((num(r["radius"]), num(r["cond_max"])) for r in rows)
    points = [(radius, k) for radius, k in points if math.isfinite(k) and k > 0]
    if len(points) < 2:
        return math.nan
    (r1, k1), (r2, k2) = points[-2], points[-1]
    return math.log(k2 / k1) / math.log(r2 / r1)


def section(runs: Sequence[RunRecord], page: Page, setting: str) -> None:
    done = [r for r in runs if r.finished]
    rows, sweep = [], []
    radii: list[float] = sorted({num(r["radius"]) for run in done for r in run.csv("regions.csv")
                                 if r["region"] != "data"})
    for run in done:
        for model in run.args.get("models", []):
            m = run.metrics.get(model, {})
            far = far_rows(run, model)
            rows.append([str(run.seed), model, fmt(m.get("test_nll")), fmt(m.get("data_recon_max")),
                         fmt(m.get("data_cond_max")), fmt(m.get("grid_recon_max")), fmt(m.get("grid_cond_max")),
                         fmt(m.get("grid_logdet_error_max")), grid_verdict(run, model).label,
                         region_verdict(far).label, fmt(_growth(far))])
            mine = {num(r["radius"]): r for r in far}
            sweep.append([str(run.seed), model] + [
                (f"{fmt(mine[R]['cond_max'])} / {fmt(mine[R]['relative_max'])}"
                 + (f" ({percent(mine[R]['nonfinite'])} non-finite)" if num(mine[R]["nonfinite"]) > 0 else ""))
                if R in mine else "-" for R in radii])
    figures = {}
    for name in ("heatmaps", "far", "training") if done else ():  # the study's own figures of the first seed
        options = {"width": 850, "colors": 48} if name == "heatmaps" else {}
        figures[name] = page.figures.copy(done[0].path / "plots" / f"{name}.png", f"{setting}_flows2d_{name}.png",
                                          **options)
    page.fragment("checkerboard", setting=setting, runs=len(runs), finished=len(done),
                  config=done[0].args if done else {}, seeds=[r.seed for r in done],
                  command=done[0].command if done else "", figures=figures,
                  cpu=[minutes(r.metrics.get("timing", {}).get("cpu_seconds")) for r in done],
                  table=table(["seed", "model", "test NLL", "max recon (data)", "max kappa (data)", "max recon (grid)",
                               "max kappa (grid)", "max log-det err (grid)", "verdict (grid)", "verdict (far)",
                               "kappa ~ R^p far away, p"], rows),
                  sweep=table(["seed", "model"] + [f"R = {fmt(R)}" for R in radii], sweep))
