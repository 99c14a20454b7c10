"""invertible: verified invertible layers for PyTorch, with tools to detect, measure and prevent exploding
inverses.

Every layer follows the contract of :class:`InvertibleModule` (``y, logdet = layer(x)``,
``x, logdet_inv = layer.inverse(y)``, ``lipschitz_bounds()``) and is verified by :mod:`invertible.testing`.
"""

from .base import (
    Bounds,
    Inverse,
    InverseOptions,
    InvertibleModule,
    Sequential,
    allow_nonfinite,
    compose_bounds,
    iterative_inverse,
)
from .layers import (
    SCALE_FNS,
    ScaleFunction,
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    Dequantize,
    Invertible1x1Conv,
    Logit,
    Partial,
    Permutation,
    Split,
    Squeeze,
)
from .layers import (
    ConvergenceError,
    ConvergenceWarning,
    LipSwish,
    LogDetEstimator,
    ResidualBlock,
    SpectralNormConv2d,
    SpectralNormLinear,
    SpectralNormOptions,
)
from .layers import (
    MADE,
    MaskedAffineAutoregressive,
    MaskedSplineAutoregressive,
    RationalQuadraticSpline,
    SplineCoupling,
)
from . import memory, regularizers  # noqa: F401 (submodules as attributes of the package)
from .memory import MemorySaving

from . import attack, bounds, diagnostics, monitor  # noqa: F401 (as above)
from .attack import invertibility_attack
from .bounds import stability_report
from .monitor import StabilityMonitor

__all__ = [
    "SCALE_FNS",
    "ScaleFunction",
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "Bounds",
    "Dequantize",
    "Inverse",
    "InverseOptions",
    "Invertible1x1Conv",
    "InvertibleModule",
    "Logit",
    "MemorySaving",
    "Partial",
    "Permutation",
    "Sequential",
    "Split",
    "Squeeze",
    "allow_nonfinite",
    "compose_bounds",
    "iterative_inverse",
    # stability toolkit
    "StabilityMonitor",
    "invertibility_attack",
    "stability_report",
    # residual flows
    "ConvergenceError",
    "ConvergenceWarning",
    "LipSwish",
    "LogDetEstimator",
    "ResidualBlock",
    "SpectralNormConv2d",
    "SpectralNormLinear",
    "SpectralNormOptions",
    # splines and autoregressive transforms
    "MADE",
    "MaskedAffineAutoregressive",
    "MaskedSplineAutoregressive",
    "RationalQuadraticSpline",
    "SplineCoupling",
]

__version__ = "0.1.0"
