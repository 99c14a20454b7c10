"""Reference maps of the residual-flow family, written from the documented math of each part.

- :class:`~invertible.layers.residual.ResidualBlock`: ``y = x + g(x)`` and ``log|det(I + J_g(x))|``, with
  ``J_g`` propagated exactly through the branch in mpmath (forward mode: one tangent per input entry) and the
  determinant taken by mpmath's LU. Only the exact log-det is a deterministic map; a block configured with an
  estimator is refused.
- Spectrally normalised layers: ``W_c = W / max(1, sigma / c)``. With ``method="exact"`` the reference finds
  ``sigma`` itself: the largest singular value by an mpmath SVD of the matrix (linear and 1x1 maps), and for
  ``k x k`` convolutions the documented norm, that of the circular convolution on the ``H x W`` grid
  (``padding_mode="circular"``) or on the ``(H + 2p) x (W + 2p)`` grid (zero padding: a certified upper bound of
  the zero-padded map). The DFT block-diagonalises a circular convolution, so that norm is the largest of the
  mpmath SVDs of the ``out x in`` blocks ``K(w) = sum_ab W[:, :, a, b] exp(-2 pi i (a w1 / n + b w2 / m))`` over
  the ``n m`` frequencies (a dense SVD of the whole operator in mpmath would take minutes even at these sizes).
  With ``method="power"`` the estimate ``sigma = u^T W v`` is part of the parameters: the reference evaluates it
  in mpmath from the module's stored ``u`` and ``v``.
- The Lipschitz activations (``LipSwish``, ``MaxMin``, ``FullSort``, ``LipschitzCube``, ``LipSoftplus``, and the
  torch ones residual-flows offers), each from its formula, with its derivative for the tangents.
- ``FlatNet`` (a branch on the flattened sample), the flattened wrapper of the fully connected tail, and the two
  models (compositions).

The reference has no inverse (the comparisons run the module's inverse at the rounded reference output), so the
fixed-point iteration is not re-implemented here.
"""

from __future__ import annotations

from collections.abc import Callable

import mpmath
import numpy as np
from mpmath import mp, mpf
from torch import nn

from ..base import Sequential
from ..layers.activations import FullSort, LipschitzCube, LipSoftplus, LipSwish, MaxMin
from ..layers.residual import ResidualBlock
from ..layers.spectral_norm import SpectralNormConv2d, SpectralNormLinear
from ..models.resflow import DenseResidualFlow, FlatNet, ResidualFlow, _Flattened
from .arith import MPArray, conv2d, from_tensor, matvec
from .registry import (
    Builder,
    LayerMap,
    NetMap,
    layer_reference_factory,
    logdet_wanted,
    register_layer_reference,
    register_net_reference,
)

__all__ = ["Jet", "branch_jet", "jet_factory", "register_jet", "spectral_sigma"]

#: ``part(x, dx) -> (h, dh)``: a network part at one sample ``x`` and, unless ``dx`` is ``None``, its derivative
#: applied to the tangents ``dx`` (an object array ``(n, *x.shape)``), giving ``dh`` of shape ``(n, *h.shape)``.
Jet = Callable[[MPArray, "MPArray | None"], tuple[MPArray, "MPArray | None"]]
JetFactory = Callable[[nn.Module, Builder], Jet]

_JETS: dict[type, JetFactory] = {}


def register_jet(*types: type, net: bool = True) -> Callable[[JetFactory], JetFactory]:
    """Decorator: ``factory(module, builder) -> Jet`` differentiates modules of exactly these types inside a
    residual branch; with ``net`` its value part is also registered as their net reference."""

    def decorate(factory: JetFactory) -> JetFactory:
        for cls in types:
            _JETS[cls] = factory
            if net:
                register_net_reference(cls)(lambda module, builder, f=factory: _value_only(f(module, builder)))
        return factory

    return decorate


def jet_factory(cls: type) -> JetFactory | None:
    """The jet factory registered for exactly ``cls``, or ``None`` (a subclass with its parent's math reuses it:
    ``register_jet(MyLinear)(jet_factory(SpectralNormLinear))``)."""
    return _JETS.get(cls)


def _value_only(jet: Jet) -> NetMap:
    return lambda x: jet(x, None)[0]


def branch_jet(module: nn.Module, builder: Builder) -> Jet:
    """The jet of a residual branch part (missing types are recorded in ``builder`` like missing references)."""
    factory = _JETS.get(type(module))
    if factory is None:
        return builder._placeholder(module)  # type: ignore[return-value]
    return factory(module, builder)


def _each(fn: Callable[[MPArray], MPArray], dx: MPArray | None) -> MPArray | None:
    """Apply a linear map to every tangent."""
    return None if dx is None else np.stack([fn(t) for t in dx])


# -- containers ---------------------------------------------------------------------------------------------------
@register_jet(nn.Sequential, net=False)  # nets.py already has the value reference of nn.Sequential
def _sequential(module: nn.Module, builder: Builder) -> Jet:
    parts = [branch_jet(child, builder) for child in module]

    def run(x: MPArray, dx: MPArray | None) -> tuple[MPArray, MPArray | None]:
        for part in parts:
            x, dx = part(x, dx)
        return x, dx

    return run


@register_jet(FlatNet)
def _flat_net(module: nn.Module, builder: Builder) -> Jet:
    """``g(x) = nnet(x.flatten()).reshape(x.shape)``."""
    inner = branch_jet(module.nnet, builder)

    def run(x: MPArray, dx: MPArray | None) -> tuple[MPArray, MPArray | None]:
        h, dh = inner(x.reshape(-1), None if dx is None else dx.reshape(dx.shape[0], -1))
        return h.reshape(x.shape), None if dh is None else dh.reshape(dx.shape)  # type: ignore[union-attr]

    return run


# -- spectral normalisation ---------------------------------------------------------------------------------------
_SIGMA_CACHE: dict[tuple, mpf] = {}


def _largest_singular_value(matrix: mpmath.matrix, complex_entries: bool = False) -> mpf:
    values = (mp.svd_c if complex_entries else mp.svd_r)(matrix, compute_uv=False)
    return max(values[i] for i in range(values.rows))


def _circular_norm(weight: MPArray, grid: tuple[int, int]) -> mpf:
    """Norm of the circular cross-correlation with ``weight`` on an ``n x m`` grid: the largest singular value of
    its DFT blocks ``K(w)`` (the DFT is unitary and turns the operator into ``n m`` independent ``out x in``
    blocks; cross-correlation instead of convolution only conjugates them)."""
    out_c, in_c, kh, kw = weight.shape
    n, m = grid
    if kh > n or kw > m:
        raise ValueError(f"reference spectral norm: a {kh}x{kw} kernel does not fit a {n}x{m} grid")
    best = mpf(0)
    for w1 in range(n):
        for w2 in range(m):
            phase = [[mp.expjpi(-2 * mpf(a * w1 * m + b * w2 * n) / (n * m)) for b in range(kw)] for a in range(kh)]
            block = mp.matrix(out_c, in_c)
            for o in range(out_c):
                for c in range(in_c):
                    block[o, c] = mp.fsum(weight[o, c, a, b] * phase[a][b] for a in range(kh) for b in range(kw))
            best = max(best, _largest_singular_value(block, complex_entries=True))
    return best


def spectral_sigma(module: SpectralNormLinear | SpectralNormConv2d) -> mpf:
    """The ``sigma`` that normalises the layer's weight, computed in mpmath (see the module docstring)."""
    weight = from_tensor(module.weight)
    spatial = isinstance(module, SpectralNormConv2d) and module.kernel_size[0] > 1
    if module.method == "power":
        # the power-iteration estimate u^T W v is part of the parameters: bring u, v up to date the way the
        # module's own next call would (a no-op unless the weight changed, e.g. in a float32 copy), then use them
        module._sync_if_stale()
        u, v = from_tensor(module.u), from_tensor(module.v)
        if spatial:
            wv = _conv_same(module, weight, None)(v.reshape((module.in_channels, *module.input_size)))
        else:
            wv = matvec(weight.reshape(weight.shape[0], -1), v)
        return mp.fdot(u, wv.reshape(-1))
    if module.method != "exact":
        raise NotImplementedError(f"the reference has no spectral-norm method {module.method!r}")
    grid: tuple[int, int] | None = None
    if spatial:
        h, w = module.input_size
        p = module.kernel_size[0] // 2
        grid = (h, w) if module.padding_mode == "circular" else (h + 2 * p, w + 2 * p)
    key = (type(module), tuple(weight.shape), tuple(weight.reshape(-1)), grid, mp.dps)
    if key not in _SIGMA_CACHE:  # several reference maps of one module are built per test; the SVDs are slow
        if len(_SIGMA_CACHE) > 256:
            _SIGMA_CACHE.clear()
        if grid is None:
            _SIGMA_CACHE[key] = _largest_singular_value(mp.matrix(weight.reshape(weight.shape[0], -1).tolist()))
        else:
            _SIGMA_CACHE[key] = _circular_norm(weight, grid)
    return _SIGMA_CACHE[key]


def _normalized(module: SpectralNormLinear | SpectralNormConv2d) -> MPArray:
    """``W / max(1, sigma / c)``."""
    return from_tensor(module.weight) / max(mpf(1), spectral_sigma(module) / mpf(module.coeff))


def _conv_same(module: SpectralNormConv2d, weight: MPArray, bias: MPArray | None) -> Callable[[MPArray], MPArray]:
    if module.stride != (1, 1) or module.dilation != (1, 1) or module.groups != 1:
        raise NotImplementedError(f"the reference supports stride 1, dilation 1 and groups 1 only, got {module}")
    if module.padding_mode not in ("zeros", "circular"):
        raise NotImplementedError(f"the reference has no padding mode {module.padding_mode!r}")
    padding = (module.kernel_size[0] // 2, module.kernel_size[1] // 2)
    circular = module.padding_mode == "circular"
    return lambda x: conv2d(x, weight, bias, padding, circular)


@register_jet(SpectralNormLinear)
def _sn_linear(module: nn.Module, builder: Builder) -> Jet:
    """``h = W_c x + b``, ``dh = W_c dx``."""
    weight = _normalized(module)  # type: ignore[arg-type]
    bias = None if module.bias is None else from_tensor(module.bias)

    def run(x: MPArray, dx: MPArray | None) -> tuple[MPArray, MPArray | None]:
        h = matvec(weight, x)
        return (h if bias is None else h + bias), _each(lambda t: matvec(weight, t), dx)

    return run


@register_jet(SpectralNormConv2d)
def _sn_conv(module: nn.Module, builder: Builder) -> Jet:
    """``h = conv(x, W_c) + b`` with 'same' zero or circular padding, ``dh = conv(dx, W_c)``."""
    weight = _normalized(module)  # type: ignore[arg-type]
    bias = None if module.bias is None else from_tensor(module.bias)
    if module.kernel_size[0] > 1 and module.input_size is None:
        raise ValueError("reference SpectralNormConv2d: a spatial kernel needs input_size")
    with_bias, linear = _conv_same(module, weight, bias), _conv_same(module, weight, None)  # type: ignore[arg-type]
    return lambda x, dx: (with_bias(x), _each(linear, dx))


# -- activations ----------------------------------------------------------------------------------------------------
def _pointwise(f: Callable[[mpf], mpf], df: Callable[[mpf], mpf]) -> Jet:
    """``h = f(x)``, ``dh = f'(x) dx`` elementwise."""
    lift, dlift = np.frompyfunc(f, 1, 1), np.frompyfunc(df, 1, 1)

    def run(x: MPArray, dx: MPArray | None) -> tuple[MPArray, MPArray | None]:
        h = np.asarray(lift(x), dtype=object)
        return h, None if dx is None else dx * np.asarray(dlift(x), dtype=object)

    return run


def _sigmoid(t: mpf) -> mpf:
    return 1 / (1 + mp.exp(-t))


@register_jet(LipSwish)
def _lipswish(module: nn.Module, builder: Builder) -> Jet:
    """``f(x) = x sigmoid(beta x) / 1.1`` with ``beta = softplus(b) = log(1 + e^b)``;
    ``f'(x) = [s + beta x s (1 - s)] / 1.1`` with ``s = sigmoid(beta x)``."""
    (raw,) = from_tensor(module.beta).reshape(-1)
    beta = mp.log1p(mp.exp(raw))
    scale = mpf("1.1")

    def df(v: mpf) -> mpf:
        s = _sigmoid(beta * v)
        return (s + beta * v * s * (1 - s)) / scale

    return _pointwise(lambda v: v * _sigmoid(beta * v) / scale, df)


@register_jet(LipschitzCube)
def _lipschitz_cube(module: nn.Module, builder: Builder) -> Jet:
    """``f(x) = x^3 / 3`` on ``[-1, 1]``, ``x - 2/3 sign(x)`` beyond; ``f'(x) = min(x^2, 1)``."""
    third = mpf(1) / 3
    return _pointwise(lambda v: v**3 * third if abs(v) <= 1 else v - 2 * third * mp.sign(v),
                      lambda v: min(v * v, mpf(1)))


@register_jet(LipSoftplus)
def _lip_softplus(module: nn.Module, builder: Builder) -> Jet:
    """``f(x) = log(1 + e^x)``, ``f'(x) = sigmoid(x)``."""
    return _pointwise(lambda v: mp.log1p(mp.exp(v)), _sigmoid)


@register_jet(nn.ELU, net=False)
def _elu(module: nn.Module, builder: Builder) -> Jet:
    """``x`` for ``x > 0``, ``alpha (e^x - 1)`` otherwise."""
    alpha = mpf(float(module.alpha))
    return _pointwise(lambda v: v if v > 0 else alpha * mp.expm1(v), lambda v: mpf(1) if v > 0 else alpha * mp.exp(v))


@register_jet(nn.ReLU, net=False)
def _relu(module: nn.Module, builder: Builder) -> Jet:
    return _pointwise(lambda v: v if v > 0 else mpf(0), lambda v: mpf(1) if v > 0 else mpf(0))


@register_jet(nn.Tanh, net=False)
def _tanh(module: nn.Module, builder: Builder) -> Jet:
    return _pointwise(mp.tanh, lambda v: 1 - mp.tanh(v) ** 2)


@register_jet(nn.Identity, net=False)
def _identity(module: nn.Module, builder: Builder) -> Jet:
    return lambda x, dx: (x, dx)


def _permute_channels(x: MPArray, dx: MPArray | None, order: np.ndarray) -> tuple[MPArray, MPArray | None]:
    """``h[c, p] = x[order[c, p], p]`` at every position ``p`` (a piecewise permutation), tangents alike."""
    columns = x.reshape(x.shape[0], -1)
    positions = np.arange(columns.shape[1])
    h = columns[order, positions].reshape(x.shape)
    if dx is None:
        return h, None
    dcols = dx.reshape(dx.shape[0], x.shape[0], -1)
    return h, dcols[:, order, positions].reshape(dx.shape)


@register_jet(MaxMin)
def _maxmin(module: nn.Module, builder: Builder) -> Jet:
    """Channels ``(a, b) = (x[:C/2], x[C/2:])`` become ``(max(a, b), min(a, b))``."""

    def run(x: MPArray, dx: MPArray | None) -> tuple[MPArray, MPArray | None]:
        c = x.shape[0]
        if c % 2:
            raise ValueError(f"reference MaxMin: needs an even number of channels, got {c}")
        columns = x.reshape(c, -1)
        half = c // 2
        first = np.array([[i if columns[i, p] >= columns[i + half, p] else i + half for p in range(columns.shape[1])]
                          for i in range(half)], dtype=np.int64)
        second = np.where(first < half, first + half, first - half)
        return _permute_channels(x, dx, np.concatenate([first, second]))

    return run


@register_jet(FullSort)
def _fullsort(module: nn.Module, builder: Builder) -> Jet:
    """The channels of each position in descending order."""

    def run(x: MPArray, dx: MPArray | None) -> tuple[MPArray, MPArray | None]:
        columns = x.reshape(x.shape[0], -1)
        order = np.array([sorted(range(columns.shape[0]), key=lambda i: columns[i, p], reverse=True)
                          for p in range(columns.shape[1])], dtype=np.int64).T
        return _permute_channels(x, dx, order)

    return run


# -- layers -------------------------------------------------------------------------------------------------------
@register_layer_reference(ResidualBlock)
def _residual_block(module: nn.Module, builder: Builder) -> LayerMap:
    """``y = x + g(x)``; ``log|det J| = log|det(I + J_g(x))|`` with ``J_g`` from the branch's tangents."""
    if module.estimator.method != "exact":
        raise NotImplementedError(f"reference ResidualBlock: only the exact log-det is a deterministic map; this "
                                  f"block estimates it ({module.estimator.method!r})")
    branch = branch_jet(module.nnet, builder)

    def run(x: MPArray) -> tuple[MPArray, mpf]:
        if not logdet_wanted():
            return x + branch(x, None)[0], mpmath.nan
        d = x.size
        eye = np.array([[mpf(i == k) for i in range(d)] for k in range(d)], dtype=object)
        gx, dg = branch(x, eye.reshape((d, *x.shape)))
        jg = dg.reshape(d, d).T  # type: ignore[union-attr]  # column k is dg/dx_k
        jacobian = mp.matrix((eye + jg).tolist())
        return x + gx, mp.log(abs(mp.det(jacobian)))

    return run


@register_layer_reference(_Flattened)
def _flattened(module: nn.Module, builder: Builder) -> LayerMap:
    """The wrapped flat layer applied to ``x.flatten()``, the output reshaped back."""
    inner = builder.layer(module.fc_module)

    def run(x: MPArray) -> tuple[MPArray, mpf]:
        y, logdet = inner(x.reshape(-1))
        return y.reshape(x.shape), logdet

    return run


register_layer_reference(ResidualFlow, DenseResidualFlow)(layer_reference_factory(Sequential))  # type: ignore[arg-type]
