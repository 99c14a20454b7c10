"""Reference maps of the invertible layers and models, written from each layer's documented math.

Each factory reads the module's parameters, buffers and settings, and returns the per-sample map
``x -> (y, log|det dy/dx|)`` on object arrays of ``mpf`` (channel axis first: ``(C,)`` or ``(C, H, W)``). The
log-det here is each layer's analytic formula evaluated in mpmath; :mod:`invertible.reference.jacobian` checks
it (and the layer's) against the determinant of a finite-difference Jacobian of these very maps.
"""

from __future__ import annotations

import mpmath
import numpy as np
from mpmath import mp, mpf
from torch import nn

from ..base import Sequential
from ..layers import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    Dequantize,
    Invertible1x1Conv,
    Logit,
    Partial,
    Permutation,
    Split,
    Squeeze,
)
from ..layers.scale import Bounded, Exp, Sigmoid, SigmoidEps, Symmetric, TanhExp
from ..models import DenseFlow, Flow, Glow
from .arith import MPArray, exp, from_tensor, log, matvec, per_channel, sigmoid
from .registry import Builder, LayerMap, register_layer_reference

__all__ = ["lu_weight", "scale_function"]


def _positions(x: MPArray) -> int:
    """Entries per channel of one sample: 1 for flat vectors, ``H * W`` for images."""
    return x.size // x.shape[0]


def _sum(a: MPArray) -> mpf:
    return mpmath.fsum(np.asarray(a).reshape(-1))


# ---------------------------------------------------------------------------------------------------------------
@register_layer_reference(Sequential, Flow, Glow, DenseFlow)
def _composition(module: nn.Module, builder: Builder) -> LayerMap:
    """``f_n o ... o f_1``: log-dets add."""
    steps = [builder.layer(layer) for layer in module.layers]

    def run(x: MPArray) -> tuple[MPArray, mpf]:
        total = mpf(0)
        for step in steps:
            x, logdet = step(x)
            total += logdet
        return x, total

    return run


@register_layer_reference(ActNorm)
def _actnorm(module: nn.Module, builder: Builder) -> LayerMap:
    """``y = (x + b) * s`` per channel; ``log|det J| = (entries per channel) * sum_c log s_c``."""
    if not bool(module.initialized):
        raise ValueError("reference ActNorm: the layer is not initialised yet; run one forward pass first")
    if module.max_scale is not None and module.eps > 0:
        raise ValueError("reference ActNorm: eps and max_scale are exclusive")
    bias, raw = from_tensor(module.bias), from_tensor(module.log_scale)
    if module.max_scale is not None:  # s = exp(log(M) tanh(l)), in (1/M, M)
        log_m = mp.log(mpf(module.max_scale))
        scale = np.array([mp.exp(log_m * mp.tanh(v)) for v in raw], dtype=object)
    elif module.eps > 0:  # s = exp(l) + eps
        scale = exp(raw) + mpf(module.eps)
    else:  # s = exp(l)
        scale = exp(raw)
    log_det_per_position = _sum(log(scale))

    def run(x: MPArray) -> tuple[MPArray, mpf]:
        y = (x + per_channel(bias, x.ndim)) * per_channel(scale, x.ndim)
        return y, _positions(x) * log_det_per_position

    return run


def lu_weight(module: Invertible1x1Conv) -> MPArray:
    """``W = P L U`` from the LU factors: ``L`` unit lower triangular from the strictly lower part of ``lower``,
    ``U`` the strictly upper part of ``upper`` plus ``diag(sign_s * exp(log_s))``."""
    perm, lower, upper = from_tensor(module.perm), from_tensor(module.lower), from_tensor(module.upper)
    sign, log_s = from_tensor(module.sign_s), from_tensor(module.log_s)
    c = perm.shape[0]
    unit_lower = np.array([[lower[i, j] if j < i else mpf(i == j) for j in range(c)] for i in range(c)],
                          dtype=object)
    upper_diag = np.array([[upper[i, j] if j > i else (sign[i] * mp.exp(log_s[i]) if i == j else mpf(0))
                            for j in range(c)] for i in range(c)], dtype=object)
    return perm.dot(unit_lower).dot(upper_diag)


@register_layer_reference(Invertible1x1Conv)
def _conv1x1(module: nn.Module, builder: Builder) -> LayerMap:
    """``y = W x`` at every position; ``log|det J| = positions * log|det W|`` (mpmath determinant)."""
    weight = lu_weight(module) if module.lu else from_tensor(module.weight)  # type: ignore[arg-type]
    log_abs_det = mp.log(abs(mp.det(mp.matrix(weight.tolist()))))

    def run(x: MPArray) -> tuple[MPArray, mpf]:
        columns = x.reshape(x.shape[0], -1)  # one column of channels per position
        y = np.stack([matvec(weight, columns[:, p]) for p in range(columns.shape[1])], axis=1)
        return y.reshape(x.shape), _positions(x) * log_abs_det

    return run


@register_layer_reference(Permutation)
def _permutation(module: nn.Module, builder: Builder) -> LayerMap:
    """``y[i] = x[perm[i]]``; log-det 0."""
    perm = [int(i) for i in module.perm.tolist()]
    if sorted(perm) != list(range(len(perm))):
        raise ValueError(f"reference Permutation: {perm} is not a permutation")
    return lambda x: (x[perm], mpf(0))


# -- couplings ---------------------------------------------------------------------------------------------------
_LIBRARY_SCALES = {cls.name: cls for cls in (Sigmoid, SigmoidEps, Exp, Bounded, TanhExp, Symmetric)}


def scale_function(name: str, h: MPArray, shift: mpf, eps: mpf, max_scale: mpf) -> MPArray:
    """The affine coupling's scale ``s = g(h)`` for each named scale function, from its definition."""
    if name == "sigmoid":
        return sigmoid(h + shift)
    if name == "sigmoid_eps":
        return sigmoid(h + shift) + eps
    if name == "exp":
        return exp(h)
    if name == "bounded":
        return sigmoid(h + shift) / 2 + mpf(1) / 2
    if name == "tanh_exp":
        log_m = mp.log(max_scale)
        return np.array([mp.exp(log_m * mp.tanh(v)) for v in h.reshape(-1)], dtype=object).reshape(h.shape)
    if name == "symmetric":
        return (2 * sigmoid(h) - 1) * (1 - eps) + 1
    raise NotImplementedError(f"the reference has no scale function {name!r}; add it to scale_function")


def _halves(module: nn.Module, x: MPArray) -> tuple[MPArray, MPArray]:
    """``(conditioning, transformed)``: the halves are ``x[:C//2]`` and ``x[C//2:]``; without ``swap`` the first
    conditions and the second is transformed, with ``swap`` the other way round."""
    k = module.channels // 2
    first, second = x[:k], x[k:]
    return (second, first) if module.swap else (first, second)


def _join(module: nn.Module, conditioning: MPArray, transformed: MPArray) -> MPArray:
    parts = [transformed, conditioning] if module.swap else [conditioning, transformed]
    return np.concatenate(parts, axis=0)


@register_layer_reference(AdditiveCoupling)
def _additive(module: nn.Module, builder: Builder) -> LayerMap:
    """``y2 = x2 + net(x1)``; log-det 0."""
    net = builder.net(module.net)

    def run(x: MPArray) -> tuple[MPArray, mpf]:
        x1, x2 = _halves(module, x)
        return _join(module, x1, x2 + net(x1)), mpf(0)

    return run


@register_layer_reference(AffineCoupling)
def _affine(module: nn.Module, builder: Builder) -> LayerMap:
    """``h = net(x1)``, ``t = h[0::2]``, ``s = g(h[1::2])``; Glow order ``y2 = (x2 + t) s``, RealNVP order
    ``y2 = x2 s + t``; ``log|det J| = sum log s``."""
    net = builder.net(module.net)
    name, order, params = module.scale.name, module.order, module.scale
    if type(params) is not _LIBRARY_SCALES.get(name):  # a scale function of someone else's: no reference for it
        raise NotImplementedError(f"the reference has no scale function {type(params).__name__}")
    shift, eps = mpf(float(getattr(params, "shift", 2.0))), mpf(float(getattr(params, "eps", 0.01)))
    max_scale = mpf(float(getattr(params, "max_scale", 2.0)))
    if order not in ("glow", "realnvp"):
        raise NotImplementedError(f"the reference has no coupling order {order!r}")

    def run(x: MPArray) -> tuple[MPArray, mpf]:
        x1, x2 = _halves(module, x)
        h = net(x1)
        t, s = h[0::2], scale_function(name, h[1::2], shift, eps, max_scale)
        y2 = (x2 + t) * s if order == "glow" else x2 * s + t
        return _join(module, x1, y2), _sum(log(s))

    return run


# -- reshaping and factor-out ------------------------------------------------------------------------------------
@register_layer_reference(Squeeze)
def _squeeze(module: nn.Module, builder: Builder) -> LayerMap:
    """Output channel ``c f^2 + f dy + dx`` at ``(i, j)`` is input channel ``c`` at ``(f i + dy, f j + dx)``."""
    f = int(module.factor)

    def run(x: MPArray) -> tuple[MPArray, mpf]:
        c, height, width = x.shape
        y = np.empty((c * f * f, height // f, width // f), dtype=object)
        for ch in range(c):
            for dy in range(f):
                for dx in range(f):
                    for i in range(height // f):
                        for j in range(width // f):
                            y[ch * f * f + f * dy + dx, i, j] = x[ch, f * i + dy, f * j + dx]
        return y, mpf(0)

    return run


@register_layer_reference(Split)
def _split(module: nn.Module, builder: Builder) -> LayerMap:
    """Standard prior: the identity. Learned prior: ``h = prior(x1)``, ``mu = h[0::2]``, ``logsd = h[1::2]``,
    ``eps2 = (x2 - mu) exp(-logsd)``, ``log|det J| = -sum logsd``; ``x1 = x[:C//2]``."""
    if module.prior is None:
        return lambda x: (x, mpf(0))
    prior = builder.net(module.prior)
    kept = module.channels // 2

    def run(x: MPArray) -> tuple[MPArray, mpf]:
        x1, x2 = x[:kept], x[kept:]
        h = prior(x1)
        mean, logsd = h[0::2], h[1::2]
        return np.concatenate([x1, (x2 - mean) * exp(-logsd)], axis=0), -_sum(logsd)

    return run


@register_layer_reference(Partial)
def _partial(module: nn.Module, builder: Builder) -> LayerMap:
    """``y = (layer(x[:active]), x[active:])``."""
    inner, active = builder.layer(module.layer), int(module.active)

    def run(x: MPArray) -> tuple[MPArray, mpf]:
        y, logdet = inner(x[:active])
        return np.concatenate([y, x[active:]], axis=0), logdet

    return run


# -- pre-processing -----------------------------------------------------------------------------------------------
@register_layer_reference(Dequantize)
def _dequantize(module: nn.Module, builder: Builder) -> LayerMap:
    """Eval mode: ``y = x / L + offset``; ``log|det J| = -D log L``."""
    if module.training:
        raise ValueError("reference Dequantize: only eval mode (u = 0) is deterministic; call module.eval()")
    levels, offset = mpf(int(module.levels)), mpf(float(module.offset))
    return lambda x: (x / levels + offset, -x.size * mp.log(levels))


@register_layer_reference(Logit)
def _logit(module: nn.Module, builder: Builder) -> LayerMap:
    """``s = a + (1 - 2a) x``, ``y = log s - log(1 - s)``; ``log|det J| = sum log((1 - 2a) / (s (1 - s)))``."""
    a = mpf(float(module.alpha))

    def run(x: MPArray) -> tuple[MPArray, mpf]:
        s = a + (1 - 2 * a) * x
        return log(s) - log(1 - s), _sum(log((1 - 2 * a) / (s * (1 - s))))

    return run
