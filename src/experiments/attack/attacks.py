"""The attack on trained image flows: one attack per flow, its log, its summary and its pictures."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from invertible import allow_nonfinite, iterative_inverse
from invertible.attack import AttackResult, invertibility_attack

from ..common.data import ImageData, load_dataset
from ..common.image_flows import GLOW_MODELS, RESFLOW_LABEL, ImageFlow, slug, study_flows, without_logdet
from ..common.plots import image_grid, line_plot
from ..common.runs import Run
from ..common.verdicts import attack_verdicts

__all__ = ["DEFAULT_MODELS", "FIELDS", "attack_flow", "prepare", "run", "summarize"]

_log = logging.getLogger("experiments.attack")

#: Columns of ``attack.csv``.
FIELDS = ["model", "step", "recon_max", "recon_mean", "recon_median", "nonfinite_share", "attack_recon_max",
          "distance_max"]
#: The zoo's models the attack uses by default, in plot order.
DEFAULT_MODELS = ("affine-sigmoid", "affine-bounded", "additive")


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
    settings = dict(radius=radius, step_size=step, random_start=True, clamp=clamp, unroll=unroll if iterative else None,
                    accurate_max_iter=accurate_iterations if iterative else None)
    with without_logdet(flow.model):
        result = invertibility_attack(flow.model, x_nat, steps=steps, **settings,
                                      generator=torch.Generator().manual_seed(seed))
        # the random start alone (0 steps from the same seed): what breaks there is not the ascent's doing
        start = invertibility_attack(flow.model, x_nat, steps=0, **settings,
                                     generator=torch.Generator().manual_seed(seed))
    result.start = start  # type: ignore[attr-defined]
    return result, radius, step, x_nat


def summarize(result: AttackResult, x_nat: torch.Tensor | None = None, model: Any = None) -> dict[str, Any]:
    """The attack's numbers; with ``x_nat`` (and the random start kept by :func:`attack_flow`), the verdicts at the
    natural images, the starting points and the worst iterates, and ``breaks_at_start``/``breaks_by_ascent``."""
    first = result.first_nonfinite
    start = getattr(result, "start", None)
    verdicts = ({} if x_nat is None or start is None else
                attack_verdicts(x_nat, start.x, start.accurate_error[0], result, x_nat.dtype, model=model))
    broken = first[first >= 0]
    finite_max = result.accurate_error[torch.isfinite(result.accurate_error)]
    # per image: its largest error relative to the size of the input where it occurred (as attack2d stores it),
    # so that the library's verdict can be decided where nothing is non-finite
    relative = result.max_error.double() / result.x_worst.double().flatten(1).norm(dim=1)
    return {"clean_error_max": float(result.clean_error.max()),
            "final_error_max": float(result.accurate_error[-1].nan_to_num(nan=math.inf, posinf=math.inf).max()),
            "max_error": float(result.max_error.max()),
            "largest_finite_error": float(finite_max.max()) if finite_max.numel() else math.nan,
            "growth_max": float(result.growth.max()),
            "relative_max": float(relative.nan_to_num(nan=math.inf, posinf=math.inf).max()),
            "first_nonfinite_step": int(broken.min()) if broken.numel() else -1,
            "first_nonfinite_per_image": [int(v) for v in first.tolist()],
            "images_broken": int(broken.numel()), "nonfinite_at_start": int((first == 0).sum()), **verdicts}


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
               folder / f"attack_{slug(flow.name)}.png", ncol=min(8, len(x_hat)), value_range=(0.0, 1.0),
               title=f"{flow.name} ({state}): attacked inputs / reconstructions / |difference|")


def prepare(args: argparse.Namespace, device: torch.device) -> tuple[list[ImageFlow], ImageData]:
    """The flows (``--model``, or the zoo's, trained on first use) and the natural images' data set, loaded before
    the run folder exists."""
    flows = study_flows(args, device)
    if not args.model:
        order = [GLOW_MODELS[m] for m in DEFAULT_MODELS] + [RESFLOW_LABEL]
        flows = sorted((f for f in flows if f.name in order), key=lambda f: order.index(f.name))
    data = load_dataset(flows[0].dataset or args.dataset, args.split, data_dir=args.data_dir)
    return flows, data


def run(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    """Attack every flow from the first ``--images`` natural images; ``attack.csv``, summaries and pictures."""
    flows, data = run.inputs
    device = run.device
    images = data.images[: args.images]
    image_grid(images.double() / (data.levels - 1), out=run.plot_dir / "natural.png",
               ncol=min(8, len(images)), value_range=(0.0, 1.0),
               title=f"the natural images ({data.name} {args.split}, first {len(images)})")
    log = run.csv("attack", FIELDS)
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    summaries: dict[str, dict[str, Any]] = {}
    for flow in flows:
        flow.model.to(device)
        result, radius, step, x_nat = attack_flow(flow, images.to(device), data.levels,
                                              radius_levels=args.radius_levels, step_size=args.step_size,
                                              steps=args.steps, unroll=args.unroll,
                                              accurate_iterations=args.accurate_iterations, seed=args.seed)
        rows = _rows(flow.name, result)
        for row in rows:
            log.log(**row)
        summary = {**summarize(result, x_nat, flow.model), "radius": radius, "step_size": step, "source": flow.source}
        summaries[flow.name] = summary
        curves[flow.name] = (np.arange(len(rows), dtype=float), np.array([r["recon_max"] for r in rows]))
        _pictures(flow, result, run.plot_dir, summary)
        _log.info("%s: clean error %.3g, largest error %.3g, first non-finite step %d", flow.name,
                  summary["clean_error_max"], summary["max_error"], summary["first_nonfinite_step"])
    line_plot(curves, run.plot_dir / "attack_curves.png", logy=True, xlabel="attack step",
              ylabel="largest reconstruction error ||x - f^-1(f(x))||_2",
              title=f"invertibility attack, radius {args.radius_levels:g} grey levels")
    print(f"invertibility attack: {run.path}")
    for name, s in summaries.items():
        print(f"  {name:<22} clean {s['clean_error_max']:.3g}  largest {s['max_error']:.3g}  "
              f"first non-finite step {s['first_nonfinite_step']}")
    return {"models": summaries, "images": len(images), "dataset": data.name, "split": args.split}
