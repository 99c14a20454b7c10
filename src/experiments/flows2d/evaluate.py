"""Where the trained 2-D flows are evaluated: a grid over ``[-8, 8)^2``, the data region and the boundaries of ever
larger squares, and what is measured at each point."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from invertible import allow_nonfinite, iterative_inverse
from invertible.diagnostics import eval_mode, jacobian_stats, reconstruction_error

from ..common.verdicts import point_verdict

__all__ = ["REGION_FIELDS", "evaluate_points", "grid_points", "region_row", "region_verdict", "square_boundary"]

#: Columns of ``regions.csv``: one row per model and region (``data`` or the square boundary of half-width R).
REGION_FIELDS = ["model", "region", "radius", "points", "recon_median", "recon_max", "relative_max", "nonfinite",
                 "invertible", "cond_at_worst", "cond_median", "cond_max", "logdet_error_median", "logdet_error_max",
                 "loglik_max"]


def grid_points(extent: float, size: int) -> Tensor:
    """The original's grid ``arange(-extent, extent, 2 extent / size)`` per axis, row-major with y slowest,
    shape ``(size^2, 2)``, float64."""
    axis = -extent + torch.arange(size, dtype=torch.float64) * (2 * extent / size)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def square_boundary(radius: float, per_side: int) -> Tensor:
    """``4 * per_side`` points evenly spaced on the boundary of ``[-radius, radius]^2``, float64."""
    t = -radius + torch.arange(per_side, dtype=torch.float64) * (2 * radius / per_side)
    r = torch.full_like(t, radius)
    return torch.cat([torch.stack(p, dim=1) for p in ((t, -r), (r, t), (-t, r), (-r, -t))])


def evaluate_points(model: nn.Module, x: Tensor, *, chunk: int = 8192, exact: nn.Module | None = None
                    ) -> dict[str, np.ndarray]:
    """Per point: reconstruction error (absolute and relative to ``||x||``), log-det error, log-likelihood (in the
    model's dtype) and the condition number of the Jacobian (from ``exact``, a float64 copy of the model, made here
    when not given).

    Iterative inverses run with their own settings but return instead of raising when they do not converge, so a
    failed inverse shows up as a reconstruction error.
    """
    param = next(model.parameters())
    if exact is None:
        exact = copy.deepcopy(model).double()
    out: dict[str, list[np.ndarray]] = {"recon": [], "relative": [], "logdet_error": [], "cond": [], "loglik": [],
                                        "norm": []}
    with eval_mode(model), eval_mode(exact), iterative_inverse(on_failure="return"):
        for part in x.split(chunk):
            xp = part.to(param.device, param.dtype)
            recon = reconstruction_error(model, xp)
            out["recon"].append(recon.l2.double().cpu().numpy())
            out["relative"].append(recon.relative.double().cpu().numpy())
            out["norm"].append(part.double().norm(dim=1).cpu().numpy())
            with torch.no_grad(), allow_nonfinite():
                out["loglik"].append(model.log_prob(xp).double().cpu().numpy())
            stats = jacobian_stats(model, xp, inverse=False, batched=True)
            out["logdet_error"].append(stats.logdet_error.cpu().numpy())
            stats64 = jacobian_stats(exact, part.to(param.device, torch.float64), inverse=False, batched=True)
            out["cond"].append(stats64.condition_number.cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def region_verdict(values: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The library's verdict on the points of :func:`evaluate_points` (every point judged; kappa, from the float64
    copy, at the worst-reconstructed point and at the first), as plain data."""
    return point_verdict(values["relative"], ~np.isfinite(values["recon"]), cond=values["cond"], fixed=[0],
                         norms=values.get("norm"))


def region_row(kind: str, region: str, radius: float, values: Mapping[str, np.ndarray],
               verdict: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One row of ``regions.csv``: medians and maxima of :func:`evaluate_points`'s values (non-finite counted as
    infinite), and the verdict's word and kappa at the worst-reconstructed point."""
    verdict = verdict if verdict is not None else region_verdict(values)
    def stat(name: str, fn: Callable[[np.ndarray], float]) -> float:
        a = np.nan_to_num(values[name], nan=np.inf, posinf=np.inf)
        return float(fn(a))

    return {"model": kind, "region": region, "radius": radius, "points": len(values["recon"]),
            "recon_median": stat("recon", np.median), "recon_max": stat("recon", np.max),
            "relative_max": stat("relative", np.max),
            "nonfinite": float(np.mean(~np.isfinite(values["recon"]))),
            "invertible": int(verdict["invertible"]), "cond_at_worst": verdict["at_worst"]["kappa_forward"][0],
            "cond_median": stat("cond", np.median), "cond_max": stat("cond", np.max),
            "logdet_error_median": stat("logdet_error", np.median),
            "logdet_error_max": stat("logdet_error", np.max),
            "loglik_max": float(np.nanmax(values["loglik"])) if np.isfinite(values["loglik"]).any() else math.nan}
