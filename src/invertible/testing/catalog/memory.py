"""Registered examples of the memory-saving wrapper (it must behave as the flow it wraps, as a layer)."""

from __future__ import annotations

from typing import Any

from ...base import InvertibleModule
from ...memory import MemorySaving
from ...models import DenseFlow, Glow
from ..registry import randomize_, register
from .core import sample_input


def _space() -> Any:
    from hypothesis import strategies as st

    from ..strategies import batch_sizes, scales, seeds

    return {"inner": st.sampled_from(["glow", "dense"]), "batch": batch_sizes(), "seed": seeds(),
            "scale": scales((0.5, 1.0, 2.0))}


@register("memory_saving", layer=MemorySaving, configs=[{"inner": "glow"}, {"inner": "dense"}], space=_space)
def memory_saving(inner: str = "glow", batch: int = 2, seed: int = 0, scale: float = 1.0
                  ) -> tuple[InvertibleModule, Any]:
    if inner == "glow":
        # shuffle, not a 1x1 conv: gradcheck perturbs parameters through .data, which the conv's cached
        # inverse (used by the no-grad forward of memory saving) does not notice
        flow: InvertibleModule = Glow((2, 4, 4), levels=2, depth=1, hidden=6, split=True,
                                      permutation="shuffle", seed=seed)
        shape: tuple[int, ...] = (batch, 2, 4, 4)
    else:
        flow = DenseFlow(3, steps=2, hidden=8, seed=seed)
        shape = (batch, 3)
    randomize_(flow, 0.1, seed)
    return MemorySaving(flow).double(), sample_input(shape, seed, scale)
