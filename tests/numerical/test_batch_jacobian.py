"""``batch_jacobian`` and ``jacobian_stats(batched=True)`` against the per-sample exact Jacobian, and non-finite
Jacobians counted (NaN singular values) instead of stopping the measurement."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from invertible import AffineCoupling
from invertible.diagnostics import batch_jacobian, exact_jacobian, jacobian_stats, singular_values
from invertible.models import DenseFlow


def _flow() -> DenseFlow:
    torch.manual_seed(0)
    return DenseFlow(2, steps=3, hidden=8, zero_init=False, actnorm_data_init=False).double().eval()


def test_batch_jacobian_equals_per_sample_jacobian() -> None:
    flow = _flow()
    x = torch.randn(17, 2, dtype=torch.float64) * 3
    batched = batch_jacobian(lambda v: flow(v)[0], x)
    exact = exact_jacobian(lambda v: flow(v)[0], x)
    assert batched.shape == (17, 2, 2)
    torch.testing.assert_close(batched, exact, rtol=1e-12, atol=1e-12)


def test_batch_jacobian_of_a_map_with_different_output_size() -> None:
    w = torch.randn(3, 2, dtype=torch.float64)
    x = torch.randn(5, 2, dtype=torch.float64)
    jac = batch_jacobian(lambda v: torch.tanh(v @ w.T), x)
    expected = (1 - torch.tanh(x @ w.T) ** 2)[:, :, None] * w[None]  # d tanh(Wx) = diag(1 - tanh^2) W
    torch.testing.assert_close(jac, expected, rtol=1e-12, atol=1e-12)


def test_batched_jacobian_stats_match_the_per_sample_ones() -> None:
    flow = _flow()
    x = torch.randn(9, 2, dtype=torch.float64)
    a = jacobian_stats(flow, x, batched=True)
    b = jacobian_stats(flow, x)
    for name in ("forward", "inverse", "logabsdet", "logabsdet_inverse"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-12, atol=1e-12)
    # sigma_max * sigma_min = |det J| in 2-D, and the flow's own log-det is exact in float64
    assert torch.allclose(a.sigma_max.log() + a.sigma_min.log(), a.logabsdet, atol=1e-10)
    assert float(a.logdet_error.max()) < 1e-10


def _exploding_coupling() -> AffineCoupling:
    """``y2 = x2 exp(x1)``: the Jacobian ``[[1, 0], [x2 e^x1, e^x1]]`` overflows in float32 for ``x1 > 89``."""
    net = nn.Linear(1, 2)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.0], [1.0]]))  # shift t = 0, raw scale h = x1
        net.bias.zero_()
    return AffineCoupling(2, net=net, scale_fn="exp")


def test_non_finite_jacobians_give_nan_singular_values_for_that_sample_only() -> None:
    layer = _exploding_coupling()
    x = torch.tensor([[0.5, 2.0], [100.0, 1.0], [-1.0, 3.0]])
    for batched in (False, True):
        stats = jacobian_stats(layer, x, inverse=False, batched=batched)
        assert math.isnan(float(stats.condition_number[1]))
        for i in (0, 2):
            x1, x2 = float(x[i, 0]), float(x[i, 1])
            expected = np.linalg.svd(np.array([[1.0, 0.0], [x2 * math.exp(x1), math.exp(x1)]]), compute_uv=False)
            np.testing.assert_allclose(stats.forward[i].numpy(), expected, rtol=1e-6)
    sv = singular_values(layer, x)
    assert torch.isnan(sv[1]).all() and torch.isfinite(sv[[0, 2]]).all()
