"""Reference maps of the rational-quadratic spline layers and the masked autoregressive transforms (mpmath).

Written from the documented math of :mod:`invertible.layers.spline_math` (softmax bin sizes with minima, knot
derivatives ``d_min + (d_max - d_min) sigmoid(u + c)``, the textbook rational-quadratic formula of Durkan et al.
with linear tails) and of :mod:`invertible.layers.autoregressive` (the masked network ``(W * M) x + b``, output unit
``i * params + j`` is parameter ``j`` of entry ``i``). Nothing is shared with the layers' torch code.

:func:`spline_inverse` inverts the reference spline by bisection (no quadratic formula), for tests of the layers'
closed-form inverse.
"""

from __future__ import annotations

from collections.abc import Sequence

import mpmath
import numpy as np
from mpmath import mp, mpf
from torch import nn

from ..layers.autoregressive import MaskedAffineAutoregressive, MaskedLinear, MaskedSplineAutoregressive
from ..layers.spline import RationalQuadraticSpline, SplineCoupling
from ..layers.spline_math import SplineSettings
from .arith import MPArray, from_tensor, linear
from .registry import Builder, LayerMap, NetMap, register_layer_reference, register_net_reference

__all__ = ["SplineKnots", "spline_forward", "spline_inverse", "spline_knots"]

#: ``(x_0..x_K, y_0..y_K, d_0..d_K, B)`` of one spline, as ``mpf``.
SplineKnots = tuple[list[mpf], list[mpf], list[mpf], mpf]


def _positions(raw: Sequence[mpf], minimum: mpf, bound: mpf) -> list[mpf]:
    """``-B, -B + w_0, ..., B`` with ``w_k = 2B (m + (1 - K m) softmax(raw)_k)``."""
    top = max(raw)
    weights = [mp.exp(v - top) for v in raw]
    total = mpmath.fsum(weights)
    bins = len(raw)
    widths = [2 * bound * (minimum + (1 - bins * minimum) * w / total) for w in weights]
    knots = [-bound]
    for w in widths[:-1]:
        knots.append(knots[-1] + w)
    return knots + [bound]


def spline_knots(raw: Sequence[mpf], settings: SplineSettings) -> SplineKnots:
    """The knots of one spline from its ``3K - 1`` raw parameters."""
    k, bound = settings.bins, mpf(settings.bound)
    d_min, d_max = mpf(settings.min_derivative), mpf(settings.max_derivative)
    offset = mp.log((1 - d_min) / (d_max - d_min)) - mp.log(1 - (1 - d_min) / (d_max - d_min))
    inner = [d_min + (d_max - d_min) / (1 + mp.exp(-(u + offset))) for u in raw[2 * k:]]
    xs = _positions(raw[:k], mpf(settings.min_width), bound)
    ys = _positions(raw[k:2 * k], mpf(settings.min_height), bound)
    return xs, ys, [mpf(1)] + inner + [mpf(1)], bound


def spline_forward(x: mpf, knots: SplineKnots) -> tuple[mpf, mpf]:
    """``(g(x), log g'(x))``: the identity outside ``[-B, B]``; inside, in the bin ``x_k <= x < x_{k+1}``,
    ``y_k + h (s xi^2 + d_k xi (1 - xi)) / (s + (d_k + d_{k+1} - 2s) xi (1 - xi))`` and its derivative
    ``s^2 (d_{k+1} xi^2 + 2 s xi (1 - xi) + d_k (1 - xi)^2) / (s + (d_k + d_{k+1} - 2s) xi (1 - xi))^2``."""
    xs, ys, ds, bound = knots
    if x < -bound or x > bound:
        return x, mpf(0)
    k = max(j for j in range(len(xs) - 1) if xs[j] <= x) if x < bound else len(xs) - 2
    w, h = xs[k + 1] - xs[k], ys[k + 1] - ys[k]
    s, xi = h / w, (x - xs[k]) / w
    t = xi * (1 - xi)
    denom = s + (ds[k] + ds[k + 1] - 2 * s) * t
    y = ys[k] + h * (s * xi**2 + ds[k] * t) / denom
    slope = s**2 * (ds[k + 1] * xi**2 + 2 * s * t + ds[k] * (1 - xi) ** 2) / denom**2
    return y, mp.log(slope)


def spline_inverse(y: mpf, knots: SplineKnots, iterations: int = 200) -> mpf:
    """``g^-1(y)`` by bisection on the reference map (``g`` is increasing; 200 halvings of ``[-B, B]``)."""
    bound = knots[3]
    if y < -bound or y > bound:
        return y
    lo, hi = -bound, bound
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if spline_forward(mid, knots)[0] < y:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _raw_rows(values: MPArray) -> list[list[mpf]]:
    """Rows of raw parameters (last axis) from an object array."""
    return [list(row) for row in values.reshape(-1, values.shape[-1])]


# -- layers ------------------------------------------------------------------------------------------------------
@register_layer_reference(RationalQuadraticSpline)
def _rq_spline(module: nn.Module, builder: Builder) -> LayerMap:
    """Entry ``(c, ...)`` through the spline of channel ``c``; ``log|det J| = sum log g'``."""
    settings: SplineSettings = module.settings
    knots = [spline_knots(row, settings) for row in _raw_rows(from_tensor(module.params))]

    def run(x: MPArray) -> tuple[MPArray, mpf]:
        y = np.empty(x.shape, dtype=object)
        total = mpf(0)
        for index in np.ndindex(x.shape):
            y[index], logd = spline_forward(x[index], knots[index[0]])
            total += logd
        return y, total

    return run


@register_layer_reference(SplineCoupling)
def _spline_coupling(module: nn.Module, builder: Builder) -> LayerMap:
    """Halves ``x[:C//2]``, ``x[C//2:]`` (the first conditions, or the second with ``swap``); ``h = net(x1)``;
    entry ``(i, ...)`` of ``x2`` goes through the spline whose parameter ``j`` is ``h[i (3K - 1) + j, ...]``."""
    net = builder.net(module.net)
    settings: SplineSettings = module.settings
    n, first, swap = settings.params, module.channels // 2, module.swap

    def run(x: MPArray) -> tuple[MPArray, mpf]:
        a, b = x[:first], x[first:]
        x1, x2 = (b, a) if swap else (a, b)
        h = net(x1)
        y2 = np.empty(x2.shape, dtype=object)
        total = mpf(0)
        for index in np.ndindex(x2.shape):
            i, rest = index[0], index[1:]
            raw = [h[(i * n + j, *rest)] for j in range(n)]
            y2[index], logd = spline_forward(x2[index], spline_knots(raw, settings))
            total += logd
        return np.concatenate([y2, x1] if swap else [x1, y2], axis=0), total

    return run


def _made(module: nn.Module, builder: Builder) -> tuple[NetMap, int, int]:
    made = module.made
    return builder.net(made.net), int(made.features), int(made.params)


@register_layer_reference(MaskedAffineAutoregressive)
def _maf_affine(module: nn.Module, builder: Builder) -> LayerMap:
    """``(t_i, h_i) = MADE(x)_i``, ``s_i = exp(h_i)`` or ``exp(log(M) tanh(h_i))``, ``y_i = x_i s_i + t_i``;
    ``log|det J| = sum log s_i``."""
    net, features, params = _made(module, builder)
    fn, log_m = module.scale_fn, mp.log(mpf(module.max_scale))
    if fn not in ("exp", "tanh_exp"):
        raise NotImplementedError(f"the reference has no autoregressive scale function {fn!r}")

    def run(x: MPArray) -> tuple[MPArray, mpf]:
        theta = net(x).reshape(features, params)
        log_s = [h if fn == "exp" else log_m * mp.tanh(h) for h in theta[:, 1]]
        y = np.array([x[i] * mp.exp(log_s[i]) + theta[i, 0] for i in range(features)], dtype=object)
        return y, mpmath.fsum(log_s)

    return run


@register_layer_reference(MaskedSplineAutoregressive)
def _maf_spline(module: nn.Module, builder: Builder) -> LayerMap:
    """``y_i = g(x_i; MADE(x)_i)``; ``log|det J| = sum log g'(x_i)``."""
    net, features, params = _made(module, builder)
    settings: SplineSettings = module.settings

    def run(x: MPArray) -> tuple[MPArray, mpf]:
        theta = net(x).reshape(features, params)
        outputs = [spline_forward(x[i], spline_knots(list(theta[i]), settings)) for i in range(features)]
        y = np.array([o[0] for o in outputs], dtype=object)
        return y, mpmath.fsum(o[1] for o in outputs)

    return run


# -- networks ----------------------------------------------------------------------------------------------------
@register_net_reference(MaskedLinear)
def _masked_linear(module: nn.Module, builder: Builder) -> NetMap:
    """``(W * M) x + b``."""
    weight = from_tensor(module.weight) * from_tensor(module.mask)
    bias = from_tensor(module.bias)
    return lambda x: linear(x, weight, bias)
