"""A coupling flow for flat ``(B, D)`` data: 2-D toys and tabular data."""

from __future__ import annotations

import torch

from ..base import InvertibleModule
from ..layers import ActNorm
from .flow import Flow
from .glow import flow_step

__all__ = ["DenseFlow"]


class DenseFlow(Flow):
    r"""``steps`` x (``[ActNorm] -> permutation -> coupling``) on flat vectors, with MLP coupling networks.

    The toy regression of the paper is ``DenseFlow(2, steps=24, hidden=10, permutation="reverse",
    actnorm_data_init=False, zero_init=False, order="glow", scale_fn="sigmoid_eps", eps=1e-6)``.

    Args:
        dim: dimension ``D`` (>= 2).
        steps: number of flow steps.
        hidden: MLP width (two hidden layers).
        coupling: ``"affine"`` or ``"additive"``.
        permutation: ``"reverse"``, ``"shuffle"``, ``"conv"`` (dense linear) or ``"lu"``.
        actnorm: ActNorm at the start of each step; ``actnorm_data_init`` chooses data-dependent or identity
            initialisation.
        seed: seeds the random permutations.
        coupling_args: as for :class:`~invertible.models.Glow`.

    Example:
        >>> flow = DenseFlow(2, steps=4, hidden=16)
        >>> flow.log_prob(torch.randn(5, 2)).shape
        torch.Size([5])
    """

    def __init__(
        self,
        dim: int,
        *,
        steps: int = 8,
        hidden: int = 64,
        coupling: str = "affine",
        permutation: str = "reverse",
        actnorm: bool = True,
        actnorm_data_init: bool = True,
        seed: int = 0,
        **coupling_args: object,
    ) -> None:
        if dim < 2:
            raise ValueError(f"DenseFlow needs dim >= 2, got {dim}")
        generator = torch.Generator().manual_seed(seed)
        layers: list[InvertibleModule] = []
        for _ in range(steps):
            step = flow_step(dim, hidden=hidden, coupling=coupling, permutation=permutation, actnorm=False,
                             net="mlp", generator=generator, **coupling_args)
            if actnorm:
                layers.append(ActNorm(dim, data_init=actnorm_data_init))
            layers += step
        super().__init__(*layers, latent_shape=(dim,), in_shape=(dim,))
