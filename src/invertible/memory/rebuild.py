"""Rebuilding a layer's input from its output and re-creating its local graph (memory-saving backprop).

For one layer ``f`` and the output ``y = f(x)`` that the memory-saving pass kept, :func:`relinearize` returns

- ``rebuilt``: the input ``x = f^-1(y)``, computed without a graph (it is the next layer's output to rebuild
  from);
- ``outputs``: ``(f(x), log|det J_f(x)|)`` recomputed *with* a graph from leaf tensors that hold ``x``;
- ``leaves`` and ``join``: the leaves whose gradients make up the gradient with respect to ``x``.

``direction="inverse"`` does the same for the inverse map: given ``x = f^-1(u)`` it rebuilds ``u = f(x)`` and
re-creates the graph of ``f^-1`` at ``u`` (the backward pass of a memory-saving *inverse*, needed by the
inverse finite-difference regularizer).

The generic rule works for every layer with an analytic inverse: one inverse (or forward) call without a
graph, then one call of the map with a graph. Couplings have a fused rule: the conditioning half passes
through unchanged, so the coupling network runs once, with a graph, and serves both the rebuild and the local
graph (three network evaluations per step instead of four: about 1.33x the cost of standard backprop, not
1.67x).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..base import Inverse, InvertibleModule, Sequential, logdet_zeros
from ..layers import AdditiveCoupling, AffineCoupling, Partial

__all__ = ["Relinearized", "flatten_layers", "relinearize"]


@dataclass
class Relinearized:
    """One layer's rebuilt input and its recomputed local graph (see the module docstring)."""

    rebuilt: Tensor
    outputs: tuple[Tensor, Tensor]
    leaves: tuple[Tensor, ...]
    join: Callable[[Sequence[Tensor]], Tensor]


def flatten_layers(module: InvertibleModule) -> Iterator[InvertibleModule]:
    """The layers of ``module`` in application order, nested :class:`~invertible.Sequential` expanded.

    Any other layer (``Partial``, ``Inverse``, a coupling, ...) is one unit. A memory-saving wrapper is looked
    through (its ``flow``).
    """
    inner = getattr(module, "memory_saving_flow", None)
    if isinstance(inner, InvertibleModule):
        yield from flatten_layers(inner)
    elif isinstance(module, Sequential):
        for layer in module:
            yield from flatten_layers(layer)
    else:
        yield module


def _leaf(t: Tensor, need: bool) -> Tensor:
    return t.detach().requires_grad_(need)


def _generic(layer: InvertibleModule, out: Tensor, direction: str, need: bool) -> Relinearized:
    apply, undo = (layer.forward, layer.inverse) if direction == "forward" else (layer.inverse, layer.forward)
    with torch.no_grad():
        rebuilt = undo(out)[0]
    leaf = _leaf(rebuilt, need)
    with torch.enable_grad():
        outputs = apply(leaf)
    return Relinearized(rebuilt, outputs, (leaf,), lambda grads: grads[0])


def _coupling(layer: AffineCoupling | AdditiveCoupling, out: Tensor, direction: str, need: bool
              ) -> Relinearized:
    # The conditioning half a1 is the same on both sides, so h = net(a1) is computed once, with a graph: its
    # detached value rebuilds the other half, and the graph carries the parameter and input gradients.
    a1, a2 = layer._split(out)
    c1 = _leaf(a1, need)
    affine = isinstance(layer, AffineCoupling)
    with torch.enable_grad():
        if affine:
            s, log_s, t = layer.scale_shift(c1)  # type: ignore[union-attr]
        else:
            t = layer._net(c1)
    glow = affine and layer.order == "glow"  # type: ignore[union-attr]
    with torch.no_grad():
        if not affine:
            other = a2 - t if direction == "forward" else a2 + t
        elif direction == "forward":  # a2 = y2: rebuild x2
            other = a2 / s - t if glow else (a2 - t) / s
        else:  # a2 = x2: rebuild y2
            other = (a2 + t) * s if glow else a2 * s + t
    c2 = _leaf(other, need)
    with torch.enable_grad():
        if not affine:
            new = c2 + t if direction == "forward" else c2 - t
            logdet = logdet_zeros(out)
        elif direction == "forward":
            new = (c2 + t) * s if glow else c2 * s + t
            logdet = log_s.flatten(1).sum(1)
        else:
            new = c2 / s - t if glow else (c2 - t) / s
            logdet = -log_s.flatten(1).sum(1)
        result = layer._merge(c1, new)
    return Relinearized(layer._merge(a1, other), (result, logdet), (c1, c2),
                        lambda grads: layer._merge(grads[0], grads[1]))


def _partial(layer: Partial, out: Tensor, direction: str, need: bool) -> Relinearized:
    active, passive = out[:, : layer.active], out[:, layer.active :]
    inner = relinearize(layer.layer, active, direction, need)
    rest = _leaf(passive, need)
    with torch.enable_grad():
        result = torch.cat([inner.outputs[0], rest], dim=1)
    n = len(inner.leaves)
    rebuilt = torch.cat([inner.rebuilt, passive], dim=1)
    return Relinearized(rebuilt, (result, inner.outputs[1]), (*inner.leaves, rest),
                        lambda grads: torch.cat([inner.join(grads[:n]), grads[n]], dim=1))


def _inverse(layer: Inverse, out: Tensor, direction: str, need: bool) -> Relinearized:
    return relinearize(layer.layer, out, "inverse" if direction == "forward" else "forward", need)


_RULES: dict[type, Callable[..., Relinearized]] = {
    AffineCoupling: _coupling,
    AdditiveCoupling: _coupling,
    Partial: _partial,
    Inverse: _inverse,
}


def relinearize(layer: InvertibleModule, out: Tensor, direction: str, need_input_grad: bool) -> Relinearized:
    """Rebuild ``layer``'s input from ``out`` and recompute its local graph.

    ``direction`` says whose output ``out`` is: the layer's (``"forward"``) or its inverse's (``"inverse"``).

    The fused rules match the exact class only (a subclass that overrides the map falls back to the generic
    rule).
    """
    if direction not in ("forward", "inverse"):
        raise ValueError(f"direction must be 'forward' or 'inverse', got {direction!r}")
    rule = _RULES.get(type(layer), _generic)
    return rule(layer, out, direction, need_input_grad)
