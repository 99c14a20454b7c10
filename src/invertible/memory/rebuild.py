"""Rebuilding a layer's input from its output and re-creating its local graph (memory-saving backprop).

For one layer ``f`` and the output ``y = f(x)`` that the memory-saving pass kept, :func:`relinearize` returns a
:class:`~invertible.base.Relinearized`:

- ``rebuilt``: the input ``x = f^-1(y)``, computed without a graph (it is the next layer's output to rebuild
  from);
- ``outputs``: ``(f(x), log|det J_f(x)|)`` recomputed *with* a graph from leaf tensors that hold ``x``;
- ``leaves`` and ``join``: the leaves whose gradients make up the gradient with respect to ``x``.

``direction="inverse"`` does the same for the inverse map: given ``x = f^-1(u)`` it rebuilds ``u = f(x)`` and
re-creates the graph of ``f^-1`` at ``u`` (the backward pass of a memory-saving *inverse*, needed by the
inverse finite-difference regularizer).

Each layer does this itself, through the ``_relinearize`` hook of :class:`~invertible.InvertibleModule`. The
generic rule works for every layer with an analytic inverse: one inverse (or forward) call without a graph, then
one call of the map with a graph. Couplings fuse the two (their network runs once); ``Partial`` and ``Inverse``
delegate to the layer they wrap. Which units are walked is the ``_memory_saving_layers`` hook: containers list
their layers, every other layer is one unit.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor

from ..base import InvertibleModule, Relinearized

__all__ = ["Relinearized", "flatten_layers", "relinearize"]


def flatten_layers(module: InvertibleModule) -> Iterator[InvertibleModule]:
    """The units memory saving walks through, in application order: nested containers
    (:class:`~invertible.Sequential`, a memory-saving wrapper) expanded, any other layer as one unit."""
    yield from module._memory_saving_layers()


def relinearize(layer: InvertibleModule, out: Tensor, direction: str, need_input_grad: bool) -> Relinearized:
    """Rebuild ``layer``'s input from ``out`` and recompute its local graph (``layer._relinearize``).

    ``direction`` says whose output ``out`` is: the layer's (``"forward"``) or its inverse's (``"inverse"``).
    """
    if direction not in ("forward", "inverse"):
        raise ValueError(f"direction must be 'forward' or 'inverse', got {direction!r}")
    return layer._relinearize(out, direction, need_input_grad)
