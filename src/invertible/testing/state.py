"""The state-dict part of ``check_invertible``: parameter changes reach the map, and state dicts restore it.

Three questions, each on deep copies of the module (the module itself is never changed):

- ``state_dict_update``: after an in-place change of the *trainable floating-point parameters* (through
  ``p.data``, which does not move autograd's version counter, as an EMA swap or a hand-written update does), the
  copy's inverse must still invert its forward (a stale cached inverse fails), and a second copy that loads the
  first one's state dict must compute the same map (a tensor the state dict does not carry fails). Frozen
  parameters (``requires_grad=False``: fixed permutations, fixed matrices) and integer tensors are left alone:
  they may hold structure that a change would break (a permutation and its inverse stored separately), which is
  no defect of the module.
- ``state_dict_buffers``: floating buffers registered with ``persistent=False`` are changed the same way; if
  that changes the map, a copy restored from the state dict cannot reproduce it (the buffers are named).
- ``state_dict``: loading the original state dict into the changed copy must restore forward and inverse bit
  for bit (a tensor missing from the state dict, or a cache not invalidated on load).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..base import allow_nonfinite
from .grad_mode import no_grad_unless_needed

__all__ = ["check_state_dict_tensors", "non_persistent_buffers", "perturb_", "trainable_parameters"]

Calls = Callable[[nn.Module, Tensor, bool], tuple[Tensor, Tensor]]


def trainable_parameters(module: nn.Module) -> list[tuple[str, Tensor]]:
    """The parameters an optimiser would change: floating point and ``requires_grad``."""
    return [(n, p) for n, p in module.named_parameters() if p.requires_grad and p.is_floating_point()]


def non_persistent_buffers(module: nn.Module) -> list[tuple[str, Tensor]]:
    """Floating-point buffers registered with ``persistent=False`` (not in the state dict), by qualified name."""
    found = []
    for prefix, m in module.named_modules():
        for name in sorted(getattr(m, "_non_persistent_buffers_set", ())):
            t = m._buffers.get(name)
            if t is not None and t.is_floating_point():
                found.append((f"{prefix}.{name}" if prefix else name, t))
    return found


def perturb_(tensors: list[Tensor], seed: int = 0) -> None:
    """Add ``0.01 N(0, 1) + 0.005`` to each tensor through ``.data`` (seeded; enough to expose a stale cache, too
    small to break a map)."""
    generator = torch.Generator().manual_seed(seed)
    for t in tensors:
        noise = torch.randn(t.shape, generator=generator, dtype=torch.float64).to(t.device, t.dtype)
        t.data.add_(0.01 * noise + 0.005)


def _changed_copy(module: nn.Module, which: str) -> tuple[nn.Module, list[str]]:
    clone = copy.deepcopy(module)
    chosen = trainable_parameters(clone) if which == "parameters" else non_persistent_buffers(clone)
    perturb_([t for _, t in chosen])
    return clone, [n for n, _ in chosen]


def check_state_dict_tensors(module: nn.Module, call: Calls, x: Tensor, y: Tensor, x_back: Tensor, tol_x: Tensor,
                             tol_y: Tensor, failures: list[str], measured: dict[str, float],
                             tolerances: dict[str, float], notes: list[str]) -> None:
    """Run the three checks of the module docstring; ``call(m, v, reverse)`` evaluates a copy (with the context).

    Tolerances: the changed copy's round trip within 10x the original's round-trip tolerance or 10x its measured
    round-trip error, whichever is larger (a 1% change moves the conditioning by far less; an inaccurate inverse
    is the round-trip checks' finding, not this one's); copy against loaded copy within twice the evaluation
    tolerances; the restored copy bit for bit.
    """
    batch = x.shape[0]
    norms = lambda t: t.reshape(batch, -1).double().norm(dim=1)  # noqa: E731
    tol_x = torch.maximum(tol_x, torch.nan_to_num(norms(x_back - x), nan=0.0))
    params_changed = None
    for which, key in (("parameters", "state_dict_update"), ("buffers", "state_dict_buffers")):
        clone, names = _changed_copy(module, which)
        if not names:
            if which == "parameters":
                notes.append("state_dict_update skipped: the module has no trainable floating-point parameter")
            continue
        fresh = copy.deepcopy(module)
        with no_grad_unless_needed(), allow_nonfinite():
            y_c = call(clone, x.clone(), False)[0].detach()
            x_c = call(clone, y_c.clone(), True)[0].detach()
            fresh.load_state_dict(clone.state_dict())
            y_f = call(fresh, x.clone(), False)[0].detach()
            x_f = call(fresh, y_c.clone(), True)[0].detach()
        if which == "parameters":
            params_changed = clone
        parts = [(norms(x_c - x), 10 * tol_x, "its inverse no longer inverts its forward"),
                 (norms(y_c - y_f), 2 * tol_y, "a copy loaded from its state dict computes another forward map"),
                 (norms(x_c - x_f), 2 * tol_x, "a copy loaded from its state dict computes another inverse")]
        if which == "buffers":
            parts = parts[1:]
        ratios = torch.stack([torch.nan_to_num(err / limit, nan=math.inf) for err, limit, _ in parts])
        j, i = divmod(int(torch.argmax(ratios)), batch)
        err, limit, what = parts[j]
        measured[key], tolerances[key] = float(err[i]), float(limit[i])
        if float(ratios[j, i]) <= 1:
            continue
        listed = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        if which == "parameters":
            cause = ("a cached inverse that was not invalidated" if j == 0
                     else "a tensor the state dict does not carry")
            failures.append(
                f"{key}: after an in-place change (through .data) of the {len(names)} trainable floating-point "
                f"parameters ({listed}; frozen and integer tensors left unchanged), {what}: off by {float(err[i]):.3g} "
                f"at sample {i}, above {float(limit[i]):.3g} ({cause}?)")
        else:
            failures.append(
                f"{key}: the floating buffers left out of the state dict ({listed}) change the map: after changing "
                f"them, {what}: off by {float(err[i]):.3g} at sample {i}, above {float(limit[i]):.3g} (register them "
                "as persistent, or derive them from the parameters)")
    restored = params_changed if params_changed is not None else copy.deepcopy(module)
    with no_grad_unless_needed(), allow_nonfinite():
        restored.load_state_dict(module.state_dict())
        y2 = call(restored, x.clone(), False)[0].detach()
        x2 = call(restored, y.clone(), True)[0].detach()
    err = max(float((y2 - y).abs().max()), float((x2 - x_back).abs().max()))
    measured["state_dict"], tolerances["state_dict"] = err, 0.0
    if not err == 0.0:
        failures.append(f"state_dict: a copy loaded from the state dict differs by {err:.3g} (expected 0): a tensor "
                        "is not in the state dict or a cache was not invalidated on load")
