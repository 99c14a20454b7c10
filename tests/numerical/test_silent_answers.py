"""No silent wrong answers: each case here was a wrong result without a word before, and is now right or refused.

- cached inverses follow any change of the parameters, including writes through ``.data`` (which do not move
  the version counter): the 1x1 convolution's ``W^-1`` (dense and LU) and the permutation's inverse indices;
  the spectral norms' power-iteration estimate is covered in ``test_residual_spectral.py`` and
  ``test_residual_models.py``;
- residual blocks refuse a branch that is not a contraction, check the preimage their inverse returns, and the
  series log-det refuses a branch that stopped being one;
- models refuse inputs and latents of another size than the one they were built for.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import invertible
from invertible import ConvergenceError, Invertible1x1Conv, Permutation, ResidualBlock
from invertible.layers import residual
from invertible.layers.residual_logdet import LogDetEstimator
from invertible.models import DenseFlow, DenseResidualFlow, Glow, INNClassifier, ResidualFlow

DT = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- cached inverses ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lu", [False, True])
@pytest.mark.parametrize("change", ["mul", "copy"])
def test_the_1x1_conv_inverse_follows_a_change_through_data(lu: bool, change: str) -> None:
    layer = Invertible1x1Conv(4, lu=lu, generator=_gen(0)).double()
    x = torch.randn(3, 4, 2, 2, generator=_gen(1), dtype=DT)
    with torch.no_grad():
        layer.inverse(layer(x)[0])  # fills the cache
        stale = layer.inverse_matrix().clone()
        for i, p in enumerate(layer.parameters()):
            if change == "mul":
                p.data.mul_(2.0)
            else:
                p.data.copy_(p + 0.3 * torch.randn(p.shape, generator=_gen(10 + i), dtype=DT))
        y = layer(x)[0]
        back = layer.inverse(y)[0]
    assert float((back - x).abs().max()) < 1e-10
    # negative control: the matrix cached before the change inverts the new layer badly
    assert float((Invertible1x1Conv._mix(stale, y) - x).abs().max()) > 0.1


def test_the_1x1_conv_cache_is_reused_while_the_values_are_the_same() -> None:
    layer = Invertible1x1Conv(4, generator=_gen(0)).double()
    with torch.no_grad():
        first = layer.inverse_matrix()
        assert layer.inverse_matrix() is first  # the cache is used
        layer.weight.data.copy_(layer.weight.clone())  # same values, written through .data
        assert layer.inverse_matrix() is first
        layer.weight.data[0, 0] += 1e-12  # the smallest change is noticed
        assert layer.inverse_matrix() is not first


def test_the_permutation_inverse_follows_its_indices() -> None:
    layer = Permutation(5, kind="shuffle", generator=_gen(0)).double()
    layer.perm.data.copy_(torch.tensor([4, 0, 3, 1, 2]))
    x = torch.randn(2, 5, generator=_gen(1), dtype=DT)
    assert torch.equal(layer.inverse(layer(x)[0])[0], x)
    assert not torch.equal(layer(x)[0][:, layer.inverse_perm], x)  # the stored inverse indices are stale


# -- residual blocks ---------------------------------------------------------------------------------------------
def _scaled_tanh(scale: float) -> nn.Module:
    class ScaledTanh(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return scale * torch.tanh(x)

    return ScaledTanh()


def test_a_declared_lipschitz_constant_of_one_or_more_is_refused() -> None:
    for lip in (1.0, 2.0):
        expected = rf"Lipschitz bound {lip:g} \(declared with lipschitz\).*needs Lip\(g\) < 1"
        with pytest.raises(ValueError, match=expected):
            ResidualBlock(_scaled_tanh(-2.0), channels=1, lipschitz=lip)
    # negative control: a contraction is accepted without a word
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ResidualBlock(_scaled_tanh(-0.5), channels=1, lipschitz=0.5)


@pytest.mark.parametrize("model", ["dense", "image"])
def test_a_spectral_norm_coefficient_above_one_is_refused(model: str) -> None:
    def build(coeff: float) -> nn.Module:
        if model == "dense":
            return DenseResidualFlow(2, blocks=2, hidden=(8,), coeff=coeff)
        return ResidualFlow((1, 4, 4), blocks=(1,), hidden=4, fc_blocks=0, logit=None, coeff=coeff,
                            logdet="exact")

    with pytest.raises(ValueError, match=r"Lipschitz bound .* \(computed from g\).*coeff"):
        build(1.5)
    build(0.9)  # negative control


def test_a_branch_without_a_bound_warns() -> None:
    with pytest.warns(residual.UnknownLipschitzWarning, match="no Lipschitz bound is known"):
        ResidualBlock(_scaled_tanh(-0.5), channels=1)


def test_an_inverse_that_stops_moving_at_a_wrong_point_is_not_converged() -> None:
    """A branch grown to slope -30 after construction: from ``x_0 = y = 2e-5`` one step of ``6e-4`` is below the
    tolerance ``1e-3``, and ``x_1 = 31 y`` was reported converged with ``f(x_1) = -0.018`` for ``y = 2e-5``."""
    net = nn.Linear(1, 1).double()
    with torch.no_grad():
        net.weight.fill_(0.5)
        net.bias.zero_()
    block = ResidualBlock(net, channels=1, atol=1e-3, rtol=0.0)
    net.weight.data.fill_(-30.0)
    y = torch.tensor([[2e-5]], dtype=DT)
    with pytest.raises(ConvergenceError, match=r"stopped moving.*not a preimage of y") as info:
        block.inverse(y)
    report = info.value.report
    assert not report.converged and report.residual <= report.tolerance
    assert report.forward_residual == pytest.approx(abs(31 * 2e-5 * (1 - 30) - 2e-5), rel=1e-9)
    # negative control: a contraction converges, and its preimage passes the check
    net.weight.data.fill_(-0.5)
    x, _ = block.inverse(y)
    assert block.last_inverse.converged and block.last_inverse.forward_residual <= 1e-3
    assert float((block(x)[0].detach() - y).abs().max()) <= 1e-3


def test_the_preimage_check_passes_converged_inverses_at_tight_tolerances() -> None:
    """Round-off must not make a converged inverse fail the check: ``Lip(g)`` near 1 (large ``x`` for ``y``) and
    the tightest tolerance (``rtol`` floored at ``32 eps``)."""
    flow = DenseResidualFlow(3, blocks=3, hidden=(16,), coeff=0.97, atol=0.0, rtol=0.0, seed=1).double()
    x = torch.randn(64, 3, generator=_gen(2), dtype=DT) * torch.logspace(-3, 3, 64, dtype=DT)[:, None]
    with torch.no_grad():
        back, _ = flow.inverse(flow(x)[0])
    assert all(report.converged for _, report in flow.inverse_reports())
    assert torch.allclose(back, x, rtol=1e-9, atol=1e-12)


def test_the_series_log_det_refuses_a_branch_that_is_no_longer_a_contraction() -> None:
    net = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        net.weight.copy_(0.5 * torch.eye(2, dtype=DT))
    block = ResidualBlock(net, channels=2, logdet=LogDetEstimator("series", n_terms=60, trace="exact"))
    x = torch.randn(3, 2, generator=_gen(3), dtype=DT)
    assert torch.allclose(block(x)[1], torch.full((3,), 2 * math.log(1.5), dtype=DT))
    net.weight.data.mul_(5.0)  # Lip(g) = 2.5: the series diverges
    with pytest.raises(ValueError, match=r"series log-det.*Lipschitz bound 2.5 \(computed from g\)"):
        block(x)
    # negative control: the exact log-det needs no contraction, and is right: 2 log 3.5
    block.estimator = LogDetEstimator("exact")
    assert torch.allclose(block(x)[1], torch.full((3,), 2 * math.log(3.5), dtype=DT))


# -- models and the size they were built for ---------------------------------------------------------------------
def _models() -> dict[str, tuple[invertible.InvertibleModule, tuple[int, ...], tuple[int, ...]]]:
    """name -> (model, the input shape it was built for, another input shape of the same rank and channels)."""
    return {
        "glow": (Glow((1, 8, 8), levels=2, depth=1, hidden=4), (1, 8, 8), (1, 16, 16)),
        "resflow": (ResidualFlow((1, 4, 4), blocks=(1, 1), hidden=4, fc_blocks=1, fc_hidden=4, logit=None,
                                 logdet="exact"), (1, 4, 4), (1, 8, 8)),
        "dense": (DenseFlow(3, steps=2, hidden=4), (3,), (4,)),
        "dense_residual": (DenseResidualFlow(3, blocks=1, hidden=(4,)), (3,), (4,)),
    }


@pytest.mark.parametrize("name", list(_models()))
def test_models_refuse_inputs_and_latents_of_another_size(name: str) -> None:
    model, built, other = _models()[name]
    x = torch.rand(2, *built)
    z, _ = model(x)  # negative control: the size it was built for works both ways
    model.inverse(z)
    dims = ", ".join(map(str, built))
    with pytest.raises(ValueError, match=rf"(built for inputs of shape|expects input of shape) \(batch, {dims}\)"):
        model(torch.rand(2, *other))
    wrong = torch.rand(2, *(z.shape[1:2] + tuple(2 * s for s in z.shape[2:]))) if z.dim() == 4 \
        else torch.rand(2, z.shape[1] + 1)
    with pytest.raises(ValueError, match=r"(takes latents of shape|expects input of shape)"):
        model.inverse(wrong)


def test_glow_refuses_latents_of_another_spatial_size_and_says_where_latents_come_from() -> None:
    glow = Glow((1, 8, 8), levels=2, depth=1, hidden=4)
    with pytest.raises(ValueError, match=r"takes latents of shape \(batch, 16, 2, 2\), what it makes of inputs of "
                                         r"shape \(batch, 1, 8, 8\); got \(2, 16, 4, 4\)"):
        glow.inverse(torch.randn(2, 16, 4, 4))


def test_the_classifier_refuses_images_of_another_size() -> None:
    model = INNClassifier((1, 8, 8), levels=2, depth=1, hidden=4)
    logits, z, _ = model(torch.randn(3, 1, 8, 8))  # negative control
    assert logits.shape == (3, 10)
    with pytest.raises(ValueError, match=r"built for images of shape \(batch, 1, 8, 8\), got \(3, 1, 16, 16\)"):
        model(torch.randn(3, 1, 16, 16))
    with pytest.raises(ValueError, match="takes latents of shape"):
        model.decode(torch.randn(3, 16, 4, 4))


def test_wrappers_carry_the_model_size() -> None:
    glow = Glow((1, 8, 8), levels=2, depth=1, hidden=4)
    for wrapped, x in ((invertible.MemorySaving(glow), torch.randn(2, 1, 16, 16)),
                       (invertible.Inverse(glow), torch.randn(2, 16, 4, 4))):
        with pytest.raises(ValueError, match="this (Glow|MemorySaving|Inverse)"):
            wrapped(x)
