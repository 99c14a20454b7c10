"""The one definition of numerically non-invertible (invertible.diagnostics.verdict), with negative controls."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor

import invertible
from invertible.base import InvertibleModule
from invertible.diagnostics import NONINVERTIBLE_RTOL, invertibility_verdict, judge_reconstructions


class Shear(InvertibleModule):
    """``y = (x1, x2 exp(a x1))``: Jacobian ``[[1, 0], [a x2 e^{a x1}, e^{a x1}]]``, ill-conditioned for large x1."""

    def __init__(self, a: float = 1.0) -> None:
        super().__init__(channels=2, ranks=(2,))
        self.a = a
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s = self.a * x[:, 0] + self.dummy
        return torch.stack([x[:, 0], x[:, 1] * s.exp()], dim=1), s

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        s = self.a * y[:, 0] + self.dummy
        return torch.stack([y[:, 0], y[:, 1] * (-s).exp()], dim=1), -s


class OffAt(Shear):
    """A Shear whose inverse is off by ``rel`` relative at the inputs with ``x1 > cut`` (a planted defect)."""

    def __init__(self, rel: float, cut: float) -> None:
        super().__init__()
        self.rel, self.cut = rel, cut

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x, logdet = super()._inverse(y)
        wrong = (y[:, :1] > self.cut).to(x.dtype)
        return x * (1 + self.rel * wrong), logdet


def _inputs(n: int = 1000, dtype: torch.dtype = torch.float32) -> Tensor:
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[-1, 0] = 4.0  # the one input past the cut sits in the last batch
    return x.to(dtype)


def _exact_kappa(a: float, x: Tensor) -> float:
    x1, x2 = float(x[0]), float(x[1])
    jac = np.array([[1.0, 0.0], [a * x2 * math.exp(a * x1), math.exp(a * x1)]])
    s = np.linalg.svd(jac, compute_uv=False)
    return float(s[0] / s[-1])


def test_a_healthy_flow_is_invertible_and_says_why() -> None:
    verdict = invertibility_verdict(Shear(), _inputs(), kappa_at=0)
    assert verdict.invertible and verdict.label == "invertible"
    assert (verdict.n, verdict.nonfinite, verdict.above_rtol) == (1000, 0, 0)
    assert verdict.worst_relative < 1e-5 and verdict.dtype == "float32"
    assert verdict.reason.startswith("every reconstruction within 0.01 relative")


def test_one_bad_input_in_the_last_batch_decides_the_verdict() -> None:
    verdict = invertibility_verdict(OffAt(rel=0.05, cut=3.5), _inputs(), batch_size=64, kappa_at=0)
    assert not verdict.invertible and verdict.label == "non-invertible"
    assert (verdict.above_rtol, verdict.nonfinite, verdict.worst_index) == (1, 0, 999)
    assert verdict.worst_relative == pytest.approx(0.05, rel=1e-3)
    assert "1 of 1000 reconstructions off by more than 0.01 relative" in verdict.reason


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_threshold_discriminates_both_ways(dtype: torch.dtype) -> None:
    """Negative control at the threshold: an error of 0.5 % passes at rtol 1e-2 and is caught at rtol 1e-3."""
    flow, x = OffAt(rel=5e-3, cut=3.5).to(dtype), _inputs(dtype=dtype)
    assert invertibility_verdict(flow, x, kappa_at=0).invertible
    assert not invertibility_verdict(flow, x, rtol=1e-3, kappa_at=0).invertible


def test_non_finite_reconstructions_are_counted() -> None:
    layer = invertible.ActNorm(2, data_init=False)
    with torch.no_grad():
        layer.log_scale.fill_(-110.0)  # exp(-110) underflows to 0 in float32: the inverse divides by zero
    verdict = invertibility_verdict(layer, torch.randn(50, 2), kappa_at=0)
    assert not verdict.invertible and verdict.nonfinite == 50 and math.isinf(verdict.worst_relative)
    assert verdict.reason == "non-finite reconstruction of 50 of 50 inputs"


def test_condition_numbers_at_the_worst_and_fixed_inputs_match_an_independent_svd() -> None:
    x = _inputs(200, torch.float64)
    verdict = invertibility_verdict(OffAt(rel=0.05, cut=3.5).double(), x, kappa_at=2, fixed=[0, 5])
    worst = verdict.at_worst
    assert worst is not None and worst.indices[0] == 199 and worst.method == "exact"
    assert worst.kappa_forward[0] == pytest.approx(_exact_kappa(1.0, x[199]), rel=1e-10)
    fixed = verdict.at_fixed
    assert fixed is not None and fixed.indices == [0, 5]
    for i, kappa in zip(fixed.indices, fixed.kappa_forward):
        assert kappa == pytest.approx(_exact_kappa(1.0, x[i]), rel=1e-10)
    # the healthy parent: its computed inverse's Jacobian has the same conditioning
    healthy = invertibility_verdict(Shear().double(), x, kappa_at=1)
    assert healthy.at_worst is not None
    assert healthy.at_worst.kappa_inverse[0] == pytest.approx(healthy.at_worst.kappa_forward[0], rel=1e-8)
    assert "kappa at the worst-reconstructed input" in str(healthy)


def test_the_matrix_free_method_agrees_with_the_exact_one() -> None:
    x = _inputs(20, torch.float64)
    exact = invertibility_verdict(Shear(), x.float(), kappa_at=3, kappa_method="exact")
    lanczos = invertibility_verdict(Shear(), x.float(), kappa_at=3, kappa_method="lanczos")
    assert exact.at_worst is not None and lanczos.at_worst is not None and lanczos.at_worst.method == "lanczos"
    assert lanczos.at_worst.indices == exact.at_worst.indices
    np.testing.assert_allclose(lanczos.at_worst.kappa_forward, exact.at_worst.kappa_forward, rtol=2e-2)


def test_a_data_loader_gives_the_same_verdict_as_the_tensor() -> None:
    x = _inputs()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(len(x))), batch_size=100)
    a = invertibility_verdict(OffAt(rel=0.05, cut=3.5), x, kappa_at=1)
    b = invertibility_verdict(OffAt(rel=0.05, cut=3.5), loader, kappa_at=1)
    assert a.to_dict() == b.to_dict()


def test_judge_counts_nan_errors_as_non_finite_and_refuses_bad_arguments() -> None:
    verdict = judge_reconstructions(torch.tensor([1e-6, math.nan, 1e-7]), torch.zeros(3))
    assert not verdict.invertible and verdict.nonfinite == 1 and verdict.worst_index == 1
    assert NONINVERTIBLE_RTOL == 1e-2
    with pytest.raises(ValueError, match="rtol"):
        judge_reconstructions(torch.zeros(2), torch.zeros(2), rtol=0.0)
    with pytest.raises(ValueError, match="rtol"):
        judge_reconstructions(torch.zeros(2), torch.zeros(2), rtol=math.nan)
    with pytest.raises(ValueError, match="one of each"):
        judge_reconstructions(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="no inputs"):
        judge_reconstructions(torch.zeros(0), torch.zeros(0))
    with pytest.raises(ValueError, match="empty"):
        invertibility_verdict(Shear(), torch.zeros(0, 2))
    with pytest.raises(ValueError, match="outside the set"):
        invertibility_verdict(Shear(), _inputs(10), fixed=[10])
    with pytest.raises(TypeError, match="inputs must be a tensor"):
        invertibility_verdict(Shear(), [[1.0, 2.0]])
