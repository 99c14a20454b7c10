"""The invertibility attack on trained image flows (PAPER.md section 2.4): ``python -m experiments.attack``.

The paper attacks CelebA 64x64 flows: starting from a training image, centred in its dequantisation cube, projected
sign-gradient ascent on the reconstruction error ``||x - f^-1(f(x))||_2`` inside an l-infinity ball of half a grey
level (``0.5 / 2^5``), 200 steps of 0.0005, drives the affine flow to a non-invertible input (NaN reconstruction at
step 56; the modified affine ``0.5 sigmoid + 0.5`` at step 143), while the Residual Flow stays invertible.
Residual Flows' inverse is unrolled for 4 fixed-point iterations inside the attack graph and run for 200 for the
reported error. CelebA is not available offline, so by default the attack runs on the embedded zoo
(:func:`experiments.image_flows.embedded_zoo`: affine, bounded affine and additive Glows and a Residual Flow trained
on the embedded digits, the same runs as ``python -m experiments.ood``), from the first test images, with the
paper's settings scaled to the data's grey levels: radius ``--radius-levels`` (0.5) grey levels, step size
``radius / 32`` (the paper's ratio, 0.0005 against 1/64), 200 steps, iterates clamped to the range of the natural
images. ``--model`` attacks other flows (see ``python -m experiments.ood``).

Outputs (in ``--out``): ``attack.csv`` (per model and step: largest, mean and median accurate reconstruction error
over the attacked images, share of non-finite ones, largest attack-graph error, largest distance moved),
``metrics.json`` (per model: clean and final errors, the largest error reached, how many times the attack raised
it, the first step at which a reconstruction became non-finite, -1 if none), ``plots/attack_curves.png`` (the
paper's figure: error over attack steps, one curve per model, crosses where it is no longer finite) and
``plots/attack_<model>.png`` (the attacked inputs, their reconstructions and the difference), ``plots/natural.png``.

Examples::

    python -m experiments.attack                         # the embedded zoo (reused from experiments.ood, or trained)
    python -m experiments.attack --preset quick --images 4 --steps 20 --out runs/attack/quick
    python -m experiments.attack --radius-levels 4 --steps 500 --out runs/attack/digits-r4
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from invertible.attack import AttackResult, invertibility_attack
from invertible import allow_nonfinite, iterative_inverse

from .data import DatasetNotFound, dataset_names, load_dataset
from .image_flows import GLOW_MODELS, ImageFlow, prepare_study, study_flows, without_logdet
from .plots import image_grid, line_plot
from .runs import CsvLog, RunExists, open_run
from .training import Stopwatch, resolve_device

__all__ = ["FIELDS", "attack_flow", "build_parser", "main"]

_log = logging.getLogger("experiments.attack")

#: Columns of ``attack.csv``.
FIELDS = ["model", "step", "recon_max", "recon_mean", "recon_median", "nonfinite_share", "attack_recon_max",
          "distance_max"]
#: The zoo's models the attack uses by default, in plot order.
DEFAULT_MODELS = ("affine-sigmoid", "affine-bounded", "additive")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.attack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=None, metavar="[LABEL=]PATH",
                        help="A model to attack (repeatable); default: the embedded zoo.")
    parser.add_argument("--dataset", default="digits", choices=dataset_names(),
                        help="Data of the zoo and of the natural images (default: %(default)s).")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="Folder searched for data set files.")
    parser.add_argument("--split", choices=["train", "test"], default="test",
                        help="Split the natural images come from (the paper: the first training batch) "
                             "(default: %(default)s).")
    parser.add_argument("--images", type=int, default=8, help="Natural images attacked, the first ones of the split.")
    parser.add_argument("--radius-levels", type=float, default=0.5,
                        help="Radius of the l-infinity ball in grey levels of the data (the paper: 0.5 of 32) "
                             "(default: %(default)s).")
    parser.add_argument("--step-size", type=float, default=None,
                        help="Sign-gradient step in the model's input space (default: radius / 32).")
    parser.add_argument("--steps", type=int, default=200, help="Attack steps (default: %(default)s).")
    parser.add_argument("--unroll", type=int, default=4,
                        help="Fixed-point iterations of a Residual Flow's inverse inside the attack graph "
                             "(default: %(default)s).")
    parser.add_argument("--accurate-iterations", type=int, default=200,
                        help="Fixed-point iterations for the reported errors (default: %(default)s).")
    parser.add_argument("--preset", choices=["default", "quick"], default="default",
                        help="Size of the zoo's models (see python -m experiments.ood) (default: %(default)s).")
    parser.add_argument("--zoo-dir", type=Path, default=None,
                        help="Where the zoo's runs live (default: runs/zoo/<dataset>-<preset>, shared with "
                             "experiments.ood).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random start (and of the zoo's training).")
    parser.add_argument("--out", type=Path, default=None,
                        help="Output folder (default: runs/attack/<dataset>-<preset>, or runs/attack/models).")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing output folder.")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: %(default)s).")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice).")
    return parser


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def attack_flow(flow: ImageFlow, images: torch.Tensor, levels: int, *, radius_levels: float,
                step_size: float | None, steps: int, unroll: int, accurate_iterations: int,
                seed: int) -> tuple[AttackResult, float, float, torch.Tensor]:
    """Attack ``flow`` from uint8 ``images`` (``levels`` grey levels); returns the result, the radius and step
    size in the model's input space, and the natural inputs (centred in their dequantisation bins)."""
    x_nat = flow.from_levels(images, levels) + 0.5 / flow.denominator
    radius = radius_levels / flow.denominator
    step = step_size if step_size is not None else radius / 32
    clamp = (float(x_nat.min()), float(x_nat.max()))
    iterative = flow.family == "resflow"
    with without_logdet(flow.model):
        result = invertibility_attack(flow.model, x_nat, radius=radius, step_size=step, steps=steps, random_start=True,
                                      clamp=clamp, unroll=unroll if iterative else None,
                                      accurate_max_iter=accurate_iterations if iterative else None,
                                      generator=torch.Generator().manual_seed(seed))
    return result, radius, step, x_nat


def _summary(result: AttackResult) -> dict[str, Any]:
    first = result.first_nonfinite
    broken = first[first >= 0]
    finite_max = result.accurate_error[torch.isfinite(result.accurate_error)]
    return {"clean_error_max": float(result.clean_error.max()),
            "final_error_max": float(result.accurate_error[-1].nan_to_num(nan=math.inf).max()),
            "max_error": float(result.max_error.max()),
            "largest_finite_error": float(finite_max.max()) if finite_max.numel() else math.nan,
            "growth_max": float(result.growth.max()),
            "first_nonfinite_step": int(broken.min()) if broken.numel() else -1,
            "first_nonfinite_per_image": [int(v) for v in first.tolist()],
            "images_broken": int(broken.numel())}


def _rows(name: str, result: AttackResult) -> list[dict[str, Any]]:
    rows = []
    for t in range(result.accurate_error.shape[0]):
        acc = result.accurate_error[t].double()
        safe = acc.nan_to_num(nan=math.inf)
        rows.append({"model": name, "step": t, "recon_max": float(safe.max()),
                     "recon_mean": float(safe.mean()), "recon_median": float(safe.median()),
                     "nonfinite_share": float((~torch.isfinite(acc)).double().mean()),
                     "attack_recon_max": float(result.attack_error[t].nan_to_num(nan=math.inf).max()),
                     "distance_max": float(result.distance[t].max())})
    return rows


def _pictures(flow: ImageFlow, result: AttackResult, folder: Path, summary: dict[str, Any]) -> None:
    with torch.no_grad(), allow_nonfinite(), iterative_inverse(max_iter=200, on_failure="return"), \
            without_logdet(flow.model):
        x_hat = flow.model.inverse(flow.model(result.x_worst)[0])[0]
    state = (f"first non-finite at step {summary['first_nonfinite_step']}" if summary["first_nonfinite_step"] >= 0
             else f"stays finite; error x{summary['growth_max']:.3g}")
    image_grid(flow.to_unit(result.x_worst.double()), flow.to_unit(x_hat.double()),
               folder / f"attack_{_slug(flow.name)}.png", ncol=min(8, len(x_hat)), value_range=(0.0, 1.0),
               title=f"{flow.name} ({state}): attacked inputs / reconstructions / |difference|")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m experiments.attack``: returns the exit status (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    prepare_study(args, "attack")
    watch = Stopwatch()
    try:
        device = resolve_device(args.device)
        run = open_run(args.out, args, overwrite=args.overwrite)
        flows = study_flows(args, device)
        if not args.model:
            order = [GLOW_MODELS[m] for m in DEFAULT_MODELS] + ["Residual Flow"]
            flows = sorted((f for f in flows if f.name in order), key=lambda f: order.index(f.name))
        data = load_dataset(flows[0].dataset or args.dataset, args.split, data_dir=args.data_dir)
        images = data.images[: args.images]
        image_grid(images.double() / (data.levels - 1), out=args.out / "plots" / "natural.png",
                   ncol=min(8, len(images)), value_range=(0.0, 1.0),
                   title=f"the natural images ({data.name} {args.split}, first {len(images)})")
        log = CsvLog(args.out / "attack.csv", FIELDS)
        curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        summaries: dict[str, dict[str, Any]] = {}
        for flow in flows:
            flow.model.to(device)
            result, radius, step, _ = attack_flow(flow, images.to(device), data.levels,
                                                  radius_levels=args.radius_levels, step_size=args.step_size,
                                                  steps=args.steps, unroll=args.unroll,
                                                  accurate_iterations=args.accurate_iterations, seed=args.seed)
            rows = _rows(flow.name, result)
            for row in rows:
                log.log(**row)
            summary = {**_summary(result), "radius": radius, "step_size": step, "source": flow.source}
            summaries[flow.name] = summary
            steps = np.arange(len(rows), dtype=float)
            curves[flow.name] = (steps, np.array([r["recon_max"] for r in rows]))
            _pictures(flow, result, args.out / "plots", summary)
            _log.info("%s: clean error %.3g, largest error %.3g, first non-finite step %d", flow.name,
                      summary["clean_error_max"], summary["max_error"], summary["first_nonfinite_step"])
        log.close()
        line_plot(curves, args.out / "plots" / "attack_curves.png", logy=True, xlabel="attack step",
                  ylabel="largest reconstruction error ||x - f^-1(f(x))||_2",
                  title=f"invertibility attack, radius {args.radius_levels:g} grey levels")
        run.update_metrics(models=summaries, images=len(images), dataset=data.name, split=args.split,
                           **watch.seconds())
        run.close()
        print(f"invertibility attack: {args.out}")
        for name, s in summaries.items():
            print(f"  {name:<22} clean {s['clean_error_max']:.3g}  largest {s['max_error']:.3g}  "
                  f"first non-finite step {s['first_nonfinite_step']}")
        return 0
    except (RunExists, FileNotFoundError, DatasetNotFound, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
