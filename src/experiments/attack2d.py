"""The invertibility attack against the trained 2-D checkerboard flows.

PAPER.md section 2.4 attacks CelebA flows: projected sign-gradient ascent on the reconstruction error
``||x - f^-1(f(x))||`` inside a small l-infinity ball around a data point, counting the steps until the
reconstruction is no longer finite. Here the same attack (:func:`invertible.attack.invertibility_attack`) runs
against the four models of a finished ``python -m experiments.flows2d`` run, from checkerboard samples, once per
ball radius (``--radius``; the data lie in ``[-4, 4]^2``). Residual flows' inverses are unrolled for ``--unroll``
fixed-point iterations inside the attack graph (4 in the original) and run to convergence for the reported errors.

Outputs (in ``--out``): ``attack.csv`` (per model, radius and step: largest and median reconstruction error over
the attacked points, fraction of points whose reconstruction is not finite, largest distance moved),
``metrics.json`` (per model and radius: clean and final errors, the largest growth over a point's clean error, the
largest error relative to ``||x||`` where it occurred, the first step at which any point's reconstruction became
non-finite, -1 if none) and ``plots/attack.png``.

A ball of radius 0.5 or 4 keeps the attack near the data (the [-8, 8]^2 grid of flows2d); a ball of radius 256
lets it walk far from the data, where flows2d's sweep finds the affine inverse overflowing.

Examples::

    python -m experiments.flows2d                       # writes runs/flows2d_cpu
    python -m experiments.attack2d --flows runs/flows2d_cpu     # writes runs/attack2d_flows2d_cpu
    python -m experiments.attack2d --flows runs/flows2d --radius 0.125 2 --steps 500 --out runs/attack2d_long
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from invertible.attack import invertibility_attack

from .cli import add_run_args
from .flows2d import checkerboard, load_models
from .plots import line_panels
from .runs import Run, open_run, read_csv
from .training import Stopwatch, resolve_device

__all__ = ["FIELDS", "build_parser", "main", "plot_attack"]

_log = logging.getLogger(__name__)

#: Columns of ``attack.csv``.
FIELDS = ["model", "radius", "step", "recon_max", "recon_median", "nonfinite", "attack_recon_max", "distance_max"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.attack2d", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flows", type=Path, required=True,
                        help="A finished run folder of python -m experiments.flows2d (its trained models).")
    parser.add_argument("--models", nargs="+", help="Models to attack (default: all models of the run).")
    parser.add_argument("--points", type=int, default=64,
                        help="Checkerboard samples attacked, all at once (default: %(default)s).")
    parser.add_argument("--radius", type=float, nargs="+", default=[0.5, 4.0, 256.0],
                        help="Half-widths of the l-infinity balls, one attack each: 0.5 stays near the data, 4 "
                             "reaches the [-8, 8]^2 grid, 256 reaches far from the data where flows2d's sweep "
                             "probes (default: %(default)s).")
    parser.add_argument("--step-size", type=float,
                        help="Sign-gradient step (default: radius / 50, so 100 steps cross the ball).")
    parser.add_argument("--steps", type=int, default=200, help="Attack steps (default: %(default)s).")
    parser.add_argument("--unroll", type=int, default=4,
                        help="Fixed-point iterations of residual inverses inside the attack graph (default: "
                             "%(default)s, as the original).")
    parser.add_argument("--quick", action="store_true", help="16 points, 40 steps (the tests).")
    parser.add_argument("--seed", type=int, default=0,
                        help="Seeds the points and random starts (default: %(default)s).")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default: %(default)s).")
    add_run_args(parser, auto_out="runs/attack2d_<name of the --flows folder>")
    return parser


def _worst(values: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Largest value along ``dim`` with NaN and Inf counting as infinite."""
    return values.double().nan_to_num(nan=math.inf, posinf=math.inf).amax(dim=dim)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the attacks; returns the metrics (also in metrics.json)."""
    args = build_parser().parse_args(argv)
    if args.quick:
        args.points, args.steps = 16, 40
    if args.out is None:
        args.out = Path("runs") / f"attack2d_{args.flows.resolve().name}"
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    models, flows_args = load_models(args.flows, device)
    kinds = args.models or list(models.keys())
    unknown = sorted(set(kinds) - set(models.keys()))
    if unknown:
        raise SystemExit(f"--models {unknown} are not in {args.flows}, which holds {list(models.keys())}")
    args.models = kinds
    run = open_run(args.out, args, resume=args.resume, overwrite=args.overwrite, ignore={"threads"})
    try:
        return _attack(run, args, models, device)
    finally:
        run.close()


def _attack(run: Run, args: argparse.Namespace, models: Any, device: torch.device) -> dict[str, Any]:
    log = run.csv("attack", FIELDS)
    done = {(r["model"], float(r["radius"])) for r in read_csv(run.path / "attack.csv")} if run.resumed else set()
    x = checkerboard(args.points, torch.Generator().manual_seed(args.seed + 3)).to(device)
    metrics: dict[str, Any] = dict(run.metrics)
    watch = Stopwatch()
    for kind in args.models:
        model = models[kind]
        param = next(model.parameters())
        for radius in args.radius:
            if (kind, radius) in done:
                continue
            step_size = args.step_size if args.step_size is not None else radius / 50
            result = invertibility_attack(model, x.to(param.dtype), radius=radius, step_size=step_size,
                                          steps=args.steps, unroll=args.unroll,
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
            relative = result.max_error.double() / result.x_worst.double().flatten(1).norm(dim=1)
            metrics.setdefault(kind, {})[f"radius_{radius:g}"] = {
                "clean_recon_max": float(_worst(result.clean_error)),
                "final_recon_max": float(_worst(acc[-1])),
                "max_recon": float(_worst(acc.flatten())),
                "growth_max": float(_worst(growth)),
                "relative_max": float(_worst(relative)),
                "first_nonfinite_step": int(hit.min()) if hit.numel() else -1,
                "nonfinite_points": int(hit.numel()),
                "points": int(first.numel()),
            }
            _log.info("%s, radius %g: %s", kind, radius, metrics[kind][f"radius_{radius:g}"])
            # a finished (model, radius) pair is kept on resume: its rows are in the CSV, its metrics stored
            run.update_metrics(**metrics)
            run.save_checkpoint(done=[list(p) for p in sorted(done | {(kind, radius)})])
            done.add((kind, radius))
    run.update_metrics(timing=watch.seconds())
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


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(sys.argv[1:])
