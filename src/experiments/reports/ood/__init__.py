"""The page docs/results/ood.md: OOD reconstruction of the embedded zoo (PAPER.md sections 2.7, 2.8).

Runs ``python -m experiments.ood`` once per seed of :data:`SEEDS`; each seed trains its own zoo (an affine, a
bounded affine and an additive Glow and a Residual Flow on the embedded digits) into ``<runs>/zoo/digits/seed=S``
on first use, which the attack report reuses. Then writes the claims, the tables and the figures.

Usage::

    python -m experiments.reports.ood
    python -m experiments.reports.ood --report-only
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...common.image_flows import slug as image_slug
from ..common import (INVERTIBLE, NON_INVERTIBLE, Claim, ClaimSet, Criterion, Judgement, Page, Report,
                      RunRecord, Runs, RunSpec, combine, find_stored, fmt, judge, minutes, num, percent,
                      relative_of, seeded, table)

__all__ = ["QUOTED", "REPORT", "SEEDS", "ZOO", "ZOO_QUICK", "main", "verdict"]

SEEDS = (0, 1, 2)
#: Each seed's zoo, shared with the attack report.
ZOO = "{runs}/zoo/digits/seed={seed}"
#: What --quick evaluates instead of the zoo (minutes to train): a small Glow run, affine and additive.
ZOO_QUICK = RunSpec("glow", "zoo/quick", ("--no-analyze",), quick=("--epochs", "2"), setting="digits",
                    quick_only=True)
_QUICK = ("--model", "{runs}/zoo/quick", "--sets", "digits-test", "uniform", "gaussian", "fashion-mnist", "--n", "8",
          "--no-bpd")

RUNS: tuple[RunSpec, ...] = (ZOO_QUICK, *seeded("ood", "ood/digits", ("--zoo-dir", ZOO, "--bpd-n", "250"),
                                                 seeds=SEEDS, setting="digits", quick=_QUICK))

#: Numerals the prose quotes that are not results (see experiments.reports.common.quoted).
QUOTED = {"3072": "paper: CIFAR-10 dimensions", "64": "setting: digit dimensions",
          "17": "setting: grey levels of the digits", "10,000": "paper: images per set"}


def verdict(row: dict[str, Any]) -> Judgement:
    """The library's verdict on one model and one set of ``results.csv``."""
    found = find_stored(row)
    if found is not None:
        return found
    return judge(relative_of(row), row.get("nonfinite_samples", 0), row.get("n"),
                 missing="relative errors (only absolute ones)")


def _rows(run: RunRecord) -> list[dict[str, Any]]:
    return list(run.csv("results.csv"))


def _growth(rows: Sequence[dict[str, Any]], model: str) -> float:
    """Largest OOD reconstruction error over the largest in-distribution one (inf when one is non-finite)."""
    mine = [r for r in rows if r["model"] == model]
    inside = max((num(r["recon_max"]) for r in mine if r["role"] == "in-distribution"), default=math.nan)
    outside = max((num(r["recon_max"]) for r in mine if r["role"] != "in-distribution"), default=math.nan)
    return outside / inside if inside > 0 else math.nan


def _ood_verdict(rows: Sequence[dict[str, Any]], model: str, every: bool = False) -> Judgement:
    """The verdict of one model over the OOD and synthetic sets (or every set)."""
    parts = [verdict(r) for r in rows if r["model"] == model and (every or r["role"] != "in-distribution")]
    return combine(parts) if parts else judge(None, 0, None, missing="sets")


def claims(runs: Sequence[RunRecord]) -> list[Claim]:
    found = ClaimSet({"ood-affine-fails": Criterion.verdict(NON_INVERTIBLE),
                      "ood-affine-grows-most": Criterion.stated(),
                      "ood-residual-invertible": Criterion.verdict(INVERTIBLE)})
    for run in runs:
        rows = _rows(run)
        models = list(dict.fromkeys(r["model"] for r in rows))
        affine = next((m for m in models if m.startswith("affine")), None)
        residual = next((m for m in models if "Residual" in m), None)
        others = [m for m in models if "Glow" in m and not m.startswith("affine")]
        if affine is not None:
            found.judged("ood-affine-fails", run, _ood_verdict(rows, affine), value=_growth(rows, affine))
            if others:
                found.observe("ood-affine-grows-most", run, _growth(rows, affine),
                              all(_growth(rows, affine) > _growth(rows, o) for o in others))
        if residual is not None:
            found.judged("ood-residual-invertible", run, _ood_verdict(rows, residual, every=True),
                         value=_growth(rows, residual))
    return found.claims()


def _zoo_training(run: RunRecord) -> list[list[str]]:
    """The zoo's training runs of this seed: steps, test bits/dim, time."""
    zoo = Path(str(run.args.get("zoo_dir") or ""))
    found = [(f"Glow `{p.parent.name}`", p) for p in sorted((zoo / "glow" / "models").glob("*/metrics.json"))]
    if (zoo / "resflow" / "metrics.json").is_file():
        found.append(("Residual Flow", zoo / "resflow" / "metrics.json"))
    out = []
    for name, path in found:
        m = json.loads(path.read_text())
        out.append([name, str(m.get("parameters", "-")), str(m.get("steps", "-")), fmt(m.get("test_bpd")),
                    minutes(m.get("cpu_seconds", m.get("timing", {}).get("cpu_seconds")))])
    return out


def write(runs: Runs, page: Page) -> None:
    declared = runs.group("ood/digits", finished=False)
    done = [r for r in declared if r.finished]
    page.claims(claims(done))
    first = done[0] if done else None
    rows = _rows(first) if first else []
    models = list(dict.fromkeys(r["model"] for r in rows))
    sets = list(dict.fromkeys(r["set"] for r in rows))
    by = {(r["model"], r["set"]): r for r in rows}
    largest = [[s] + [fmt(by[(m, s)]["recon_max"]) + (f" ({percent(by[(m, s)]['nonfinite_share'])} non-finite)"
                                                      if num(by[(m, s)]["nonfinite_share"]) > 0 else "")
                      if (m, s) in by else "-" for m in models] for s in sets]
    verdicts = [[s] + [verdict(by[(m, s)]).label if (m, s) in by else "-" for m in models] for s in sets]
    per_seed = []
    for run in done:
        r_rows = _rows(run)
        for m in dict.fromkeys(r["model"] for r in r_rows):
            per_seed.append([str(run.seed), m, fmt(_growth(r_rows, m)),
                             _ood_verdict(r_rows, m).label])
    figures = []
    if first is not None:
        for name in models:
            slug = image_slug(name)  # the study's own file name for the model
            for kind, caption in (("recon", "reconstruction error per image, per set (log scale)"),
                                  ("bpd", "bits per dimension per set"),
                                  ("worst", "the 8 worst reconstructions: inputs / reconstructions / |difference|")):
                source = first.path / "plots" / f"{kind}_{slug}.png"
                if source.is_file():
                    figures.append((f"{name}: {caption}", page.figures.copy(source, f"{kind}_{slug}.png")))
    metrics = first.metrics if first else {}
    zoo = _zoo_training(first) if first else []
    page.fragment("intro")
    page.fragment("results", finished=len(done), runs=len(declared), seeds=[r.seed for r in done],
                  command=first.command if first else "", config=first.args if first else {},
                  cpu=[minutes(r.metrics.get("timing", {}).get("cpu_seconds")) for r in done],
                  models=table(["model", "source"], [[k, v.get("source", "")] for k, v in
                                                     metrics.get("models", {}).items()]),
                  training=table(["run", "parameters", "steps", "test bits/dim", "CPU time"], zoo) if zoo else "",
                  sets=table(["set", "role", "content"], [[k, v.get("role", ""), v.get("description", "")]
                                                          for k, v in metrics.get("sets", {}).items()]),
                  unavailable=metrics.get("unavailable", []),
                  largest=table(["set", *models], largest), verdicts=table(["set", *models], verdicts),
                  per_seed=table(["seed", "model", "largest OOD error / largest in-distribution error",
                                  "verdict off the data"], per_seed), figures=figures)
    page.fragment("pretrained")


REPORT = Report(name="ood", title="Out-of-distribution reconstruction (PAPER.md 2.7, 2.8)", runs=RUNS, write=write,
                folder=Path(__file__).parent, description=__doc__)
main = REPORT.main
