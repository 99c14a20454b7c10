"""The page docs/results/glow.md: Glow trained by maximum likelihood, affine against additive couplings, and the
stability of each over training (PAPER.md section 2.5, claim 9).

Runs ``python -m experiments.glow`` (which trains both models and analyses every snapshot) once per seed of
:data:`SEEDS` on the embedded digits, and with ``--settings fashion`` on Fashion-MNIST, then writes the claims,
tables and figures.

Usage::

    python -m experiments.reports.glow                        # the digits setting
    python -m experiments.reports.glow --settings digits fashion
    python -m experiments.reports.glow --report-only
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..common import (INVERTIBLE, NON_INVERTIBLE, Claim, ClaimSet, Criterion, Page, Report, RunRecord, Runs,
                      by_setting, fmt, minutes, num, percent, seeded, table)
from ..common.stability import (OFF_DATA, SETS, last, last_snapshot_table, over_training_table, snapshots,
                                verdict_off_data)

__all__ = ["QUOTED", "REPORT", "SEEDS", "main"]

SEEDS = (0, 1, 2)
#: How many times more the affine model's kappa must grow than the additive model's on an off-data set.
GROWTH_FACTOR = 10.0
_QUICK = ("--epochs", "1", "--eval-every", "10", "--analysis-samples", "8", "--jacobian-samples", "1")

#: Setting -> (title, flags of python -m experiments.glow).
SETTINGS: dict[str, tuple[str, list[str]]] = {
    "digits": ("embedded digits (8x8, 17 grey levels), the study's default", []),
    "fashion": ("Fashion-MNIST (28x28, 256 grey levels), OOD set MNIST-family digits",
                ["--dataset", "fashion-mnist"]),
}
RUNS = tuple(spec for name, (_, flags) in SETTINGS.items()
             for spec in seeded("glow", f"glow/{name}", flags, seeds=SEEDS, setting=name, quick=_QUICK,
                                in_quick=name == "digits"))

#: Numerals the prose quotes that are not results (see experiments.reports.common.quoted).
QUOTED = {"17": "setting: grey levels of the digits", "256": "setting: grey levels of Fashion-MNIST",
          "32": "paper: Glow steps per level", "512": "paper: coupling width", "500": "paper: training epochs",
          "44": "paper: millions of parameters"}


def _affine(models: Sequence[str]) -> list[str]:
    return [m for m in models if m.startswith("affine")]


def _growth(rows: Sequence[Any], model: str, name: str) -> float:
    snaps = snapshots(rows, model)
    if not snaps or name not in snaps[min(snaps)] or name not in snaps[max(snaps)]:
        return math.nan
    return num(snaps[max(snaps)][name]["cond_max"]) / num(snaps[min(snaps)][name]["cond_max"])


def claims(runs: Sequence[RunRecord], where: str) -> list[Claim]:
    found = ClaimSet({"glow-nonfinite-samples": Criterion.above(0),
                      "glow-affine-off-data": Criterion.verdict(NON_INVERTIBLE),
                      "glow-additive-invertible": Criterion.verdict(INVERTIBLE),
                      "glow-kappa-growth": Criterion.at_least(GROWTH_FACTOR, "x")}, where)
    for run in runs:
        rows, models = run.csv("analysis.csv"), run.args.get("models", [])
        affine = next(iter(_affine(models)), None)  # the first affine model is the paper's
        if affine is not None:
            shares = [num(r["input_nonfinite"]) for r in rows if r["model"] == affine and r["set"] == "samples"]
            found.observe("glow-nonfinite-samples", run, max(shares, default=math.nan))
            found.judged("glow-affine-off-data", run, verdict_off_data(last(rows, affine)))
        if "additive" in models:
            found.judged("glow-additive-invertible", run, verdict_off_data(last(rows, "additive"), SETS))
            if affine is not None:
                ratios = [_growth(rows, affine, s) / _growth(rows, "additive", s) for s in OFF_DATA]
                found.observe("glow-kappa-growth", run, max((x for x in ratios if not math.isnan(x)),
                                                            default=math.nan))
    return found.claims()


def _training_row(run: RunRecord, model: str) -> list[str]:
    m = run.metrics.get("models", {}).get(model, {})
    return [str(run.seed), model, str(m.get("steps")), fmt(m.get("train_bpd")), fmt(m.get("test_bpd")),
            percent(m.get("sample_nonfinite")), fmt(m.get("nonfinite_grad_steps")), minutes(m.get("seconds"))]


def section(runs: Sequence[RunRecord], page: Page, setting: str) -> None:
    done = [r for r in runs if r.finished]
    train_rows = [_training_row(run, model) for run in done for model in run.args.get("models", [])]
    first = done[0] if done else None
    figures: dict[str, str] = {}
    if first is not None:
        for name in ("analysis_cond", "analysis_mse_9", "analysis_logdet_error", "analysis_samples", "analysis_bpd"):
            figures[name] = page.figures.copy(first.path / "plots" / f"{name}.png", f"{setting}_{name}.png")
        for model in first.args.get("models", []):
            figures[f"recon_{model}"] = page.figures.copy(first.path / "plots" / f"recon_{model}.png",
                                                         f"{setting}_recon_{model}.png", width=420)
    rows = first.csv("analysis.csv") if first else []
    models = first.args.get("models", []) if first else []
    page.fragment("setting", title=SETTINGS[setting][0], runs=len(runs), finished=len(done),
                  seeds=[r.seed for r in done], command=first.command if first else "",
                  config=first.args if first else {}, probes=first.json("probes.json") if first else {},
                  cpu=[minutes(r.metrics.get("timing", {}).get("cpu_seconds")) for r in done], figures=figures,
                  models=models,
                  training=table(["seed", "model", "steps", "train bpd", "test bpd", "non-finite samples",
                                  "steps with NaN/Inf gradients", "training time"], train_rows),
                  last=last_snapshot_table(rows, models), cond=over_training_table(rows, "cond_max", models),
                  mse=over_training_table(rows, "mse_9_max", models))


def write(runs: Runs, page: Page) -> None:
    by_setting(runs, page, list(SETTINGS), lambda setting: f"glow/{setting}",
               lambda found, where, setting: claims(found, where), section, outro="discussion")


REPORT = Report(name="glow",
                title="Glow maximum likelihood: affine against additive couplings, stability over training",
                runs=RUNS, write=write, folder=Path(__file__).parent, description=__doc__,
                default_settings=("digits",))
main = REPORT.main
