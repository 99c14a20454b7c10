"""The page docs/results/flowgan.md: an affine Glow trained adversarially, with and without a maximum-likelihood
term and bounded ActNorm scales, and its stability over training (PAPER.md section 2.6, claim 10).

Runs ``python -m experiments.flowgan`` (every variant, its feature classifier and the analysis of every snapshot)
once per seed of :data:`SEEDS` for each setting of :data:`SETTINGS`, then writes the claims, tables and figures.

Usage::

    python -m experiments.reports.flowgan                     # digits and digits-long
    python -m experiments.reports.flowgan --settings digits digits-dlr5e-5
    python -m experiments.reports.flowgan --report-only
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...common.plots import plot_csv
from ...common.study import load
from ...flowgan.options import variant as parse_variant
from ..common import (NON_INVERTIBLE, Claim, ClaimSet, Criterion, Page, Report, RunRecord, Runs, by_setting,
                      combine, fmt, minutes, num, percent, seeded, table)
from ..common.stability import last_snapshot_table, over_training_table, set_verdict, snapshots

__all__ = ["QUOTED", "REPORT", "SEEDS", "main", "mitigation_claim"]

SEEDS = (0, 1, 2)
#: A mitigation must keep the largest kappa this many times below the pure GAN's.
MITIGATION_FACTOR = 10.0
_QUICK = ("--variants", "gan", "gan+mle1e-3", "--classifier-epochs", "1", "--analysis-samples", "8",
          "--fd-samples", "32", "--jacobian-samples", "1")

#: Setting -> (title, flags of python -m experiments.flowgan).
SETTINGS: dict[str, tuple[str, list[str]]] = {
    "digits": ("embedded digits, the study's default (discriminator lr `1e-4`)", []),
    "digits-long": ("embedded digits, three times longer, three of the variants",
                    ["--epochs", "36", "--eval-every", "132", "--variants", "gan", "gan+mle1e-3", "gan+maxscale5"]),
    "digits-dlr5e-5": ("embedded digits, discriminator lr `5e-5` (the original sweep's other value)",
                       ["--disc-lr", "5e-5"]),
}
RUNS = tuple(spec for name, (_, flags) in SETTINGS.items()
             for spec in seeded("flowgan", f"flowgan/{name}", flags, seeds=SEEDS, setting=name, quick=_QUICK,
                                in_quick=name == "digits"))

#: Numerals the prose quotes that are not results (see experiments.reports.common.quoted).
QUOTED = {"128": "paper: coupling width", "250": "paper: training epochs", "5e-5": "paper: the generator's lr"}


def _kappa_max(rows: Sequence[Any], variant: str) -> float:
    """The largest kappa over every snapshot and probe set (NaN counts as inf: a Jacobian that did not finish)."""
    values = [num(r["cond_max"]) for r in rows if r["model"] == variant]
    return max((math.inf if math.isnan(v) else v for v in values), default=math.nan)


def _nonfinite_samples(rows: Sequence[Any], variant: str) -> float:
    return max((num(r["input_nonfinite"]) for r in rows if r["model"] == variant and r["set"] == "samples"),
               default=math.nan)


def _over_training(rows: Sequence[Any], variant: str) -> Any:
    """The library's verdict over every snapshot and probe set: non-invertible if it ever was."""
    parts = [set_verdict(r) for by_set in snapshots(rows, variant).values() for r in by_set.values()]
    return combine(parts) if parts else None


def declared_variants(setting: str) -> list[str]:
    """The variants a setting's runs train: its ``--variants``, else the study's default."""
    flags = SETTINGS[setting][1]
    if "--variants" in flags:
        rest = flags[flags.index("--variants") + 1:]
        return rest[: next((i for i, f in enumerate(rest) if f.startswith("--")), len(rest))]
    return list(load("flowgan").build_parser().get_default("variants"))


def mitigation_claim(name: str) -> str | None:
    """The claim a variant tests: the pure GAN's affine Glow with one mitigation added (the MLE term or bounded
    ActNorm scales); None for any other variant (another model, both mitigations, no adversarial loss).

    >>> [mitigation_claim(v) for v in ("gan+mle1e-3", "gan+maxscale5", "gan", "gan+mle1e-4+maxscale5", "mle")]
    ['flowgan-mle-mitigates', 'flowgan-maxscale-mitigates', None, None, None]
    """
    v = parse_variant(name)
    if v.gan == 0 or v.model != "affine" or (v.mle > 0) == (v.actnorm_max_scale > 0):
        return None
    return "flowgan-mle-mitigates" if v.mle > 0 else "flowgan-maxscale-mitigates"


def claims(runs: Sequence[RunRecord], where: str, declared: Sequence[str]) -> list[Claim]:
    """The pure GAN's verdict, and per mitigating variant (of those ``declared``, see :func:`mitigation_claim`)
    whether it keeps kappa far below the pure GAN's."""
    mitigating = [v for v in declared if mitigation_claim(v) is not None]
    found = ClaimSet({"flowgan-non-invertible": Criterion.verdict(NON_INVERTIBLE),
                      **{v: Criterion.at_least(MITIGATION_FACTOR, "x") for v in mitigating}}, where)
    for run in (r for r in runs if "gan" in r.args.get("variants", [])):
        rows = run.csv("analysis.csv")
        judgement = _over_training(rows, "gan")
        if judgement is not None:
            found.judged("flowgan-non-invertible", run, judgement, value=_kappa_max(rows, "gan"))
        for variant in (v for v in run.args.get("variants", []) if v in mitigating):
            ratio = _kappa_max(rows, "gan") / _kappa_max(rows, variant)
            fewer = not _nonfinite_samples(rows, variant) > _nonfinite_samples(rows, "gan")
            holds = None if math.isnan(ratio) else bool(ratio >= MITIGATION_FACTOR and fewer)
            found.observe(variant, run, ratio, holds,
                          "" if fewer else f"seed {run.seed}: more non-finite samples than the pure GAN")
    verdict, *mitigations = found.claims()
    return [verdict, *(Claim(str(mitigation_claim(c.id)), c.criterion, c.observations, f"`{c.id}`, {where}")
                       for c in mitigations)]


def _variant_row(run: RunRecord, v: str) -> list[str]:
    m = run.metrics.get("variants", {}).get(v, {})
    evals = run.csv(f"models/{v}/eval_log.csv")
    fds = [num(r["fd"]) for r in evals if math.isfinite(num(r["fd"]))]
    first = m.get("first_nonfinite_sample_step")
    return [str(run.seed), f"`{v}`", str(m.get("steps")), fmt(m.get("test_bpd")), fmt(m.get("fd")),
            fmt(min(fds)) if fds else "NaN", percent(m.get("sample_nonfinite")),
            percent(max((num(r["sample_nonfinite"]) for r in evals), default=math.nan)),
            str(first) if first is not None else "never", fmt(m.get("nonfinite_grad_steps", 0)),
            fmt(_kappa_max(run.csv("analysis.csv"), v)), minutes(m.get("seconds"))]


def section(runs: Sequence[RunRecord], page: Page, setting: str) -> None:
    done = [r for r in runs if r.finished]
    summary = [_variant_row(run, v) for run in done for v in run.args.get("variants", [])]
    first = done[0] if done else None
    figures: dict[str, str] = {}
    variants = first.args.get("variants", []) if first else []
    if first is not None:
        logs = {v: first.path / "models" / v / "eval_log.csv" for v in variants}
        figures["fd"] = page.figures.draw(lambda path: plot_csv(
            logs, ["fd", "sample_nonfinite", "test_bpd"], path, x="step",
            title="Fréchet distance (own classifier), non-finite samples, test bpd"), f"{setting}_fd.png")
        for name in ("analysis_cond", "analysis_mse_9", "analysis_samples"):
            figures[name] = page.figures.copy(first.path / "plots" / f"{name}.png", f"{setting}_{name}.png")
        for v in variants:
            step = max(int(num(r["step"])) for r in first.csv(f"models/{v}/eval_log.csv"))
            source = first.path / "models" / v / "plots" / f"samples_{step:06d}.png"
            figures[f"samples_{v}"] = page.figures.copy(source, f"{setting}_samples_{v.replace('+', '_')}.png",
                                                        width=450)
    rows = first.csv("analysis.csv") if first else []
    page.fragment("setting", title=SETTINGS[setting][0], runs=len(runs), finished=len(done),
                  seeds=[r.seed for r in done], command=first.command if first else "",
                  config=first.args if first else {}, probes=first.json("probes.json") if first else {},
                  classifier=first.metrics.get("feature_classifier", {}) if first else {},
                  cpu=[minutes(r.metrics.get("timing", {}).get("cpu_seconds")) for r in done], figures=figures,
                  variants=variants,
                  summary=table(["seed", "variant", "steps", "test bpd", "final Fréchet distance",
                                 "best Fréchet distance", "non-finite samples (last)", "non-finite samples (worst)",
                                 "first non-finite sample step", "steps with NaN/Inf gradients",
                                 "largest kappa", "training time"], summary),
                  last=last_snapshot_table(rows, variants), cond=over_training_table(rows, "cond_max", variants),
                  mse=over_training_table(rows, "mse_9_max", variants))


def write(runs: Runs, page: Page) -> None:
    by_setting(runs, page, list(SETTINGS), lambda setting: f"flowgan/{setting}",
               lambda found, where, setting: claims(found, where, declared_variants(setting)), section,
               outro="discussion")


REPORT = Report(name="flowgan",
                title="FlowGAN: adversarially trained Glow, with and without maximum likelihood and bounded scales",
                runs=RUNS, write=write, folder=Path(__file__).parent, description=__doc__,
                default_settings=("digits", "digits-long"))
main = REPORT.main
