"""Jacobians of reference maps by high-precision central differences, and what is measured from them.

With 50 digits and a step ``h = 1e-20``, the central difference ``(f(x + h e_k) - f(x - h e_k)) / 2h`` has a
truncation error of order ``h^2 |f'''| ~ 1e-40`` and a rounding error of order ``10^-50 |f| / h ~ 1e-30``: about
30 correct digits, independent of any layer's analytic Jacobian or log-det formula. (The maps must be smooth at
``x``: a ReLU whose input lies within ``h`` of its kink would spoil the column; at random inputs this has
probability ~1e-20.)
"""

from __future__ import annotations

import mpmath
import numpy as np
from mpmath import mp, mpf

from .arith import MPArray
from .registry import LayerMap, outputs_only

__all__ = ["STEP", "finite_difference_jacobian", "log_abs_det", "singular_values"]

#: The central-difference step.
STEP = mpf("1e-20")


def finite_difference_jacobian(fn: LayerMap, x: MPArray, step: mpf = STEP) -> mpmath.matrix:
    """The ``(D_out, D)`` Jacobian of ``x -> fn(x)[0]`` (flattened) at one sample ``x``, by central differences."""
    flat = x.reshape(-1)
    columns = []
    with outputs_only():  # the log-dets of the 2D shifted evaluations are not used
        for k in range(flat.size):
            plus, minus = flat.copy(), flat.copy()
            plus[k] += step
            minus[k] -= step
            y_plus = fn(plus.reshape(x.shape))[0].reshape(-1)
            y_minus = fn(minus.reshape(x.shape))[0].reshape(-1)
            columns.append((y_plus - y_minus) / (2 * step))
    rows = np.stack(columns, axis=1)
    return mp.matrix(rows.tolist())


def log_abs_det(jacobian: mpmath.matrix) -> mpf:
    """``log|det J|`` (mpmath LU determinant at the working precision)."""
    return mp.log(abs(mp.det(jacobian)))


def singular_values(jacobian: mpmath.matrix) -> list[mpf]:
    """The singular values of ``J``, largest first."""
    values = mp.svd_r(jacobian, compute_uv=False)
    return sorted((values[i] for i in range(values.rows)), reverse=True)
