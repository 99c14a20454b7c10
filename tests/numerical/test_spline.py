"""The rational-quadratic spline's bounds and its inverse near bin edges, against dense measurements and mpmath.

- Per-bin bounds (:func:`rq_derivative_bounds`): ``g'`` measured by autograd on dense grids over thousands of
  random bins (slopes and knot derivatives from 1e-3 to 1e3), and in mpmath (the reference's textbook formula,
  itself checked against ``mpmath.diff``), never leaves them; they are not vacuous (measured extremes within a
  factor 2 and 3 of them); a wrong bound is caught.
- Global bounds (:meth:`SplineSettings.global_bounds`): raw parameters up to 1e3 never leave them (derivative and
  parameter sensitivity); crafted parameters come within 1% (upper) and a factor 2.2 (lower) of them.
- The inverse in float32 and float64 at inputs within a few ulps of every knot, against the reference inverse
  (bisection at 40 digits on exactly the rounded knots): within ``4 u (B + |y| / g')`` (measured <= 1.16). The
  single quadratic formula of common implementations, set up from the left knot, reaches 66 to 1866 (the
  negative control); the forward map stays within ``4 u (B + g' |x|)`` (measured <= 0.98; from the left knot only:
  125).
- The spline layers in the ill-conditioned regime (raw parameters ~1e2, ``g'`` down to 1e-8) that the registry
  keeps out of the reference suite: the contract checks, whose tolerances follow the conditioning, hold.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from mpmath import mp, mpf

from invertible.layers import spline_math
from invertible.layers.spline_math import (
    Knots,
    SplineSettings,
    quadratic_root,
    rq_derivative_bounds,
    rq_forward,
)
from invertible.reference.spline import spline_forward, spline_inverse, spline_knots
from invertible.reference.compare import reference_forward
from invertible.testing import CHECKS, LOGDET_K, ROUNDTRIP_K, check_invertible, get_example
from invertible.testing.tolerances import exact_error_scales

F64 = torch.float64
SETTINGS = {
    "default": SplineSettings(bins=5, bound=2.0),
    "tight": SplineSettings(bins=4, bound=3.0, min_width=0.1, min_height=0.1, min_derivative=0.25, max_derivative=4.0),
    "two_bins": SplineSettings(bins=2, bound=1.0, min_width=0.01, min_height=0.2, min_derivative=0.1,
                               max_derivative=50.0),
}


def _bins(n: int, seed: int, log_range: float = 7.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random bins: slope ``s`` and knot derivatives ``d0``, ``d1``, each ``exp(U(-r, r))``, plus corner cases."""
    g = torch.Generator().manual_seed(seed)
    s, d0, d1 = (torch.exp(torch.empty(n, dtype=F64).uniform_(-log_range, log_range, generator=g)) for _ in range(3))
    corners = torch.tensor([[1, 1, 1], [1, 1e-3, 1e-3], [1, 1e3, 1e3], [1, 1e-3, 1e3], [1e3, 1e-3, 1e-3],
                            [1e-3, 1e3, 1e3], [2, 1e-3, 1], [0.5, 1, 1e3]], dtype=F64)
    return torch.cat([s, corners[:, 0]]), torch.cat([d0, corners[:, 1]]), torch.cat([d1, corners[:, 2]])


def measured_derivatives(s: torch.Tensor, d0: torch.Tensor, d1: torch.Tensor, points: int = 2001) -> torch.Tensor:
    """``g'`` by autograd on a grid of ``points`` over one bin ``[-1, 1] -> [-s, s]`` per row (knots included)."""
    n = s.shape[0]
    knots = Knots(torch.tensor([-1.0, 1.0], dtype=F64).expand(n, 1, 2), torch.stack([-s, s], 1)[:, None],
                  torch.stack([d0, d1], 1)[:, None], 1.0)
    x = torch.linspace(-1, 1, points, dtype=F64).expand(n, -1).clone().requires_grad_(True)
    y, _ = rq_forward(x, knots)
    return torch.autograd.grad(y.sum(), x)[0]


def bound_violations(lower: torch.Tensor, upper: torch.Tensor, measured: torch.Tensor, rtol: float = 1e-12) -> int:
    """Rows whose measured derivatives leave ``[lower, upper]`` (relative tolerance ``rtol`` for round-off)."""
    above = measured.max(dim=1).values > upper * (1 + rtol)
    below = measured.min(dim=1).values < lower * (1 - rtol)
    return int((above | below).sum())


# -- per-bin bounds ----------------------------------------------------------------------------------------------
@functools.cache
def _seed0() -> tuple[torch.Tensor, ...]:
    s, d0, d1 = _bins(2000, seed=0)
    return s, d0, d1, measured_derivatives(s, d0, d1)


def test_per_bin_bounds_hold_and_are_not_vacuous_on_dense_grids() -> None:
    s, d0, d1, measured = _seed0()
    lower, upper = rq_derivative_bounds(s, d0, d1)
    assert bound_violations(lower, upper, measured) == 0
    # how loose: over seeds 0-4 the largest ratios were 1.81 (upper; below 2 wherever d_lo < s < d_hi, since the
    # bound is then max(d_hi, 2s) < 2 d_hi) and 2.773 (lower)
    assert float((upper / measured.max(dim=1).values).max()) <= 2.0
    assert float((measured.min(dim=1).values / lower).max()) < 3.2
    # the bounds are attained: at the knots (upper = d_hi) and at xi = 1/2 with d0 = d1 (lower)
    assert float((upper / measured.max(dim=1).values).min()) == pytest.approx(1.0, abs=1e-12)
    assert float((measured.min(dim=1).values / lower).min()) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_per_bin_bounds_hold_over_more_seeds(seed: int) -> None:
    s, d0, d1 = _bins(1000, seed=seed, log_range=9.0)
    lower, upper = rq_derivative_bounds(s, d0, d1)
    assert bound_violations(lower, upper, measured_derivatives(s, d0, d1, points=1001)) == 0


def test_negative_control_a_wrong_bound_is_caught() -> None:
    """Without the factor 2 of ``2s`` (the midpoint of a bin with flat knots reaches ``2s``), and with the lower
    bound's ``s^2 / d_hi`` doubled, the same measurement finds violations."""
    s, d0, d1, measured = _seed0()
    lower, upper = rq_derivative_bounds(s, d0, d1)
    lo, hi = torch.minimum(d0, d1), torch.maximum(d0, d1)
    wrong_upper = torch.maximum(hi, torch.minimum(s, 2 * s * s * (s + hi) / (s + lo) ** 2))
    wrong_lower = torch.minimum(lo, torch.maximum(2 * s * s / hi, 2 * s * s * (s + lo) / (s + hi) ** 2))
    assert bound_violations(lower, wrong_upper, measured) > 10
    assert bound_violations(wrong_lower, upper, measured) > 10


def _mp_bounds(s: mpf, d0: mpf, d1: mpf) -> tuple[mpf, mpf]:
    lo, hi = min(d0, d1), max(d0, d1)
    upper = max(hi, 2 * s if lo < s < hi else min(2 * s, 2 * s**2 * (s + hi) / (s + lo) ** 2))
    lower = min(lo, max(s**2 / hi, 2 * s**2 * (s + lo) / (s + hi) ** 2))
    return lower, upper


def test_per_bin_bounds_hold_in_mpmath() -> None:
    """50-digit derivatives (the reference's formula, checked against ``mpmath.diff`` of the reference map) on a
    129-point grid plus a golden-section search for the interior extremes of each of 60 random bins."""
    s_all, d0_all, d1_all = _bins(52, seed=7, log_range=6.0)
    with mp.workdps(50):
        for s, d0, d1 in zip(s_all.tolist(), d0_all.tolist(), d1_all.tolist()):
            s, d0, d1 = mpf(s), mpf(d0), mpf(d1)
            knots = ([mpf(-1), mpf(1)], [-s, s], [d0, d1], mpf(1))

            def deriv(x, k=knots):  # type: ignore[no-untyped-def]
                return mp.exp(spline_forward(x, k)[1])

            grid = [mpf(-1) + mpf(2) * i / 128 for i in range(129)]
            values = [deriv(x) for x in grid]
            for x in (grid[40], grid[64]):  # the formula is the derivative of the map
                numeric = mp.diff(lambda v, k=knots: spline_forward(v, k)[0], x)
                assert abs(numeric - deriv(x)) <= mpf("1e-30") * (1 + abs(numeric))
            lower, upper = _mp_bounds(s, d0, d1)
            for sign in (1, -1):  # refine the grid's extreme (max, then min) by golden-section search
                i = max(range(129), key=lambda k: sign * values[k])
                a, b = grid[max(i - 1, 0)], grid[min(i + 1, 128)]
                for _ in range(60):
                    m1, m2 = b - (b - a) * mpf("0.618"), a + (b - a) * mpf("0.618")
                    if sign * deriv(m1) >= sign * deriv(m2):
                        b = m2
                    else:
                        a = m1
                values.append(deriv((a + b) / 2))
            assert max(values) <= upper * (1 + mpf("1e-40")), (s, d0, d1)
            assert min(values) >= lower * (1 - mpf("1e-40")), (s, d0, d1)


# -- global bounds -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SETTINGS))
def test_global_bounds_hold_for_any_raw_parameters(name: str) -> None:
    settings = SETTINGS[name]
    bounds = settings.global_bounds()
    g = torch.Generator().manual_seed(0)
    worst_sensitivity, extremes = 0.0, [math.inf, 0.0]
    for scale in (0.1, 1.0, 3.0, 10.0, 100.0, 1000.0):
        raw = (scale * torch.randn(3000, settings.params, generator=g, dtype=F64)).requires_grad_(True)
        x = settings.bound * (2.4 * torch.rand(3000, generator=g, dtype=F64) - 1.2)
        y, logd = rq_forward(x, settings.knots(raw))
        grad = torch.autograd.grad(y.sum(), raw)[0]  # row i: dg(x_i)/du_i (entries are independent)
        worst_sensitivity = max(worst_sensitivity, float(grad.norm(dim=1).max()))
        slopes = logd.detach().exp()
        extremes = [min(extremes[0], float(slopes.min())), max(extremes[1], float(slopes.max()))]
    assert bounds.lower * (1 - 1e-12) <= extremes[0] and extremes[1] <= bounds.upper * (1 + 1e-12)
    assert worst_sensitivity <= bounds.sensitivity


@pytest.mark.parametrize("name", ["default", "tight"])
def test_crafted_parameters_reach_the_global_bounds(name: str) -> None:
    """Bin 1 as steep as allowed between knots as flat as allowed (``g' = 4 s_max^2 / (2 s_max + 2 d_min)``
    mid-bin, the bound's ``2 s_max`` as ``d_min -> 0``), and as flat as allowed between knots as steep as allowed
    (``2 s_min^2 / (s_min + d_max)``; the bound assumes ``d_lo = d_min`` and ``d_hi = d_max`` at once)."""
    settings = SETTINGS[name]
    k, big = settings.bins, 60.0
    steep = torch.zeros(settings.params, dtype=F64)
    steep[1], steep[k + 1], steep[2 * k: 2 * k + 2] = -big, big, -big  # narrowest, tallest, d_1 = d_2 = d_min
    flat = -steep
    knots = settings.knots(torch.stack([steep, flat])[:, None])
    x1, x2 = knots.x[:, 0, 1], knots.x[:, 0, 2]
    x = x1[:, None] + (x2 - x1)[:, None] * torch.linspace(0, 1, 20001, dtype=F64)
    _, logd = rq_forward(x, knots)
    bounds = settings.global_bounds()
    reached_upper, reached_lower = float(logd[0].exp().max()), float(logd[1].exp().min())
    # measured: 0.9995 and 0.966 of the upper bound, 2.0 and 1.9 times the lower bound (default, tight)
    assert bounds.upper * 0.95 <= reached_upper <= bounds.upper * (1 + 1e-12)
    assert bounds.lower * (1 - 1e-12) <= reached_lower <= 2.2 * bounds.lower


# -- the inverse near the knots ----------------------------------------------------------------------------------
def _near_knots(knots: Knots, dtype: torch.dtype) -> torch.Tensor:
    """Every knot ``y_k`` and the values 1, 2, 4, 16 and 256 ulps either side, plus 2^12, 2^16 ulps (relative),
    plus a uniform grid of 41 points on ``[-B, B]``."""
    bound = knots.bound
    values: set[float] = set(torch.linspace(-bound, bound, 41, dtype=dtype).tolist())
    for yk in knots.y.reshape(-1).tolist():
        for sign in (-1.0, 1.0):
            v = torch.tensor([yk], dtype=dtype)
            towards = torch.tensor([sign * math.inf], dtype=dtype)
            for step in range(1, 257):
                v = torch.nextafter(v, towards)
                if step in (1, 2, 4, 16, 256):
                    values.add(v.item())
            for ulps in (2**12, 2**16):
                values.add(torch.tensor(yk + sign * ulps * torch.finfo(dtype).eps * max(abs(yk), 1e-3),
                                        dtype=dtype).item())
    return torch.tensor(sorted(v for v in values if -bound <= v <= bound), dtype=dtype)


def _nflows_inverse(y: torch.Tensor, knots: Knots) -> torch.Tensor:
    """The common set-up (negative control): the quadratic from the left knot, root ``2c / (-b - sqrt(disc))``."""
    x0, x1, y0, y1, d0, d1 = spline_math._gathered(y, knots, knots.y)
    w, h = x1 - x0, y1 - y0
    s, delta = h / w, y - y0
    e = d0 + d1 - 2 * s
    a, b, c = h * (s - d0) + delta * e, h * d0 - delta * e, -s * delta
    return x0 + w * (2 * c / (-b - torch.sqrt((b * b - 4 * a * c).clamp(min=0))))


CRAFTED = {  # (x knots, y knots, knot derivatives): a steep right knot, a steep left knot, a flat knot, a mixture
    "steep_right": ([-1, 0, 1], [-1, 0.9, 1], [1, 1000.0, 1]),
    "steep_left": ([-1, 0, 1], [-1, -0.9, 1], [1, 1000.0, 1]),
    "flat": ([-1, 0, 1], [-1, 0.999, 1], [1, 0.001, 1]),
    "mixed": ([-2, -1.5, 0.1, 2], [-2, -1.99, 1.9, 2], [1, 50.0, 0.01, 1]),
}


def _crafted(name: str, dtype: torch.dtype) -> Knots:
    xs, ys, ds = CRAFTED[name]
    return Knots(torch.tensor(xs, dtype=dtype), torch.tensor(ys, dtype=dtype), torch.tensor(ds, dtype=dtype),
                 float(xs[-1]))


def _random(seed: int, dtype: torch.dtype) -> Knots:
    settings = SETTINGS["default"]
    raw = 3 * torch.randn(settings.params, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return settings.knots(raw.to(dtype))


def inverse_error(knots: Knots, inverse=None) -> float:  # type: ignore[no-untyped-def]
    """The largest ``|x - g^-1(y)| / (u (B + |y| / g'))`` over :func:`_near_knots`, with the truth from bisection
    on the reference map at exactly the given (rounded) knots."""
    dtype = knots.x.dtype
    y = _near_knots(knots, dtype)
    x = (inverse or (lambda v, k: spline_math.rq_inverse(v, k)[0]))(y, knots)
    u = torch.finfo(dtype).eps
    with mp.workdps(40):
        ref = ([mpf(v) for v in knots.x.tolist()], [mpf(v) for v in knots.y.tolist()],
               [mpf(v) for v in knots.d.tolist()], mpf(knots.bound))
        worst = mpf(0)
        for yi, xi in zip(y.tolist(), x.tolist()):
            truth = spline_inverse(mpf(yi), ref, iterations=120)  # 2^-120 B: far below u64
            slope = mp.exp(spline_forward(truth, ref)[1])
            worst = max(worst, abs(mpf(xi) - truth) / (u * (ref[3] + abs(mpf(yi)) / slope)))
    return float(worst)


CASES = [(n, _crafted) for n in CRAFTED] + [(s, _random) for s in (0, 1, 2)]


#: Largest error of the inverse in units of ``u (B + |y| / g')`` (measured: <= 1.16 on the crafted knots, <= 0.3 on
#: random ones, in float32 and float64; the single left-knot formula: 66 to 1866 on the crafted knots).
INVERSE_ULPS = 4.0


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=str)
@pytest.mark.parametrize("case, make", CASES, ids=[str(c[0]) for c in CASES])
def test_inverse_is_accurate_within_ulps_of_every_knot(case, make, dtype: torch.dtype) -> None:  # type: ignore[no-untyped-def]
    assert inverse_error(make(case, dtype)) <= INVERSE_ULPS


@pytest.mark.parametrize("case", list(CRAFTED))
def test_negative_control_the_common_root_formula_fails_near_the_knots(case: str) -> None:
    """The single formula from the left knot, in float32: 231, 1866, 140, 66 (steep right, steep left, flat, mixed)
    in the same units."""
    assert inverse_error(_crafted(case, torch.float32), _nflows_inverse) > 50


def test_negative_control_a_perturbed_root_fails_the_accuracy_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spline_math, "quadratic_root", lambda a, b, c: quadratic_root(a, b, c) * (1 + 1e-5))
    assert inverse_error(_crafted("mixed", torch.float32)) > INVERSE_ULPS


def forward_error(knots: Knots, forward=None) -> float:  # type: ignore[no-untyped-def]
    """The largest ``|y - g(x)| / (u (B + g' |x|))`` at inputs next to every x-knot (the truth from the reference
    at exactly the given knots)."""
    dtype = knots.x.dtype
    x = _near_knots(Knots(knots.y, knots.x, knots.d, knots.bound), dtype)  # the x-knots in the role of y
    y = (forward or (lambda v, k: rq_forward(v, k)[0]))(x, knots)
    u = torch.finfo(dtype).eps
    with mp.workdps(40):
        ref = ([mpf(v) for v in knots.x.tolist()], [mpf(v) for v in knots.y.tolist()],
               [mpf(v) for v in knots.d.tolist()], mpf(knots.bound))
        worst = mpf(0)
        for xi, yi in zip(x.tolist(), y.tolist()):
            truth, logd = spline_forward(mpf(xi), ref)
            worst = max(worst, abs(mpf(yi) - truth) / (u * (ref[3] + mp.exp(logd) * abs(mpf(xi)))))
    return float(worst)


def _left_knot_forward(x: torch.Tensor, knots: Knots) -> torch.Tensor:
    """The textbook evaluation from the left knot only (negative control)."""
    x0, x1, y0, y1, d0, d1 = spline_math._gathered(x, knots, knots.x)
    w, h = x1 - x0, y1 - y0
    s, xi = h / w, (x - x0) / w
    return y0 + h * (s * xi**2 + d0 * xi * (1 - xi)) / (s + (d0 + d1 - 2 * s) * xi * (1 - xi))


#: Largest error of the forward map in units of ``u (B + g' |x|)`` (measured: <= 0.98 on the crafted knots, <= 0.25
#: on random ones; evaluated from the left knot only: 125 next to the steep knots).
FORWARD_ULPS = 4.0


@pytest.mark.parametrize("case, make", CASES, ids=[str(c[0]) for c in CASES])
def test_forward_is_accurate_within_ulps_of_every_knot(case, make) -> None:  # type: ignore[no-untyped-def]
    assert forward_error(make(case, torch.float32)) <= FORWARD_ULPS


def test_negative_control_the_left_knot_forward_fails_near_steep_right_knots() -> None:
    assert forward_error(_crafted("steep_right", torch.float32), _left_knot_forward) > 10 * FORWARD_ULPS


def test_reference_knots_match_the_layer_parametrisation() -> None:
    """The mpmath knots (written from the documented formulas) agree with the layer's float64 knots to 1e-15."""
    for settings in SETTINGS.values():
        raw = 2 * torch.randn(settings.params, generator=torch.Generator().manual_seed(3), dtype=F64)
        knots = settings.knots(raw)
        with mp.workdps(50):
            xs, ys, ds, _ = spline_knots([mpf(v) for v in raw.tolist()], settings)
        for mine, ref in ((knots.x, xs), (knots.y, ys), (knots.d, ds)):
            assert max(abs(a - float(b)) for a, b in zip(mine.tolist(), ref)) <= 1e-15 * 1e3 * settings.bound


# -- the layers in the ill-conditioned regime ---------------------------------------------------------------------
@pytest.mark.parametrize("name, params", [
    ("spline_coupling", {"kind": "flat", "strength": 4.0, "scale": 3.0}),
    ("spline_coupling", {"kind": "image", "strength": 3.0}),
    ("rq_spline", {"kind": "flat", "noise": 30.0, "scale": 3.0}),
    ("maf_spline", {"noise": 1.5, "scale": 3.0}),
])
def test_contract_holds_with_saturated_parameters(name: str, params: dict) -> None:
    """Saturated knot derivatives: the float64 log-dets against the 50-digit mpmath value (the checker's
    reverse-mode reference Jacobian is itself off by up to 1e-11 here: ``invertible.testing.tolerances``), every
    other check by ``check_invertible``; then the same in float32."""
    module, x = get_example(name).build(**params)
    report = check_invertible(module, x, name=name, checks=tuple(c for c in CHECKS if not c.startswith("logdet_exact")))
    assert report.measured["condition_number"] > 1e4  # the regime this test is for
    assert not _logdet_errors_against_mpmath(module, x)
    module32 = module.float()
    check_invertible(module32, x.float(), name=name, checks=("shapes", "roundtrip_forward", "roundtrip_inverse",
                                                            "logdet_inverse"))
    assert not _logdet_errors_against_mpmath(module32, x.float())


#: With knot derivatives spanning 1e7, the splines' float64 log-dets exceed the first-order error model
#: ``u (D r + T + C)`` of ``invertible.testing.tolerances``: worst ratios over seeds 0-5 (the four configurations
#: above, in that order) 3.9, 1.1, 31.1 and 10.1 (rq_spline seed 1; medians 0.9, 0.5, 3.1, 2.9). The bound is 4x the
#: worst, so the comparison still catches a log-det off by 1e-12 (the negative control below).
SATURATED = 128.0


def _logdet_errors_against_mpmath(module: torch.nn.Module, x: torch.Tensor) -> list[str]:
    """Log-dets (in ``x``'s dtype) above ``SATURATED`` times the error model against mpmath: the forward's
    ``K_ld u (D + T + C)``; the inverse's (taken at ``f(x)``, so its preimage carries the inverse's error
    ``K u E_g``) that plus ``K u ||d logdet/dx|| E_g``."""
    u = torch.finfo(x.dtype).eps
    scales = exact_error_scales(module, x)
    with torch.no_grad():
        y, logdet = module(x)
        _, logdet_inv = module.inverse(y)
    _, ref = reference_forward(module, x)
    tol = SATURATED * LOGDET_K * u * (scales.logdet_terms + scales.logdet_input)
    tol_inv = tol + ROUNDTRIP_K * u * scales.logdet_sensitivity * scales.inverse_eval
    errors = []
    for i, exact in enumerate(ref):
        for what, value, limit in (("log-det", float(logdet[i]), tol[i]), ("inverse log-det", -float(logdet_inv[i]),
                                                                           tol_inv[i])):
            err = float(abs(mpf(value) - exact))
            if not err <= float(limit):
                errors.append(f"sample {i}: {what} off by {err:.3g} from mpmath, above {float(limit):.3g}")
    return errors


def test_the_mpmath_log_det_comparison_catches_a_log_det_off_by_1e_11() -> None:
    """Negative control of the comparison above: a log-det shifted by 1e-11 (about what the reverse-mode reference
    can be off by, and far below the float32 errors the other checks look for) is caught."""
    module, x = get_example("rq_spline").build(kind="flat", noise=30.0, scale=3.0)

    assert not _logdet_errors_against_mpmath(module, x)
    correct = module._forward

    def shifted(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, ld = correct(v)
        return out, ld + 1e-11

    module._forward = shifted  # type: ignore[method-assign]  (the mpmath reference still reads the true layer)
    assert _logdet_errors_against_mpmath(module, x)
