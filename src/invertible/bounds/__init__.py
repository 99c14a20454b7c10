"""Bi-Lipschitz bounds: the paper's table, local bounds of affine couplings, and a per-layer stability report.

- :mod:`~invertible.bounds.table`: the paper's table of forward and inverse Lipschitz bounds per block, and their
  composition into a model bound.
- :mod:`~invertible.bounds.local`: rigorous bounds of affine couplings (and learned splits) on a bounded domain,
  from interval propagation through the coupling network; ``local_bounds`` for any layer or model at a batch.
- :mod:`~invertible.bounds.report`: :func:`stability_report` holds each layer's bounds against its measured
  singular values and points at the layer where the inverse explodes.
"""

from .local import (
    affine_coupling_local_bounds,
    block_norm_bound,
    interval_bounds,
    local_bounds,
    scale_function_range,
    split_local_bounds,
)
from .report import LayerReport, StabilityReport, stability_report
from .table import (
    PERMUTATION_BOUNDS,
    additive_coupling_bounds,
    diagonal_scaling_bounds,
    linear_bounds,
    model_bounds,
    neural_ode_bounds,
    residual_block_bounds,
)

__all__ = [
    "PERMUTATION_BOUNDS",
    "LayerReport",
    "StabilityReport",
    "additive_coupling_bounds",
    "affine_coupling_local_bounds",
    "block_norm_bound",
    "diagonal_scaling_bounds",
    "interval_bounds",
    "linear_bounds",
    "local_bounds",
    "model_bounds",
    "neural_ode_bounds",
    "residual_block_bounds",
    "scale_function_range",
    "split_local_bounds",
    "stability_report",
]
