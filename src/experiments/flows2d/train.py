"""Training and evaluating the 2-D flows of one run (see :mod:`experiments.flows2d`)."""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from invertible import allow_nonfinite
from invertible.diagnostics import eval_mode

from ..common.checkerboard import build_models, checkerboard, refresh_spectral_norms
from ..common.runs import Run, read_csv, write_json
from ..common.training import ResumableLoop, Stopwatch
from .evaluate import REGION_FIELDS, evaluate_points, grid_points, region_row, region_verdict, square_boundary
from .figures import plot_run

__all__ = ["run"]

_log = logging.getLogger(__name__)


def run(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    """Train each model on fresh checkerboard samples, then evaluate it on the grid, the data and far away."""
    device = run.device
    models = build_models(args).to(device)
    optimizers = {kind: torch.optim.Adam(m.parameters(), lr=args.lr, weight_decay=args.weight_decay, foreach=True)
                  for kind, m in models.items()}
    loop = ResumableLoop(run, epochs=len(args.models), seed=args.seed, steps_per_epoch=args.iterations,
                         checkpoint_every=args.checkpoint_every, desc="flows2d")
    loop.track(models=models, **{f"optimizer_{k}": o for k, o in optimizers.items()})
    loop.restore()
    test = checkerboard(args.test_size, torch.Generator().manual_seed(args.seed + 1)).to(device)
    data = checkerboard(args.data_points, torch.Generator().manual_seed(args.seed + 2))
    regions = run.csv("regions", REGION_FIELDS)
    watch = Stopwatch()

    for index in loop.epochs():
        kind = args.models[index]
        model, optimizer = models[kind], optimizers[kind]
        log = run.csv(f"train_{kind}", ["step", "train_nll", "test_nll", "seconds"])
        model.train()
        for step in loop.steps():
            x = checkerboard(args.batch_size, step.generator).to(device)
            loss = -model.log_prob(x).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if (step.index + 1) % args.log_every == 0 or step.index == args.iterations - 1:
                with eval_mode(model), torch.no_grad(), allow_nonfinite():
                    test_nll = float(-model.log_prob(test).mean())
                log.log(step=step.index + 1, train_nll=float(loss.detach()), test_nll=test_nll,
                        seconds=watch.seconds()["wall_seconds"])
                loop.set_postfix(model=kind, test_nll=test_nll)
        refresh_spectral_norms(model)
        _evaluate(run, args, kind, model, data, regions)

    run.save_checkpoint("models", models=models.state_dict())
    metrics = _metrics(run, args)
    run.update_metrics(**metrics)
    if run.main:
        plot_run(run.path, args.models)
    return dict(run.metrics)


def _evaluate(run: Run, args: argparse.Namespace, kind: str, model: nn.Module, data: Tensor, regions: Any) -> None:
    """Grid arrays (``grid_<kind>.npz``) and the region rows of one trained model."""
    exact = copy.deepcopy(model).double()
    started = time.perf_counter()
    on_grid = evaluate_points(model, grid_points(args.grid_extent, args.grid_size), exact=exact)
    if run.main:
        np.savez_compressed(run.path / f"grid_{kind}.npz", extent=args.grid_extent, size=args.grid_size, **on_grid)
    verdicts = {"grid": region_verdict(on_grid)}
    values = evaluate_points(model, data, exact=exact)
    verdicts["data"] = region_verdict(values)
    regions.log(**region_row(kind, "data", 4.0, values, verdicts["data"]))
    for radius in args.far_radii:
        values = evaluate_points(model, square_boundary(radius, args.far_points), exact=exact)
        verdicts[f"square R={radius:g}"] = region_verdict(values)
        regions.log(**region_row(kind, f"square R={radius:g}", radius, values, verdicts[f"square R={radius:g}"]))
    if run.main:  # the verdict per evaluated set, read into metrics.json at the end (also after a resume)
        write_json(run.path / f"verdicts_{kind}.json", verdicts)
    _log.info("evaluated %s in %.0f s", kind, time.perf_counter() - started)


def _metrics(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    """Per model: final test NLL, grid maxima, data-region and far-region statistics."""
    metrics: dict[str, Any] = {"preset": args.preset}
    rows = read_csv(run.path / "regions.csv")
    for kind in args.models:
        train = read_csv(run.path / f"train_{kind}.csv")
        grid = np.load(run.path / f"grid_{kind}.npz")
        mine = [r for r in rows if r["model"] == kind]
        far = [r for r in mine if r["region"] != "data"]
        entry: dict[str, Any] = {
            "test_nll": float(train[-1]["test_nll"]),
            "grid_recon_max": float(np.nan_to_num(grid["recon"], nan=np.inf, posinf=np.inf).max()),
            "grid_nonfinite": float(np.mean(~np.isfinite(grid["recon"]))),
            "grid_cond_max": float(np.nan_to_num(grid["cond"], nan=np.inf, posinf=np.inf).max()),
            "grid_cond_median": float(np.median(np.nan_to_num(grid["cond"], nan=np.inf, posinf=np.inf))),
            "grid_logdet_error_max": float(np.nan_to_num(grid["logdet_error"], nan=np.inf, posinf=np.inf).max()),
        }
        for r in mine:
            if r["region"] == "data":
                entry.update({f"data_{k}": float(r[k]) for k in ("recon_max", "cond_median", "cond_max")})
        if far:
            last = far[-1]
            entry.update({"far_radius": float(last["radius"]), "far_recon_max": float(last["recon_max"]),
                          "far_cond_max": float(last["cond_max"]), "far_nonfinite": float(last["nonfinite"])})
        verdicts = run.path / f"verdicts_{kind}.json"
        if verdicts.is_file():
            entry["verdicts"] = json.loads(verdicts.read_text())
        metrics[kind] = entry
    return metrics
