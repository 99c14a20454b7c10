r"""Local bi-Lipschitz bounds of affine couplings on a bounded domain, and interval propagation through their nets.

An affine coupling has no global Lipschitz bound, but on a box it has one. Write the coupling as
``y1 = x1``, ``y2 = (x2 + t) * s`` (Glow order) or ``y2 = x2 * s + t`` (RealNVP order), with ``h = net(x1)``,
``t = h[:, 0::2]``, ``s = g(h_s)``, ``h_s = h[:, 1::2]``. Its Jacobian is, up to a permutation of the entries,
``[[I, 0], [A, D]]`` with ``D = diag(s)`` and ``A = [diag(p) | diag(w)] P J_h`` (``P`` a row permutation):

- Glow order: ``p = s``, ``w = (x2 + t) g'(h_s)``;  RealNVP order: ``p = 1``, ``w = x2 g'(h_s)``.

The inverse's Jacobian has the same shape with ``D = diag(1 / s)`` and

- Glow order (``x2 = y2 / s - t``): ``p = 1``, ``w = y2 g'(h_s) / s^2``;
- RealNVP order (``x2 = (y2 - t) / s``): ``p = 1 / s``, ``w = (y2 - t) g'(h_s) / s^2``.

Since ``||[diag(p) | diag(w)]|| = max_i sqrt(p_i^2 + w_i^2)`` and ``||J_h|| <= Lip(net)``, ``||A|| <= a`` with
``a = Lip(net) max_i sqrt(p_i^2 + w_i^2)`` over the domain, and with ``d = max_i D_ii`` the norm of the block matrix
is at most the norm of the ``2 x 2`` matrix of block norms, ``||[[1, 0], [a, d]]||``. The suprema of ``|p_i|``,
``|w_i|``, ``s_i`` and ``1 / s_i`` over the box come from interval bounds on ``h`` (:func:`interval_bounds`, or
``net(centre) +- Lip(net) * radius`` for networks it does not know) and the monotonicity of each scale function
(every ``g`` is increasing and ``g'`` is unimodal). A learned :class:`~invertible.Split` is the same map with
``t = -mean``, ``s = exp(-logsd)``.

These bounds are rigorous (up to float64 round-off) and loose: they are what the local theory guarantees, to be
held against measured singular values, which they never undercut.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base import Bounds, Inverse, InvertibleModule, Sequential, allow_nonfinite
from ..layers import AffineCoupling, Partial, Split
from ..nets import NetActNorm, ZeroConv2d, lipschitz_bound

__all__ = ["affine_coupling_local_bounds", "block_norm_bound", "interval_bounds", "local_bounds",
           "scale_function_range", "split_local_bounds"]

_MONOTONE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.Softplus, nn.Identity)
_SILU_ARGMIN, _SILU_MIN = -1.2784645427610738, -0.2784645427610738


def _ibp(module: nn.Module, c: Tensor, r: Tensor) -> tuple[Tensor, Tensor] | None:
    """Centre/radius interval propagation; ``None`` for a module it does not know."""
    if isinstance(module, nn.Sequential):
        for m in module:
            out = _ibp(m, c, r)
            if out is None:
                return None
            c, r = out
        return c, r
    if isinstance(module, nn.Linear):
        w = module.weight.double()
        b = None if module.bias is None else module.bias.double()
        return F.linear(c, w, b), F.linear(r, w.abs())
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            return None
        args = (module.stride, module.padding, module.dilation, module.groups)
        w = module.weight.double()
        b = None if module.bias is None else module.bias.double()
        return F.conv2d(c, w, b, *args), F.conv2d(r, w.abs(), None, *args)
    if isinstance(module, ZeroConv2d):
        out = _ibp(module.conv, c, r)
        if out is None:
            return None
        scale = torch.exp(module.logs.double() * module.logscale_factor).view(1, -1, 1, 1)
        return out[0] * scale, out[1] * scale
    if isinstance(module, NetActNorm):
        layer = module.actnorm
        view = (1, -1, *([1] * (c.dim() - 2)))
        scale = layer.scale().double().view(view)
        return (c + layer.bias.double().view(view)) * scale, r * scale
    lo, hi = c - r, c + r
    if isinstance(module, _MONOTONE) or (isinstance(module, nn.LeakyReLU) and module.negative_slope >= 0):
        lo, hi = module(lo), module(hi)
    elif isinstance(module, nn.SiLU):
        f_lo, f_hi = F.silu(lo), F.silu(hi)
        inside = (lo <= _SILU_ARGMIN) & (hi >= _SILU_ARGMIN)
        lo = torch.where(inside, torch.full_like(lo, _SILU_MIN), torch.minimum(f_lo, f_hi))
        hi = torch.maximum(f_lo, f_hi)
    else:
        return None
    return (lo + hi) / 2, (hi - lo) / 2


def interval_bounds(net: nn.Module, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor] | None:
    """Entrywise bounds ``[lo', hi']`` of ``net(x)`` over the box ``lo <= x <= hi`` (float64).

    Interval arithmetic in centre/radius form through ``nn.Sequential`` stacks of ``Linear``, ``Conv2d`` (zero
    padding), the library's ``ZeroConv2d`` and ``NetActNorm``, and the activations ReLU, LeakyReLU, Tanh, Sigmoid,
    ELU, Softplus and SiLU. Returns ``None`` for any other module.

    Example:
        >>> net = nn.Sequential(nn.Linear(1, 1), nn.ReLU())
        >>> with torch.no_grad():
        ...     _ = net[0].weight.fill_(-2.0), net[0].bias.fill_(1.0)
        >>> interval_bounds(net, torch.tensor([[0.0]]), torch.tensor([[1.0]]))
        (tensor([[0.]], dtype=torch.float64), tensor([[1.]], dtype=torch.float64))
    """
    lo, hi = lo.detach().double(), hi.detach().double()
    with torch.no_grad():
        out = _ibp(net, (lo + hi) / 2, (hi - lo) / 2)
    return None if out is None else (out[0] - out[1], out[0] + out[1])


def _net_bounds(net: nn.Module, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor] | None:
    """Interval bounds of ``net`` on the box, by interval propagation or, failing that, by its Lipschitz bound."""
    out = interval_bounds(net, lo, hi)
    if out is not None:
        return out
    lip = lipschitz_bound(net)
    if lip is None:
        return None
    centre, radius = (lo + hi) / 2, float(((hi - lo) / 2).double().norm())
    with torch.no_grad():
        param = next(net.parameters(), None)
        h = net(centre.to(param.dtype) if param is not None else centre).double()
    return h - lip * radius, h + lip * radius


def _sigmoid_prime(u: Tensor) -> Tensor:
    s = torch.sigmoid(u)
    return s * (1 - s)


def scale_function_range(fn: str, lo: Tensor, hi: Tensor, *, shift: float = 2.0, eps: float = 0.01,
                         max_scale: float = 2.0) -> tuple[Tensor, Tensor, Tensor]:
    """``(min s, max s, max g')`` of ``s = g(h)`` over ``lo <= h <= hi``, entrywise, for each scale function of
    :func:`~invertible.layers.scale_and_log`. Every ``g`` is increasing and every ``g'`` unimodal with its peak at
    a known ``h*``, so ``max g' = g'(clamp(h*, lo, hi))``.

    Example:
        >>> s_lo, s_hi, dg = scale_function_range("sigmoid", torch.tensor([-2.0]), torch.tensor([0.0]))
        >>> float(s_lo), float(dg)
        (0.5, 0.25)
    """
    lo, hi = lo.double(), hi.double()

    def peak(h_star: float) -> Tensor:
        return torch.clamp(torch.full_like(lo, h_star), lo, hi)

    if fn in ("sigmoid", "sigmoid_eps", "bounded"):
        a, b = {"sigmoid": (1.0, 0.0), "sigmoid_eps": (1.0, eps), "bounded": (0.5, 0.5)}[fn]
        g = lambda h: a * torch.sigmoid(h + shift) + b  # noqa: E731
        return g(lo), g(hi), a * _sigmoid_prime(peak(-shift) + shift)
    if fn == "exp":
        return torch.exp(lo), torch.exp(hi), torch.exp(hi)
    if fn == "tanh_exp":
        c = math.log(max_scale)
        g = lambda h: torch.exp(c * torch.tanh(h))  # noqa: E731
        h_star = peak(math.atanh((math.sqrt(1 + c * c) - 1) / c))
        return g(lo), g(hi), c * (1 - torch.tanh(h_star) ** 2) * g(h_star)
    if fn == "symmetric":
        g = lambda h: (2 * torch.sigmoid(h) - 1) * (1 - eps) + 1  # noqa: E731
        return g(lo), g(hi), 2 * (1 - eps) * _sigmoid_prime(peak(0.0))
    raise ValueError(f"scale_function_range: unknown scale function {fn!r}")


def block_norm_bound(a: float, d: float) -> float:
    """``||[[1, 0], [a, d]]||_2``: a bound on ``||[[I, 0], [A, D]]||`` when ``||A|| <= a`` and ``||D|| <= d``.

    Example:
        >>> block_norm_bound(0.0, 3.0), round(block_norm_bound(1.0, 1.0), 6)
        (3.0, 1.618034)
    """
    if not (math.isfinite(a) and math.isfinite(d)):
        return math.inf
    t = 1.0 + a * a + d * d
    return math.sqrt((t + math.sqrt(max(t * t - 4.0 * d * d, 0.0))) / 2.0)


def _absmax(lo: Tensor, hi: Tensor) -> Tensor:
    return torch.maximum(lo.abs(), hi.abs())


def _mul(a_lo: Tensor, a_hi: Tensor, s_lo: Tensor, s_hi: Tensor) -> tuple[Tensor, Tensor]:
    """Interval product with ``s > 0``."""
    return torch.minimum(a_lo * s_lo, a_lo * s_hi), torch.maximum(a_hi * s_lo, a_hi * s_hi)


def _affine_bounds(x2: tuple[Tensor, Tensor], t: tuple[Tensor, Tensor], s_lo: Tensor, s_hi: Tensor, dg: Tensor,
                   lip: float, order: str) -> Bounds:
    """Forward bound on the box of ``x2``, inverse bound on the image box of ``y2`` (module docstring)."""
    if order == "glow":
        y2 = _mul(x2[0] + t[0], x2[1] + t[1], s_lo, s_hi)
        w_fwd, p_fwd = _absmax(x2[0] + t[0], x2[1] + t[1]) * dg, s_hi
        w_inv, p_inv = _absmax(*y2) * dg / s_lo**2, torch.ones_like(s_lo)
    else:
        m_lo, m_hi = _mul(x2[0], x2[1], s_lo, s_hi)
        y2 = (m_lo + t[0], m_hi + t[1])
        w_fwd, p_fwd = _absmax(*x2) * dg, torch.ones_like(s_lo)
        w_inv, p_inv = _absmax(y2[0] - t[1], y2[1] - t[0]) * dg / s_lo**2, 1 / s_lo
    a_fwd = lip * float(torch.sqrt(p_fwd**2 + w_fwd**2).max())
    a_inv = lip * float(torch.sqrt(p_inv**2 + w_inv**2).max())
    return Bounds(block_norm_bound(a_fwd, float(s_hi.max())), block_norm_bound(a_inv, float((1 / s_lo).max())))


def _box(x: Tensor) -> tuple[Tensor, Tensor]:
    x = x.detach().double()
    return x.amin(dim=0, keepdim=True), x.amax(dim=0, keepdim=True)


def affine_coupling_local_bounds(layer: AffineCoupling, lo: Tensor, hi: Tensor) -> Bounds:
    """Bounds of ``||J_f(x)||`` for every ``x`` in the box ``[lo, hi]`` and of ``||J_{f^-1}(y)||`` for every ``y``
    in a box containing its image (module docstring); ``(None, None)`` if the network cannot be bounded.

    ``lo`` and ``hi`` have the shape of a batch of one input, e.g. ``x.amin(0, keepdim=True)``.

    Example:
        >>> import invertible
        >>> layer = invertible.AffineCoupling(4, hidden=8, net="mlp", zero_init=False, scale_fn="bounded").double()
        >>> x = torch.randn(16, 4, dtype=torch.float64)
        >>> bounds = affine_coupling_local_bounds(layer, x.amin(0, keepdim=True), x.amax(0, keepdim=True))
        >>> from invertible.diagnostics import singular_values
        >>> bool(singular_values(layer, x)[:, 0].max() <= bounds.forward)
        True
    """
    lip = lipschitz_bound(layer.net)
    (x1_lo, x2_lo), (x1_hi, x2_hi) = layer._split(lo.double()), layer._split(hi.double())
    h = _net_bounds(layer.net, x1_lo, x1_hi)
    if lip is None or h is None:
        return Bounds(None, None)
    s_lo, s_hi, dg = scale_function_range(layer.scale_fn, h[0][:, 1::2], h[1][:, 1::2], shift=layer.shift,
                                          eps=layer.eps, max_scale=layer.max_scale)
    return _affine_bounds((x2_lo, x2_hi), (h[0][:, 0::2], h[1][:, 0::2]), s_lo, s_hi, dg, lip, layer.order)


def split_local_bounds(layer: Split, lo: Tensor, hi: Tensor) -> Bounds:
    """:func:`affine_coupling_local_bounds` for a learned :class:`~invertible.Split`, ``y2 = (x2 - mean) / sd``."""
    if layer.prior is None:
        return layer.lipschitz_bounds()
    lip = lipschitz_bound(layer.prior)
    k = layer.kept
    h = _net_bounds(layer.prior, lo.double()[:, :k], hi.double()[:, :k])
    if lip is None or h is None:
        return Bounds(None, None)
    t = (-h[1][:, 0::2], -h[0][:, 0::2])  # t = -mean
    h_lo, h_hi = -h[1][:, 1::2], -h[0][:, 1::2]  # s = exp(-logsd)
    s_lo, s_hi, dg = scale_function_range("exp", h_lo, h_hi)
    return _affine_bounds((lo.double()[:, k:], hi.double()[:, k:]), t, s_lo, s_hi, dg, lip, "glow")


def local_bounds(module: InvertibleModule, x: Tensor) -> Bounds:
    """Upper bounds on ``||J_f(x_i)||`` and ``||J_f(x_i)^-1||`` at every sample ``x_i`` of the batch.

    - affine couplings and learned splits: :func:`affine_coupling_local_bounds` on the box the batch spans (valid
      on the whole box, not just at the samples);
    - :class:`~invertible.Partial` and :class:`~invertible.Inverse`: from the wrapped layer;
    - :class:`~invertible.Sequential`: the product of its layers' local bounds, each on the box of its own inputs
      (valid at the samples, since each sample's intermediate values lie in those boxes);
    - any other layer: its global ``lipschitz_bounds()``.

    Example:
        >>> from invertible.models import Glow
        >>> flow = Glow((1, 4, 4), levels=1, depth=2, hidden=4).double()
        >>> x = torch.rand(8, 1, 4, 4, dtype=torch.float64)
        >>> flow.lipschitz_bounds(), all(b is not None for b in local_bounds(flow, x))
        (Bounds(forward=None, inverse=None), True)
    """
    with torch.no_grad(), allow_nonfinite():
        if isinstance(module, Sequential):
            fwd: float | None = 1.0
            inv: float | None = 1.0
            for layer in module:
                b = local_bounds(layer, x)
                fwd = None if fwd is None or b.forward is None else fwd * b.forward
                inv = None if inv is None or b.inverse is None else inv * b.inverse
                x = layer(x)[0]
            return Bounds(fwd, inv)
        module(x)  # data-dependent layers (ActNorm, also inside nets) initialise before their parameters are read
        if isinstance(module, Partial):
            b = local_bounds(module.layer, x[:, : module.active])
            return Bounds(*(None if v is None else max(1.0, v) for v in b))
        if isinstance(module, Inverse):
            b = local_bounds(module.layer, module.layer.inverse(x)[0])
            return Bounds(b.inverse, b.forward)
        if isinstance(module, AffineCoupling):
            return affine_coupling_local_bounds(module, *_box(x))
        if isinstance(module, Split) and module.learned:
            return split_local_bounds(module, *_box(x))
    return module.lipschitz_bounds()
