"""A spectrally normalised layer whose weight starts at zero (residual branches' ``zero_init_last``) is normalised
once training makes the weight non-zero: the power iteration must not get stuck at ``u = v = 0``."""

from __future__ import annotations

import torch

from invertible.layers.spectral_norm import SpectralNormLinear, matrix_spectral_norm, power_iteration
from invertible.models import DenseResidualFlow


def test_zero_weight_then_trained_weight_is_normalised() -> None:
    layer = SpectralNormLinear(4, 3, coeff=0.8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        layer.weight.zero_()
    layer(torch.randn(2, 4))  # the refresh sees a zero map
    assert bool(layer.u.any()) and bool(layer.v.any())
    with torch.no_grad():
        layer.weight.copy_(torch.randn(3, 4, generator=torch.Generator().manual_seed(1)) * 5)
    assert float(matrix_spectral_norm(layer.weight.detach().double())) > 2  # far above the coefficient
    layer(torch.randn(2, 4))
    assert abs(layer.exact_lipschitz() - 0.8) < 1e-3


def test_zero_vectors_restart() -> None:
    w = torch.diag(torch.tensor([3.0, 1.0]))
    u, v = torch.zeros(2), torch.zeros(2)
    result = power_iteration(lambda t: w @ t, lambda t: w.T @ t, u, v, atol=1e-7, rtol=0.0)
    assert result.converged and abs(result.sigma - 3.0) < 1e-5


def test_trained_zero_init_residual_flow_keeps_its_lipschitz_bound() -> None:
    torch.manual_seed(0)
    flow = DenseResidualFlow(2, blocks=2, hidden=(8,), coeff=0.7, zero_init_last=True)
    optimizer = torch.optim.Adam(flow.parameters(), lr=0.1)
    for _ in range(10):
        loss = -flow.log_prob(torch.randn(64, 2) * 3).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    flow(torch.randn(2, 2))  # refresh after the last step
    layers = [m for m in flow.modules() if isinstance(m, SpectralNormLinear)]
    last = layers[1::2]  # the zero-initialised output layers of the two branches
    assert all(float(matrix_spectral_norm(m.weight.detach().double())) > 0.7 for m in last)  # training grew them
    assert all(m.exact_lipschitz() <= 0.7 + 1e-3 for m in layers)
