"""What the classifier study measures: accuracy and reconstruction error over a data set, the exact Jacobian SVD,
parameter/gradient/latent statistics, and memory-saving gradient agreement.

Reconstruction errors are per-sample L2 norms ``||x - F^-1(F(x))||`` in the flow's (normalised) input space,
computed in the training precision, as in the paper. Means and standard deviations are over the samples whose
reconstruction is finite; ``nonfinite`` is the fraction of samples whose reconstruction holds Inf or NaN, and the
maximum is Inf when any does. Whether a model is *numerically non-invertible* on a set is the library's one verdict
(:func:`invertible.diagnostics.judge_reconstructions`: some reconstruction non-finite or off by more than
``NONINVERTIBLE_RTOL`` relative to its input, over the whole set); the condition number beside it, at the
worst-reconstructed input and at fixed inputs, is a precursor only.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from invertible import allow_nonfinite
from invertible.diagnostics import (NONINVERTIBLE_RTOL, ConditionAt, InvertibilityVerdict, jacobian_stats,
                                    judge_reconstructions)
from invertible.memory import compare_gradients
from invertible.models import INNClassifier

from ..common import distributed
from ..common.data import ImageData

__all__ = ["NONINVERTIBLE_RTOL", "condition_at", "evaluate", "reconstruction_rows", "svd_stats", "tensor_stats",
           "gradient_agreement", "combine_step_stats", "set_verdict"]


def _worst(values: Tensor) -> float:
    """The largest value, NaN counting as +Inf (a NaN error or condition number is as bad as it gets)."""
    if values.numel() == 0:
        return math.nan
    return float(torch.where(torch.isnan(values), math.inf, values.double()).max())


def _reconstruct(model: INNClassifier, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(logits, per-sample L2 error, per-sample relative error)`` of a batch, in eval mode, without grads."""
    with torch.no_grad(), allow_nonfinite():
        logits, z, _ = model(x)
        x_hat = model.decode(z)
    diff = (x_hat - x).flatten(1)
    l2 = diff.norm(dim=1)
    l2 = torch.where(torch.isfinite(x_hat.flatten(1)).all(dim=1), l2, torch.full_like(l2, math.inf))
    return logits, l2, l2 / x.flatten(1).norm(dim=1).clamp_min(1e-30)


def error_summary(l2: Tensor, relative: Tensor) -> dict[str, float]:
    """Sums over the finite errors, their maximum and the non-finite count of a set of per-sample errors."""
    finite = torch.isfinite(l2)
    good = l2[finite].double()
    return {"n": float(l2.numel()), "n_finite": float(finite.sum()), "sum": float(good.sum()),
            "sumsq": float(good.pow(2).sum()), "max": float(l2.double().max()) if l2.numel() else math.nan,
            "max_relative": _worst(relative) if l2.numel() else math.nan}


def _merge(parts: list[dict[str, float]]) -> dict[str, float]:
    n = sum(p["n"] for p in parts)
    k = sum(p["n_finite"] for p in parts)
    total, sumsq = sum(p["sum"] for p in parts), sum(p["sumsq"] for p in parts)
    mean = total / k if k else math.nan
    var = (sumsq - k * mean * mean) / (k - 1) if k > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(max(var, 0.0)), "max": max(p["max"] for p in parts),
            "max_relative": max(p["max_relative"] for p in parts), "nonfinite": (n - k) / n if n else math.nan}


def evaluate(model: INNClassifier, data: ImageData, to_model: Callable[[Tensor], Tensor],
             batch_size: int = 500) -> dict[str, float]:
    """Loss, accuracy and reconstruction errors over ``data`` (unaugmented), each process taking its share.

    Returns ``loss``, ``acc`` and ``recons_mean/std/max/max_relative/nonfinite``.
    """
    share = torch.tensor_split(torch.arange(len(data)), distributed.world_size())[distributed.rank()]
    was_training = model.training
    model.eval()
    loss = correct = 0.0
    parts, relative = [], []
    try:
        for idx in torch.split(share, batch_size):
            x = to_model(data.images[idx])
            y = data.labels[idx].to(x.device)
            logits, l2, rel = _reconstruct(model, x)
            loss += float(F.cross_entropy(logits.double(), y, reduction="sum"))
            correct += float((logits.argmax(1) == y).sum())
            parts.append(error_summary(l2, rel))
            relative.append(torch.where(torch.isfinite(l2), rel, torch.full_like(rel, math.inf)).double().cpu())
    finally:
        model.train(was_training)
    totals = distributed.reduce_metrics({"loss": loss, "acc": correct}, len(share))
    gathered = [p for rank_parts in distributed.all_gather_objects(parts) for p in rank_parts]
    errors = _merge(gathered)
    rel_all = torch.cat([r for rank in distributed.all_gather_objects(relative) for r in rank])
    return {**totals, **{f"recons_{k}": v for k, v in errors.items()}, "relative": rel_all}


def set_verdict(relative: Tensor, dtype: torch.dtype) -> InvertibilityVerdict:
    """The library's verdict on one evaluated set from its per-sample relative errors (Inf where non-finite)."""
    return judge_reconstructions(relative, ~torch.isfinite(relative), rtol=NONINVERTIBLE_RTOL, dtype=dtype)


def condition_at(model: INNClassifier, x: Tensor, indices: list[int], relative: Tensor) -> ConditionAt:
    """Local conditioning of the flow at the images ``x`` (positions ``indices`` of their set, whose relative errors
    are ``relative``): the exact Jacobian of a float64 copy (the map's own conditioning), forward and inverse."""
    flow64 = copy.deepcopy(model.flow).double()
    x_in = model.flow_input(x).double()
    nan = [math.nan] * len(indices)
    try:
        stats = jacobian_stats(flow64, x_in, inverse=True)
        lip_f, lip_i = [float(v) for v in stats.forward[:, 0]], [float(v) for v in stats.inverse[:, 0]]
        kappa_f = [float(v) for v in stats.condition_number]
        kappa_i = [float(v) for v in stats.condition_number_inverse]
    except (RuntimeError, ValueError):  # a non-finite Jacobian: the SVD does not converge
        lip_f = lip_i = kappa_f = kappa_i = nan
    return ConditionAt(list(indices), [float(relative[i]) for i in indices], lip_f, lip_i, kappa_f, kappa_i, "exact")


def reconstruction_rows(model: INNClassifier, x: Tensor) -> dict[str, float]:
    """min/max/mean/std of the per-sample reconstruction errors of a fixed batch (the every-N log)."""
    was_training = model.training
    model.eval()
    try:
        _, l2, rel = _reconstruct(model, x)
    finally:
        model.train(was_training)
    finite = l2[torch.isfinite(l2)].double()
    stat = (lambda f: float(f(finite))) if finite.numel() else (lambda f: math.nan)
    return {"min_recons_error": stat(torch.min), "max_recons_error": float(l2.double().max()),
            "mean_recons_error": stat(torch.mean),
            "std_recons_error": stat(torch.std) if finite.numel() > 1 else 0.0,
            "max_relative_recons_error": _worst(rel),
            "nonfinite_recons": float((~torch.isfinite(l2)).double().mean())}


def _svd_columns(sv: Tensor | None, prefix: str) -> dict[str, float]:
    if sv is None:
        return {}
    cond = sv[:, 0] / sv[:, -1]
    return {f"{prefix}condition_num": _worst(cond),
            f"{prefix}max_sv": float(sv[:, 0].max()), f"{prefix}min_sv": float(sv[:, -1].min())}


def svd_stats(model: INNClassifier, x: Tensor, *, inverse: bool = True) -> dict[str, float]:
    """Extreme singular values and condition numbers of the flow's exact Jacobian at each image of ``x``.

    ``condition_num``, ``max_sv``, ``min_sv`` and their ``inverse_`` counterparts come from a float64 copy of the
    flow (the learned map's true conditioning, also where float32 cannot resolve it); ``condition_num_train_dtype``
    from the flow in its training precision, as the paper measured it. Over several images the largest condition
    number, the largest ``max_sv`` and the smallest ``min_sv`` are reported. NaN where a Jacobian is not finite.
    """
    flow = model.flow
    x_in = model.flow_input(x)
    out: dict[str, float] = {}
    try:
        stats = jacobian_stats(copy.deepcopy(flow).double(), x_in.double(), inverse=inverse)
        out.update(_svd_columns(stats.forward, ""))
        out.update(_svd_columns(stats.inverse, "inverse_"))
        out["logdet_error"] = float(stats.logdet_error.max())
    except (RuntimeError, ValueError):  # non-finite Jacobian: the SVD does not converge
        out.update({k: math.nan for k in ("condition_num", "max_sv", "min_sv")})
    if x.dtype != torch.float64:
        try:
            native = jacobian_stats(flow, x_in, inverse=False)
            out["condition_num_train_dtype"] = _worst(native.condition_number)
        except (RuntimeError, ValueError):
            out["condition_num_train_dtype"] = math.nan
    else:
        out["condition_num_train_dtype"] = out.get("condition_num", math.nan)
    return out


def tensor_stats(prefix: str, values: Tensor) -> dict[str, float]:
    """norm/min/max/mean/std of a flat tensor, named ``<prefix>_<stat>`` (the original's w_*, g_*, z_*)."""
    v = values.detach().double()
    return {f"{prefix}_norm": float(v.norm()), f"{prefix}_min": float(v.min()), f"{prefix}_max": float(v.max()),
            f"{prefix}_mean": float(v.mean()), f"{prefix}_std": float(v.std()) if v.numel() > 1 else 0.0}


def step_stats(z: Tensor, logits: Tensor, labels: Tensor, xent: Tensor, loss: Tensor) -> dict[str, float]:
    """This process's sums for one training step (combined over processes by :func:`combine_step_stats`)."""
    zf = z.detach().double().flatten()
    n = float(labels.numel())
    return {"n": n, "xent": float(xent.detach()) * n, "loss": float(loss.detach()) * n,
            "correct": float((logits.argmax(1) == labels).sum()), "z_sum": float(zf.sum()),
            "z_sumsq": float(zf.pow(2).sum()), "z_count": float(zf.numel()), "z_min": float(zf.min()),
            "z_max": float(zf.max())}


def combine_step_stats(parts: list[dict[str, float]]) -> dict[str, float]:
    """Global batch means and latent statistics from every process's :func:`step_stats`."""
    n = sum(p["n"] for p in parts)
    count = sum(p["z_count"] for p in parts)
    total, sumsq = sum(p["z_sum"] for p in parts), sum(p["z_sumsq"] for p in parts)
    mean = total / count
    var = max(sumsq - count * mean * mean, 0.0) / max(count - 1, 1)
    return {"n": n, "correct": sum(p["correct"] for p in parts),
            "xentropy_loss": sum(p["xent"] for p in parts) / n, "loss": sum(p["loss"] for p in parts) / n,
            "z_norm": math.sqrt(sumsq), "z_min": min(p["z_min"] for p in parts),
            "z_max": max(p["z_max"] for p in parts), "z_mean": mean, "z_std": math.sqrt(var)}


def gradient_agreement(model: INNClassifier, x: Tensor, y: Tensor) -> dict[str, Any]:
    """Angle and relative error between memory-saving and standard gradients of the classification loss on a
    batch (the paper's gradient-angle measurement), with the model in eval mode."""
    was_training = model.training
    model.eval()
    try:
        check = compare_gradients(model.flow, lambda flow: model.loss(model(x, flow=flow)[0], y))
    finally:
        model.train(was_training)
    return {"grad_angle": check.angle, "grad_rel_error": check.rel_error, "grad_finite": check.finite}
