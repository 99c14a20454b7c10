"""The toy regression's part of the toy page: claims and section (``experiments.toy_regression`` runs)."""

from __future__ import annotations

from collections.abc import Sequence

from ...toy_regression import coeff_label
from ..common import (INVERTIBLE, NON_INVERTIBLE, Claim, ClaimSet, Criterion, Judgement, Page, RunRecord,
                      combine, find_stored, fmt, judge, minutes, num, table)

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
    found = ClaimSet({"regression-conditioning": Criterion.at_least(CONDITIONING_RATIO, "x"),
                      "regression-non-invertible": Criterion.verdict(NON_INVERTIBLE),
                      "regression-nf-invertible": Criterion.verdict(INVERTIBLE)}, where)
    for run in (r for r in runs if 0.0 in _coeffs(r)):
        plain = run.metrics.get(coeff_label(0.0), {})
        found.judged("regression-non-invertible", run, verdict(run, 0.0), value=plain.get("final_grid_cond_max"))
        nf = min((c for c in _coeffs(run) if c > 0), default=None)  # the smallest NF weight is the paper's
        if nf is not None:
            m = run.metrics.get(coeff_label(nf), {})
            found.observe("regression-conditioning", run,
                          num(plain.get("final_grid_cond_max")) / num(m.get("final_grid_cond_max")))
            found.judged("regression-nf-invertible", run, verdict(run, nf), value=m.get("final_grid_cond_max"))
    return found.claims()


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
    figure = page.figures.copy(done[0].path / "plots" / "toy_regression.png",  # the study's own figure
                               f"{setting}_toy_regression.png") if done else None
    config = done[0].args if done else {}
    page.fragment("regression", setting=setting, runs=len(runs), finished=len(done), config=config,
                  seeds=[r.seed for r in done], command=done[0].command if done else "",
                  figure=figure, table=table(
                      ["seed", "NF coeff", "MSE", "NLL", "kappa (worst train pt)", "max kappa over training",
                       "sigma_min", "max recon error (train)", "max kappa (grid)", "max recon error (grid)",
                       "first non-finite step", "verdict", "CPU time"], rows))
