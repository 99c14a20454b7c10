"""The 2-D attack's part of the toy page: claim and section (``experiments.attack2d`` runs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..common import (Claim, ClaimSet, Criterion, Judgement, Page, RunRecord, find_stored, fmt, judge,
                      minutes, num, table)

__all__ = ["breaks", "claims", "section", "verdict"]


def verdict(entry: Mapping[str, Any]) -> Judgement:
    """The verdict on every iterate of one model's attack in one ball (the worst relative error over the attack,
    the points whose reconstruction became non-finite)."""
    found = find_stored(entry)
    if found is not None:
        return found
    return judge(entry.get("relative_max"), entry.get("nonfinite_points", 0), entry.get("points"))


def breaks(entry: Mapping[str, Any]) -> tuple[bool, bool]:
    """(the attack made the model non-invertible, the random start did it: non-finite at step 0)."""
    broken = verdict(entry).label == "non-invertible"
    return broken, broken and int(num(entry.get("first_nonfinite_step", -1))) == 0


def _entries(run: RunRecord, model: str) -> dict[float, Mapping[str, Any]]:
    return {num(r): run.metrics.get(model, {}).get(f"radius_{num(r):g}", {}) for r in run.args.get("radius", [])}


def claims(runs: Sequence[RunRecord], where: str) -> list[Claim]:
    """The affine flow is broken by the ascent (not by its random start) in a ball where the i-ResNet is not,
    and the bounded affine holds out (is not broken, or from a later step)."""
    found = ClaimSet({"attack-breaks-affine": Criterion.stated()}, where)
    for run in (r for r in runs if {"affine", "bounded", "iresnet"} <= set(r.args.get("models", []))):
        a, b, r = (_entries(run, k) for k in ("affine", "bounded", "iresnet"))
        holds, starts = False, []
        for radius in a:
            (ab, a0), (bb, _), (rb, _) = breaks(a[radius]), breaks(b[radius]), breaks(r[radius])
            if a0:
                starts.append(fmt(radius))
                continue
            a_step, b_step = (int(num(x[radius].get("first_nonfinite_step", -1))) for x in (a, b))
            holds = holds or (ab and not rb and (not bb or b_step > a_step >= 0))
        note = (f"seed {run.seed}: the random start broke the affine flow at radius {', '.join(starts)} "
                "(step 0), not counted" if starts else "")
        found.observe("attack-breaks-affine", run, None, holds, note)
    return found.claims()


def _row(run: RunRecord, model: str, radius: float, e: Mapping[str, Any]) -> list[str]:
    first = int(num(e.get("first_nonfinite_step", -1)))
    return [str(run.seed), model, fmt(radius), fmt(e.get("clean_recon_max")), fmt(e.get("max_recon")),
            fmt(e.get("growth_max")), fmt(e.get("relative_max")), str(first) if first >= 0 else "never",
            f"{e.get('nonfinite_points')} of {e.get('points')}", verdict(e).label]


def section(runs: Sequence[RunRecord], page: Page, setting: str) -> None:
    done = [r for r in runs if r.finished]
    rows = [_row(run, model, radius, e) for run in done for model in run.args.get("models", [])
            for radius, e in _entries(run, model).items()]
    figure = page.figures.copy(done[0].path / "plots" / "attack.png", f"{setting}_attack2d.png") if done else None
    config = done[0].args if done else {}
    page.fragment("attack", setting=setting, runs=len(runs), finished=len(done), config=config,
                  seeds=[r.seed for r in done], command=done[0].command if done else "", figure=figure,
                  cpu=[minutes(r.metrics.get("timing", {}).get("cpu_seconds")) for r in done],
                  table=table(["seed", "model", "ball radius", "max recon (clean points)", "max recon (attack)",
                               "max growth per point", "max relative error", "first non-finite step",
                               "points non-finite", "verdict"], rows))
