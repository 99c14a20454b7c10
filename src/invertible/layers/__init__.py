"""Invertible layers, one family per module."""

from .actnorm import ActNorm
from .conv1x1 import Invertible1x1Conv
from .scale import SCALE_FNS, SCALE_FUNCTIONS, ScaleFunction, make_scale, register_scale
from .coupling import AdditiveCoupling, AffineCoupling, scale_and_log
from .permutation import Permutation
from .preprocessing import Dequantize, Logit
from .reshape import Partial, Split, Squeeze
from .activations import FullSort, LipSoftplus, LipSwish, LipschitzCube, MaxMin
from .residual import ConvergenceError, ConvergenceWarning, InverseReport, ResidualBlock
from .residual_logdet import LogDetEstimator
from .spectral_norm import SpectralNormConv2d, SpectralNormLinear, SpectralNormOptions, update_lipschitz
from .spline import RationalQuadraticSpline, SplineCoupling
from .autoregressive import MADE, MaskedAffineAutoregressive, MaskedSplineAutoregressive

__all__ = [
    "SCALE_FNS",
    "SCALE_FUNCTIONS",
    "ScaleFunction",
    "make_scale",
    "register_scale",
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "Dequantize",
    "Invertible1x1Conv",
    "Logit",
    "Partial",
    "Permutation",
    "Split",
    "Squeeze",
    "scale_and_log",
    # residual flows
    "ConvergenceError",
    "ConvergenceWarning",
    "FullSort",
    "InverseReport",
    "LipSoftplus",
    "LipSwish",
    "LipschitzCube",
    "LogDetEstimator",
    "MaxMin",
    "ResidualBlock",
    "SpectralNormConv2d",
    "SpectralNormLinear",
    "SpectralNormOptions",
    "update_lipschitz",
    # splines and autoregressive transforms
    "MADE",
    "MaskedAffineAutoregressive",
    "MaskedSplineAutoregressive",
    "RationalQuadraticSpline",
    "SplineCoupling",
]
