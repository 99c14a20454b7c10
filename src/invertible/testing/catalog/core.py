"""Registered examples of the core layers (every configuration the contract suite must cover)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ... import layers as L
from ...base import InvertibleModule, Sequential
from ..registry import randomize_, register

SHAPES = ("image", "flat")


def sample_input(shape: tuple[int, ...], seed: int, scale: float = 1.0, offset: float = 0.0) -> Tensor:
    """A float64 input ``offset + scale * N(0, I)`` of the given shape, fixed by ``seed``."""
    generator = torch.Generator().manual_seed(10_000 + seed)
    return offset + scale * torch.randn(shape, generator=generator, dtype=torch.float64)


def input_shape(kind: str, batch: int, channels: int, size: int) -> tuple[int, ...]:
    return (batch, channels, size, size) if kind == "image" else (batch, channels)


def _space(**extra: Any) -> Any:
    from hypothesis import strategies as st

    from ..strategies import batch_sizes, scales, seeds

    base = {
        "batch": batch_sizes(),
        "channels": st.integers(2, 5),
        "size": st.sampled_from([2, 4]),
        "seed": seeds(),
        "scale": scales(),
    }
    base.update({k: (v if hasattr(v, "example") else st.sampled_from(v)) for k, v in extra.items()})
    return base


def _done(module: InvertibleModule, x_shape: tuple[int, ...], seed: int, scale: float, noise: float = 0.3,
          offset: float = 0.0) -> tuple[InvertibleModule, Tensor]:
    randomize_(module, noise, seed)
    return module.double(), sample_input(x_shape, seed, scale, offset)


@register("actnorm", layer=L.ActNorm,
          configs=[{"kind": k, "variant": v} for k in SHAPES for v in ("plain", "eps", "max_scale", "identity")],
          space=lambda: _space(kind=SHAPES, variant=("plain", "eps", "max_scale", "identity")))
def actnorm(kind: str = "image", variant: str = "plain", batch: int = 3, channels: int = 3, size: int = 4,
            seed: int = 0, scale: float = 3.0) -> tuple[InvertibleModule, Tensor]:
    args = {"plain": {}, "eps": {"eps": 0.1}, "max_scale": {"max_scale": 5.0}, "identity": {"data_init": False}}
    module = L.ActNorm(channels, **args[variant])  # type: ignore[arg-type]
    # data-dependent variants initialise from an input with non-unit mean and std on the first call
    return _done(module, input_shape(kind, batch, channels, size), seed, scale, offset=1.5)


@register("invertible_1x1_conv", layer=L.Invertible1x1Conv,
          configs=[{"kind": k, "lu": lu} for k in SHAPES for lu in (False, True)],
          space=lambda: _space(kind=SHAPES, lu=(False, True)))
def conv1x1(kind: str = "image", lu: bool = False, batch: int = 3, channels: int = 4, size: int = 4, seed: int = 0,
            scale: float = 1.0) -> tuple[InvertibleModule, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return _done(L.Invertible1x1Conv(channels, lu=lu, generator=generator), input_shape(kind, batch, channels, size),
                 seed, scale)


@register("permutation", layer=L.Permutation,
          configs=[{"kind": k, "order": o} for k in SHAPES for o in ("shuffle", "reverse")],
          space=lambda: _space(kind=SHAPES, order=("shuffle", "reverse")))
def permutation(kind: str = "image", order: str = "shuffle", batch: int = 3, channels: int = 5, size: int = 2,
                seed: int = 0, scale: float = 1.0) -> tuple[InvertibleModule, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return _done(L.Permutation(channels, kind=order, generator=generator), input_shape(kind, batch, channels, size),
                 seed, scale)


def _net(kind: str) -> str:
    return "conv" if kind == "image" else "mlp"


@register("additive_coupling", layer=L.AdditiveCoupling,
          configs=[{"kind": k, "swap": s, "net_actnorm": a} for k in SHAPES for s in (False, True)
                   for a in ((False, True) if k == "image" else (False,))],
          space=lambda: _space(kind=SHAPES, swap=(False, True)))
def additive(kind: str = "image", swap: bool = False, net_actnorm: bool = False, batch: int = 3, channels: int = 4,
             size: int = 4, seed: int = 0, scale: float = 1.0) -> tuple[InvertibleModule, Tensor]:
    module = L.AdditiveCoupling(channels, hidden=6, net=_net(kind), swap=swap,
                                net_actnorm=net_actnorm and kind == "image")
    return _done(module, input_shape(kind, batch, channels, size), seed, scale)


@register("affine_coupling", layer=L.AffineCoupling,
          configs=[{"scale_fn": f, "order": o} for f in L.SCALE_FNS for o in ("glow", "realnvp")]
          + [{"kind": "flat", "scale_fn": f} for f in L.SCALE_FNS] + [{"swap": True}, {"net_actnorm": True}],
          space=lambda: _space(kind=SHAPES, scale_fn=L.SCALE_FNS, order=("glow", "realnvp"), swap=(False, True)))
def affine(kind: str = "image", scale_fn: str = "sigmoid", order: str = "glow", swap: bool = False,
           net_actnorm: bool = False, batch: int = 3, channels: int = 4, size: int = 4, seed: int = 0,
           scale: float = 1.0) -> tuple[InvertibleModule, Tensor]:
    module = L.AffineCoupling(channels, hidden=6, net=_net(kind), scale_fn=scale_fn, order=order, swap=swap,
                              eps=0.05, max_scale=3.0, net_actnorm=net_actnorm and kind == "image")
    return _done(module, input_shape(kind, batch, channels, size), seed, scale)


@register("squeeze", layer=L.Squeeze, configs=[{}], space=lambda: _space())
def squeeze(batch: int = 2, channels: int = 3, size: int = 4, seed: int = 0, scale: float = 1.0
            ) -> tuple[InvertibleModule, Tensor]:
    return _done(L.Squeeze(), (batch, channels, size, size), seed, scale)


@register("split", layer=L.Split, configs=[{"kind": k, "learned": le} for k in SHAPES for le in (True, False)],
          space=lambda: _space(kind=SHAPES, learned=(True, False)))
def split(kind: str = "image", learned: bool = True, batch: int = 3, channels: int = 4, size: int = 4, seed: int = 0,
          scale: float = 1.0) -> tuple[InvertibleModule, Tensor]:
    module = L.Split(channels, learned=learned, image=kind == "image")
    return _done(module, input_shape(kind, batch, channels, size), seed, scale)


@register("partial", layer=L.Partial, configs=[{"kind": k} for k in SHAPES], space=lambda: _space(kind=SHAPES))
def partial(kind: str = "image", batch: int = 3, channels: int = 4, size: int = 4, seed: int = 0, scale: float = 1.0
            ) -> tuple[InvertibleModule, Tensor]:
    inner = L.AffineCoupling(channels, hidden=6, net=_net(kind))
    module = L.Partial(inner, channels)
    return _done(module, input_shape(kind, batch, channels + 2, size), seed, scale)


@register("dequantize", layer=L.Dequantize, configs=[{"kind": k} for k in SHAPES], space=lambda: _space(kind=SHAPES))
def dequantize(kind: str = "image", batch: int = 3, channels: int = 3, size: int = 4, seed: int = 0,
               scale: float = 1.0) -> tuple[InvertibleModule, Tensor]:
    module = L.Dequantize(256, offset=-0.5).eval()
    x = sample_input(input_shape(kind, batch, channels, size), seed, scale * 50, 128.0)
    return module.double(), x


@register("logit", layer=L.Logit, configs=[{"kind": k} for k in SHAPES], space=lambda: _space(kind=SHAPES))
def logit(kind: str = "image", batch: int = 3, channels: int = 3, size: int = 4, seed: int = 0, scale: float = 1.0
          ) -> tuple[InvertibleModule, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(input_shape(kind, batch, channels, size), generator=generator, dtype=torch.float64)
    return L.Logit(0.05).double(), x


@register("sequential", layer=Sequential, configs=[{"kind": k} for k in SHAPES], space=lambda: _space(kind=SHAPES))
def sequential(kind: str = "image", batch: int = 3, channels: int = 4, size: int = 4, seed: int = 0,
               scale: float = 1.0) -> tuple[InvertibleModule, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    module = Sequential(
        L.ActNorm(channels),
        L.Invertible1x1Conv(channels, lu=True, generator=generator),
        L.AffineCoupling(channels, hidden=6, net=_net(kind)),
        L.Permutation(channels, kind="reverse"),
        L.AdditiveCoupling(channels, hidden=6, net=_net(kind)),
    )
    return _done(module, input_shape(kind, batch, channels, size), seed, scale, noise=0.2)
