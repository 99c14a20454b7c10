r"""Additive and affine coupling layers (NICE, RealNVP, Glow) with the scale functions the paper compares.

A coupling splits its input into a conditioning half ``x1`` and a transformed half ``x2``; a network of ``x1``
gives the parameters of an elementwise bijection of ``x2``. The layer owns that algebra once
(``_conditioner``, ``_transform``) and uses it for the map, its inverse, memory-saving backprop (one network
evaluation serves the rebuild and the local graph) and its local bi-Lipschitz bounds.

Local bounds of an affine coupling on a box (:meth:`AffineCoupling.box_bounds`). Written as ``y1 = x1``,
``y2 = (x2 + t) * s`` (Glow order) or ``y2 = x2 * s + t`` (RealNVP order), with ``h = net(x1)``, ``t = h[:, 0::2]``,
``s = g(h_s)``, ``h_s = h[:, 1::2]``, its Jacobian is, up to a permutation of the entries, ``[[I, 0], [A, D]]``
with ``D = diag(s)`` and ``A = [diag(p) | diag(w)] P J_h`` (``P`` a row permutation):

- Glow order: ``p = s``, ``w = (x2 + t) g'(h_s)``;  RealNVP order: ``p = 1``, ``w = x2 g'(h_s)``.

The inverse's Jacobian has the same shape with ``D = diag(1 / s)`` and

- Glow order (``x2 = y2 / s - t``): ``p = 1``, ``w = y2 g'(h_s) / s^2``;
- RealNVP order (``x2 = (y2 - t) / s``): ``p = 1 / s``, ``w = (y2 - t) g'(h_s) / s^2``.

Since ``||[diag(p) | diag(w)]|| = max_i sqrt(p_i^2 + w_i^2)`` and ``||J_h|| <= Lip(net)``, ``||A|| <= a`` with
``a = Lip(net) max_i sqrt(p_i^2 + w_i^2)`` over the box, and with ``d = max_i D_ii`` the norm of the block matrix
is at most that of the ``2 x 2`` matrix of block norms, ``||[[1, 0], [a, d]]||`` (:func:`block_norm_bound`). The
suprema over the box come from interval bounds on ``h`` (:func:`~invertible.layers.nets.net_bounds`) and the scale
function's :meth:`~invertible.layers.scale.ScaleFunction.interval`. The bounds are rigorous (up to float64
round-off) and loose.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..base import Bounds, InvertibleModule, Relinearized, leaf, logdet_zeros
from .nets import conv_net, lipschitz_bound, mlp, net_bounds
from .scale import SCALE_FNS, ScaleFunction, make_scale

__all__ = ["SCALE_FNS", "AdditiveCoupling", "AffineCoupling", "affine_box_bounds", "batch_box", "block_norm_bound",
           "scale_and_log"]


def scale_and_log(
    h: Tensor, fn: str | ScaleFunction, *, shift: float = 2.0, eps: float = 0.01, max_scale: float = 2.0
) -> tuple[Tensor, Tensor]:
    """The scale ``s = g(h)`` and ``log s`` of the scale function ``fn`` (a name of
    :data:`~invertible.layers.scale.SCALE_FUNCTIONS` with its parameters, or a
    :class:`~invertible.layers.scale.ScaleFunction`); ``make_scale(fn, ...)(h)``."""
    if isinstance(fn, ScaleFunction):
        return fn(h)
    return make_scale(fn, shift=shift, eps=eps, max_scale=max_scale)(h)


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


def affine_box_bounds(x2: tuple[Tensor, Tensor], t: tuple[Tensor, Tensor], s_lo: Tensor, s_hi: Tensor, dg: Tensor,
                      lip: float, order: str) -> Bounds:
    """Bounds of an affine coupling's Jacobian on the box of ``x2`` (forward) and of its inverse's on the image
    box of ``y2``, from intervals of ``x2`` and ``t``, the range ``[s_lo, s_hi]`` of ``s``, the bound ``dg`` on
    ``g'`` and ``lip`` on the network (module docstring)."""
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


def batch_box(x: Tensor) -> tuple[Tensor, Tensor]:
    """The smallest box ``[lo, hi]`` (each of the shape of one sample, float64) that holds the batch ``x``."""
    x = x.detach().double()
    return x.amin(dim=0, keepdim=True), x.amax(dim=0, keepdim=True)


def _split_sizes(channels: int) -> tuple[int, int]:
    if channels < 2:
        raise ValueError(f"a coupling needs at least 2 channels, got {channels}")
    return channels // 2, channels - channels // 2


def _make_net(net: str | nn.Module | Callable[[int, int], nn.Module], c_in: int, c_out: int, hidden: int,
              zero_init: bool, net_actnorm: bool) -> tuple[nn.Module, tuple[int, ...]]:
    if net == "conv":
        return conv_net(c_in, c_out, hidden, actnorm=net_actnorm, zero_init=zero_init), (4,)
    if net == "mlp":
        return mlp(c_in, c_out, hidden, zero_init=zero_init), (2,)
    if isinstance(net, nn.Module):
        return net, (2, 3, 4)
    if callable(net):
        return net(c_in, c_out), (2, 3, 4)
    raise ValueError(f"net must be 'conv', 'mlp', an nn.Module or a factory (in, out) -> nn.Module, got {net!r}")


class _Coupling(InvertibleModule):
    """Shared split/merge logic: ``x1`` conditions, ``x2`` is transformed (``swap`` exchanges the halves).

    Subclasses give the algebra once: ``_conditioner(x1)`` (the parameters of the elementwise map, from the
    network) and ``_transform(x2, params, direction)`` (the new half and the log-det); the map, its inverse and the
    fused memory-saving rule are built from them.
    """

    out_per_channel = 1

    def __init__(self, channels: int, out_per_channel: int, net: str | nn.Module | Callable[[int, int], nn.Module],
                 hidden: int, zero_init: bool, net_actnorm: bool, swap: bool) -> None:
        c1, c2 = _split_sizes(channels)
        if swap:
            c1, c2 = c2, c1
        module, ranks = _make_net(net, c1, out_per_channel * c2, hidden, zero_init, net_actnorm)
        super().__init__(channels=channels, ranks=ranks)
        self.net = module
        self.swap = swap
        self.sizes = (c1, c2)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        c1, c2 = self.sizes
        if self.swap:
            x2, x1 = x.split([c2, c1], dim=1)
        else:
            x1, x2 = x.split([c1, c2], dim=1)
        return x1, x2

    def _merge(self, x1: Tensor, x2: Tensor) -> Tensor:
        return torch.cat([x2, x1] if self.swap else [x1, x2], dim=1)

    def _net(self, x1: Tensor) -> Tensor:
        h = self.net(x1)
        expected = (x1.shape[0], self.out_per_channel * self.sizes[1], *x1.shape[2:])
        if tuple(h.shape) != expected:
            raise ValueError(f"{type(self).__name__}: the coupling network returned shape {tuple(h.shape)}, "
                             f"expected {expected}")
        return h

    def _conditioner(self, x1: Tensor) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def _transform(self, x2: Tensor, params: tuple[Tensor, ...], direction: str) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x1, x2 = self._split(x)
        y2, logdet = self._transform(x2, self._conditioner(x1), "forward")
        return self._merge(x1, y2), logdet

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        y1, y2 = self._split(y)
        x2, logdet = self._transform(y2, self._conditioner(y1), "inverse")
        return self._merge(y1, x2), logdet

    def _relinearize(self, out: Tensor, direction: str, need_input_grad: bool) -> Relinearized:
        # The conditioning half a1 is the same on both sides, so the network runs once, with a graph: its detached
        # value rebuilds the other half, and its graph carries the parameter and input gradients (three network
        # evaluations per step instead of four: about 1.33x the cost of standard backprop, not 1.67x).
        if not self._maps_as(_Coupling):
            return super()._relinearize(out, direction, need_input_grad)
        a1, a2 = self._split(out)
        c1 = leaf(a1, need_input_grad)
        with torch.enable_grad():
            params = self._conditioner(c1)
        undo = "inverse" if direction == "forward" else "forward"
        with torch.no_grad():
            other = self._transform(a2, params, undo)[0]
        c2 = leaf(other, need_input_grad)
        with torch.enable_grad():
            new, logdet = self._transform(c2, params, direction)
            result = self._merge(c1, new)
        return Relinearized(self._merge(a1, other), (result, logdet), (c1, c2),
                            lambda grads: self._merge(grads[0], grads[1]))


class AdditiveCoupling(_Coupling):
    r"""Additive coupling (NICE): ``y1 = x1``, ``y2 = x2 + t(x1)``.

    Math:
        forward ``y2 = x2 + t(x1)``; inverse ``x2 = y2 - t(y1)``; ``log|det J| = 0``. With ``a`` an upper bound
        on ``Lip(t)``, both directions are ``(a + sqrt(a^2 + 4)) / 2 <= 1 + a`` Lipschitz (the norm of
        ``[[I, 0], [A, I]]`` with ``||A|| <= a``): a global bound, which is why additive flows stay invertible.

    Args:
        channels: number of channels; ``x1`` is the first ``channels // 2`` of them (the last ones with ``swap``).
        hidden: width of the coupling network.
        net: ``"conv"`` (Glow's conv net, image inputs), ``"mlp"`` (flat inputs), a module, or a factory
            ``(in_channels, out_channels) -> nn.Module``.
        zero_init: zero-initialise the network's last layer, so the layer starts as the identity.
        net_actnorm: ActNorm after the first two convolutions of the conv net.
        swap: condition on the second half and transform the first.

    Example:
        >>> layer = AdditiveCoupling(4, hidden=8, net="mlp", zero_init=False)
        >>> x = torch.randn(3, 4)
        >>> bool(torch.allclose(layer.inverse(layer(x)[0])[0], x, atol=1e-6))
        True
    """

    def __init__(self, channels: int, *, hidden: int = 512, net: str | nn.Module | Callable[[int, int], nn.Module]
                 = "conv", zero_init: bool = True, net_actnorm: bool = False, swap: bool = False) -> None:
        super().__init__(channels, 1, net, hidden, zero_init, net_actnorm, swap)

    def _conditioner(self, x1: Tensor) -> tuple[Tensor, ...]:
        return (self._net(x1),)

    def _transform(self, x2: Tensor, params: tuple[Tensor, ...], direction: str) -> tuple[Tensor, Tensor]:
        (t,) = params
        return (x2 + t if direction == "forward" else x2 - t), logdet_zeros(x2)

    def lipschitz_bounds(self) -> Bounds:
        a = lipschitz_bound(self.net)
        if a is None:
            return Bounds(None, None)
        b = (a + math.sqrt(a * a + 4.0)) / 2.0
        return Bounds(b, b)


class AffineCoupling(_Coupling):
    r"""Affine coupling (RealNVP, Glow): ``y1 = x1`` and ``x2`` scaled by ``s = g(h_s)`` and shifted by ``t``.

    The network output ``h = net(x1)`` is split channel-wise into the shift ``t = h[:, 0::2]`` and the raw scale
    ``h_s = h[:, 1::2]`` (Glow's "cross" split); ``g`` is a :class:`~invertible.layers.scale.ScaleFunction`
    (``scale``), given by name (:data:`~invertible.layers.scale.SCALE_FNS`) or as an object.

    Math:
        - ``order="glow"``: ``y2 = (x2 + t) * s``, inverse ``x2 = y2 / s - t``;
        - ``order="realnvp"``: ``y2 = x2 * s + t``, inverse ``x2 = (y2 - t) / s``;
        - ``log|det J| = sum log s`` over the transformed entries; ``log|det J^-1| = -sum log s``.

        No global Lipschitz bound exists in either direction: the off-diagonal Jacobian block contains
        ``x2 * dg/dh * dh/dx1``, unbounded in ``x2``, and for ``sigmoid``/``exp`` the inverse's ``1/s`` is
        unbounded too. Bounded scales (``bounded``, ``tanh_exp``, ``sigmoid_eps``, ``symmetric``) bound the
        diagonal part only. ``lipschitz_bounds()`` is therefore ``(None, None)``; on a box the layer is bounded
        (:meth:`box_bounds`, the module docstring), which is what :meth:`~invertible.InvertibleModule.local_bounds`
        gives at a batch.

    Args:
        channels, hidden, net, zero_init, net_actnorm, swap: as in :class:`AdditiveCoupling`.
        scale_fn: the scale function: a registered name or a :class:`~invertible.layers.scale.ScaleFunction`.
        shift, eps, max_scale: parameters of a scale function given by name (the sigmoid variants' offset, 2 in
            Glow; the constant of ``sigmoid_eps`` and ``symmetric``; the bound ``M`` of ``tanh_exp``); each is
            used by the functions that have it.
        order: ``"glow"`` or ``"realnvp"``.

    Example:
        >>> layer = AffineCoupling(4, hidden=8, net="mlp", zero_init=False, scale_fn="bounded")
        >>> x = torch.randn(3, 4)
        >>> y, logdet = layer(x)
        >>> bool(torch.allclose(layer.inverse(y)[1], -logdet)), layer.scale_range()
        (True, (0.5, 1.0))
    """

    out_per_channel = 2

    def __init__(self, channels: int, *, hidden: int = 512, net: str | nn.Module | Callable[[int, int], nn.Module]
                 = "conv", zero_init: bool = True, net_actnorm: bool = False, swap: bool = False,
                 scale_fn: str | ScaleFunction = "sigmoid", shift: float | None = None, eps: float | None = None,
                 max_scale: float | None = None, order: str = "glow") -> None:
        if order not in ("glow", "realnvp"):
            raise ValueError(f"AffineCoupling: order must be 'glow' or 'realnvp', got {order!r}")
        try:
            scale = make_scale(scale_fn, shift=shift, eps=eps, max_scale=max_scale)
        except ValueError as exc:
            raise ValueError(f"AffineCoupling: {exc}") from None
        super().__init__(channels, 2, net, hidden, zero_init, net_actnorm, swap)
        self.scale, self.order = scale, order

    @property
    def scale_fn(self) -> str:
        """The scale function's registered name."""
        return self.scale.name

    @property
    def shift(self) -> float | None:
        """The scale function's ``shift`` (``None`` if it has none)."""
        return getattr(self.scale, "shift", None)

    @property
    def eps(self) -> float | None:
        """The scale function's ``eps`` (``None`` if it has none)."""
        return getattr(self.scale, "eps", None)

    @property
    def max_scale(self) -> float | None:
        """The scale function's ``max_scale`` (``None`` if it has none)."""
        return getattr(self.scale, "max_scale", None)

    def scale_shift(self, x1: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(s, log s, t)`` computed from the conditioning half ``x1``."""
        h = self._net(x1)
        s, log_s = self.scale(h[:, 1::2])
        return s, log_s, h[:, 0::2]

    def _conditioner(self, x1: Tensor) -> tuple[Tensor, ...]:
        return self.scale_shift(x1)

    def _transform(self, x2: Tensor, params: tuple[Tensor, ...], direction: str) -> tuple[Tensor, Tensor]:
        s, log_s, t = params
        logdet = log_s.flatten(1).sum(1)
        glow = self.order == "glow"
        if direction == "forward":
            return ((x2 + t) * s if glow else x2 * s + t), logdet
        return (x2 / s - t if glow else (x2 - t) / s), -logdet

    def scale_range(self) -> tuple[float, float]:
        """The open interval that ``s`` lies in, whatever the network outputs."""
        return self.scale.range()

    def box_bounds(self, lo: Tensor, hi: Tensor) -> Bounds:
        """Bounds of ``||J_f(x)||`` for every ``x`` in the box ``[lo, hi]`` and of ``||J_{f^-1}(y)||`` for every
        ``y`` in a box containing its image (module docstring); ``(None, None)`` if the network cannot be bounded.

        ``lo`` and ``hi`` have the shape of a batch of one input, e.g. ``x.amin(0, keepdim=True)``.
        """
        lip = lipschitz_bound(self.net)
        (x1_lo, x2_lo), (x1_hi, x2_hi) = self._split(lo.double()), self._split(hi.double())
        h = net_bounds(self.net, x1_lo, x1_hi)
        if lip is None or h is None:
            return Bounds(None, None)
        s_lo, s_hi, dg = self.scale.interval(h[0][:, 1::2], h[1][:, 1::2])
        return affine_box_bounds((x2_lo, x2_hi), (h[0][:, 0::2], h[1][:, 0::2]), s_lo, s_hi, dg, lip, self.order)

    def _local_bounds(self, x: Tensor) -> Bounds:
        self(x)  # initialises data-dependent layers inside the network
        if not self._maps_as(AffineCoupling):
            return self.lipschitz_bounds()
        return self.box_bounds(*batch_box(x))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, scale={self.scale!r}, order={self.order!r}"
