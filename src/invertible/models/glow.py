"""Glow (Kingma & Dhariwal, 2018): L levels of squeeze + K flow steps (+ split), for images."""

from __future__ import annotations

from typing import Any

import torch

from ..base import InvertibleModule
from ..layers import ActNorm, Partial, Split, Squeeze
from .flow import Flow
from .step import PERMUTATIONS, FlowStep, flow_step, step_from

__all__ = ["PERMUTATIONS", "Glow", "flow_step"]


class Glow(Flow):
    r"""Glow for images ``(B, C, H, W)``: ``levels`` x (squeeze, ``depth`` flow steps, split).

    Each flow step is ``ActNorm -> 1x1 conv (or permutation) -> coupling``, given whole as a
    :class:`~invertible.models.FlowStep` (``step``; Glow's by default). With
    ``split=True`` half of the channels leave the flow after every level but the last (:class:`~invertible.Split`,
    with a learned conditional prior when ``learned_prior``); with ``split=False`` all dimensions flow through
    every step (the paper's INN classifier). ``learn_top`` adds a learned per-channel Gaussian at the top
    (an identity-initialised ActNorm, so the base stays ``N(0, I)``).

    The output ``z`` has shape ``(C 4^L, H / 2^L, W / 2^L)`` per sample and holds every latent, so
    ``inverse(z)`` reconstructs exactly; :meth:`~Flow.log_prob` is Glow's log-likelihood (split priors included)
    and :meth:`~Flow.sample` draws from the model. Lipschitz bounds exist only with additive couplings and no
    learned priors. The model is built for ``in_shape``: images (and latents) of another size are refused.

    Args:
        in_shape: ``(C, H, W)``; ``H`` and ``W`` must be divisible by ``2^levels``.
        levels, depth: ``L`` and ``K``.
        step: the flow step (:class:`~invertible.models.FlowStep`, Glow's by default: affine coupling with the
            sigmoid scale, LU 1x1 convolution, ActNorm, conv nets of width 512).
        split, learned_prior, learn_top: multi-scale structure and learned priors.
        seed: seeds the random permutations and orthogonal initialisations.
        step_fields: keywords named like :class:`~invertible.models.FlowStep`'s fields (``hidden``, ``coupling``,
            ``permutation``, ``scale_fn``, ...) replace those of ``step``: the older spelling, kept working.

    Example:
        >>> model = Glow((1, 8, 8), levels=2, depth=2, step=FlowStep(hidden=16))
        >>> x = torch.randn(4, 1, 8, 8)
        >>> model.log_prob(x).shape, model.latent_shape
        (torch.Size([4]), (16, 2, 2))
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        *,
        levels: int = 3,
        depth: int = 32,
        step: FlowStep | None = None,
        split: bool = True,
        learned_prior: bool = True,
        learn_top: bool = False,
        seed: int = 0,
        **step_fields: Any,
    ) -> None:
        channels, height, width = in_shape
        if levels < 1 or depth < 1:
            raise ValueError(f"Glow: levels and depth must be >= 1, got levels={levels}, depth={depth}")
        if height % 2**levels or width % 2**levels:
            raise ValueError(
                f"Glow: {levels} levels halve the image {levels} times, so height and width must be divisible "
                f"by {2 ** levels}; got {height}x{width} (pad the images or use fewer levels)"
            )
        spec = step_from(step, FlowStep(), step_fields, "Glow")
        generator = torch.Generator().manual_seed(seed)
        layers: list[InvertibleModule] = []
        total, active = channels, channels

        def add(layer: InvertibleModule) -> None:
            layers.append(layer if active == total else Partial(layer, active))

        for level in range(levels):
            layers.append(Squeeze())
            total, active, height, width = 4 * total, 4 * active, height // 2, width // 2
            for _ in range(depth):
                for layer in spec.layers(active, generator):
                    add(layer)
            if split and level < levels - 1:
                add(Split(active, learned=learned_prior))
                active = active // 2
        if learn_top:
            add(ActNorm(active, data_init=False))
        super().__init__(*layers, latent_shape=(total, height, width), in_shape=tuple(in_shape))
        self.step = spec
