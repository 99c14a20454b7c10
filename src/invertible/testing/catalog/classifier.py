"""Registered examples of the INN classifier's flow (a Glow without splits, ActNorm left out at 1x1 levels)."""

from __future__ import annotations

from typing import Any

from ...base import InvertibleModule
from ...models import Flow, classifier_flow
from ..registry import randomize_, register
from .core import sample_input


def _space() -> Any:
    from hypothesis import strategies as st

    from ..strategies import batch_sizes, scales, seeds

    return {"coupling": st.sampled_from(["affine", "additive"]), "permutation": st.sampled_from(["conv", "shuffle"]),
            "inj_channels": st.integers(1, 2), "batch": batch_sizes(), "seed": seeds(),
            "scale": scales((0.5, 1.0, 2.0))}


@register("classifier_flow", layer=Flow,
          configs=[{"coupling": c, "permutation": p} for c in ("affine", "additive") for p in ("conv", "shuffle")],
          space=_space)
def classifier_flow_example(coupling: str = "affine", permutation: str = "conv", inj_channels: int = 1,
                            batch: int = 2, seed: int = 0, scale: float = 1.0) -> tuple[InvertibleModule, Any]:
    # two levels on 4x4 images: the second level works on 1x1 maps, where the ActNorm is left out
    flow = classifier_flow((inj_channels, 4, 4), levels=2, depth=1, hidden=6, coupling=coupling,
                           permutation=permutation, actnorm=True, zero_init=False, seed=seed)
    randomize_(flow, 0.1, seed)
    return flow.double(), sample_input((batch, inj_channels, 4, 4), seed, scale)
