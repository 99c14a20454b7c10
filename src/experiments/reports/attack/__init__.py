"""The page docs/results/attack.md: the invertibility attack on the embedded zoo (PAPER.md section 2.4).

Runs ``python -m experiments.attack`` on each seed's zoo (shared with the OOD report; trained here if it is
missing) at the paper's radius scaled to the digits (half a grey level) and, as stress settings, radii of 4 and
16 grey levels (16: the whole data range), once per seed of :data:`SEEDS`.

Usage::

    python -m experiments.reports.attack
    python -m experiments.reports.attack --report-only
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from ..common import (INVERTIBLE, NON_INVERTIBLE, Claim, Criterion, Judgement, Page, Report, RunRecord, Runs,
                      find_stored, fmt, judge, minutes, num, relative_of, seeded, table)
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
    """The library's verdict on one model's attacked images (every iterate)."""
    found = find_stored(m)
    if found is not None:
        return found
    return judge(relative_of(m), m.get("images_broken", 0), len(m.get("first_nonfinite_per_image", [])) or None,
                 missing="relative errors (only absolute ones)")


def claims(runs: Sequence[RunRecord], where: str) -> list[Claim]:
    breaks, holds, later = Criterion.verdict(NON_INVERTIBLE), Criterion.verdict(INVERTIBLE), Criterion.stated()
    obs: dict[str, list[Any]] = {"breaks": [], "holds": [], "later": []}
    for run in runs:
        models = run.metrics.get("models", {})
        at = (run.name, run.seed, run.demo)
        affine = next((m for n, m in models.items() if n.startswith("affine")), None)
        bounded = next((m for n, m in models.items() if n.startswith("bounded")), None)
        residual = next((m for n, m in models.items() if "Residual" in n), None)
        if affine is not None:
            step = int(num(affine.get("first_nonfinite_step", -1)))
            judgement = verdict(affine)
            if step == 0:  # the random start broke it, not the ascent
                obs["breaks"].append(breaks.observe(*at, affine.get("growth_max"), False,
                                                    f"seed {run.seed}: non-finite at step 0, the random start"))
            else:
                obs["breaks"].append(breaks.judged(*at, judgement, value=affine.get("growth_max")))
            if bounded is not None:
                a_step, b_step = step, int(num(bounded.get("first_nonfinite_step", -1)))
                obs["later"].append(later.observe(*at, b_step, holds=a_step >= 0 and (b_step < 0 or b_step > a_step)
                                                  if a_step >= 0 else None,
                                                  note="" if a_step >= 0 else
                                                  f"seed {run.seed}: the affine Glow did not break"))
        if residual is not None:
            obs["holds"].append(holds.judged(*at, verdict(residual), value=residual.get("growth_max")))
    return [Claim("attack-breaks-affine", breaks, obs["breaks"], where),
            Claim("attack-bounded-later", later, obs["later"], where),
            Claim("attack-residual-holds", holds, obs["holds"], where)]


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
            slug = "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")
            source = first.path / "plots" / f"attack_{slug}.png"
            if source.is_file():
                figures.append((f"{name}: attacked inputs (the worst iterate per image) / reconstructions / "
                                "|difference|", page.figures.copy(source, f"{setting}_attack_{slug}.png")))
    page.fragment("setting", title=SETTINGS[setting][0], runs=len(runs), finished=len(done),
                  seeds=[r.seed for r in done], command=first.command if first else "",
                  config=first.args if first else {},
                  cpu=[minutes(r.metrics.get("timing", {}).get("cpu_seconds")) for r in done], figures=figures,
                  table=table(["seed", "model", "radius", "clean error (max)", "largest error", "growth",
                               "first non-finite step", "images broken", "verdict"], rows))


def write(runs: Runs, page: Page) -> None:
    settings = [s for s in SETTINGS if runs.setting(s)]
    page.claims([c for s in settings for c in claims(runs.group(f"attack/{s}"), f"{s} setting")])
    page.fragment("intro")
    for setting in settings:
        section(runs.group(f"attack/{setting}", finished=False), page, setting)
    page.fragment("pretrained")


REPORT = Report(name="attack", title="The invertibility attack on image flows (PAPER.md 2.4)", runs=RUNS,
                write=write, folder=Path(__file__).parent, description=__doc__)
main = REPORT.main
