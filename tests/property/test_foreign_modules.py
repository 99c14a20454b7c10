"""The checker on code written the way other libraries write it, each behaviour beside its negative control.

- integer tensors (a permutation's indices held as a frozen ``nn.Parameter``) are ignored by the dtype check, also
  inside :class:`~invertible.Sequential`; a floating parameter in another dtype is still refused;
- the state-dict check changes only trainable floating parameters: a frozen matrix with an inverse cached at
  construction passes, the same cache over a trainable matrix still fails;
- maps torch.func cannot trace (``requires_grad_`` and ``torch.autograd.grad`` inside forward) are checked by
  plain autograd, and a wrong log-det of such a map still fails; a ``no_grad`` region in the forward map is
  reported as a failure of the forward map, not as torch's error;
- stochastic log-dets (``logdet_kind="estimated"``) are checked statistically: unbiased noise passes, a bias of
  0.05 nats fails;
- iterative inverses are allowed their declared tolerance in every property (an inverse off by 1e-8 with
  ``inverse_atol=1e-7`` passes, one off by 1e-4 fails), and non-convergence is reported as ``convergence``;
- an in-place change of the caller's tensor and an exception inside the module are named failures.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

import invertible
from invertible import InvertibleModule
from invertible.adapters import Callables
from invertible.layers.residual import ConvergenceError
from invertible.testing import check_invertible

DT = torch.float64


def _x(batch: int = 4, dims: int = 3, seed: int = 0) -> Tensor:
    return torch.randn(batch, dims, generator=torch.Generator().manual_seed(seed), dtype=DT)


class Permute(nn.Module):
    """A FrEIA-style permutation: its indices are an int64 ``nn.Parameter(requires_grad=False)``."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.perm = nn.Parameter(torch.randperm(dims, generator=torch.Generator().manual_seed(0)), requires_grad=False)
        self.weight = nn.Parameter(torch.ones(dims))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x[:, self.perm] * self.weight, self.weight.abs().log().sum().expand(len(x))

    def backward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return (y / self.weight)[:, torch.argsort(self.perm)], -self.weight.abs().log().sum().expand(len(y))


def _permute() -> Callables:
    p = Permute(3)
    return Callables(p.forward, p.backward)


def test_integer_parameters_are_ignored_by_the_dtype_check_also_inside_sequential() -> None:
    layer = _permute().double()
    assert layer.owners[0].perm.dtype == torch.int64  # .double() leaves integer tensors alone
    assert check_invertible(layer, _x()).ok
    chain = invertible.Sequential(invertible.ActNorm(3), _permute()).double()
    assert check_invertible(chain, _x() + 1, name="sequential").ok


def test_negative_control_a_floating_parameter_in_another_dtype_is_still_refused() -> None:
    layer = _permute()  # its weight stays float32
    with pytest.raises(TypeError, match=r"float64.*float32|float32.*float64"):
        layer(_x())


class FrozenCached(InvertibleModule):
    """``y = x W^T`` with ``W^-1`` computed once at construction: right if ``W`` never changes."""

    def __init__(self, dims: int, trainable: bool) -> None:
        super().__init__(channels=None, ranks=(2,))
        g = torch.Generator().manual_seed(1)
        w = torch.eye(dims, dtype=DT) + 0.3 * torch.randn(dims, dims, generator=g, dtype=DT)
        self.weight = nn.Parameter(w, requires_grad=trainable)
        self.register_buffer("cached_inverse", torch.linalg.inv(w))

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x @ self.weight.T, torch.linalg.slogdet(self.weight)[1].expand(len(x))

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return y @ self.cached_inverse.T, -torch.linalg.slogdet(self.weight)[1].expand(len(y))


def test_the_state_dict_check_leaves_frozen_matrices_alone() -> None:
    report = check_invertible(FrozenCached(3, trainable=False).double(), _x(), raise_on_failure=False)
    assert report.ok, report
    assert any("no trainable floating-point parameter" in n for n in report.notes), report.notes


def test_negative_control_a_stale_cache_of_a_trainable_matrix_still_fails() -> None:
    report = check_invertible(FrozenCached(3, trainable=True).double(), _x(), raise_on_failure=False)
    assert "state_dict_update" in report.failed, report


class GradInside(InvertibleModule):
    """``y = x + 0.5 tanh(x)`` whose log-det is computed the way FrEIA's i-ResNet does: ``requires_grad_`` on a
    detached copy and ``torch.autograd.grad`` inside forward (torch.func cannot trace it)."""

    def __init__(self, logdet_error: float = 0.0) -> None:
        super().__init__(channels=None, ranks=(2,))
        self.logdet_error = logdet_error

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            y = z + 0.5 * torch.tanh(z)
            (diag,) = torch.autograd.grad(y.sum(), z)  # elementwise map: the gradient is the Jacobian's diagonal
        y = x + 0.5 * torch.tanh(x)
        return y, diag.log().sum(1) + self.logdet_error

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x = y.clone()
        for _ in range(200):  # Newton's method on x + 0.5 tanh(x) = y (monotone, converges to rounding)
            x = x - (x + 0.5 * torch.tanh(x) - y) / (1 + 0.5 / torch.cosh(x) ** 2)
        return x, -self._forward(x)[1]


def test_maps_that_torch_func_cannot_trace_are_checked_by_autograd() -> None:
    report = check_invertible(GradInside(), _x(), raise_on_failure=False)
    assert report.ok, report
    with pytest.raises(RuntimeError):  # what the checker used to pass on as torch's error
        torch.func.vmap(torch.func.jacrev(lambda v: GradInside()(v[None])[0][0]))(_x())


def test_negative_control_a_wrong_log_det_of_an_untraceable_map_fails() -> None:
    report = check_invertible(GradInside(logdet_error=1e-6), _x(), raise_on_failure=False)
    assert "logdet_exact" in report.failed, report


class NoGradForward(InvertibleModule):
    """A forward map computed under ``torch.no_grad()``: autograd sees a constant, not the map's derivative."""

    def __init__(self) -> None:
        super().__init__(channels=None, ranks=(2,))

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            y = 2 * x
        return y, torch.full((len(x),), x.shape[1] * 0.6931471805599453, dtype=x.dtype)

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return y / 2, torch.full((len(y),), -y.shape[1] * 0.6931471805599453, dtype=y.dtype)


def test_a_no_grad_region_in_the_forward_map_is_a_named_failure_not_a_torch_error() -> None:
    report = check_invertible(NoGradForward(), _x(), raise_on_failure=False)
    assert not report.ok
    assert all("Traceback" not in f for f in report.failures)
    assert any("no_grad" in f or "derivative" in f or "finite differences" in f for f in report.failures), report


def _scaled(noise: float, bias: float, kind: str = "estimated") -> Callables:
    """``y = 2 x`` whose log-det is ``D log 2`` plus seeded-noise (``noise`` std) and ``bias``."""
    def logdet(v: Tensor, sign: float) -> Tensor:
        exact = sign * v.shape[1] * torch.log(torch.tensor(2.0, dtype=v.dtype))
        return exact + bias * sign + noise * torch.randn(len(v), dtype=v.dtype)

    return Callables(lambda x: (2 * x, logdet(x, 1.0)), lambda y: (y / 2, logdet(y, -1.0)), logdet_kind=kind)


def test_an_unbiased_stochastic_log_det_passes_the_statistical_check() -> None:
    report = check_invertible(_scaled(noise=0.1, bias=0.0), _x(), raise_on_failure=False)
    assert report.ok, report
    assert "logdet_estimated" in report.measured


def test_negative_control_a_biased_stochastic_log_det_fails() -> None:
    report = check_invertible(_scaled(noise=0.1, bias=0.05), _x(), raise_on_failure=False)
    assert "logdet_estimated" in report.failed, report


def test_negative_control_an_exact_log_det_with_noise_fails_the_exact_comparison() -> None:
    report = check_invertible(_scaled(noise=0.1, bias=0.0, kind="exact"), _x(), raise_on_failure=False)
    assert "logdet_exact" in report.failed, report


def test_our_own_roulette_estimator_passes_the_statistical_check() -> None:
    from invertible.testing.catalog.residual import _branch

    net = _branch("flat", 3, 1, 8, "swish", 0.7, "exact", "zeros", torch.Generator().manual_seed(0))
    block = invertible.ResidualBlock(net, channels=3, ranks=(2,), logdet="roulette").double()
    report = check_invertible(block, _x(), raise_on_failure=False, draws=100)
    assert "logdet_estimated" in report.measured, report
    assert not [f for f in report.failures if f.startswith("logdet")], report


def _iterative(error: float, atol: float) -> Callables:
    """``y = 3 x`` whose inverse is off by ``error`` per entry, declared iterative with tolerance ``atol``."""
    log3 = torch.log(torch.tensor(3.0, dtype=DT))
    return Callables(lambda x: (3 * x, x.shape[1] * log3.expand(len(x))),
                     lambda y: (y / 3 + error, -y.shape[1] * log3.expand(len(y))),
                     inverse_kind="iterative", inverse_atol=atol)


def test_an_iterative_inverse_is_allowed_its_declared_tolerance_in_every_property() -> None:
    report = check_invertible(_iterative(1e-8, 1e-7), _x(), raise_on_failure=False)
    assert report.ok, report


def test_negative_control_an_iterative_inverse_beyond_its_tolerance_fails() -> None:
    report = check_invertible(_iterative(1e-4, 1e-7), _x(), raise_on_failure=False)
    assert "roundtrip_forward" in report.failed, report


def test_non_convergence_is_reported_as_such() -> None:
    def inverse(y: Tensor) -> tuple[Tensor, Tensor]:
        raise ConvergenceError("no fixed point within 5 iterations", None)  # type: ignore[arg-type]

    layer = Callables(lambda x: (x, torch.zeros(len(x), dtype=x.dtype)), inverse, inverse_kind="iterative",
                      inverse_atol=1e-6)
    report = check_invertible(layer, _x(), raise_on_failure=False)
    assert report.failed == ["convergence"], report


def test_a_map_that_changes_its_argument_in_place_fails_inputs() -> None:
    def forward(x: Tensor) -> tuple[Tensor, Tensor]:
        x.mul_(2)  # the caller's tensor changed
        return x.clone(), torch.full((len(x),), x.shape[1] * 0.6931471805599453, dtype=x.dtype)

    layer = Callables(forward, lambda y: (y / 2, torch.full((len(y),), -y.shape[1] * 0.6931471805599453,
                                                             dtype=y.dtype)))
    report = check_invertible(layer, _x(), raise_on_failure=False)
    assert "inputs" in report.failed, report
    clean = Callables(lambda x: (2 * x, torch.full((len(x),), x.shape[1] * 0.6931471805599453, dtype=x.dtype)),
                      layer.fns[1])
    assert check_invertible(clean, _x(), raise_on_failure=False).ok


def test_an_exception_inside_the_module_is_a_named_failure() -> None:
    def inverse(y: Tensor) -> tuple[Tensor, Tensor]:
        raise IndexError("index 7 is out of bounds")

    layer = Callables(lambda x: (x, torch.zeros(len(x), dtype=x.dtype)), inverse)
    report = check_invertible(layer, _x(), raise_on_failure=False)
    assert report.failed == ["roundtrip_forward"]
    assert "IndexError: index 7 is out of bounds" in report.failures[0]


def test_context_reaches_both_directions_and_is_sliced_with_the_batch() -> None:
    def forward(x: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        return x * c.exp(), c.sum(1)

    def inverse(y: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        return y * (-c).exp(), -c.sum(1)

    layer = Callables(forward, inverse)
    assert check_invertible(layer, _x(), context=_x(seed=1)).ok
    wrong = Callables(forward, lambda y, c: (y * (-c).exp(), -c.sum(1) + 1e-9 * c[:, 0]))
    assert "logdet_inverse" in check_invertible(wrong, _x(), context=_x(seed=1), raise_on_failure=False).failed


def _squash(logdet_error: float = 0.0) -> Callables:
    """``y = 0.5 + x / 10`` whose inverse refuses values outside ``[0, 1]`` (as our ``Logit`` does)."""
    ld = 3 * math.log(0.1)

    def inverse(y: Tensor) -> tuple[Tensor, Tensor]:
        if bool(((y < 0) | (y > 1)).any()):
            raise ValueError(f"expects inputs in [0, 1], got values up to {float(y.max()):.4g}")
        return (y - 0.5) * 10, torch.full((len(y),), -ld - logdet_error, dtype=y.dtype)

    return Callables(lambda x: (0.5 + x / 10, torch.full((len(x),), ld, dtype=x.dtype)), inverse)


def test_a_finite_difference_step_outside_the_inverse_domain_is_not_a_failure() -> None:
    x = _x() * 0.5
    x[0, 0] = 4.99  # y = 0.999: the finite-difference steps of ~2e-3 around it leave [0, 1]
    assert check_invertible(_squash(), x, raise_on_failure=False).ok
    assert "logdet_exact_inverse" in check_invertible(_squash(1e-6), x, raise_on_failure=False).failed
