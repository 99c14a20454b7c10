"""The FlowGAN study's parts: variant names, the discriminator and its gradient penalty, the Fréchet distance."""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from experiments.flowgan.features import FeatureClassifier, frechet_distance
from experiments.flowgan import Discriminator, gradient_penalty, variant


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny networks: two threads on two shared cores only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_variant_names_parse_into_losses_and_models() -> None:
    v = variant("gan+mle1e-4+maxscale5")
    assert (v.gan, v.mle, v.actnorm_max_scale, v.model) == (1.0, 1e-4, 5.0, "affine")
    assert variant("mle").mle == 1.0 and variant("mle").gan == 0.0
    assert variant("gan+additive").model == "additive"
    assert variant("gan+affine-tanh_exp").model == "affine-tanh_exp"
    for bad in ("maxscale5", "gan+mle0", "gan+maxscale1", "gan+foo", "gan+mle-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            variant(bad)


def test_frechet_distance_matches_the_closed_form_and_scipy() -> None:
    g = torch.Generator().manual_seed(0)
    n, d = 200_000, 3
    # two Gaussians with diagonal covariances: FD = |mu_a - mu_b|^2 + sum (sd_a - sd_b)^2
    sd_a, sd_b = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([3.0, 1.0, 0.5])
    mu_a, mu_b = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    a = mu_a + sd_a * torch.randn(n, d, generator=g, dtype=torch.float64)
    b = mu_b + sd_b * torch.randn(n, d, generator=g, dtype=torch.float64)
    exact = float((mu_a - mu_b).pow(2).sum() + (sd_a - sd_b).pow(2).sum())
    assert frechet_distance(a, b) == pytest.approx(exact, rel=2e-2)
    # correlated features: the same formula with scipy's matrix square root
    x = torch.randn(300, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 5, generator=g, dtype=torch.float64)
    y = torch.randn(300, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 5, generator=g, dtype=torch.float64)
    sx, sy = np.cov(x.numpy().T), np.cov(y.numpy().T)
    root = scipy.linalg.sqrtm(sx @ sy).real
    reference = float(((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(sx + sy - 2 * root))
    assert frechet_distance(x, y) == pytest.approx(reference, rel=1e-8)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(frechet_distance(x[:1], y))
    with pytest.raises(ValueError, match="feature matrices"):
        frechet_distance(x, y[:, :3])


def test_gradient_penalty_of_a_linear_critic_is_its_norm_gap() -> None:
    critic = nn.Sequential(nn.Flatten(), nn.Linear(8, 1))
    with torch.no_grad():
        critic[1].weight.copy_(torch.arange(8.0).view(1, 8) / 10)
    real, fake = torch.randn(6, 2, 2, 2), torch.randn(6, 2, 2, 2)
    gp = gradient_penalty(lambda x: critic(x).squeeze(1), real, fake, torch.Generator().manual_seed(0))
    expected = (critic[1].weight.norm() - 1) ** 2
    assert float(gp.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    gp.backward()  # differentiable in the critic's parameters
    assert critic[1].weight.grad is not None and float(critic[1].weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("shape, width", [((1, 8, 8), 8), ((1, 28, 28), 4), ((3, 32, 32), 4)])
def test_discriminator_shapes_and_spectral_norm(shape: tuple[int, int, int], width: int) -> None:
    torch.manual_seed(0)
    d = Discriminator(shape, width=width)
    x = torch.randn(3, *shape)
    assert d(x).shape == (3,)
    for _ in range(100):  # one power iteration per call in training mode
        d(x)
    for module in d.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            matrix = module.weight.reshape(module.weight.shape[0], -1)
            assert float(torch.linalg.matrix_norm(matrix.detach(), ord=2)) == pytest.approx(1.0, rel=2e-2)


def test_feature_classifier_feature_width() -> None:
    model = FeatureClassifier((1, 28, 28), 10, features=16)
    assert model.features(torch.zeros(2, 1, 28, 28)).shape == (2, 16)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
