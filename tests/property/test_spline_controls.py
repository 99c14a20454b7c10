"""Spline and autoregressive layers: negative controls for the contract suite, bounds under hypothesis, bad input.

- A spline inverse whose root is perturbed (relatively by 1e-7, or the quadratic's other root) fails
  ``check_invertible`` in every spline layer; the unperturbed layers pass.
- The per-bin and global derivative bounds hold at parameters and inputs drawn by hypothesis, extremes included.
- Bad settings and inputs get errors that say what is wrong and how to fix it.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from invertible import (
    MaskedAffineAutoregressive,
    MaskedSplineAutoregressive,
    RationalQuadraticSpline,
    SplineCoupling,
)
from invertible.layers import spline_math
from invertible.layers.spline_math import (
    Knots,
    SplineSettings,
    quadratic_root,
    rq_derivative_bounds,
    rq_forward,
)
from invertible.testing import ContractError, check_invertible, get_example

SPLINE_EXAMPLES = [("rq_spline", {"kind": "flat"}), ("rq_spline", {"kind": "image"}),
                   ("spline_coupling", {"kind": "flat"}), ("spline_coupling", {"kind": "image"}),
                   ("maf_spline", {})]
IDS = [f"{n}-{c.get('kind', 'flat')}" for n, c in SPLINE_EXAMPLES]


def _other_root(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The quadratic's other root (a plausible implementation mistake), where it is finite."""
    root = quadratic_root(a, b, c)
    other = torch.where(a != 0, -b / a - root, root + 1)
    return torch.where(torch.isfinite(other), other, root + 1)


PERTURBATIONS = {
    "relative 1e-7": lambda a, b, c: quadratic_root(a, b, c) * (1 + 1e-7),
    "absolute 1e-9": lambda a, b, c: quadratic_root(a, b, c) + 1e-9,
    "other root": _other_root,
}


@pytest.mark.parametrize("name, config", SPLINE_EXAMPLES, ids=IDS)
def test_the_healthy_spline_layers_pass(name: str, config: dict) -> None:
    module, x = get_example(name).build(**config)
    check_invertible(module, x, name=name)


@pytest.mark.parametrize("perturbation", list(PERTURBATIONS))
@pytest.mark.parametrize("name, config", SPLINE_EXAMPLES, ids=IDS)
def test_negative_control_a_perturbed_root_fails_the_contract(name: str, config: dict, perturbation: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    module, x = get_example(name).build(**config)
    monkeypatch.setattr(spline_math, "quadratic_root", PERTURBATIONS[perturbation])
    with pytest.raises(ContractError, match="roundtrip_forward"):
        check_invertible(module, x, name=name)


# -- bounds under hypothesis ---------------------------------------------------------------------------------------
positive = st.floats(1e-4, 1e4)


@given(s=positive, d0=positive, d1=positive, xi=st.floats(0.0, 1.0))
def test_per_bin_bounds_hold_at_drawn_points(s: float, d0: float, d1: float, xi: float) -> None:
    def t(v: float) -> torch.Tensor:
        return torch.tensor([v], dtype=torch.float64)

    knots = Knots(t(-1.0).new_tensor([[-1.0, 1.0]]), t(s).new_tensor([[-s, s]]), t(d0).new_tensor([[d0, d1]]), 1.0)
    x = (2 * t(xi) - 1).requires_grad_(True)
    y, logd = rq_forward(x, knots)
    slope = float(torch.autograd.grad(y.sum(), x)[0])
    assert slope == pytest.approx(math.exp(float(logd.detach())), rel=1e-9)
    lower, upper = rq_derivative_bounds(t(s), t(d0), t(d1))
    assert float(lower) * (1 - 1e-12) <= slope <= float(upper) * (1 + 1e-12)


@st.composite
def _settings(draw: st.DrawFn) -> SplineSettings:
    bins = draw(st.integers(2, 8))
    def fraction() -> float:
        return draw(st.floats(1e-4, 0.99 / bins))

    return SplineSettings(bins, draw(st.floats(0.1, 10.0)), fraction(), fraction(), draw(st.floats(1e-3, 0.99)),
                          draw(st.floats(1.01, 1e3)))


@settings(max_examples=30)
@given(config=_settings(), data=st.data())
def test_global_bounds_hold_at_drawn_parameters(config: SplineSettings, data: st.DataObject) -> None:
    raw = torch.tensor(data.draw(st.lists(st.floats(-50, 50), min_size=config.params, max_size=config.params)),
                       dtype=torch.float64, requires_grad=True)
    x = torch.tensor(data.draw(st.lists(st.floats(-1.5, 1.5), min_size=1, max_size=16)), dtype=torch.float64)
    x = x * config.bound
    y, logd = rq_forward(x, config.knots(raw))
    bounds = config.global_bounds()
    slopes = logd.detach().exp()
    assert bool((slopes >= bounds.lower * (1 - 1e-12)).all()) and bool((slopes <= bounds.upper * (1 + 1e-12)).all())
    for i in range(x.shape[0]):  # one entry at a time: dg(x_i)/du
        grad = torch.autograd.grad(y[i], raw, retain_graph=True)[0]
        assert float(grad.norm()) <= bounds.sensitivity


# -- bad input -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"bins": 1}, r"bins must be an integer >= 2"),
    ({"bound": 0.0}, r"bound must be > 0"),
    ({"bins": 8, "min_width": 0.2}, r"min_width must lie in \(0, 1/bins\) = \(0, 0.125\)"),
    ({"min_height": 0.0}, r"min_height must lie in"),
    ({"min_derivative": 1.5}, r"0 < min_derivative < 1 < max_derivative"),
    ({"max_derivative": 1.0}, r"0 < min_derivative < 1 < max_derivative"),
])
def test_bad_spline_settings_are_refused(kwargs: dict, message: str) -> None:
    for build in (lambda: RationalQuadraticSpline(2, **kwargs), lambda: SplineCoupling(4, **kwargs),
                  lambda: MaskedSplineAutoregressive(3, **kwargs)):
        with pytest.raises(ValueError, match=message):
            build()


def test_wrong_input_rank_suggests_the_right_network() -> None:
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, 4\).*build the layer with net='conv'"):
        SplineCoupling(4)(torch.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match=r"\(batch, 4, H, W\).*build the layer with net='mlp'"):
        SplineCoupling(4, net="conv", hidden=4)(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"flatten images first"):
        MaskedAffineAutoregressive(4)(torch.randn(2, 4, 2, 2))


def test_bad_orders_and_nets_are_refused() -> None:
    with pytest.raises(ValueError, match=r"order must be a permutation of range\(3\)"):
        MaskedAffineAutoregressive(3, order=[0, 0, 1])
    with pytest.raises(ValueError, match=r"order must be 'forward', 'reverse'"):
        MaskedSplineAutoregressive(3, order="random")
    with pytest.raises(ValueError, match="scale_fn must be one of"):
        MaskedAffineAutoregressive(3, scale_fn="sigmoid")
    with pytest.raises(ValueError, match="net must be 'mlp'"):
        SplineCoupling(4, net="resnet")
    with pytest.raises(ValueError, match="at least 2 channels"):
        SplineCoupling(1)


def test_a_network_of_the_wrong_width_is_named() -> None:
    layer = SplineCoupling(4, bins=3, net=torch.nn.Linear(2, 5))
    with pytest.raises(ValueError, match=r"network returned shape \(3, 5\), expected \(3, 16\)"):
        layer(torch.randn(3, 4))
