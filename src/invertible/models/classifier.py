"""The paper's INN classifier: a Glow without splits followed by a small head on the first latents."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base import InvertibleModule
from ..layers import Squeeze
from .flow import Flow, standard_normal_log_prob
from .step import FlowStep, step_from

__all__ = ["CLASSIFIER_STEP", "INNClassifier", "classifier_flow"]

#: The classifier's default flow step (the paper's code's defaults): additive coupling, random shuffle, no ActNorm,
#: conv nets of width 128 with PyTorch's default initialisation.
CLASSIFIER_STEP = FlowStep(hidden=128, coupling="additive", permutation="shuffle", actnorm=False, zero_init=False)


def classifier_flow(
    in_shape: tuple[int, int, int],
    *,
    levels: int = 3,
    depth: int = 16,
    step: FlowStep | None = None,
    affine_eps: float = 0.0,
    seed: int = 0,
    **step_fields: Any,
) -> Flow:
    """The classifier's flow: ``levels`` x (squeeze, ``depth`` flow steps), no splits, all dimensions to the end.

    Like :class:`~invertible.models.Glow` with ``split=False``, except that (as in the paper's code) the ActNorm
    of a step is left out where the feature maps are 1x1. ``step`` is the flow step (:data:`CLASSIFIER_STEP` by
    default; keywords named like its fields replace them, the older spelling). ``affine_eps > 0`` keeps the scale
    away from 0: the step's scale function becomes its ``with_eps(affine_eps)`` variant, so ``sigmoid`` means
    ``sigmoid(h + 2) + eps`` (``sigmoid_eps``, whose log-det includes ``eps``; the paper's code left it out of the
    log-det); a scale function without such a variant is refused.
    """
    channels, height, width = in_shape
    if levels < 1 or depth < 1:
        raise ValueError(f"classifier_flow: levels and depth must be >= 1, got levels={levels}, depth={depth}")
    if height % 2**levels or width % 2**levels:
        raise ValueError(
            f"{levels} levels halve the {height}x{width} images {levels} times, so height and width must be "
            f"divisible by {2 ** levels}; use fewer levels (at most {_max_levels(height, width)}) or pad the images"
        )
    spec = step_from(step, CLASSIFIER_STEP, step_fields, "classifier_flow")
    if affine_eps > 0:
        try:
            spec = spec.replace(scale_fn=spec.scale().with_eps(affine_eps))
        except ValueError as exc:
            raise ValueError(f"affine_eps > 0: {exc}") from None
    generator = torch.Generator().manual_seed(seed)
    layers: list[InvertibleModule] = []
    for _ in range(levels):
        layers.append(Squeeze())
        channels, height, width = 4 * channels, height // 2, width // 2
        level_step = spec if height * width > 1 else spec.replace(actnorm=False)
        for _ in range(depth):
            layers += level_step.layers(channels, generator)
    return Flow(*layers, latent_shape=(channels, height, width), in_shape=tuple(in_shape))


def _max_levels(height: int, width: int) -> int:
    levels = 0
    while height % 2 ** (levels + 1) == 0 and width % 2 ** (levels + 1) == 0:
        levels += 1
    return levels


class INNClassifier(nn.Module):
    r"""The INN classifier of the paper: ``z = F(x)`` with an invertible flow ``F``, then
    ``logits = Linear(ReLU(BatchNorm1d(z_s)))`` on the first ``zs_dim`` entries ``z_s`` of the flattened ``z``.

    ``F`` is a Glow without splits (:func:`classifier_flow`), so every input dimension reaches the output and
    ``x = F^{-1}(z)`` can be checked: the paper's point is that an affine ``F`` trained only for classification
    can stop being *numerically* invertible. The head is not invertible and not part of ``F``.

    Math:
        - ``flow_input(x)`` appends ``inj_pad`` zero channels (the paper's injective padding; 0 by default);
        - ``objective(z, logdet) = -D log(2^n_bits) + log|det J_F| [+ log p(z)]`` per sample, the paper's
          normalizing-flow objective (``log p`` only with ``prior``; a standard normal, or a learned per-channel
          diagonal Gaussian with ``learn_top``);
        - Lipschitz bounds of ``F`` are ``F.lipschitz_bounds()`` (global bounds exist only for additive couplings).

    Args:
        in_shape: ``(C, H, W)`` of the images; ``H`` and ``W`` divisible by ``2^levels``.
        num_classes: number of classes.
        levels, depth: the flow's levels and steps per level (the paper's ``--n-levels``, ``--depth``).
        step: the flow step, a :class:`~invertible.models.FlowStep` (:data:`CLASSIFIER_STEP` by default); its fields
            are the paper's ``--hidden-channels``, ``--coupling``, ``--permutation``, ``--use-actnorm``,
            ``--an-stable-eps``, ``--use-actnorm-in-blocks``, ``--affine-scale-fn``, ``--zero-init``.
        affine_eps: ``--affine-eps`` (see :func:`classifier_flow`).
        zs_dim: number of leading latent entries fed to the head (``None``: all of them).
        inj_pad: zero channels appended to the input.
        prior: include ``log p(z)`` in :meth:`objective` (``--use-prior``).
        learn_top: learned prior mean and log-std per latent channel (``--learntop``; needs ``prior``).
        n_bits: bits per pixel of the data, for the constant ``-D log(2^n_bits)`` (``--n-bits-x``).
        seed: seeds the random permutations and orthogonal initialisations.
        step_fields: keywords named like the step's fields (``hidden``, ``coupling``, ...) replace those of
            ``step``: the older spelling, kept working.

    Example:
        >>> step = CLASSIFIER_STEP.replace(hidden=16, coupling="affine")
        >>> model = INNClassifier((1, 8, 8), levels=2, depth=2, step=step, zs_dim=32)
        >>> x = torch.randn(5, 1, 8, 8)
        >>> logits, z, logdet = model(x)
        >>> logits.shape, z.shape, bool((model.decode(z) - x).abs().max() < 1e-4)
        (torch.Size([5, 10]), torch.Size([5, 16, 2, 2]), True)
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        num_classes: int = 10,
        *,
        levels: int = 3,
        depth: int = 16,
        step: FlowStep | None = None,
        affine_eps: float = 0.0,
        zs_dim: int | None = None,
        inj_pad: int = 0,
        prior: bool = False,
        learn_top: bool = False,
        n_bits: float = 8.0,
        seed: int = 0,
        **step_fields: Any,
    ) -> None:
        super().__init__()
        channels, height, width = in_shape
        if inj_pad < 0:
            raise ValueError(f"inj_pad must be >= 0, got {inj_pad}")
        if learn_top and not prior:
            raise ValueError("learn_top learns the prior, so it needs prior=True (--use-prior)")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.in_shape = (channels, height, width)
        self.inj_pad = inj_pad
        self.flow = classifier_flow((channels + inj_pad, height, width), levels=levels, depth=depth,
                                    step=step_from(step, CLASSIFIER_STEP, step_fields, "INNClassifier"),
                                    affine_eps=affine_eps, seed=seed)
        self.latent_shape = self.flow.latent_shape
        self.dims = math.prod(self.latent_shape)
        zs_dim = self.dims if zs_dim is None else zs_dim
        if not 1 <= zs_dim <= self.dims:
            raise ValueError(f"zs_dim must lie in 1..{self.dims} (the number of latent entries), got {zs_dim}")
        self.zs_dim = zs_dim
        self.head = nn.Sequential(nn.BatchNorm1d(zs_dim), nn.ReLU(), nn.Linear(zs_dim, num_classes))
        self.prior, self.learn_top, self.n_bits = prior, learn_top, n_bits
        if learn_top:
            self.prior_mean = nn.Parameter(torch.zeros(self.latent_shape[0]))
            self.prior_logsd = nn.Parameter(torch.zeros(self.latent_shape[0]))

    def flow_input(self, x: Tensor) -> Tensor:
        """The flow's input: ``x`` with ``inj_pad`` zero channels appended."""
        if self.inj_pad == 0:
            return x
        return torch.cat([x, x.new_zeros(x.shape[0], self.inj_pad, *x.shape[2:])], dim=1)

    def classify(self, z: Tensor) -> Tensor:
        """Logits of the head on the first ``zs_dim`` entries of each flattened latent."""
        return self.head(z.flatten(1)[:, : self.zs_dim])

    def forward(self, x: Tensor, flow: InvertibleModule | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``(logits, z, logdet)`` for images ``x``; ``flow`` replaces ``self.flow`` (e.g. a memory-saving
        wrapper of it)."""
        if not isinstance(x, Tensor) or tuple(x.shape[1:]) != self.in_shape:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"INNClassifier was built for images of shape (batch, {', '.join(map(str, self.in_shape))}), got "
                f"{got}; build a classifier for this size (in_shape=...) or resize the images")
        z, logdet = (flow if flow is not None else self.flow)(self.flow_input(x))
        return self.classify(z), z, logdet

    def decode(self, z: Tensor) -> Tensor:
        """``F^{-1}(z)`` without the padding channels: the reconstruction of the input."""
        x = self.flow.inverse(z)[0]
        return x[:, : self.in_shape[0]] if self.inj_pad else x

    def log_prior(self, z: Tensor) -> Tensor:
        """``log p(z)`` per sample: standard normal, or the learned diagonal Gaussian with ``learn_top``."""
        if not self.learn_top:
            return standard_normal_log_prob(z)
        shape = (1, -1) + (1,) * (z.dim() - 2)
        mean, logsd = self.prior_mean.view(shape), self.prior_logsd.view(shape)
        logp = -0.5 * (math.log(2 * math.pi) + 2 * logsd + (z - mean).pow(2) * torch.exp(-2 * logsd))
        return logp.flatten(1).sum(1)

    def objective(self, z: Tensor, logdet: Tensor) -> Tensor:
        """The paper's objective per sample: ``-D log(2^n_bits) + logdet [+ log p(z)]``."""
        out = logdet - math.prod(self.in_shape) * self.n_bits * math.log(2.0)
        return out + self.log_prior(z) if self.prior else out

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Mean cross-entropy of the head."""
        return F.cross_entropy(logits, labels)
