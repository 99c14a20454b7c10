r"""Monotonic rational-quadratic splines (Durkan et al. 2019) with linear tails: the map, its inverse and its bounds.

The spline is an elementwise map ``g`` that is the identity outside ``[-B, B]`` and, inside, a monotone
rational-quadratic interpolant through ``K + 1`` knots ``(x_k, y_k)`` with ``x_0 = y_0 = -B``,
``x_K = y_K = B`` and knot derivatives ``d_k > 0`` (``d_0 = d_K = 1``, so ``g`` is C1 at the tails).

Parametrisation (:class:`SplineSettings`): ``3K - 1`` unconstrained numbers per entry, in this order:

- widths ``u_w`` (``K``): ``w_k = 2B (m_w + (1 - K m_w) softmax(u_w)_k)``, ``x_k = -B + sum_{j<k} w_j``;
- heights ``u_h`` (``K``): the same with ``m_h``, giving ``h_k`` and ``y_k``;
- interior derivatives ``u_d`` (``K - 1``): ``d_k = d_min + (d_max - d_min) sigmoid(u_d + c)`` with
  ``c = logit((1 - d_min) / (d_max - d_min))``, so that ``u = 0`` gives uniform bins, ``d = 1`` and ``g = id``.

Map: in bin ``k`` with ``xi = (x - x_k) / w_k``, ``s = s_k = h_k / w_k`` and ``p = xi (1 - xi)``,

    ``g(x) = y_k + h_k (s xi^2 + d_k p) / D``,   ``D = s (xi^2 + (1 - xi)^2) + (d_k + d_{k+1}) p``,
    ``g'(x) = s^2 (d_{k+1} xi^2 + 2 s p + d_k (1 - xi)^2) / D^2``,

and ``log|det| = sum log g'``. ``D`` is written as a sum of positive terms (no cancellation), and ``g`` is
evaluated from the nearer knot: with ``eta = (x_{k+1} - x) / w_k`` computed from the right knot (not as
``1 - xi``), ``g(x) = y_{k+1} - h_k (s eta^2 + d_{k+1} p) / D`` when ``x`` is nearer ``x_{k+1}``.

Inverse: for ``y`` in bin ``k`` with ``Delta = y - y_k``, ``xi`` is the root in ``[0, 1]`` of
``a xi^2 + b xi + c = 0`` with ``a = h_k (s - d_k) + Delta e``, ``b = h_k d_k - Delta e``, ``c = -s Delta``,
``e = d_k + d_{k+1} - 2s``. Since ``a + b = h_k s > 0`` and ``c <= 0``, the root is computed without
cancellation: ``xi = -2c / (b + sqrt(b^2 - 4ac))`` when ``b >= 0`` and ``xi = (-b + sqrt(b^2 - 4ac)) / (2a)``
when ``b < 0`` (then ``a > h_k s > 0``); the usual single formula ``2c / (-b - sqrt(b^2 - 4ac))`` cancels when
``b < 0``, near the top of a bin whose right knot is steep. In the upper half of a bin (in ``y``) the same
quadratic is solved for ``1 - xi`` from the right knot (:func:`rq_inverse`), because the coefficients set up
from the left knot cancel there (``b`` is a difference of terms of size ``h_k d_k``). Measured in float32 at
inputs within a few ulps of every knot (``tests/numerical/test_spline.py``): the error stays within
``1.2 u (B + |y| / g')``, where the left-knot set-up alone reaches 240 and the single formula 1866.

Bounds on ``g'`` in one bin (derivation; ``a = 1 - xi``, ``b = xi``, ``a + b = 1``; write ``d_lo``,
``d_hi`` for the smaller and larger of ``d_k``, ``d_{k+1}``; everything scales as ``g' -> lambda g'`` under
``(s, d) -> lambda (s, d)``, so normalise ``s = 1``, ``e_i = d_i / s``, ``mu = e_lo``, ``m = e_hi``,
``f = g' / s = (e_k a^2 + 2ab + e_{k+1} b^2) / (a^2 + b^2 + (e_k + e_{k+1}) ab)^2``):

1. *Upper, ``g' <= max(d_hi, 2s)``.* With ``q = 2ab in [0, 1/2]``: the numerator is at most
   ``m (1 - q) + q`` and the denominator at least ``1 - q + m q / 2 = 1 - (2 - m) q / 2``. If ``m >= 2`` the
   denominator is ``>= 1``, so ``f <= m (1 - q) + q <= m``. If ``m < 2``,
   ``F(q) = 2 (1 - (2 - m) q / 2)^2 - m (1 - q) - q`` is a convex quadratic with ``F(0) = 2 - m > 0`` and
   ``F(1/2) = m^2 / 8 >= 0`` whose minimum on ``[0, 1/2]`` is ``>= 0`` (for ``m <= 5/3`` it lies at
   ``q = 1/2`` or is ``>= 1/3 - 1/56``; for ``m > 5/3`` at ``q = 0``), hence ``f <= 2``.
2. *Upper, ``g' <= max(d_hi, 2 s^2 (s + d_hi) / (s + d_lo)^2)`` unless ``d_lo < s < d_hi``.* Numerator
   ``<= m + (1 - m) q``, denominator ``>= 1 + (mu - 1) q``. The ratio of a linear function to the square of a
   positive linear function has an interior maximum only if the derivative's numerator
   ``(1 - m) - 2 m (mu - 1) - (mu - 1)(1 - m) q`` decreases in ``q``, i.e. ``(mu - 1)(1 - m) > 0``, which with
   ``mu <= m`` means ``mu < 1 < m``. Outside that case the maximum is at ``q = 0`` or ``q = 1/2``:
   ``f <= max(m, 2 (1 + m) / (1 + mu)^2)``. (Inside it, this relaxation exceeds the endpoint values by up to 3%,
   so only bound 1 is used there.)
3. *Lower, ``g' >= min(d_lo, 2 s^2 (s + d_lo) / (s + d_hi)^2)``.* The mirror image of 2: numerator
   ``>= mu + (1 - mu) q``, denominator ``<= 1 + (m - 1) q``; an interior minimum needs ``(m - 1)(1 - mu) < 0``:
   either ``mu, m > 1``, and then numerator ``>= (1 + mu) / 2`` and denominator ``<= (1 + m) / 2`` on
   ``[0, 1/2]``, or ``mu, m < 1``, and then the denominator is ``<= 1`` and the numerator ``>= mu``.
4. *Lower, ``g' >= min(d_lo, s^2 / d_hi)``.* With ``L = min(mu, 1 / m) <= 1`` and ``e_k <= e_{k+1}`` (the
   other case is the mirror image), ``f >= L`` iff the quartic ``P = N (a + b)^2 - L D^2 >= 0``. Its
   coefficients are ``a^4: e_k - L``, ``a^3 b: 2 (e_k + 1 - L c)``, ``a^2 b^2: c + 4 - L (c^2 + 2)``,
   ``a b^3: 2 (e_{k+1} + 1 - L c)``, ``b^4: e_{k+1} - L`` (``c = e_k + e_{k+1}``), all ``>= 0`` except
   perhaps the middle one. If ``e_k e_{k+1} <= 1`` then ``L = e_k <= 1`` and the middle one is
   ``>= 4 - 4 e_k >= 0``. Otherwise ``L = 1 / e_{k+1}``, and the AM-GM inequalities
   ``alpha a^4 + beta b^4 >= 2 sqrt(alpha beta) a^2 b^2`` (same for ``a^3 b``, ``a b^3``) leave
   ``4 + 5 e_k - 4 / e_{k+1} - e_k^2 / e_{k+1} - 4 e_k / e_{k+1} >= 0`` as the ``a^2 b^2`` coefficient.

Hence, per bin (:func:`rq_derivative_bounds`),

    ``g' <= max(d_hi, 2s)`` if ``d_lo < s < d_hi``, else ``g' <= max(d_hi, min(2s, 2 s^2 (s + d_hi) / (s + d_lo)^2))``;
    ``g' >= min(d_lo, max(s^2 / d_hi, 2 s^2 (s + d_lo) / (s + d_hi)^2))``,

both attained in limits (at the knots, at ``xi = 1/2`` with ``d_k = d_{k+1}``, and ``s`` for a linear bin).
The formulas are monotone (the upper increasing in ``s`` and ``d_hi``, decreasing in ``d_lo``; the lower the
opposite way), so over every parameter the conditioner can produce (``s in [s_min, s_max]``,
``d in [d_min, d_max]``) the global bounds are their values at the corners, and ``max(d_max, 2 min(s_max, d_max))``
bounds the bins with ``d_lo < s < d_hi`` (:meth:`SplineSettings.global_bounds`), with
``s_min = m_h / (1 - (K - 1) m_w)`` and ``s_max = (1 - (K - 1) m_h) / m_w``; the tails add ``g' = 1``.

Sensitivity to the parameters (what bounds the off-diagonal block of a spline coupling or autoregressive
layer): at fixed ``x``, with ``r = (g - y_k) / h_k``, one finds ``|s dr/ds| = s p |d_{k+1} xi^2 - d_k (1 - xi)^2|
/ D^2 <= 1/4`` (AM-GM: ``D >= d_{k+1} p + s xi^2 >= 2 sqrt(s d_{k+1} p xi^2)``), so
``|dg/dx_k| + |dg/dx_{k+1}| <= g' + s/2``, ``|dg/dy_k| + |dg/dy_{k+1}| <= 3/2`` and
``|dg/dd_k| + |dg/dd_{k+1}| = h_k p / D <= h_k / (2s + d_k + d_{k+1}) <= w_k / 2``. The cumulative softmax has
``||d x_j / d u_w|| <= 2B (1 - K m_w) sqrt(2) P (1 - P) <= 2B (1 - K m_w) sqrt(2) / 4`` (``P`` the mass before
``j``) and ``|dd/du_d| <= (d_max - d_min) / 4``. Together, ``||dg / du|| <= C`` with
``C^2 = (2B (1 - K m_w) sqrt(2)/4 (U + s_max / 2))^2 + (2B (1 - K m_h) sqrt(2)/4 * 3/2)^2
+ ((d_max - d_min) / 4 * w_max / 2)^2`` (``U`` the global upper bound on ``g'``, ``w_max = 2B (1 - (K-1) m_w)``).
"""


import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["SPLINE_LOGDET_ROUNDING", "Knots", "SplineBounds", "SplineSettings", "block_norm", "quadratic_root",
           "rq_derivative_bounds", "rq_forward", "rq_inverse"]


#: Unit round-offs per entry that the spline's analytic log-derivative may spend (``InvertibleModule.
#: logdet_rounding``): ``log g' = 2 log s + log(d_{k+1} xi^2 + 2 s xi eta + d_k eta^2) - 2 log(denominator)`` takes
#: three rounded logarithms of terms that can be far larger than their difference, and ``xi`` is itself rounded.
SPLINE_LOGDET_ROUNDING = 4.0


class Knots(NamedTuple):
    """The spline's knots, one set per entry (last axis: ``K + 1`` knots).

    Attributes:
        x, y: knot positions, ``x[..., 0] = y[..., 0] = -B`` and ``x[..., K] = y[..., K] = B`` exactly.
        d: knot derivatives (``d[..., 0] = d[..., K] = 1``).
        bound: ``B``.
    """

    x: Tensor
    y: Tensor
    d: Tensor
    bound: float

    def slopes(self) -> Tensor:
        """The bin slopes ``s_k = h_k / w_k``, shape ``(..., K)``."""
        return self.y.diff(dim=-1) / self.x.diff(dim=-1)


class SplineBounds(NamedTuple):
    """Bounds valid for every parameter a conditioner can produce (see :meth:`SplineSettings.global_bounds`).

    Attributes:
        lower, upper: ``lower <= g'(x) <= upper`` for every ``x`` (tails included, so ``lower <= 1 <= upper``).
        sensitivity: ``||dg(x)/du|| <= sensitivity`` for the ``3K - 1`` raw parameters ``u`` of one entry.
    """

    lower: float
    upper: float
    sensitivity: float


def _cumulative(raw: Tensor, minimum: float, bound: float) -> Tensor:
    """Knot positions ``-B = t_0 < ... < t_K = B`` from unconstrained bin sizes (the ends are exact)."""
    bins = raw.shape[-1]
    fractions = minimum + (1 - minimum * bins) * torch.softmax(raw, dim=-1)
    inner = 2 * bound * torch.cumsum(fractions, dim=-1)[..., :-1] - bound
    ends = raw.new_full((*raw.shape[:-1], 1), bound)
    return torch.cat([-ends, inner, ends], dim=-1)


@dataclass(frozen=True)
class SplineSettings:
    """Hyper-parameters of a rational-quadratic spline (see the module docstring for the parametrisation).

    Args:
        bins: number of bins ``K >= 2`` (one bin would be the identity: its only knots are ``(-B, -B)``,
            ``(B, B)`` with derivatives 1).
        bound: ``B > 0``: the spline acts on ``[-B, B]``, the identity outside.
        min_width, min_height: smallest bin width and height as a fraction of ``2B`` (``0 < m < 1 / K``).
        min_derivative, max_derivative: the range of the interior knot derivatives
            (``0 < d_min < 1 < d_max``; ``1`` is the tails' slope).

    Example:
        >>> settings = SplineSettings(bins=4, bound=2.0, min_width=0.05, min_height=0.05,
        ...                           min_derivative=0.2, max_derivative=5.0)
        >>> settings.params
        11
        >>> b = settings.global_bounds()
        >>> round(b.lower, 6), round(b.upper, 4)
        (0.000692, 34.0)
    """

    bins: int = 8
    bound: float = 3.0
    min_width: float = 1e-3
    min_height: float = 1e-3
    min_derivative: float = 1e-3
    max_derivative: float = 1e3

    def __post_init__(self) -> None:
        def refuse(what: str) -> None:
            raise ValueError(f"spline settings: {what}")

        if not isinstance(self.bins, int) or self.bins < 2:
            refuse(f"bins must be an integer >= 2 (one bin is the identity map), got {self.bins!r}")
        if not self.bound > 0:
            refuse(f"bound must be > 0, got {self.bound}")
        for name in ("min_width", "min_height"):
            value = getattr(self, name)
            if not 0 < value * self.bins < 1:
                refuse(f"{name} must lie in (0, 1/bins) = (0, {1 / self.bins:.4g}) (a fraction of the interval "
                       f"[-bound, bound]), got {value}")
        if not 0 < self.min_derivative < 1 < self.max_derivative < math.inf:
            refuse(f"need 0 < min_derivative < 1 < max_derivative < inf (1 is the slope of the linear tails), "
                   f"got {self.min_derivative} and {self.max_derivative}")

    @property
    def params(self) -> int:
        """Number of unconstrained parameters per entry: ``3K - 1``."""
        return 3 * self.bins - 1

    @property
    def derivative_offset(self) -> float:
        """``c = logit((1 - d_min) / (d_max - d_min))``: raw derivative 0 gives ``d = 1``."""
        p = (1 - self.min_derivative) / (self.max_derivative - self.min_derivative)
        return math.log(p) - math.log1p(-p)

    def knots(self, raw: Tensor) -> Knots:
        """The knots from raw parameters of shape ``(..., 3K - 1)``."""
        if raw.shape[-1] != self.params:
            raise ValueError(f"spline: expected {self.params} raw parameters per entry (3 * bins - 1), got "
                             f"{raw.shape[-1]}")
        k = self.bins
        x = _cumulative(raw[..., :k], self.min_width, self.bound)
        y = _cumulative(raw[..., k: 2 * k], self.min_height, self.bound)
        span = self.max_derivative - self.min_derivative
        inner = self.min_derivative + span * torch.sigmoid(raw[..., 2 * k:] + self.derivative_offset)
        one = raw.new_ones((*raw.shape[:-1], 1))
        return Knots(x, y, torch.cat([one, inner, one], dim=-1), self.bound)

    def slope_range(self) -> tuple[float, float]:
        """``(s_min, s_max)``: the range of the bin slopes ``h_k / w_k`` over all parameters."""
        k = self.bins
        return (self.min_height / (1 - (k - 1) * self.min_width), (1 - (k - 1) * self.min_height) / self.min_width)

    def global_bounds(self) -> SplineBounds:
        """Bounds on ``g'`` and on the parameter sensitivity valid for *every* raw parameter vector.

        ``lower = min(1, L(s_min, d_min, d_max))`` with ``L`` the per-bin lower bound of
        :func:`rq_derivative_bounds` (monotone in each argument, so a corner of the parameter box is the
        extreme); ``upper = max(1, d_max, min(2 s_max, 2 s_max^2 (s_max + d_max) / (s_max + d_min)^2),
        2 min(s_max, d_max))`` (the corner of the second upper formula, and the bins with ``d_lo < s < d_hi``);
        ``sensitivity`` is ``C`` of the module docstring.
        """
        s_min, s_max = self.slope_range()
        d_min, d_max = self.min_derivative, self.max_derivative

        def t(v: float) -> torch.Tensor:
            return torch.tensor([v], dtype=torch.float64)

        low, _ = rq_derivative_bounds(t(s_min), t(d_min), t(d_max))
        corner = max(d_max, min(2 * s_max, 2 * s_max**2 * (s_max + d_max) / (s_max + d_min) ** 2))
        between = max(d_max, 2 * min(s_max, d_max))  # bins with d_lo < s < d_hi
        lower, upper = min(1.0, float(low)), max(1.0, corner, between)
        k, b = self.bins, self.bound
        knot_gain = 2 * b * math.sqrt(2) / 4
        g_w = knot_gain * (1 - k * self.min_width) * (upper + s_max / 2)
        g_h = knot_gain * (1 - k * self.min_height) * 1.5
        g_d = (d_max - d_min) / 4 * b * (1 - (k - 1) * self.min_width)
        return SplineBounds(lower, upper, math.sqrt(g_w**2 + g_h**2 + g_d**2))


def rq_derivative_bounds(s: Tensor, d_left: Tensor, d_right: Tensor) -> tuple[Tensor, Tensor]:
    """``(lower, upper)`` with ``lower <= g' <= upper`` in a bin of slope ``s`` and knot derivatives
    ``d_left``, ``d_right`` (derivation in the module docstring; elementwise, broadcasting).

    Example:
        >>> one = torch.ones(1, dtype=torch.float64)
        >>> rq_derivative_bounds(one, one, one)  # the linear bin: g' = 1 exactly
        (tensor([1.], dtype=torch.float64), tensor([1.], dtype=torch.float64))
    """
    lo, hi = torch.minimum(d_left, d_right), torch.maximum(d_left, d_right)
    between = (lo < s) & (s < hi)  # where only bound 1 of the derivation is proven
    upper = torch.maximum(hi, torch.where(between, 2 * s, torch.minimum(2 * s, 2 * s * s * (s + hi) / (s + lo) ** 2)))
    lower = torch.minimum(lo, torch.maximum(s * s / hi, 2 * s * s * (s + lo) / (s + hi) ** 2))
    return lower, upper


def _select(table: Tensor, index: Tensor) -> Tensor:
    """``table[..., index]`` per entry, with ``table`` broadcast to the shape of ``index`` (last axis 1)."""
    return torch.gather(table.expand(*index.shape[:-1], table.shape[-1]), -1, index).squeeze(-1)


def _bin(values: Tensor, knots: Tensor) -> Tensor:
    """Index ``k`` of the bin ``[t_k, t_{k+1})`` holding each value (values clamped to ``[-B, B]``)."""
    inner = knots[..., 1:-1]
    return (values.unsqueeze(-1) >= inner).sum(dim=-1, keepdim=True)


def _log_derivative(xi: Tensor, eta: Tensor, s: Tensor, d0: Tensor, d1: Tensor, denom: Tensor) -> Tensor:
    """``log g'`` from ``xi`` and ``eta = 1 - xi`` (each accurate where it is small)."""
    numer = d1 * xi * xi + 2 * s * xi * eta + d0 * eta * eta
    return 2 * torch.log(s) + torch.log(numer) - 2 * torch.log(denom)


def _gathered(values: Tensor, knots: Tensor, knot_axis: Tensor) -> tuple[Tensor, ...]:
    k = _bin(values, knot_axis)
    x0, x1 = _select(knots.x, k), _select(knots.x, k + 1)
    y0, y1 = _select(knots.y, k), _select(knots.y, k + 1)
    d0, d1 = _select(knots.d, k), _select(knots.d, k + 1)
    return x0, x1, y0, y1, d0, d1


def rq_forward(x: Tensor, knots: Knots) -> tuple[Tensor, Tensor]:
    """``(g(x), log g'(x))`` elementwise; ``knots`` broadcast against ``x`` (plus their knot axis).

    Example:
        >>> settings = SplineSettings(bins=3, bound=1.0)
        >>> knots = settings.knots(torch.zeros(1, settings.params, dtype=torch.float64))  # the identity
        >>> x = torch.tensor([-2.0, 0.3, 0.9], dtype=torch.float64)
        >>> y, logd = rq_forward(x, knots)
        >>> bool(torch.allclose(y, x, rtol=0, atol=1e-15)), bool(logd.abs().max() < 1e-15)
        (True, True)
    """
    b = knots.bound
    inside = (x >= -b) & (x <= b)
    xc = torch.where(inside, x, torch.zeros_like(x))  # not clamp: its gradient vanishes at the ends
    x0, x1, y0, y1, d0, d1 = _gathered(xc, knots, knots.x)
    w, h = x1 - x0, y1 - y0
    s = h / w
    # xi = (x - x_k) / w and eta = 1 - xi, each from its own knot (in [0, 1]: rounding is monotone); the one
    # nearer its knot is accurate to a few ulps relative, the other is taken as 1 minus it
    left = (xc - x0) <= (x1 - xc)
    xi = torch.where(left, (xc - x0) / w, 1 - (x1 - xc) / w)
    eta = torch.where(left, 1 - xi, (x1 - xc) / w)
    p = xi * eta
    denom = s * (xi * xi + eta * eta) + (d0 + d1) * p
    from_left = y0 + h * (s * xi * xi + d0 * p) / denom
    from_right = y1 - h * (s * eta * eta + d1 * p) / denom
    y = torch.where(left, from_left, from_right)
    logd = _log_derivative(xi, eta, s, d0, d1, denom)
    return torch.where(inside, y, x), torch.where(inside, logd, torch.zeros_like(logd))


def quadratic_root(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """The root in ``[0, 1]`` of ``a xi^2 + b xi + c`` for the spline's coefficients (``a + b > 0``, ``c <= 0``),
    by the cancellation-free formula for the sign of ``b`` (module docstring). Both formulas give a root ``>= 0``
    in floating point (no clamp, whose gradient would vanish at a knot)."""
    sqrt_disc = torch.sqrt((b * b - 4 * a * c).clamp(min=0))
    positive = b >= 0
    # each branch divides by a quantity that is > 0 where it is selected; elsewhere by 1 (no NaN in gradients)
    den_pos = torch.where(positive, b + sqrt_disc, torch.ones_like(b))
    den_neg = torch.where(positive, torch.ones_like(a), 2 * a)
    return torch.where(positive, -2 * c / den_pos, (sqrt_disc - b) / den_neg)


def rq_inverse(y: Tensor, knots: Knots) -> tuple[Tensor, Tensor]:
    """``(g^-1(y), log g'(g^-1(y)))`` elementwise (the forward log-derivative at the preimage; negate it for the
    inverse's log-det).

    The quadratic is set up from the knot nearer to ``y`` (in ``y``): from the left knot for
    ``y - y_k <= y_{k+1} - y``, else for ``eta = 1 - xi`` from the right knot (the mirrored bin, ``d_k`` and
    ``d_{k+1}`` exchanged). Its coefficients then carry rounding errors proportional to the distance from that knot,
    and ``x`` keeps a relative accuracy of a few ``u (B + |y| / g')`` up to the knots (``tests/numerical/
    test_spline.py``); set up from the left knot only, the error near the top of a bin grows like
    ``w_k d_k / B``.

    Example:
        >>> settings = SplineSettings(bins=4, bound=2.0)
        >>> knots = settings.knots(torch.randn(5, settings.params, dtype=torch.float64,
        ...                                    generator=torch.Generator().manual_seed(0)))
        >>> x = torch.linspace(-3, 3, 5, dtype=torch.float64)
        >>> y, logd = rq_forward(x, knots)
        >>> x_back, logd_back = rq_inverse(y, knots)
        >>> bool(torch.allclose(x_back, x, atol=1e-12)) and bool(torch.allclose(logd_back, logd))
        True
    """
    b = knots.bound
    inside = (y >= -b) & (y <= b)
    yc = torch.where(inside, y, torch.zeros_like(y))
    x0, x1, y0, y1, d0, d1 = _gathered(yc, knots, knots.y)
    w, h = x1 - x0, y1 - y0
    s = h / w
    left = (yc - y0) <= (y1 - yc)
    delta = torch.where(left, yc - y0, y1 - yc)
    d_near = torch.where(left, d0, d1)
    e = d0 + d1 - 2 * s
    root = quadratic_root(h * (s - d_near) + delta * e, h * d_near - delta * e, -s * delta)
    x = torch.where(left, x0 + w * root, x1 - w * root)
    xi, eta = torch.where(left, root, 1 - root), torch.where(left, 1 - root, root)
    p = root * (1 - root)
    denom = s * (xi * xi + eta * eta) + (d0 + d1) * p
    logd = _log_derivative(xi, eta, s, d0, d1, denom)
    return torch.where(inside, x, y), torch.where(inside, logd, torch.zeros_like(logd))


def block_norm(a: float, b: float, c: float) -> float:
    """The spectral norm of the 2x2 matrix ``[[a, 0], [b, c]]`` (bounds a block-triangular Jacobian
    ``[[I, 0], [B, C]]`` with ``||B|| <= b``, ``||C|| <= c``, ``a = 1``).

    Example:
        >>> block_norm(1.0, 0.0, 3.0), round(block_norm(1.0, 1.0, 1.0), 6)
        (3.0, 1.618034)
    """
    t = a * a + b * b + c * c
    det = a * c
    return math.sqrt((t + math.sqrt(max(t * t - 4 * det * det, 0.0))) / 2)
