"""The library's verdict (:mod:`invertible.diagnostics.verdict`) from per-point errors and condition numbers a study
has already measured, as the plain data every study stores in ``metrics.json``.

Example::

    >>> import numpy as np
    >>> v = point_verdict(np.array([1e-7, 0.5]), np.array([False, False]), cond=np.array([3.0, 4e6]))
    >>> v["invertible"], v["at_worst"]["kappa_forward"]
    (False, [4000000.0])
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from invertible.diagnostics import NONINVERTIBLE_RTOL, ConditionAt, judge_reconstructions

__all__ = ["ORIGIN", "condition_at_points", "point_verdict"]

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
