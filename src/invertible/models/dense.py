"""A coupling flow for flat ``(B, D)`` data: 2-D toys and tabular data."""

from __future__ import annotations

from typing import Any

import torch

from ..base import InvertibleModule
from .flow import Flow
from .step import FlowStep, step_from

__all__ = ["DENSE_STEP", "DenseFlow"]

#: The dense flow's default step: ActNorm, channel reversal, affine coupling (sigmoid scale) with an MLP of width
#: 64.
DENSE_STEP = FlowStep(hidden=64, permutation="reverse", net="mlp")


class DenseFlow(Flow):
    r"""``steps`` x (``[ActNorm] -> permutation -> coupling``) on flat vectors, with MLP coupling networks.

    The toy regression of the paper is ``DenseFlow(2, steps=24, step=FlowStep(hidden=10, permutation="reverse",
    net="mlp", actnorm_data_init=False, zero_init=False, order="glow", scale_fn="sigmoid_eps", eps=1e-6))``.

    Args:
        dim: dimension ``D`` (>= 2).
        steps: number of flow steps.
        step: the flow step (:class:`~invertible.models.FlowStep`, :data:`DENSE_STEP` by default; its ``net``
            must be ``"mlp"``; ``permutation`` ``"conv"`` is a dense linear map here).
        seed: seeds the random permutations.
        step_fields: keywords named like the step's fields (``hidden``, ``coupling``, ``permutation``,
            ``actnorm``, ``actnorm_data_init``, ``scale_fn``, ...) replace those of ``step``: the older spelling.

    Example:
        >>> flow = DenseFlow(2, steps=4, step=DENSE_STEP.replace(hidden=16))
        >>> flow.log_prob(torch.randn(5, 2)).shape
        torch.Size([5])
    """

    def __init__(self, dim: int, *, steps: int = 8, step: FlowStep | None = None, seed: int = 0,
                 **step_fields: Any) -> None:
        if dim < 2:
            raise ValueError(f"DenseFlow needs dim >= 2, got {dim}")
        spec = step_from(step, DENSE_STEP, step_fields, "DenseFlow")
        if spec.net != "mlp":
            raise ValueError(f"DenseFlow: the step's net must be 'mlp' (flat data), got {spec.net!r}")
        generator = torch.Generator().manual_seed(seed)
        layers: list[InvertibleModule] = []
        for _ in range(steps):
            layers += spec.layers(dim, generator)
        super().__init__(*layers, latent_shape=(dim,), in_shape=(dim,))
        self.step = spec
