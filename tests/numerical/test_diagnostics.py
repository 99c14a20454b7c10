"""invertible.diagnostics against brute-force float64 computations that share no code with it.

- reconstruction statistics and NaN/Inf counts against numpy on the raw arrays;
- repeated round trips against a hand-written loop;
- exact Jacobian singular values, condition numbers and log-det errors against central finite differences and
  numpy's SVD/slogdet;
- matrix-free Lanczos estimates against the exact SVD, including the a-posteriori residual bound.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

import invertible
from invertible import ActNorm, InvertibleModule, Sequential
from invertible.diagnostics import (
    condition_number,
    estimate_sigma_max,
    exact_jacobian,
    extreme_singular_values,
    jacobian_stats,
    reconstruction_error,
    repeated_round_trips,
    singular_values,
)
from invertible.models import DenseFlow, Glow
from invertible.testing import get_example, randomize_

F64 = torch.float64


def fd_jacobian(module: InvertibleModule, x: Tensor, inverse: bool = False, h: float = 1e-6) -> np.ndarray:
    """Central finite differences at one sample ``x`` (shape ``(1, ...)``), all columns in one batched call."""
    d = x[0].numel()
    steps = h * torch.eye(d, dtype=F64).reshape(d, *x.shape[1:])
    fn = module.inverse if inverse else module
    with torch.no_grad():
        plus, minus = fn(x + steps)[0].reshape(d, -1), fn(x - steps)[0].reshape(d, -1)
    return ((plus - minus) / (2 * h)).T.numpy()


# -- reconstruction -----------------------------------------------------------------------------------------------


def test_reconstruction_statistics_match_numpy_on_a_float32_flow() -> None:
    model = Glow((2, 4, 4), levels=2, depth=2, hidden=8, zero_init=False, seed=3)
    randomize_(model, 0.2, 3)
    x = torch.randn(5, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    stats = reconstruction_error(model, x)
    with torch.no_grad():
        model.eval()
        x_hat = model.inverse(model(x)[0])[0]
    diff = (x_hat.numpy().astype(np.float64) - x.numpy().astype(np.float64)).reshape(5, -1)
    assert np.abs(diff).max() > 0, "float32 round trips should not be exact, or the test proves nothing"
    l2 = np.sqrt((diff**2).sum(1))
    np.testing.assert_allclose(stats.l2.double().numpy(), l2, rtol=1e-5)
    np.testing.assert_allclose(stats.relative.double().numpy(), l2 / np.linalg.norm(x.numpy().reshape(5, -1), axis=1),
                               rtol=1e-5)
    np.testing.assert_allclose(stats.max_abs.double().numpy(), np.abs(diff).max(1), rtol=1e-5)
    summary = stats.summary()
    assert summary["l2_mean"] == pytest.approx(l2.mean(), rel=1e-5)
    assert summary["l2_std"] == pytest.approx(l2.std(ddof=1), rel=1e-4)
    assert summary["l2_max"] == pytest.approx(l2.max(), rel=1e-5)
    assert summary["nonfinite_samples"] == 0.0 and summary["nan"] == 0.0 and summary["inf"] == 0.0


def test_nan_and_inf_entries_are_counted_per_sample_not_refused() -> None:
    # channel 0 is scaled by exp(-800) = 0 in float64: y = 0 and x_hat = 0 / 0 = NaN;
    # channel 1 is scaled by 2: an input of 1e308 overflows to Inf forward and comes back as Inf
    layer = ActNorm(2, data_init=False).double()
    with torch.no_grad():
        layer.log_scale.copy_(torch.tensor([-800.0, np.log(2.0)]))
    x = torch.ones(4, 2, 3, dtype=F64)
    x[1, 1, :2] = 1e308
    x[3, 1, :] = 1e308
    stats = reconstruction_error(layer, x)
    with torch.no_grad():
        scale = torch.tensor([0.0, 2.0], dtype=F64).view(1, 2, 1)
        x_hat = (x * scale) / scale
    expect_nan = np.isnan(x_hat.numpy()).reshape(4, -1).sum(1)
    expect_inf = np.isinf(x_hat.numpy()).reshape(4, -1).sum(1)
    assert stats.nan.tolist() == expect_nan.tolist() == [3, 3, 3, 3]
    assert stats.inf.tolist() == expect_inf.tolist() == [0, 2, 0, 3]
    assert stats.forward_nonfinite.tolist() == [0, 2, 0, 3]
    summary = stats.summary()
    assert summary["nonfinite_samples"] == 1.0
    assert summary["nonfinite_entries"] == pytest.approx((12 + 5) / 24)
    assert np.isnan(summary["l2_mean"])  # no finite sample left to average


def test_repeated_round_trips_match_a_hand_written_loop() -> None:
    model = DenseFlow(6, steps=4, hidden=16, zero_init=False, seed=1)
    randomize_(model, 0.3, 1)
    x = torch.rand(7, 6, generator=torch.Generator().manual_seed(2)) - 0.5
    to_pixels = lambda t: (t + 0.5) * 255  # noqa: E731
    trips = repeated_round_trips(model, x, passes=9, to_pixels=to_pixels)
    model.eval()
    current, x0 = x, x.numpy().astype(np.float64)
    for k in range(9):
        with torch.no_grad():
            current = model.inverse(model(current)[0])[0]
        xk = current.numpy().astype(np.float64)
        np.testing.assert_allclose(trips.l2[k].double().numpy(), np.linalg.norm(xk - x0, axis=1), rtol=1e-5)
        np.testing.assert_allclose(trips.mse[k].double().numpy(), ((xk - x0) ** 2).mean(1), rtol=1e-5)
        np.testing.assert_allclose(trips.pad[k].double().numpy(), np.abs((xk + 0.5) * 255 - (x0 + 0.5) * 255).mean(1),
                                   rtol=1e-4)
    assert float(trips.l2[0].max()) > 0, "float32 round trips should leave an error, or the test proves nothing"
    np.testing.assert_allclose(trips.l2[0].numpy(), reconstruction_error(model, x).l2.double().numpy(), rtol=1e-5)


# -- exact Jacobians ----------------------------------------------------------------------------------------------


def test_exact_jacobian_of_a_known_map() -> None:
    a = torch.tensor([[2.0, -1.0, 0.0], [0.5, 3.0, 1.0], [0.0, 0.0, -4.0]], dtype=F64)
    x = torch.randn(2, 3, dtype=F64)
    jac = exact_jacobian(lambda v: torch.sin(v) @ a.T, x)
    for i in range(2):
        expected = a.numpy() * np.cos(x[i].numpy())[None, :]
        np.testing.assert_allclose(jac[i].numpy(), expected, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("name, config", [("glow", {"coupling": "affine", "split": True}),
                                          ("dense_flow", {"coupling": "affine"}),
                                          ("affine_coupling", {"scale_fn": "exp", "order": "realnvp"})])
def test_jacobian_stats_match_finite_differences_and_numpy(name: str, config: dict[str, object]) -> None:
    module, x = get_example(name).build(**config)
    module.eval()
    stats = jacobian_stats(module, x)
    with torch.no_grad():
        y, logdet = module(x)
    for i in range(x.shape[0]):
        jac = fd_jacobian(module, x[i : i + 1])
        jac_inv = fd_jacobian(module, y[i : i + 1], inverse=True)
        sv, sv_inv = np.linalg.svd(jac, compute_uv=False), np.linalg.svd(jac_inv, compute_uv=False)
        np.testing.assert_allclose(stats.forward[i].numpy(), sv, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(stats.inverse[i].numpy(), sv_inv, rtol=1e-6, atol=1e-8)
        assert float(stats.condition_number[i]) == pytest.approx(sv[0] / sv[-1], rel=1e-6)
        assert float(stats.logabsdet[i]) == pytest.approx(np.linalg.slogdet(jac)[1], abs=1e-6)
        assert float(stats.logdet_error[i]) == pytest.approx(abs(float(logdet[i]) - np.linalg.slogdet(jac)[1]),
                                                             abs=1e-6)
    assert float(stats.logdet_error.max()) < 1e-10
    assert float(stats.logdet_error_inverse.max()) < 1e-10
    torch.testing.assert_close(condition_number(module, x), stats.condition_number)
    torch.testing.assert_close(singular_values(module, x, direction="inverse"), stats.inverse)


class _WrongLogdet(InvertibleModule):
    """A scaling whose log-det is off by a known amount: the log-det error must report exactly that amount."""

    def __init__(self, offset: float) -> None:
        super().__init__(channels=3, ranks=(2,))
        self.offset = offset

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return 3 * x, torch.full((x.shape[0],), 3 * np.log(3.0) + self.offset, dtype=x.dtype)

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return y / 3, torch.full((y.shape[0],), -3 * np.log(3.0), dtype=y.dtype)


def test_logdet_error_measures_a_wrong_logdet() -> None:
    stats = jacobian_stats(_WrongLogdet(0.25), torch.randn(4, 3, dtype=F64))
    torch.testing.assert_close(stats.logdet_error, torch.full((4,), 0.25, dtype=F64))
    assert float(stats.logdet_error_inverse.max()) < 1e-14


def test_diagnostics_leave_training_mode_and_gradients_alone() -> None:
    module, x = get_example("dense_flow").build()
    module.train()
    jacobian_stats(module, x)
    extreme_singular_values(module, x, method="lanczos")
    reconstruction_error(module, x)
    assert all(m.training for m in module.modules())
    assert all(p.grad is None for p in module.parameters())


# -- matrix-free estimates ----------------------------------------------------------------------------------------


def test_lanczos_estimates_agree_with_the_exact_svd_on_registered_examples() -> None:
    names = ["glow", "dense_flow", "affine_coupling", "split"]
    for name in names:
        module, x = get_example(name).build()
        module.eval()
        sv = singular_values(module, x)
        est = extreme_singular_values(module, x, method="lanczos", rtol=1e-6, max_iter=80)
        torch.testing.assert_close(est.sigma_max, sv[:, 0], rtol=1e-5, atol=0, msg=name)
        torch.testing.assert_close(est.sigma_min, sv[:, -1], rtol=1e-5, atol=0, msg=name)
        # Ritz values from below: the estimate never exceeds sigma_max (up to round-off)
        assert bool((est.forward.value <= sv[:, 0] * (1 + 1e-10)).all()), name


def test_the_residual_bound_brackets_a_true_singular_value_at_every_stopping_point() -> None:
    model = Glow((2, 4, 4), levels=1, depth=3, hidden=8, zero_init=False, seed=5).double()
    randomize_(model, 0.2, 5)
    x = torch.randn(3, 2, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(5))
    model(x)
    sv = singular_values(model, x)
    for iters in (1, 2, 4, 8):
        est = estimate_sigma_max(lambda v: model(v)[0], x, max_iter=iters, rtol=0.0)
        assert est.iterations == iters
        nearest = (sv - est.value[:, None]).abs().amin(dim=1)
        assert bool((nearest <= est.residual * (1 + 1e-8) + 1e-12).all()), (iters, nearest, est.residual)
        assert bool((est.value <= sv[:, 0] * (1 + 1e-10)).all())


def test_lanczos_converges_within_5_percent_on_a_conv_flow_in_few_iterations() -> None:
    model = Glow((3, 8, 8), levels=2, depth=1, hidden=8, zero_init=False, seed=2).double()
    randomize_(model, 0.05, 2)
    x = torch.rand(1, 3, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(2)) - 0.5
    model(x)
    sv = singular_values(model, x)
    est = extreme_singular_values(model, x, method="lanczos")  # default rtol 1e-2
    assert float((est.sigma_max / sv[:, 0] - 1).abs().max()) < 0.05
    assert float((est.sigma_min / sv[:, -1] - 1).abs().max()) < 0.05
    assert est.forward.iterations < 40 and est.inverse.iterations < 40


def test_an_invariant_subspace_restarts_instead_of_dividing_by_zero() -> None:
    # J = 2 I: after one step the Krylov space is invariant (beta = 0); the estimate must be exactly 2
    est = estimate_sigma_max(lambda v: 2 * v, torch.zeros(3, 50, dtype=F64), max_iter=5, rtol=1e-12)
    torch.testing.assert_close(est.value, torch.full((3,), 2.0, dtype=F64))
    assert bool(est.converged.all())


def test_forward_and_reverse_mode_jvps_give_the_same_estimate() -> None:
    module, x = get_example("dense_flow").build()
    a = estimate_sigma_max(lambda v: module(v)[0], x, max_iter=6, rtol=0.0, jvp_mode="reverse")
    b = estimate_sigma_max(lambda v: module(v)[0], x, max_iter=6, rtol=0.0, jvp_mode="forward")
    torch.testing.assert_close(a.value, b.value, rtol=1e-10, atol=0)


def test_auto_method_switches_on_size() -> None:
    module, x = get_example("sequential").build(kind="flat")
    assert extreme_singular_values(module, x).method == "exact"
    assert extreme_singular_values(module, x, max_exact_dims=2).method == "lanczos"
    with pytest.raises(ValueError, match="method must be"):
        extreme_singular_values(module, x, method="svd")


def test_invertible_exposes_exact_jacobian_once() -> None:
    from invertible.testing import exact_jacobian as from_testing

    assert from_testing is exact_jacobian
    assert isinstance(invertible.Sequential, type) and Sequential is invertible.Sequential
