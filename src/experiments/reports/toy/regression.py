"""The toy regression's part of the toy page: claims and section (``experiments.toy_regression`` runs)."""

from __future__ import annotations

from typing import Any, Sequence

from ...toy_regression import coeff_label, plot_runs
from ..common import (INVERTIBLE, NON_INVERTIBLE, Claim, Criterion, Judgement, Page, RunRecord, combine,
                      find_stored, fmt, judge, minutes, num, table)

__all__ = ["claims", "section", "verdict"]

#: How many times better conditioned (kappa on the grid) the NF run must end than the unregularized one.
CONDITIONING_RATIO = 100.0


def _coeffs(run: RunRecord) -> list[float]:
    return [float(c) for c in run.args.get("nf_coeff", [])]


def verdict(run: RunRecord, coeff: float) -> Judgement:
    """The invertibility verdict of one coefficient's model, on the training points and the grid."""
    m = run.metrics.get(coeff_label(coeff), {})
    found = find_stored(m)
    if found is not None:
        return found
    points, grid = run.args.get("points"), int(run.args.get("grid_size", 0)) ** 2
    return combine([judge(None, m.get("final_recon_nonfinite"), points),
                    judge(None, m.get("final_grid_nonfinite"), grid or None)])


def claims(runs: Sequence[RunRecord], where: str) -> list[Claim]:
    ratio, broken, kept = (Criterion.at_least(CONDITIONING_RATIO, "x"), Criterion.verdict(NON_INVERTIBLE),
                           Criterion.verdict(INVERTIBLE))
    obs: dict[str, list[Any]] = {"ratio": [], "plain": [], "nf": []}
    for run in runs:
        coeffs = _coeffs(run)
        if 0.0 not in coeffs:
            continue
        plain = run.metrics.get(coeff_label(0.0), {})
        obs["plain"].append(broken.judged(run.name, run.seed, run.demo, verdict(run, 0.0),
                                          value=plain.get("final_grid_cond_max")))
        for c in (c for c in coeffs if c > 0):
            m = run.metrics.get(coeff_label(c), {})
            obs["ratio"].append(ratio.observe(run.name, run.seed, run.demo,
                                              num(plain.get("final_grid_cond_max")) / num(m.get("final_grid_cond_max"))))
            obs["nf"].append(kept.judged(run.name, run.seed, run.demo, verdict(run, c),
                                         value=m.get("final_grid_cond_max")))
            break  # the smallest NF weight of the run is the paper's
    return [Claim("regression-conditioning", ratio, obs["ratio"], where),
            Claim("regression-non-invertible", broken, obs["plain"], where),
            Claim("regression-nf-invertible", kept, obs["nf"], where)]


def section(runs: Sequence[RunRecord], page: Page, setting: str) -> None:
    done = [r for r in runs if r.finished]
    rows = []
    for run in done:
        for c in _coeffs(run):
            m = run.metrics.get(coeff_label(c), {})
            first = int(num(m.get("first_nonfinite_step", -1)))
            rows.append([str(run.seed), fmt(c), fmt(m.get("final_mse")), fmt(m.get("final_nll")),
                         fmt(m.get("final_cond")), fmt(m.get("max_cond")), fmt(m.get("final_sigma_min")),
                         fmt(m.get("final_recon_max")), fmt(m.get("final_grid_cond_max")),
                         fmt(m.get("final_grid_recon_max")), str(first) if first >= 0 else "never",
                         verdict(run, c).label, minutes(run.metrics.get("timing", {}).get("cpu_seconds"))])
    figure = None
    if done:
        first = done[0]
        csvs = {f"NF {fmt(c)}": first.path / f"train_{coeff_label(c)}.csv" for c in _coeffs(first)}
        figure = page.figures.draw(lambda path: plot_runs(csvs, path), f"{setting}_toy_regression.png")
    config = done[0].args if done else {}
    page.fragment("regression", setting=setting, runs=len(runs), finished=len(done), config=config,
                  seeds=[r.seed for r in done], command=done[0].command if done else "",
                  figure=figure, table=table(
                      ["seed", "NF coeff", "MSE", "NLL", "kappa (worst train pt)", "max kappa over training",
                       "sigma_min", "max recon error (train)", "max kappa (grid)", "max recon error (grid)",
                       "first non-finite step", "verdict", "CPU time"], rows))
