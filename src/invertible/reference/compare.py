"""Build reference maps of torch modules, and measure a module's floating-point error against its reference."""

from __future__ import annotations

from dataclasses import dataclass

import mpmath
import numpy as np
import torch
from mpmath import mpf
from torch import Tensor, nn

from ..base import InvertibleModule, allow_nonfinite
from .arith import MPArray, from_tensor, norm, precision, to_float64
from .jacobian import finite_difference_jacobian
from .registry import Builder, LayerMap, MissingReference

__all__ = [
    "ReferenceComparison",
    "compare_with_reference",
    "missing_references",
    "reference_forward",
    "reference_jacobians",
    "reference_map",
]


def missing_references(module: nn.Module) -> list[str]:
    """Types inside ``module`` (itself included) that have no reference implementation; empty if all have."""
    builder = Builder()
    with precision():
        builder.layer(module)
    return sorted(set(builder.missing))


def reference_map(module: nn.Module) -> LayerMap:
    """The per-sample reference map ``x -> (y, log|det J|)`` of ``module`` at its current parameters.

    The parameters are read once, now; ``x`` is an object array of ``mpf`` with the channel axis first (one
    sample, no batch axis). Data-dependent layers must be initialised (run one forward pass first), and
    :class:`~invertible.Dequantize` must be in eval mode. A conditional module's map takes the sample's context
    as a second argument: ``run(x, c)``.

    Raises:
        MissingReference: listing every module type inside ``module`` that has no reference.
    """
    builder = Builder()
    with precision():
        fn = builder.layer(module)
    if builder.missing:
        raise MissingReference(builder.missing)

    def run(x: MPArray, c: MPArray | None = None) -> tuple[MPArray, mpf]:
        with precision():
            return fn(x) if c is None else fn(x, c)

    return run


def _samples(x: Tensor, context: Tensor | None) -> list[tuple[MPArray, MPArray | None]]:
    xs = from_tensor(x)
    cs = [None] * len(xs) if context is None else list(from_tensor(context))
    return list(zip(xs, cs))


def reference_forward(module: nn.Module, x: Tensor, context: Tensor | None = None) -> tuple[MPArray, MPArray]:
    """``(y, logdet)`` of ``module`` at the batch ``x`` (and ``context``): object arrays of shapes ``(B, ...)`` and
    ``(B,)``."""
    fn = reference_map(module)
    with precision():
        outputs = [fn(sample, c) for sample, c in _samples(x, context)]
    y = np.stack([o[0] for o in outputs])
    logdet = np.empty(len(outputs), dtype=object)
    logdet[:] = [o[1] for o in outputs]
    return y, logdet


def reference_jacobians(module: nn.Module, x: Tensor, context: Tensor | None = None) -> list[mpmath.matrix]:
    """The finite-difference Jacobian (in ``x``, at the sample's fixed context) of the reference map at each
    sample of the batch ``x``."""
    fn = reference_map(module)
    with precision():
        return [finite_difference_jacobian(lambda v, c=c: fn(v, c), sample) for sample, c in _samples(x, context)]


@dataclass
class ReferenceComparison:
    """Per-sample errors of a module (in the dtype of the input it was given) against its mpmath reference.

    Attributes:
        output_error: ``||f(x) - f_ref(x)||``.
        logdet_error: ``|logdet(x) - logdet_ref(x)|``.
        inverse_error: ``||f^-1(y) - x||`` at ``y = f_ref(x)`` rounded to the module's dtype.
        inverse_logdet_error: ``|logdet_inv(y) + logdet_ref(x)|`` at that ``y``.
        scale: ``max(||x||, ||f_ref(x)||, 1)``, the magnitude that output errors are relative to.
        logdet_scale: ``max(|logdet_ref(x)|, 1)``.
    """

    dtype: torch.dtype
    dims: int
    output_error: np.ndarray
    logdet_error: np.ndarray
    inverse_error: np.ndarray
    inverse_logdet_error: np.ndarray
    scale: np.ndarray
    logdet_scale: np.ndarray


def compare_with_reference(module: InvertibleModule, x: Tensor, context: Tensor | None = None
                           ) -> ReferenceComparison:
    """Run ``module`` forward at ``x`` and inverse at the rounded reference output; measure both against the
    reference evaluated at the very same (exactly converted) parameters and input (and ``context``, for a
    conditional module).

    The module must hold parameters of ``x``'s dtype and be ready to run (initialised, eval mode).
    """
    y_ref, logdet_ref = reference_forward(module, x, context)
    with torch.no_grad(), allow_nonfinite():
        y, logdet = module(x, context)
        y_in = torch.from_numpy(to_float64(y_ref)).to(x.dtype)
        x_back, logdet_inv = module.inverse(y_in, context)
    with precision():
        x_mp = from_tensor(x)
        rows = []
        for i in range(x.shape[0]):
            rows.append([
                norm(from_tensor(y[i]) - y_ref[i]),
                abs(mpf(float(logdet[i])) - logdet_ref[i]),
                norm(from_tensor(x_back[i]) - x_mp[i]),
                abs(mpf(float(logdet_inv[i])) + logdet_ref[i]),
                max(norm(x_mp[i]), norm(y_ref[i]), mpf(1)),
                max(abs(logdet_ref[i]), mpf(1)),
            ])
    table = np.array([[float(v) for v in row] for row in rows], dtype=np.float64).reshape(-1, 6)
    return ReferenceComparison(x.dtype, int(x[0].numel()), *(table[:, k].copy() for k in range(6)))
