r"""Local bi-Lipschitz bounds: bounds on ``||J_f(x_i)||`` and ``||J_f(x_i)^-1||`` at the samples of a batch.

An affine coupling has no global Lipschitz bound, but on a box it has one; so has a learned
:class:`~invertible.Split`. Each layer computes its own (the ``_local_bounds`` hook of
:class:`~invertible.InvertibleModule`, whose default is the global ``lipschitz_bounds()``): affine couplings and
learned splits on the box the batch spans, from interval propagation through their networks and their scale
function's range (the math is in :mod:`invertible.layers.coupling`); containers (``Sequential``, ``Partial``,
``Inverse``, ``MemorySaving``) from their layers, each on the box of its own inputs. A layer of your own gets the
default without doing anything, and tighter bounds by overriding the hook.

These bounds are rigorous (up to float64 round-off) and loose: they are what the local theory guarantees, to be
held against measured singular values, which they never undercut.

This module gathers the pieces under their public names: :func:`local_bounds`, :func:`interval_bounds` (from
:mod:`invertible.layers.nets`), :func:`block_norm_bound`, :func:`affine_coupling_local_bounds`,
:func:`split_local_bounds` and :func:`scale_function_range`.
"""

from __future__ import annotations

from torch import Tensor

from ..base import Bounds, InvertibleModule
from ..layers import AffineCoupling, Split, make_scale
from ..layers.coupling import block_norm_bound
from ..layers.nets import interval_bounds

__all__ = ["affine_coupling_local_bounds", "block_norm_bound", "interval_bounds", "local_bounds",
           "scale_function_range", "split_local_bounds"]


def scale_function_range(fn: str, lo: Tensor, hi: Tensor, *, shift: float = 2.0, eps: float = 0.01,
                         max_scale: float = 2.0) -> tuple[Tensor, Tensor, Tensor]:
    """``(min s, max s, max g')`` of ``s = g(h)`` over ``lo <= h <= hi`` for the scale function named ``fn``:
    :meth:`~invertible.layers.scale.ScaleFunction.interval` of ``make_scale(fn, ...)``.

    Example:
        >>> import torch
        >>> s_lo, s_hi, dg = scale_function_range("sigmoid", torch.tensor([-2.0]), torch.tensor([0.0]))
        >>> float(s_lo), float(dg)
        (0.5, 0.25)
    """
    return make_scale(fn, shift=shift, eps=eps, max_scale=max_scale).interval(lo, hi)


def affine_coupling_local_bounds(layer: AffineCoupling, lo: Tensor, hi: Tensor) -> Bounds:
    """Bounds of ``||J_f(x)||`` on the box ``[lo, hi]`` and of ``||J_{f^-1}(y)||`` on a box holding its image:
    :meth:`~invertible.AffineCoupling.box_bounds`.

    Example:
        >>> import torch, invertible
        >>> layer = invertible.AffineCoupling(4, hidden=8, net="mlp", zero_init=False, scale_fn="bounded").double()
        >>> x = torch.randn(16, 4, dtype=torch.float64)
        >>> bounds = affine_coupling_local_bounds(layer, x.amin(0, keepdim=True), x.amax(0, keepdim=True))
        >>> from invertible.diagnostics import singular_values
        >>> bool(singular_values(layer, x)[:, 0].max() <= bounds.forward)
        True
    """
    return layer.box_bounds(lo, hi)


def split_local_bounds(layer: Split, lo: Tensor, hi: Tensor) -> Bounds:
    """:func:`affine_coupling_local_bounds` for a learned :class:`~invertible.Split`: its
    :meth:`~invertible.Split.box_bounds`."""
    return layer.box_bounds(lo, hi)


def local_bounds(module: InvertibleModule, x: Tensor) -> Bounds:
    """Upper bounds on ``||J_f(x_i)||`` and ``||J_f(x_i)^-1||`` at every sample ``x_i`` of the batch:
    ``module.local_bounds(x)`` (module docstring).

    Example:
        >>> import torch
        >>> from invertible.models import Glow
        >>> flow = Glow((1, 4, 4), levels=1, depth=2, hidden=4).double()
        >>> x = torch.rand(8, 1, 4, 4, dtype=torch.float64)
        >>> flow.lipschitz_bounds(), all(b is not None for b in local_bounds(flow, x))
        (Bounds(forward=None, inverse=None), True)
    """
    return module.local_bounds(x)
