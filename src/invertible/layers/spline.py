r"""Rational-quadratic spline layers: an elementwise spline with learned knots, and the spline coupling (NSF).

The spline's math, its stable inverse and the derivation of its bounds live in
:mod:`invertible.layers.spline_math`; these layers choose where the ``3K - 1`` raw parameters per entry come from.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..base import Bounds, InvertibleModule
from ..nets import conv_net, lipschitz_bound, mlp
from .spline_math import (
    SPLINE_LOGDET_ROUNDING,
    SplineSettings,
    block_norm,
    rq_derivative_bounds,
    rq_forward,
    rq_inverse,
)

__all__ = ["RationalQuadraticSpline", "SplineCoupling"]


def _flat_sum(t: Tensor) -> Tensor:
    return t.flatten(1).sum(dim=1) if t.dim() > 1 else t


class RationalQuadraticSpline(InvertibleModule):
    r"""An elementwise monotonic rational-quadratic spline with linear tails, learned per channel.

    Every entry of channel ``c`` (all positions of an image channel) goes through the same spline ``g_c``, whose
    ``3K - 1`` raw parameters are the layer's parameters (zero: the identity).

    Math:
        ``y = g_c(x)`` (the identity outside ``[-B, B]``; inside, the rational-quadratic interpolant of
        :mod:`~invertible.layers.spline_math`); inverse ``x = g_c^-1(y)`` by the cancellation-free root of a
        quadratic; ``log|det J| = sum log g_c'(x)``. The Jacobian is diagonal, so
        ``Lip(f) = max g'`` and ``Lip(f^-1) = 1 / min g'``; ``lipschitz_bounds()`` returns the per-bin bounds of
        :func:`~invertible.layers.spline_math.rq_derivative_bounds` at the current knots (slopes ``s_k``, knot
        derivatives ``d_k``), maximised over bins and channels (and 1 for the tails):
        ``Lip(f) <= max(1, max_k max(d_hi, min(2 s_k, 2 s_k^2 (s_k + d_hi) / (s_k + d_lo)^2)))`` (``2 s_k`` alone in
        the bins with ``d_lo < s_k < d_hi``) and
        ``Lip(f^-1) <= 1 / min(1, min_k min(d_lo, max(s_k^2 / d_hi, 2 s_k^2 (s_k + d_lo) / (s_k + d_hi)^2)))``.
        Whatever the parameters, these stay within ``settings.global_bounds()``.

    Args:
        channels: number of channels (dimension 1 of the input).
        bins, bound, min_width, min_height, min_derivative, max_derivative: see
            :class:`~invertible.layers.spline_math.SplineSettings`.

    Example:
        >>> layer = RationalQuadraticSpline(2, bins=4, bound=2.0).double()
        >>> with torch.no_grad():
        ...     _ = layer.params.normal_(generator=torch.Generator().manual_seed(0))
        >>> x = torch.randn(3, 2, dtype=torch.float64)
        >>> y, logdet = layer(x)
        >>> x_back, logdet_inv = layer.inverse(y)
        >>> bool(torch.allclose(x_back, x, atol=1e-12)) and bool(torch.allclose(logdet_inv, -logdet))
        True
    """

    logdet_rounding = SPLINE_LOGDET_ROUNDING

    def rounding_floor(self) -> float:
        return float(self.settings.bound)

    def __init__(self, channels: int, *, bins: int = 8, bound: float = 3.0, min_width: float = 1e-3,
                 min_height: float = 1e-3, min_derivative: float = 1e-3, max_derivative: float = 1e3) -> None:
        if channels < 1:
            raise ValueError(f"RationalQuadraticSpline: channels must be >= 1, got {channels}")
        super().__init__(channels=channels, ranks=(2, 3, 4))
        self.settings = SplineSettings(bins, bound, min_width, min_height, min_derivative, max_derivative)
        self.params = nn.Parameter(torch.zeros(channels, self.settings.params))

    def _knots(self, x: Tensor):  # type: ignore[no-untyped-def]
        view = (self.channels,) + (1,) * (x.dim() - 2) + (self.settings.params,)
        return self.settings.knots(self.params.view(view))

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, logd = rq_forward(x, self._knots(x))
        return y, _flat_sum(logd)

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x, logd = rq_inverse(y, self._knots(y))
        return x, -_flat_sum(logd)

    def derivative_range(self) -> tuple[float, float]:
        """``(lower, upper)`` bounds on ``g'`` over all inputs at the current parameters (tails included)."""
        with torch.no_grad():
            knots = self.settings.knots(self.params.detach().double())
            lower, upper = rq_derivative_bounds(knots.slopes(), knots.d[..., :-1], knots.d[..., 1:])
        return min(1.0, float(lower.min())), max(1.0, float(upper.max()))

    def lipschitz_bounds(self) -> Bounds:
        lower, upper = self.derivative_range()
        return Bounds(upper, 1.0 / lower)

    def extra_repr(self) -> str:
        s = self.settings
        return f"channels={self.channels}, bins={s.bins}, bound={s.bound}"


def _conditioner(net: str | nn.Module | Callable[[int, int], nn.Module], c_in: int, c_out: int, hidden: int,
                 zero_init: bool) -> tuple[nn.Module, tuple[int, ...]]:
    if net == "mlp":
        return mlp(c_in, c_out, hidden, zero_init=zero_init), (2,)
    if net == "conv":
        return conv_net(c_in, c_out, hidden, zero_init=zero_init), (4,)
    if isinstance(net, nn.Module):
        return net, (2, 3, 4)
    if callable(net) and not isinstance(net, str):
        return net(c_in, c_out), (2, 3, 4)
    raise ValueError(f"SplineCoupling: net must be 'mlp' (vectors), 'conv' (images), an nn.Module or a factory "
                     f"(in_channels, out_channels) -> nn.Module, got {net!r}")


class SplineCoupling(InvertibleModule):
    r"""Rational-quadratic spline coupling (neural spline flow): ``y1 = x1``, ``y2 = g(x2; net(x1))``.

    The channels are split in halves: ``x1 = x[:, :C//2]`` conditions and ``x2 = x[:, C//2:]`` is transformed
    (the other way round with ``swap``). The network maps ``x1`` to ``(3K - 1) * C2`` channels; channel
    ``i (3K - 1) + j`` is raw parameter ``j`` of transformed channel ``i`` (at each position), in the order
    widths, heights, derivatives of :mod:`~invertible.layers.spline_math`.

    Math:
        forward ``y2 = g(x2; theta(x1))`` elementwise; inverse ``x2 = g^-1(y2; theta(y1))`` (closed-form root);
        ``log|det J| = sum log g'(x2)``. The Jacobian is ``[[I, 0], [A, G]]`` with ``G = diag(g')`` and
        ``A = (dg/dtheta) J_net``. Bounds, for *any* parameters the network can produce (the spline's settings
        cap the bin slopes and knot derivatives): ``lower <= g' <= upper`` and ``||dg/dtheta|| <= C`` per entry
        (``settings.global_bounds()``, derived in :mod:`~invertible.layers.spline_math`); the rows of
        ``dg/dtheta`` have disjoint supports, so ``||A|| <= a = C Lip(net)``. Hence
        ``Lip(f) <= ||[[1, 0], [a, upper]]||`` and ``Lip(f^-1) <= ||[[1, 0], [a / lower, 1 / lower]]||``
        (the inverse Jacobian is ``[[I, 0], [-G^-1 A, G^-1]]``). Unlike affine couplings these are global
        bounds; they are ``None`` only when the network's Lipschitz constant cannot be bounded. They are worst
        cases over all parameters and loose at the default settings: choose larger ``min_width``,
        ``min_height``, ``min_derivative`` and a smaller ``max_derivative`` for tighter guarantees.

    Args:
        channels: number of channels (at least 2).
        bins, bound, min_width, min_height, min_derivative, max_derivative: the spline
            (:class:`~invertible.layers.spline_math.SplineSettings`).
        hidden: width of the network.
        net: ``"mlp"`` (flat inputs ``(B, C)``), ``"conv"`` (images ``(B, C, H, W)``, Glow's conv net), an
            ``nn.Module``, or a factory ``(in_channels, out_channels) -> nn.Module``.
        zero_init: zero-initialise the network's last layer, so the layer starts as the identity.
        swap: condition on the second half and transform the first.

    Example:
        >>> layer = SplineCoupling(4, bins=4, hidden=8, zero_init=False).double()
        >>> x = 2 * torch.randn(5, 4, dtype=torch.float64)
        >>> y, logdet = layer(x)
        >>> x_back, logdet_inv = layer.inverse(y)
        >>> bool(torch.allclose(x_back, x, atol=1e-10)) and bool(torch.allclose(logdet_inv, -logdet))
        True
        >>> all(b is not None for b in layer.lipschitz_bounds())
        True
    """

    logdet_rounding = SPLINE_LOGDET_ROUNDING

    def rounding_floor(self) -> float:
        return float(self.settings.bound)

    def __init__(self, channels: int, *, bins: int = 8, bound: float = 3.0, min_width: float = 1e-3,
                 min_height: float = 1e-3, min_derivative: float = 1e-3, max_derivative: float = 1e3,
                 hidden: int = 64, net: str | nn.Module | Callable[[int, int], nn.Module] = "mlp",
                 zero_init: bool = True, swap: bool = False) -> None:
        if channels < 2:
            raise ValueError(f"SplineCoupling: a coupling needs at least 2 channels, got {channels}")
        settings = SplineSettings(bins, bound, min_width, min_height, min_derivative, max_derivative)
        first, second = channels // 2, channels - channels // 2
        c1, c2 = (second, first) if swap else (first, second)
        module, ranks = _conditioner(net, c1, c2 * settings.params, hidden, zero_init)
        super().__init__(channels=channels, ranks=ranks)
        self.settings, self.swap, self.sizes, self.net = settings, swap, (c1, c2), module

    # -- split and merge: x1 conditions, x2 is transformed ---------------------------------------------------
    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        first = self.channels // 2
        a, b = x[:, :first], x[:, first:]
        return (b, a) if self.swap else (a, b)

    def _merge(self, x1: Tensor, x2: Tensor) -> Tensor:
        return torch.cat([x2, x1] if self.swap else [x1, x2], dim=1)

    def _validate(self, x: Tensor, direction: str, outer: bool) -> None:
        try:
            super()._validate(x, direction, outer)
        except ValueError as err:
            if isinstance(x, Tensor) and x.dim() not in self.ranks and self.ranks in ((2,), (4,)):
                hint = "net='conv'" if x.dim() == 4 else "net='mlp'"
                raise ValueError(f"{err}; for inputs of rank {x.dim()} build the layer with {hint}") from None
            raise

    def raw_params(self, x1: Tensor, context: Tensor | None = None) -> Tensor:
        """The raw spline parameters ``(B, C2, *spatial, 3K - 1)`` from the conditioning half.

        ``context`` is reserved for conditional flows (not supported yet: it must be ``None``).
        """
        if context is not None:
            raise NotImplementedError("SplineCoupling: context inputs are not supported yet")
        h = self.net(x1)
        c2, n = self.sizes[1], self.settings.params
        expected = (x1.shape[0], c2 * n, *x1.shape[2:])
        if tuple(h.shape) != expected:
            raise ValueError(f"SplineCoupling: the network returned shape {tuple(h.shape)}, expected {expected} "
                             f"((3 * bins - 1) * {c2} channels)")
        return h.reshape(x1.shape[0], c2, n, *x1.shape[2:]).movedim(2, -1)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x1, x2 = self._split(x)
        y2, logd = rq_forward(x2, self.settings.knots(self.raw_params(x1)))
        return self._merge(x1, y2), _flat_sum(logd)

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        y1, y2 = self._split(y)
        x2, logd = rq_inverse(y2, self.settings.knots(self.raw_params(y1)))
        return self._merge(y1, x2), -_flat_sum(logd)

    def lipschitz_bounds(self) -> Bounds:
        lip_net = lipschitz_bound(self.net)
        if lip_net is None:
            return Bounds(None, None)
        bounds = self.settings.global_bounds()
        a = bounds.sensitivity * lip_net
        return Bounds(block_norm(1.0, a, bounds.upper), block_norm(1.0, a / bounds.lower, 1.0 / bounds.lower))

    def extra_repr(self) -> str:
        s = self.settings
        return f"channels={self.channels}, bins={s.bins}, bound={s.bound}, swap={self.swap}"
