"""Spectral normalisation and Lipschitz-1 activations, checked against independent exact computations (float64).

- exact operator norms: SVD, the FFT value of circular convolutions, and a convolution matrix assembled by loops;
- the power iteration honours both of its tolerances (against an independent re-implementation of the rule);
- ``u``/``v`` are allocated at construction, so a state dict loads without a forward pass;
- normalised layers and residual branches never exceed their certified Lipschitz constants.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from invertible.layers.activations import FullSort, LipSoftplus, LipSwish, LipschitzCube, MaxMin
from invertible.layers.residual import branch_lipschitz
from invertible.layers.spectral_norm import (
    SpectralNormConv2d,
    SpectralNormLinear,
    conv_spectral_norm,
    matrix_spectral_norm,
    power_iteration,
)

DT = torch.float64


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)  # the layers' default weight initialisation draws from the global generator


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _conv_matrix_by_loops(weight: np.ndarray, h: int, w: int, circular: bool) -> np.ndarray:
    """The matrix of a stride-1 'same' cross-correlation, assembled entry by entry (independent of torch)."""
    out_c, in_c, kh, kw = weight.shape
    ph, pw = kh // 2, kw // 2
    m = np.zeros((out_c * h * w, in_c * h * w))
    for o in range(out_c):
        for i in range(h):
            for j in range(w):
                row = (o * h + i) * w + j
                for c in range(in_c):
                    for a in range(kh):
                        for b in range(kw):
                            p, q = i + a - ph, j + b - pw
                            if circular:
                                p, q = p % h, q % w
                            elif not (0 <= p < h and 0 <= q < w):
                                continue
                            m[row, (c * h + p) * w + q] += weight[o, c, a, b]
    return m


@pytest.mark.parametrize("circular", [True, False])
@pytest.mark.parametrize("size, kernel", [((4, 4), 3), ((5, 3), 3), ((6, 6), 5)])
def test_conv_spectral_norms_match_a_matrix_built_by_loops(circular: bool, size: tuple[int, int], kernel: int) -> None:
    weight = torch.randn(3, 2, kernel, kernel, generator=_gen(kernel), dtype=DT)
    exact = np.linalg.norm(_conv_matrix_by_loops(weight.numpy(), *size, circular), 2)
    mode = "circular" if circular else "zeros"
    dense = float(conv_spectral_norm(weight, size, mode, method="dense"))
    fft = float(conv_spectral_norm(weight, size, mode, method="fft"))
    assert dense == pytest.approx(exact, rel=1e-12)
    if circular:  # the FFT value is exact for circular padding
        assert fft == pytest.approx(exact, rel=1e-12)
    else:  # and an upper bound for zero padding, not a loose one
        assert exact <= fft * (1 + 1e-12) and fft <= 2 * exact


def test_matrix_spectral_norm_is_the_largest_singular_value() -> None:
    w = torch.randn(7, 4, generator=_gen(), dtype=DT)
    assert float(matrix_spectral_norm(w)) == pytest.approx(np.linalg.svd(w.numpy(), compute_uv=False)[0], rel=1e-13)


def _reference_iterations(w: np.ndarray, u: np.ndarray, v: np.ndarray, atol: float, rtol: float, cap: int) -> int:
    """residual-flows' stopping rule as the docs state it, with both tolerances used as given."""
    for k in range(1, cap + 1):
        u_new = w @ v
        u_new /= np.linalg.norm(u_new)
        v_new = w.T @ u_new
        v_new /= np.linalg.norm(v_new)
        du = np.linalg.norm(u_new - u) / math.sqrt(u.size)
        dv = np.linalg.norm(v_new - v) / math.sqrt(v.size)
        u, v = u_new, v_new
        if du <= atol + rtol * np.abs(u).max() and dv <= atol + rtol * np.abs(v).max():
            return k
    return cap


@pytest.mark.parametrize("atol, rtol", [(1e-5, 0.0), (0.0, 1e-5), (1e-6, 1e-3), (1e-3, 1e-6)])
def test_power_iteration_honours_both_tolerances(atol: float, rtol: float) -> None:
    # singular values 3, 2.7, ...: a small gap, so the tolerances decide the iteration count
    q1, _ = torch.linalg.qr(torch.randn(40, 40, generator=_gen(1), dtype=DT))
    q2, _ = torch.linalg.qr(torch.randn(30, 30, generator=_gen(2), dtype=DT))
    s = torch.tensor([3.0, 2.7] + [1.0] * 28, dtype=DT)
    w = q1[:, :30] @ torch.diag(s) @ q2.T
    u0 = torch.nn.functional.normalize(torch.randn(40, generator=_gen(3), dtype=DT), dim=0)
    v0 = torch.nn.functional.normalize(torch.randn(30, generator=_gen(4), dtype=DT), dim=0)
    expected = _reference_iterations(w.numpy(), u0.numpy(), v0.numpy(), atol, rtol, 500)
    u, v = u0.clone(), v0.clone()
    result = power_iteration(lambda t: w @ t, lambda t: w.T @ t, u, v, atol=atol, rtol=rtol, max_iter=500)
    assert result.converged and result.iterations == expected
    assert result.sigma <= 3.0 * (1 + 1e-12) and result.sigma == pytest.approx(3.0, rel=1e-4)


def test_power_iteration_needs_a_tolerance_and_counts_fixed_iterations() -> None:
    w = torch.eye(3, dtype=DT)
    u, v = torch.ones(3, dtype=DT) / 3**0.5, torch.ones(3, dtype=DT) / 3**0.5
    with pytest.raises(ValueError, match="atol or rtol"):
        power_iteration(lambda t: w @ t, lambda t: t, u, v, atol=None, rtol=0.0)
    assert power_iteration(lambda t: w @ t, lambda t: t, u, v, atol=None, rtol=None, n_iterations=7).iterations == 7


def test_vectors_are_allocated_at_full_size_and_a_state_dict_loads_without_a_forward_pass() -> None:
    source = SpectralNormConv2d(3, 16, 3, input_size=(8, 8), coeff=0.98, generator=_gen()).double()
    assert source.u.shape == (16 * 64,) and source.v.shape == (3 * 64,)
    assert SpectralNormConv2d(16, 16, 1, generator=_gen()).u.shape == (16,)
    x = torch.randn(2, 3, 8, 8, generator=_gen(1), dtype=DT)
    with torch.no_grad():
        source.weight.mul_(4.0)
        y = source(x)  # refreshes u, v for the changed weight
    assert int(source.initialized) == 1 and torch.equal(source.spatial_dims, torch.tensor([8.0, 8.0], dtype=DT))
    fresh = SpectralNormConv2d(3, 16, 3, input_size=(8, 8), coeff=0.98, generator=_gen(5)).double()
    fresh.load_state_dict(source.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(x), y)  # the stored u, v are used as they are: no power iteration ran
    assert fresh.last_power_iteration is None


def test_any_weight_change_refreshes_the_estimate_through_data_too() -> None:
    layer = SpectralNormLinear(6, 5, coeff=0.5, atol=1e-10, rtol=0.0, generator=_gen()).double()
    with torch.no_grad():
        layer.weight.mul_(10.0)  # tracked: the next forward refreshes u, v
        layer(torch.zeros(1, 6, dtype=DT))
    assert layer.exact_lipschitz() == pytest.approx(0.5, rel=1e-8)
    # a large change the stored u, v cannot see (orthogonal to both), made through .data, which does not move the
    # version counter (swapping EMA weights in does this): the layer compares values, so the next use refreshes
    a, b = torch.randn(5, generator=_gen(1), dtype=DT), torch.randn(6, generator=_gen(2), dtype=DT)
    a, b = a - (a @ layer.u) * layer.u, b - (b @ layer.v) * layer.v
    stale_sigma = float(layer.u @ (layer.weight.detach() + 100.0 * torch.outer(a, b)) @ layer.v)
    layer.weight.data.add_(100.0 * torch.outer(a, b))
    with torch.no_grad():
        layer(torch.zeros(1, 6, dtype=DT))
    # negative control: the stale u, v would have kept sigma, and the normalised map far above its coefficient
    assert float(torch.linalg.matrix_norm(layer.weight.detach(), ord=2)) / max(stale_sigma / 0.5, 1.0) > 2.0
    assert layer.exact_lipschitz() == pytest.approx(0.5, rel=1e-8)
    layer.weight.data.copy_(torch.randn(5, 6, generator=_gen(3), dtype=DT) * 50)  # EMA-style swap
    assert layer.exact_lipschitz() == pytest.approx(0.5, rel=1e-6)


def _big_weights(module: nn.Module, factor: float) -> None:
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (SpectralNormLinear, SpectralNormConv2d)):
                m.weight.mul_(factor)


@pytest.mark.parametrize("method", ["exact", "power"])
@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
def test_normalised_convolutions_never_exceed_c(method: str, padding_mode: str) -> None:
    for seed in range(4):
        conv = SpectralNormConv2d(3, 5, 3, input_size=(5, 5), padding_mode=padding_mode, coeff=0.9, method=method,
                                  atol=1e-9, rtol=0.0, max_iter=1000, generator=_gen(seed)).double()
        _big_weights(conv, 3.0 + seed)
        w = conv.normalized_weight().detach()
        exact = np.linalg.norm(_conv_matrix_by_loops(w.numpy(), 5, 5, padding_mode == "circular"), 2)
        # exact: certified. power: u^T W v <= ||W||, so c holds only to the accuracy of the estimate, which
        # converges slowly when the top singular values nearly coincide, as they do for zero-padded convolutions
        # (measured: 1.2e-4 above c after 1000 iterations for seed 0)
        assert exact <= 0.9 * (1 + (1e-12 if method == "exact" else 1e-3)), (seed, exact)
        if method == "power" or padding_mode == "circular":  # these reach c; exact zero padding stays below
            assert exact == pytest.approx(0.9, rel=1e-3)


def _branch(kind: str, method: str, coeff: float, seed: int) -> nn.Sequential:
    sn = {"coeff": coeff, "method": method, "atol": 1e-9, "rtol": 0.0, "max_iter": 1000, "generator": _gen(seed)}
    if kind == "image":
        return nn.Sequential(SpectralNormConv2d(2, 8, 3, input_size=(4, 4), **sn), LipSwish(),
                             SpectralNormConv2d(8, 8, 1, **sn), LipSwish(),
                             SpectralNormConv2d(8, 2, 3, input_size=(4, 4), **sn)).double()
    return nn.Sequential(LipSwish(), SpectralNormLinear(3, 16, **sn), LipSwish(), SpectralNormLinear(16, 16, **sn),
                         LipSwish(), SpectralNormLinear(16, 3, **sn)).double()


@pytest.mark.parametrize("kind", ["flat", "image"])
@pytest.mark.parametrize("method", ["exact", "power"])
def test_measured_lipschitz_constant_of_the_branch_never_exceeds_the_certified_one(kind: str, method: str) -> None:
    shape = (2, 4, 4) if kind == "image" else (3,)
    for seed in range(3):
        net = _branch(kind, method, 0.9, seed)
        _big_weights(net, 5.0)
        net(torch.zeros(1, *shape, dtype=DT))  # refresh u, v (power)
        bound = branch_lipschitz(net)
        assert bound == pytest.approx(0.9**3, rel=1e-12)  # three layers of coefficient 0.9
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, (SpectralNormConv2d, SpectralNormLinear)):
                    assert m.exact_lipschitz() <= 0.9 * (1 + (1e-12 if method == "exact" else 1e-3))
        x = torch.randn(16, *shape, generator=_gen(seed), dtype=DT) * torch.logspace(-1, 2, 16, dtype=DT).view(
            -1, *[1] * len(shape))
        jac = torch.stack([torch.autograd.functional.jacobian(lambda v: net(v.unsqueeze(0)).reshape(-1), xi)
                           .reshape(math.prod(shape), -1) for xi in x])
        measured = float(torch.linalg.matrix_norm(jac, ord=2).max())
        assert measured <= bound * (1 + 1e-9), (seed, measured, bound)


@pytest.mark.parametrize("act", [LipSwish(0.5), LipSwish(-3.0), LipSwish(4.0), LipSoftplus(), LipschitzCube(),
                                 nn.ELU(), nn.Tanh()], ids=lambda a: f"{type(a).__name__}")
def test_scalar_activations_have_slope_at_most_one(act: nn.Module) -> None:
    x = torch.linspace(-20, 20, 40001, dtype=DT, requires_grad=True)
    slope = torch.autograd.grad(act.double()(x).sum(), x)[0]
    assert float(slope.abs().max()) <= 1.0
    assert branch_lipschitz(act) == 1.0


@pytest.mark.parametrize("act", [MaxMin(), FullSort()], ids=lambda a: type(a).__name__)
def test_sorting_activations_are_piecewise_permutations(act: nn.Module) -> None:
    x = torch.randn(50, 6, generator=_gen(), dtype=DT)
    jac = torch.stack([torch.autograd.functional.jacobian(lambda v: act(v.unsqueeze(0))[0], xi) for xi in x])
    assert torch.equal(torch.linalg.svdvals(jac).round(decimals=12), torch.ones(50, 6, dtype=DT))
    assert torch.equal(act(x).sort(dim=1).values, x.sort(dim=1).values)  # a permutation of the entries
