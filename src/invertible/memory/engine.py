"""The autograd function behind memory-saving backprop, for the forward and the inverse direction.

Forward (under ``no_grad``): run the layers and keep only the output and the summed log-det. Backward: walk
the layers from the output back to the input; for each, rebuild its input from its output
(:func:`~invertible.memory.rebuild.relinearize`), recompute its local graph and pull the incoming gradients of
the output *and* of the per-sample log-det through it. Parameter gradients are returned to autograd as the
gradients of the function's parameter inputs, so ``loss.backward()`` fills ``.grad`` as usual and gradient
hooks (DDP) fire as usual.

The inverse direction (``x = f^-1(z)``) is the mirror image: its backward walks the layers from first to last,
rebuilding each inverse's input with the forward map (the paper's ``gradient_forward``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..base import InvertibleModule, _nested, allow_nonfinite, logdet_zeros
from .check import CheckRun, GradientMismatchWarning
from .rebuild import relinearize

__all__ = ["MemorySavingFunction", "Plan", "run_layers"]


def run_layers(layers: list[InvertibleModule], x: Tensor, direction: str) -> tuple[Tensor, Tensor]:
    """Apply the layers in order (``"forward"``) or their inverses in reverse order; sum the log-dets."""
    total = logdet_zeros(x)
    for layer in layers if direction == "forward" else reversed(layers):
        x, logdet = layer(x) if direction == "forward" else layer.inverse(x)
        total = total + logdet
    return x, total


@dataclass
class Plan:
    """What one memory-saving call needs in its backward pass.

    ``slots[k]`` maps layer ``k``'s parameters (in ``layer.parameters()`` order) to positions in the parameter
    tuple given to the autograd function (shared parameters get one position).
    """

    layers: list[InvertibleModule]
    slots: list[list[int]]
    direction: str
    check: CheckRun | None = None

    @staticmethod
    def build(layers: list[InvertibleModule], direction: str, check: CheckRun | None
              ) -> tuple[Plan, list[Tensor]]:
        params: list[Tensor] = []
        seen: dict[int, int] = {}
        slots = []
        for layer in layers:
            slot = []
            for p in layer.parameters():
                if id(p) not in seen:
                    seen[id(p)] = len(params)
                    params.append(p)
                slot.append(seen[id(p)])
            slots.append(slot)
        return Plan(layers, slots, direction, check), params


class MemorySavingFunction(torch.autograd.Function):
    """``(y, logdet) = apply(plan, x, *params)``: the layers of ``plan``, applied keeping no activations."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, plan: Plan, x: Tensor, *params: Tensor
    ) -> tuple[Tensor, Tensor]:
        ctx.set_materialize_grads(False)
        with torch.no_grad():
            y, logdet = run_layers(plan.layers, x, plan.direction)
        if y.data_ptr() == x.data_ptr():  # an identity flow: never hand autograd its own input back
            y = y.clone()
        ctx.plan = plan
        ctx.params = params
        ctx.versions = [p._version for p in params]
        ctx.save_for_backward(y, x if plan.check is not None else None)
        return y, logdet

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_y: Tensor | None, grad_logdet: Tensor | None) -> tuple[Tensor | None, ...]:
        plan: Plan = ctx.plan
        y, x_saved = ctx.saved_tensors
        n_params = len(ctx.params)
        needs = ctx.needs_input_grad
        need_x = bool(needs[1])
        # the layers' parameters as they are now (under functional_call the function's inputs were stand-ins)
        current = [list(layer.parameters()) for layer in plan.layers]
        _check_versions(ctx, plan, current)
        if grad_y is None and grad_logdet is None:
            return (None, None, *([None] * n_params))
        with _nested(), allow_nonfinite():
            full = plan.check is not None
            grads, grad_x, rebuilt = _memory_saving_backward(plan, current, y, grad_y, grad_logdet, need_x,
                                                             needs, full)
            if plan.check is not None:
                grads, grad_x = _self_check(plan, current, x_saved, grad_y, grad_logdet, need_x, needs, grads,
                                            grad_x, rebuilt)
            else:
                _warn_if_nonfinite(plan, grads, grad_x)
        return (None, grad_x if need_x else None, *[g if needs[2 + i] else None for i, g in enumerate(grads)])


def _check_versions(ctx: Any, plan: Plan, current: list[list[Tensor]]) -> None:
    # A parameter changed in place between forward and backward (an optimiser step, say) would make the
    # rebuilt activations silently wrong. Under functional_call the function's inputs were stand-ins: only the
    # same tensor counts.
    for layer, params, slot in zip(plan.layers, current, plan.slots):
        for p, i in zip(params, slot):
            if p is ctx.params[i] and p._version != ctx.versions[i]:
                raise RuntimeError(
                    f"memory-saving backward: a parameter of {type(layer).__name__} was modified in place "
                    "after the forward pass; call backward() before optimizer.step()")


def _memory_saving_backward(plan: Plan, current: list[list[Tensor]], y: Tensor, grad_y: Tensor | None,
                            grad_logdet: Tensor | None, need_x: bool, needs: tuple[bool, ...], full: bool
                            ) -> tuple[list[Tensor | None], Tensor | None, Tensor | None]:
    n = len(plan.layers)
    wanted = [[(p, i) for p, i in zip(params, slot) if p.requires_grad and needs[2 + i]]
              for params, slot in zip(current, plan.slots)]
    # backward order: from the output side to the input side (the inverse applies the layers last to first)
    steps = list(range(n - 1, -1, -1)) if plan.direction == "forward" else list(range(n))
    if not (need_x or full):  # nothing below the last layer with parameters needs rebuilding
        with_params = [j for j, k in enumerate(steps) if wanted[k]]
        steps = steps[: with_params[-1] + 1] if with_params else []
    grads: list[Tensor | None] = [None] * (len(needs) - 2)
    out, g_out = y, grad_y
    for j, k in enumerate(steps):
        need_in = need_x or j < len(steps) - 1
        r = relinearize(plan.layers[k], out, plan.direction, need_in)
        outs, gouts = [], []
        if g_out is not None and r.outputs[0].requires_grad:
            outs.append(r.outputs[0])
            gouts.append(g_out)
        if grad_logdet is not None and r.outputs[1].requires_grad:
            outs.append(r.outputs[1])
            gouts.append(grad_logdet)
        leaves = list(r.leaves) if need_in else []
        wrt = leaves + [p for p, _ in wanted[k]]
        got = torch.autograd.grad(outs, wrt, gouts, allow_unused=True) if outs and wrt else (None,) * len(wrt)
        for (_, i), g in zip(wanted[k], got[len(leaves):]):
            if g is not None:
                grads[i] = g if grads[i] is None else grads[i] + g
        if need_in:
            g_out = r.join([g if g is not None else torch.zeros_like(leaf) for g, leaf in zip(got, leaves)])
        out = r.rebuilt
    complete = need_x or full
    return grads, (g_out if need_x else None), (out if complete else None)


def _unique_params(plan: Plan, current: list[list[Tensor]]) -> list[Tensor]:
    """The current parameters in the order of the function's parameter inputs."""
    unique: dict[int, Tensor] = {}
    for params, slot in zip(current, plan.slots):
        for p, i in zip(params, slot):
            unique.setdefault(i, p)
    return [unique[i] for i in range(len(unique))]


def _standard_backward(plan: Plan, params: list[Tensor], x: Tensor, grad_y: Tensor | None,
                       grad_logdet: Tensor | None, need_x: bool, needs: tuple[bool, ...]
                       ) -> tuple[list[Tensor | None], Tensor | None]:
    """The same backward pass by standard autograd: the forward re-run from the saved input with a graph."""
    leaf = x.detach().requires_grad_(need_x)
    with torch.enable_grad():
        y, logdet = run_layers(plan.layers, leaf, plan.direction)
    outs, gouts = [], []
    if grad_y is not None and y.requires_grad:
        outs.append(y)
        gouts.append(grad_y)
    if grad_logdet is not None and logdet.requires_grad:
        outs.append(logdet)
        gouts.append(grad_logdet)
    slots = [i for i, p in enumerate(params) if p.requires_grad and needs[2 + i]]
    wrt = ([leaf] if need_x else []) + [params[i] for i in slots]
    got = torch.autograd.grad(outs, wrt, gouts, allow_unused=True) if outs and wrt else (None,) * len(wrt)
    grads: list[Tensor | None] = [None] * len(params)
    for i, g in zip(slots, got[int(need_x):]):
        grads[i] = g
    grad_x = (got[0] if got[0] is not None else torch.zeros_like(x)) if need_x else None
    return grads, grad_x


def _self_check(plan: Plan, current: list[list[Tensor]], x: Tensor, grad_y: Tensor | None,
                grad_logdet: Tensor | None, need_x: bool, needs: tuple[bool, ...], grads: list[Tensor | None],
                grad_x: Tensor | None, rebuilt: Tensor | None) -> tuple[list[Tensor | None], Tensor | None]:
    assert plan.check is not None
    params = _unique_params(plan, current)
    std, std_x = _standard_backward(plan, params, x, grad_y, grad_logdet, need_x, needs)
    recon = None
    if rebuilt is not None:
        flat = x.reshape(x.shape[0], -1)
        scale = flat.norm(dim=1).clamp_min(torch.finfo(x.dtype).tiny)
        err = (rebuilt.reshape(flat.shape) - flat).norm(dim=1) / scale
        recon = float(err.max()) if bool(torch.isfinite(err).all()) else math.inf
    inputs = (grad_x, std_x) if grad_x is not None and std_x is not None else None
    fallback = plan.check.record(plan.direction, params, grads, std, inputs, recon)
    return (std, std_x) if fallback else (grads, grad_x)


def _warn_if_nonfinite(plan: Plan, grads: list[Tensor | None], grad_x: Tensor | None) -> None:
    parts = [g.sum() for g in grads if g is not None] + ([grad_x.sum()] if grad_x is not None else [])
    if parts and not bool(torch.isfinite(torch.stack(parts).sum())):
        warnings.warn(
            f"memory-saving backward ({plan.direction}) produced non-finite gradients: the inverse "
            "exploded while rebuilding the activations. Check with MemorySaving.checking() "
            "(on_mismatch='fallback' uses standard gradients), regularize the flow, or train without memory "
            "saving.",
            GradientMismatchWarning, stacklevel=2)
