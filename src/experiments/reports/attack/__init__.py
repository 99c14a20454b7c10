"""The page docs/results/attack.md: the invertibility attack on the embedded zoo (PAPER.md section 2.4).

Runs ``python -m experiments.attack`` on each seed's zoo (shared with the OOD report; trained here if it is
missing) at the paper's radius scaled to the digits (half a grey level) and, as stress settings, radii of 4 and
16 grey levels (16: the whole data range), once per seed of :data:`SEEDS`.

Usage::

    python -m experiments.reports.attack
    python -m experiments.reports.attack --report-only
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...common.image_flows import slug as image_slug
from ..common import (INVERTIBLE, NON_INVERTIBLE, Claim, ClaimSet, Criterion, Judgement, Page, Report,
                      RunRecord, Runs, by_setting, find_stored, fmt, judge, minutes, num, relative_of, seeded,
                      table)
from ..ood import ZOO, ZOO_QUICK

__all__ = ["QUOTED", "REPORT", "SEEDS", "SETTINGS", "main", "verdict"]

SEEDS = (0, 1, 2)
#: Setting -> (title, flags of python -m experiments.attack).
SETTINGS: dict[str, tuple[str, list[str]]] = {
    "paper": ("the paper's setting: radius half a grey level, random start", []),
    "radius4": ("stressed: radius 4 grey levels", ["--radius-levels", "4"]),
    "radius16": ("the whole data range: radius 16 grey levels", ["--radius-levels", "16"]),
}
_QUICK = ("--model", "{runs}/zoo/quick", "--images", "2", "--steps", "3")
RUNS = (ZOO_QUICK, *(spec for name, (_, flags) in SETTINGS.items()
                     for spec in seeded("attack", f"attack/{name}", ["--zoo-dir", ZOO, *flags], seeds=SEEDS,
                                        setting=name, quick=_QUICK, in_quick=name != "radius4")))
#: Numerals the prose quotes that are not results (see experiments.reports.common.quoted).
QUOTED = {"56": "paper: the affine flow's NaN step on CelebA", "143": "paper: the bounded affine's NaN step",
          "200": "paper: attack steps", "64": "paper: the ball's radius on 5-bit CelebA, 1/64; digit dimensions",
          "0.0005": "paper: the attack's step size", "16": "setting: the stressed radius in grey levels",
          "256": "paper: grey levels of CIFAR-10",
          "12,288": "paper: CelebA dimensions", "17": "setting: grey levels of the digits",
          "32": "paper: grey levels of 5-bit CelebA"}


def verdict(m: Mapping[str, Any]) -> Judgement:
    """The library's verdict on one model's attacked images, each at its worst iterate."""
    found = find_stored(m)
    if found is not None:
        return found
    return judge(relative_of(m), m.get("images_broken", 0), len(m.get("first_nonfinite_per_image", [])) or None,
                 missing="relative errors (only absolute ones)")


def claims(runs: Sequence[RunRecord], where: str) -> list[Claim]:
    found = ClaimSet({"attack-breaks-affine": Criterion.verdict(NON_INVERTIBLE),
                      "attack-bounded-later": Criterion.stated(),
                      "attack-residual-holds": Criterion.verdict(INVERTIBLE)}, where)
    for run in runs:
        models = run.metrics.get("models", {})
        affine, bounded, residual = (next((m for n, m in models.items() if test(n)), None) for test in (
            lambda n: n.startswith("affine"), lambda n: n.startswith("bounded"), lambda n: "Residual" in n))
        step = -1 if affine is None else int(num(affine.get("first_nonfinite_step", -1)))
        if affine is not None and step == 0:  # the random start broke it, not the ascent
            found.observe("attack-breaks-affine", run, affine.get("growth_max"), False,
                          f"seed {run.seed}: non-finite at step 0, the random start")
        elif affine is not None:
            found.judged("attack-breaks-affine", run, verdict(affine), value=affine.get("growth_max"))
        if affine is not None and bounded is not None:
            later = int(num(bounded.get("first_nonfinite_step", -1)))
            found.observe("attack-bounded-later", run, later, (later < 0 or later > step) if step >= 0 else None,
                          "" if step >= 0 else f"seed {run.seed}: the affine Glow did not break")
        if residual is not None:
            found.judged("attack-residual-holds", run, verdict(residual), value=residual.get("growth_max"))
    return found.claims()


def section(runs: Sequence[RunRecord], page: Page, setting: str) -> None:
    done = [r for r in runs if r.finished]
    rows = []
    for run in done:
        for name, m in run.metrics.get("models", {}).items():
            step = int(num(m.get("first_nonfinite_step", -1)))
            rows.append([str(run.seed), name, fmt(m.get("radius")), fmt(m.get("clean_error_max")),
                         fmt(m.get("max_error")), fmt(m.get("growth_max")), str(step) if step >= 0 else "never",
                         f"{m.get('images_broken')} of {len(m.get('first_nonfinite_per_image', []))}",
                         verdict(m).label])
    first = done[0] if done else None
    figures = []
    if first is not None:
        figures.append(("error over attack steps", page.figures.copy(first.path / "plots" / "attack_curves.png",
                                                                     f"{setting}_attack_curves.png")))
        for name in first.metrics.get("models", {}):
            slug = image_slug(name)  # the study's own file name for the model
            source = first.path / "plots" / f"attack_{slug}.png"
            if source.is_file():
                caption = f"{name}: attacked inputs (the worst iterate per image) / reconstructions / |difference|"
                figures.append((caption, page.figures.copy(source, f"{setting}_attack_{slug}.png")))
    page.fragment("setting", title=SETTINGS[setting][0], runs=len(runs), finished=len(done),
                  seeds=[r.seed for r in done], command=first.command if first else "",
                  config=first.args if first else {},
                  cpu=[minutes(r.metrics.get("timing", {}).get("cpu_seconds")) for r in done], figures=figures,
                  table=table(["seed", "model", "radius", "clean error (max)", "largest error", "growth",
                               "first non-finite step", "images broken", "verdict"], rows))


def write(runs: Runs, page: Page) -> None:
    by_setting(runs, page, list(SETTINGS), lambda setting: f"attack/{setting}",
               lambda found, where, setting: claims(found, where), section, outro="pretrained")


REPORT = Report(name="attack", title="The invertibility attack on image flows (PAPER.md 2.4)", runs=RUNS,
                write=write, folder=Path(__file__).parent, description=__doc__)
main = REPORT.main
