"""The gradient self-check of memory-saving backprop: how far its gradients are from standard autograd's.

Memory-saving gradients are only as good as the inverse that rebuilds the activations: when an inverse
explodes, the rebuilt activations are wrong and so are the gradients (the paper's failure (b)). The check
recomputes the same backward pass with a stored graph and reports, for the parameters (and the input, where it
needs a gradient):

- ``angle``: the angle in radians between the two gradient vectors (0 when they agree);
- ``rel_error``: ``||g_mem - g_std|| / ||g_std||``;
- ``reconstruction_error``: the largest per-sample relative error ``||x_rebuilt - x|| / ||x||`` of the rebuilt
  input.

A policy says what a disagreement does: ``"warn"``, ``"fallback"`` (use the standard gradients of that pass
and warn), ``"raise"``, or ``"ignore"``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["POLICIES", "CheckRun", "GradientCheck", "GradientMismatchError", "GradientMismatchWarning",
           "gradient_discrepancy"]

#: What a disagreement between memory-saving and standard gradients does.
POLICIES = ("warn", "fallback", "raise", "ignore")


class GradientMismatchWarning(RuntimeWarning):
    """Memory-saving gradients disagree with standard autograd's, or came out non-finite."""


class GradientMismatchError(RuntimeError):
    """Raised by the ``"raise"`` policy when memory-saving gradients disagree with standard autograd's."""


@dataclass
class GradientCheck:
    """How memory-saving gradients compare with standard autograd's (see the module docstring).

    Attributes:
        direction: ``"forward"`` or ``"inverse"`` for one pass, ``"total"`` for the sum over a step's passes.
        angle, rel_error, abs_error: of the parameter gradients (NaN where either is non-finite).
        grad_norm: ``||g_std||`` of the parameter gradients.
        input_rel_error: the relative error of the input gradient (``None`` where the input needs none).
        reconstruction_error: the largest per-sample relative error of the rebuilt input.
        finite: whether the memory-saving gradients are finite.
        agreed: within the tolerances and finite.
        action: what the policy did: ``"none"``, ``"warned"``, ``"fell back"`` or ``"raised"``.
        passes: the per-pass checks that a ``"total"`` sums up.
    """

    direction: str
    angle: float
    rel_error: float
    abs_error: float
    grad_norm: float
    input_rel_error: float | None
    reconstruction_error: float | None
    finite: bool
    agreed: bool
    action: str = "none"
    passes: list[GradientCheck] = field(default_factory=list)

    @property
    def angle_degrees(self) -> float:
        return math.degrees(self.angle)

    def __str__(self) -> str:
        parts = [f"angle {self.angle_degrees:.3g} deg", f"relative error {self.rel_error:.3g}"]
        if self.input_rel_error is not None:
            parts.append(f"input-gradient relative error {self.input_rel_error:.3g}")
        if self.reconstruction_error is not None:
            parts.append(f"reconstruction error {self.reconstruction_error:.3g}")
        verdict = "agree" if self.agreed else "DISAGREE"
        return f"memory-saving vs standard gradients ({self.direction}): {verdict}: " + ", ".join(parts)


def _flat(grads: Sequence[Tensor | None], like: Sequence[Tensor]) -> Tensor:
    parts = [(g if g is not None else torch.zeros_like(p)).detach().reshape(-1).double()
             for g, p in zip(grads, like)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def gradient_discrepancy(mem: Tensor, std: Tensor) -> tuple[float, float, float, float, bool]:
    """``(angle, rel_error, abs_error, ||std||, finite)`` of two flat gradient vectors (computed in float64).

    Example:
        >>> import torch
        >>> angle, rel, *_ = gradient_discrepancy(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]))
        >>> round(angle, 4), round(rel, 4)
        (1.5708, 1.118)
    """
    mem, std = mem.double().reshape(-1), std.double().reshape(-1)
    finite = bool(torch.isfinite(mem).all())
    norm_std, norm_mem = float(std.norm()), float(mem.norm())
    if not finite:
        return math.nan, math.inf, math.inf, norm_std, False
    abs_error = float((mem - std).norm())
    if norm_std == 0.0:
        rel = 0.0 if abs_error == 0.0 else math.inf
    else:
        rel = abs_error / norm_std
    if norm_std == 0.0 or norm_mem == 0.0:
        angle = 0.0 if norm_std == norm_mem else math.pi / 2
    else:  # Kahan's formula: accurate near 0 and pi, where acos(cos) loses half the digits
        u, v = mem / norm_mem, std / norm_std
        angle = 2.0 * math.atan2(float((u - v).norm()), float((u + v).norm()))
    return angle, rel, abs_error, norm_std, True


class CheckRun:
    """Collects the checks of the passes run inside one ``MemorySaving.checking()`` block; applies the policy.

    ``result`` is the check of the summed gradients (what an optimiser sees), with each pass in ``passes``;
    ``None`` until a backward pass through a checked call has run.
    """

    def __init__(self, params: Sequence[Tensor], policy: str, rtol: float, max_angle: float) -> None:
        if policy not in POLICIES:
            raise ValueError(f"on_mismatch must be one of {POLICIES}, got {policy!r}")
        self.params = list(params)
        self.policy, self.rtol, self.max_angle = policy, rtol, max_angle
        self.passes: list[GradientCheck] = []
        self._mem: Tensor | None = None
        self._std: Tensor | None = None

    def _within(self, angle: float, rel: float) -> bool:
        return rel <= self.rtol and angle <= self.max_angle

    def record(self, direction: str, params: Sequence[Tensor], mem: Sequence[Tensor | None],
               std: Sequence[Tensor | None], input_grads: tuple[Tensor, Tensor] | None,
               reconstruction_error: float | None) -> bool:
        """Record one pass; return True when its standard gradients should be used instead (fallback)."""
        g_mem, g_std = _flat(mem, params), _flat(std, params)
        angle, rel, abs_err, norm, finite = gradient_discrepancy(g_mem, g_std)
        input_rel = None
        agreed = finite and self._within(angle, rel)
        if input_grads is not None:
            in_angle, input_rel, _, _, in_finite = gradient_discrepancy(*input_grads)
            agreed = agreed and in_finite and self._within(in_angle, input_rel)
        check = GradientCheck(direction, angle, rel, abs_err, norm, input_rel, reconstruction_error, finite,
                              agreed)
        self.passes.append(check)
        self._accumulate(params, g_mem, g_std)
        if agreed or self.policy == "ignore":
            return False
        message = (f"{check}; the inverse is not accurate enough to rebuild the activations (tolerances: "
                   f"relative error {self.rtol:g}, angle {self.max_angle:g} rad)")
        if self.policy == "raise":
            check.action = "raised"
            raise GradientMismatchError(message + ". Regularize the flow (NF or finite-difference terms) or "
                                        "train without memory saving.")
        fallback = self.policy == "fallback"
        check.action = "fell back" if fallback else "warned"
        warnings.warn(message + ("; using the standard gradients of this pass" if fallback else
                                 "; pass on_mismatch='fallback' to use standard gradients instead"),
                      GradientMismatchWarning, stacklevel=2)
        return fallback

    def _accumulate(self, params: Sequence[Tensor], g_mem: Tensor, g_std: Tensor) -> None:
        # passes may list the parameters in another order: map them by identity
        index = {id(p): i for i, p in enumerate(self.params)}
        sizes = [p.numel() for p in self.params]
        offsets = [0]
        for s in sizes:
            offsets.append(offsets[-1] + s)
        if self._mem is None:
            self._mem = torch.zeros(offsets[-1], dtype=torch.float64, device=g_mem.device)
            self._std = torch.zeros_like(self._mem)
        assert self._std is not None
        start = 0
        for p in params:
            n = p.numel()
            i = index.get(id(p))
            if i is not None:
                self._mem[offsets[i] : offsets[i + 1]] += g_mem[start : start + n]
                self._std[offsets[i] : offsets[i + 1]] += g_std[start : start + n]
            start += n

    @property
    def result(self) -> GradientCheck | None:
        if not self.passes or self._mem is None or self._std is None:
            return None
        angle, rel, abs_err, norm, finite = gradient_discrepancy(self._mem, self._std)
        inputs = [c.input_rel_error for c in self.passes if c.input_rel_error is not None]
        recon = [c.reconstruction_error for c in self.passes if c.reconstruction_error is not None]
        actions = {c.action for c in self.passes}
        action = next((a for a in ("raised", "fell back", "warned") if a in actions), "none")
        agreed = finite and all(c.agreed for c in self.passes) and self._within(angle, rel)
        return GradientCheck("total", angle, rel, abs_err, norm, max(inputs) if inputs else None,
                             max(recon) if recon else None, finite, agreed, action, list(self.passes))
