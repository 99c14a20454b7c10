"""Registered examples of the models (Glow with and without splits, the dense flow)."""

from __future__ import annotations

from typing import Any

from ...base import InvertibleModule
from ...models import PERMUTATIONS, DenseFlow, Glow
from ..registry import randomize_, register
from .core import sample_input

COUPLINGS = ("affine", "additive")


def _space(**choices: Any) -> Any:
    from hypothesis import strategies as st

    from ..strategies import batch_sizes, scales, seeds

    space = {"batch": batch_sizes(), "seed": seeds(), "scale": scales((0.5, 1.0, 2.0))}
    space.update({k: st.sampled_from(v) for k, v in choices.items()})
    return space


@register("glow", layer=Glow,
          configs=[{"split": s, "coupling": c} for s in (True, False) for c in COUPLINGS]
          + [{"permutation": p} for p in PERMUTATIONS if p != "lu"] + [{"learn_top": True, "scale_fn": "exp"}],
          space=lambda: _space(split=(True, False), coupling=COUPLINGS, permutation=PERMUTATIONS,
                               learn_top=(False, True), channels=(1, 2, 3)))
def glow(split: bool = True, coupling: str = "affine", permutation: str = "lu", learn_top: bool = False,
         scale_fn: str = "sigmoid", channels: int = 2, batch: int = 2, seed: int = 0, scale: float = 1.0
         ) -> tuple[InvertibleModule, Any]:
    model = Glow((channels, 4, 4), levels=2, depth=2, hidden=6, coupling=coupling, permutation=permutation,
                 split=split, learn_top=learn_top, scale_fn=scale_fn, seed=seed)
    randomize_(model, 0.1, seed)
    return model.double(), sample_input((batch, channels, 4, 4), seed, scale)


@register("dense_flow", layer=DenseFlow,
          configs=[{"coupling": c, "permutation": p} for c in COUPLINGS for p in ("reverse", "lu")],
          space=lambda: _space(coupling=COUPLINGS, permutation=PERMUTATIONS, dim=(2, 3, 6)))
def dense_flow(coupling: str = "affine", permutation: str = "reverse", dim: int = 3, batch: int = 3, seed: int = 0,
               scale: float = 1.0) -> tuple[InvertibleModule, Any]:
    model = DenseFlow(dim, steps=4, hidden=8, coupling=coupling, permutation=permutation, seed=seed)
    randomize_(model, 0.2, seed)
    return model.double(), sample_input((batch, dim), seed, scale)
