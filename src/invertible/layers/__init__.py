"""Invertible layers, one family per module."""

from .actnorm import ActNorm
from .conv1x1 import Invertible1x1Conv
from .coupling import SCALE_FNS, AdditiveCoupling, AffineCoupling, scale_and_log
from .permutation import Permutation
from .preprocessing import Dequantize, Logit
from .reshape import Partial, Split, Squeeze

__all__ = [
    "SCALE_FNS",
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
]
