r"""The paper's table of bi-Lipschitz bounds, one documented function per building block.

Each function returns :class:`~invertible.Bounds` ``(Lip(F), Lip(F^-1))`` in the Euclidean norm, from the
quantities the bound depends on. Layers use these in their own ``lipschitz_bounds()``; the functions are public so
that a user can bound a block of their own from the same table.

================================= ====================================== ======================================
block                             ``Lip(F)``                             ``Lip(F^-1)``
================================= ====================================== ======================================
additive coupling (NICE)          ``(a + sqrt(a^2 + 4)) / 2 <= 1 + a``   the same
affine coupling (RealNVP, Glow)   none globally; local: ``bounds.local`` none globally; local: ``bounds.local``
invertible residual block         ``1 + L``                              ``1 / (1 - L)`` (``L < 1``)
diagonal scaling / ActNorm        ``max s``                              ``1 / min s``
linear map / 1x1 convolution      ``sigma_max(W)``                       ``1 / sigma_min(W)``
neural ODE (time ``T``)           ``exp(L T)``                           ``exp(L T)``
permutation, squeeze, reverse     ``1``                                  ``1``
================================= ====================================== ======================================

``a`` is a Lipschitz bound of the coupling's shift network ``t``; ``L`` one of the residual branch ``g`` (or of the
ODE's dynamics). A composition's bound is the product of its layers' bounds (:func:`model_bounds`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..base import Bounds, InvertibleModule, Sequential, compose_bounds

__all__ = [
    "PERMUTATION_BOUNDS",
    "additive_coupling_bounds",
    "diagonal_scaling_bounds",
    "linear_bounds",
    "model_bounds",
    "neural_ode_bounds",
    "residual_block_bounds",
]

#: Permutations, channel reversal and squeeze only reorder entries: both directions are isometries.
PERMUTATION_BOUNDS = Bounds(1.0, 1.0)


def additive_coupling_bounds(lip_t: float) -> Bounds:
    """``y1 = x1, y2 = x2 + t(x1)`` with ``Lip(t) <= a``: the Jacobian ``[[I, 0], [A, I]]`` with ``||A|| <= a`` has
    norm at most ``(a + sqrt(a^2 + 4)) / 2``, and so has its inverse ``[[I, 0], [-A, I]]``.

    Example:
        >>> additive_coupling_bounds(0.0), additive_coupling_bounds(1.5).forward
        (Bounds(forward=1.0, inverse=1.0), 2.0)
    """
    if lip_t < 0:
        raise ValueError(f"additive_coupling_bounds: lip_t must be >= 0, got {lip_t}")
    b = (lip_t + math.sqrt(lip_t * lip_t + 4.0)) / 2.0
    return Bounds(b, b)


def residual_block_bounds(lip_g: float) -> Bounds:
    """``y = x + g(x)`` with ``Lip(g) <= L``: ``Lip(F) <= 1 + L``; for ``L < 1``, ``Lip(F^-1) <= 1 / (1 - L)``
    (from ``||x - x'|| <= ||y - y'|| + L ||x - x'||``); for ``L >= 1`` the block need not be invertible: ``None``.

    Example:
        >>> residual_block_bounds(0.5)
        Bounds(forward=1.5, inverse=2.0)
    """
    if lip_g < 0:
        raise ValueError(f"residual_block_bounds: lip_g must be >= 0, got {lip_g}")
    return Bounds(1.0 + lip_g, 1.0 / (1.0 - lip_g) if lip_g < 1 else None)


def diagonal_scaling_bounds(scale: Tensor) -> Bounds:
    """``y = (x + b) * s`` with positive per-entry (or per-channel) scales ``s``: ``(max s, 1 / min s)``.

    Example:
        >>> diagonal_scaling_bounds(torch.tensor([0.5, 4.0]))
        Bounds(forward=4.0, inverse=2.0)
    """
    s = scale.detach().double().abs()
    return Bounds(float(s.max()), float(1.0 / s.min()))


def linear_bounds(weight: Tensor) -> Bounds:
    """``y = W x`` (at every position, for a 1x1 convolution): ``(sigma_max(W), 1 / sigma_min(W))``.

    Example:
        >>> linear_bounds(torch.tensor([[2.0, 0.0], [0.0, 0.25]]))
        Bounds(forward=2.0, inverse=4.0)
    """
    sv = torch.linalg.svdvals(weight.detach().double())
    return Bounds(float(sv.max()), float(1.0 / sv.min()))


def neural_ode_bounds(lip: float, time: float) -> Bounds:
    """The flow of ``dx/dt = h(x, t)`` for a time ``T`` with ``Lip(h) <= L``: ``exp(L T)`` both ways (Gronwall).

    Example:
        >>> neural_ode_bounds(0.0, 3.0)
        Bounds(forward=1.0, inverse=1.0)
    """
    if lip < 0 or time < 0:
        raise ValueError(f"neural_ode_bounds: lip and time must be >= 0, got {lip}, {time}")
    b = math.exp(lip * time)
    return Bounds(b, b)


def model_bounds(model: InvertibleModule) -> Bounds:
    """Global bounds of a model: the product of its layers' bounds (``None`` if any layer has none).

    For a :class:`~invertible.Sequential` this walks the layers (recursively); any other module reports its own
    ``lipschitz_bounds()``.

    Example:
        >>> import invertible
        >>> flow = invertible.Sequential(invertible.ActNorm(2, data_init=False), invertible.Permutation(2))
        >>> model_bounds(flow)
        Bounds(forward=1.0, inverse=1.0)
    """
    if isinstance(model, Sequential):
        return compose_bounds([model_bounds(layer) for layer in model])
    return model.lipschitz_bounds()
