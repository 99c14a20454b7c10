"""The fixed-point inverse of residual blocks: iteration counts, honest failure reports, bounds and gradients.

- with ``g(x) = L P x + b`` (``P`` a signed permutation, so every step shrinks by exactly ``L`` in the max norm)
  the iteration count is predicted exactly by the contraction rate; for nonlinear ``g`` it stays within the
  count that ``Lip(g)`` guarantees, and the error within the bound the report implies;
- a branch forced above Lipschitz 1 is reported as not converged (raise, warn, return), never silently;
- measured singular values of the block and of its inverse respect ``1 + L`` and ``1 / (1 - L)``;
- gradients of the inverse (implicit, unrolled, Newton) equal ``(I + J_g)^{-1}`` and its parameter derivative.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import Tensor, nn

import invertible
from invertible import ConvergenceError, ConvergenceWarning, ResidualBlock
from invertible.layers.activations import LipSwish
from invertible.layers.spectral_norm import SpectralNormConv2d, SpectralNormLinear
from invertible.models import DenseResidualFlow

DT = torch.float64


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _signed_permutation_net(lip: float, dim: int = 5) -> nn.Sequential:
    perm = torch.randperm(dim, generator=_gen(1))
    signs = torch.where(torch.rand(dim, generator=_gen(2)) < 0.5, -1.0, 1.0).to(DT)
    layer = SpectralNormLinear(dim, dim, coeff=lip, method="exact", generator=_gen(3)).double()
    with torch.no_grad():
        layer.weight.copy_(lip * torch.eye(dim, dtype=DT)[perm] * signs)
        layer.bias.copy_(torch.randn(dim, generator=_gen(4), dtype=DT))
    return nn.Sequential(layer)


def _mlp(coeff: float, dim: int = 4, seed: int = 0, scale: float = 4.0) -> nn.Sequential:
    sn = {"coeff": coeff, "method": "exact", "generator": _gen(seed)}
    net = nn.Sequential(LipSwish(), SpectralNormLinear(dim, 32, **sn), LipSwish(), SpectralNormLinear(32, dim, **sn))
    net = net.double()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    return net


@pytest.mark.parametrize("lip", [0.3, 0.6, 0.9, 0.98])
def test_iterations_follow_the_contraction_rate_exactly(lip: float) -> None:
    block = ResidualBlock(_signed_permutation_net(lip), channels=5, atol=1e-11, rtol=0.0, max_iter=5000)
    y = torch.randn(6, 5, generator=_gen(5), dtype=DT) * torch.tensor([0.1, 1, 3, 10, 30, 100], dtype=DT)[:, None]
    with torch.no_grad():
        x = block.inverse(y)[0]
        second_step = (block.nnet(y) - block.nnet(y - block.nnet(y))).abs().amax(1)  # ||x_2 - x_1||, x_0 = y
    report = block.last_inverse
    # step k has size lip^(k-2) * ||x_2 - x_1||_inf: the first k with lip^(k-2) s_2 <= tol, where the tolerance
    # is atol plus the relative floor 32 eps ||y||_inf
    tol = 1e-11 + 32 * torch.finfo(DT).eps * y.abs().amax(1)
    predicted = 2 + torch.ceil(torch.log(tol / second_step) / math.log(lip)).clamp_min(0)
    assert report.converged
    # exact up to one iteration where rounding at |y| ~ 100 (1e-12) meets the tolerance (1e-11)
    assert all(abs(k - int(p)) <= 1 for k, p in zip(report.sample_iterations, predicted))
    assert sum(k == int(p) for k, p in zip(report.sample_iterations, predicted)) >= 5
    assert report.contraction == pytest.approx(lip, rel=1e-3)
    with torch.no_grad():  # ||f(x_k) - y|| <= lip * step_k, plus the rounding of f at |y|
        residual = (block(x)[0] - y).abs().amax(1)
    assert bool((residual <= lip * tol + 8 * torch.finfo(DT).eps * y.abs().amax(1)).all())


@pytest.mark.parametrize("coeff", [0.5, 0.9])
def test_nonlinear_branches_converge_within_the_guaranteed_count_and_error(coeff: float) -> None:
    net = _mlp(coeff)
    lip = coeff**2
    block = ResidualBlock(net, channels=4, atol=1e-12, rtol=0.0)
    assert block.lipschitz_constant() == pytest.approx(lip, rel=1e-12)
    x = torch.randn(50, 4, generator=_gen(6), dtype=DT) * 10
    with torch.no_grad():
        y, _ = block(x)
        x_back, _ = block.inverse(y)
        second_step = (net(y) - net(y - net(y))).abs().amax(1)
    report = block.last_inverse
    dims = math.sqrt(4)
    # ||x_k - x_{k-1}||_inf <= ||.||_2 <= lip^(k-2) sqrt(D) ||x_2 - x_1||_inf
    guaranteed = 2 + torch.ceil(torch.log(1e-12 / (dims * second_step)) / math.log(lip)).clamp_min(0)
    assert all(k <= int(g) for k, g in zip(report.sample_iterations, guaranteed))
    error = (x_back - x).norm(dim=1)
    assert float(error.max()) <= lip / (1 - lip) * dims * report.residual + 1e-13


def _expanding_block(on_failure: str = "raise") -> ResidualBlock:
    """A block whose branch grew to Lip(g) = 1.5 after construction (construction refuses it; a plain branch
    in training can get there)."""
    net = nn.Linear(3, 3).double()
    with torch.no_grad():
        net.weight.copy_(0.5 * torch.eye(3, dtype=DT))
        net.bias.zero_()
    block = ResidualBlock(net, channels=3, max_iter=50, on_failure=on_failure)
    with torch.no_grad():
        net.weight.mul_(3.0)
    return block


def test_a_branch_above_lipschitz_one_is_reported_and_raises_by_default() -> None:
    block = _expanding_block()
    assert block.lipschitz_constant() == pytest.approx(1.5)
    assert block.lipschitz_bounds() == (2.5, None)
    y = torch.randn(4, 3, generator=_gen(7), dtype=DT)
    with pytest.raises(ConvergenceError, match=r"did not converge in 50 iterations.*not a contraction") as info:
        block.inverse(y)
    assert not info.value.report.converged and info.value.report.iterations == 50
    assert info.value.report.contraction == pytest.approx(1.5, rel=1e-6)


def test_warn_and_return_policies_report_non_convergence() -> None:
    y = torch.randn(4, 3, generator=_gen(7), dtype=DT)
    block = _expanding_block("warn")
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        x, _ = block.inverse(y)
    assert not block.last_inverse.converged and x.shape == y.shape
    block = _expanding_block("return")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        block.inverse(y)
    assert not block.last_inverse.converged and block.last_inverse.residual > 1.0


def test_divergence_to_overflow_stops_early() -> None:
    block = _expanding_block("return")
    block.max_iter = 100_000
    with invertible.allow_nonfinite():
        x, _ = block.inverse(torch.full((1, 3), 1e300, dtype=DT))
    assert not block.last_inverse.converged and block.last_inverse.iterations < 100_000


def test_iterative_inverse_overrides_cap_tolerance_and_policy() -> None:
    block = ResidualBlock(_mlp(0.9), channels=4, atol=1e-12, rtol=0.0)
    y = torch.randn(3, 4, generator=_gen(8), dtype=DT)
    with torch.no_grad():
        with pytest.raises(ConvergenceError):
            with invertible.iterative_inverse(max_iter=2):
                block.inverse(y)
        with invertible.iterative_inverse(max_iter=2, on_failure="return"):
            block.inverse(y)
        assert block.last_inverse.iterations == 2 and not block.last_inverse.converged
        with invertible.iterative_inverse(atol=1e-3):
            block.inverse(y)
        loose = block.last_inverse
        block.inverse(y)
        tight = block.last_inverse
    assert loose.converged and tight.converged and loose.iterations < tight.iterations
    assert loose.tolerance == pytest.approx(1e-3 + 32 * torch.finfo(DT).eps * float(y.abs().max()), rel=1e-9)


def _jacobians(fn, x: Tensor) -> Tensor:  # type: ignore[no-untyped-def]
    return torch.stack([torch.autograd.functional.jacobian(lambda v: fn(v.unsqueeze(0))[0].reshape(-1), xi)
                        .reshape(xi.numel(), xi.numel()) for xi in x])


@pytest.mark.parametrize("kind", ["flat", "image"])
def test_singular_values_of_block_and_inverse_respect_the_bounds(kind: str) -> None:
    if kind == "flat":
        net, shape = _mlp(0.95, scale=6.0), (4,)
    else:
        sn = {"coeff": 0.95, "method": "exact", "generator": _gen(9)}
        net = nn.Sequential(SpectralNormConv2d(2, 8, 3, input_size=(3, 3), **sn), LipSwish(),
                            SpectralNormConv2d(8, 2, 3, input_size=(3, 3), **sn)).double()
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(6.0)
        shape = (2, 3, 3)
    block = ResidualBlock(net, channels=shape[0], ranks=(len(shape) + 1,), atol=1e-13, rtol=0.0)
    lip = block.lipschitz_constant()
    fwd_bound, inv_bound = block.lipschitz_bounds()
    assert fwd_bound == 1 + lip and inv_bound == pytest.approx(1 / (1 - lip))
    scales = torch.logspace(-2, 3, 12, dtype=DT).view(-1, *[1] * len(shape))
    x = torch.randn(12, *shape, generator=_gen(10), dtype=DT) * scales
    with torch.no_grad():
        y, _ = block(x)
    sv = torch.linalg.svdvals(_jacobians(block, x))
    sv_inv = torch.linalg.svdvals(_jacobians(block.inverse, y))
    tol = 1e-12
    assert float(sv[:, 0].max()) <= fwd_bound * (1 + tol)
    assert float((1 / sv[:, -1]).max()) <= inv_bound * (1 + tol)
    assert float(sv_inv[:, 0].max()) <= inv_bound * (1 + tol)
    assert float((1 / sv_inv[:, -1]).max()) <= fwd_bound * (1 + tol)
    # and not vacuous: the branch uses a good part of its budget somewhere
    assert float(sv[:, 0].max()) > 1 + 0.1 * lip


@pytest.mark.parametrize("mode", ["implicit", "unrolled", "newton"])
def test_gradients_of_the_inverse_are_those_of_the_exact_inverse(mode: str) -> None:
    net = _mlp(0.9)
    block = ResidualBlock(net, channels=4, atol=1e-14, rtol=0.0, inverse_grad="unrolled" if mode == "unrolled"
                          else "implicit", newton_refine=mode == "newton")
    x = torch.randn(3, 4, generator=_gen(11), dtype=DT)
    with torch.no_grad():
        y, _ = block(x)
    # d x / d y = (I + J_g(x))^{-1}, with J_g from an independent Jacobian of g
    jg = _jacobians(lambda v: (net(v),), x)
    expected = torch.linalg.inv(torch.eye(4, dtype=DT) + jg)
    got = _jacobians(block.inverse, y)
    assert torch.allclose(got, expected, atol=1e-10, rtol=0)
    # parameter gradient of sum(x * c): -(w^T dg/dtheta) with w = (I + J_g)^{-T} c
    c = torch.randn(3, 4, generator=_gen(12), dtype=DT)
    params = list(net.parameters())
    grads = torch.autograd.grad((block.inverse(y)[0] * c).sum(), params)
    w = torch.linalg.solve(torch.eye(4, dtype=DT) + jg.transpose(1, 2), c.unsqueeze(-1)).squeeze(-1)
    expected_grads = torch.autograd.grad(-(net(x) * w).sum(), params)
    for g, e in zip(grads, expected_grads):
        assert torch.allclose(g, e, atol=1e-10, rtol=1e-8)


def test_capped_unrolled_inverse_differentiates_the_iterations_actually_run() -> None:
    """The invertibility attack caps the iterations (4) and differentiates through them."""
    net = _mlp(0.9)
    block = ResidualBlock(net, channels=4)
    y = torch.randn(2, 4, generator=_gen(13), dtype=DT, requires_grad=True)
    with invertible.iterative_inverse(max_iter=4, on_failure="return"):
        x = block.inverse(y)[0]
    assert block.last_inverse.iterations == 4 and not block.last_inverse.converged
    manual = y
    for _ in range(4):
        manual = y - net(manual)
    assert torch.equal(x.detach(), manual.detach())
    c = torch.randn(2, 4, generator=_gen(14), dtype=DT)
    g1 = torch.autograd.grad((x * c).sum(), y)[0]
    g2 = torch.autograd.grad((manual * c).sum(), y)[0]
    assert torch.allclose(g1, g2, atol=1e-14, rtol=0)


def test_dense_residual_flow_inverts_far_from_the_data() -> None:
    """Global bi-Lipschitz bounds: the inverse works at |x| ~ 1e4 as well as near the origin."""
    flow = DenseResidualFlow(2, blocks=10, hidden=(32, 32), coeff=0.9, atol=1e-12, rtol=0.0).double()
    x = torch.randn(200, 2, generator=_gen(15), dtype=DT) * torch.logspace(-2, 4, 200, dtype=DT)[:, None]
    with torch.no_grad():
        z, logdet = flow(x)
        x_back, logdet_inv = flow.inverse(z)
    relative = (x_back - x).norm(dim=1) / x.norm(dim=1).clamp_min(1.0)
    assert float(relative.max()) < 1e-10
    assert torch.allclose(logdet_inv, -logdet, atol=1e-9, rtol=0)
    assert all(r.converged for _, r in flow.inverse_reports())
