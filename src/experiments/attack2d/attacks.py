"""The attack on the trained 2-D flows of one flows2d run (see :mod:`experiments.attack2d`)."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from invertible.attack import invertibility_attack

from ..common.checkerboard import checkerboard, load_models
from ..common.plots import line_panels
from ..common.runs import Run, read_csv
from ..common.verdicts import attack_verdicts

__all__ = ["FIELDS", "ModelsNotFound", "plot_attack", "prepare", "run"]

_log = logging.getLogger(__name__)

#: Columns of ``attack.csv``.
FIELDS = ["model", "radius", "step", "recon_max", "recon_median", "nonfinite", "attack_recon_max", "distance_max"]


class ModelsNotFound(ValueError):
    """``--models`` names a model that the ``--flows`` run does not hold."""


def prepare(args: argparse.Namespace, device: torch.device) -> nn.ModuleDict:
    """The trained models of the ``--flows`` run (before the run folder exists: a wrong ``--flows`` or ``--models``
    leaves nothing behind)."""
    models, _ = load_models(args.flows, device)
    unknown = sorted(set(args.models) - set(models.keys()))
    if unknown:
        raise ModelsNotFound(f"--models {unknown} are not in {args.flows}, which holds {list(models.keys())}")
    return models


def _worst(values: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Largest value along ``dim`` with NaN and Inf counting as infinite."""
    return values.double().nan_to_num(nan=math.inf, posinf=math.inf).amax(dim=dim)


def run(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    """One attack per model and radius; a finished (model, radius) pair is kept on resume."""
    models, device = run.inputs, run.device
    log = run.csv("attack", FIELDS)
    done = {(r["model"], float(r["radius"])) for r in read_csv(run.path / "attack.csv")} if run.resumed else set()
    x = checkerboard(args.points, torch.Generator().manual_seed(args.seed + 3)).to(device)
    metrics: dict[str, Any] = dict(run.metrics)
    for kind in args.models:
        model = models[kind]
        param = next(model.parameters())
        for radius in args.radius:
            if (kind, radius) in done:
                continue
            step_size = args.step_size if args.step_size is not None else radius / 50
            attack = dict(radius=radius, step_size=step_size, unroll=args.unroll)
            result = invertibility_attack(model, x.to(param.dtype), steps=args.steps, **attack,
                                          generator=torch.Generator().manual_seed(args.seed + 4))
            # the random start alone (0 steps from the same seed): what breaks there is not the ascent's doing
            start = invertibility_attack(model, x.to(param.dtype), steps=0, **attack,
                                         generator=torch.Generator().manual_seed(args.seed + 4))
            acc = result.accurate_error
            finite = torch.isfinite(acc)
            for t in range(acc.shape[0]):
                log.log(model=kind, radius=radius, step=t, recon_max=float(_worst(acc[t])),
                        recon_median=float(acc[t].double().nan_to_num(nan=math.inf).median()),
                        nonfinite=float((~finite[t]).double().mean()),
                        attack_recon_max=float(_worst(result.attack_error[t])),
                        distance_max=float(result.distance[t].max()))
            first = result.first_nonfinite
            hit = first[first >= 0]
            growth = _worst(acc, dim=0) / result.reference.double()  # per point: worst over the steps
            # per point: worst error relative to the size of the input where it occurred (errors scale with |x|)
            relative = _worst(acc, dim=0) / result.x_worst.double().flatten(1).norm(dim=1)
            metrics.setdefault(kind, {})[f"radius_{radius:g}"] = {
                "clean_recon_max": float(_worst(result.clean_error)),
                "final_recon_max": float(_worst(acc[-1])),
                "max_recon": float(_worst(acc.flatten())),
                "growth_max": float(_worst(growth)),
                "relative_max": float(_worst(relative)),
                "first_nonfinite_step": int(hit.min()) if hit.numel() else -1,
                "nonfinite_points": int(hit.numel()),
                "nonfinite_at_start": int((first == 0).sum()),
                **attack_verdicts(x, start.x, start.accurate_error[0], result, param.dtype, model=model),
            }
            _log.info("%s, radius %g: %s", kind, radius, metrics[kind][f"radius_{radius:g}"])
            # a finished (model, radius) pair is kept on resume: its rows are in the CSV, its metrics stored
            run.update_metrics(**metrics)
            run.save_checkpoint(done=[list(p) for p in sorted(done | {(kind, radius)})])
            done.add((kind, radius))
    if run.main:
        plot_attack(run.path / "attack.csv", run.plot_dir / "attack.png")
    return dict(run.metrics)


def plot_attack(csv_path: str | Path, out: str | Path) -> None:
    """Largest reconstruction error over the attack steps, one panel per radius, one curve per model (crosses at
    the top mark non-finite values)."""
    rows = read_csv(csv_path)
    radii = sorted({float(r["radius"]) for r in rows})
    kinds = list(dict.fromkeys(r["model"] for r in rows))
    panels = {}
    for radius in radii:
        curves = {}
        for kind in kinds:
            mine = [r for r in rows if r["model"] == kind and float(r["radius"]) == radius]
            curves[kind] = ([float(r["step"]) for r in mine], [float(r["recon_max"]) for r in mine])
        panels[f"ball radius {radius:g}"] = curves
    line_panels(panels, out, xlabel="attack step", logy=True,
                title="invertibility attack: largest reconstruction error over the attacked points")
