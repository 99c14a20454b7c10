"""Diagnostics of numerical invertibility: reconstruction errors, exact Jacobians and matrix-free estimates.

- :mod:`~invertible.diagnostics.reconstruction`: ``x - f^-1(f(x))`` per sample (L2, relative, max, NaN/Inf counts)
  and repeated round trips (the paper's PAD).
- :mod:`~invertible.diagnostics.jacobian`: exact Jacobians (``torch.func``), singular values of the forward and
  inverse maps, condition numbers, log-det error.
- :mod:`~invertible.diagnostics.estimates`: ``sigma_max`` and ``sigma_min`` by Golub-Kahan-Lanczos on JVP/VJP, for
  inputs too large for an exact Jacobian.

Every function runs the module in eval mode (restored afterwards) and lets non-finite values through, so that
they are counted rather than refused.
"""

from ._common import eval_mode, flat_norm
from .estimates import ExtremeSingularValues, SingularValueEstimate, estimate_sigma_max, extreme_singular_values
from .jacobian import (
    JacobianStats,
    batch_jacobian,
    condition_number,
    exact_jacobian,
    jacobian_stats,
    singular_values,
)
from .reconstruction import ReconstructionStats, RoundTrips, reconstruction_error, repeated_round_trips

__all__ = [
    "ExtremeSingularValues",
    "JacobianStats",
    "ReconstructionStats",
    "RoundTrips",
    "SingularValueEstimate",
    "batch_jacobian",
    "condition_number",
    "estimate_sigma_max",
    "eval_mode",
    "exact_jacobian",
    "extreme_singular_values",
    "flat_norm",
    "jacobian_stats",
    "reconstruction_error",
    "repeated_round_trips",
    "singular_values",
]
