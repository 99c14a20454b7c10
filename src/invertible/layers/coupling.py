"""Additive and affine coupling layers (NICE, RealNVP, Glow) with the scale functions the paper compares."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base import Bounds, InvertibleModule, logdet_zeros
from ..nets import conv_net, lipschitz_bound, mlp

__all__ = ["SCALE_FNS", "AdditiveCoupling", "AffineCoupling", "scale_and_log"]

#: Names of the affine scale functions ``s = g(h)``; see :func:`scale_and_log`.
SCALE_FNS = ("sigmoid", "sigmoid_eps", "exp", "bounded", "tanh_exp", "symmetric")


def scale_and_log(
    h: Tensor, fn: str, *, shift: float = 2.0, eps: float = 0.01, max_scale: float = 2.0
) -> tuple[Tensor, Tensor]:
    """The scale ``s = g(h)`` and ``log s`` for each scale function (``log s`` computed stably).

    ============== ======================================= ===================
    name           ``g(h)``                                range of ``s``
    ============== ======================================= ===================
    sigmoid        ``sigmoid(h + shift)`` (Glow)            ``(0, 1)``
    sigmoid_eps    ``sigmoid(h + shift) + eps``             ``(eps, 1 + eps)``
    exp            ``exp(h)`` (RealNVP)                     ``(0, inf)``
    bounded        ``0.5 * sigmoid(h + shift) + 0.5``       ``(0.5, 1)``
    tanh_exp       ``exp(log(max_scale) * tanh(h))``        ``(1/M, M)``
    symmetric      ``(2 sigmoid(h) - 1)(1 - eps) + 1``      ``(eps, 2 - eps)``
    ============== ======================================= ===================
    """
    if fn == "sigmoid":
        z = h + shift
        return torch.sigmoid(z), F.logsigmoid(z)
    if fn == "exp":
        return torch.exp(h), h
    if fn == "tanh_exp":
        log_s = math.log(max_scale) * torch.tanh(h)
        return torch.exp(log_s), log_s
    if fn == "sigmoid_eps":
        s = torch.sigmoid(h + shift) + eps
    elif fn == "bounded":
        s = 0.5 * torch.sigmoid(h + shift) + 0.5
    elif fn == "symmetric":
        s = (2 * torch.sigmoid(h) - 1) * (1 - eps) + 1
    else:
        raise ValueError(f"unknown scale function {fn!r}; choose one of {SCALE_FNS}")
    return s, torch.log(s)


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
    """Shared split/merge logic: ``x1`` conditions, ``x2`` is transformed (``swap`` exchanges the halves)."""

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

    out_per_channel = 1


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

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x1, x2 = self._split(x)
        return self._merge(x1, x2 + self._net(x1)), logdet_zeros(x)

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        y1, y2 = self._split(y)
        return self._merge(y1, y2 - self._net(y1)), logdet_zeros(y)

    def lipschitz_bounds(self) -> Bounds:
        a = lipschitz_bound(self.net)
        if a is None:
            return Bounds(None, None)
        b = (a + math.sqrt(a * a + 4.0)) / 2.0
        return Bounds(b, b)


class AffineCoupling(_Coupling):
    r"""Affine coupling (RealNVP, Glow): ``y1 = x1`` and ``x2`` scaled by ``s = g(h_s)`` and shifted by ``t``.

    The network output ``h = net(x1)`` is split channel-wise into the shift ``t = h[:, 0::2]`` and the raw scale
    ``h_s = h[:, 1::2]`` (Glow's "cross" split); ``g`` is one of :data:`SCALE_FNS` (see :func:`scale_and_log`).

    Math:
        - ``order="glow"``: ``y2 = (x2 + t) * s``, inverse ``x2 = y2 / s - t``;
        - ``order="realnvp"``: ``y2 = x2 * s + t``, inverse ``x2 = (y2 - t) / s``;
        - ``log|det J| = sum log s`` over the transformed entries; ``log|det J^-1| = -sum log s``.

        No global Lipschitz bound exists in either direction: the off-diagonal Jacobian block contains
        ``x2 * dg/dh * dh/dx1``, unbounded in ``x2``, and for ``sigmoid``/``exp`` the inverse's ``1/s`` is
        unbounded too. Bounded scales (``bounded``, ``tanh_exp``, ``sigmoid_eps``, ``symmetric``) bound the
        diagonal part only. ``lipschitz_bounds()`` is therefore ``(None, None)``; see :meth:`scale_range`.

    Args:
        channels, hidden, net, zero_init, net_actnorm, swap: as in :class:`AdditiveCoupling`.
        scale_fn: the scale function's name.
        shift: offset inside the sigmoid variants (2 in Glow).
        eps: the constant of ``sigmoid_eps`` and ``symmetric``.
        max_scale: the bound ``M`` of ``tanh_exp``.
        order: ``"glow"`` or ``"realnvp"``.

    Example:
        >>> layer = AffineCoupling(4, hidden=8, net="mlp", zero_init=False, scale_fn="bounded")
        >>> x = torch.randn(3, 4)
        >>> y, logdet = layer(x)
        >>> bool(torch.allclose(layer.inverse(y)[1], -logdet))
        True
    """

    out_per_channel = 2

    def __init__(self, channels: int, *, hidden: int = 512, net: str | nn.Module | Callable[[int, int], nn.Module]
                 = "conv", zero_init: bool = True, net_actnorm: bool = False, swap: bool = False,
                 scale_fn: str = "sigmoid", shift: float = 2.0, eps: float = 0.01, max_scale: float = 2.0,
                 order: str = "glow") -> None:
        if scale_fn not in SCALE_FNS:
            raise ValueError(f"AffineCoupling: scale_fn must be one of {SCALE_FNS}, got {scale_fn!r}")
        if order not in ("glow", "realnvp"):
            raise ValueError(f"AffineCoupling: order must be 'glow' or 'realnvp', got {order!r}")
        if scale_fn in ("sigmoid_eps", "symmetric") and not 0 < eps < 1:
            raise ValueError(f"AffineCoupling: eps must be in (0, 1) for {scale_fn}, got {eps}")
        if scale_fn == "tanh_exp" and max_scale <= 1:
            raise ValueError(f"AffineCoupling: max_scale must be > 1, got {max_scale}")
        super().__init__(channels, 2, net, hidden, zero_init, net_actnorm, swap)
        self.scale_fn, self.shift, self.eps, self.max_scale, self.order = scale_fn, shift, eps, max_scale, order

    def scale_shift(self, x1: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(s, log s, t)`` computed from the conditioning half ``x1``."""
        h = self._net(x1)
        s, log_s = scale_and_log(h[:, 1::2], self.scale_fn, shift=self.shift, eps=self.eps,
                                 max_scale=self.max_scale)
        return s, log_s, h[:, 0::2]

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x1, x2 = self._split(x)
        s, log_s, t = self.scale_shift(x1)
        y2 = (x2 + t) * s if self.order == "glow" else x2 * s + t
        return self._merge(x1, y2), log_s.flatten(1).sum(1)

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        y1, y2 = self._split(y)
        s, log_s, t = self.scale_shift(y1)
        x2 = y2 / s - t if self.order == "glow" else (y2 - t) / s
        return self._merge(y1, x2), -log_s.flatten(1).sum(1)

    def scale_range(self) -> tuple[float, float]:
        """The open interval that ``s`` lies in, whatever the network outputs."""
        return {
            "sigmoid": (0.0, 1.0),
            "sigmoid_eps": (self.eps, 1.0 + self.eps),
            "exp": (0.0, math.inf),
            "bounded": (0.5, 1.0),
            "tanh_exp": (1.0 / self.max_scale, self.max_scale),
            "symmetric": (self.eps, 2.0 - self.eps),
        }[self.scale_fn]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, scale_fn={self.scale_fn!r}, order={self.order!r}"
