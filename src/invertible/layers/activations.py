"""Lipschitz-1 activations for residual branches (i-ResNet, Residual Flows).

Each activation has a ``lipschitz_bound()`` method (read by :func:`invertible.layers.nets.lipschitz_bound`), so a
residual branch built from spectrally normalised layers and these activations has a certified Lipschitz constant:
the product of the layers' coefficients.

- :class:`LipSwish`: ``x sigmoid(beta x) / 1.1`` with a learned ``beta > 0`` (Residual Flows' default ``swish``).
- :class:`MaxMin`: sorts pairs of channels (GroupSort with groups of 2).
- :class:`FullSort`: sorts all channels of a position.
- :class:`LipschitzCube`: ``x^3 / 3`` on ``[-1, 1]``, linear beyond (smooth, Lipschitz 1).
- :class:`LipSoftplus`: ``softplus``, whose derivative ``sigmoid`` lies in ``(0, 1)``.

``ACTIVATIONS`` maps the names residual-flows uses (``"swish"``, ``"maxmin"``, ...) to constructors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ACTIVATIONS", "FullSort", "LipSoftplus", "LipSwish", "LipschitzCube", "MaxMin", "make_activation"]

#: ``max_t d/dt [t sigmoid(t)] = 1.0998...``; dividing by 1.1 makes LipSwish 1-Lipschitz for every beta.
_SWISH_SCALE = 1.1


class LipSwish(nn.Module):
    r"""``f(x) = x sigmoid(beta x) / 1.1`` with ``beta = softplus(b)`` and a learned scalar ``b``.

    Lipschitz bound 1: ``f'(x) = [s(t) + t s(t)(1 - s(t))] / 1.1`` with ``t = beta x`` does not depend on
    ``beta``, and its maximum over ``t`` is ``1.0998.../1.1 < 1``. The parameter is called ``beta`` and has
    shape ``(1,)``, initialised to 0.5, as in residual-flows' ``Swish``.

    Example:
        >>> act = LipSwish()
        >>> float(act(torch.tensor([0.0])).detach()), act.lipschitz_bound()
        (0.0, 1.0)
    """

    def __init__(self, beta: float = 0.5) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.tensor([float(beta)]))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(x * F.softplus(self.beta)) / _SWISH_SCALE

    def lipschitz_bound(self) -> float:
        return 1.0


def _check_channels(x: Tensor, even: bool, name: str) -> None:
    if x.dim() < 2:
        raise ValueError(f"{name} expects inputs of shape (batch, C, ...), got {tuple(x.shape)}")
    if even and x.shape[1] % 2:
        raise ValueError(f"{name} pairs channels and needs an even number of them, got {x.shape[1]}")


class MaxMin(nn.Module):
    """GroupSort with groups of two: channels ``(a, b)`` become ``(max(a, b), min(a, b))``.

    A permutation of the input at every point, so it is 1-Lipschitz (and norm preserving). Channels are paired
    as the first half with the second half.

    Example:
        >>> MaxMin()(torch.tensor([[1.0, 3.0, 2.0, -1.0]]))
        tensor([[ 2.,  3.,  1., -1.]])
    """

    def forward(self, x: Tensor) -> Tensor:
        _check_channels(x, True, "MaxMin")
        a, b = x.chunk(2, dim=1)
        return torch.cat([torch.maximum(a, b), torch.minimum(a, b)], dim=1)

    def lipschitz_bound(self) -> float:
        return 1.0


class FullSort(nn.Module):
    """Sorts the channels of each position in descending order: a piecewise permutation, 1-Lipschitz.

    Example:
        >>> FullSort()(torch.tensor([[1.0, 3.0, 2.0]]))
        tensor([[3., 2., 1.]])
    """

    def forward(self, x: Tensor) -> Tensor:
        _check_channels(x, False, "FullSort")
        return torch.sort(x, dim=1, descending=True).values

    def lipschitz_bound(self) -> float:
        return 1.0


class LipschitzCube(nn.Module):
    r"""``f(x) = x^3 / 3`` for ``|x| <= 1`` and ``x - (2/3) sign(x)`` beyond: ``f'(x) = min(x^2, 1)``.

    Example:
        >>> LipschitzCube()(torch.tensor([0.5, 2.0]))
        tensor([0.0417, 1.3333])
    """

    def forward(self, x: Tensor) -> Tensor:
        inner = x.clamp(-1.0, 1.0)
        return inner**3 / 3 + (x - inner)

    def lipschitz_bound(self) -> float:
        return 1.0


class LipSoftplus(nn.Module):
    """``softplus(x) = log(1 + e^x)``, whose derivative ``sigmoid(x)`` lies in ``(0, 1)``.

    Example:
        >>> round(float(LipSoftplus()(torch.tensor(0.0))), 4)
        0.6931
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.softplus(x)

    def lipschitz_bound(self) -> float:
        return 1.0


#: Constructors by the names residual-flows' ``--act`` flag uses (``swish`` is LipSwish).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "swish": LipSwish,
    "lipswish": LipSwish,
    "maxmin": MaxMin,
    "fullsort": FullSort,
    "lcube": LipschitzCube,
    "softplus": LipSoftplus,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
}


def make_activation(name: str) -> nn.Module:
    """A fresh 1-Lipschitz activation by name (one of :data:`ACTIVATIONS`)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()
