"""Fixed channel permutations: shuffle (random) and reverse."""

from __future__ import annotations

import torch
from torch import Tensor

from ..base import Bounds, InvertibleModule, logdet_zeros

__all__ = ["Permutation"]


class Permutation(InvertibleModule):
    r"""Reorder the channels: ``y[:, i] = x[:, perm[i]]``.

    Math:
        forward ``y = x[:, perm]``; inverse ``x = y[:, argsort(perm)]``; ``log|det J| = 0``; Lipschitz bounds
        ``(1, 1)``.

    Args:
        channels: number of channels.
        kind: ``"shuffle"`` (a random permutation drawn at construction) or ``"reverse"``.
        generator: random generator for ``"shuffle"``.

    The indices are buffers, so they travel with the state dict; a state dict whose ``perm`` is not a
    permutation of ``range(channels)`` or whose ``inverse_perm`` does not invert it is refused. The inverse is
    computed from ``perm`` at each call (``argsort`` of ``C`` indices costs nothing), so it follows any change of
    ``perm``; the ``inverse_perm`` buffer is kept for checkpoints.

    Example:
        >>> layer = Permutation(3, kind="reverse")
        >>> layer(torch.tensor([[1.0, 2.0, 3.0]]))[0]
        tensor([[3., 2., 1.]])
    """

    def __init__(self, channels: int, *, kind: str = "shuffle", generator: torch.Generator | None = None) -> None:
        super().__init__(channels=channels, ranks=(2, 3, 4))
        if kind == "shuffle":
            perm = torch.randperm(channels, generator=generator)
        elif kind == "reverse":
            perm = torch.arange(channels - 1, -1, -1)
        else:
            raise ValueError(f"Permutation: kind must be 'shuffle' or 'reverse', got {kind!r}")
        self.kind = kind
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))

    def _after_load(self, prefix: str) -> None:
        ok = torch.equal(torch.sort(self.perm)[0], torch.arange(self.channels, device=self.perm.device))
        identity = torch.arange(self.channels, device=self.perm.device)
        if not ok or not torch.equal(self.perm[self.inverse_perm], identity):
            raise ValueError(
                f"Permutation(channels={self.channels}) cannot load '{prefix}perm': it is not a permutation of "
                "range(channels) with a matching 'inverse_perm'; the state dict is corrupted"
            )

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x[:, self.perm], logdet_zeros(x)

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return y[:, torch.argsort(self.perm)], logdet_zeros(y)

    def lipschitz_bounds(self) -> Bounds:
        return Bounds(1.0, 1.0)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kind={self.kind!r}"
