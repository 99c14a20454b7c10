"""The regularizers (invertible.regularizers): gradients reach the parameters in both backprop modes, the
finite-difference terms estimate the Jacobian's squared Frobenius norm at the documented scale, and the NF
term is
the negative log-likelihood. Everything in float64 against independent computations."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from invertible import InvertibleModule
from invertible.memory import MemorySaving
from invertible.models import DenseFlow
from invertible.regularizers import FD_VARIANTS, Regularization, fd_direction, forward_fd, inverse_fd, nf_term
from invertible.testing import exact_jacobian, randomize_

Term = Callable[[InvertibleModule, Tensor], Tensor]


def _flow(dim: int = 4, steps: int = 2, seed: int = 0) -> DenseFlow:
    flow = DenseFlow(dim, steps=steps, hidden=8, coupling="affine", permutation="lu", actnorm_data_init=False,
                     seed=seed)
    return randomize_(flow, 0.3, seed).double()  # type: ignore[return-value]


def _fixed_term(kind: str, variant: str, x: Tensor, z_shape: torch.Size) -> Term:
    g = torch.Generator().manual_seed(3)
    d = fd_direction(torch.empty(x.shape if kind == "forward" else z_shape, dtype=x.dtype), variant, g)
    if kind == "forward":
        return lambda model, x: forward_fd(model, x, eps=0.1, variant=variant, direction=d)
    return lambda model, x: inverse_fd(model, x, eps=0.1, variant=variant, direction=d)


def _original_inverse_fd_with_its_bug(model: InvertibleModule, x: Tensor, d: Tensor) -> Tensor:
    """The original code's inverse term without memory saving: F^-1 without a graph, turned into a leaf."""
    z = model(x)[0]
    with torch.no_grad():
        x_eps = model.inverse(z + 0.1 * d)[0]
    return (x - x_eps.requires_grad_()).pow(2).sum() / 0.1


def parameters_missed(flow: InvertibleModule, model: InvertibleModule, term: Term, x: Tensor) -> list[str]:
    """Parameters whose autograd gradient (through ``model``) disagrees with a central finite difference of
    the term along a random direction in that parameter alone."""
    params = dict(flow.named_parameters())
    loss = term(model, x)
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    g = torch.Generator().manual_seed(5)
    missed = []
    for (name, p), grad in zip(params.items(), grads):
        v = torch.randn(p.shape, generator=g, dtype=p.dtype)
        h = 1e-5
        with torch.no_grad():
            p.add_(h * v)
            up = float(term(flow, x))
            p.sub_(2 * h * v)
            down = float(term(flow, x))
            p.add_(h * v)
        numeric = (up - down) / (2 * h)
        analytic = 0.0 if grad is None else float((grad * v).sum())
        if not abs(analytic - numeric) <= 1e-5 * (abs(numeric) + 1e-3):
            missed.append(f"{name}: autograd {analytic:.6g}, finite difference {numeric:.6g}")
    return missed


@pytest.mark.parametrize("memory_saving", [False, True], ids=["standard", "memory-saving"])
@pytest.mark.parametrize("variant", FD_VARIANTS)
@pytest.mark.parametrize("kind", ["forward", "inverse"])
def test_finite_difference_terms_reach_every_parameter(kind: str, variant: str, memory_saving: bool) -> None:
    flow = _flow()
    x = torch.randn(6, 4, dtype=torch.float64)
    term = _fixed_term(kind, variant, x, x.shape)
    model = MemorySaving(flow) if memory_saving else flow
    assert parameters_missed(flow, model, term, x) == []


def test_the_reach_check_catches_the_original_inverse_term_bug() -> None:
    """Negative control: the original inverse term (no graph through F^-1) fails the same check."""
    flow = _flow()
    x = torch.randn(6, 4, dtype=torch.float64)
    d = fd_direction(x, "original", torch.Generator().manual_seed(3))
    missed = parameters_missed(flow, flow, lambda m, x: _original_inverse_fd_with_its_bug(m, x, d), x)
    assert len(missed) >= len(list(flow.parameters())) // 2, missed


def _frobenius_sq(fn: Callable[[Tensor], Tensor], inputs: Tensor) -> Tensor:
    with torch.enable_grad():
        jac = exact_jacobian(fn, inputs).detach()
    return jac.pow(2).sum(dim=(1, 2))


def _draws(term: Callable[[torch.Generator], Tensor], n: int) -> tuple[float, float]:
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        values = torch.tensor([float(term(g)) for _ in range(n)], dtype=torch.float64)
    return float(values.mean()), float(values.std() / math.sqrt(n))


@pytest.mark.parametrize("kind", ["forward", "inverse"])
def test_finite_difference_terms_estimate_the_squared_frobenius_norm(kind: str) -> None:
    """Over random directions: intended -> mean ||J||_F^2 / D; original -> eps * mean ||J||_F^2 (its batch
    sum of per-feature-normalised directions, divided by eps). J: the exact Jacobian of F at x or of F^-1 at
    F(x)."""
    dim, eps = 6, 1e-4
    flow = _flow(dim, steps=3)
    base = torch.randn(8, dim, dtype=torch.float64) * 1.5
    x = base.repeat(8, 1)  # 64 samples: each input 8 times, so the batch mean is balanced over inputs
    with torch.no_grad():
        z = flow(x)[0]
    if kind == "forward":
        frob = _frobenius_sq(lambda v: flow(v)[0], base)
        term = forward_fd
    else:
        frob = _frobenius_sq(lambda v: flow.inverse(v)[0], flow(base)[0].detach())
        term = inverse_fd
    targets = {"intended": float(frob.mean()) / dim, "original": eps * float(frob.mean())}
    for variant in FD_VARIANTS:
        mean, se = _draws(lambda g, v=variant: term(flow, x, z=z, eps=eps, variant=v, generator=g), 60)
        target = targets[variant]
        message = f"{kind}/{variant}: {mean:.5g} +- {se:.2g} vs {target:.5g}"
        assert abs(mean - target) <= 4 * se + 1e-3 * target, message
        other = targets["original" if variant == "intended" else "intended"]
        assert abs(mean - other) > 10 * se  # the test tells the two scales apart


def test_directions_are_normalised_per_sample_or_per_feature() -> None:
    like = torch.zeros(16, 3, 2, 2, dtype=torch.float64)
    intended = fd_direction(like, "intended", torch.Generator().manual_seed(0))
    original = fd_direction(like, "original", torch.Generator().manual_seed(0))
    torch.testing.assert_close(intended.flatten(1).norm(dim=1), torch.ones(16, dtype=torch.float64))
    torch.testing.assert_close(original.norm(dim=0), torch.ones(3, 2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="variant must be one of"):
        fd_direction(like, "paper")


def test_nf_term_is_the_coefficient_times_the_negative_log_likelihood() -> None:
    flow = _flow(dim=4)
    x = torch.randn(5, 4, dtype=torch.float64)
    z, logdet = flow(x)
    gauss = torch.distributions.Normal(torch.zeros(()), torch.ones(())).log_prob(z).sum(1)  # independent
    torch.testing.assert_close(nf_term(z, logdet, 1e-2), -1e-2 * (gauss + logdet).mean())
    torch.testing.assert_close(nf_term(z, logdet, 2.0, prior=False), -2.0 * logdet.mean())
    torch.testing.assert_close(nf_term(z, logdet, levels=256), -(gauss + logdet - 4 * math.log(256)).mean())
    torch.testing.assert_close(nf_term(z, logdet), -flow.log_prob(x).mean())
    nf_term(*MemorySaving(flow)(x), 1.0).backward()  # the log-det gradient reaches memory-saving parameters
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in flow.parameters())


def test_regularization_applies_its_terms_on_schedule() -> None:
    flow = _flow()
    x = torch.randn(4, 4, dtype=torch.float64)
    z, logdet = flow(x)
    reg = Regularization(nf_coeff=0.5, fd_coeff=2.0, fd_inv_coeff=3.0, every=5, variant="original")
    assert reg.terms(flow, x, z, logdet, step=3) == {}
    terms = reg.terms(flow, x, z, logdet, step=10, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    torch.testing.assert_close(terms["nf"], nf_term(z, logdet, 0.5))
    fd = forward_fd(flow, x, z=z, coeff=2.0, variant="original", generator=g)
    fd_inv = inverse_fd(flow, x, z=z, coeff=3.0, variant="original", generator=g)
    torch.testing.assert_close(terms["fd"], fd)
    torch.testing.assert_close(terms["fd_inv"], fd_inv)
    assert Regularization(fd_coeff=1.0).active(7) and not Regularization().active(0)
    with pytest.raises(ValueError, match="every must be"):
        Regularization(every=0)
