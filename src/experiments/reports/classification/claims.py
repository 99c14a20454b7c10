"""The classification page's claims and the values its findings quote, from the runs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..common import (INVERTIBLE, NON_INVERTIBLE, Claim, Criterion, Judgement, RunRecord, Runs, combine,
                      find_stored, judge, num, spread)

__all__ = ["GRAD_ANGLE", "claims", "findings", "group_name", "seeds_of", "verdict"]

#: Claims decided by the library's verdict: id, the verdict that shows the claim, the configurations checked.
VERDICT_CLAIMS: list[tuple[str, str, tuple[str, ...]]] = [
    ("affine-non-invertible", NON_INVERTIBLE, ("affine_conv", "affine_shuffle")),
    ("additive-invertible", INVERTIBLE, ("additive_conv", "additive_shuffle")),
    ("nf-invertible", INVERTIBLE, ("affine_conv_nf", "affine_conv_nf_scaled", "affine_shuffle_nf",
                                   "affine_shuffle_nf_scaled")),
    ("fd-invertible", INVERTIBLE, ("affine_conv_fd", "affine_conv_fd_scaled", "affine_conv_fd_original",
                                   "affine_shuffle_fd", "affine_shuffle_fd_scaled")),
]
#: The angle (radians) between memory-saving and exact gradients above which memory saving counts as wrong.
GRAD_ANGLE = 1e-2


def verdict(run: RunRecord) -> Judgement:
    """The library's verdict on a classifier run: every training and test image's reconstruction."""
    found = find_stored(run.metrics)
    if found is not None:
        return found
    m = run.metrics
    parts = [judge(m.get(f"recons_{split}_max_relative"), nonfinite_share=m.get(f"recons_{split}_nonfinite", 0),
                   missing=f"relative errors of its {split} images") for split in ("train", "test")]
    return combine(parts)


def group_name(setting: str, config: str) -> str:
    return f"classification/{setting}/{config}"


def seeds_of(runs: Runs, setting: str, config: str) -> list[RunRecord]:
    """The finished seeds of a configuration in a setting (none if it is not declared there)."""
    name = group_name(setting, config)
    return runs.group(name) if runs.has(name) else []


def _status_note(run: RunRecord) -> str:
    return "" if run.completed else f"seed {run.seed}: {run.status}"


def claims(runs: Runs, settings: Sequence[str]) -> list[Claim]:
    out = []
    for claim_id, label, configs in VERDICT_CLAIMS:
        criterion = Criterion.verdict(label)
        for setting in settings:
            for config in configs:
                if not runs.has(group_name(setting, config)):
                    continue
                obs = [criterion.judged(r.name, r.seed, r.demo, verdict(r), note=_status_note(r))
                       for r in seeds_of(runs, setting, config)]
                out.append(Claim(claim_id, criterion, obs, f"`{config}`, {setting}"))
    angle = Criterion.above(GRAD_ANGLE, " rad")
    for setting in settings:
        for config in ("affine_conv", "affine_shuffle"):
            if not runs.has(group_name(setting, config)):
                continue
            group = seeds_of(runs, setting, config)
            obs = []
            for r in group:
                value = num(r.metrics.get("grad_angle"))
                broken = verdict(r).label == NON_INVERTIBLE
                # a NaN angle (non-finite memory-saving gradients) is as wrong as a gradient can be
                holds = (not value <= GRAD_ANGLE) if broken else None
                note = "" if broken else f"seed {r.seed}: invertible at the end, so not a test of the claim"
                obs.append(angle.observe(r.name, r.seed, r.demo, value, holds, note))
            out.append(Claim("mem-saving-wrong", angle, obs, f"`{config}`, {setting}"))
    return out


def _median(group: Sequence[RunRecord], key: str) -> float:
    stats = spread([r.metrics.get(key) for r in group])
    return math.nan if stats is None else stats[0]


def findings(runs: Runs, settings: Sequence[str]) -> dict[str, Any]:
    """The numbers the findings fragment quotes (medians over seeds), and which runs exist."""
    values: dict[str, Any] = {"settings": list(settings)}
    for setting in settings:
        for config in ("affine_conv", "affine_shuffle", "additive_conv", "additive_shuffle", "affine_conv_float64",
                       "affine_conv_nf", "affine_conv_nf_scaled"):
            group = seeds_of(runs, setting, config)
            key = f"{setting}_{config}"
            values[key] = {
                "runs": len(group),
                "acc": _median(group, "test_acc"), "kappa": _median(group, "cond_forward"),
                "recon_max": _median(group, "recons_train_max"),
                "non_invertible": sum(verdict(r).label == NON_INVERTIBLE for r in group),
                "invertible": sum(verdict(r).label == INVERTIBLE for r in group),
            }
    return {"v": values}
