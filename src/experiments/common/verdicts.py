"""The library's verdict (:mod:`invertible.diagnostics.verdict`) from per-point errors and condition numbers a study
has already measured, as the plain data every study stores in ``metrics.json``.

Example::

    >>> import numpy as np
    >>> v = point_verdict(np.array([1e-7, 0.5]), np.array([False, False]), cond=np.array([3.0, 4e6]))
    >>> v["invertible"], v["at_worst"]["kappa_forward"]
    (False, [4000000.0])
"""

from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import numpy as np
import torch

from invertible.diagnostics import (NONINVERTIBLE_RTOL, ConditionAt, eval_mode, extreme_singular_values, jacobian_stats,
                                    judge_reconstructions)

__all__ = ["MAX_EXACT_DIMS", "ORIGIN", "attack_verdicts", "condition_at_points", "kappa_at", "kappa_method",
           "point_verdict"]

#: Points closer to the origin than this fraction of the set's largest norm are left out of a verdict by norms.
ORIGIN = 1e-6


def _list(values: Any, indices: Sequence[int]) -> list[float]:
    if values is None:
        return [math.nan] * len(indices)
    a = np.asarray(values, dtype=float)
    return [float(a[i]) for i in indices]


def condition_at_points(indices: Sequence[int], relative: Any, cond: Any, sigma_max: Any = None,
                        sigma_min: Any = None, method: str = "exact") -> ConditionAt:
    """A :class:`~invertible.diagnostics.ConditionAt` from per-point arrays (NaN where a quantity is unknown)."""
    indices = [int(i) for i in indices]
    lip_inverse = None if sigma_min is None else 1.0 / np.asarray(sigma_min, dtype=float)
    kappa = _list(cond, indices)
    return ConditionAt(indices, _list(relative, indices), _list(sigma_max, indices), _list(lip_inverse, indices),
                       kappa, kappa, method)


def point_verdict(relative: Any, nonfinite: Any, *, cond: Any = None, sigma_max: Any = None, sigma_min: Any = None,
                  fixed: Sequence[int] = (), dtype: Any = "float32", rtol: float = NONINVERTIBLE_RTOL,
                  norms: Any = None) -> dict[str, Any]:
    """``judge_reconstructions`` on per-point relative errors and non-finite flags, with the conditioning at the
    worst-reconstructed point and at ``fixed`` points taken from per-point arrays (``cond``: forward condition
    numbers, e.g. exact 2x2 Jacobians of a float64 copy), as ``verdict.to_dict()``.

    ``norms`` (``||x||`` per point), if given, leaves out the points at the origin (``||x||`` below
    :data:`ORIGIN` times the largest norm of the set), where a relative error is not defined: a grid through 0
    reconstructs it to round-off, an unbounded relative error. They are counted in ``excluded_near_origin``.
    Indices always refer to the given points.
    """
    rel = np.asarray(relative, dtype=float).reshape(-1)
    bad = np.asarray(nonfinite).reshape(-1) != 0
    keep = np.ones(len(rel), dtype=bool)
    if norms is not None:
        norms = np.asarray(norms, dtype=float).reshape(-1)
        keep = norms > ORIGIN * norms.max()
    kept = np.flatnonzero(keep)
    verdict = judge_reconstructions(torch.as_tensor(rel[keep]), torch.as_tensor(bad[keep]), rtol=rtol, dtype=dtype)
    verdict.worst_index = int(kept[verdict.worst_index])
    errors = np.full(len(rel), np.nan)
    errors[keep] = verdict.relative_errors.numpy()
    if cond is not None:
        verdict.at_worst = condition_at_points([verdict.worst_index], errors, cond, sigma_max, sigma_min)
        if fixed:
            verdict.at_fixed = condition_at_points(fixed, errors, cond, sigma_max, sigma_min)
    out = verdict.to_dict()
    out["excluded_near_origin"] = int((~keep).sum())
    return out


def _norms(x: torch.Tensor) -> np.ndarray:
    return x.detach().double().flatten(1).norm(dim=1).cpu().numpy()


#: Inputs with more entries than this get matrix-free (Lanczos) condition numbers instead of exact Jacobians.
MAX_EXACT_DIMS = 1024


def kappa_at(model: Any, x: torch.Tensor) -> np.ndarray:
    """Forward condition numbers of the Jacobian of a float64 copy of ``model`` at the rows of ``x``: exact up to
    :data:`MAX_EXACT_DIMS` entries per input, Lanczos estimates beyond (as the library's verdict does); NaN where
    the Jacobian is not finite."""
    flow = copy.deepcopy(model).double()
    x64 = x.detach().double()
    try:
        with eval_mode(flow):
            if x64[0].numel() <= MAX_EXACT_DIMS:
                return jacobian_stats(flow, x64, inverse=False).condition_number.double().cpu().numpy()
            est = extreme_singular_values(flow, x64, method="lanczos", generator=torch.Generator().manual_seed(0))
            return est.condition_number.double().cpu().numpy()
    except (RuntimeError, ValueError):
        return np.full(len(x), np.nan)


def kappa_method(x: torch.Tensor) -> str:
    """``"exact"`` or ``"lanczos"``: how :func:`kappa_at` measures inputs shaped like the rows of ``x``."""
    return "exact" if x[0].numel() <= MAX_EXACT_DIMS else "lanczos"


def attack_verdicts(x_nat: torch.Tensor, x_start: torch.Tensor, start_error: torch.Tensor, result: Any,
                    dtype: Any, rtol: float = NONINVERTIBLE_RTOL, model: Any = None) -> dict[str, Any]:
    """Where an invertibility attack broke the flow: the verdict on the natural inputs (``clean``), on the random
    starting points (``start``: step 0, before any ascent) and on each point's worst iterate (``worst``), and the
    counts that tell the ascent's work from the start's: ``breaks_at_start`` (points already non-invertible at
    step 0), ``breaks_by_ascent`` (points invertible at step 0 whose worst iterate is not) and ``broken``.

    ``result`` is the :class:`invertible.attack.AttackResult`; ``x_start``/``start_error`` the starting points and
    their accurate reconstruction errors (an attack of 0 steps from the same seed gives them). With ``model``, each
    verdict carries the condition number (float64 copy, exact) at its worst-reconstructed point.
    """
    def verdict(errors: torch.Tensor, x: torch.Tensor) -> dict[str, Any]:
        e = errors.detach().double().cpu().numpy()
        norms = _norms(x)
        rel = e / np.maximum(norms, np.finfo(float).tiny)
        out = point_verdict(rel, ~np.isfinite(e), dtype=dtype, rtol=rtol)
        if model is not None:
            w = out["worst_index"]
            cond = np.full(len(e), np.nan)
            cond[w] = kappa_at(model, x[w:w + 1])[0]
            out["at_worst"] = condition_at_points([w], np.where(np.isfinite(e), rel, np.inf), cond,
                                                  method=kappa_method(x)).__dict__
        return out

    def broken(errors: torch.Tensor, x: torch.Tensor) -> np.ndarray:
        e = errors.detach().double().cpu().numpy()
        return ~(e <= rtol * _norms(x))  # NaN and Inf count as broken

    # the worst error per point with Inf kept Inf (AttackResult.max_error maps +Inf to the largest float)
    worst_error = result.accurate_error.double().nan_to_num(nan=math.inf, posinf=math.inf).amax(dim=0)
    at_start = broken(start_error, x_start)
    at_worst = broken(worst_error, result.x_worst) | at_start
    return {"verdicts": {"clean": verdict(result.clean_error, x_nat), "start": verdict(start_error, x_start),
                         "worst": verdict(worst_error, result.x_worst)},
            "breaks_at_start": int(at_start.sum()), "breaks_by_ascent": int((at_worst & ~at_start).sum()),
            "broken": int(at_worst.sum()), "points": int(len(at_start))}
