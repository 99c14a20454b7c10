"""Pre-processing bijections: dequantisation scaling and the logit transform."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..base import Bounds, InvertibleModule, _nonfinite_allowed, per_sample

__all__ = ["Dequantize", "Logit"]


class Dequantize(InvertibleModule):
    r"""Map discrete levels ``k in {0, ..., L-1}`` to ``[offset, offset + 1)``: ``y = (k + u) / L + offset``.

    In training mode ``u ~ U(0, 1)`` (uniform dequantisation, fresh each call); in eval mode ``u = 0``, which makes
    the layer a deterministic affine bijection (the contract suite checks it in eval mode).

    Math: forward ``y = (x + u) / L + offset``; inverse ``x = (y - offset) L`` (not rounded);
    ``log|det J| = -D log L`` with ``D`` the entries per sample, so ``-(log p(y) + log|det J|) / (D ln 2)`` is the
    bits per dimension of the discrete data. Lipschitz bounds ``(1/L, L)``.

    Args:
        levels: number of discrete levels ``L`` (256 for 8-bit images).
        offset: ``-0.5`` gives Glow's ``[-0.5, 0.5)`` range.

    Example:
        >>> layer = Dequantize(256, offset=-0.5).eval()
        >>> layer(torch.tensor([[0.0, 255.0]]))[0]
        tensor([[-0.5000,  0.4961]])
    """

    def __init__(self, levels: int = 256, *, offset: float = 0.0) -> None:
        super().__init__(channels=None, ranks=(2, 3, 4))
        if levels < 2:
            raise ValueError(f"Dequantize: levels must be >= 2, got {levels}")
        self.levels = levels
        self.offset = offset

    def _logdet(self, x: Tensor, sign: float) -> Tensor:
        return per_sample(x.new_tensor(sign * math.prod(x.shape[1:]) * math.log(self.levels)), x)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        noise = torch.rand_like(x) if self.training else 0.0
        return (x + noise) / self.levels + self.offset, self._logdet(x, -1.0)

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return (y - self.offset) * self.levels, self._logdet(y, 1.0)

    def lipschitz_bounds(self) -> Bounds:
        return Bounds(1.0 / self.levels, float(self.levels))

    def extra_repr(self) -> str:
        return f"levels={self.levels}, offset={self.offset}"


class Logit(InvertibleModule):
    r"""Logit transform of data in ``[0, 1]``: ``y = logit(a + (1 - 2a) x)`` (RealNVP, Residual Flows).

    Math: with ``s = a + (1 - 2a) x``: forward ``y = log s - log(1 - s)``; inverse
    ``x = (sigmoid(y) - a) / (1 - 2a)``; ``log|det J| = sum [log(1 - 2a) - log s - log(1 - s)]``.
    Lipschitz bounds on the domain ``[0, 1]``: ``(1 - 2a) / (a (1 - a))`` forward and ``1 / (4 (1 - 2a))`` inverse.

    Inputs outside ``[0, 1]`` are refused (the map is only defined on ``(-a/(1-2a), (1-a)/(1-2a))``).

    Args:
        alpha: the margin ``a`` in ``(0, 0.5)`` (0.05 in Residual Flows, 1e-6 in Glow's ``--logittransform``).

    Example:
        >>> Logit(0.05)(torch.tensor([[0.5]]))[0]
        tensor([[0.]])
    """

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__(channels=None, ranks=(2, 3, 4))
        if not 0 < alpha < 0.5:
            raise ValueError(f"Logit: alpha must be in (0, 0.5), got {alpha}")
        self.alpha = alpha

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not (_nonfinite_allowed() or torch._C._functorch.is_functorch_wrapped_tensor(x)):
            if bool((x < 0).any() | (x > 1).any()):
                lo, hi = float(x.min()), float(x.max())
                raise ValueError(f"Logit.forward expects inputs in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
        s = self.alpha + (1 - 2 * self.alpha) * x
        y = torch.log(s) - torch.log1p(-s)
        logdet = (math.log(1 - 2 * self.alpha) - torch.log(s) - torch.log1p(-s)).flatten(1).sum(1)
        return y, logdet

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x = (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)
        logdet = (F.logsigmoid(y) + F.logsigmoid(-y) - math.log(1 - 2 * self.alpha)).flatten(1).sum(1)
        return x, logdet

    def lipschitz_bounds(self) -> Bounds:
        a = self.alpha
        return Bounds((1 - 2 * a) / (a * (1 - a)), 1.0 / (4 * (1 - 2 * a)))

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"

