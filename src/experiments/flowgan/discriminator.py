"""The FlowGAN discriminator (the original's ``mine``: SNGAN-style, spectrally normalised) and the gradient penalty.

The original, for 32x32x3 images::

    conv3x3 3->64, conv4x4/2 64->64, conv3x3 64->128, conv4x4/2 128->128, conv3x3 128->256, conv4x4/2 256->256,
    conv3x3 256->512, LeakyReLU(0.1) after each, linear 4*4*512 -> 1, spectral norm on every layer.

Here the same pattern scales with the image: ``downsamples`` stride-2 stages (3 for 32x32, 2 for 8x8 or 28x28)
with widths ``width * (1, 2, 4, ...)``. The spectral norm is PyTorch's power-iteration parametrisation (one
iteration per forward call, as SNGAN): the library's :class:`~invertible.layers.SpectralNormConv2d` covers only
stride-1 'same' convolutions, and a discriminator needs no certified bound.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = ["Discriminator", "gradient_penalty"]


class Discriminator(nn.Module):
    """Spectrally normalised conv discriminator returning one logit per image.

    Args:
        shape: ``(C, H, W)`` of the images.
        width: channels of the first stage (64 in the original).
        downsamples: stride-2 stages; default ``min(3, floor(log2(min(H, W))) - 1)``.

    Example:
        >>> d = Discriminator((1, 8, 8), width=8)
        >>> d(torch.zeros(5, 1, 8, 8)).shape
        torch.Size([5])
    """

    def __init__(self, shape: tuple[int, int, int], width: int = 64, downsamples: int | None = None,
                 slope: float = 0.1) -> None:
        super().__init__()
        c, h, w = shape
        if downsamples is None:
            downsamples = max(1, min(3, int(math.log2(min(h, w))) - 1))
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(c, width, 3, padding=1)), nn.LeakyReLU(slope)]
        channels = width
        for stage in range(downsamples):
            layers += [spectral_norm(nn.Conv2d(channels, channels, 4, stride=2, padding=1)), nn.LeakyReLU(slope)]
            h, w = h // 2, w // 2
            wider = width * 2 ** (stage + 1)
            layers += [spectral_norm(nn.Conv2d(channels, wider, 3, padding=1)), nn.LeakyReLU(slope)]
            channels = wider
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.head = spectral_norm(nn.Linear(channels * h * w, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x)).squeeze(1)


def gradient_penalty(discriminator: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator) -> Tensor:
    """``mean((||grad_x D(x_hat)|| - 1)^2)`` at random interpolates ``x_hat = a real + (1 - a) fake`` (one ``a`` per
    image), differentiable with respect to the discriminator's parameters."""
    alpha = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), generator=generator, dtype=real.dtype)
    mixed = (alpha.to(real.device) * real + (1 - alpha.to(real.device)) * fake).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()
