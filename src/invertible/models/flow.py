"""``Flow``: a :class:`~invertible.Sequential` scored by a standard normal base distribution."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..base import InvertibleModule, Sequential

__all__ = ["Flow", "bits_per_dim", "standard_normal_log_prob"]


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """``log N(z; 0, I)`` per sample."""
    return -0.5 * (z.flatten(1).pow(2) + math.log(2 * math.pi)).sum(1)


def bits_per_dim(log_prob: Tensor, dims: int, levels: int | None = None) -> Tensor:
    """Bits per dimension ``-(log p - D log L) / (D ln 2)`` of data on ``L`` levels scaled to unit range.

    ``levels=None`` omits the discretisation term (use it when a :class:`~invertible.Dequantize` layer already
    contributes ``-D log L`` to the log-det).
    """
    correction = 0.0 if levels is None else dims * math.log(levels)
    return -(log_prob - correction) / (dims * math.log(2.0))


class Flow(Sequential):
    """A normalizing flow: ``z = f(x)`` with ``z ~ N(0, I)``, so ``log p(x) = log N(f(x)) + log|det J_f(x)|``.

    Args:
        layers: the invertible layers, applied in order.
        latent_shape: the shape of ``z`` per sample (used by :meth:`sample`); ``inverse`` refuses latents of
            another shape.
        in_shape: the shape of ``x`` per sample that the flow was built for (``forward`` refuses others), or
            ``None`` to accept any input its layers accept.
    """

    def __init__(self, *layers: InvertibleModule, latent_shape: tuple[int, ...],
                 in_shape: tuple[int, ...] | None = None) -> None:
        super().__init__(*layers)
        self.latent_shape = tuple(latent_shape)
        self.out_shape = self.latent_shape
        if in_shape is not None:
            self.in_shape = tuple(in_shape)
            self.ranks = (len(self.in_shape) + 1,)
            self.channels, self.out_channels = self.in_shape[0], self.latent_shape[0]

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` per sample."""
        z, logdet = self(x)
        return standard_normal_log_prob(z) + logdet

    def bits_per_dim(self, x: Tensor, levels: int | None = None) -> Tensor:
        """Bits per dimension per sample (see :func:`bits_per_dim`)."""
        return bits_per_dim(self.log_prob(x), x[0].numel(), levels)

    @torch.no_grad()
    def sample(self, n: int, *, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` samples ``x = f^-1(T z)``, ``z ~ N(0, I)``; non-finite samples are returned as they are."""
        from ..base import allow_nonfinite

        p = next(self.parameters())
        z = torch.randn((n, *self.latent_shape), generator=generator, dtype=p.dtype, device=p.device)
        with allow_nonfinite():
            return self.inverse(z * temperature)[0]
