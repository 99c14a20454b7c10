"""Analytic bounds held against measured singular values, layer by layer, pointing at the layer whose inverse
explodes.

:func:`stability_report` runs a batch through a :class:`~invertible.Sequential` (a Glow, a DenseFlow, ...) one
layer at a time and, at each layer's own input, measures ``sigma_max`` and ``1 / sigma_min`` of that layer's
Jacobian (exactly or matrix-free, by size) and the layer's own round-trip error, next to its global bounds and its
local bounds on the inputs it actually sees (:func:`~invertible.bounds.local_bounds`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..base import Bounds, InvertibleModule, Sequential, allow_nonfinite, compose_bounds
from ..diagnostics import eval_mode, extreme_singular_values, reconstruction_error
from .local import local_bounds
from .table import model_bounds

__all__ = ["LayerReport", "StabilityReport", "stability_report"]


@dataclass
class LayerReport:
    """One layer of a :class:`StabilityReport` (measured values are maxima over the batch).

    Attributes:
        label: position and class, e.g. ``"7:AffineCoupling"`` (nested positions joined by dots).
        bounds: the layer's global bounds (``None`` entries where none exist).
        local: bounds on the inputs this layer saw (see :func:`~invertible.bounds.local_bounds`).
        sigma_max: measured ``sigma_max`` of the layer's Jacobian at its inputs.
        inverse_lipschitz: measured ``1 / sigma_min`` (the local Lipschitz constant of its inverse).
        reconstruction: the layer's own relative round-trip error ``||x - f^-1(f(x))|| / ||x||`` at its inputs.
        method: ``"exact"`` or ``"lanczos"``.
    """

    label: str
    bounds: Bounds
    local: Bounds
    sigma_max: float
    inverse_lipschitz: float
    reconstruction: float
    method: str

    def violations(self, rtol: float = 1e-9) -> list[str]:
        """Bounds below the measured values (beyond a relative tolerance ``rtol``); empty when all hold."""
        out = []
        for kind, bounds in (("global", self.bounds), ("local", self.local)):
            for direction, bound, measured in (("forward", bounds.forward, self.sigma_max),
                                               ("inverse", bounds.inverse, self.inverse_lipschitz)):
                if bound is not None and not measured <= bound * (1 + rtol):
                    out.append(f"{self.label}: {kind} {direction} bound {bound:.6g} < measured {measured:.6g}")
        return out


def _key(value: float) -> float:
    return math.inf if math.isnan(value) else value


@dataclass
class StabilityReport:
    """Per-layer bounds against measurements, the composed model bounds, and the whole model's measured values.

    Attributes:
        layers: one :class:`LayerReport` per layer, in forward order.
        bounds: the product of the layers' global bounds (``None`` where a layer has none).
        local: the product of the layers' local bounds: bounds on ``||J_f(x_i)||`` and ``||J_f(x_i)^-1||``.
        sigma_max, inverse_lipschitz: measured for the whole model (``None`` if not measured).
    """

    layers: list[LayerReport]
    bounds: Bounds
    local: Bounds
    sigma_max: float | None
    inverse_lipschitz: float | None

    @property
    def worst_inverse(self) -> LayerReport:
        """The layer with the largest measured ``1 / sigma_min``: where the inverse explodes."""
        return max(self.layers, key=lambda r: _key(r.inverse_lipschitz))

    @property
    def worst_forward(self) -> LayerReport:
        return max(self.layers, key=lambda r: _key(r.sigma_max))

    @property
    def exploding_layer(self) -> str:
        """Label of :attr:`worst_inverse`."""
        return self.worst_inverse.label

    def violations(self, rtol: float = 1e-9) -> list[str]:
        """Every bound below its measured value (per layer, and the composed bounds against the whole model)."""
        out = [v for layer in self.layers for v in layer.violations(rtol)]
        for kind, bounds in (("global", self.bounds), ("local", self.local)):
            for direction, bound, measured in (("forward", bounds.forward, self.sigma_max),
                                               ("inverse", bounds.inverse, self.inverse_lipschitz)):
                if bound is not None and measured is not None and not measured <= bound * (1 + rtol):
                    out.append(f"model: composed {kind} {direction} bound {bound:.6g} < measured {measured:.6g}")
        return out

    def rows(self) -> list[dict[str, object]]:
        """The table as dictionaries (for CSV or JSON); missing bounds are ``None``."""
        return [{"layer": r.label, "bound_forward": r.bounds.forward, "local_forward": r.local.forward,
                 "sigma_max": r.sigma_max, "bound_inverse": r.bounds.inverse, "local_inverse": r.local.inverse,
                 "inverse_lipschitz": r.inverse_lipschitz, "reconstruction": r.reconstruction, "method": r.method}
                for r in self.layers]

    def __str__(self) -> str:
        fmt = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
        width = max(len("layer"), *(len(r.label) for r in self.layers))
        head = (f"{'layer':<{width}}  {'Lip(f)':>9} {'local':>9} {'sig_max':>9}   {'Lip(f^-1)':>9} {'local':>9} "
                f"{'1/sig_min':>9}   {'recon':>8}")
        lines = [head, "-" * len(head)]
        worst = self.worst_inverse
        for r in self.layers:
            mark = "  <- largest 1/sig_min (worst-conditioned inverse)" if r is worst else ""
            lines.append(f"{r.label:<{width}}  {fmt(r.bounds.forward):>9} {fmt(r.local.forward):>9} "
                         f"{fmt(r.sigma_max):>9}   {fmt(r.bounds.inverse):>9} {fmt(r.local.inverse):>9} "
                         f"{fmt(r.inverse_lipschitz):>9}   {fmt(r.reconstruction):>8}{mark}")
        lines.append("-" * len(head))
        lines.append(f"{'model':<{width}}  {fmt(self.bounds.forward):>9} {fmt(self.local.forward):>9} "
                     f"{fmt(self.sigma_max):>9}   {fmt(self.bounds.inverse):>9} {fmt(self.local.inverse):>9} "
                     f"{fmt(self.inverse_lipschitz):>9}")
        return "\n".join(lines)


def _flatten(module: InvertibleModule, prefix: str = "") -> list[tuple[str, InvertibleModule]]:
    out: list[tuple[str, InvertibleModule]] = []
    for i, layer in enumerate(module):  # type: ignore[call-overload]
        label = f"{prefix}{i}"
        if isinstance(layer, Sequential):
            out += _flatten(layer, label + ".")
        else:
            out.append((f"{label}:{type(layer).__name__}", layer))
    return out


def _max(t: Tensor) -> float:
    t = t.double()
    return math.nan if bool(torch.isnan(t).any()) else float(t.max())


def stability_report(
    model: InvertibleModule,
    x: Tensor,
    *,
    method: str = "auto",
    max_exact_dims: int = 1024,
    flatten: bool = True,
    whole_model: bool = True,
    max_iter: int = 40,
    rtol: float = 1e-2,
) -> StabilityReport:
    """Hold every layer's analytic bounds against its measured singular values at its own inputs.

    Args:
        model: a :class:`~invertible.Sequential` (any other module is reported as a single layer).
        x: a batch of inputs.
        method, max_exact_dims, max_iter, rtol: how singular values are measured (see
            :func:`~invertible.diagnostics.extreme_singular_values`).
        flatten: expand nested ``Sequential`` layers into their own layers.
        whole_model: also measure the whole model (to hold the composed bounds against).

    Example:
        >>> import torch, invertible
        >>> flow = invertible.Sequential(invertible.ActNorm(3, data_init=False),
        ...                              invertible.ActNorm(3, data_init=False)).double()
        >>> with torch.no_grad():
        ...     _ = flow[1].log_scale.copy_(torch.tensor([0.0, 0.0, -9.0]))  # one channel scaled by exp(-9)
        >>> report = stability_report(flow, torch.randn(4, 3, dtype=torch.float64))
        >>> report.exploding_layer, round(report.worst_inverse.inverse_lipschitz), report.violations()
        ('1:ActNorm', 8103, [])
    """
    if isinstance(model, Sequential):
        layers = _flatten(model) if flatten else [(f"{i}:{type(m).__name__}", m) for i, m in enumerate(model)]
    else:
        layers = [(f"0:{type(model).__name__}", model)]
    reports = []
    with eval_mode(model):
        current = x
        for label, layer in layers:
            with torch.no_grad(), allow_nonfinite():
                out = layer(current)[0]
            sv = extreme_singular_values(layer, current, method=method, max_exact_dims=max_exact_dims,
                                         max_iter=max_iter, rtol=rtol, eval=False)
            reports.append(LayerReport(
                label=label,
                bounds=model_bounds(layer),
                local=local_bounds(layer, current),
                sigma_max=_max(sv.sigma_max),
                inverse_lipschitz=_max(1.0 / sv.sigma_min),
                reconstruction=_max(reconstruction_error(layer, current, eval=False).relative),
                method=sv.method,
            ))
            current = out
        measured = (extreme_singular_values(model, x, method=method, max_exact_dims=max_exact_dims,
                                            max_iter=max_iter, rtol=rtol, eval=False) if whole_model else None)
    local = Bounds(*(None if any(v is None for v in vals) else math.prod(vals)  # type: ignore[arg-type]
                     for vals in zip(*(r.local for r in reports))))
    return StabilityReport(
        layers=reports,
        bounds=compose_bounds([r.bounds for r in reports]),
        local=local,
        sigma_max=None if measured is None else _max(measured.sigma_max),
        inverse_lipschitz=None if measured is None else _max(1.0 / measured.sigma_min),
    )
