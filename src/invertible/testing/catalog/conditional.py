"""Registered conditional examples: every layer and model that takes a context, with a context per sample.

Builders return ``(module, x, context)`` (``register(..., context=True)``); the context is an ``N(0, I)`` draw of
``features`` entries per sample, fixed by the seed: a vector ``(B, F)``, or, for image couplings with
``context_kind="spatial"``, a map ``(B, F, H, W)``. ``check_invertible(module, x, context=context)`` checks them at
that context (round trips, log-dets and bounds in ``x``, batch independence across contexts, and that the output
depends on the context); ``tests/property/test_conditional_contract.py`` runs every check over this catalogue and
``tests/numerical/test_conditional_reference.py`` holds it against the mpmath reference.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ... import layers as L
from ...base import InvertibleModule, Sequential
from ...models import DenseFlow, Flow, Glow, classifier_flow
from ..registry import randomize_, register
from .core import MASKS, coupling_mask, input_shape, sample_input
from .spline import _spline_args

SHAPES = ("flat", "image")
CONTEXTS = ("vector", "spatial")
Case = tuple[InvertibleModule, Tensor, Tensor]


def sample_context(batch: int, features: int, seed: int, spatial: tuple[int, ...] = ()) -> Tensor:
    """A float64 context ``N(0, I)`` of shape ``(batch, features, *spatial)``, fixed by ``seed``."""
    generator = torch.Generator().manual_seed(20_000 + seed)
    return torch.randn((batch, features, *spatial), generator=generator, dtype=torch.float64)


def _space(**choices: Any) -> Any:
    from hypothesis import strategies as st

    space = {"batch": st.integers(1, 3), "seed": st.integers(0, 2**16), "scale": st.sampled_from([0.5, 1.0, 2.0]),
             "features": st.integers(1, 3)}
    space.update({k: v if hasattr(v, "example") else st.sampled_from(v) for k, v in choices.items()})
    return space


def _coupling_case(cls: type, kind: str, mask: str, context_kind: str, features: int, channels: int, size: int,
                   batch: int, seed: int, scale: float, noise: float, **args: Any) -> Case:
    module = cls(channels, hidden=6, net="conv" if kind == "image" else "mlp", mask=coupling_mask(mask, channels),
                 context=features, **args)
    randomize_(module, noise, seed)
    x = sample_input(input_shape(kind, batch, channels, size), seed, scale)
    spatial = (size, size) if kind == "image" and context_kind == "spatial" else ()
    return module.double(), x, sample_context(batch, features, seed, spatial)


def _coupling_configs() -> list[dict[str, Any]]:
    return ([{"kind": k, "mask": m} for k in SHAPES for m in MASKS]
            + [{"kind": "image", "context_kind": "spatial"}, {"kind": "image", "mask": "checkerboard",
                                                              "context_kind": "spatial"}])


def _coupling_space() -> Any:
    return _space(kind=SHAPES, mask=MASKS, context_kind=CONTEXTS, channels=(2, 3, 4), size=(2, 3))


@register("conditional_additive_coupling", layer=L.AdditiveCoupling, context=True, configs=_coupling_configs(),
          space=_coupling_space)
def conditional_additive(kind: str = "flat", mask: str = "halves", context_kind: str = "vector", features: int = 2,
                         channels: int = 4, size: int = 4, batch: int = 3, seed: int = 0, scale: float = 1.0) -> Case:
    return _coupling_case(L.AdditiveCoupling, kind, mask, context_kind, features, channels, size, batch, seed, scale,
                          0.3)


@register("conditional_affine_coupling", layer=L.AffineCoupling, context=True,
          configs=_coupling_configs() + [{"scale_fn": f, "order": "realnvp"} for f in ("exp", "tanh_exp")],
          space=lambda: {**_coupling_space(), **_space(scale_fn=L.SCALE_FNS, order=("glow", "realnvp"))})
def conditional_affine(kind: str = "flat", mask: str = "halves", context_kind: str = "vector", features: int = 2,
                       scale_fn: str = "sigmoid", order: str = "glow", channels: int = 4, size: int = 4,
                       batch: int = 3, seed: int = 0, scale: float = 1.0) -> Case:
    return _coupling_case(L.AffineCoupling, kind, mask, context_kind, features, channels, size, batch, seed, scale,
                          0.3, scale_fn=scale_fn, order=order, eps=0.05, max_scale=3.0)


@register("conditional_spline_coupling", layer=L.SplineCoupling, context=True,
          configs=_coupling_configs() + [{"settings": "tight"}],
          space=lambda: {**_coupling_space(), **_space(settings=("default", "tight"), bins=(2, 3, 5))})
def conditional_spline(kind: str = "flat", mask: str = "halves", context_kind: str = "vector", features: int = 2,
                       bins: int = 4, settings: str = "default", channels: int = 4, size: int = 4, batch: int = 3,
                       seed: int = 0, scale: float = 1.5) -> Case:
    # parameter noise as the unconditional spline coupling examples (0.4 on vectors, 0.2 on images; see spline.py)
    return _coupling_case(L.SplineCoupling, kind, mask, context_kind, features, channels, size, batch, seed, scale,
                          0.2 if kind == "image" else 0.4, **_spline_args(bins, 2.0, settings))


def _order(order: str, features: int, seed: int) -> Any:
    return torch.randperm(features, generator=torch.Generator().manual_seed(seed)) if order == "shuffle" else order


@register("conditional_maf_affine", layer=L.MaskedAffineAutoregressive, context=True,
          configs=[{}, {"order": "reverse"}, {"scale_fn": "tanh_exp"}, {"dims": 1}],
          space=lambda: _space(dims=(1, 2, 4), order=("forward", "reverse", "shuffle"),
                               scale_fn=("exp", "tanh_exp", "sigmoid_eps")))
def conditional_maf_affine(dims: int = 3, order: str = "shuffle", scale_fn: str = "exp", features: int = 2,
                           batch: int = 3, seed: int = 0, scale: float = 1.0) -> Case:
    module = L.MaskedAffineAutoregressive(dims, hidden=8, order=_order(order, dims, seed), scale_fn=scale_fn,
                                          max_scale=3.0, context=features)
    randomize_(module, 0.3, seed)
    return module.double(), sample_input((batch, dims), seed, scale), sample_context(batch, features, seed)


@register("conditional_maf_spline", layer=L.MaskedSplineAutoregressive, context=True,
          configs=[{}, {"order": "reverse"}, {"settings": "tight"}, {"dims": 1}],
          space=lambda: _space(dims=(1, 2, 4), order=("forward", "reverse", "shuffle"), bins=(2, 3, 5),
                               settings=("default", "tight")))
def conditional_maf_spline(dims: int = 3, order: str = "shuffle", bins: int = 4, settings: str = "default",
                           features: int = 2, batch: int = 3, seed: int = 0, scale: float = 1.5) -> Case:
    module = L.MaskedSplineAutoregressive(dims, hidden=8, order=_order(order, dims, seed), context=features,
                                          **_spline_args(bins, 2.0, settings))
    randomize_(module, 0.3, seed)
    return module.double(), sample_input((batch, dims), seed, scale), sample_context(batch, features, seed)


COUPLINGS = ("affine", "additive", "spline")


@register("conditional_dense_flow", layer=DenseFlow, context=True,
          configs=[{"coupling": c} for c in COUPLINGS] + [{"coupling": "spline", "actnorm": False}],
          space=lambda: _space(coupling=COUPLINGS, actnorm=(False, True), dim=(2, 3, 4),
                               permutation=("reverse", "shuffle", "lu")))
def conditional_dense_flow(coupling: str = "affine", actnorm: bool = True, permutation: str = "reverse", dim: int = 3,
                           features: int = 2, batch: int = 3, seed: int = 0, scale: float = 1.0) -> Case:
    model = DenseFlow(dim, steps=3, hidden=8, coupling=coupling, actnorm=actnorm, permutation=permutation, bins=4,
                      bound=2.0, seed=seed, context=features)
    randomize_(model, 0.2, seed)
    return model.double(), sample_input((batch, dim), seed, scale), sample_context(batch, features, seed)


@register("conditional_glow", layer=Glow, context=True,
          configs=[{"split": s, "coupling": c} for s in (True, False) for c in COUPLINGS],
          space=lambda: _space(split=(True, False), coupling=COUPLINGS, channels=(1, 2)))
def conditional_glow(split: bool = True, coupling: str = "affine", channels: int = 2, features: int = 2,
                     batch: int = 2, seed: int = 0, scale: float = 1.0) -> Case:
    model = Glow((channels, 4, 4), levels=2, depth=1, hidden=6, coupling=coupling, split=split, bins=3, bound=2.0,
                 seed=seed, context=features)
    randomize_(model, 0.1, seed)
    return model.double(), sample_input((batch, channels, 4, 4), seed, scale), sample_context(batch, features, seed)


@register("conditional_classifier_flow", layer=Flow, context=True,
          configs=[{"coupling": c} for c in COUPLINGS],
          space=lambda: _space(coupling=COUPLINGS))
def conditional_classifier_flow(coupling: str = "affine", features: int = 2, batch: int = 2, seed: int = 0,
                                scale: float = 1.0) -> Case:
    flow = classifier_flow((1, 4, 4), levels=2, depth=1, hidden=6, coupling=coupling, permutation="shuffle",
                           actnorm=True, zero_init=False, bins=3, bound=2.0, seed=seed, context=features)
    randomize_(flow, 0.1, seed)
    return flow.double(), sample_input((batch, 1, 4, 4), seed, scale), sample_context(batch, features, seed)


@register("conditional_sequential", layer=Sequential, context=True, configs=[{}],
          space=lambda: _space())
def conditional_sequential(features: int = 2, batch: int = 3, seed: int = 0, scale: float = 1.0) -> Case:
    """Conditional and unconditional layers mixed: the context reaches the conditional ones only."""
    module = Sequential(
        L.ActNorm(4),
        L.SplineCoupling(4, hidden=6, bins=3, bound=2.0, context=features),
        L.Permutation(4, kind="reverse"),
        L.MaskedAffineAutoregressive(4, hidden=6, context=features),
        L.AffineCoupling(4, hidden=6, mask="checkerboard", context=features),
    )
    randomize_(module, 0.2, seed)
    x = sample_input((batch, 4), seed, scale, offset=0.5)
    return module.double(), x, sample_context(batch, features, seed)
