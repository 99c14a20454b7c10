"""The run's figures (plots/*.png) and the summary printed at the end."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from invertible import allow_nonfinite
from invertible.models import INNClassifier

from ..common.plots import image_grid, line_panels, plot_csv
from ..common.runs import read_csv
from .data import ClassifierData

__all__ = ["columns", "make_plots", "reconstruction_grid", "side_by_side", "summary"]


def columns(path: Path, x: str, *names: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (x values, column values)}`` of the rows of a CSV log where both cells are filled."""
    rows = read_csv(path) if path.is_file() else []
    out = {}
    for name in names:
        pairs = [(float(r[x]), float(r[name])) for r in rows if r.get(x, "") != "" and r.get(name, "") != ""]
        xs, ys = zip(*pairs) if pairs else ((), ())
        out[name] = (np.asarray(xs, dtype=float), np.asarray(ys, dtype=float))
    return out


def make_plots(folder: Path, model: INNClassifier, data: ClassifierData, x_fixed: Tensor, *,
               plot_iterations: bool = False, show: int = 16) -> list[Path]:
    """Write loss_accuracy.png, stability.png, reconstructions.png (and iterations.png) into ``folder/plots``."""
    plots = folder / "plots"
    plots.mkdir(exist_ok=True)
    written = []
    epochs = columns(folder / "epoch_log.csv", "epoch", "train_loss", "test_loss", "train_acc", "test_acc")
    iters = columns(folder / "iteration_log.csv", "global_iteration", "xentropy_loss")
    shift = {k: (v[0] + 1, v[1]) for k, v in epochs.items()}  # epoch e's row describes the state after e + 1 epochs
    line_panels({"cross-entropy per iteration": {"train batch": iters["xentropy_loss"]},
                 "loss per epoch": {"train": shift["train_loss"], "test": shift["test_loss"]},
                 "accuracy": {"train": shift["train_acc"], "test": shift["test_acc"]}},
                plots / "loss_accuracy.png", xlabel="iteration | epochs done", title=folder.name)
    written.append(plots / "loss_accuracy.png")

    every = columns(folder / "every_N_log.csv", "global_iteration", "mean_recons_error", "max_recons_error")
    svd = columns(folder / "svd_log.csv", "global_iteration", "condition_num", "inverse_condition_num",
                  "condition_num_train_dtype", "max_sv", "min_sv")
    panels = {
        "reconstruction error (fixed test batch)": {"mean": every["mean_recons_error"],
                                                    "max": every["max_recons_error"]},
        "condition number of J": {"forward (float64)": svd["condition_num"],
                                  "inverse (float64)": svd["inverse_condition_num"],
                                  "forward (training dtype)": svd["condition_num_train_dtype"]},
        "extreme singular values": {"sigma_max": svd["max_sv"], "sigma_min": svd["min_sv"]},
    }
    line_panels(panels, plots / "stability.png", xlabel="iteration", logy=True, title=folder.name)
    written.append(plots / "stability.png")

    grad = columns(folder / "grad_log.csv", "global_iteration", "grad_angle", "grad_rel_error", "kappa",
                   "max_relative_recons_error")
    if len(grad["grad_angle"][0]):
        line_panels({"memory-saving vs standard gradient": {"angle (rad)": grad["grad_angle"],
                                                            "relative error": grad["grad_rel_error"]},
                     "condition number of J (float64)": {"kappa": grad["kappa"]},
                     "reconstruction of the check batch": {"max relative error": grad["max_relative_recons_error"]}},
                    plots / "memory_saving.png", xlabel="iteration", logy=True,
                    title=f"{folder.name}: gradients on a fixed training batch")
        kappa = columns(folder / "grad_log.csv", "kappa", "grad_angle", "grad_rel_error")
        line_panels({"gradient error against kappa": {"angle (rad)": kappa["grad_angle"],
                                                      "relative error": kappa["grad_rel_error"]}},
                    plots / "angle_vs_kappa.png", xlabel="condition number of J at the check batch", logy=True,
                    logx=True, title=f"{folder.name}: memory-saving gradient error against kappa")
        written += [plots / "memory_saving.png", plots / "angle_vs_kappa.png"]

    reconstruction_grid(model, data, x_fixed, plots / "reconstructions.png", show=show)
    written.append(plots / "reconstructions.png")

    if plot_iterations:
        plot_csv({folder.name: folder / "iteration_log.csv"}, ["xentropy_loss", "w_norm", "g_norm", "z_norm"],
                 plots / "iterations.png", x="global_iteration", logy=True)
        written.append(plots / "iterations.png")
    return written


def reconstruction_grid(model: INNClassifier, data: ClassifierData, x_fixed: Tensor, out: Path, *, show: int = 16
                        ) -> Path:
    """Inputs, reconstructions ``F^-1(F(x))`` and differences: the first ``show / 2`` images of ``x_fixed`` and the
    ``show / 2`` worst reconstructed ones (non-finite first, painted red)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), allow_nonfinite():
            x_all = model.decode(model(x_fixed)[1])
    finally:
        model.train(was_training)
    error = (x_all - x_fixed).flatten(1).norm(dim=1).nan_to_num(nan=float("inf"))
    half = min(show // 2, len(x_fixed))
    worst = [int(i) for i in torch.argsort(error, descending=True, stable=True) if int(i) >= half][: show - half]
    chosen = torch.tensor(list(range(half)) + worst, dtype=torch.long)
    x, x_hat = x_fixed[chosen], x_all[chosen]
    image_grid(data.to_pixels(x).clamp(0, 1), data.to_pixels(x_hat).clamp(0, 1).where(torch.isfinite(x_hat), x_hat),
               out, value_range=(0.0, 1.0), title=f"fixed test images (first {half}, then the {len(worst)} worst "
               "reconstructed) / F^-1(F(x)) / |difference|")
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.3g}"


def summary(folder: Path, args: argparse.Namespace, metrics: Mapping[str, Any], device: torch.device) -> str:
    """A readable account of the run for the terminal."""
    m = dict(metrics)
    minutes, seconds = divmod(float(m.get("seconds", 0.0)), 60)
    verdicts = m.get("verdicts") or {}
    verdict = "; ".join(f"{split}: {v['reason']}" for split, v in verdicts.items())
    verdict = f"NO: numerically non-invertible ({verdict})" if m.get("non_invertible") else f"yes ({verdict})"
    lines = [
        "",
        f"INN classifier on {args.dataset}: {args.coupling} coupling, {args.permutation} mixing, "
        f"{args.n_levels} levels x {args.depth} steps, {m.get('flow_parameters', 0):,} flow parameters",
        f"  status          {m.get('status')} after {m.get('steps')} iterations ({m.get('epochs')} epochs) in "
        f"{int(minutes)}m{seconds:04.1f}s ({m.get('cpu_seconds', 0.0):.0f} CPU seconds) on {device} x "
        f"{m.get('world_size', 1)}",
        f"  accuracy        test {_fmt(m.get('test_acc'))}   train {_fmt(m.get('train_acc'))}",
        f"  reconstruction  ||x - F^-1(F(x))|| in normalised input space, {args.dtype}:",
        f"                  train mean {_fmt(m.get('recons_train_mean'))} max {_fmt(m.get('recons_train_max'))} | "
        f"test mean {_fmt(m.get('recons_test_mean'))} max {_fmt(m.get('recons_test_max'))}",
        f"  conditioning    exact Jacobian at {m.get('svd_samples')} test image(s), worst: forward "
        f"{_fmt(m.get('cond_forward'))} (sigma {_fmt(m.get('sigma_min'))}..{_fmt(m.get('sigma_max'))}), "
        f"inverse {_fmt(m.get('cond_inverse'))}",
        f"  kappa           at the worst-reconstructed image {_fmt(m.get('kappa_at_worst'))} (a precursor, not the "
        "verdict)",
        f"  memory saving   angle to true gradient {_fmt(m.get('grad_angle'))} rad, relative error "
        f"{_fmt(m.get('grad_rel_error'))}",
        f"  failure         first non-invertible evaluation at iteration {_fmt(m.get('first_noninvertible_iteration'))}"
        f", first non-finite at {_fmt(m.get('first_nonfinite_iteration'))} (-1: never)",
        f"  invertible      {verdict}",
        f"  run folder      {folder}  (config.json, *_log.csv, metrics.json, plots/, checkpoints/)",
    ]
    return "\n".join(lines)


#: The rows of :func:`side_by_side`: label -> metrics key.
SIDE_BY_SIDE = {"status": "status", "test accuracy": "test_acc", "train accuracy": "train_acc",
                "worst relative reconstruction error (train)": "recons_train_max_relative",
                "worst relative reconstruction error (test)": "recons_test_max_relative",
                "non-finite reconstructions (train)": "recons_train_nonfinite",
                "kappa at the worst-reconstructed image": "kappa_at_worst",
                "kappa at fixed test images (worst)": "cond_forward",
                "memory-saving gradient angle (rad)": "grad_angle",
                "first non-invertible evaluation (iteration)": "first_noninvertible_iteration"}


def side_by_side(args: argparse.Namespace, regularized: Mapping[str, Any], twin: Mapping[str, Any]) -> str:
    """The regularized model and its unregularized twin, one column each (``--twin``)."""
    terms = [f"NF {args.nf_coeff:g}" if args.nf_coeff > 0 else "",
             f"FD {args.fd_coeff:g}/{args.fd_inv_coeff:g}" if args.fd_coeff or args.fd_inv_coeff else ""]
    head = "regularized (" + ", ".join(t for t in terms if t) + ")"
    width = max(map(len, SIDE_BY_SIDE)) + 2
    lines = ["", f"The regularizer's effect ({args.coupling} coupling, {args.permutation} mixing, seed {args.seed}):",
             f"  {'':<{width}}{head:>28}{'unregularized twin':>22}"]
    for label, key in SIDE_BY_SIDE.items():
        lines.append(f"  {label:<{width}}{_fmt(regularized.get(key)):>28}{_fmt(twin.get(key)):>22}")
    for name, m in (("regularized", regularized), ("twin", twin)):
        verdict = "invertible" if m.get("invertible") else "NUMERICALLY NON-INVERTIBLE"
        lines.append(f"  {name:<12} {verdict}")
    return "\n".join(lines)
