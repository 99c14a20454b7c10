"""ActNorm: a per-channel affine map with data-dependent initialisation (Glow)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..base import Bounds, InvertibleModule, numel_per_channel, per_sample

__all__ = ["ActNorm"]


class ActNorm(InvertibleModule):
    r"""Per-channel affine map ``y = (x + b) * s`` with ``s > 0``.

    Math:
        forward ``y = (x + b) * s``; inverse ``x = y / s - b``;
        ``log|det J| = n * sum_c log s_c`` with ``n`` the number of positions per channel (``H*W`` for images,
        1 for flat inputs). Lipschitz bounds: ``max_c s_c`` forward, ``1 / min_c s_c`` inverse.

    The scale ``s`` comes from the parameter ``log_scale`` (``l``) in one of three ways:
        - default: ``s = exp(l)``;
        - ``eps > 0`` (the paper's ``an_stable_eps``): ``s = exp(l) + eps``, so the inverse never divides by less
          than ``eps``;
        - ``max_scale = M`` (the paper's ``actnorm_max_scale``): ``s = exp(log(M) tanh(l))`` in ``(1/M, M)``.

    Data-dependent initialisation (Glow): on the first forward call, ``b = -mean`` and ``s = 1 / (std + 1e-6)``
    over the batch and spatial positions, so that the output has zero mean and unit variance per channel. The
    ``initialized`` flag is a buffer, so ``load_state_dict`` restores it. With ``data_init=False`` the layer
    starts as the identity. The initialisation is the one documented exception to batch independence.

    Args:
        channels: number of channels (dimension 1 of the input).
        data_init: initialise from the first batch (default) or start as the identity.
        eps: constant added to the scale (0 disables).
        max_scale: bound ``M > 1`` on the scale and its inverse (``None`` disables).

    Example:
        >>> import torch
        >>> layer = ActNorm(3)
        >>> y, logdet = layer(torch.randn(16, 3, 4, 4) * 5 + 2)
        >>> abs(float(y.detach().mean())) < 1e-5, logdet.shape
        (True, torch.Size([16]))
    """

    def __init__(
        self, channels: int, *, data_init: bool = True, eps: float = 0.0, max_scale: float | None = None
    ) -> None:
        super().__init__(channels=channels, ranks=(2, 3, 4))
        if eps < 0:
            raise ValueError(f"ActNorm: eps must be >= 0, got {eps}")
        if max_scale is not None and max_scale <= 1:
            raise ValueError(f"ActNorm: max_scale must be > 1, got {max_scale}")
        if max_scale is not None and eps > 0:
            raise ValueError("ActNorm: choose either eps or max_scale, not both")
        self.eps = float(eps)
        self.max_scale = None if max_scale is None else float(max_scale)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(not data_init))

    def _view(self, p: Tensor, x: Tensor) -> Tensor:
        return p.view(1, -1, *([1] * (x.dim() - 2)))

    def log_scale_value(self) -> Tensor:
        """``log s`` per channel, computed stably for each parametrisation."""
        if self.max_scale is not None:
            return math.log(self.max_scale) * torch.tanh(self.log_scale)
        if self.eps > 0:
            return torch.logaddexp(self.log_scale, self.log_scale.new_tensor(math.log(self.eps)))
        return self.log_scale

    def scale(self) -> Tensor:
        """The scale ``s`` per channel."""
        if self.max_scale is None and self.eps > 0:
            return torch.exp(self.log_scale) + self.eps
        return torch.exp(self.log_scale_value())

    @torch.no_grad()
    def initialize_(self, x: Tensor) -> None:
        """Set ``b`` and ``s`` so that the output on ``x`` has zero mean and unit variance per channel."""
        if x.shape[0] == 0:
            raise ValueError(
                "ActNorm: the data-dependent initialisation needs data, and the first batch is empty; run the first "
                "forward pass on a non-empty batch (or build the layer with data_init=False)")
        flat = x.transpose(0, 1).reshape(self.channels, -1)
        mean = flat.mean(dim=1)
        std = flat.std(dim=1) if flat.shape[1] > 1 else torch.ones_like(mean)
        target = 1.0 / (std + 1e-6)
        if self.max_scale is not None:
            ratio = torch.log(target) / math.log(self.max_scale)
            log_scale = torch.atanh(ratio.clamp(-0.999, 0.999))
        elif self.eps > 0:
            log_scale = torch.log((target - self.eps).clamp_min(1e-6 * target))
        else:
            log_scale = torch.log(target)
        self.bias.copy_(-mean)
        self.log_scale.copy_(log_scale)
        self.initialized.fill_(True)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not bool(self.initialized):
            self.initialize_(x)
        log_s = self.log_scale_value()
        y = (x + self._view(self.bias, x)) * self._view(self.scale(), x)
        logdet = per_sample(numel_per_channel(x) * log_s.sum(), x)
        return y, logdet

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        if not bool(self.initialized):
            raise ValueError(
                "ActNorm.inverse: the layer has not been initialised; run a forward pass on data first, "
                "or build it with data_init=False"
            )
        log_s = self.log_scale_value()
        x = y / self._view(self.scale(), y) - self._view(self.bias, y)
        logdet = per_sample(-numel_per_channel(y) * log_s.sum(), y)
        return x, logdet

    def lipschitz_bounds(self) -> Bounds:
        with torch.no_grad():
            log_s = self.log_scale_value().double()
            return Bounds(float(log_s.max().exp()), float((-log_s.min()).exp()))

    def extra_repr(self) -> str:
        extra = f", eps={self.eps}" if self.eps else ""
        extra += f", max_scale={self.max_scale}" if self.max_scale is not None else ""
        return f"channels={self.channels}{extra}"
