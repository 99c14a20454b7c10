"""Diagnostics of numerical invertibility: reconstruction errors, exact Jacobians and matrix-free estimates.

- :mod:`~invertible.diagnostics.reconstruction`: ``x - f^-1(f(x))`` per sample (L2, relative, max, NaN/Inf counts)
  and repeated round trips (the paper's PAD).
- :mod:`~invertible.diagnostics.jacobian`: exact Jacobians (``torch.func``), singular values of the forward and
  inverse maps, condition numbers, log-det error.
- :mod:`~invertible.diagnostics.estimates`: ``sigma_max`` and ``sigma_min`` by Golub-Kahan-Lanczos on JVP/VJP, for
  inputs too large for an exact Jacobian.
- :mod:`~invertible.diagnostics.verdict`: the one definition of *numerically non-invertible* (a non-finite
  reconstruction, or one off by more than ``rtol`` relative, anywhere in the set), with the condition number at
  the worst-reconstructed and at fixed inputs reported beside it as a precursor.

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
from .verdict import (
    NONINVERTIBLE_RTOL,
    ConditionAt,
    InvertibilityVerdict,
    invertibility_verdict,
    judge_reconstructions,
)

__all__ = [
    "NONINVERTIBLE_RTOL",
    "ConditionAt",
    "ExtremeSingularValues",
    "InvertibilityVerdict",
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
    "invertibility_verdict",
    "jacobian_stats",
    "judge_reconstructions",
    "reconstruction_error",
    "repeated_round_trips",
    "singular_values",
]
