"""Log-det estimators of residual blocks against the exact log-det (float64, statistics with computed intervals).

The exact value is ``slogdet(I + J_g)`` of a Jacobian built independently (``torch.autograd.functional``). A
stochastic estimator passes when the mean of ``n`` independent draws lies within ``z * s / sqrt(n)`` of the exact
value, ``z`` the two-sided normal quantile for a false-alarm rate of ``1e-4`` (the seeds are fixed, so the outcome
is deterministic); a deliberately biased variant must fail the same test.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from torch import Tensor, nn

from invertible import ResidualBlock
from invertible.layers.activations import LipSwish
from invertible.layers.residual_logdet import (
    LogDetEstimator,
    estimate_logdet,
    roulette_weights,
    series_logdet,
    tail_probability,
)
from invertible.layers.spectral_norm import SpectralNormConv2d, SpectralNormLinear

DT = torch.float64
Z = float(stats.norm.ppf(1 - 1e-4 / 2))  # 3.89


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _flat_net(coeff: float = 0.95, dim: int = 4, seed: int = 0) -> nn.Sequential:
    sn = {"coeff": coeff, "method": "exact", "generator": _gen(seed)}
    net = nn.Sequential(SpectralNormLinear(dim, 16, **sn), LipSwish(), SpectralNormLinear(16, dim, **sn)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(4.0)  # every layer at its coefficient: Lip(g) close to coeff^2
    return net


def _linear_net() -> nn.Sequential:
    """``g(x) = W x + b`` with ``W`` symmetric of eigenvalues (0.6, -0.6, 0.3, -0.3): a series with a tail large
    enough for truncation biases to be detected.

    The roulette's variance is ``sum_k c_k^2 / P(N >= k - m)`` with ``|c_k| <= D ||J||^k / k``: finite for the
    geometric ``N`` when ``||J||^2 < 1 - p`` (0.36 < 0.5 here); for Poisson ``N`` it diverges through draws too
    rare to matter (``N >= 12`` has probability 1e-6). With ``||J||`` near 1 and few exact terms the sample
    variance stops being a usable estimate (measured: z-scores of 5-9 for eigenvalues 0.8 and Poisson(2)), which
    is why Residual Flows keeps 20 exact terms at evaluation.
    """
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=_gen(20), dtype=DT))
    layer = SpectralNormLinear(4, 4, coeff=0.95, method="exact", generator=_gen(21)).double()
    with torch.no_grad():
        layer.weight.copy_(q @ torch.diag(torch.tensor([0.6, -0.6, 0.3, -0.3], dtype=DT)) @ q.T)
    return nn.Sequential(layer)


def _exact_logdet(net: nn.Module, x: Tensor) -> Tensor:
    out = []
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda v: net(v.unsqueeze(0)).reshape(-1), xi, create_graph=True)
        jac = jac.reshape(xi.numel(), xi.numel())
        out.append(torch.linalg.slogdet(torch.eye(xi.numel(), dtype=DT) + jac)[1])
    return torch.stack(out)


def _z_score(draws: Tensor, exact: float) -> float:
    n = draws.numel()
    return abs(float(draws.mean()) - exact) / (float(draws.std()) / math.sqrt(n))


def _draws(net: nn.Module, x0: Tensor, est: LogDetEstimator, n: int, seed: int) -> Tensor:
    with torch.no_grad():
        return estimate_logdet(net, x0.expand(n, *x0.shape[1:]), est, training=True, generator=_gen(seed))[1]


def test_tail_probabilities_match_scipy() -> None:
    j = torch.arange(0, 30)
    assert torch.allclose(tail_probability("poisson", 2.0, j), torch.tensor(stats.poisson.sf(j.numpy() - 1, 2.0)),
                          rtol=1e-10, atol=1e-300)
    assert torch.allclose(tail_probability("geometric", 0.3, j), torch.tensor(stats.geom.sf(j.numpy(), 0.3)),
                          rtol=1e-12)


@pytest.mark.parametrize("dist, param", [("poisson", 2.0), ("geometric", 0.5)])
def test_roulette_weights_have_expectation_one(dist: str, param: float) -> None:
    n = 200_000
    gen = _gen(1)
    counts = (torch.poisson(torch.full((n, 1), param, dtype=DT), generator=gen) if dist == "poisson" else
              torch.floor(torch.log(1 - torch.rand(n, 1, generator=gen, dtype=DT)) / math.log(1 - param))).long()
    weights = roulette_weights(counts, 2, dist, param)[:, :8]  # terms 1..8; later ones are rarely drawn
    assert torch.equal(weights[:, :2], torch.ones(n, 2, dtype=DT))  # exact terms
    z = (weights.mean(0) - 1).abs() / (weights.std(0) / math.sqrt(n))
    assert bool((z[2:] < Z).all()), z


def test_truncated_series_converges_to_the_exact_log_det_at_the_predicted_rate() -> None:
    net = _flat_net(0.95)
    x = torch.randn(5, 4, generator=_gen(2), dtype=DT)
    exact = _exact_logdet(net, x).detach()
    jac = torch.stack([torch.autograd.functional.jacobian(lambda v: net(v.unsqueeze(0)).reshape(-1), xi) for xi in x])
    rho = float(torch.linalg.matrix_norm(jac, ord=2).max())  # ||J|| at these points (< Lip(g) < 1)
    assert 0.3 < rho < 1
    errors = []
    for n_terms in (1, 2, 4, 8, 16, 32, 64, 128):
        with torch.no_grad():
            est = estimate_logdet(net, x, LogDetEstimator("series", n_terms=n_terms, trace="exact"))[1]
        err = float((est - exact).abs().max())
        # |tr(J^k)| <= D ||J||^k, so the tail after n terms is at most D rho^(n+1) / ((n + 1)(1 - rho))
        assert err <= 4 * rho ** (n_terms + 1) / ((n_terms + 1) * (1 - rho)) + 1e-12, (n_terms, err)
        errors.append(err)
    assert errors[-1] < 1e-9 and errors[0] > 1e-2 and errors == sorted(errors, reverse=True)


@pytest.mark.parametrize("dist", ["poisson", "geometric"])
@pytest.mark.parametrize("trace", ["hutchinson", "exact"])
def test_russian_roulette_is_unbiased_and_a_biased_variant_fails_the_same_test(dist: str, trace: str) -> None:
    net = _linear_net()
    x0 = torch.randn(1, 4, generator=_gen(3), dtype=DT)
    exact = float(_exact_logdet(net, x0)[0].detach())
    n = 20_000
    est = LogDetEstimator("roulette", dist=dist, n_exact_terms=1, trace=trace)
    draws = _draws(net, x0, est, n, seed=4)
    assert _z_score(draws, exact) < Z

    # the same draws of N and the same probes, without the 1 / P(N >= k) reweighting: biased low in |tail|
    gen = _gen(4)
    param = est.rate if dist == "poisson" else est.p
    counts = (torch.poisson(torch.full((n, 1), param, dtype=DT), generator=gen) if dist == "poisson" else
              torch.floor(torch.log(1 - torch.rand(n, 1, generator=gen, dtype=DT)) / math.log(1 - param))).long()
    unbiased = roulette_weights(counts, 1, dist, param)
    j = (torch.arange(1, unbiased.shape[1] + 1) - 1).clamp_min(0)
    biased = unbiased * tail_probability(dist, param, j)  # = the indicator 1[N >= k - 1] alone
    xs = x0.expand(n, 4)
    with torch.no_grad():
        _, vjp_fn = torch.func.vjp(net, xs)
        probe = torch.randn(xs.shape, generator=_gen(5), dtype=DT)
        good = series_logdet(lambda w: vjp_fn(w)[0], probe, unbiased)
        bad = series_logdet(lambda w: vjp_fn(w)[0], probe, biased)
    assert _z_score(good, exact) < Z
    assert _z_score(bad, exact) > 2 * Z


def test_a_short_truncated_series_is_detected_as_biased() -> None:
    net = _linear_net()
    x0 = torch.randn(1, 4, generator=_gen(3), dtype=DT)
    exact = float(_exact_logdet(net, x0)[0].detach())
    draws = _draws(net, x0, LogDetEstimator("series", n_terms=2), 20_000, seed=6)
    assert _z_score(draws, exact) > 2 * Z
    unbiased = _draws(net, x0, LogDetEstimator("roulette", n_exact_terms=2), 20_000, seed=6)
    assert _z_score(unbiased, exact) < Z


@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_the_estimator_is_unbiased_for_a_convolutional_block(probe: str) -> None:
    sn = {"coeff": 0.9, "method": "exact", "generator": _gen(0)}
    net = nn.Sequential(SpectralNormConv2d(2, 8, 3, input_size=(4, 4), **sn), LipSwish(),
                        SpectralNormConv2d(8, 2, 3, input_size=(4, 4), **sn)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
    x0 = torch.randn(1, 2, 4, 4, generator=_gen(7), dtype=DT)
    exact = float(_exact_logdet(net, x0)[0].detach())
    est = LogDetEstimator("roulette", dist="poisson", n_exact_terms=2, probe=probe)
    assert _z_score(_draws(net, x0, est, 10_000, seed=8), exact) < Z


def _param_grad(net: nn.Module, value: Tensor) -> Tensor:
    grads = torch.autograd.grad(value, list(net.parameters()), allow_unused=True)
    return torch.cat([g.reshape(-1) if g is not None else torch.zeros(p.numel(), dtype=DT)
                      for g, p in zip(grads, net.parameters())])


def test_neumann_gradient_equals_the_exact_gradient_with_exact_traces() -> None:
    net = _flat_net(0.9)
    x = torch.randn(3, 4, generator=_gen(9), dtype=DT)
    exact = _exact_logdet(net, x)
    exact_grad = _param_grad(net, exact.sum())
    est = LogDetEstimator("series", n_terms=120, trace="exact", neumann_grad=True)
    value = estimate_logdet(net, x, est)[1]
    assert torch.allclose(value, exact, atol=1e-10, rtol=0)
    assert torch.allclose(_param_grad(net, value.sum()), exact_grad, atol=1e-9, rtol=1e-9)
    # the surrogate carries the gradient, not the value: without it the gradient would be zero
    assert float(exact_grad.abs().max()) > 1e-2


@pytest.mark.parametrize("neumann_grad", [True, False])
def test_stochastic_gradients_are_unbiased(neumann_grad: bool) -> None:
    net = _flat_net(0.9)
    x0 = torch.randn(1, 4, generator=_gen(10), dtype=DT)
    exact_grad = _param_grad(net, _exact_logdet(net, x0).sum())
    direction = torch.randn(exact_grad.shape, generator=_gen(11), dtype=DT)
    target = float(exact_grad @ direction)
    est = LogDetEstimator("roulette", dist="geometric", n_exact_terms=1, neumann_grad=neumann_grad)
    groups, per_group = 40, 500
    gen = _gen(12)
    projections = []
    for _ in range(groups):  # each group: the mean gradient of per_group independent draws, projected
        value = estimate_logdet(net, x0.expand(per_group, 4), est, training=True, generator=gen)[1]
        projections.append(float(_param_grad(net, value.mean()) @ direction))
    draws = torch.tensor(projections, dtype=DT)
    t = float(stats.t.ppf(1 - 1e-4 / 2, groups - 1))
    assert _z_score(draws, target) < t


def test_block_reports_its_logdet_kind_and_matches_the_exact_estimator() -> None:
    net = _flat_net(0.9)
    x = torch.randn(4, 4, generator=_gen(13), dtype=DT)
    exact_block = ResidualBlock(net, channels=4)
    series_block = ResidualBlock(net, channels=4, logdet=LogDetEstimator("series", n_terms=200, trace="exact"))
    assert exact_block.logdet_kind == "exact" and series_block.logdet_kind == "estimated"
    with torch.no_grad():
        assert torch.allclose(exact_block(x)[1], _exact_logdet(net, x), atol=1e-12, rtol=0)
        assert torch.allclose(series_block(x)[1], exact_block(x)[1], atol=1e-10, rtol=0)
