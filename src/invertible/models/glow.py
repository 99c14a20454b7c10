"""Glow (Kingma & Dhariwal, 2018): L levels of squeeze + K flow steps (+ split), for images."""

from __future__ import annotations

import torch

from ..base import InvertibleModule
from ..layers import ActNorm, AdditiveCoupling, AffineCoupling, Invertible1x1Conv, Partial, Permutation, Split, Squeeze
from .flow import Flow

__all__ = ["PERMUTATIONS", "Glow", "flow_step"]

#: Channel mixing choices: dense 1x1 conv, LU 1x1 conv, random shuffle, reversal.
PERMUTATIONS = ("conv", "lu", "shuffle", "reverse")


def _permutation(kind: str, channels: int, generator: torch.Generator) -> InvertibleModule:
    if kind in ("conv", "lu"):
        return Invertible1x1Conv(channels, lu=kind == "lu", generator=generator)
    if kind in ("shuffle", "reverse"):
        return Permutation(channels, kind=kind, generator=generator)
    raise ValueError(f"permutation must be one of {PERMUTATIONS}, got {kind!r}")


def flow_step(
    channels: int,
    *,
    hidden: int,
    coupling: str = "affine",
    permutation: str = "lu",
    actnorm: bool = True,
    actnorm_eps: float = 0.0,
    actnorm_max_scale: float | None = None,
    net: str = "conv",
    generator: torch.Generator | None = None,
    **coupling_args: object,
) -> list[InvertibleModule]:
    """One Glow step: ``[ActNorm] -> permutation or 1x1 conv -> coupling``.

    ``coupling_args`` go to the coupling (``scale_fn``, ``eps``, ``shift``, ``max_scale``, ``order``,
    ``zero_init``, ``net_actnorm``); see :class:`~invertible.AffineCoupling`.
    """
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    layers: list[InvertibleModule] = []
    if actnorm:
        layers.append(ActNorm(channels, eps=actnorm_eps, max_scale=actnorm_max_scale))
    layers.append(_permutation(permutation, channels, generator))
    if coupling == "additive":
        extra = {k: v for k, v in coupling_args.items() if k in ("zero_init", "net_actnorm")}
        layers.append(AdditiveCoupling(channels, hidden=hidden, net=net, **extra))  # type: ignore[arg-type]
    elif coupling == "affine":
        layers.append(AffineCoupling(channels, hidden=hidden, net=net, **coupling_args))  # type: ignore[arg-type]
    else:
        raise ValueError(f"coupling must be 'additive' or 'affine', got {coupling!r}")
    return layers


class Glow(Flow):
    r"""Glow for images ``(B, C, H, W)``: ``levels`` x (squeeze, ``depth`` flow steps, split).

    Each flow step is ``ActNorm -> 1x1 conv (or permutation) -> coupling`` (:func:`flow_step`). With
    ``split=True`` half of the channels leave the flow after every level but the last (:class:`~invertible.Split`,
    with a learned conditional prior when ``learned_prior``); with ``split=False`` all dimensions flow through
    every step (the paper's INN classifier). ``learn_top`` adds a learned per-channel Gaussian at the top
    (an identity-initialised ActNorm, so the base stays ``N(0, I)``).

    The output ``z`` has shape ``(C 4^L, H / 2^L, W / 2^L)`` per sample and holds every latent, so
    ``inverse(z)`` reconstructs exactly; :meth:`~Flow.log_prob` is Glow's log-likelihood (split priors included)
    and :meth:`~Flow.sample` draws from the model. Lipschitz bounds exist only with additive couplings and no
    learned priors.

    Args:
        in_shape: ``(C, H, W)``; ``H`` and ``W`` must be divisible by ``2^levels``.
        levels, depth, hidden: ``L``, ``K`` and the coupling network width.
        coupling: ``"affine"`` or ``"additive"``.
        permutation: one of :data:`PERMUTATIONS`.
        actnorm, actnorm_eps, actnorm_max_scale: ActNorm at the start of each step and its stabilisers.
        split, learned_prior, learn_top: multi-scale structure and learned priors.
        seed: seeds the random permutations and orthogonal initialisations.
        coupling_args: ``scale_fn``, ``eps``, ``shift``, ``max_scale``, ``order``, ``zero_init``, ``net_actnorm``.

    Example:
        >>> model = Glow((1, 8, 8), levels=2, depth=2, hidden=16)
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
        hidden: int = 512,
        coupling: str = "affine",
        permutation: str = "lu",
        actnorm: bool = True,
        actnorm_eps: float = 0.0,
        actnorm_max_scale: float | None = None,
        split: bool = True,
        learned_prior: bool = True,
        learn_top: bool = False,
        seed: int = 0,
        **coupling_args: object,
    ) -> None:
        channels, height, width = in_shape
        if levels < 1 or depth < 1:
            raise ValueError(f"Glow: levels and depth must be >= 1, got levels={levels}, depth={depth}")
        if height % 2**levels or width % 2**levels:
            raise ValueError(
                f"Glow: {levels} levels halve the image {levels} times, so height and width must be divisible "
                f"by {2 ** levels}; got {height}x{width} (pad the images or use fewer levels)"
            )
        generator = torch.Generator().manual_seed(seed)
        layers: list[InvertibleModule] = []
        total, active = channels, channels

        def add(layer: InvertibleModule) -> None:
            layers.append(layer if active == total else Partial(layer, active))

        for level in range(levels):
            layers.append(Squeeze())
            total, active, height, width = 4 * total, 4 * active, height // 2, width // 2
            for _ in range(depth):
                for layer in flow_step(active, hidden=hidden, coupling=coupling, permutation=permutation,
                                       actnorm=actnorm, actnorm_eps=actnorm_eps,
                                       actnorm_max_scale=actnorm_max_scale, generator=generator, **coupling_args):
                    add(layer)
            if split and level < levels - 1:
                add(Split(active, learned=learned_prior))
                active = active // 2
        if learn_top:
            add(ActNorm(active, data_init=False))
        super().__init__(*layers, latent_shape=(total, height, width), in_shape=tuple(in_shape))
